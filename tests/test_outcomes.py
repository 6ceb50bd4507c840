"""Order outcomes recorded off the sending path: grouped, relaxed commits on a writer thread."""

from __future__ import annotations

import threading
import uuid
from datetime import date
from decimal import Decimal

import pytest
from fakes import (
    NOW,
    FakeGateway,
    FakePrices,
    FakeSignals,
    make_request,
    services_for,
    signals_of,
)
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from orchestrator_cli import db, outcomes, store
from orchestrator_cli.errors import DatabaseError, RunInterrupted
from orchestrator_cli.models import SignalOrderMapping
from orchestrator_cli.outcomes import OutcomeWriter
from orchestrator_cli.runner import execute_run
from orchestrator_cli.schemas import OutcomeKind, SubmitOutcome

WAIT = 10.0  # seconds: a deadline, never a sleep


def planned_orders(session_factory, make_plan, count: int) -> list[tuple[int, str]]:
    """A run with `count` planned orders; (mapping_id, client_order_id) of each."""
    symbols = [f"S{i:03d}" for i in range(count)]
    coids = [f"c-{s}" for s in symbols]
    with session_factory.begin() as session:
        run_id = uuid.uuid4()
        store.create_run(
            session,
            run_id=run_id,
            strategy_id="alpha_baseline",
            as_of_date=date(2024, 12, 31),
            symbols=symbols,
            capital=Decimal(100000),
            max_position_size=Decimal(20000),
            dry_run=False,
            price_source="fake",
            started_at=NOW,
            settings_snapshot={},
            limits={},
            generation=0,
        )
        ids = store.add_mappings(session, run_id, [make_plan(s) for s in symbols], coids)
    return list(zip(ids, coids, strict=True))


def accepted(coid: str) -> SubmitOutcome:
    return SubmitOutcome(
        client_order_id=coid, kind=OutcomeKind.ACCEPTED, order_status="new", broker_order_id="b"
    )


def statuses(session_factory) -> dict[str, str | None]:
    with session_factory() as session:
        rows = session.execute(
            select(SignalOrderMapping.client_order_id, SignalOrderMapping.outcome)
        ).all()
    return dict(rows)


class Recorder:
    """Wraps outcomes.record_outcomes: counts the transactions, can hold the first one."""

    def __init__(self, monkeypatch, *, hold_first: bool = False) -> None:
        self.real = outcomes.record_outcomes
        self.groups: list[int] = []
        self.durability: list[str] = []
        self.holding = threading.Event()
        self.release = threading.Event()
        self.hold_first = hold_first
        monkeypatch.setattr(outcomes, "record_outcomes", self)

    def __call__(self, session, answered) -> None:
        connection = session.connection()
        if connection.dialect.name == "sqlite":
            level = connection.exec_driver_sql("PRAGMA synchronous").scalar_one()
            self.durability.append("normal" if level == 1 else f"level {level}")
        else:
            commit = connection.exec_driver_sql("SHOW synchronous_commit").scalar_one()
            self.durability.append("normal" if commit == "off" else f"commit {commit}")
        if self.hold_first and not self.groups:
            self.holding.set()
            assert self.release.wait(WAIT), "the test never released the first commit"
        self.groups.append(len(answered))
        self.real(session, answered)


def test_outcomes_that_arrive_during_a_commit_are_committed_together(
    session_factory, make_plan, monkeypatch
):
    orders = planned_orders(session_factory, make_plan, 100)
    recorder = Recorder(monkeypatch, hold_first=True)
    with OutcomeWriter(session_factory, on_failure=lambda: None, linger=0) as writer:
        writer.put(orders[0][0], accepted(orders[0][1]), at=NOW)
        assert recorder.holding.wait(WAIT)
        for mapping_id, coid in orders[1:]:
            writer.put(mapping_id, accepted(coid), at=NOW)  # never waits for the commit
        recorder.release.set()
        assert writer.flush() is None
        assert set(statuses(session_factory).values()) == {"accepted"}
    # One transaction per outcome would be 100; the 99 that came meanwhile go in one.
    assert recorder.groups == [1, 99]
    assert recorder.durability == ["normal", "normal"]  # relaxed: re-derivable from the gateway
    assert writer.commit_seconds > 0


def test_leaving_the_block_commits_what_was_put(session_factory, make_plan, monkeypatch):
    orders = planned_orders(session_factory, make_plan, 5)
    recorder = Recorder(monkeypatch)
    with OutcomeWriter(session_factory, on_failure=lambda: None, linger=60) as writer:
        for mapping_id, coid in orders:
            writer.put(mapping_id, accepted(coid), at=NOW)
    assert set(statuses(session_factory).values()) == {"accepted"}
    assert sum(recorder.groups) == 5


def test_a_failed_commit_stops_the_writer_and_is_reported(session_factory, make_plan, monkeypatch):
    orders = planned_orders(session_factory, make_plan, 3)

    def failing(session, answered) -> None:
        raise OperationalError("UPDATE", {}, Exception("server closed the connection"))

    monkeypatch.setattr(outcomes, "record_outcomes", failing)
    failures: list[str] = []
    with OutcomeWriter(session_factory, on_failure=lambda: failures.append("stop")) as writer:
        writer.put(orders[0][0], accepted(orders[0][1]), at=NOW)
        failure = writer.flush()
        monkeypatch.undo()  # the database is back: the writer still writes nothing more
        for mapping_id, coid in orders[1:]:
            writer.put(mapping_id, accepted(coid), at=NOW)
        assert writer.flush() is failure
    assert isinstance(failure, DatabaseError)
    assert "recording order outcomes" in str(failure)
    assert failures == ["stop"]
    assert set(statuses(session_factory).values()) == {"planned"}  # settled by id later


def test_a_run_commits_its_outcomes_in_groups(session_factory, monkeypatch):
    symbols = [f"S{i:02d}" for i in range(40)]
    gateway = FakeGateway()
    recorder = Recorder(monkeypatch)
    request = make_request(symbols, order_concurrency=8)
    services = services_for(
        session_factory,
        FakeSignals(signals_of(*[(s, "0.02") for s in symbols])),
        gateway,
        FakePrices(dict.fromkeys(symbols, "10")),
    )
    progress: list[tuple[int, int]] = []
    services.order_progress = lambda done, total: progress.append((done, total))
    result = execute_run(request, services).result
    assert result.status == "completed"
    assert result.num_orders_accepted == 40  # all committed before the run was finished
    assert sum(recorder.groups) == 40
    assert len(recorder.groups) < 40
    assert progress == [(done, 40) for done in range(1, 41)]


def test_an_interrupt_still_commits_the_outcomes_of_orders_in_flight(session_factory):
    symbols = [f"S{i}" for i in range(6)]
    release = threading.Event()
    calls: list[str] = []

    def hold(order) -> None:
        calls.append(order.client_order_id)
        if len(calls) > 2:  # the third order on is in flight when the interrupt comes
            assert release.wait(WAIT)

    def interrupt(done: int, total: int) -> None:
        if done == 2:
            release.set()
            raise KeyboardInterrupt

    gateway = FakeGateway(on_submit=hold)
    services = services_for(
        session_factory,
        FakeSignals(signals_of(*[(s, "0.1") for s in symbols])),
        gateway,
        FakePrices(dict.fromkeys(symbols, "10")),
    )
    services.order_progress = interrupt
    with pytest.raises(RunInterrupted):
        execute_run(make_request(symbols, order_concurrency=4), services)
    recorded = statuses(session_factory)
    sent = {o.client_order_id for o in gateway.sent}
    assert len(sent) >= 5  # the first two, and the three in flight
    assert {coid: recorded[coid] for coid in sent} == dict.fromkeys(sent, "accepted")
    assert {recorded[c] for c in recorded if c not in sent} <= {"planned", "blocked"}


@pytest.mark.parametrize("kind", ["database", "bug"])
def test_a_database_failure_mid_run_stops_sending(session_factory, monkeypatch, kind):
    symbols = [f"S{i}" for i in range(6)]
    gateway = FakeGateway()

    def failing(session, answered) -> None:
        if kind == "bug":
            raise ValueError("outcome for another order")
        raise OperationalError("UPDATE", {}, Exception("server closed the connection"))

    monkeypatch.setattr(outcomes, "record_outcomes", failing)
    services = services_for(
        session_factory,
        FakeSignals(signals_of(*[(s, "0.1") for s in symbols])),
        gateway,
        FakePrices(dict.fromkeys(symbols, "10")),
    )
    expected = DatabaseError if kind == "database" else ValueError
    with pytest.raises(expected):
        execute_run(make_request(symbols, order_concurrency=2), services)
    assert len(gateway.sent) == 1  # the first order goes alone; its commit failed: no more


def test_record_outcomes_checks_every_order_before_writing(session_factory, make_plan):
    orders = planned_orders(session_factory, make_plan, 2)
    (first, first_coid), (second, _) = orders
    answered = [
        outcomes.Answered(first, accepted(first_coid), NOW),
        outcomes.Answered(second, accepted("someone-else"), NOW),
    ]
    with (
        pytest.raises(ValueError, match="another order"),
        db.transaction(session_factory, "x") as s,
    ):
        outcomes.record_outcomes(s, answered)
    assert set(statuses(session_factory).values()) == {"planned"}


class Crash(BaseException):
    """Stands for the process dying (not an Exception: nothing handles it)."""


def test_answers_lost_before_their_commit_are_settled_by_id_and_never_sent_again(
    session_factory, monkeypatch
):
    symbols = ["AAPL", "MSFT", "GOOGL"]
    gateway = FakeGateway()
    request = make_request(symbols, order_concurrency=2)

    def services():
        return services_for(
            session_factory,
            FakeSignals(signals_of(*[(s, "0.3") for s in symbols])),
            gateway,
            FakePrices(dict.fromkeys(symbols, "100")),
        )

    def die_once_all_are_answered(done: int, total: int) -> None:
        if done == total:
            raise Crash

    # The gateway took every order; the process died before any group was committed.
    monkeypatch.setattr(outcomes, "record_outcomes", lambda session, answered: None)
    dying = services()
    dying.order_progress = die_once_all_are_answered
    with pytest.raises(Crash):
        execute_run(request, dying)
    monkeypatch.undo()
    assert set(statuses(session_factory).values()) == {"planned"}
    assert len(gateway.sent) == 3

    outcome = execute_run(request, services())
    assert (outcome.action, outcome.result.status) == ("resumed", "completed")
    assert len(gateway.sent) == 3  # found at the gateway by id: none sent again
    assert sorted(gateway.lookups) == sorted(o.client_order_id for o in gateway.sent)
    assert set(statuses(session_factory).values()) == {"accepted"}
