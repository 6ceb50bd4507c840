"""The audit trail: runs and their signal-to-order mappings; functions take the session first.

The caller owns transactions (see `db.transaction`): these functions flush (so ids and
constraint errors surface at once) but never commit.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, get_args

from sqlalchemy import String, case, cast, func, select, update
from sqlalchemy.orm import Session

from orchestrator_cli.bulk import insert_mappings
from orchestrator_cli.errors import RunNotFoundError
from orchestrator_cli.models import OrchestrationRun, SignalOrderMapping
from orchestrator_cli.schemas import (
    MappingResult,
    OrderDetail,
    OrderSide,
    OutcomeKind,
    PlannedMapping,
    RunPage,
    RunResult,
    RunStatus,
    RunSummary,
    SkipReason,
    classify_status,
)

_MILLISECOND = Decimal("0.001")
IDS_PER_STATEMENT = 10_000
# The mappings' table, for bulk statements (Core: no ORM object per row).
_MAPPINGS = SignalOrderMapping.metadata.tables[SignalOrderMapping.__tablename__]


# --- Writes -------------------------------------------------------------------------------------


def _run_row(session: Session, run_id: uuid.UUID) -> OrchestrationRun:
    row = session.scalars(
        select(OrchestrationRun).where(OrchestrationRun.run_id == run_id)
    ).one_or_none()
    if row is None:
        raise RunNotFoundError(f"no run {run_id}: see `orch runs list`")
    return row


def create_run(
    session: Session,
    *,
    run_id: uuid.UUID,
    strategy_id: str,
    as_of_date: date,
    symbols: list[str],
    capital: Decimal,
    max_position_size: Decimal,
    dry_run: bool,
    price_source: str,
    started_at: datetime,
    settings_snapshot: dict[str, Any],
    limits: dict[str, Any],
    generation: int,
) -> None:
    """Insert a run with status "running"; snapshot values JSON lacks (Decimal, Path) go as text."""
    session.add(
        OrchestrationRun(
            run_id=run_id,
            strategy_id=strategy_id,
            as_of_date=as_of_date,
            status="running",
            symbols=list(symbols),
            capital=capital,
            max_position_size=max_position_size,
            dry_run=dry_run,
            price_source=price_source,
            started_at=started_at,
            settings=json.loads(json.dumps(settings_snapshot, default=str)),
            limits=json.loads(json.dumps(limits, default=str)),
            generation=generation,
        )
    )
    session.flush()


def record_gateway_mode(session: Session, run_id: uuid.UUID, mode: str) -> None:
    """Store where the gateway would send orders: `live`, `paper` or `dry_run`."""
    _run_row(session, run_id).gateway_mode = mode
    session.flush()


def record_signal_metadata(
    session: Session,
    run_id: uuid.UUID,
    *,
    num_signals: int,
    model_version: str | None,
    generated_at: datetime | None,
) -> None:
    """Store what the Signal Service said about the signals of this run."""
    row = _run_row(session, run_id)
    row.num_signals = num_signals
    row.model_version = model_version
    row.signals_generated_at = generated_at
    session.flush()


def add_mappings(
    session: Session,
    run_id: uuid.UUID,
    plans: Sequence[PlannedMapping],
    client_order_ids: Sequence[str | None],
) -> list[int]:
    """One row per plan, in order, in one bulk write (`bulk`); the row ids in the plans' order.

    A plan that needs an order must come with its client_order_id (stored as outcome and
    order_status "planned"); a skipped one with None (order_qty and order_side stay null).
    """
    rows = []
    for plan, client_order_id in zip(plans, client_order_ids, strict=True):
        if plan.needs_order != (client_order_id is not None):
            raise ValueError(
                f"{plan.symbol}: a client_order_id is required exactly when an order is planned"
            )
        rows.append(_mapping_values(run_id, plan, client_order_id))
    if not rows:
        return []
    # Core, not ORM objects: a universe of thousands of symbols is written in one go.
    return insert_mappings(session.connection(), run_id, rows)


_PLAN_COLUMNS: tuple[str, ...] = ("symbol", "predicted_return", "rank", "target_weight", "price")
_PLAN_COLUMNS += ("price_timestamp", "current_qty", "target_dollars", "target_qty", "leg")


def _mapping_values(
    run_id: uuid.UUID, plan: PlannedMapping, client_order_id: str | None
) -> dict[str, Any]:
    ordered = plan.needs_order
    planned = OutcomeKind.PLANNED.value if ordered else None
    return {name: getattr(plan, name) for name in _PLAN_COLUMNS} | {
        "run_id": run_id,
        "reduces": plan.reduces if ordered else None,
        "order_qty": plan.order_qty if ordered else None,
        "order_side": plan.order_side if ordered else None,
        "client_order_id": client_order_id,
        "outcome": planned,
        "order_status": planned,
        "skip_reason": plan.skip_reason.value if plan.skip_reason else None,
        "note": plan.skip_detail,
        "detail": None if ordered else plan.skip_detail,
    }


def mark_not_sent(
    session: Session,
    mapping_ids: Sequence[int],
    *,
    message: str,
    at: datetime,
) -> None:
    """Record orders never sent (e.g. after a kill switch): outcome and status `not_sent`."""
    ids = list(mapping_ids)
    # In slices: SQLite takes at most 32,766 parameters in one statement (by default).
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        session.execute(
            update(SignalOrderMapping)
            .where(SignalOrderMapping.id.in_(ids[start : start + IDS_PER_STATEMENT]))
            .values(
                outcome=OutcomeKind.NOT_SENT.value,
                order_status="not_sent",
                detail=message,
                updated_at=at,
            )
        )
    session.flush()


@dataclass(frozen=True)
class OutcomeCounts:
    """How the mappings of one run stand; `submitted` counts requests that actually left."""

    signals: int
    orders_planned: int
    planned: int
    accepted: int
    rejected: int
    blocked: int
    unknown: int
    not_sent: int
    submitted: int
    price_unavailable: int


def outcome_counts(session: Session, run_id: uuid.UUID) -> OutcomeCounts:
    """Count the mappings of a run by outcome, in one query."""
    mapping = SignalOrderMapping

    def with_outcome(kind: OutcomeKind) -> Any:
        return func.count(case((mapping.outcome == kind.value, 1)))

    row = session.execute(
        select(
            func.count(),
            func.count(mapping.client_order_id),
            with_outcome(OutcomeKind.PLANNED),
            with_outcome(OutcomeKind.ACCEPTED),
            with_outcome(OutcomeKind.REJECTED),
            with_outcome(OutcomeKind.BLOCKED),
            with_outcome(OutcomeKind.UNKNOWN),
            with_outcome(OutcomeKind.NOT_SENT),
            func.count(mapping.submitted_at),
            func.count(case((mapping.skip_reason == SkipReason.PRICE_UNAVAILABLE.value, 1))),
        ).where(mapping.run_id == run_id)
    ).one()
    return OutcomeCounts(*(int(value) for value in row))


def finish_run(
    session: Session,
    run_id: uuid.UUID,
    *,
    status: str,
    error_message: str | None,
    completed_at: datetime,
    phase_seconds: dict[str, float] | None = None,
) -> None:
    """Close a run: status, duration and the num_orders_* counts taken from its mappings;
    `phase_seconds`, when given, replaces the phases stored before (a resume's own)."""
    if status not in get_args(RunStatus):
        raise ValueError(f"unknown run status {status!r}")
    row = _run_row(session, run_id)
    counts = outcome_counts(session, run_id)
    row.status = status
    row.error_message = error_message
    row.completed_at = completed_at
    if phase_seconds is not None:
        row.phase_seconds = phase_seconds
    row.duration_seconds = _seconds(completed_at - (row.resumed_at or row.started_at))
    _store_counts(row, counts)
    session.flush()


def _seconds(delta: timedelta) -> Decimal:
    return (Decimal(delta / timedelta(microseconds=1)) / 1_000_000).quantize(_MILLISECOND)


# The order counts a run row stores (`num_orders_<kind>`), each an `OutcomeCounts` field.
_COUNTED = ("submitted", "accepted", "rejected", "blocked", "unknown")


def _store_counts(row: OrchestrationRun, counts: OutcomeCounts) -> None:
    for kind in _COUNTED:
        setattr(row, f"num_orders_{kind}", getattr(counts, kind))


def record_order_detail(
    session: Session, mapping_id: int, detail: OrderDetail, *, at: datetime, note: str | None = None
) -> None:
    """Take the gateway's own record of an order: status, fills, broker id.

    The order is at the gateway, so it was sent: `submitted_at` is set if it was not. A `note`
    (e.g. the gateway filed it under another strategy) is kept on the mapping, once.
    """
    row = session.get_one(SignalOrderMapping, mapping_id)
    if row.client_order_id != detail.client_order_id:
        raise ValueError(f"detail for {detail.client_order_id} given for mapping {mapping_id}")
    row.outcome = classify_status(detail.status).value
    row.order_status = detail.status
    if detail.broker_order_id is not None:
        row.broker_order_id = detail.broker_order_id
    row.filled_qty = detail.filled_qty
    row.filled_avg_price = detail.filled_avg_price
    row.filled_at = detail.filled_at
    if detail.error_message:
        row.detail = detail.error_message
    if note and note not in (row.note or ""):
        row.note = f"{row.note}; {note}" if row.note else note
    if row.submitted_at is None:
        row.submitted_at = at
    row.updated_at = at
    session.flush()


def reopen_run(session: Session, run_id: uuid.UUID, *, at: datetime) -> None:
    """Mark a run `running` again (it is being resumed at `at`)."""
    row = _run_row(session, run_id)
    row.status = "running"
    row.completed_at = None
    row.resumed_at = at
    session.flush()


def refresh_counts(session: Session, run_id: uuid.UUID, *, status: str) -> None:
    """Re-derive a run's order counts from its mappings and set its status (after a sync)."""
    if status not in get_args(RunStatus):
        raise ValueError(f"unknown run status {status!r}")
    row = _run_row(session, run_id)
    if status == "completed":
        row.error_message = None
    row.status = status
    _store_counts(row, outcome_counts(session, run_id))
    session.flush()


# --- Reads --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderRow:
    """One planned order of a run, as resume and sync need it."""

    mapping_id: int
    run_id: uuid.UUID
    client_order_id: str
    symbol: str
    side: OrderSide
    qty: int
    reduces: bool
    outcome: str
    order_status: str | None
    filled_qty: Decimal | None


def order_rows(
    session: Session,
    run_ids: Sequence[uuid.UUID],
    *,
    outcomes: Sequence[OutcomeKind] | None = None,
) -> list[OrderRow]:
    """Every planned order of the given runs (mappings with a client_order_id), in id order;
    only those with one of `outcomes` when given."""
    c = _MAPPINGS.c
    query = (
        select(_MAPPINGS)
        .where(c.run_id.in_(list(run_ids)), c.client_order_id.is_not(None))
        .order_by(c.id)
    )
    if outcomes is not None:
        query = query.where(c.outcome.in_([kind.value for kind in outcomes]))
    return [
        OrderRow(
            mapping_id=row.id,
            run_id=row.run_id,
            client_order_id=row.client_order_id or "",
            symbol=row.symbol,
            side="buy" if row.order_side == "buy" else "sell",
            qty=row.order_qty or 0,
            reduces=bool(row.reduces),
            outcome=row.outcome or OutcomeKind.PLANNED.value,
            order_status=row.order_status,
            filled_qty=row.filled_qty,
        )
        for row in session.connection().execute(query)
    ]


@dataclass(frozen=True)
class RunInfo:
    """A run's identity and inputs, as resume needs them."""

    run_id: uuid.UUID
    strategy_id: str
    as_of_date: date
    status: str
    dry_run: bool
    generation: int
    started_at: datetime
    symbols: list[str]
    capital: Decimal
    max_position_size: Decimal
    limits: dict[str, Any] | None


def _info(row: OrchestrationRun) -> RunInfo:
    return RunInfo(
        row.run_id,
        row.strategy_id,
        row.as_of_date,
        row.status,
        row.dry_run,
        row.generation,
        row.started_at,
        list(row.symbols),
        row.capital,
        row.max_position_size,
        row.limits,
    )


def run_info(session: Session, run_id: uuid.UUID) -> RunInfo:
    return _info(_run_row(session, run_id))


def unfinished_runs_before(session: Session, strategy_id: str, as_of_date: date) -> list[RunInfo]:
    """Real runs of a strategy for earlier dates still marked `running` (their process died)."""
    rows = session.scalars(
        select(OrchestrationRun)
        .where(
            OrchestrationRun.strategy_id == strategy_id,
            OrchestrationRun.as_of_date < as_of_date,
            OrchestrationRun.status == "running",
            OrchestrationRun.dry_run.is_(False),
        )
        .order_by(OrchestrationRun.started_at)
    )
    return [_info(row) for row in rows]


def runs_for_date(session: Session, strategy_id: str, as_of_date: date) -> list[RunInfo]:
    """The runs of a strategy and trading date, oldest first."""
    rows = session.scalars(
        select(OrchestrationRun)
        .where(
            OrchestrationRun.strategy_id == strategy_id,
            OrchestrationRun.as_of_date == as_of_date,
        )
        .order_by(OrchestrationRun.started_at, OrchestrationRun.id)
    )
    return [_info(row) for row in rows]


def _order_counts(session: Session, row: OrchestrationRun) -> dict[str, int]:
    """The run's order counts: stored when it finishes, so a run still `running` (in progress,
    or interrupted) is counted from its mappings as they are now."""
    if row.status != "running":
        return {f"num_orders_{kind}": getattr(row, f"num_orders_{kind}") for kind in _COUNTED}
    live = outcome_counts(session, row.run_id)
    return {f"num_orders_{kind}": getattr(live, kind) for kind in _COUNTED}


def _summary_fields(session: Session, row: OrchestrationRun) -> dict[str, Any]:
    return {
        "run_id": row.run_id,
        "strategy_id": row.strategy_id,
        "as_of_date": row.as_of_date,
        "status": row.status,
        "dry_run": row.dry_run,
        "num_signals": row.num_signals,
        **_order_counts(session, row),
        "duration_seconds": None if row.duration_seconds is None else float(row.duration_seconds),
        "error_message": row.error_message,
        "started_at": row.started_at,
        "gateway_mode": row.gateway_mode,
        "capital": row.capital,
        "max_position_size": row.max_position_size,
        "num_symbols": len(row.symbols),
        "price_source": row.price_source,
        "elapsed_seconds": (
            float(_seconds(row.completed_at - row.started_at))
            if row.resumed_at is not None and row.completed_at is not None
            else None
        ),
        "phase_seconds": row.phase_seconds,
    }


def list_runs(
    session: Session,
    *,
    limit: int,
    offset: int,
    status: str | None = None,
    strategy_id: str | None = None,
) -> RunPage:
    """One page of runs, newest first; `total` counts every run matching the filters."""
    filters = []
    if status is not None:
        filters.append(OrchestrationRun.status == status)
    if strategy_id is not None:
        filters.append(OrchestrationRun.strategy_id == strategy_id)
    total = session.scalar(select(func.count()).select_from(OrchestrationRun).where(*filters))
    rows = session.scalars(
        select(OrchestrationRun)
        .where(*filters)
        .order_by(OrchestrationRun.started_at.desc(), OrchestrationRun.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return RunPage(
        runs=[RunSummary(**_summary_fields(session, row)) for row in rows],
        total=total or 0,
        limit=limit,
        offset=offset,
    )


_HEX_PREFIX = re.compile(r"[0-9a-f]{4,32}")


def resolve_run_id(session: Session, text: str) -> uuid.UUID:
    """The run a full id or unique prefix names (case-insensitive, hyphens optional, >= 4 hex)."""
    prefix = text.strip().lower().replace("-", "")
    if not _HEX_PREFIX.fullmatch(prefix):
        raise RunNotFoundError(
            f"{text!r} is not a run id: give the run id or at least its first 4 hex characters "
            "(see `orch runs list`)"
        )
    # Uuid is CHAR(32) hex on SQLite and a native uuid (text with hyphens) on PostgreSQL.
    hex_id = func.replace(func.lower(cast(OrchestrationRun.run_id, String)), "-", "")
    matches = session.scalars(
        select(OrchestrationRun.run_id).where(hex_id.like(prefix + "%"))
    ).all()
    if not matches:
        raise RunNotFoundError(
            f"no run matches {text!r}: see `orch runs list` (`--sandbox` for the runs of "
            "`orch run --sandbox`, which are kept in the sandbox's own database)"
        )
    if len(matches) > 1:
        raise RunNotFoundError(f"{text!r} matches {len(matches)} runs: give more characters")
    return matches[0]


def load_run(session: Session, run_id: uuid.UUID) -> RunResult:
    """A run with its mappings ordered by rank, then symbol (read as rows, not ORM objects)."""
    row = _run_row(session, run_id)
    c = _MAPPINGS.c
    names = list(MappingResult.model_fields)
    mappings = session.connection().execute(
        select(*(c[name] for name in names))
        .where(c.run_id == run_id)
        .order_by(c.rank, c.symbol, c.leg, c.id)
    )
    return RunResult(
        **_summary_fields(session, row),
        limits=row.limits,
        mappings=[
            MappingResult.model_validate(dict(zip(names, values, strict=True)))
            for values in mappings
        ],
    )
