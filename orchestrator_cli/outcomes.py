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
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from orchestrator_cli import db, store
from orchestrator_cli.schemas import SubmitOutcome

logger = logging.getLogger(__name__)

LINGER_SECONDS = 0.005
MAX_GROUP = 500


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
        self._queue: deque[store.Answered] = deque()
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
            self._queue.append(store.Answered(mapping_id, outcome, at))
            self._put += 1
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

    def _next_group(self) -> list[store.Answered] | None:
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

    def _write(self, group: list[store.Answered]) -> None:
        if self.failure is None:
            started = time.perf_counter()
            try:
                with db.transaction(self._sessions, "recording order outcomes") as session:
                    db.relax_durability(session)
                    store.record_outcomes(session, group)
            except Exception as exc:  # a DatabaseError, or a bug: either way, stop writing
                logger.debug("recording %d outcomes failed: %s", len(group), exc)
                self.failure = exc
                self._on_failure()
            finally:
                self.commit_seconds += time.perf_counter() - started
        with self._changed:
            self._settled += len(group)
            self._changed.notify_all()
