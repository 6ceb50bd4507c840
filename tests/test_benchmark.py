"""The benchmark's own arithmetic, and its smallest scenario run for real (a few seconds)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from measure import Result, Scenario, run_scenario
from run_benchmark import full_plan, median_run, target_rows, targets_plan


def result(
    scenario: Scenario, wall: float, duration: float, submit: float | None = None, **fields: object
) -> Result:
    accepted = scenario.k
    run = {
        "status": "completed",
        "duration_seconds": duration,
        "num_orders_submitted": accepted,
        "num_orders_accepted": accepted,
        "phase_seconds": None if submit is None else {"signals": 0.1, "submit": submit},
    }
    return Result(scenario, wall=wall, run=run, **fields)


def test_the_budget_is_1_3_times_the_wire_time_plus_a_second() -> None:
    scenario = Scenario("grid", 3000, 1000, 20, 16)
    assert scenario.ideal == pytest.approx(0.02 * 63)  # ceil(1000 / 16) = 63 rounds of 20 ms
    assert scenario.budget == pytest.approx(1.3 * 1.26 + 1)


def test_the_full_plan_leaves_out_runs_longer_than_two_minutes_on_the_wire() -> None:
    plan = full_plan(postgres=True)
    assert Scenario("grid", 3000, 3000, 100, 1) not in plan  # 300 s of latency alone
    assert Scenario("grid", 3000, 1000, 100, 1) in plan
    assert Scenario("postgres", 3000, 1000, 20, 16, "postgres") in plan
    assert len(plan) == len(set(plan))


def test_targets_compare_with_the_sequential_baseline_of_the_same_invocation() -> None:
    sequential = result(Scenario("grid", 3000, 300, 20, 1), wall=7.0, duration=6.2, submit=6.0)
    concurrent = result(Scenario("grid", 3000, 300, 20, 16), wall=1.4, duration=0.6, submit=0.4)
    big = result(Scenario("grid", 3000, 1000, 20, 16), wall=2.7, duration=1.5, rss_mb=120)
    rows = {
        target: (measured, met)
        for target, measured, met in target_rows([sequential, concurrent, big])
    }
    assert rows["K=300, L=20 ms, sqlite: C=16 at least 8x faster than C=1 (the run)"] == (
        "15.0x submit phase, 10.3x run, 5.0x process",
        True,
    )
    assert rows["K=1,000 of N=3,000, L=20 ms, C=16, sqlite (json): whole run <= 2.6 s"] == (
        "2.70 s",
        False,
    )


def test_the_targets_plan_holds_every_scenario_a_target_is_judged_on() -> None:
    plan = targets_plan(postgres=True)
    for database in ("sqlite", "postgres"):
        group = "grid" if database == "sqlite" else "postgres"
        for concurrency in (1, 16):
            assert Scenario(group, 3000, 300, 20, concurrency, database) in plan
        assert Scenario(group, 3000, 1000, 20, 16, database) in plan
    assert Scenario("grid", 3000, 3000, 20, 16) in plan  # peak RSS
    assert Scenario("grid", 3000, 300, 0, 16) in plan  # linearity: N=3,000 ...
    assert Scenario("linearity", 30000, 3000, 0, 16) in plan  # ... against N=30,000
    assert all(s.database == "sqlite" for s in targets_plan(postgres=False))


def test_the_median_run_stands_for_a_repeated_scenario() -> None:
    scenario = Scenario("grid", 3000, 1000, 20, 16)
    runs = [result(scenario, wall=w, duration=w - 0.6) for w in (3.1, 2.4, 2.5)]
    assert median_run(runs).wall == 2.5
    assert median_run(runs[:2]).wall == 3.1  # of two, the slower


def test_the_plan_record_target_reads_the_slowest_postgresql_run() -> None:
    def planned(k: int, seconds: float) -> Result:
        scenario = Scenario("postgres", 3000, k, 20, 16, "postgres")
        done = result(scenario, wall=2.0, duration=1.5)
        done.run["phase_seconds"] = {"record_plan": seconds}
        return done

    rows = {t: (m, ok) for t, m, ok in target_rows([planned(300, 0.18), planned(1000, 0.31)])}
    assert rows["recording the plan of 3,000 mappings on PostgreSQL under 0.3 s (slowest run)"] == (
        "0.31 s",
        False,
    )


@pytest.mark.e2e
def test_the_smallest_scenario_runs_orch_and_measures_it(tmp_path: Path) -> None:
    measured = run_scenario(Scenario("smoke", 20, 4, 0, 2), tmp_path, postgres=None, timeout=60)
    assert measured.error is None
    assert measured.accepted_all
    assert measured.duration is not None
    assert measured.wall > measured.duration > 0
    assert 20 < measured.rss_mb < 1000
