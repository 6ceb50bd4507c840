"""The run lock: one run at a time per strategy and trading date, on any machine.

The lock is a row in `run_locks` keyed by (strategy, date), so the database enforces it for
every process that shares the database, SQLite or PostgreSQL. A run for an earlier date
(`--as-of`, which the CLI refuses to a run that sends, but a Python caller may make) holds
today's lock too (`holding`): its orders go out today, into the account today's run trades.
Its holder (`host:pid`) beats a heartbeat while it runs. Heartbeats are written and judged by
the database's clock, never a machine's own, so a host whose clock is ahead cannot think a
live holder's heartbeat old.

A holder on this host is dead exactly when its process is gone (or a zombie awaiting its
parent): a run killed a moment ago is taken over at once, and a live one is never taken over,
however old its heartbeat looks. A holder on another host is dead when its heartbeat is older
than LOCK_STALE_SECONDS (at least MIN_STALE_SECONDS).

A holder sends orders only while its hold is confirmed (`RunLock.permit`): the heartbeat
confirms it every HEARTBEAT_SECONDS at most, and an order due when the last confirmation is
older than LEASE_SECONDS (a process paused, a starved thread) waits for a fresh one. Both are
under half of the shortest LOCK_STALE_SECONDS any host may use, so no other host can have
judged the holder dead while it still sends; a holder that finds the lock taken, or cannot
confirm it, sends nothing more. Without this, a run paused past LOCK_STALE_SECONDS and taken
over by another host went on to send the rest of its plan beside the new run's.

The row's SQL is here too, next to the policy that is its only user: `RunLock` opens a short
transaction of its own for each step (take, read, take over, beat, release).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from sqlalchemy import delete, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator_cli import db
from orchestrator_cli.errors import DatabaseError, RunInProgressError
from orchestrator_cli.models import RunLockRow

if TYPE_CHECKING:
    from orchestrator_cli.services import RunServices

logger = logging.getLogger(__name__)

# The shortest LOCK_STALE_SECONDS (config's bound), and how often and how recently a holder
# confirms its hold: both under half of it, whatever LOCK_STALE_SECONDS each host uses.
MIN_STALE_SECONDS = 10.0
HEARTBEAT_SECONDS = 2.5
LEASE_SECONDS = 4.0


# --- The lock's row -----------------------------------------------------------------------------


def database_now(session: Session) -> datetime:
    """The database server's clock, in UTC: one clock for every holder's heartbeat."""
    if session.get_bind().dialect.name == "sqlite":
        stamp = session.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
        return datetime.fromisoformat(str(stamp)).replace(tzinfo=UTC)
    value = session.execute(text("SELECT clock_timestamp()")).scalar_one()
    if not isinstance(value, datetime):
        raise TypeError(f"clock_timestamp() gave {value!r}")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class LockHolder:
    """Who holds the run lock of a strategy and date, and since when."""

    run_id: uuid.UUID
    holder: str
    acquired_at: datetime
    heartbeat_at: datetime


def _insert_lock(
    session: Session,
    *,
    strategy_id: str,
    as_of_date: date,
    run_id: uuid.UUID,
    holder: str,
    now: datetime,
) -> None:
    """Claim a free lock; raises IntegrityError (at flush) when it is already held."""
    session.add(
        RunLockRow(
            strategy_id=strategy_id,
            as_of_date=as_of_date,
            run_id=run_id,
            holder=holder,
            acquired_at=now,
            heartbeat_at=now,
        )
    )
    session.flush()


def _lock_holder(session: Session, strategy_id: str, as_of_date: date) -> LockHolder | None:
    row = session.get(RunLockRow, (strategy_id, as_of_date))
    if row is None:
        return None
    return LockHolder(row.run_id, row.holder, row.acquired_at, row.heartbeat_at)


def _take_over_lock(
    session: Session,
    *,
    strategy_id: str,
    as_of_date: date,
    stale: LockHolder,
    run_id: uuid.UUID,
    holder: str,
    now: datetime,
) -> bool:
    """Replace a dead holder; False when someone else changed the lock first."""
    result = session.execute(
        update(RunLockRow)
        .where(
            RunLockRow.strategy_id == strategy_id,
            RunLockRow.as_of_date == as_of_date,
            RunLockRow.run_id == stale.run_id,
            RunLockRow.holder == stale.holder,
            RunLockRow.heartbeat_at == stale.heartbeat_at,
        )
        .values(run_id=run_id, holder=holder, acquired_at=now, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def _beat_lock(
    session: Session,
    *,
    strategy_id: str,
    as_of_date: date,
    holder: str,
    run_id: uuid.UUID,
    now: datetime,
) -> bool:
    """Refresh the holder's heartbeat (and the run it protects); False if no longer held."""
    result = session.execute(
        update(RunLockRow)
        .where(
            RunLockRow.strategy_id == strategy_id,
            RunLockRow.as_of_date == as_of_date,
            RunLockRow.holder == holder,
        )
        .values(heartbeat_at=now, run_id=run_id)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def _release_lock(session: Session, *, strategy_id: str, as_of_date: date, holder: str) -> None:
    session.execute(
        delete(RunLockRow).where(
            RunLockRow.strategy_id == strategy_id,
            RunLockRow.as_of_date == as_of_date,
            RunLockRow.holder == holder,
        )
    )


# --- The lock's policy --------------------------------------------------------------------------


def holder_id() -> str:
    """This process, as written in the lock: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """True while the process runs; a zombie (killed, not yet reaped) is not alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, it is someone else's
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (or it just exited): os.kill said it existed
    state = stat.rpartition(")")[2].split()[:1]  # the field after "(command name)"
    return state not in (["Z"], ["X"])


def is_stale(lock: LockHolder, *, now: datetime, stale_after: timedelta) -> bool:
    """True when the holder is dead: on this host its process is gone; elsewhere its
    heartbeat (by the database's clock, `now`) is older than `stale_after`."""
    host, _, pid = lock.holder.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return not pid_alive(int(pid))
    return now - lock.heartbeat_at > stale_after


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
    ) -> None:
        self.sessions = sessions
        self.strategy_id = strategy_id
        self.as_of_date = as_of_date
        self.run_id = run_id
        self.stale_after = stale_after
        self.holder = holder_id()
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None
        self._confirmed = time.monotonic()  # when the hold was last confirmed
        self._confirming = threading.Lock()  # one confirmation at a time; the others wait
        self._lost = ""  # why orders may no longer go out, once they may not
        self._on_lost: Callable[[], None] = lambda: None

    def _describe(self, lock: LockHolder, now: datetime) -> str:
        age = (now - lock.heartbeat_at).total_seconds()
        return (
            f"run {lock.run_id} on {lock.holder}, started {lock.acquired_at:%Y-%m-%d %H:%M:%S} "
            f"UTC, last heartbeat {age:.0f}s ago"
        )

    def acquire(self) -> None:
        """Take the lock, or take it over from a dead holder; RunInProgressError if alive."""
        self._confirmed = time.monotonic()
        strategy_id, as_of_date = self.strategy_id, self.as_of_date
        for _ in range(3):
            try:
                with db.transaction(self.sessions, "taking the run lock") as session:
                    _insert_lock(
                        session,
                        strategy_id=strategy_id,
                        as_of_date=as_of_date,
                        run_id=self.run_id,
                        holder=self.holder,
                        now=database_now(session),
                    )
                return
            except DatabaseError as exc:
                if not isinstance(exc.__cause__, IntegrityError):
                    raise
            with db.transaction(self.sessions, "reading the run lock") as session:
                current = _lock_holder(session, strategy_id, as_of_date)
                if current is None:
                    continue  # released in between: try to insert again
                if current.holder == self.holder:
                    return
                now = database_now(session)
                if not is_stale(current, now=now, stale_after=self.stale_after):
                    raise RunInProgressError(
                        f"another run of {self.strategy_id} for {self.as_of_date} is in "
                        f"progress: {self._describe(current, now)}. Wait for it; a run whose "
                        "process died is taken over at once on the same host, after "
                        f"{self.stale_after.total_seconds():.0f}s (LOCK_STALE_SECONDS) "
                        "from another host"
                    )
                if _take_over_lock(
                    session,
                    strategy_id=strategy_id,
                    as_of_date=as_of_date,
                    stale=current,
                    run_id=self.run_id,
                    holder=self.holder,
                    now=now,
                ):
                    logger.warning(
                        "the previous holder of the %s %s run lock is gone (%s); taking over",
                        self.strategy_id,
                        self.as_of_date,
                        self._describe(current, now),
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

    def guard(self, services: RunServices) -> RunServices:
        """`services` whose orders go out only while this lock is held (`permit`), as well as
        what they already asked; orders waiting for their turn at the gateway give up as soon
        as it is found lost."""
        self._on_lost = services.stop_waiting
        asked = services.send_permit
        return replace(services, send_permit=lambda: asked() or self.permit())

    def permit(self) -> str | None:
        """None while an order may go out under this lock, else why not: the hold is confirmed
        within LEASE_SECONDS (confirmed here first when it is not), and not found lost."""
        if not self._lost and time.monotonic() - self._confirmed >= self._lease():
            with self._confirming:
                if not self._lost and time.monotonic() - self._confirmed >= self._lease():
                    self._confirm(before_sending=True)
        return self._lost or None

    def _lease(self) -> float:
        return min(LEASE_SECONDS, self.stale_after.total_seconds() / 2)

    def _confirm(self, *, before_sending: bool = False) -> None:
        """Beat the heartbeat; a lock found taken is lost. A heartbeat the database fails is
        tried again at the next beat, unless an order is waiting for it: then it is lost too."""
        started = time.monotonic()
        try:
            held = self._beat()
        except DatabaseError as exc:
            if not before_sending:
                logger.warning("could not beat the run lock heartbeat: %s", exc)
                return
            self._lose(f"the run lock could not be confirmed ({exc})")
            return
        if held:
            self._confirmed = started
            return
        self._lose(
            f"the run lock of {self.strategy_id} for {self.as_of_date} was taken by another "
            "process (this one was judged dead)"
        )

    def _lose(self, why: str) -> None:
        self._lost = f"{why}; no further order is sent"
        logger.error("%s", self._lost)
        self._on_lost()

    def _beat(self) -> bool:
        with db.transaction(self.sessions, "beating the run lock heartbeat") as session:
            return _beat_lock(
                session,
                strategy_id=self.strategy_id,
                as_of_date=self.as_of_date,
                holder=self.holder,
                run_id=self.run_id,
                now=database_now(session),
            )

    def _beat_forever(self) -> None:
        interval = max(min(HEARTBEAT_SECONDS, self.stale_after.total_seconds() / 4), 0.05)
        while not self._stop.wait(interval) and not self._lost:
            with self._confirming:
                self._confirm()

    def release(self) -> None:
        self._stop.set()
        if self._beater is not None:
            self._beater.join()
        try:
            with db.transaction(self.sessions, "releasing the run lock") as session:
                _release_lock(
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


@contextmanager
def holding(
    services: RunServices,
    *,
    strategy_id: str,
    days: Sequence[date],
    run_id: uuid.UUID,
    stale_after: timedelta,
) -> Iterator[tuple[RunServices, list[RunLock]]]:
    """Hold the run lock of `strategy_id` for each of `days` (oldest first) for the block;
    yield `services` whose orders go out only while every one of them is held."""
    with ExitStack() as stack:
        locks = []
        for day in sorted(set(days)):
            lock = RunLock(
                services.sessions,
                strategy_id=strategy_id,
                as_of_date=day,
                run_id=run_id,
                stale_after=stale_after,
            )
            services = stack.enter_context(lock).guard(services)
            locks.append(lock)
        yield services, locks
