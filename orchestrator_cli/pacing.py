"""One gate per service, shared by every thread that talks to it: rate-limit back-off and pacing.

A rate limit that counts every request in a sliding window, rejected ones included, punishes a
client whose workers retry each on its own clock: each early retry keeps the window full for
all of them. So a 429 holds the whole gate until its Retry-After instant (`hold_until`), and
every request to that service waits at the gate first (`admit`), whichever worker sends it.

With a pacing limit of N a minute, paced requests (order submissions, retries included) also
take evenly spaced slots a little more than 60/N seconds apart (`PACING_MARGIN`), so that N + 1
of them never fall into one 60 s window, even with network jitter, and a service whose own
window is shorter than a minute sees them spread out rather than in a burst.

Waiting is bounded: a request whose turn would come at or after the deadline is refused at
once (`NotAdmittedError`) instead of being sent uselessly late, and `stop()` wakes every waiter
and refuses whatever would still have to wait (the run stopped sending). Vendor-neutral: no
service's texts or status codes here.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Literal

PACING_WINDOW = 60.0
PACING_MARGIN = 0.02  # slots 2% wider than 60/N: 80 a minute are 0.765 s apart

Refusal = Literal["backoff", "pacing", "stopped"]


class NotAdmittedError(Exception):
    """The request was not sent: its turn at the gate comes too late, or waiting was stopped.

    `reason` is `backoff` (a rate limit's Retry-After reaches past the deadline), `pacing`
    (no pacing slot before the deadline) or `stopped`.
    """

    def __init__(self, reason: Refusal, wait: float = 0.0) -> None:
        texts = {
            "backoff": f"held back by the service's rate limit for {wait:.1f}s, past the deadline",
            "pacing": f"no pacing slot for {wait:.1f}s, past the deadline",
            "stopped": "sending was stopped while it waited",
        }
        super().__init__(texts[reason])
        self.reason: Refusal = reason
        self.wait = wait


class RequestGate:
    """The shared gate of one service; thread-safe. `clock` and `sleep` are injectable.

    The default sleep is an event wait that `stop()` cuts short; an injected `sleep` is trusted
    to have slept the time asked (tests pass one that advances a fake clock, or none at all).
    """

    def __init__(
        self,
        *,
        max_per_minute: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if max_per_minute is not None and max_per_minute < 1:
            raise ValueError(f"max_per_minute must be at least 1, not {max_per_minute}")
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._clock = clock
        self._sleep = sleep if sleep is not None else self._stopped.wait
        self.interval = (
            None if max_per_minute is None else PACING_WINDOW / max_per_minute * (1 + PACING_MARGIN)
        )
        self._open_at = -math.inf  # no request before this instant (a rate limit's back-off)
        self._next_slot = -math.inf  # no paced request before this instant
        self._version = 0  # changes whenever a waiter's turn may have moved

    def hold_until(self, instant: float) -> None:
        """Let no request through before `instant` (never brings an existing hold closer)."""
        with self._lock:
            if instant > self._open_at:
                self._open_at = instant
                self._version += 1

    def held_for(self) -> float:
        """Seconds until the gate opens for an unpaced request; 0 when it is open."""
        with self._lock:
            return max(0.0, self._open_at - self._clock())

    def stop(self) -> None:
        """Wake every waiter and refuse, from now on, any request that would have to wait."""
        with self._lock:
            self._stopped.set()
            self._version += 1

    def admit(self, *, deadline: float | None, paced: bool) -> None:
        """Wait for this request's turn; raise NotAdmittedError if it comes too late.

        A request that can go at once always goes, deadline or not: the caller decides whether
        to start; the gate only refuses to wait past the deadline.
        """
        pacing = paced and self.interval is not None
        while True:
            with self._lock:
                now = self._clock()
                start = max(now, self._open_at, self._next_slot if pacing else now)
                if start <= now:
                    self._take(pacing, now)
                    return
                self._refuse_if_late(start, now, deadline, pacing)
                version = self._version
            self._sleep(start - now)
            with self._lock:
                if self._stopped.is_set():
                    raise NotAdmittedError("stopped")
                if self._version == version:  # nobody took the turn or moved the gate
                    self._take(pacing, max(start, self._clock()))
                    return

    def _refuse_if_late(
        self, start: float, now: float, deadline: float | None, pacing: bool
    ) -> None:
        """Called under the lock for a request that would have to wait until `start`."""
        if self._stopped.is_set():
            raise NotAdmittedError("stopped")
        if deadline is not None and start >= deadline:
            by_pacing = pacing and self._next_slot > self._open_at
            raise NotAdmittedError("pacing" if by_pacing else "backoff", start - now)

    def _take(self, pacing: bool, at: float) -> None:
        if pacing:
            self._next_slot = at + (self.interval or 0.0)
            self._version += 1
