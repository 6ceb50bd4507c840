"""Fault injection: the real `orch` process against the sandbox over sockets, many seeded trials.

Scenarios: SIGKILL at a random point then a re-run (and resume), timeouts and dropped
connections after the gateway accepted, bursts of 503 and 429, two runs started at once, and
the database going away mid-run (PostgreSQL behind a proxy that is cut). After each trial an
audit compares the sandbox's orders with the database: every order at the gateway must be
recorded with its client_order_id, and no intent may be ordered twice. See conftest.py for the
seeds and the session table.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import string
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import Orch
from sqlalchemy import make_url, select

from orchestrator_cli import db
from orchestrator_cli.models import OrchestrationRun, SignalOrderMapping
from orchestrator_cli.sandbox import Sandbox, SandboxFaults

pytestmark = pytest.mark.faults

SIGKILL_TRIALS = 50
TIMEOUT_TRIALS = 10
BURST_TRIALS = 10
RACE_TRIALS = 5
DB_STOP_TRIALS = 3

# The sandbox's default 1000-share cap would refuse big orders in cheap symbols: not a fault.
NO_POSITION_CAP = 10**9
PROCESS_TIMEOUT = 60.0
WAIT_DEADLINE = 30.0
POLL_SECONDS = 0.002


def trial_ids(index: int) -> str:
    return f"t{index:02d}"


# --- the orch command -------------------------------------------------------------------------


def orch_at(cwd: Path, sandbox: Sandbox, database_url: str, **env: str) -> Orch:
    """orch against the trial's sandbox; a process still running after PROCESS_TIMEOUT fails."""
    return Orch.at_sandbox(cwd, sandbox, database_url, timeout=PROCESS_TIMEOUT, **env)


def run_document(done: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
    """The one JSON document a --json command printed."""
    assert done.stdout.strip(), f"{what}: exit {done.returncode}, no JSON; stderr: {done.stderr}"
    document: dict[str, Any] = json.loads(done.stdout)
    return document


@dataclass(frozen=True)
class Universe:
    """The symbols and long/short counts of one trial; `planned` orders from flat positions."""

    symbols: list[str]
    top_n: int
    bottom_n: int

    @classmethod
    def draw(cls, trial_rng: random.Random, *, size: tuple[int, int] = (8, 12)) -> Universe:
        count = trial_rng.randint(*size)
        symbols: list[str] = []
        while len(symbols) < count:
            symbol = "".join(trial_rng.choices(string.ascii_uppercase, k=4))
            if symbol not in symbols:
                symbols.append(symbol)
        top_n = trial_rng.randint(3, 6)
        # Each symbol is a long, a short or neither: never more of them than symbols.
        return cls(symbols, top_n, trial_rng.randint(0, min(3, count - top_n)))

    @property
    def planned(self) -> int:
        return self.top_n + self.bottom_n

    def run_args(self) -> tuple[str, ...]:
        return (
            "run",
            "--symbols",
            ",".join(self.symbols),
            "--top-n",
            str(self.top_n),
            "--bottom-n",
            str(self.bottom_n),
        )


# --- what the database recorded, and the audit against the sandbox -----------------------------


@dataclass(frozen=True)
class Leg:
    run_id: str
    symbol: str
    client_order_id: str | None
    target_qty: int | None
    order_qty: int | None
    order_side: str | None
    outcome: str | None
    order_status: str | None
    detail: str | None


@dataclass(frozen=True)
class Ledger:
    """Every run (oldest first, as (run_id, status)) and every mapping in the database."""

    runs: list[tuple[str, str]]
    legs: list[Leg]

    def orders(self) -> list[Leg]:
        return [leg for leg in self.legs if leg.client_order_id is not None]


def read_ledger(database_url: str) -> Ledger:
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as connection:
            runs = connection.execute(
                select(OrchestrationRun.run_id, OrchestrationRun.status).order_by(
                    OrchestrationRun.id
                )
            ).all()
            m = SignalOrderMapping
            legs = connection.execute(
                select(
                    m.run_id,
                    m.symbol,
                    m.client_order_id,
                    m.target_qty,
                    m.order_qty,
                    m.order_side,
                    m.outcome,
                    m.order_status,
                    m.detail,
                ).order_by(m.id)
            ).all()
    finally:
        engine.dispose()
    return Ledger(
        [(str(run_id), status) for run_id, status in runs],
        [Leg(str(row[0]), *row[1:]) for row in legs],
    )


@dataclass(frozen=True)
class Audit:
    at_gateway: dict[str, dict[str, Any]]
    planned: set[str]
    unrecorded: set[str]
    duplicates: dict[str, int]  # symbol -> orders at the gateway beyond its planned legs
    mismatched: list[str]  # gateway orders whose symbol/side/qty differ from the recorded plan


def audit(trial: Any, sandbox: Sandbox, ledger: Ledger) -> Audit:
    """Compare the gateway's orders with the recorded plan; the counts go to the session table."""
    at_gateway: dict[str, dict[str, Any]] = sandbox.state.snapshot()["orders"]
    orders = {leg.client_order_id: leg for leg in ledger.orders() if leg.client_order_id}
    planned = set(orders)
    unrecorded = set(at_gateway) - planned
    legs_per_symbol = Counter(leg.symbol for leg in orders.values())
    sent_per_symbol = Counter(order["symbol"] for order in at_gateway.values())
    duplicates = {
        symbol: sent - legs_per_symbol[symbol]
        for symbol, sent in sent_per_symbol.items()
        if sent > legs_per_symbol[symbol]
    }
    mismatched = [
        coid
        for coid, order in at_gateway.items()
        if coid in orders
        and (order["symbol"], order["side"], order["qty"])
        != (orders[coid].symbol, orders[coid].order_side, orders[coid].order_qty)
    ]
    trial.found(duplicates=sum(duplicates.values()), unrecorded=len(unrecorded))
    return Audit(at_gateway, planned, unrecorded, duplicates, mismatched)


def assert_safe(found: Audit) -> None:
    """The two guarantees: nothing at the gateway unrecorded, no intent ordered twice."""
    assert not found.unrecorded, f"orders at the gateway missing from the database: {found}"
    assert not found.duplicates, f"symbols with more gateway orders than planned legs: {found}"
    assert not found.mismatched, f"gateway orders unlike their recorded plan: {found}"


def assert_finished(sandbox: Sandbox, ledger: Ledger, universe: Universe, found: Audit) -> None:
    """The day's last run completed: every symbol planned, every order at the gateway once,
    positions on target. An earlier run may exist only if it never recorded an order: a run
    with a recorded plan must be resumed, never planned again."""
    assert ledger.runs, "no run recorded"
    run_id, status = ledger.runs[-1]
    earlier = {rid for rid, _ in ledger.runs[:-1]}
    replanned = [leg for leg in ledger.orders() if leg.run_id in earlier]
    assert not replanned, f"run {run_id} planned again after {ledger.runs[:-1]}: {replanned}"
    assert status == "completed", f"run {run_id} ended {status}: {ledger.legs}"
    assert found.planned == set(found.at_gateway), (
        f"planned {sorted(found.planned)} != at gateway {sorted(found.at_gateway)}"
    )
    legs = [leg for leg in ledger.legs if leg.run_id == run_id]
    assert sorted(leg.symbol for leg in legs) == sorted(universe.symbols), (
        f"run {run_id} is {status} but its plan covers {len(legs)} of "
        f"{len(universe.symbols)} symbols: {legs}"
    )
    assert len(ledger.orders()) == universe.planned, (
        f"{len(ledger.orders())} orders planned, expected {universe.planned}: {ledger.orders()}"
    )
    for leg in legs:
        held = sandbox.state.position(leg.symbol)
        assert held == (leg.target_qty or 0), f"{leg.symbol}: holds {held}, target {leg.target_qty}"


def finish_interrupted(orch: Orch, universe: Universe) -> None:
    """`orch run` again with the same arguments; `orch runs resume` if that did not complete."""
    done = orch(*universe.run_args(), "--json")
    assert done.returncode in (0, 3), f"re-run exit {done.returncode}: {done.stderr}"
    run = run_document(done, "re-run")
    if run["status"] == "completed":
        return
    resumed = orch("runs", "resume", run["run_id"], "--json")
    assert resumed.returncode == 0, f"resume exit {resumed.returncode}: {resumed.stderr}"
    assert run_document(resumed, "resume")["run_id"] == run["run_id"]


# --- waiting for a kill point ------------------------------------------------------------------


def wait_until(process: subprocess.Popen[str], reached: Callable[[], bool], what: str) -> bool:
    """Poll until `reached()` or the process exits; True if reached while it still ran."""
    deadline = time.monotonic() + WAIT_DEADLINE
    while not reached():
        try:
            process.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            assert time.monotonic() < deadline, f"orch neither reached {what} nor exited"
            continue
        return False
    return True


def sqlite_count(path: Path, table: str) -> Callable[[], bool]:
    """A probe: does `table` in the SQLite file have a row yet (read-only, never blocks orch)?"""

    def probe() -> bool:
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.05)) as conn:
                return bool(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        except sqlite3.OperationalError:  # locked by orch's writer this instant
            return False

    return probe


@pytest.fixture
def sqlite_copy(tmp_path: Path, migrated_sqlite_template: Path) -> Path:
    path = tmp_path / "orch.db"
    shutil.copyfile(migrated_sqlite_template, path)
    return path


def fresh_faults(seed: int, **faults: Any) -> SandboxFaults:
    return SandboxFaults(seed=seed, max_position_shares=NO_POSITION_CAP, **faults)


# --- 1. SIGKILL at a random point ------------------------------------------------------------

KILL_POINTS = {"startup": 1, "run_recorded": 2, "plan_recorded": 2, "orders": 6, "all_sent": 2}


@pytest.mark.parametrize("index", range(SIGKILL_TRIALS), ids=trial_ids)
def test_sigkill(index: int, trial: Any, tmp_path: Path, sqlite_copy: Path) -> None:
    rng = trial.rng
    universe = Universe.draw(rng)
    point = rng.choices(list(KILL_POINTS), weights=list(KILL_POINTS.values()))[0]
    latency, concurrency = rng.randint(5, 40), rng.randint(1, 4)
    with Sandbox(fresh_faults(trial.seed, latency_ms=latency)) as sandbox:
        orch = orch_at(tmp_path, sandbox, f"sqlite:///{sqlite_copy}")
        process = orch.start(*universe.run_args(), "--json", ORDER_CONCURRENCY=str(concurrency))
        with process:
            if point == "startup":
                delay = rng.uniform(0, 1.2)
                what = f"{delay:.3f}s after its start"
                with suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=delay)
            elif point == "run_recorded":
                what = "its run row"
                wait_until(process, sqlite_count(sqlite_copy, "orchestration_runs"), what)
            elif point == "plan_recorded":
                what = "its recorded plan"
                wait_until(process, sqlite_count(sqlite_copy, "signal_order_mappings"), what)
            else:
                k = universe.planned if point == "all_sent" else rng.randint(1, universe.planned)
                what = f"{k} orders at the gateway"
                wait_until(process, lambda: sandbox.state.orders_created() >= k, what)
            process.kill()
            process.communicate(timeout=PROCESS_TIMEOUT)
        print(  # noqa: T201
            f"killed at {point} ({what}), latency {latency} ms, concurrency {concurrency}, "
            f"exit {process.returncode}: {sandbox.state.orders_created()} of "
            f"{universe.planned} orders at the gateway"
        )
        sandbox.faults.latency_ms = 0  # recovery need not be slow
        finish_interrupted(orch, universe)
        ledger = read_ledger(orch.env["DATABASE_URL"])
        found = audit(trial, sandbox, ledger)
        assert_safe(found)
        assert_finished(sandbox, ledger, universe, found)


# --- 2. timeouts and dropped connections after the gateway accepted ------------------------------


@pytest.mark.parametrize("index", range(TIMEOUT_TRIALS), ids=trial_ids)
def test_timeouts(index: int, trial: Any, tmp_path: Path, sqlite_copy: Path) -> None:
    rng = trial.rng
    universe = Universe.draw(rng)
    faults = fresh_faults(
        trial.seed,
        latency_ms=rng.randint(0, 10),
        timeout_after_accept_rate=rng.uniform(0.25, 0.35),
        hang_seconds=1.0,  # longer than HTTP_TIMEOUT_SECONDS
        drop_after_accept_rate=rng.uniform(0.15, 0.25),
    )
    # One attempt: a lost answer is recorded unknown and settled by GET; three: retried first.
    attempts = rng.choice((1, 3))
    with Sandbox(faults) as sandbox:
        orch = orch_at(
            tmp_path,
            sandbox,
            f"sqlite:///{sqlite_copy}",
            HTTP_TIMEOUT_SECONDS="0.3",
            HTTP_MAX_ATTEMPTS=str(attempts),
        )
        done = orch(*universe.run_args(), "--json", ORDER_CONCURRENCY=str(rng.randint(1, 4)))
        run = run_document(done, "run")
        ledger = read_ledger(orch.env["DATABASE_URL"])
        settled = [leg for leg in ledger.orders() if "may exist" in (leg.detail or "")]
        print(  # noqa: T201
            f"{attempts} attempt(s): run exit {done.returncode}, status {run['status']}, "
            f"{sandbox.state.post_attempts} POSTs for {universe.planned} orders, "
            f"{len(settled)} lost answers settled by GET"
        )
        found = audit(trial, sandbox, ledger)
        assert_safe(found)
        # Every POST is stored before the fault hits, so each intent is at the gateway once.
        assert sandbox.state.orders_created() == len(found.planned) == universe.planned
        if attempts == 1:  # a settled order is never sent again
            assert sandbox.state.post_attempts == universe.planned
        outcomes = Counter(leg.outcome for leg in ledger.orders())
        assert set(outcomes) <= {"accepted", "unknown"}, f"never rejected: {ledger.orders()}"
        expected = (0, "completed") if outcomes["unknown"] == 0 else (3, "partial")
        assert (done.returncode, run["status"]) == expected, (outcomes, done.stderr)
        for leg in ledger.orders():
            if leg.outcome == "unknown":
                assert leg.detail, f"unknown without a reason: {leg}"

        if run["status"] != "completed":
            resumed = orch("runs", "resume", run["run_id"], "--json")
            assert resumed.returncode == 0, resumed.stderr
            assert run_document(resumed, "resume")["status"] == "completed"
        synced = orch("runs", "sync", run["run_id"], "--json")
        assert synced.returncode == 0, synced.stderr
        after_sync = run_document(synced, "sync")
        assert after_sync["status"] == "completed"
        assert after_sync["num_orders_accepted"] == universe.planned

        ledger = read_ledger(orch.env["DATABASE_URL"])
        found = audit(trial, sandbox, ledger)
        assert_safe(found)
        assert_finished(sandbox, ledger, universe, found)
        assert sandbox.state.orders_created() == universe.planned


# --- 3. bursts of 503 and 429 ------------------------------------------------------------------


@pytest.mark.parametrize("index", range(BURST_TRIALS), ids=trial_ids)
def test_bursts(index: int, trial: Any, tmp_path: Path, sqlite_copy: Path) -> None:
    rng = trial.rng
    universe = Universe.draw(rng)
    faults = fresh_faults(
        trial.seed,
        latency_ms=rng.randint(0, 5),
        error_rate=rng.uniform(0.3, 0.6),
        rate_limit_rate=rng.uniform(0.3, 0.6),
        retry_after_seconds=0,
    )
    with Sandbox(faults) as sandbox:
        orch = orch_at(tmp_path, sandbox, f"sqlite:///{sqlite_copy}")
        done = orch(*universe.run_args(), "--json", ORDER_CONCURRENCY=str(rng.randint(1, 4)))
        run = run_document(done, "run")
        print(  # noqa: T201
            f"run exit {done.returncode}, status {run['status']}, "
            f"{sandbox.state.post_attempts} POSTs, {sandbox.state.orders_created()} of "
            f"{universe.planned} orders created"
        )
        ledger = read_ledger(orch.env["DATABASE_URL"])
        found = audit(trial, sandbox, ledger)
        assert_safe(found)
        assert (done.returncode, run["status"]) in ((0, "completed"), (3, "partial")), done.stderr
        for leg in ledger.orders():
            if leg.outcome != "accepted":
                assert leg.detail, f"an order not accepted without a reason: {leg}"
                assert leg.client_order_id not in found.at_gateway or leg.outcome == "unknown"

        sandbox.faults.error_rate = sandbox.faults.rate_limit_rate = 0.0  # the burst is over
        if run["status"] != "completed":
            resumed = orch("runs", "resume", run["run_id"], "--json")
            assert resumed.returncode == 0, resumed.stderr
            assert run_document(resumed, "resume")["status"] == "completed"
        ledger = read_ledger(orch.env["DATABASE_URL"])
        found = audit(trial, sandbox, ledger)
        assert_safe(found)
        assert_finished(sandbox, ledger, universe, found)


# --- 4. two runs started at the same instant --------------------------------------------------


@pytest.mark.parametrize("index", range(RACE_TRIALS), ids=trial_ids)
def test_race(index: int, trial: Any, tmp_path: Path, sqlite_copy: Path) -> None:
    rng = trial.rng
    universe = Universe.draw(rng)
    # ~10 requests before the orders and one order at a time: the run lasts well over 1 s.
    with Sandbox(fresh_faults(trial.seed, latency_ms=rng.randint(90, 130))) as sandbox:
        orch = orch_at(tmp_path, sandbox, f"sqlite:///{sqlite_copy}", ORDER_CONCURRENCY="1")
        first = orch.start(*universe.run_args(), "--json")
        second = orch.start(*universe.run_args(), "--json")
        with first, second:
            outputs = [p.communicate(timeout=PROCESS_TIMEOUT) for p in (first, second)]
        codes = [first.returncode, second.returncode]
        print(f"exit codes {codes}")  # noqa: T201
        assert sorted(codes) == [0, 75], outputs
        winner = json.loads(outputs[codes.index(0)][0])
        loser_err = outputs[codes.index(75)][1]
        assert winner["run_id"] in loser_err, loser_err
        ledger = read_ledger(orch.env["DATABASE_URL"])
        assert [run_id for run_id, _ in ledger.runs] == [winner["run_id"]]
        found = audit(trial, sandbox, ledger)
        assert_safe(found)
        assert_finished(sandbox, ledger, universe, found)
        assert sandbox.state.post_attempts == universe.planned  # the loser sent nothing


# --- 5. the database goes away mid-run (PostgreSQL behind a proxy) ------------------------------


def proxied(url: str, port: int) -> str:
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def upstream_of(url: str) -> tuple[str, int]:
    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or 5432


def migrated(url: str) -> str:
    engine = db.make_engine(url)
    try:
        db.upgrade_database(engine)
    finally:
        engine.dispose()
    return url


@pytest.mark.postgres
@pytest.mark.parametrize("index", range(DB_STOP_TRIALS), ids=trial_ids)
def test_db_stop(
    index: int,
    trial: Any,
    tmp_path: Path,
    new_postgres_database: Callable[[], str],
    make_tcp_proxy: Callable[[tuple[str, int]], Any],
) -> None:
    rng = trial.rng
    universe = Universe.draw(rng, size=(10, 12))
    direct = migrated(new_postgres_database())
    proxy = make_tcp_proxy(upstream_of(direct))
    with Sandbox(fresh_faults(trial.seed, latency_ms=rng.randint(30, 50))) as sandbox:
        orch = orch_at(tmp_path, sandbox, direct)
        process = orch.start(
            *universe.run_args(),
            "--json",
            DATABASE_URL=proxied(direct, proxy.port),
            ORDER_CONCURRENCY=str(rng.randint(1, 2)),
        )
        k = rng.randint(1, universe.planned - 2)
        with process:
            running = wait_until(
                process, lambda: sandbox.state.orders_created() >= k, f"{k} orders"
            )
            proxy.kill()
            _, stderr = process.communicate(timeout=PROCESS_TIMEOUT)
        sent = sandbox.state.orders_created()
        print(  # noqa: T201
            f"database cut after {k} orders; orch exit {process.returncode} with {sent} of "
            f"{universe.planned} orders at the gateway; stderr: {stderr.strip()[-600:]}"
        )
        assert running, "orch finished before the database was cut"
        assert process.returncode != 0, "orch must not report success without its database"

        ledger = read_ledger(direct)
        found = audit(trial, sandbox, ledger)
        assert_safe(found)  # the plan was committed before the first order left
        ((run_id, status),) = ledger.runs
        assert status == "running", status
        resumed = orch("runs", "resume", run_id, "--json")
        assert resumed.returncode == 0, resumed.stderr
        assert run_document(resumed, "resume")["status"] == "completed"
        ledger = read_ledger(direct)
        found = audit(trial, sandbox, ledger)
        assert_safe(found)
        assert_finished(sandbox, ledger, universe, found)


@pytest.mark.postgres
@pytest.mark.parametrize("index", range(1), ids=trial_ids)
def test_db_down_at_start(
    index: int,
    trial: Any,
    tmp_path: Path,
    new_postgres_database: Callable[[], str],
    make_tcp_proxy: Callable[[tuple[str, int]], Any],
) -> None:
    universe = Universe.draw(trial.rng)
    direct = migrated(new_postgres_database())
    proxy = make_tcp_proxy(upstream_of(direct))
    proxy.kill()
    with Sandbox(fresh_faults(trial.seed)) as sandbox:
        orch = orch_at(tmp_path, sandbox, proxied(direct, proxy.port))
        done = orch(*universe.run_args())
        print(f"exit {done.returncode}: {done.stderr.strip()}")  # noqa: T201
        assert done.returncode == 1, done.stderr
        assert "database" in done.stderr.lower()
        assert sandbox.state.post_attempts == 0
        trial.found(duplicates=0, unrecorded=0)
    assert read_ledger(direct).runs == []
