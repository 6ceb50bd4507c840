"""Run lock, interrupted runs, resume and sync (fake services, real databases)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from fakes import (
    AS_OF,
    NOW,
    FakeGateway,
    FakePrices,
    FakeSignals,
    make_request,
    services_for,
    signals_of,
)
from sqlalchemy import select, update

from orchestrator_cli import locking, store
from orchestrator_cli.errors import ConfigError, RunInProgressError
from orchestrator_cli.locking import (
    LockHolder,
    RunLock,
    database_now,
    holder_id,
    is_stale,
    pid_alive,
)
from orchestrator_cli.models import OrchestrationRun, RunLockRow, SignalOrderMapping
from orchestrator_cli.runner import execute_run, resume_run, sync_run
from orchestrator_cli.schemas import OrderDetail

EXECUTION = make_request([]).execution
SIGNALS = (("AAPL", "0.3"), ("MSFT", "0.3"), ("GOOGL", "0.3"))
PRICES = {"AAPL": "150", "MSFT": "400", "GOOGL": "170"}


class Crash(BaseException):
    """Stands for the process dying mid-run (not an Exception: nothing handles it)."""


def services(session_factory, gateway):
    return services_for(
        session_factory, FakeSignals(signals_of(*SIGNALS)), gateway, FakePrices(PRICES)
    )


def put_lock(session_factory, holder: str, heartbeat_age: timedelta, run_id=None) -> uuid.UUID:
    """A lock row whose heartbeat is `heartbeat_age` old by the database's clock."""
    run_id = run_id or uuid.uuid4()
    with session_factory.begin() as session:
        beat = database_now(session) - heartbeat_age
        session.add(
            RunLockRow(
                strategy_id="alpha_baseline",
                as_of_date=AS_OF,
                run_id=run_id,
                holder=holder,
                acquired_at=beat,
                heartbeat_at=beat,
            )
        )
    return run_id


def crash_after(gateway: FakeGateway, n: int) -> None:
    def maybe_crash(order):
        if len(gateway.sent) >= n:
            raise Crash

    gateway.on_submit = maybe_crash


class DyingSignals(FakeSignals):
    def fetch_signals(self, symbols, **kwargs):
        raise Crash


def kill_before_the_plan(session_factory, gateway: FakeGateway) -> None:
    """A run dies after its run row, before its plan is recorded."""
    dying = services_for(
        session_factory, DyingSignals(signals_of(*SIGNALS)), gateway, FakePrices(PRICES)
    )
    with pytest.raises(Crash):
        execute_run(make_request(["AAPL", "MSFT", "GOOGL"]), dying)


def crash_yesterday(session_factory, gateway: FakeGateway) -> uuid.UUID:
    """Yesterday's run dies after its first order; returns its id."""
    crash_after(gateway, 1)
    yesterday = services(session_factory, gateway)
    yesterday.clock = lambda: NOW - timedelta(days=1)
    with pytest.raises(Crash):
        execute_run(make_request(["AAPL", "MSFT", "GOOGL"], as_of_date=None), yesterday)
    gateway.on_submit = None
    with session_factory() as session:
        return session.scalars(select(OrchestrationRun.run_id)).one()


def test_a_live_holder_means_run_in_progress(session_factory):
    other = put_lock(session_factory, "elsewhere:4242", timedelta(seconds=5))
    gateway = FakeGateway()
    with pytest.raises(RunInProgressError) as caught:
        execute_run(make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway))
    assert str(other) in str(caught.value)
    assert "elsewhere:4242" in str(caught.value)
    assert caught.value.exit_code == 75
    assert gateway.sent == []
    with session_factory() as session:
        assert session.scalars(select(OrchestrationRun)).all() == []


@pytest.mark.parametrize(
    ("holder", "age"),
    [
        ("elsewhere:4242", timedelta(seconds=61)),  # heartbeat older than LOCK_STALE_SECONDS
        (f"{socket.gethostname()}:999999", timedelta(seconds=1)),  # same host, process gone
    ],
    ids=["old-heartbeat", "dead-pid"],
)
def test_a_dead_holder_is_detected_and_taken_over(session_factory, holder, age):
    put_lock(session_factory, holder, age)
    gateway = FakeGateway()
    outcome = execute_run(
        make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway)
    )
    assert outcome.result.status == "completed"
    assert len(gateway.sent) == 3
    with session_factory() as session:
        assert session.scalars(select(RunLockRow)).all() == []  # released at the end


def test_is_stale_table():
    minute = timedelta(seconds=60)
    alive_here = LockHolder(uuid.uuid4(), holder_id(), NOW, NOW)
    assert not is_stale(alive_here, now=NOW, stale_after=minute)
    # A live process on this host is never stale, however old its heartbeat looks (a clock
    # that jumped ahead, a heartbeat thread starved): taking its lock would re-send its orders.
    assert not is_stale(alive_here, now=NOW + timedelta(days=1), stale_after=minute)
    gone = LockHolder(uuid.uuid4(), f"{socket.gethostname()}:999999", NOW, NOW)
    assert is_stale(gone, now=NOW, stale_after=minute)
    remote = LockHolder(uuid.uuid4(), "other-host:1", NOW, NOW)
    assert not is_stale(remote, now=NOW, stale_after=minute)
    assert is_stale(remote, now=NOW + timedelta(seconds=61), stale_after=minute)


def test_a_killed_process_not_yet_reaped_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
        child.kill()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never became a zombie"
        assert not pid_alive(child.pid)  # killed, still unreaped: a zombie
    finally:
        child.wait()


def test_a_lock_beat_with_a_clock_far_ahead_still_reads_as_fresh(session_factory):
    """Heartbeats use the database's clock: the run's own clock (here 2024) plays no part."""
    gateway = FakeGateway()
    holder = f"other-host:{os.getpid()}"
    put_lock(session_factory, holder, timedelta(seconds=5))
    skewed = services(session_factory, gateway)
    skewed.clock = lambda: NOW + timedelta(days=3650)
    with pytest.raises(RunInProgressError):
        execute_run(make_request(["AAPL", "MSFT", "GOOGL"]), skewed)
    assert gateway.sent == []


def test_an_interrupted_run_is_resumed_not_replanned(session_factory):
    gateway = FakeGateway()
    crash_after(gateway, 1)
    request = make_request(["AAPL", "MSFT", "GOOGL"])
    with pytest.raises(Crash):
        execute_run(request, services(session_factory, gateway))
    assert len(gateway.sent) == 1
    with session_factory() as session:
        (interrupted,) = session.scalars(select(OrchestrationRun)).all()
        assert interrupted.status == "running"
        planned = set(
            session.scalars(
                select(SignalOrderMapping.client_order_id).where(
                    SignalOrderMapping.client_order_id.is_not(None)
                )
            )
        )
        # Orders that may have reached the gateway: still `planned` (or `unknown`) at the
        # crash. The one the crash met is among them; the last may be too, or `blocked` if a
        # worker took it after the halt (then it is known never sent: no look-up needed).
        unsettled = set(
            session.scalars(
                select(SignalOrderMapping.client_order_id).where(
                    SignalOrderMapping.outcome.in_(["planned", "unknown"])
                )
            )
        )
    assert 1 <= len(unsettled) <= 2

    gateway.on_submit = None
    outcome = execute_run(request, services(session_factory, gateway))
    assert outcome.action == "resumed"
    assert outcome.result.run_id == interrupted.run_id
    assert outcome.result.status == "completed"
    sent = [o.client_order_id for o in gateway.sent]
    assert sorted(sent) == sorted(planned)  # each planned order exactly once, no re-plan
    # exactly the orders still unsettled at the crash were looked up, before anything was sent
    assert sorted(gateway.lookups) == sorted(unsettled)
    with session_factory() as session:
        assert len(session.scalars(select(OrchestrationRun)).all()) == 1


def test_resume_run_by_id_and_a_completed_run_has_nothing_to_resume(session_factory):
    gateway = FakeGateway()
    crash_after(gateway, 2)
    with pytest.raises(Crash):
        execute_run(make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway))
    with session_factory() as session:
        run_id = session.scalars(select(OrchestrationRun.run_id)).one()
    gateway.on_submit = None
    resumed = resume_run(run_id, EXECUTION, services(session_factory, gateway))
    assert (resumed.action, resumed.result.status) == ("resumed", "completed")
    assert len({o.client_order_id for o in gateway.sent}) == len(gateway.sent) == 3
    again = resume_run(run_id, EXECUTION, services(session_factory, gateway))
    assert again.action == "already_completed"
    assert len(gateway.sent) == 3


def test_a_dry_run_leaves_an_interrupted_run_alone_and_takes_no_lock(session_factory):
    gateway = FakeGateway()
    crash_after(gateway, 1)
    with pytest.raises(Crash):
        execute_run(make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway))
    gateway.on_submit = None
    put_lock(session_factory, "elsewhere:4242", timedelta(seconds=1))  # a live real run
    preview = execute_run(
        make_request(["AAPL", "MSFT", "GOOGL"], dry_run=True), services(session_factory, gateway)
    )
    assert (preview.action, preview.result.status, preview.result.dry_run) == (
        "ran",
        "completed",
        True,
    )
    assert len(gateway.sent) == 1
    with session_factory() as session:
        statuses = sorted(session.scalars(select(OrchestrationRun.status)).all())
    assert statuses == ["completed", "running"]  # the interrupted run is untouched


def test_resume_refuses_a_run_that_a_later_run_followed(session_factory):
    gateway = FakeGateway(answers={"MSFT": "kill_switch"})
    first = execute_run(make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway))
    assert first.result.status == "partial"
    gateway.answers = {}
    later = execute_run(make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway))
    assert later.action == "ran"
    sent = len(gateway.sent)
    with pytest.raises(ConfigError, match="could order twice"):
        resume_run(first.result.run_id, EXECUTION, services(session_factory, gateway))
    assert len(gateway.sent) == sent


def test_resume_goes_ahead_after_a_later_run_that_planned_nothing(session_factory):
    """The kill switch blocked part of a run; the next run failed at the preflight (kill switch
    still engaged) before planning: it planned nothing from the first run's orders."""
    gateway = FakeGateway(answers={"MSFT": "kill_switch"})
    first = execute_run(make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway))
    assert first.result.status == "partial"
    gateway.kill_switch = "ENGAGED"
    refused = execute_run(
        make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway)
    )
    assert (refused.action, refused.result.status, refused.result.mappings) == ("ran", "failed", [])
    gateway.kill_switch = "ACTIVE"
    gateway.answers = {}
    resumed = resume_run(first.result.run_id, EXECUTION, services(session_factory, gateway))
    assert resumed.action == "resumed"
    assert resumed.result.status == "completed"
    planned = {m.client_order_id for m in first.result.mappings if m.client_order_id}
    # Only the first run's own ids ever reached the gateway: the blocked one was sent again
    # under its id, never as a second order.
    assert {o.client_order_id for o in gateway.sent} == planned


def test_resume_refuses_a_plan_from_an_earlier_trading_day(session_factory):
    gateway = FakeGateway()
    old = crash_yesterday(session_factory, gateway)
    with pytest.raises(ConfigError, match="plan is stale"):
        resume_run(old, EXECUTION, services(session_factory, gateway))
    assert len(gateway.sent) == 1


def test_todays_run_warns_about_an_earlier_day_left_running(session_factory, caplog):
    gateway = FakeGateway()
    old = crash_yesterday(session_factory, gateway)
    today = execute_run(
        make_request(["AAPL", "MSFT", "GOOGL"], as_of_date=None), services(session_factory, gateway)
    )
    assert (today.action, today.result.status) == ("ran", "completed")
    assert f"orch runs sync {old}" in caplog.text


def test_an_interrupted_run_is_not_resumed_with_other_inputs_unless_forced(session_factory):
    gateway = FakeGateway()
    crash_after(gateway, 1)
    with pytest.raises(Crash):
        execute_run(make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway))
    gateway.on_submit = None
    tighter = make_request(["AAPL", "MSFT", "GOOGL"], capital=Decimal("10000"))
    with pytest.raises(ConfigError, match="other inputs") as refused:
        execute_run(tighter, services(session_factory, gateway))
    assert "capital 100000" in str(refused.value)
    assert len(gateway.sent) == 1

    forced = execute_run(
        make_request(["AAPL", "MSFT", "GOOGL"], capital=Decimal("10000"), force=True),
        services(session_factory, gateway),
    )
    assert forced.action == "ran"
    with session_factory() as session:
        runs = {r.run_id: r for r in session.scalars(select(OrchestrationRun))}
    abandoned = next(r for r in runs.values() if r.run_id != forced.result.run_id)
    assert abandoned.status == "partial"  # its first order went out; the rest never did
    assert "abandoned" in (abandoned.error_message or "")
    # the first order of the abandoned run was at the gateway: the forced run counted it as
    # in flight (the fake gateway reports it filled, so it is held... and sized anew)
    ids = [o.client_order_id for o in gateway.sent]
    assert len(ids) == len(set(ids))


def test_sync_refreshes_orders_from_the_gateway(session_factory):
    gateway = FakeGateway(answers={"AAPL": "accepted", "MSFT": "accepted", "GOOGL": "accepted"})
    outcome = execute_run(
        make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway)
    )
    assert {m.order_status for m in outcome.result.mappings} == {"accepted"}
    gateway.answers = {"AAPL": "filled", "MSFT": "canceled", "GOOGL": "partially_filled"}
    synced = sync_run(outcome.result.run_id, EXECUTION, services(session_factory, gateway))
    rows = {m.symbol: m for m in synced.result.mappings}
    assert rows["AAPL"].order_status == "filled"
    assert rows["AAPL"].filled_qty == rows["AAPL"].order_qty
    assert rows["MSFT"].order_status == "canceled"
    assert (synced.result.num_orders_accepted, synced.result.num_orders_rejected) == (2, 1)
    assert synced.result.status == "partial"
    assert len(gateway.sent) == 3  # sync never sends


def test_sync_records_every_answer_in_one_transaction(session_factory, monkeypatch):
    gateway = FakeGateway()
    outcome = execute_run(
        make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway)
    )
    sessions = []
    real = store.record_order_detail

    def recording(session, *args, **kwargs):
        sessions.append(session)
        real(session, *args, **kwargs)

    monkeypatch.setattr(store, "record_order_detail", recording)
    gateway.answers = dict.fromkeys(["AAPL", "MSFT", "GOOGL"], "filled")
    synced = sync_run(outcome.result.run_id, EXECUTION, services(session_factory, gateway))
    assert {m.order_status for m in synced.result.mappings} == {"filled"}
    assert len(sessions) == 3
    assert len(set(map(id, sessions))) == 1  # one transaction, not one per order


def test_lock_is_released_after_a_refused_run(session_factory):
    gateway = FakeGateway()
    gateway.kill_switch = "ENGAGED"
    outcome = execute_run(
        make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway)
    )
    assert outcome.result.status == "failed"
    with session_factory() as session:
        assert session.scalars(select(RunLockRow)).all() == []


def test_a_run_killed_before_its_plan_was_recorded_is_closed_and_the_day_planned_anew(
    session_factory,
):
    gateway = FakeGateway()
    kill_before_the_plan(session_factory, gateway)
    with session_factory() as session:
        empty = session.scalars(select(OrchestrationRun)).one()
    assert empty.status == "running"

    resumed = resume_run(empty.run_id, EXECUTION, services(session_factory, gateway))
    assert resumed.result.status == "failed"
    assert "no order was sent" in (resumed.result.error_message or "")

    outcome = execute_run(
        make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway)
    )
    assert outcome.action == "ran"
    assert outcome.result.run_id != empty.run_id
    assert outcome.result.status == "completed"
    assert len(gateway.sent) == 3


def test_the_next_run_closes_an_unplanned_interrupted_run_by_itself(session_factory):
    gateway = FakeGateway()
    kill_before_the_plan(session_factory, gateway)
    outcome = execute_run(
        make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway)
    )
    assert (outcome.action, outcome.result.status) == ("ran", "completed")
    assert len(gateway.sent) == 3
    with session_factory() as session:
        statuses = sorted(session.scalars(select(OrchestrationRun.status)).all())
    assert statuses == ["completed", "failed"]


def test_a_resumed_run_reports_its_own_duration_and_the_time_since_it_started(
    session_factory,
):
    gateway = FakeGateway()
    crash_after(gateway, 1)
    with pytest.raises(Crash):
        execute_run(make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway))
    gateway.on_submit = None
    ticks = iter(range(10_000))
    later = services(session_factory, gateway)
    later.clock = lambda: NOW + timedelta(seconds=358, milliseconds=10 * next(ticks))
    outcome = execute_run(make_request(["AAPL", "MSFT", "GOOGL"]), later)
    assert outcome.action == "resumed"
    result = outcome.result
    assert result.duration_seconds is not None
    assert result.duration_seconds < 5  # the resume's own time, not 358 s
    assert result.elapsed_seconds is not None
    assert result.elapsed_seconds >= 358


def test_a_run_whose_lock_was_taken_over_sends_nothing_more(session_factory, monkeypatch):
    """Another host judged this run dead (a pause past LOCK_STALE_SECONDS) and took its lock:
    the next order finds the hold unconfirmed, and nothing more goes out beside the new run's."""
    monkeypatch.setattr(locking, "LEASE_SECONDS", 0.0)  # every order confirms the hold first
    gateway = FakeGateway()

    def take_over_after_the_first(_order):
        if len(gateway.sent) == 1:
            with session_factory.begin() as session:
                session.execute(update(RunLockRow).values(holder="other-host:1"))

    gateway.on_submit = take_over_after_the_first
    outcome = execute_run(
        make_request(["AAPL", "MSFT", "GOOGL"]),
        services(session_factory, gateway),
    )
    assert len(gateway.sent) == 2  # the first, and the one already on its way
    assert outcome.result.status != "completed"
    blocked = [m for m in outcome.result.mappings if m.order_status == "blocked"]
    assert len(blocked) == 1
    assert "was taken by another process" in (blocked[0].detail or "")
    # Not to be resumed (a resume would be refused): the run that took the lock goes on.
    message = outcome.result.error_message or ""
    assert message.endswith("no further order is sent: the run that took the lock carries on")
    assert "orch runs resume" not in message


def test_a_held_lock_is_confirmed_without_the_database_within_its_lease(session_factory):
    lock = RunLock(
        session_factory,
        strategy_id="alpha_baseline",
        as_of_date=AS_OF,
        run_id=uuid.uuid4(),
        stale_after=timedelta(seconds=60),
    )
    with lock:
        assert lock.permit() is None
        with session_factory.begin() as session:
            session.execute(update(RunLockRow).values(holder="other-host:1"))
        assert lock.permit() is None  # confirmed a moment ago: no read per order
        lock._confirmed -= locking.LEASE_SECONDS  # as after a pause
        reason = lock.permit()
        assert reason is not None
        assert "taken by another process" in reason
        assert lock.permit() == reason  # lost for good


def test_a_rerun_that_cannot_settle_earlier_orders_plans_nothing(session_factory):
    """An earlier run's order of unknown outcome, which the gateway cannot be asked about
    (not yet in positions either): planning now could order the same intent twice."""
    gateway = FakeGateway(answers={"AAPL": "unreachable"})
    first = execute_run(make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway))
    assert first.result.status != "completed"
    sent = len(gateway.sent)
    again = execute_run(make_request(["AAPL", "MSFT", "GOOGL"]), services(session_factory, gateway))
    assert again.result.status == "failed"
    assert len(gateway.sent) == sent  # nothing more
    assert "could not ask the gateway about 1 order(s) of earlier runs" in (
        again.result.error_message or ""
    )
    assert again.result.mappings == []


def test_a_run_for_an_earlier_date_waits_for_todays_run(session_factory):
    """Its orders go out today, into the account today's run is trading: one at a time (the
    CLI refuses such a run; a Python caller of the runner may still make one)."""
    put_lock(session_factory, "elsewhere:4242", timedelta(seconds=5))  # today's, alive
    gateway = FakeGateway()
    earlier = make_request(["AAPL", "MSFT", "GOOGL"], as_of_date=AS_OF - timedelta(days=1))
    with pytest.raises(RunInProgressError):
        execute_run(earlier, services(session_factory, gateway))
    assert gateway.sent == []


def test_resume_refuses_a_run_for_an_earlier_day_started_today(session_factory):
    """A run for an earlier --as-of (made before such runs were refused) and killed: today's
    run has traded since, so its plan is stale even though it started today."""
    gateway = FakeGateway()
    crash_after(gateway, 1)
    earlier = services(session_factory, gateway)
    earlier.clock = lambda: NOW - timedelta(days=1)  # as it was planned, for its day
    with pytest.raises(Crash):
        execute_run(make_request(["AAPL", "MSFT", "GOOGL"], as_of_date=None), earlier)
    gateway.on_submit = None
    with session_factory.begin() as session:  # it started today
        session.execute(update(OrchestrationRun).values(started_at=NOW))
        run_id = session.scalars(select(OrchestrationRun.run_id)).one()
    with pytest.raises(ConfigError, match=r"is for 2024-12-30 .* not today .*plan is stale"):
        resume_run(run_id, EXECUTION, services(session_factory, gateway))
    assert len(gateway.sent) == 1


class MisdescribingGateway(FakeGateway):
    """Answers a look-up with a record of another order (symbol, side or quantity)."""

    def __init__(self, **change: object) -> None:
        super().__init__()
        self.change = change

    def get_order(self, client_order_id: str) -> OrderDetail | None:
        found = super().get_order(client_order_id)
        return None if found is None else found.model_copy(update=self.change)


@pytest.mark.parametrize(
    "change",
    [{"symbol": "ZZZ"}, {"side": "sell"}, {"qty": Decimal(3), "filled_qty": Decimal(3)}],
    ids=["symbol", "side", "qty"],
)
def test_a_look_up_describing_another_order_is_not_taken(session_factory, change):
    """Its fills would be booked against the wrong order: the record stays, sync names it."""
    gateway = MisdescribingGateway(**change)
    outcome = execute_run(make_request(["AAPL"]), services(session_factory, gateway))
    (order,) = [m for m in outcome.result.mappings if m.symbol == "AAPL"]
    assert order.order_side == "buy"
    gateway.answers = {"AAPL": "filled"}
    synced = sync_run(outcome.result.run_id, EXECUTION, services(session_factory, gateway))
    (after,) = [m for m in synced.result.mappings if m.symbol == "AAPL"]
    assert (after.order_status, after.filled_qty) == (order.order_status, order.filled_qty)
    why = next(text for text in synced.unsettled if text.startswith(order.client_order_id or "-"))
    assert "bad payload: it describes" in why
    assert f"not the recorded buy {order.order_qty} AAPL" in why


def test_an_order_whose_turn_comes_after_the_lock_is_lost_is_not_sent(session_factory):
    """Asked again once its turn at the gateway has come (a pacing wait can be long): the
    lock lost meanwhile, the order stays unsent and so does every later one."""
    gateway = FakeGateway()
    asked: list[int] = []

    def permit() -> str | None:
        asked.append(len(gateway.sent))
        # Before the second order is sent (its second question), another host has the lock.
        return "the run lock was taken by another process" if len(asked) >= 4 else None

    run_services = services(session_factory, gateway)
    run_services.send_permit = permit
    outcome = execute_run(make_request(["AAPL", "MSFT", "GOOGL"]), run_services)
    assert len(gateway.sent) == 1
    sent = {order.client_order_id for order in gateway.sent}
    unsent = [m for m in outcome.result.mappings if m.client_order_id not in (None, *sent)]
    assert unsent
    assert {m.order_status for m in unsent} == {"blocked"}
    assert all("taken by another process" in (m.detail or "") for m in unsent)
