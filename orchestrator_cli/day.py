"""What to do today: a pure function of the day's earlier runs and the request. No I/O.

A run that sends orders holds the day's run lock while this is decided and carried out, so the
day's runs cannot change in between. The possible answers:
- `Resume`: a real run of the day was interrupted (its process died) after recording its plan;
  it is finished from that plan, never re-planned;
- `Refuse`: such a run was planned with other inputs; nothing is sent until the user says which
  plan is meant (`orch runs resume` or `orch run --force`);
- `AlreadyCompleted`: the day's real run completed; nothing to do unless forced;
- `NewRun`: plan anew with generation N (part of every order id), counting the open orders of
  the earlier runs as in flight; a forced run first abandons an interrupted one.
A real run that was killed before its plan was recorded sent nothing (the plan is committed
before the first order): it is closed as failed (`close_unplanned`) and counted as such.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from orchestrator_cli.mode import RunMode
from orchestrator_cli.request import RunSpec
from orchestrator_cli.store import RunInfo


@dataclass(frozen=True)
class DayRun:
    """One earlier run of the strategy and date, and whether its plan was recorded."""

    info: RunInfo
    plan_recorded: bool

    @property
    def unplanned(self) -> bool:
        """A real run still `running` with no plan: killed before it could send anything."""
        info = self.info
        return info.status == "running" and not info.dry_run and not self.plan_recorded


@dataclass(frozen=True)
class Resume:
    run: RunInfo


@dataclass(frozen=True)
class Refuse:
    run: RunInfo
    differences: list[str]


@dataclass(frozen=True)
class AlreadyCompleted:
    run: RunInfo
    differences: list[str]  # how the request differs from what the completed run used


@dataclass(frozen=True)
class NewRun:
    generation: int
    earlier: list[RunInfo]  # real runs whose open orders count as in flight
    abandon: RunInfo | None = None  # an interrupted run to close first (forced run)


DayAction = Resume | Refuse | AlreadyCompleted | NewRun


@dataclass(frozen=True)
class DayDecision:
    action: DayAction
    close_unplanned: list[uuid.UUID]  # real runs to close as failed first: they sent nothing


def _real(runs: Sequence[RunInfo]) -> list[RunInfo]:
    return [run for run in runs if not run.dry_run]


def decide_day(day: Sequence[DayRun], spec: RunSpec, mode: RunMode, *, force: bool) -> DayDecision:
    """What a run of `spec` does given the day's earlier runs (oldest first)."""
    if not mode.takes_lock:
        # Sends nothing and touches no other run: plans from the finished runs' orders.
        finished = [d.info for d in day if d.info.status != "running"]
        return DayDecision(NewRun(len(finished), _real(finished)), close_unplanned=[])
    closed = [d.info.run_id for d in day if d.unplanned]
    runs = [replace(d.info, status="failed") if d.unplanned else d.info for d in day]
    return DayDecision(_real_run_action(runs, spec, force=force), close_unplanned=closed)


def _real_run_action(runs: list[RunInfo], spec: RunSpec, *, force: bool) -> DayAction:
    interrupted = [r for r in _real(runs) if r.status == "running"]
    if interrupted and not force:
        run = interrupted[-1]
        differences = spec.differences(run.symbols, run.capital, run.max_position_size, run.limits)
        return Refuse(run, differences) if differences else Resume(run)
    completed = [r for r in _real(runs) if r.status == "completed"]
    if completed and not force:
        done = completed[-1]
        return AlreadyCompleted(
            done, spec.differences(done.symbols, done.capital, done.max_position_size, done.limits)
        )
    abandon = interrupted[-1] if interrupted else None
    if abandon is not None:
        runs = [replace(r, status="failed") if r.run_id == abandon.run_id else r for r in runs]
    earlier = [r for r in runs if not (r.dry_run and r.status == "running")]
    return NewRun(len(earlier), _real(earlier), abandon)
