"""The day decision as a table: earlier runs of the day + the request -> what to do."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from orchestrator_cli.day import (
    AlreadyCompleted,
    DayRun,
    NewRun,
    Refuse,
    Resume,
    decide_day,
)
from orchestrator_cli.mode import DRY_RUN, REAL
from orchestrator_cli.request import RunSpec
from orchestrator_cli.risk import Limits
from orchestrator_cli.store import RunInfo

AS_OF = date(2024, 12, 31)
SPEC = RunSpec(
    symbols=["AAPL", "MSFT"],
    strategy_id="alpha_baseline",
    capital=Decimal("100000"),
    max_position_size=Decimal("20000"),
    dry_run=False,
    limits=Limits(),
)


def earlier(
    status: str,
    *,
    dry: bool = False,
    planned: bool = True,
    symbols: tuple[str, ...] = ("MSFT", "AAPL"),
    capital: str = "100000",
    limits: dict[str, object] | None = None,
) -> DayRun:
    info = RunInfo(
        run_id=uuid.uuid4(),
        strategy_id="alpha_baseline",
        as_of_date=AS_OF,
        status=status,
        dry_run=dry,
        generation=0,
        started_at=datetime(2024, 12, 31, 14, 30, tzinfo=UTC),
        symbols=list(symbols),
        capital=Decimal(capital),
        max_position_size=Decimal("20000"),
        limits=Limits().record() if limits is None else limits,
    )
    return DayRun(info, plan_recorded=planned)


def describe(day: list[DayRun], decision_action: object) -> str:
    """The action with runs named by their index in the day, for a readable table."""
    index = {d.info.run_id: i for i, d in enumerate(day)}
    match decision_action:
        case Resume(run):
            return f"resume {index[run.run_id]}"
        case Refuse(run, differences):
            return f"refuse {index[run.run_id]}: {'; '.join(differences)}"
        case AlreadyCompleted(run):
            return f"completed {index[run.run_id]}"
        case NewRun(generation, runs, abandon):
            shown = ",".join(str(index[r.run_id]) for r in runs) or "-"
            gone = "" if abandon is None else f" abandon {index[abandon.run_id]}"
            return f"new gen {generation} in-flight {shown}{gone}"
    raise AssertionError(decision_action)


CASES = [
    # (earlier runs, force, expected action, runs closed as unplanned)
    ([], False, "new gen 0 in-flight -", []),
    ([earlier("completed")], False, "completed 0", []),
    ([earlier("completed")], True, "new gen 1 in-flight 0", []),
    ([earlier("failed")], False, "new gen 1 in-flight 0", []),
    ([earlier("partial"), earlier("completed")], False, "completed 1", []),
    ([earlier("running")], False, "resume 0", []),
    ([earlier("running")], True, "new gen 1 in-flight 0 abandon 0", []),
    ([earlier("running", planned=False)], False, "new gen 1 in-flight 0", [0]),
    ([earlier("completed"), earlier("running", planned=False)], False, "completed 0", [1]),
    (
        [earlier("running", symbols=("AAPL",))],
        False,
        "refuse 0: symbols: 1 there, 2 now (1 added, 0 left out)",
        [],
    ),
    ([earlier("running", capital="5000")], False, "refuse 0: capital 5000 there, 100000 now", []),
    (
        [earlier("running", limits={"long_only": True})],
        False,
        "refuse 0: pre-trade limits",
        [],
    ),
    ([earlier("running", symbols=("AAPL",))], True, "new gen 1 in-flight 0 abandon 0", []),
    # Dry runs never block or count as the day's run; a running one is left alone.
    ([earlier("completed", dry=True)], False, "new gen 1 in-flight -", []),
    ([earlier("running", dry=True)], False, "new gen 0 in-flight -", []),
    ([earlier("running", dry=True, planned=False)], False, "new gen 0 in-flight -", []),
    (
        [earlier("running"), earlier("running")],
        True,
        "new gen 2 in-flight 0,1 abandon 1",
        [],
    ),
]


@pytest.mark.parametrize(("day", "force", "expected", "closed"), CASES)
def test_a_real_run_decides_from_the_day(day, force, expected, closed):
    decision = decide_day(day, SPEC, REAL, force=force)
    assert describe(day, decision.action) == expected
    assert decision.close_unplanned == [day[i].info.run_id for i in closed]


DRY_CASES = [
    ([], "new gen 0 in-flight -"),
    ([earlier("completed")], "new gen 1 in-flight 0"),
    ([earlier("running")], "new gen 0 in-flight -"),
    ([earlier("running", planned=False)], "new gen 0 in-flight -"),
    ([earlier("failed"), earlier("completed", dry=True)], "new gen 2 in-flight 0"),
]


@pytest.mark.parametrize(("day", "expected"), DRY_CASES)
def test_a_dry_run_plans_from_finished_runs_and_closes_nothing(day, expected):
    decision = decide_day(day, SPEC, DRY_RUN, force=False)
    assert describe(day, decision.action) == expected
    assert decision.close_unplanned == []
