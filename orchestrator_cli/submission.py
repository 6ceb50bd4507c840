"""Sending a run's orders: a bounded pool, reduce-first waves, halts, recording outcomes.

Every order sent here is already in the recorded plan with its `client_order_id`, so an order
that went out before a crash is found again by that id (and the gateway de-duplicates a re-send
of it). Each outcome is committed as it arrives, in its own short transaction; no transaction is
open across an HTTP call.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from orchestrator_cli import db, store
from orchestrator_cli.errors import DatabaseError
from orchestrator_cli.request import Execution
from orchestrator_cli.schemas import OrderRequest, OutcomeKind, SubmitOutcome
from orchestrator_cli.services import RunServices

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingOrder:
    """An order of the recorded plan on its way to the gateway."""

    mapping_id: int
    reduces: bool  # sells of longs and covers of shorts go out first
    request: OrderRequest

    @classmethod
    def of(cls, row: store.OrderRow) -> PendingOrder:
        """The order a recorded plan row describes, with its own client_order_id."""
        request = OrderRequest(
            symbol=row.symbol, side=row.side, qty=row.qty, client_order_id=row.client_order_id
        )
        return cls(row.mapping_id, row.reduces, request)


class Submitter:
    """Sends orders of one run; the first halting answer stops every order not yet sent.

    The first order goes out alone and is answered before any other is sent: a gateway that
    is halted or failing closed from the start meets exactly one order, not a whole pool's.
    """

    def __init__(self, run_id: uuid.UUID, services: RunServices, execution: Execution) -> None:
        self.run_id = run_id
        self._services = services
        self._execution = execution
        self._halt = threading.Event()
        self._halt_reason = ""
        self._first_answered = False

    def submit(self, orders: Sequence[PendingOrder]) -> None:
        """Position-reducing orders first, all answered, then the ones that add exposure.

        Sells of longs and covers of shorts free buying power, so the buys that need it go
        out only after every reducing order has an answer.
        """
        if not orders:
            return
        reducing = [o for o in orders if o.reduces]
        adding = [o for o in orders if not o.reduces]
        total = len(orders)
        self._services.progress(
            f"submitting {total} orders: {len(reducing)} reducing first, then {len(adding)}"
        )
        done = self._send_wave(reducing, done=0, total=total)
        self._send_wave(adding, done=done, total=total)

    def _stop(self, reason: str) -> None:
        if not self._halt.is_set():
            self._halt_reason = reason
            self._halt.set()
            self._services.stop_waiting()

    def _blocked(self, order: OrderRequest) -> SubmitOutcome:
        return SubmitOutcome(
            client_order_id=order.client_order_id,
            kind=OutcomeKind.BLOCKED,
            order_status="blocked",
            message=f"not sent: {self._halt_reason or 'trading halted'}",
            sent=False,
        )

    def _send_one(self, order: OrderRequest) -> SubmitOutcome:
        if self._halt.is_set():
            return self._blocked(order)
        deadline = self._execution.deadline
        if deadline is not None and time.monotonic() >= deadline:
            return SubmitOutcome(
                client_order_id=order.client_order_id,
                kind=OutcomeKind.NOT_SENT,
                order_status="not_sent",
                message=f"not sent: {self._execution.deadline_cause} passed first",
                sent=False,
            )
        outcome = self._services.gateway.submit_order(order)
        if outcome.stops_run:
            self._stop(outcome.message or outcome.order_status)
        elif outcome.kind is OutcomeKind.NOT_SENT and self._halt.is_set():
            return self._blocked(order)  # it gave up waiting for its turn when the run halted
        return outcome

    def _send_wave(self, orders: list[PendingOrder], *, done: int, total: int) -> int:
        """Send concurrently (bounded pool), the run's first order alone before the rest."""
        if orders and not self._first_answered:
            done = self._send_batch(orders[:1], done=done, total=total)
            self._first_answered = True
            orders = orders[1:]
        return self._send_batch(orders, done=done, total=total)

    def _send_batch(self, orders: list[PendingOrder], *, done: int, total: int) -> int:
        """Send concurrently (bounded pool); record each outcome as it arrives.

        The first answer that halts trading (kill switch, circuit breaker, fail-closed state,
        authentication) stops every order not yet sent; those are recorded as blocked. A
        database failure stops sending too: what is already out is in the recorded plan.
        """
        if not orders:
            return done
        db_error: DatabaseError | None = None
        workers = min(self._execution.order_concurrency, len(orders))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="orch-order") as pool:
            futures: dict[Future[SubmitOutcome], int] = {
                pool.submit(self._send_one, o.request): o.mapping_id for o in orders
            }
            try:
                for future in as_completed(futures):
                    outcome = future.result()
                    done += 1
                    if db_error is None:
                        db_error = self._record(futures[future], outcome)
                    self._services.progress(
                        f"[{done}/{total}] {outcome.client_order_id}: {outcome.order_status}"
                    )
            except BaseException:
                # Interrupted (SIGINT/SIGTERM): send nothing more. Orders already out are in
                # the recorded plan; resume settles them by client_order_id.
                self._stop("orch was interrupted")
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
            with db.transaction(self._services.sessions, "recording an order outcome") as s:
                store.record_outcome(s, mapping_id, outcome, at=self._services.clock())
        except DatabaseError as exc:
            self._stop("the database failed")
            return exc
        return None
