"""Recording order outcomes off the sending path: one writer thread, grouped commits.

Sending never waits for a commit. Workers hand each answer to an `OutcomeWriter`, whose own
thread commits what has arrived as one transaction: a group closes after `linger` seconds or
at `max_group` outcomes, whichever comes first (and at once when someone waits in `flush`).
Those commits are relaxed (`db.relax_durability`: not synced to disk before they return).

Why that is safe: the write-ahead guarantee rests on the plan, not on the outcomes. Every order
and its `client_order_id` is committed, durably, before the first is sent, and the gateway
answers a re-sent id with the order it already has. An outcome lost between the gateway's
answer and its group's commit (a crash, a SIGKILL, a power loss) leaves its row `planned`, and
a resume or the day's next run settles every `planned` and `unknown` row by GET
client_order_id: found, its state is recorded and it is never sent again; not found (404), it
never arrived and is sent again with the same id. Either way the order exists once.

The group's SQL is here, next to its only user (as the run lock's is in `locking`): one
statement per group, an executemany on SQLite (in-process, each row costs microseconds) and a
single UPDATE joined to the group's rows on PostgreSQL (one round trip and one plan per group
instead of one per order).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from types import TracebackType
from typing import Any

from sqlalchemy import Integer, String, TextClause, bindparam, func, text, update
from sqlalchemy.orm import Session, sessionmaker

from orchestrator_cli import db
from orchestrator_cli.dbtypes import FreeText, UTCDateTime
from orchestrator_cli.models import SignalOrderMapping
from orchestrator_cli.schemas import SubmitOutcome

logger = logging.getLogger(__name__)

LINGER_SECONDS = 0.005
MAX_GROUP = 500


@dataclass(frozen=True)
class Answered:
    """An order's outcome and when it came, on its way to the audit trail."""

    mapping_id: int
    outcome: SubmitOutcome
    at: datetime


_MAPPINGS = SignalOrderMapping.metadata.tables[SignalOrderMapping.__tablename__]
# Each outcome's values, by the names both statements below use (not column names: an
# UPDATE reserves those).
_FIELDS: dict[str, Any] = {
    "b_id": Integer(),
    "b_coid": String(),
    "b_outcome": String(),
    "b_status": String(),
    "b_broker": String(),
    "b_detail": FreeText(),
    "b_sent": UTCDateTime(),
    "b_at": UTCDateTime(),
}
# A new broker id replaces the old one, none keeps it; submitted_at keeps the first send.
_UPDATE_ONE = (
    update(_MAPPINGS)
    .where(_MAPPINGS.c.id == bindparam("b_id"), _MAPPINGS.c.client_order_id == bindparam("b_coid"))
    .values(
        outcome=bindparam("b_outcome"),
        order_status=bindparam("b_status"),
        broker_order_id=func.coalesce(
            bindparam("b_broker", type_=String()), _MAPPINGS.c.broker_order_id
        ),
        detail=bindparam("b_detail"),
        submitted_at=func.coalesce(
            _MAPPINGS.c.submitted_at, bindparam("b_sent", type_=UTCDateTime())
        ),
        updated_at=bindparam("b_at"),
    )
)
_UPDATE_GROUP_SQL = """
    UPDATE signal_order_mappings AS m SET
        outcome = a.outcome, order_status = a.status,
        broker_order_id = COALESCE(a.broker, m.broker_order_id), detail = a.detail,
        submitted_at = COALESCE(m.submitted_at, a.sent), updated_at = a.at
    FROM unnest(
        CAST(:b_id AS INTEGER[]), CAST(:b_coid AS VARCHAR[]), CAST(:b_outcome AS VARCHAR[]),
        CAST(:b_status AS VARCHAR[]), CAST(:b_broker AS VARCHAR[]), CAST(:b_detail AS TEXT[]),
        CAST(:b_sent AS TIMESTAMPTZ[]), CAST(:b_at AS TIMESTAMPTZ[])
    ) AS a(id, coid, outcome, status, broker, detail, sent, at)
    WHERE m.id = a.id AND m.client_order_id = a.coid
"""


@cache
def _update_group() -> TextClause:
    """PostgreSQL's statement, made on first use (SQLite never loads the PostgreSQL dialect)."""
    from sqlalchemy.dialects.postgresql import ARRAY

    arrays = (bindparam(name, type_=ARRAY(kind)) for name, kind in _FIELDS.items())
    return text(_UPDATE_GROUP_SQL).bindparams(*arrays)


def record_outcomes(session: Session, answered: Sequence[Answered]) -> None:
    """Record what became of these orders in one statement; `submitted_at` keeps the first
    time an order was actually sent.

    Raises ValueError if an outcome names another order than its mapping (the caller's
    transaction, rolled back, then records none of them).
    """
    if not answered:
        return
    params = [
        {
            "b_id": a.mapping_id,
            "b_coid": a.outcome.client_order_id,
            "b_outcome": a.outcome.kind.value,
            "b_status": a.outcome.order_status,
            "b_broker": a.outcome.broker_order_id,
            "b_detail": a.outcome.message,
            "b_sent": a.at if a.outcome.sent else None,
            "b_at": a.at,
        }
        for a in answered
    ]
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        columns = {name: [row[name] for row in params] for name in _FIELDS}
        updated = connection.execute(_update_group(), columns)
    else:
        updated = connection.execute(_UPDATE_ONE, params)
    if updated.rowcount != len(params):
        orders = ", ".join(f"{a.outcome.client_order_id} -> {a.mapping_id}" for a in answered[:5])
        raise ValueError(f"an outcome was given for another order's mapping among: {orders}")


class OutcomeWriter:
    """Commits outcomes put from any thread, in groups, on a thread of its own.

    After a failed commit nothing more is written (those rows stay `planned`, settled by id
    later): `failure` holds the error and `on_failure` is called once, on the writer's thread.
    Use it as a context manager: leaving the block (an interrupt included) commits everything
    put so far before the thread ends.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        on_failure: Callable[[], None],
        linger: float = LINGER_SECONDS,
        max_group: int = MAX_GROUP,
    ) -> None:
        self._sessions = sessions
        self._on_failure = on_failure
        self._linger = linger
        self._max_group = max_group
        self._changed = threading.Condition()
        self._queue: deque[Answered] = deque()
        self._put = 0  # outcomes handed over so far
        self._settled = 0  # of those, committed or given up on after a failure
        self._waiting = 0  # callers in flush(): close the current group at once
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="orch-outcomes", daemon=True)
        self.failure: Exception | None = None
        self.commit_seconds = 0.0  # time spent committing groups

    def __enter__(self) -> OutcomeWriter:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def put(self, mapping_id: int, outcome: SubmitOutcome, *, at: datetime) -> None:
        """Queue one outcome for the next group; never blocks on the database."""
        with self._changed:
            self._queue.append(Answered(mapping_id, outcome, at))
            self._put += 1
            # The writer waits for a first outcome, then lingers for more until its deadline:
            # it needs waking only for the first of a group or a full one, not for every put.
            if len(self._queue) == 1 or len(self._queue) >= self._max_group:
                self._changed.notify_all()

    def flush(self) -> Exception | None:
        """Wait until every outcome put so far is committed; the failure, if a commit failed."""
        with self._changed:
            target = self._put
            self._waiting += 1
            self._changed.notify_all()
            try:
                while self._settled < target and self._thread.is_alive():
                    self._changed.wait()
            finally:
                self._waiting -= 1
        return self.failure

    def close(self) -> None:
        """Commit what is queued and end the thread (idempotent)."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while (group := self._next_group()) is not None:
            self._write(group)

    def _next_group(self) -> list[Answered] | None:
        """The next group: what is queued, topped up until the linger ends or it is full."""
        with self._changed:
            while not self._queue and not self._closing:
                self._changed.wait()
            if not self._queue:
                return None  # closing, and everything is written
            deadline = time.monotonic() + self._linger
            while len(self._queue) < self._max_group and not (self._closing or self._waiting):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            count = min(len(self._queue), self._max_group)
            return [self._queue.popleft() for _ in range(count)]

    def _write(self, group: list[Answered]) -> None:
        if self.failure is None:
            started = time.perf_counter()
            try:
                with db.transaction(self._sessions, "recording order outcomes") as session:
                    db.relax_durability(session)
                    record_outcomes(session, group)
            except Exception as exc:  # a DatabaseError, or a bug: either way, stop writing
                logger.debug("recording %d outcomes failed: %s", len(group), exc)
                self.failure = exc
                self._on_failure()
            finally:
                self.commit_seconds += time.perf_counter() - started
        with self._changed:
            self._settled += len(group)
            self._changed.notify_all()
