"""The run lock: one run at a time per strategy and trading date, on any machine.

The lock is a row in `run_locks` keyed by (strategy, date), so the database enforces it for
every process that shares the database, SQLite or PostgreSQL. Its holder (`host:pid`) beats
a heartbeat while it runs. A holder is dead, and its lock is taken over, when its heartbeat is
older than LOCK_STALE_SECONDS or, on the same host, when its process no longer exists (so a
run killed a moment ago is taken over at once, not a minute later).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from types import TracebackType

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator_cli import db, store
from orchestrator_cli.errors import DatabaseError, RunInProgressError

logger = logging.getLogger(__name__)


def holder_id() -> str:
    """This process, as written in the lock: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, it is someone else's
        return True
    return True


def is_stale(lock: store.LockHolder, *, now: datetime, stale_after: timedelta) -> bool:
    """True when the holder is dead: heartbeat too old, or (same host) its process is gone."""
    if now - lock.heartbeat_at > stale_after:
        return True
    host, _, pid = lock.holder.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


class RunLock:
    """Holds the lock of one strategy and date for the duration of a `with` block."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        strategy_id: str,
        as_of_date: date,
        run_id: uuid.UUID,
        stale_after: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self.sessions = sessions
        self.strategy_id = strategy_id
        self.as_of_date = as_of_date
        self.run_id = run_id
        self.stale_after = stale_after
        self.clock = clock
        self.holder = holder_id()
        self.replaced: store.LockHolder | None = None  # the dead holder taken over, if any
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None

    def _describe(self, lock: store.LockHolder) -> str:
        age = (self.clock() - lock.heartbeat_at).total_seconds()
        return (
            f"run {lock.run_id} on {lock.holder}, started {lock.acquired_at:%Y-%m-%d %H:%M:%S} "
            f"UTC, last heartbeat {age:.0f}s ago"
        )

    def acquire(self) -> None:
        """Take the lock, or take it over from a dead holder; RunInProgressError if alive."""
        strategy_id, as_of_date = self.strategy_id, self.as_of_date
        for _ in range(3):
            try:
                with db.transaction(self.sessions, "taking the run lock") as session:
                    store.insert_lock(
                        session,
                        strategy_id=strategy_id,
                        as_of_date=as_of_date,
                        run_id=self.run_id,
                        holder=self.holder,
                        now=self.clock(),
                    )
                return
            except DatabaseError as exc:
                if not isinstance(exc.__cause__, IntegrityError):
                    raise
            with db.transaction(self.sessions, "reading the run lock") as session:
                current = store.lock_holder(session, strategy_id, as_of_date)
                if current is None:
                    continue  # released in between: try to insert again
                if current.holder == self.holder:
                    return
                if not is_stale(current, now=self.clock(), stale_after=self.stale_after):
                    raise RunInProgressError(
                        f"another run of {self.strategy_id} for {self.as_of_date} is in "
                        f"progress: {self._describe(current)}. Wait for it; a run whose process "
                        f"died is taken over after {self.stale_after.total_seconds():.0f}s "
                        "(LOCK_STALE_SECONDS), at once on the same host"
                    )
                if store.take_over_lock(
                    session,
                    strategy_id=strategy_id,
                    as_of_date=as_of_date,
                    stale=current,
                    run_id=self.run_id,
                    holder=self.holder,
                    now=self.clock(),
                ):
                    self.replaced = current
                    logger.warning(
                        "the previous holder of the %s %s run lock is gone (%s); taking over",
                        self.strategy_id,
                        self.as_of_date,
                        self._describe(current),
                    )
                    return
        raise RunInProgressError(
            f"the run lock of {self.strategy_id} for {self.as_of_date} keeps changing hands: "
            "another orch is starting at the same time; try again"
        )

    def point_to(self, run_id: uuid.UUID) -> None:
        """Name the run this lock now protects (when resuming an interrupted run)."""
        self.run_id = run_id
        self._beat()

    def _beat(self) -> bool:
        with db.transaction(self.sessions, "beating the run lock heartbeat") as session:
            return store.beat_lock(
                session,
                strategy_id=self.strategy_id,
                as_of_date=self.as_of_date,
                holder=self.holder,
                run_id=self.run_id,
                now=self.clock(),
            )

    def _beat_forever(self) -> None:
        interval = max(self.stale_after.total_seconds() / 4, 0.05)
        while not self._stop.wait(interval):
            try:
                if not self._beat():
                    logger.error("the run lock was taken by another process")
                    return
            except DatabaseError as exc:
                logger.warning("could not beat the run lock heartbeat: %s", exc)

    def release(self) -> None:
        self._stop.set()
        if self._beater is not None:
            self._beater.join()
        try:
            with db.transaction(self.sessions, "releasing the run lock") as session:
                store.release_lock(
                    session,
                    strategy_id=self.strategy_id,
                    as_of_date=self.as_of_date,
                    holder=self.holder,
                )
        except DatabaseError as exc:
            # The lock goes stale on its own: the next run on this host takes it over at once.
            logger.warning("could not release the run lock: %s", exc)

    def __enter__(self) -> RunLock:
        self.acquire()
        self._beater = threading.Thread(
            target=self._beat_forever, name="orch-lock-heartbeat", daemon=True
        )
        self._beater.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
