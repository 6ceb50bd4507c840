"""Sending a run's orders: a bounded pool, reduce-first waves, halts, recording outcomes.

Every order sent here is already in the recorded plan with its `client_order_id`, so an order
that went out before a crash is found again by that id (and the gateway de-duplicates a re-send
of it). Outcomes are recorded off the sending path: each worker hands its answer to one
`outcomes.OutcomeWriter`, whose thread commits what has arrived in groups, so sending never
waits for a commit and no transaction is open across an HTTP call.

Why a crash between an accepted order and its group's commit is still settled exactly once:
the row stays `planned`, with its `client_order_id`. A resume, or the day's next run, settles
every `planned` and `unknown` row by GET client_order_id: found, the gateway's state is
recorded and the order is never sent again; not found (404), it never arrived and is sent again
with the same id, which the gateway would de-duplicate anyway. At the end of each wave the
writer is flushed, so everything answered is committed before anything reads outcomes back
(settling, finishing the run); an interrupt commits what has arrived before it propagates.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from orchestrator_cli import store
from orchestrator_cli.errors import DatabaseError
from orchestrator_cli.outcomes import OutcomeWriter
from orchestrator_cli.phases import PhaseTimer
from orchestrator_cli.request import Execution
from orchestrator_cli.schemas import OrderRequest, OutcomeKind, SubmitOutcome, plural
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

    def __init__(
        self,
        run_id: uuid.UUID,
        services: RunServices,
        execution: Execution,
        phases: PhaseTimer | None = None,
    ) -> None:
        self.run_id = run_id
        self._services = services
        self._execution = execution
        self._halt = threading.Event()
        self._halt_reason = ""
        self._first_answered = False
        # `submit`: the wall time of sending; `record_outcomes`: the writer's commits within it.
        self._phases = phases or PhaseTimer()

    def submit(self, orders: Sequence[PendingOrder]) -> None:
        """Position-reducing orders first, all answered, then the ones that add exposure.

        Sells of longs and covers of shorts free buying power, so the buys that need it go
        out only after every reducing order has an answer. Every outcome is committed when
        this returns (or raises).
        """
        if not orders:
            return
        reducing = [o for o in orders if o.reduces]
        adding = [o for o in orders if not o.reduces]
        total = len(orders)
        self._services.progress(
            f"submitting {plural(total, 'order')}: {len(reducing)} reducing first, then "
            f"{len(adding)}"
        )
        writer = OutcomeWriter(
            self._services.sessions, on_failure=lambda: self._stop("the database failed")
        )
        try:
            with self._phases.phase("submit"), writer:
                done = self._send_wave(writer, reducing, done=0, total=total)
                self._send_wave(writer, adding, done=done, total=total)
        finally:
            self._phases.add("record_outcomes", writer.commit_seconds)

    def _stop(self, reason: str) -> None:
        if not self._halt.is_set():
            self._halt_reason = reason
            self._halt.set()
            self._services.stop_waiting()
            logger.warning("run %s: no further order is sent: %s", self.run_id, reason)

    def _blocked(self, order: OrderRequest) -> SubmitOutcome:
        return SubmitOutcome(
            client_order_id=order.client_order_id,
            kind=OutcomeKind.BLOCKED,
            order_status="blocked",
            message=f"not sent: {self._halt_reason or 'trading halted'}",
            sent=False,
        )

    def _send_one(self, order: OrderRequest) -> SubmitOutcome:
        refusal = self._services.send_permit()
        if refusal is not None:
            self._stop(refusal)
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
        # Asked again once its turn at the gateway has come (a pacing wait can be long).
        outcome = self._services.gateway.submit_order(order, permit=self._services.send_permit)
        if outcome.stops_run:
            self._stop(outcome.message or outcome.order_status)
        elif outcome.kind is OutcomeKind.NOT_SENT:
            refusal = self._services.send_permit()
            if refusal is not None:
                self._stop(refusal)
            if self._halt.is_set():
                return self._blocked(order)  # it gave up waiting for its turn: the run halted
        return outcome

    def _send_and_record(self, order: PendingOrder, writer: OutcomeWriter) -> SubmitOutcome:
        # Handed to the writer on the worker's thread: an order still in flight when the run is
        # interrupted has its outcome committed too.
        outcome = self._send_one(order.request)
        writer.put(order.mapping_id, outcome, at=self._services.clock())
        return outcome

    def _send_wave(
        self, writer: OutcomeWriter, orders: list[PendingOrder], *, done: int, total: int
    ) -> int:
        """Send concurrently (bounded pool), the run's first order alone before the rest."""
        if orders and not self._first_answered:
            done = self._send_batch(writer, orders[:1], done=done, total=total)
            self._first_answered = True
            orders = orders[1:]
        return self._send_batch(writer, orders, done=done, total=total)

    def _send_batch(
        self, writer: OutcomeWriter, orders: list[PendingOrder], *, done: int, total: int
    ) -> int:
        """Send concurrently (bounded pool); every outcome is committed when this returns.

        The first answer that halts trading (kill switch, circuit breaker, fail-closed state,
        authentication) stops every order not yet sent; those are recorded as blocked. A
        database failure stops sending too (what is already out is in the recorded plan) and
        is raised here, once the batch is over.
        """
        if not orders:
            return done
        workers = min(self._execution.order_concurrency, len(orders))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="orch-order") as pool:
            futures = [pool.submit(self._send_and_record, o, writer) for o in orders]
            try:
                for future in as_completed(futures):
                    outcome = future.result()
                    done += 1
                    logger.debug(
                        "[%d/%d] %s: %s",
                        done,
                        total,
                        outcome.client_order_id,
                        outcome.order_status,
                    )
                    self._services.order_progress(done, total)
            except BaseException:
                # Interrupted (SIGINT/SIGTERM): send nothing more. Orders not yet started stay
                # `planned`; those in flight finish and their outcomes are committed as the
                # writer closes. Resume settles them all by client_order_id.
                self._stop("orch was interrupted")
                for future in futures:
                    future.cancel()
                raise
        failure = writer.flush()
        if isinstance(failure, DatabaseError):
            raise DatabaseError(
                f"{failure}; run {self.run_id} stopped sending orders. Every sent order is in "
                "its recorded plan with its client_order_id; check them at the gateway"
            ) from failure
        if failure is not None:
            raise failure
        return done
