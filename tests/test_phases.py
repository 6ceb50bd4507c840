"""A run's own phase timings: measured by the run, stored with it, shown by `runs show`."""

from __future__ import annotations

import pytest
from fakes import FakeGateway, FakePrices, FakeSignals, make_request, services_for, signals_of
from sqlalchemy import update

from orchestrator_cli import store
from orchestrator_cli.models import OrchestrationRun
from orchestrator_cli.phases import PhaseTimer
from orchestrator_cli.runner import execute_run

NEW_RUN_PHASES = {
    "signals",
    "positions",
    "settle",
    "prices",
    "plan",
    "record_plan",
    "submit",
    "record_outcomes",
}


def test_phase_timer_sums_each_phase_and_rounds_to_milliseconds():
    ticks = iter([0.0, 0.25, 1.0, 1.5004, 2.0, 2.1])
    timer = PhaseTimer(clock=lambda: next(ticks))
    with timer.phase("signals"):
        pass
    with timer.phase("submit"):
        pass
    with pytest.raises(RuntimeError), timer.phase("signals"):
        raise RuntimeError("a failing phase still counts")
    timer.add("record_outcomes", 0.0123456)
    assert timer.record() == {"signals": 0.35, "submit": 0.5, "record_outcomes": 0.012}


def services_with_orders(session_factory, gateway):
    symbols = ["AAPL", "MSFT", "GOOGL"]
    return symbols, services_for(
        session_factory,
        FakeSignals(signals_of(*[(s, "0.3") for s in symbols])),
        gateway,
        FakePrices(dict.fromkeys(symbols, "100")),
    )


def test_a_run_stores_its_phase_timings(session_factory):
    symbols, services = services_with_orders(session_factory, FakeGateway())
    result = execute_run(make_request(symbols), services).result
    assert result.phase_seconds is not None
    assert set(result.phase_seconds) == NEW_RUN_PHASES
    assert all(seconds >= 0 for seconds in result.phase_seconds.values())
    with session_factory() as session:
        shown = store.load_run(session, result.run_id)
    assert shown.phase_seconds == result.phase_seconds
    assert shown.model_dump(mode="json")["phase_seconds"] == result.phase_seconds


def test_a_dry_run_has_no_submit_phase_and_older_runs_have_none(session_factory):
    symbols, services = services_with_orders(session_factory, FakeGateway())
    result = execute_run(make_request(symbols, dry_run=True), services).result
    assert result.phase_seconds is not None
    assert set(result.phase_seconds) == NEW_RUN_PHASES - {"submit", "record_outcomes"}
    with session_factory.begin() as session:  # as a run finished before phases were recorded
        session.execute(update(OrchestrationRun).values(phase_seconds=None))
    with session_factory() as session:
        assert store.load_run(session, result.run_id).phase_seconds is None
        (listed,) = store.list_runs(session, limit=10, offset=0).runs
    assert listed.phase_seconds is None


class Crash(BaseException):
    """Stands for the process dying mid-run."""


def test_a_resumed_run_stores_the_phases_of_the_resume(session_factory):
    gateway = FakeGateway()

    def crash_after_the_first(order) -> None:
        if gateway.sent:
            raise Crash

    gateway.on_submit = crash_after_the_first
    symbols, services = services_with_orders(session_factory, gateway)
    with pytest.raises(Crash):
        execute_run(make_request(symbols), services)
    gateway.on_submit = None
    outcome = execute_run(make_request(symbols), services)
    assert outcome.action == "resumed"
    assert outcome.result.phase_seconds is not None
    assert set(outcome.result.phase_seconds) == {"settle", "submit", "record_outcomes"}
