"""The shared gate: rate-limit back-off for every worker at once, and evenly spaced pacing."""

import itertools
import threading
import time

import pytest
from fakes import FakeClock

from orchestrator_cli.pacing import PACING_MARGIN, NotAdmittedError, RequestGate


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def gate_on(clock: FakeClock, max_per_minute: int | None = None) -> RequestGate:
    return RequestGate(max_per_minute=max_per_minute, clock=clock, sleep=clock.sleep)


def test_an_open_gate_admits_at_once(clock):
    gate = gate_on(clock)
    for _ in range(5):
        gate.admit(deadline=None, paced=True)
    assert clock.sleeps == []


def test_a_hold_makes_every_request_wait_until_its_instant(clock):
    gate = gate_on(clock)
    gate.hold_until(clock() + 60)
    assert gate.held_for() == 60
    gate.admit(deadline=None, paced=False)
    assert clock.sleeps == [60]
    assert gate.held_for() == 0
    gate.admit(deadline=None, paced=False)
    assert clock.sleeps == [60]


def test_a_hold_is_never_brought_closer(clock):
    gate = gate_on(clock)
    gate.hold_until(clock() + 60)
    gate.hold_until(clock() + 5)  # a later 429 with a shorter Retry-After
    assert gate.held_for() == 60


@pytest.mark.parametrize("paced", [False, True])
def test_a_wait_reaching_the_deadline_is_refused_without_sleeping(clock, paced):
    gate = gate_on(clock, 80)
    gate.hold_until(clock() + 60)
    with pytest.raises(NotAdmittedError) as caught:
        gate.admit(deadline=clock() + 60, paced=paced)
    assert (caught.value.reason, caught.value.wait) == ("backoff", 60)
    assert clock.sleeps == []
    gate.admit(deadline=clock() + 60.5, paced=paced)
    assert clock.sleeps == [60]


def test_a_request_that_can_go_now_goes_even_at_the_deadline(clock):
    gate_on(clock).admit(deadline=clock() - 1, paced=True)
    assert clock.sleeps == []


@pytest.mark.parametrize("per_minute", [1, 7, 80, 600])
def test_paced_requests_never_put_more_than_n_into_any_minute(clock, per_minute):
    gate = gate_on(clock, per_minute)
    times = []
    for _ in range(3 * per_minute + 1):
        gate.admit(deadline=None, paced=True)
        times.append(clock())
    interval = 60 / per_minute * (1 + PACING_MARGIN)
    assert all(b - a == pytest.approx(interval) for a, b in itertools.pairwise(times))
    # Any N + 1 consecutive requests span more than a minute, with room for jitter.
    assert min(b - a for a, b in zip(times, times[per_minute:], strict=False)) > 60 * 1.01


def test_unpaced_requests_neither_wait_for_nor_take_a_slot(clock):
    gate = gate_on(clock, 2)
    gate.admit(deadline=None, paced=True)
    gate.admit(deadline=None, paced=False)
    assert clock.sleeps == []
    gate.admit(deadline=None, paced=True)
    assert clock.sleeps == [pytest.approx(30.6)]


def test_no_slot_before_the_deadline_is_refused_as_pacing(clock):
    gate = gate_on(clock, 2)
    gate.admit(deadline=None, paced=True)
    with pytest.raises(NotAdmittedError) as caught:
        gate.admit(deadline=clock() + 30, paced=True)
    assert caught.value.reason == "pacing"
    assert caught.value.wait == pytest.approx(30.6)


def test_pacing_resumes_after_a_hold_from_the_hold(clock):
    gate = gate_on(clock, 60)  # slots 1.02 s apart
    gate.admit(deadline=None, paced=True)
    gate.hold_until(clock() + 10)
    gate.admit(deadline=None, paced=True)
    assert clock.sleeps == [10]
    gate.admit(deadline=None, paced=True)
    assert clock.sleeps == [10, pytest.approx(1.02)]


def test_after_stop_a_request_that_must_wait_is_refused(clock):
    gate = gate_on(clock)
    gate.admit(deadline=None, paced=False)  # an open gate still admits
    gate.stop()
    gate.admit(deadline=None, paced=False)
    gate.hold_until(clock() + 5)
    with pytest.raises(NotAdmittedError) as caught:
        gate.admit(deadline=None, paced=False)
    assert caught.value.reason == "stopped"
    assert clock.sleeps == []


@pytest.mark.parametrize("max_per_minute", [0, -3])
def test_a_pacing_limit_below_one_is_refused(max_per_minute):
    with pytest.raises(ValueError, match="at least 1"):
        RequestGate(max_per_minute=max_per_minute)


class ThreadClock:
    """A clock shared by threads that only sleeps move (each by what it was asked)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds
        time.sleep(0)  # let the other workers run in between


class RecordingGate(RequestGate):
    """Records the instant each paced request was let through (under the gate's lock)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.taken: list[float] = []

    def _take(self, pacing: bool, at: float) -> None:
        super()._take(pacing, at)
        if pacing:
            self.taken.append(at)


def test_workers_on_threads_share_the_slots():
    clock = ThreadClock()
    gate = RecordingGate(max_per_minute=120, clock=clock, sleep=clock.sleep)

    def worker() -> None:
        for _ in range(10):
            gate.admit(deadline=None, paced=True)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(gate.taken) == 80
    gaps = [b - a for a, b in itertools.pairwise(gate.taken)]
    assert min(gaps) >= 0.5 * (1 + PACING_MARGIN) - 1e-9


def test_stop_wakes_every_waiter_at_once():
    """The default wait is cut short by stop(): a halted run does not sit out a Retry-After."""
    gate = RequestGate()
    gate.hold_until(time.monotonic() + 600)
    refused: list[str] = []

    def waiter() -> None:
        try:
            gate.admit(deadline=None, paced=True)
        except NotAdmittedError as exc:
            refused.append(exc.reason)

    threads = [threading.Thread(target=waiter) for _ in range(4)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    gate.stop()
    for thread in threads:
        thread.join(timeout=10)
    assert refused == ["stopped"] * 4
    assert time.monotonic() - started < 5
