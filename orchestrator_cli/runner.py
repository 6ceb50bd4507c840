"""The run use case: signals -> positions and prices -> plan -> record -> submit -> record.

Crash safety is by construction. The run row (`running`) is committed before any service is
called, and every planned order with its deterministic `client_order_id` is committed, synced
to disk, before the first order is sent. No transaction is ever open across an HTTP call. A
process killed at any moment therefore leaves every order it may have sent in the database, and
a re-send of the same plan reaches the gateway's idempotency (same id, same payload -> the
existing order) instead of a second order.

Outcomes are not part of that guarantee, so they are recorded off the sending path: a writer
thread commits what has arrived in grouped transactions (`outcomes.OutcomeWriter`), flushed
before anything reads them back. A crash between an accepted order and its group's commit
leaves the row `planned`; a resume or the day's next run settles every `planned` and `unknown`
row by GET client_order_id: found, its state is recorded and it is never re-sent; not found
(404), it never arrived and is sent again with the same id. So it is settled exactly once.

Exactly once across processes: every run that sends holds the run lock of its strategy and
trading date (`locking.RunLock`). Under it, the day's earlier runs are read and `day.decide_day`
says what to do: resume an interrupted run from its recorded plan (orders that may have reached
the gateway are settled by `client_order_id`; one the gateway never saw is sent again with the
same id), stop at a completed one unless forced, or plan anew counting the orders still open
at the gateway as in flight, with ids of its own generation.

This module never prints: it returns a `RunOutcome` and reports progress through a callback.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Literal

from sqlalchemy.orm import Session

from orchestrator_cli import db, logs, risk, sizing, store
from orchestrator_cli.clock import trading_date
from orchestrator_cli.day import (
    AlreadyCompleted,
    DayRun,
    NewRun,
    Refuse,
    Resume,
    decide_day,
)
from orchestrator_cli.errors import (
    ConfigError,
    PriceSourceError,
    RunInterrupted,
    ServiceError,
)
from orchestrator_cli.locking import RunLock, holding
from orchestrator_cli.mode import RunMode, mode_of
from orchestrator_cli.phases import PhaseTimer
from orchestrator_cli.request import Execution, RunRequest, RunSpec
from orchestrator_cli.schemas import (
    OrderRequest,
    OutcomeKind,
    PlannedMapping,
    PriceBook,
    RunResult,
    RunStatus,
    plural,
)
from orchestrator_cli.services import RunServices
from orchestrator_cli.settlement import UNSETTLED, VANISHED, Settlement, refresh_run
from orchestrator_cli.submission import PendingOrder, Submitter

logger = logging.getLogger(__name__)

UNPLANNED = "interrupted before its plan was recorded, so no order was sent"

RunAction = Literal["ran", "resumed", "already_completed", "unchanged"]


@dataclass(frozen=True)
class RunOutcome:
    """The run as recorded, what was done (a new run, a resumed one, or nothing), and why."""

    result: RunResult
    action: RunAction
    note: str | None = None


@dataclass(frozen=True)
class Plan:
    """Sized mappings of a new run, and the short weights long-only mode set to zero."""

    mappings: list[PlannedMapping]
    long_only_zeroed: dict[str, Decimal]


def _transaction(services: RunServices, what: str) -> AbstractContextManager[Session]:
    return db.transaction(services.sessions, what)


def _locked(
    services: RunServices, execution: Execution, strategy_id: str, as_of: date, run_id: uuid.UUID
) -> AbstractContextManager[tuple[RunServices, list[RunLock]]]:
    """The run locks of a run that sends: its date's, and today's for an earlier date."""
    today = trading_date(services.clock())
    return holding(
        services,
        strategy_id=strategy_id,
        days=[as_of, max(as_of, today)],
        run_id=run_id,
        stale_after=timedelta(seconds=execution.lock_stale_seconds),
    )


@contextmanager
def _naming(run_id: uuid.UUID) -> Iterator[None]:
    """An interrupt (Ctrl-C, SIGTERM) names the run it stopped, so the user can finish it."""
    try:
        yield
    except RunInterrupted:
        raise
    except KeyboardInterrupt as exc:
        raise RunInterrupted(str(run_id)) from exc


class ActiveRun:
    """One run being carried out; its identity is fixed when it is made."""

    def __init__(
        self,
        info: store.RunInfo,
        services: RunServices,
        execution: Execution,
    ) -> None:
        self.run_id = info.run_id
        self.strategy_id = info.strategy_id
        self.as_of_date = info.as_of_date
        self.generation = info.generation
        self.mode: RunMode = mode_of(info.dry_run)
        self.services = services
        self.execution = execution
        self.settlement = Settlement(services, concurrency=execution.order_concurrency)
        self.phases = PhaseTimer()  # stored with the run when it finishes
        self._submitter = Submitter(self.run_id, services, execution, self.phases)
        logs.bind(run_id=self.run_id, strategy_id=self.strategy_id, as_of_date=self.as_of_date)

    def preflight(self) -> str | None:
        """Gateway mode, kill switch, health and strategy; a reason to refuse the run, or None.

        A run that sends nothing only logs the problems. Mode and safety are read together;
        the mode is recorded first, so a refused run still shows where orders would have gone.
        """
        gateway = self.services.gateway
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="orch-preflight") as pool:
            safety_read = pool.submit(gateway.safety, self.strategy_id)
            trading_mode = gateway.trading_mode()
        with _transaction(self.services, "recording the gateway mode") as session:
            store.record_gateway_mode(session, self.run_id, trading_mode)
        self.services.progress(f"gateway mode: {trading_mode}")
        problems = []
        if trading_mode == "live" and not self.execution.allow_live_trading:
            problems.append(
                "the gateway would send orders to a LIVE (non-paper, non-dry-run) account; "
                "set ALLOW_LIVE_TRADING=true or pass --live to trade live"
            )
        safety = safety_read.result()
        problems.extend(safety.problems)
        for warning in safety.warnings:
            logger.warning("%s", warning)
        if not problems:
            return None
        if not self.mode.preflight_blocks:
            for problem in problems:
                logger.warning("%s goes ahead although %s", self.mode.name, problem)
            return None
        return "; ".join(problems) + "; no order was sent"

    def send(self, orders: Sequence[PendingOrder]) -> None:
        """Submit, then settle this run's unknown outcomes (re-sending what never arrived).

        Every outcome is committed when a submission returns, so the read sees them all."""
        self._submitter.submit(orders)
        with _transaction(self.services, "reading unknown outcomes") as session:
            unknown = store.order_rows(session, [self.run_id], outcomes=[OutcomeKind.UNKNOWN])
        if not unknown:
            return
        self.services.progress(f"settling {plural(len(unknown), 'order')} of unknown outcome")
        with self.phases.phase("settle"):
            resend = self.settlement.settle(unknown)
        self._submitter.submit([PendingOrder.of(r) for r in resend])

    def refuse_plan(self, orders: Sequence[PendingOrder], message: str) -> RunResult:
        """Record every planned order as not sent and fail the run with `message`."""
        self.settlement.mark_not_sent([o.mapping_id for o in orders], message)
        return self.finish("failed", message)

    def finish(self, status: RunStatus | None, error_message: str | None) -> RunResult:
        """Close the run (its status derived from its orders unless given) and read it back."""
        lost = self.services.send_permit()  # a run lock lost: the run is not to be resumed
        with _transaction(self.services, "finishing the run") as session:
            counts = store.outcome_counts(session, self.run_id)
            final = status or self.mode.status(counts)
            message = error_message
            if message is None and final != "completed":
                message = self.mode.describe_problems(counts, self.run_id, stopped_by=lost)
            store.finish_run(
                session,
                self.run_id,
                status=final,
                error_message=message,
                completed_at=self.services.clock(),
                phase_seconds=self.phases.record(),
            )
        with _transaction(self.services, "reading the run back") as session:
            return store.load_run(session, self.run_id)

    def resume(self) -> RunResult:
        """Continue this run from its recorded plan: settle, send what never left, finish."""
        with _naming(self.run_id):
            return self._resume()

    def _resume(self) -> RunResult:
        with _transaction(self.services, "reopening the run") as session:
            store.reopen_run(session, self.run_id, at=self.services.clock())
            rows = store.order_rows(session, [self.run_id])
        if not rows and not _plan_recorded(self.services, self.run_id):
            return self.finish("failed", UNPLANNED + "; `orch run` plans the day anew")
        if not self.mode.sends_orders:
            return self.finish(None, None)
        try:
            refusal = self.preflight()
        except ServiceError as exc:
            refusal = str(exc)
        pending = [r for r in rows if r.outcome in UNSETTLED]
        self.services.progress(f"settling {plural(len(pending), 'order')} that may have been sent")
        with self.phases.phase("settle"):
            never_arrived = self.settlement.settle(pending)
        unsent = [r for r in rows if r.outcome in (OutcomeKind.NOT_SENT, OutcomeKind.BLOCKED)]
        if refusal is not None:
            return self.finish(None, f"{refusal}; {len(never_arrived) + len(unsent)} not sent")
        self.send([PendingOrder.of(r) for r in [*never_arrived, *unsent]])
        return self.finish(None, None)


def _plan_recorded(services: RunServices, run_id: uuid.UUID) -> bool:
    with _transaction(services, "reading a run's plan") as session:
        return store.outcome_counts(session, run_id).signals > 0


def _close_interrupted(services: RunServices, run_id: uuid.UUID, message: str) -> None:
    logger.warning("run %s: %s", run_id, message)
    with _transaction(services, "closing an interrupted run") as session:
        store.finish_run(
            session, run_id, status="failed", error_message=message, completed_at=services.clock()
        )


# --- Today: read the day, decide, carry out ----------------------------------------------------


def _read_day(services: RunServices, strategy_id: str, as_of: date) -> list[DayRun]:
    """The day's runs, oldest first, each with whether its plan was recorded. Only reads."""
    with _transaction(services, "reading the day's runs") as session:
        runs = store.runs_for_date(session, strategy_id, as_of)
        return [
            DayRun(
                run,
                plan_recorded=run.status != "running"
                or run.dry_run
                or store.outcome_counts(session, run.run_id).signals > 0,
            )
            for run in runs
        ]


def _warn_unfinished_earlier(services: RunServices, strategy_id: str, as_of: date) -> None:
    with _transaction(services, "reading the day's runs") as session:
        stale = store.unfinished_runs_before(session, strategy_id, as_of)
    for run in stale:
        logger.warning(
            "run %s of %s for %s never finished (its process died); its plan is stale and "
            "will not be resumed: `orch runs sync %s` records what reached the gateway",
            run.run_id,
            strategy_id,
            run.as_of_date,
            run.run_id,
        )


def execute_run(request: RunRequest, services: RunServices) -> RunOutcome:
    """Run the whole workflow once (or resume the day's interrupted run) under the run lock.

    A dry run sends nothing, so it takes no lock, never blocks a real run and never touches
    another run: it plans from positions and the orders of finished runs.
    """
    spec, execution, run_id = request.spec, request.execution, uuid.uuid4()
    as_of = spec.as_of_date or trading_date(services.clock())
    mode = mode_of(spec.dry_run)
    locked = _locked(services, execution, spec.strategy_id, as_of, run_id)
    with locked if mode.takes_lock else nullcontext((services, [])) as (services, locks):
        _warn_unfinished_earlier(services, spec.strategy_id, as_of)
        day = _read_day(services, spec.strategy_id, as_of)
        decision = decide_day(day, spec, mode, force=execution.force)
        for unplanned in decision.close_unplanned:
            _close_interrupted(services, unplanned, UNPLANNED)
        action = decision.action
        if isinstance(action, NewRun):
            return RunOutcome(_new_run(request, services, run_id, as_of, action), "ran")
        if isinstance(action, Resume):
            for lock in locks:
                lock.point_to(action.run.run_id)
            return _resume_interrupted(action.run, request, services)
        if isinstance(action, AlreadyCompleted):
            with _transaction(services, "reading the completed run") as session:
                result = store.load_run(session, action.run.run_id)
            return RunOutcome(result, "already_completed", _completed_text(action))
        raise ConfigError(_refusal_text(action, spec.strategy_id))


def _resume_interrupted(
    run: store.RunInfo, request: RunRequest, services: RunServices
) -> RunOutcome:
    note = f"run {run.run_id} of {run.strategy_id} for {run.as_of_date} was interrupted: resumed"
    services.progress(note)
    result = ActiveRun(run, services, request.execution).resume()
    return RunOutcome(result, "resumed", note)


def _completed_text(action: AlreadyCompleted) -> str:
    run = action.run
    done = f"run {run.run_id} of {run.strategy_id} for {run.as_of_date} already completed"
    if not action.differences:
        return f"{done}; nothing to do (--force plans what is still missing)"
    return (
        f"{done} with other inputs ({'; '.join(action.differences)}); nothing was done: "
        "`orch run --force` with these inputs plans what they still need"
    )


def _refusal_text(action: Refuse, strategy_id: str) -> str:
    run = action.run
    return (
        f"run {run.run_id} of {strategy_id} for {run.as_of_date} was interrupted and "
        f"was planned with other inputs ({'; '.join(action.differences)}). Nothing was "
        f"sent. `orch runs resume {run.run_id}` finishes it as planned; "
        "`orch run --force` with the new inputs abandons what it had not sent "
        "and plans anew"
    )


# --- A new run -----------------------------------------------------------------------------------


def _abandon(run: ActiveRun, interrupted: store.RunInfo) -> None:
    """Close an interrupted run for a forced one: settle what may have been sent, record
    what never left as not sent. Its open orders then count as in flight."""
    with _transaction(run.services, "reading the interrupted run") as session:
        rows = store.order_rows(session, [interrupted.run_id])
    never_arrived = run.settlement.settle([r for r in rows if r.outcome in UNSETTLED])
    run.settlement.mark_not_sent(
        [r.mapping_id for r in never_arrived],
        f"abandoned for forced run {run.run_id} before it was sent",
    )
    _close_interrupted(
        run.services, interrupted.run_id, f"interrupted; abandoned for forced run {run.run_id}"
    )


def _start(
    spec: RunSpec, services: RunServices, run_id: uuid.UUID, as_of: date, generation: int
) -> store.RunInfo:
    """Commit the run row (`running`) before any service is called."""
    with _transaction(services, "creating the run record") as session:
        store.create_run(
            session,
            run_id=run_id,
            strategy_id=spec.strategy_id,
            as_of_date=as_of,
            symbols=list(spec.symbols),
            capital=spec.capital,
            max_position_size=spec.max_position_size,
            dry_run=spec.dry_run,
            price_source=services.prices.name,
            started_at=services.clock(),
            settings_snapshot=spec.settings_snapshot,
            limits=spec.limits.record(),
            generation=generation,
        )
        return store.run_info(session, run_id)


def _new_run(
    request: RunRequest, services: RunServices, run_id: uuid.UUID, as_of: date, action: NewRun
) -> RunResult:
    info = _start(request.spec, services, run_id, as_of, action.generation)
    with _naming(run_id):
        return _carry_out_new(ActiveRun(info, services, request.execution), request.spec, action)


def _carry_out_new(run: ActiveRun, spec: RunSpec, action: NewRun) -> RunResult:
    run_id, services = run.run_id, run.services
    if action.abandon is not None:
        with run.phases.phase("settle"):
            _abandon(run, action.abandon)
    try:
        refusal = run.preflight()
        if refusal is not None:
            logger.error("run %s refused: %s", run_id, refusal)
            return run.finish("failed", refusal)
        plan = _plan(run, spec, action.earlier)
    except ServiceError as exc:
        logger.error("run %s failed before any order: %s", run_id, exc)
        return run.finish("failed", str(exc))
    with run.phases.phase("plan"):
        review = risk.review_plan(
            plan.mappings,
            limits=spec.limits,
            capital=spec.capital,
            long_only_zeroed=plan.long_only_zeroed,
        )
    with run.phases.phase("record_plan"):
        orders = _record_plan(run, review.plans)
    needed_price = [p for p in review.plans if p.target_weight != 0]
    if needed_price and all(p.price is None for p in needed_price):
        message = "no usable price for any signal that needed one; no order was sent"
        return run.refuse_plan(orders, message)
    if review.violations:
        message = "pre-trade limit breached, no order was sent: " + "; ".join(review.violations)
        return run.refuse_plan(orders, message)
    if not run.mode.sends_orders:
        services.progress(f"dry run: {len(orders)} orders planned, none sent")
    elif orders:
        run.send(orders)
    return run.finish(None, None)


def _plan(run: ActiveRun, spec: RunSpec, earlier: Sequence[store.RunInfo]) -> Plan:
    """Signals, positions (read meanwhile; a signals failure is raised first, as if read in
    order) plus what earlier runs still have open, prices, then sizing."""
    services, phase = run.services, run.phases.phase
    services.progress(f"fetching signals for {plural(len(spec.symbols), 'symbol')}")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="orch-positions") as pool:
        positions_read = pool.submit(services.gateway.get_positions)
        with phase("signals"):
            response = services.signals.fetch_signals(
                spec.symbols,
                as_of_date=run.as_of_date,
                top_n=spec.top_n,
                bottom_n=spec.bottom_n,
                strategy_id=run.strategy_id,
            )
            with _transaction(services, "recording signal metadata") as session:
                store.record_signal_metadata(
                    session,
                    run.run_id,
                    num_signals=len(response.signals),
                    model_version=response.metadata.model_version,
                    generated_at=response.metadata.generated_at,
                )
        signals, zeroed = risk.apply_long_only(response.signals, spec.limits)
        services.progress("reading positions from the gateway")
        with phase("positions"):
            positions = positions_read.result()
    with phase("settle"):
        still_open = run.settlement.settle_earlier_runs(earlier, checked_by=run.run_id)
    for symbol, shares in still_open.items():
        if shares:
            logger.info("%s: %s shares still open at the gateway from earlier runs", symbol, shares)
            positions[symbol] = positions.get(symbol, Decimal(0)) + shares
    # Held symbols are priced too: limits check the notional of closing orders.
    wanted = [s.symbol for s in signals if s.target_weight != 0 or positions.get(s.symbol)]
    services.progress(f"reading {plural(len(wanted), 'price')} from {services.prices.name}")
    with phase("prices"):
        try:
            now = services.clock()
            book = services.prices.fetch_prices(wanted, now=now) if wanted else PriceBook()
        except PriceSourceError as exc:
            logger.error("price source failed: %s", exc)
            book = PriceBook(problems={symbol: str(exc) for symbol in wanted})
    with phase("plan"):
        mappings = sizing.plan_orders(
            signals, book, positions, capital=spec.capital, max_position_size=spec.max_position_size
        )
    return Plan(mappings, zeroed)


def _record_plan(run: ActiveRun, plans: Sequence[PlannedMapping]) -> list[PendingOrder]:
    """Commit every mapping (and each order's id) before anything is sent."""
    ids = [
        sizing.client_order_id(
            run.strategy_id,
            run.as_of_date,
            plan.symbol,
            plan.order_side,
            plan.order_qty,
            plan.leg,
            run.generation,
        )
        if plan.needs_order and plan.order_side is not None
        else None
        for plan in plans
    ]
    with _transaction(run.services, "recording the plan") as session:
        mapping_ids = store.add_mappings(session, run.run_id, plans, ids)
    return [
        PendingOrder(
            mapping_id,
            plan.reduces,
            OrderRequest(
                symbol=plan.symbol, side=plan.order_side, qty=plan.order_qty, client_order_id=coid
            ),
        )
        for mapping_id, plan, coid in zip(mapping_ids, plans, ids, strict=True)
        if coid is not None and plan.order_side is not None
    ]


# --- Existing runs: resume and sync --------------------------------------------------------------


def _read_run(services: RunServices, run_id: uuid.UUID) -> store.RunInfo:
    with _transaction(services, "reading the run") as session:
        return store.run_info(session, run_id)


def _resume_refusal(
    info: store.RunInfo, day: Sequence[store.RunInfo], services: RunServices
) -> str | None:
    """Why resuming a real run now could order twice or on a stale plan, or None."""
    run_id = info.run_id
    position = [r.run_id for r in day].index(run_id)  # runs_for_date: oldest first
    # Only a later real run that recorded a plan planned from this one's orders; one that
    # failed before planning (signals unavailable, a refusal at the preflight) did not.
    later = [r for r in day[position + 1 :] if not r.dry_run and _plan_recorded(services, r.run_id)]
    if later:
        return (
            f"run {run_id} was followed by run {later[-1].run_id}, which planned from the "
            "orders this one had sent: resuming it now could order twice. Nothing was "
            f"sent; `orch runs sync {run_id}` updates its record"
        )
    today = trading_date(services.clock())
    started = trading_date(info.started_at)
    if started != today or info.as_of_date != today:
        return (
            f"run {run_id} is for {info.as_of_date} (started {started}), not today ({today}): "
            f"its plan is stale. Nothing was sent; `orch runs sync {run_id}` records the rest"
        )
    return None


def resume_run(run_id: uuid.UUID, execution: Execution, services: RunServices) -> RunOutcome:
    """Continue a run from its recorded plan, under its strategy and date's run lock."""
    info = _read_run(services, run_id)
    locked = _locked(services, execution, info.strategy_id, info.as_of_date, run_id)
    with locked if mode_of(info.dry_run).takes_lock else nullcontext((services, [])) as held:
        run = ActiveRun(info, held[0], execution)
        with _transaction(services, "reading the run") as session:
            info = store.run_info(session, run_id)
            day = store.runs_for_date(session, info.strategy_id, info.as_of_date)
            result = store.load_run(session, run_id)
        if info.status == "completed":
            return RunOutcome(result, "already_completed", f"run {run_id} is completed")
        refusal = _resume_refusal(info, day, services) if run.mode.sends_orders else None
        if refusal is not None:
            raise ConfigError(refusal)
        if info.status != "running" and not result.mappings:
            note = f"run {run_id} failed before it planned anything: nothing to resume"
            return RunOutcome(result, "unchanged", note)
        return RunOutcome(run.resume(), "resumed", f"run {run_id} resumed")


@dataclass(frozen=True)
class SyncOutcome:
    """The run after a sync, and why any of its orders could not be settled."""

    result: RunResult
    orders: int
    unsettled: list[str]  # "client_order_id: why", for each order the gateway did not settle


def sync_run(run_id: uuid.UUID, execution: Execution, services: RunServices) -> SyncOutcome:
    """Refresh every order of a run from the gateway and re-derive its counts and status.

    Sync never sends: an order the gateway has never seen keeps its state (resume sends it);
    a run still in progress keeps `running`. Orders the gateway could not be asked about, or
    accepted but no longer knows (`VANISHED`), keep their records and are listed."""
    info = _read_run(services, run_id)
    with _transaction(services, "reading the run") as session:
        rows = store.order_rows(session, [run_id])
    settlement = Settlement(services, concurrency=execution.order_concurrency)
    if mode_of(info.dry_run).settles_with_gateway:
        services.progress(f"asking the gateway about {plural(len(rows), 'order')}")
        settlement.settle(rows)
    refresh_run(services, run_id)
    with _transaction(services, "reading the run") as session:
        result = store.load_run(session, run_id)
    unsettled = [f"{row.client_order_id}: {exc}" for row, exc in settlement.unsettled]
    unsettled += [f"{row.client_order_id}: {VANISHED}" for row in settlement.vanished]
    return SyncOutcome(result, len(rows), unsettled)
