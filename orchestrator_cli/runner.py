"""The run use case: signals -> positions and prices -> plan -> record -> submit -> record.

Crash safety is by construction. The run row (`running`) is committed before any service is
called, and every planned order with its deterministic `client_order_id` is committed before
the first order is sent. Each outcome is committed as it arrives, in its own short transaction;
no transaction is ever open across an HTTP call. A process killed at any moment therefore
leaves every order it may have sent in the database, and a re-send of the same plan reaches the
gateway's idempotency (same id, same payload -> the existing order) instead of a second order.

This module never prints: it returns a `RunResult` and reports progress through a callback.
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
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from orchestrator_cli import risk, sizing, store
from orchestrator_cli.errors import DatabaseError, PriceSourceError, ServiceError
from orchestrator_cli.prices import PriceSource
from orchestrator_cli.schemas import (
    GatewayConfig,
    GatewayHealth,
    KillSwitchStatus,
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
    settings_snapshot: dict[str, Any] = field(default_factory=dict)


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


def describe_problems(counts: store.OutcomeCounts, *, dry_run: bool) -> str | None:
    """A one-line summary of what went wrong in a run, or None when nothing did."""
    parts = [
        f"{n} {label}"
        for n, label in (
            (counts.rejected, "rejected"),
            (counts.blocked, "blocked"),
            (counts.unknown, "of unknown outcome (settle with the gateway by client_order_id)"),
            (counts.not_sent, "not sent"),
            (0 if dry_run else counts.planned, "never answered"),
            (counts.price_unavailable, "without a usable price"),
        )
        if n
    ]
    return ", ".join(parts) if parts else None


class Runner:
    """Executes one run; construct per run."""

    def __init__(self, request: RunRequest, services: RunServices) -> None:
        self.request = request
        self.services = services
        self.run_id = uuid.uuid4()
        self._halt = threading.Event()
        self._halt_reason = ""
        self._long_only_zeroed: dict[str, Decimal] = {}

    def _tx(self, what: str) -> AbstractContextManager[Session]:
        return store.transaction(self.services.sessions, what)

    def execute(self) -> RunResult:
        """Perform the run and return it as recorded; raises only `DatabaseError`."""
        req, svc = self.request, self.services
        started = svc.clock()
        as_of = req.as_of_date or trading_date(started)
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
            )
        try:
            refusal = self._preflight()
            if refusal is not None:
                logger.error("run %s refused: %s", self.run_id, refusal)
                return self._finish("failed", refusal)
            plans = self._plan(as_of)
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
        return self._finish(None, None)

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

    def _plan(self, as_of: date) -> list[PlannedMapping]:
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
    ) -> list[tuple[int, PlannedMapping, OrderRequest]]:
        """Commit every mapping (and each order's id) before anything is sent."""
        strategy = self.request.strategy_id
        ids = [
            sizing.client_order_id(
                strategy, as_of, plan.symbol, plan.order_side, plan.order_qty, plan.leg
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
                plan,
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

    def _submit(self, orders: list[tuple[int, PlannedMapping, OrderRequest]]) -> None:
        """Position-reducing orders first, all answered, then the ones that add exposure.

        Sells of longs and covers of shorts free buying power, so the buys that need it go
        out only after every reducing order has an answer.
        """
        reducing = [(m, o) for m, plan, o in orders if plan.reduces]
        adding = [(m, o) for m, plan, o in orders if not plan.reduces]
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
            for future in as_completed(futures):
                outcome = future.result()
                done += 1
                if db_error is not None:
                    continue
                try:
                    with self._tx("recording an order outcome") as session:
                        store.record_outcome(session, futures[future], outcome, at=svc.clock())
                except DatabaseError as exc:
                    self._halt_reason = "the database failed"
                    self._halt.set()
                    db_error = exc
                svc.progress(f"[{done}/{total}] {outcome.client_order_id}: {outcome.order_status}")
        if db_error is not None:
            raise DatabaseError(
                f"{db_error}; run {self.run_id} stopped sending orders. Every sent order is in "
                "its recorded plan with its client_order_id; check them at the gateway"
            ) from db_error
        return done

    def _refuse_plan(
        self, orders: list[tuple[int, PlannedMapping, OrderRequest]], message: str
    ) -> RunResult:
        """Record every planned order as not sent and fail the run with `message`."""
        if orders:
            with self._tx("recording unsent orders") as session:
                store.mark_not_sent(
                    session,
                    [mapping_id for mapping_id, _, _ in orders],
                    outcome=OutcomeKind.NOT_SENT,
                    order_status="not_sent",
                    message=message,
                    at=self.services.clock(),
                )
        return self._finish("failed", message)

    def _finish(self, status: RunStatus | None, error_message: str | None) -> RunResult:
        dry_run = self.request.dry_run
        with self._tx("finishing the run") as session:
            counts = store.outcome_counts(session, self.run_id)
            final = status or decide_status(counts, dry_run=dry_run)
            message = error_message
            if message is None and final != "completed":
                message = describe_problems(counts, dry_run=dry_run)
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


def execute_run(request: RunRequest, services: RunServices) -> RunResult:
    """Run the whole workflow once and return the run as recorded in the database."""
    return Runner(request, services).execute()
