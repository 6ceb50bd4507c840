"""Where a run's time goes: seconds per named phase, as the run records them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class PhaseTimer:
    """Seconds spent in each phase, summed over every time the phase ran, in first-run order."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as `name` (it counts even if the block raises)."""
        started = self._clock()
        try:
            yield
        finally:
            self.add(name, self._clock() - started)

    def add(self, name: str, seconds: float) -> None:
        """Count `seconds` measured elsewhere (e.g. on another thread) as `name`."""
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    def record(self) -> dict[str, float]:
        """The phases as stored with the run: seconds to 3 decimals."""
        return {name: round(seconds, 3) for name, seconds in self._seconds.items()}
