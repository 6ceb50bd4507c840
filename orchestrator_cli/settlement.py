"""Settling orders whose fate the run does not know, by asking the gateway for each id.

An order recorded `planned` or `unknown` may or may not have reached the gateway. The gateway's
record, looked up by `client_order_id`, settles it: found, its status and fills are taken; not
found (404), it never arrived. Look-ups go out through a bounded pool like orders do; their
answers are committed together, in one transaction, once all are in. An order the gateway
cannot be asked about, or whose record is unusable (a fill outside 0..the order's quantity),
stays as it is.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from orchestrator_cli import db, store
from orchestrator_cli.errors import ServiceError
from orchestrator_cli.mode import mode_of
from orchestrator_cli.schemas import OPEN_STATUSES, OrderDetail, OutcomeKind, plural
from orchestrator_cli.services import RunServices

logger = logging.getLogger(__name__)

# Orders that may be at the gateway without the run knowing their fate.
UNSETTLED = (OutcomeKind.PLANNED, OutcomeKind.UNKNOWN)
# An order the gateway accepted, looked up there again and not found (404).
VANISHED = (
    "recorded accepted by the gateway, which now has no order with this id (is "
    "EXECUTION_GATEWAY_URL the gateway that took it?)"
)


class Settlement:
    """Look-ups and the records they change, for one command's runs."""

    def __init__(self, services: RunServices, *, concurrency: int) -> None:
        self._services = services
        self._concurrency = concurrency
        # Orders the gateway could not be asked about, with why: their records stay as they were.
        self.unsettled: list[tuple[store.OrderRow, ServiceError]] = []
        # Orders recorded accepted that the gateway says it has never seen: a contradiction
        # (another gateway than the one that took them, or one that lost them) to report.
        self.vanished: list[store.OrderRow] = []

    def settle(self, rows: Sequence[store.OrderRow]) -> list[store.OrderRow]:
        """Ask the gateway about each order; record what it has, return those it never saw."""
        if not rows:
            return []
        gateway = self._services.gateway

        def look_up(row: store.OrderRow) -> OrderDetail | ServiceError | None:
            try:
                answer = gateway.get_order(row.client_order_id)
            except ServiceError as exc:
                return exc
            if answer is None:
                return None
            problem = unlike(row, answer)
            if problem is not None:
                return ServiceError(f"the gateway's answer is a bad payload: {problem}")
            return answer

        never_arrived = []
        found: list[tuple[store.OrderRow, OrderDetail]] = []
        workers = min(self._concurrency, len(rows))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="orch-settle") as pool:
            for row, answer in zip(rows, pool.map(look_up, rows), strict=True):
                if isinstance(answer, ServiceError):
                    logger.warning("could not settle %s: %s", row.client_order_id, answer)
                    self.unsettled.append((row, answer))
                elif answer is None:
                    never_arrived.append(row)
                    if row.outcome == OutcomeKind.ACCEPTED:
                        self.vanished.append(row)
                else:
                    found.append((row, answer))
        self._record(found)
        return never_arrived

    def _record(self, found: Sequence[tuple[store.OrderRow, OrderDetail]]) -> None:
        """Record the gateway's answers in one transaction: a crash before it commits loses
        only look-ups, which the next settlement asks again."""
        if not found:
            return
        with db.transaction(
            self._services.sessions, "recording orders' state at the gateway"
        ) as session:
            strategies = {r.run_id: store.run_info(session, r.run_id).strategy_id for r, _ in found}
            for row, answer in found:
                note = filed_elsewhere(answer, strategies[row.run_id])
                if note is not None:
                    logger.warning("%s: %s", row.client_order_id, note)
                store.record_order_detail(
                    session, row.mapping_id, answer, at=self._services.clock(), note=note
                )

    def mark_not_sent(self, mapping_ids: Sequence[int], message: str) -> None:
        """Record orders that never left (a refused plan, an abandoned run) as not sent."""
        if not mapping_ids:
            return
        with db.transaction(
            self._services.sessions, "recording orders that were not sent"
        ) as session:
            store.mark_not_sent(
                session,
                mapping_ids,
                message=message,
                at=self._services.clock(),
            )

    def settle_earlier_runs(
        self, earlier: Sequence[store.RunInfo], *, checked_by: uuid.UUID
    ) -> dict[str, Decimal]:
        """Settle the day's earlier runs; return their shares still open, signed, by symbol.

        Their orders that may have reached the gateway are settled first (and the runs'
        counts refreshed); one the gateway never saw is recorded as not sent: its run is over.
        One the gateway cannot be asked about raises ServiceError: nothing may be planned.
        """
        if not earlier:
            return {}
        run_ids = [run.run_id for run in earlier]
        sessions = self._services.sessions
        with db.transaction(sessions, "reading earlier orders") as session:
            rows = [
                r
                for r in store.order_rows(session, run_ids)
                if r.outcome in (OutcomeKind.ACCEPTED, *UNSETTLED)
            ]
        if not rows:
            return {}
        self._services.progress(
            f"checking {plural(len(rows), 'order')} of earlier runs at the gateway"
        )
        never_arrived = [r.mapping_id for r in self.settle(rows)]
        if self.unsettled:  # their fate unknown, they would be planned (and sent) again
            row, exc = self.unsettled[0]
            raise ServiceError(
                f"could not ask the gateway about {len(self.unsettled)} order(s) of earlier "
                f"runs (first: {row.client_order_id} of run {row.run_id}: {exc}); planning now "
                "could order them a second time, so nothing was sent: `orch run` again once "
                "the gateway answers"
            )
        self.mark_not_sent(never_arrived, f"not at the gateway when run {checked_by} checked it")
        for run_id in run_ids:
            refresh_run(self._services, run_id)
        with db.transaction(sessions, "reading earlier orders") as session:
            settled = store.order_rows(session, run_ids)
        gone = set(never_arrived)
        open_shares: dict[str, Decimal] = {}
        for row in settled:
            if row.mapping_id in gone or row.order_status not in OPEN_STATUSES:
                continue
            remaining = Decimal(row.qty) - (row.filled_qty or 0)
            signed = remaining if row.side == "buy" else -remaining
            open_shares[row.symbol] = open_shares.get(row.symbol, Decimal(0)) + signed
        return open_shares


def unlike(row: store.OrderRow, answer: OrderDetail) -> str | None:
    """How the gateway's record of an order contradicts the recorded one (another symbol,
    side or quantity, or a fill outside 0..its quantity), or None: such a record is not
    taken, as its fills would be booked against the wrong order."""
    given = (answer.symbol, answer.side, answer.qty)
    recorded = (row.symbol, row.side, Decimal(row.qty))
    said = (
        None if answer.symbol is None else answer.symbol.strip().upper(),
        None if answer.side is None else answer.side.strip().lower(),
        answer.qty,
    )
    if any(value is not None and value != mine for value, mine in zip(said, recorded, strict=True)):
        shown = " ".join("?" if value is None else str(value)[:40] for value in given)
        return f"it describes {shown!r}, not the recorded {row.side} {row.qty} {row.symbol}"
    filled = answer.filled_qty
    if filled is not None and not 0 <= filled <= row.qty:
        return f"filled_qty {filled} is outside 0..{row.qty}, the order's quantity"
    return None


def filed_elsewhere(answer: OrderDetail, strategy_id: str) -> str | None:
    """A note when the gateway filed the order under another strategy than its run's.

    Not a bad payload: the client_order_id (derived from the run's strategy) says the order is
    the run's own, so its status and fills are taken; the gateway's books attribute it
    elsewhere, which the operator must hear about.
    """
    if answer.strategy_id is None or answer.strategy_id == strategy_id:
        return None
    return (
        f"the gateway filed this order under strategy {answer.strategy_id[:100]!r}, not "
        f"{strategy_id!r}"
    )


def refresh_run(services: RunServices, run_id: uuid.UUID) -> None:
    """Re-derive a finished run's counts and status from its orders (after settling them).

    A run still `running` keeps its status. A run that turns out completed loses the error
    message that described its then-unsettled orders.
    """
    with db.transaction(services.sessions, "updating the run's counts") as session:
        info = store.run_info(session, run_id)
        status = info.status
        counts = store.outcome_counts(session, run_id)
        if status != "running" and counts.orders_planned:
            status = mode_of(info.dry_run).status(counts)
        store.refresh_counts(session, run_id, status=status)
