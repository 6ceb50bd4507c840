"""The run use case: signals -> positions and prices -> plan -> record -> submit -> record.

Crash safety is by construction. The run row (`running`) is committed before any service is
called, and every planned order with its deterministic `client_order_id` is committed before
the first order is sent. Each outcome is committed as it arrives, in its own short transaction;
no transaction is ever open across an HTTP call. A process killed at any moment therefore
leaves every order it may have sent in the database, and a re-send of the same plan reaches the
gateway's idempotency (same id, same payload -> the existing order) instead of a second order.

Exactly once across processes: every run holds the run lock of its strategy and trading date
(`locking.RunLock`). A run whose process died is resumed from its recorded plan, never
re-planned: orders that may have reached the gateway are settled with GET by
`client_order_id` (found: its status is taken; 404: it never arrived and is sent again with the
same id). When the day's run already completed, a new one does nothing unless forced; a forced
run (or one after a failed run) counts the orders still open at the gateway as in flight and
plans only what is still missing, with ids of its own generation.

This module never prints: it returns a `RunOutcome` and reports progress through a callback.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from orchestrator_cli import db, risk, sizing, store
from orchestrator_cli.errors import ConfigError, DatabaseError, PriceSourceError, ServiceError
from orchestrator_cli.locking import RunLock
from orchestrator_cli.prices import PriceSource
from orchestrator_cli.schemas import (
    OPEN_STATUSES,
    GatewayConfig,
    GatewayHealth,
    KillSwitchStatus,
    OrderDetail,
    OrderRequest,
    OutcomeKind,
    PlannedMapping,
    PriceBook,
    RunResult,
    RunStatus,
    SignalResponse,
    SubmitOutcome,
)

logger = logging.getLogger(__name__)

EXCHANGE_TZ = ZoneInfo("America/New_York")
UNPLANNED = "interrupted before its plan was recorded, so no order was sent"


def utc_now() -> datetime:
    return datetime.now(UTC)


def trading_date(now: datetime) -> date:
    """The exchange's calendar date (America/New_York) at `now`, never the machine's."""
    return now.astimezone(EXCHANGE_TZ).date()


class SignalSource(Protocol):
    """What the run needs of the Signal Service (`signals.SignalClient`)."""

    def fetch_signals(
        self,
        symbols: Sequence[str],
        *,
        as_of_date: date | None,
        top_n: int | None = None,
        bottom_n: int | None = None,
    ) -> SignalResponse: ...


class OrderGateway(Protocol):
    """What the run needs of the Execution Gateway (`gateway.GatewayClient`)."""

    def get_positions(self) -> dict[str, Decimal]: ...

    def submit_order(self, order: OrderRequest) -> SubmitOutcome: ...

    def get_config(self) -> GatewayConfig: ...

    def get_kill_switch(self) -> KillSwitchStatus: ...

    def get_health(self) -> GatewayHealth: ...

    def get_order(self, client_order_id: str) -> OrderDetail | None: ...


@dataclass(frozen=True)
class RunRequest:
    """What the user asked for, already validated."""

    symbols: list[str]
    strategy_id: str
    capital: Decimal
    max_position_size: Decimal
    as_of_date: date | None = None
    top_n: int | None = None
    bottom_n: int | None = None
    dry_run: bool = False
    order_concurrency: int = 8
    limits: risk.Limits = field(default_factory=risk.Limits)
    allow_live_trading: bool = False
    force: bool = False
    lock_stale_seconds: float = 60.0
    settings_snapshot: dict[str, Any] = field(default_factory=dict)


RunAction = Literal["ran", "resumed", "already_completed", "unchanged"]


@dataclass(frozen=True)
class RunOutcome:
    """The run as recorded, what was done (a new run, a resumed one, or nothing), and why."""

    result: RunResult
    action: RunAction
    note: str | None = None


@dataclass
class RunServices:
    """The run's collaborators; tests pass fakes or clients pointed at the sandbox."""

    signals: SignalSource
    gateway: OrderGateway
    prices: PriceSource
    sessions: sessionmaker[Session]
    clock: Callable[[], datetime] = utc_now
    progress: Callable[[str], None] = lambda _message: None
    deadline: float | None = None  # time.monotonic() after which no new order is sent


def decide_status(counts: store.OutcomeCounts, *, dry_run: bool) -> RunStatus:
    """`completed` only when everything needed was done; `failed` when nothing was."""
    good = counts.planned if dry_run else counts.accepted
    problems = (
        counts.rejected
        + counts.blocked
        + counts.unknown
        + counts.not_sent
        + counts.price_unavailable
        + (0 if dry_run else counts.planned)
    )
    if problems == 0:
        return "completed"
    if good == 0:
        return "failed"
    return "partial"


def describe_problems(
    counts: store.OutcomeCounts, *, dry_run: bool, run_id: uuid.UUID
) -> str | None:
    """A one-line summary of what went wrong in a run, or None when nothing did."""
    parts = [
        f"{n} {label}"
        for n, label in (
            (counts.rejected, "rejected"),
            (counts.blocked, "blocked"),
            (counts.unknown, "of unknown outcome"),
            (counts.not_sent, "not sent"),
            (0 if dry_run else counts.planned, "never answered"),
            (counts.price_unavailable, "without a usable price"),
        )
        if n
    ]
    if not parts:
        return None
    text = ", ".join(parts)
    if not dry_run and (counts.unknown or counts.planned or counts.not_sent or counts.blocked):
        text += f"; `orch runs resume {run_id}` settles and sends what is left"
    return text


class Runner:
    """Executes one run; construct per run."""

    def __init__(self, request: RunRequest, services: RunServices) -> None:
        self.request = request
        self.services = services
        self.run_id = uuid.uuid4()
        self._halt = threading.Event()
        self._halt_reason = ""
        self._long_only_zeroed: dict[str, Decimal] = {}
        self.generation = 0

    def _tx(self, what: str) -> AbstractContextManager[Session]:
        return db.transaction(self.services.sessions, what)

    def lock(self, as_of: date, run_id: uuid.UUID) -> RunLock:
        return RunLock(
            self.services.sessions,
            strategy_id=self.request.strategy_id,
            as_of_date=as_of,
            run_id=run_id,
            stale_after=timedelta(seconds=self.request.lock_stale_seconds),
            clock=self.services.clock,
        )

    def execute(self) -> RunOutcome:
        """Under the run lock: resume an interrupted run, or stop at a completed one, or run.

        A dry run sends nothing, so it takes no lock, never blocks a real run and never
        touches another run: it plans from positions and the orders of finished runs.
        """
        req, svc = self.request, self.services
        as_of = req.as_of_date or trading_date(svc.clock())
        if req.dry_run:
            with self._tx("reading the day's runs") as session:
                prior = store.runs_for_date(session, req.strategy_id, as_of)
            finished = [r for r in prior if r.status != "running"]
            return RunOutcome(self._new_run(as_of, finished), "ran")
        with self.lock(as_of, self.run_id) as lock:
            prior = self._day_runs(as_of)
            interrupted = [r for r in prior if r.status == "running" and not r.dry_run]
            if interrupted and req.force:
                self._abandon(interrupted[-1])
                prior = self._day_runs(as_of)
            elif interrupted:
                run = interrupted[-1]
                differences = self._differences(run)
                if differences:
                    raise ConfigError(
                        f"run {run.run_id} of {req.strategy_id} for {as_of} was interrupted and "
                        f"was planned with other inputs ({'; '.join(differences)}). Nothing was "
                        f"sent. `orch runs resume {run.run_id}` finishes it as planned; "
                        "`orch run --force` with the new inputs abandons what it had not sent "
                        "and plans anew"
                    )
                lock.point_to(run.run_id)
                self.run_id = run.run_id
                note = f"run {run.run_id} of {req.strategy_id} for {as_of} was interrupted: resumed"
                svc.progress(note)
                return RunOutcome(self.resume(), "resumed", note)
            completed = [r for r in prior if r.status == "completed" and not r.dry_run]
            if completed and not req.force:
                done = completed[-1]
                with self._tx("reading the completed run") as session:
                    result = store.load_run(session, done.run_id)
                note = (
                    f"run {done.run_id} of {req.strategy_id} for {as_of} already completed; "
                    "nothing to do (--force plans what is still missing)"
                )
                return RunOutcome(result, "already_completed", note)
            finished = [r for r in prior if not (r.dry_run and r.status == "running")]
            return RunOutcome(self._new_run(as_of, finished), "ran")

    def _differences(self, run: store.RunInfo) -> list[str]:
        """How this request's inputs differ from those an interrupted run was planned with."""
        req = self.request
        found = []
        if sorted(run.symbols) != sorted(req.symbols):
            found.append(f"symbols {','.join(run.symbols)}")
        if run.capital != req.capital:
            found.append(f"capital {run.capital}")
        if run.max_position_size != req.max_position_size:
            found.append(f"max position size {run.max_position_size}")
        if run.limits is not None and run.limits != req.limits.record():
            found.append("pre-trade limits")
        return found

    def _abandon(self, run: store.RunInfo) -> None:
        """Close an interrupted run for a forced one: settle what may have been sent, record
        what never left as not sent. Its open orders then count as in flight."""
        with self._tx("reading the interrupted run") as session:
            rows = store.order_rows(session, [run.run_id])
        pending = [r for r in rows if r.outcome in (OutcomeKind.PLANNED, OutcomeKind.UNKNOWN)]
        never_arrived = self.settle(pending)
        self._mark_not_sent(
            [r.mapping_id for r in never_arrived],
            f"abandoned for forced run {self.run_id} before it was sent",
        )
        self._close_interrupted(run.run_id, f"interrupted; abandoned for forced run {self.run_id}")

    def _day_runs(self, as_of: date) -> list[store.RunInfo]:
        """The day's runs, after closing real runs killed before their plan was recorded:
        the plan is committed before any order is sent, so those sent nothing."""
        strategy = self.request.strategy_id
        with self._tx("reading the day's runs") as session:
            prior = store.runs_for_date(session, strategy, as_of)
            stale = store.unfinished_runs_before(session, strategy, as_of)
        for run in stale:
            logger.warning(
                "run %s of %s for %s never finished (its process died); its plan is stale and "
                "will not be resumed: `orch runs sync %s` records what reached the gateway",
                run.run_id,
                strategy,
                run.as_of_date,
                run.run_id,
            )
        unplanned = [
            run.run_id
            for run in prior
            if run.status == "running" and not run.dry_run and not self._plan_recorded(run.run_id)
        ]
        if not unplanned:
            return prior
        for run_id in unplanned:
            self._close_interrupted(run_id, UNPLANNED)
        with self._tx("reading the day's runs") as session:
            return store.runs_for_date(session, strategy, as_of)

    def _plan_recorded(self, run_id: uuid.UUID) -> bool:
        with self._tx("reading a run's plan") as session:
            return store.outcome_counts(session, run_id).signals > 0

    def _close_interrupted(self, run_id: uuid.UUID, message: str) -> None:
        logger.warning("run %s: %s", run_id, message)
        with self._tx("closing an interrupted run") as session:
            store.finish_run(
                session,
                run_id,
                status="failed",
                error_message=message,
                completed_at=self.services.clock(),
            )

    def _new_run(self, as_of: date, prior: list[store.RunInfo]) -> RunResult:
        req, svc = self.request, self.services
        started = svc.clock()
        with self._tx("creating the run record") as session:
            store.create_run(
                session,
                run_id=self.run_id,
                strategy_id=req.strategy_id,
                as_of_date=as_of,
                symbols=req.symbols,
                capital=req.capital,
                max_position_size=req.max_position_size,
                dry_run=req.dry_run,
                price_source=svc.prices.name,
                started_at=started,
                settings_snapshot=req.settings_snapshot,
                limits=req.limits.record(),
                generation=len(prior),
            )
        self.generation = len(prior)
        try:
            refusal = self._preflight()
            if refusal is not None:
                logger.error("run %s refused: %s", self.run_id, refusal)
                return self._finish("failed", refusal)
            plans = self._plan(as_of, [r for r in prior if not r.dry_run])
        except ServiceError as exc:
            logger.error("run %s failed before any order: %s", self.run_id, exc)
            return self._finish("failed", str(exc))

        review = risk.review_plan(
            plans,
            limits=req.limits,
            capital=req.capital,
            long_only_zeroed=self._long_only_zeroed,
        )
        orders = self._record_plan(review.plans, as_of)
        needed_price = [p for p in review.plans if p.target_weight != 0]
        if needed_price and all(p.price is None for p in needed_price):
            message = "no usable price for any signal that needed one; no order was sent"
            return self._refuse_plan(orders, message)
        if review.violations:
            message = "pre-trade limit breached, no order was sent: " + "; ".join(review.violations)
            return self._refuse_plan(orders, message)
        if req.dry_run:
            svc.progress(f"dry run: {len(orders)} orders planned, none sent")
        elif orders:
            self._submit(orders)
            self._settle_unknown()
        return self._finish(None, None)

    def resume(self) -> RunResult:
        """Continue this run from its recorded plan: settle, send what never left, finish."""
        svc = self.services
        with self._tx("reopening the run") as session:
            info = store.run_info(session, self.run_id)
            store.reopen_run(session, self.run_id)
            rows = store.order_rows(session, [self.run_id])
        if not rows and not self._plan_recorded(self.run_id):
            return self._finish("failed", UNPLANNED + "; `orch run` plans the day anew")
        if info.dry_run:
            return self._finish(None, None)
        try:
            refusal = self._preflight()
        except ServiceError as exc:
            refusal = str(exc)
        pending = [r for r in rows if r.outcome in (OutcomeKind.PLANNED, OutcomeKind.UNKNOWN)]
        svc.progress(f"settling {len(pending)} orders that may have reached the gateway")
        never_arrived = self.settle(pending)
        unsent = [r for r in rows if r.outcome in (OutcomeKind.NOT_SENT, OutcomeKind.BLOCKED)]
        if refusal is not None:
            return self._finish(None, f"{refusal}; {len(never_arrived) + len(unsent)} not sent")
        self._submit(
            [(r.mapping_id, r.reduces, self._order_of(r)) for r in [*never_arrived, *unsent]]
        )
        self._settle_unknown()
        return self._finish(None, None)

    @staticmethod
    def _order_of(row: store.OrderRow) -> OrderRequest:
        return OrderRequest(
            symbol=row.symbol, side=row.side, qty=row.qty, client_order_id=row.client_order_id
        )

    def settle(self, rows: Sequence[store.OrderRow]) -> list[store.OrderRow]:
        """Ask the gateway about each order; record what it has, return those it never saw.

        An order the gateway cannot be asked about stays as it is (unknown or planned). The
        lookups go out concurrently (bounded like orders); each answer is recorded as it comes.
        """
        if not rows:
            return []

        def look_up(row: store.OrderRow) -> OrderDetail | ServiceError | None:
            try:
                return self.services.gateway.get_order(row.client_order_id)
            except ServiceError as exc:
                return exc

        never_arrived = []
        workers = min(self.request.order_concurrency, len(rows))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="orch-settle") as pool:
            for row, answer in zip(rows, pool.map(look_up, rows), strict=True):
                if isinstance(answer, ServiceError):
                    logger.warning("could not settle %s: %s", row.client_order_id, answer)
                elif answer is None:
                    never_arrived.append(row)
                else:
                    with self._tx("recording an order's state at the gateway") as session:
                        store.record_order_detail(
                            session, row.mapping_id, answer, at=self.services.clock()
                        )
        return never_arrived

    def _settle_unknown(self) -> None:
        """Settle this run's unknown outcomes; an order that never arrived is sent again."""
        with self._tx("reading unknown outcomes") as session:
            unknown = [
                r
                for r in store.order_rows(session, [self.run_id])
                if r.outcome == OutcomeKind.UNKNOWN
            ]
        if not unknown:
            return
        self.services.progress(f"settling {len(unknown)} orders of unknown outcome")
        resend = self.settle(unknown)
        if resend:
            self._submit([(r.mapping_id, r.reduces, self._order_of(r)) for r in resend])

    def _in_flight(self, prior: list[store.RunInfo]) -> dict[str, Decimal]:
        """Signed shares still open at the gateway from the day's earlier runs, by symbol.

        Orders of finished runs that may have reached the gateway are settled first; one the
        gateway never saw is recorded as not sent (its run is over).
        """
        if not prior:
            return {}
        with self._tx("reading earlier orders") as session:
            rows = [
                r
                for r in store.order_rows(session, [run.run_id for run in prior])
                if r.outcome in (OutcomeKind.ACCEPTED, OutcomeKind.UNKNOWN, OutcomeKind.PLANNED)
            ]
        if not rows:
            return {}
        self.services.progress(f"checking {len(rows)} orders of earlier runs at the gateway")
        never_arrived = self.settle(rows)
        self._mark_not_sent(
            [r.mapping_id for r in never_arrived],
            f"not at the gateway when run {self.run_id} checked it",
        )
        gone = {r.mapping_id for r in never_arrived}
        for run in prior:
            refresh_run(self.services.sessions, run.run_id, dry_run=run.dry_run)
        with self._tx("reading earlier orders") as session:
            settled = store.order_rows(session, [run.run_id for run in prior])
        in_flight: dict[str, Decimal] = {}
        for row in settled:
            if row.mapping_id in gone or row.order_status not in OPEN_STATUSES:
                continue
            remaining = Decimal(row.qty) - (row.filled_qty or 0)
            signed = remaining if row.side == "buy" else -remaining
            in_flight[row.symbol] = in_flight.get(row.symbol, Decimal(0)) + signed
        return in_flight

    def _preflight(self) -> str | None:
        """Gateway mode, kill switch and health; a reason to refuse the run, or None.

        In a dry run nothing is sent, so problems are only logged.
        """
        req, svc = self.request, self.services
        config = svc.gateway.get_config()
        mode = gateway_mode(config)
        with self._tx("recording the gateway mode") as session:
            store.record_gateway_mode(session, self.run_id, mode)
        svc.progress(f"gateway mode: {mode}")
        problems = []
        if mode == "live" and not req.allow_live_trading:
            problems.append(
                "the gateway would send orders to a LIVE (non-paper, non-dry-run) account; "
                "set ALLOW_LIVE_TRADING=true or pass --live to trade live"
            )
        if svc.gateway.get_kill_switch().state == "ENGAGED":
            problems.append("the gateway's kill switch is engaged")
        health = svc.gateway.get_health()
        if health.status == "unhealthy":
            problems.append("the gateway reports itself unhealthy (GET /health)")
        elif health.status == "degraded":
            logger.warning("the gateway reports itself degraded (GET /health); going ahead")
        if not problems:
            return None
        if req.dry_run:
            for problem in problems:
                logger.warning("dry run goes ahead although %s", problem)
            return None
        return "; ".join(problems) + "; no order was sent"

    def _plan(self, as_of: date, prior: list[store.RunInfo]) -> list[PlannedMapping]:
        req, svc = self.request, self.services
        svc.progress(f"fetching signals for {len(req.symbols)} symbols")
        response = svc.signals.fetch_signals(
            req.symbols, as_of_date=as_of, top_n=req.top_n, bottom_n=req.bottom_n
        )
        with self._tx("recording signal metadata") as session:
            store.record_signal_metadata(
                session,
                self.run_id,
                num_signals=len(response.signals),
                model_version=response.metadata.model_version,
                generated_at=response.metadata.generated_at,
            )
        signals, self._long_only_zeroed = risk.apply_long_only(response.signals, req.limits)
        svc.progress("reading positions from the gateway")
        positions = svc.gateway.get_positions()
        for symbol, shares in self._in_flight(prior).items():
            if shares:
                logger.info(
                    "%s: %s shares still open at the gateway from earlier runs", symbol, shares
                )
                positions[symbol] = positions.get(symbol, Decimal(0)) + shares
        # Held symbols are priced too: limits check the notional of closing orders.
        wanted = [s.symbol for s in signals if s.target_weight != 0 or positions.get(s.symbol)]
        svc.progress(f"reading {len(wanted)} prices from {svc.prices.name}")
        try:
            book = svc.prices.fetch_prices(wanted, now=svc.clock()) if wanted else PriceBook()
        except PriceSourceError as exc:
            logger.error("price source failed: %s", exc)
            book = PriceBook(problems={symbol: str(exc) for symbol in wanted})
        return sizing.plan_orders(
            signals,
            book,
            positions,
            capital=req.capital,
            max_position_size=req.max_position_size,
        )

    def _record_plan(
        self, plans: Sequence[PlannedMapping], as_of: date
    ) -> list[tuple[int, bool, OrderRequest]]:
        """Commit every mapping (and each order's id) before anything is sent."""
        strategy = self.request.strategy_id
        ids = [
            sizing.client_order_id(
                strategy,
                as_of,
                plan.symbol,
                plan.order_side,
                plan.order_qty,
                plan.leg,
                self.generation,
            )
            if plan.needs_order and plan.order_side is not None
            else None
            for plan in plans
        ]
        with self._tx("recording the plan") as session:
            mapping_ids = store.add_mappings(session, self.run_id, plans, ids)
        return [
            (
                mapping_id,
                plan.reduces,
                OrderRequest(
                    symbol=plan.symbol,
                    side=plan.order_side,
                    qty=plan.order_qty,
                    client_order_id=coid,
                ),
            )
            for mapping_id, plan, coid in zip(mapping_ids, plans, ids, strict=True)
            if coid is not None and plan.order_side is not None
        ]

    def _submit(self, orders: list[tuple[int, bool, OrderRequest]]) -> None:
        """Position-reducing orders first, all answered, then the ones that add exposure.

        Sells of longs and covers of shorts free buying power, so the buys that need it go
        out only after every reducing order has an answer.
        """
        if not orders:
            return
        reducing = [(m, o) for m, reduces, o in orders if reduces]
        adding = [(m, o) for m, reduces, o in orders if not reduces]
        total = len(orders)
        self.services.progress(
            f"submitting {total} orders: {len(reducing)} reducing first, then {len(adding)}"
        )
        done = self._send_batch(reducing, done=0, total=total)
        self._send_batch(adding, done=done, total=total)

    def _send_one(self, order: OrderRequest) -> SubmitOutcome:
        svc = self.services
        if self._halt.is_set():
            return SubmitOutcome(
                client_order_id=order.client_order_id,
                kind=OutcomeKind.BLOCKED,
                order_status="blocked",
                message=f"not sent: {self._halt_reason or 'trading halted'}",
                sent=False,
            )
        if svc.deadline is not None and time.monotonic() >= svc.deadline:
            return SubmitOutcome(
                client_order_id=order.client_order_id,
                kind=OutcomeKind.NOT_SENT,
                order_status="not_sent",
                message="not sent: the run deadline (RUN_DEADLINE_SECONDS) passed first",
                sent=False,
            )
        outcome = svc.gateway.submit_order(order)
        if outcome.stops_run and not self._halt.is_set():
            self._halt_reason = outcome.message or outcome.order_status
            self._halt.set()
        return outcome

    def _send_batch(self, orders: list[tuple[int, OrderRequest]], *, done: int, total: int) -> int:
        """Send concurrently (bounded pool); record each outcome as it arrives.

        The first answer that halts trading (kill switch, circuit breaker, authentication)
        stops every order not yet sent; those are recorded as blocked. A database failure
        stops sending too: what is already out is in the recorded plan.
        """
        if not orders:
            return done
        svc = self.services
        db_error: DatabaseError | None = None
        workers = min(self.request.order_concurrency, len(orders))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="orch-order") as pool:
            futures: dict[Future[SubmitOutcome], int] = {
                pool.submit(self._send_one, order): mapping_id for mapping_id, order in orders
            }
            try:
                for future in as_completed(futures):
                    outcome = future.result()
                    done += 1
                    if db_error is None:
                        db_error = self._record(futures[future], outcome)
                    svc.progress(
                        f"[{done}/{total}] {outcome.client_order_id}: {outcome.order_status}"
                    )
            except BaseException:
                # Interrupted (SIGINT/SIGTERM): send nothing more. Orders already out are in
                # the recorded plan; resume settles them by client_order_id.
                self._halt_reason = "orch was interrupted"
                self._halt.set()
                raise
        if db_error is not None:
            raise DatabaseError(
                f"{db_error}; run {self.run_id} stopped sending orders. Every sent order is in "
                "its recorded plan with its client_order_id; check them at the gateway"
            ) from db_error
        return done

    def _record(self, mapping_id: int, outcome: SubmitOutcome) -> DatabaseError | None:
        """Commit one outcome; on a database failure stop sending and return the error."""
        try:
            with self._tx("recording an order outcome") as session:
                store.record_outcome(session, mapping_id, outcome, at=self.services.clock())
        except DatabaseError as exc:
            self._halt_reason = "the database failed"
            self._halt.set()
            return exc
        return None

    def _refuse_plan(self, orders: list[tuple[int, bool, OrderRequest]], message: str) -> RunResult:
        """Record every planned order as not sent and fail the run with `message`."""
        self._mark_not_sent([mapping_id for mapping_id, _, _ in orders], message)
        return self._finish("failed", message)

    def _mark_not_sent(self, mapping_ids: list[int], message: str) -> None:
        if not mapping_ids:
            return
        with self._tx("recording orders that were not sent") as session:
            store.mark_not_sent(
                session,
                mapping_ids,
                message=message,
                at=self.services.clock(),
            )

    def _finish(self, status: RunStatus | None, error_message: str | None) -> RunResult:
        dry_run = self.request.dry_run
        with self._tx("finishing the run") as session:
            counts = store.outcome_counts(session, self.run_id)
            final = status or decide_status(counts, dry_run=dry_run)
            message = error_message
            if message is None and final != "completed":
                message = describe_problems(counts, dry_run=dry_run, run_id=self.run_id)
            store.finish_run(
                session,
                self.run_id,
                status=final,
                error_message=message,
                completed_at=self.services.clock(),
            )
        with self._tx("reading the run back") as session:
            return store.load_run(session, self.run_id)


def gateway_mode(config: GatewayConfig) -> str:
    """`dry_run` (the gateway logs orders), `paper` (simulated account) or `live`."""
    if config.dry_run:
        return "dry_run"
    return "paper" if config.alpaca_paper else "live"


def execute_run(request: RunRequest, services: RunServices) -> RunOutcome:
    """Run the whole workflow once (or resume the day's interrupted run) under the run lock."""
    return Runner(request, services).execute()


def _runner_for(run_id: uuid.UUID, services: RunServices, **options: Any) -> Runner:
    """A runner bound to an existing run, with that run's own inputs."""
    with db.transaction(services.sessions, "reading the run") as session:
        info = store.run_info(session, run_id)
    request = RunRequest(
        symbols=info.symbols,
        strategy_id=info.strategy_id,
        capital=info.capital,
        max_position_size=info.max_position_size,
        as_of_date=info.as_of_date,
        dry_run=info.dry_run,
        **options,
    )
    runner = Runner(request, services)
    runner.run_id = run_id
    runner.generation = info.generation
    return runner


def resume_run(
    run_id: uuid.UUID,
    services: RunServices,
    *,
    order_concurrency: int = 8,
    allow_live_trading: bool = False,
    lock_stale_seconds: float = 60.0,
) -> RunOutcome:
    """Continue a run from its recorded plan, under its strategy and date's run lock."""
    runner = _runner_for(
        run_id,
        services,
        order_concurrency=order_concurrency,
        allow_live_trading=allow_live_trading,
        lock_stale_seconds=lock_stale_seconds,
    )
    as_of = runner.request.as_of_date or trading_date(services.clock())
    with runner.lock(as_of, run_id):
        with db.transaction(services.sessions, "reading the run") as session:
            info = store.run_info(session, run_id)
            day = store.runs_for_date(session, info.strategy_id, info.as_of_date)
            result = store.load_run(session, run_id)
        if info.status == "completed":
            return RunOutcome(result, "already_completed", f"run {run_id} is completed")
        position = [r.run_id for r in day].index(run_id)  # runs_for_date: oldest first
        later = [r for r in day[position + 1 :] if not r.dry_run]
        if later and not info.dry_run:
            raise ConfigError(
                f"run {run_id} was followed by run {later[-1].run_id}, which planned from the "
                "orders this one had sent: resuming it now could order twice. Nothing was "
                f"sent; `orch runs sync {run_id}` updates its record"
            )
        today = trading_date(services.clock())
        if trading_date(info.started_at) != today and not info.dry_run:
            raise ConfigError(
                f"run {run_id} started on trading day {trading_date(info.started_at)}, not "
                f"today ({today}): its plan is stale. Nothing was sent; `orch runs sync {run_id}` "
                "records what reached the gateway"
            )
        if info.status != "running" and not result.mappings:
            note = f"run {run_id} failed before it planned anything: nothing to resume"
            return RunOutcome(result, "unchanged", note)
        return RunOutcome(runner.resume(), "resumed", f"run {run_id} resumed")


def sync_run(run_id: uuid.UUID, services: RunServices) -> RunResult:
    """Refresh every order of a run from the gateway and re-derive its counts and status.

    Sync never sends: an order the gateway has never seen keeps its state (resume sends it).
    A run still in progress keeps `running`.
    """
    runner = _runner_for(run_id, services)
    dry_run = runner.request.dry_run
    with db.transaction(services.sessions, "reading the run") as session:
        rows = store.order_rows(session, [run_id])
    if not dry_run:
        services.progress(f"asking the gateway about {len(rows)} orders")
        runner.settle(rows)
    refresh_run(services.sessions, run_id, dry_run=dry_run)
    with db.transaction(services.sessions, "reading the run") as session:
        return store.load_run(session, run_id)


def refresh_run(sessions: sessionmaker[Session], run_id: uuid.UUID, *, dry_run: bool) -> None:
    """Re-derive a finished run's counts and status from its orders (after settling them).

    A run still `running` keeps its status. A run that turns out completed loses the error
    message that described its then-unsettled orders.
    """
    with db.transaction(sessions, "updating the run's counts") as session:
        status = store.run_info(session, run_id).status
        counts = store.outcome_counts(session, run_id)
        if status != "running" and counts.orders_planned:
            status = decide_status(counts, dry_run=dry_run)
        store.refresh_counts(session, run_id, status=status)
