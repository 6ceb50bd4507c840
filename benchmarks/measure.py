"""Measuring one `orch run` as a user runs it: its own process against a fresh sandbox.

Each scenario gets a fresh sandbox (flat positions, the injected latency L on every request)
and a fresh database already at the current migration (SQLite on disk, or a throwaway
PostgreSQL database; `orch db upgrade` is run first and not timed), then the real `orch run`
command in its own process, with the user's environment scrubbed of every orch setting. The
process's wall time and peak RSS are its own (os.wait4 on its pid, from a small launcher
process); the run's duration and phases are what the run recorded (`orch runs show --json`).

Inputs are chosen so that every order is accepted: CAPITAL $10M with MAX_POSITION_SIZE $1,000
gives each of the K non-zero weights (`--top-n`/`--bottom-n`) a $1,000 target, 2 to 100
shares at the sandbox's $10-$500 prices: far below its 1,000-share position limit and its
fat-finger notional, a gross exposure of K/10,000 (under 2 up to K = 20,000).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import text
from sqlalchemy.engine import make_url

from orchestrator_cli.config import Settings
from orchestrator_cli.db import make_engine
from orchestrator_cli.sandbox import Sandbox, SandboxFaults

CAPITAL = "10000000"
MAX_POSITION_SIZE = "1000"
ORCH_SCRIPT = Path(sys.executable).with_name("orch")
ORCH = [str(ORCH_SCRIPT)] if ORCH_SCRIPT.exists() else [sys.executable, "-m", "orchestrator_cli"]


@dataclass(frozen=True)
class Scenario:
    """One `orch run`: N symbols, K orders, latency L per request, concurrency C."""

    group: str
    n: int
    k: int
    latency_ms: int
    concurrency: int
    database: str = "sqlite"  # or "postgres"
    json: bool = True
    per_minute: int | None = None  # GATEWAY_MAX_ORDERS_PER_MINUTE, and the sandbox's own cap

    @property
    def ideal(self) -> float:
        """L x ceil(K/C): the time the orders take on the wire alone."""
        return self.latency_ms / 1000 * math.ceil(self.k / self.concurrency)

    @property
    def budget(self) -> float:
        """The target for the whole process: 1.3 x ideal + 1 s."""
        return 1.3 * self.ideal + 1

    @property
    def label(self) -> str:
        output = "json" if self.json else "table"
        paced = f" paced {self.per_minute}/min" if self.per_minute else ""
        return (
            f"{self.database} {output} N={self.n:,} K={self.k:,} L={self.latency_ms}ms "
            f"C={self.concurrency}{paced}"
        )


@dataclass
class Result:
    scenario: Scenario
    wall: float = 0.0  # the orch run process, start to exit
    rss_mb: float = 0.0  # its peak resident set
    exit_code: int | None = None
    run: dict[str, Any] = field(default_factory=dict)  # `orch runs show --json`
    show_table: float | None = None  # `orch runs show ID`, median seconds
    show_json: float | None = None  # `orch runs show ID --json`, median seconds
    rejected_429: int = 0
    per_minute: float | None = None  # orders per minute at the gateway, first to last
    error: str | None = None

    @property
    def duration(self) -> float | None:
        value = self.run.get("duration_seconds")
        return None if value is None else float(value)

    @property
    def phases(self) -> dict[str, float]:
        """The run's own phase timings, when this version of orch records them."""
        value = self.run.get("phase_seconds")
        return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else {}

    @property
    def accepted_all(self) -> bool:
        wanted = self.scenario.k
        return (
            self.run.get("status") == "completed"
            and self.run.get("num_orders_submitted") == wanted
            and self.run.get("num_orders_accepted") == wanted
        )


@dataclass(frozen=True)
class Measured:
    wall: float
    rss_mb: float
    exit_code: int
    stdout: str
    stderr: str


# Starts a command from a small process and reports the command's own wall time and peak RSS.
# Linux carries a process's peak RSS across fork and exec, so a command started straight from
# the benchmark (a large process: the sandbox and its state live here) would report at least
# the benchmark's size; started from this launcher it reports its own.
LAUNCHER = """
import json, os, sys, time
report, command = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawn(command[0], command, os.environ)
_, status, usage = os.wait4(pid, 0)
ended = time.perf_counter()
with open(report, "w") as handle:
    exit_code = os.waitstatus_to_exitcode(status)
    json.dump({"wall": ended - started, "rss_kb": usage.ru_maxrss, "exit": exit_code}, handle)
"""


def measure_process(
    command: Sequence[str], env: Mapping[str, str], *, cwd: Path, timeout: float
) -> Measured:
    """Run `command` (an absolute path first) to its end: its own wall time and peak RSS.

    Output goes to files, not pipes, so a large table cannot block the process. A command
    still running after `timeout` seconds is killed (with its launcher) and reported so.
    """
    name = uuid.uuid4().hex
    out_path, err_path, report = (cwd / f"{kind}-{name}" for kind in ("out", "err", "report"))
    with out_path.open("w") as out, err_path.open("w") as err:
        launcher = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(report), *command],
            stdout=out,
            stderr=err,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,  # its own process group: a timeout kills both
        )
        try:
            launcher.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    stdout, stderr = out_path.read_text(), err_path.read_text()
    out_path.unlink()
    err_path.unlink()
    if not report.exists():
        return Measured(
            timeout, 0.0, -signal.SIGKILL, stdout, f"{stderr}\nkilled after {timeout:.0f} s"
        )
    measured = json.loads(report.read_text())
    report.unlink()
    rss_mb = measured["rss_kb"] / 1024
    return Measured(measured["wall"], rss_mb, measured["exit"], stdout, stderr)


def scrubbed_environ() -> dict[str, str]:
    """This process's environment without any variable orch reads as a setting."""
    settings = {name.upper() for name in Settings.model_fields}
    return {name: value for name, value in os.environ.items() if name.upper() not in settings}


def write_universe(directory: Path, n: int) -> Path:
    """A symbols file of N made-up tickers (the sandbox prices each at $10-$500)."""
    path = directory / f"universe-{n}.txt"
    if not path.exists():
        path.write_text("".join(f"B{i:05d}\n" for i in range(n)))
    return path


class Postgres:
    """Throwaway databases on a PostgreSQL server, each dropped after its scenario."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._admin = make_engine(url).execution_options(isolation_level="AUTOCOMMIT")

    def version(self) -> str:
        with self._admin.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar())

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        name = f"orch_bench_{uuid.uuid4().hex[:12]}"
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(self.url).set(database=name).render_as_string(hide_password=False)
        finally:
            with self._admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def database_for(scenario: Scenario, scratch: Path, postgres: Postgres | None) -> Iterator[str]:
    if scenario.database == "postgres":
        if postgres is None:
            raise RuntimeError("no PostgreSQL server (--postgres-url)")
        with postgres.database() as url:
            yield url
        return
    path = scratch / f"orch-{uuid.uuid4().hex}.db"
    try:
        yield f"sqlite:///{path}"
    finally:
        for leftover in scratch.glob(path.name + "*"):
            leftover.unlink()


def orch_environ(scenario: Scenario, sandbox: Sandbox, database_url: str, home: Path) -> dict:
    env = {
        **scrubbed_environ(),
        "XDG_DATA_HOME": str(home / "data"),  # the calendar cache and nothing else
        "SIGNAL_SERVICE_URL": sandbox.signal_url,
        "EXECUTION_GATEWAY_URL": sandbox.gateway_url,
        "MARKET_DATA_URL": sandbox.market_data_url,
        "PRICE_SOURCE": "alpaca",
        "DATABASE_URL": database_url,
        "ORDER_CONCURRENCY": str(scenario.concurrency),
        "CAPITAL": CAPITAL,
        "MAX_POSITION_SIZE": MAX_POSITION_SIZE,
        "IGNORE_CALENDAR": "true",  # timed whatever today is
        "RUN_DEADLINE_SECONDS": "3600",  # the benchmark's own timeout bounds each run
    }
    if scenario.per_minute:
        env["GATEWAY_MAX_ORDERS_PER_MINUTE"] = str(scenario.per_minute)
    return env


def orch(env: Mapping[str, str], home: Path, *args: str, timeout: float = 120) -> Measured:
    return measure_process([*ORCH, *args], env, cwd=home, timeout=timeout)


def run_scenario(
    scenario: Scenario, home: Path, *, postgres: Postgres | None, timeout: float
) -> Result:
    """Run one scenario end to end; never raises for a failed run (its error is recorded)."""
    result = Result(scenario)
    faults = SandboxFaults(latency_ms=scenario.latency_ms)
    if scenario.per_minute:
        faults.rate_limit_per_window = scenario.per_minute  # the gateway's cap, per 60 s
    universe = write_universe(home, scenario.n)
    try:
        with database_for(scenario, home, postgres) as url, Sandbox(faults) as sandbox:
            env = orch_environ(scenario, sandbox, url, home)
            upgraded = orch(env, home, "db", "upgrade")
            if upgraded.exit_code != 0:
                raise RuntimeError(f"orch db upgrade: {upgraded.stderr.strip()[-300:]}")
            top = scenario.k - scenario.k // 2
            args = ["run", "--symbols-file", str(universe), "--top-n", str(top)]
            args += ["--bottom-n", str(scenario.k // 2), *(["--json"] if scenario.json else [])]
            ran = orch(env, home, *args, timeout=timeout)
            result.wall, result.rss_mb, result.exit_code = ran.wall, ran.rss_mb, ran.exit_code
            record_run(result, env, home, ran)
            result.rejected_429 = sandbox.rate_window.rejected
            result.per_minute = gateway_rate(sandbox)
    except Exception as exc:  # one failed scenario must not lose the others' figures
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def record_run(result: Result, env: Mapping[str, str], home: Path, ran: Measured) -> None:
    """The run as recorded, and for a table run the cost of printing it."""
    listed = orch(env, home, "runs", "list", "--limit", "1", "--json")
    runs = json.loads(listed.stdout or "{}").get("runs") or []
    if not runs:
        tail = (ran.stderr.strip() or ran.stdout.strip())[-300:]
        raise RuntimeError(f"no run recorded (exit {ran.exit_code}): {tail}")
    run_id = runs[0]["run_id"]
    shown = orch(env, home, "runs", "show", run_id, "--json")
    result.run = json.loads(shown.stdout)
    if not result.accepted_all:
        result.error = (
            f"not every order accepted: {result.run.get('status')}, "
            f"{result.run.get('num_orders_accepted')}/{result.scenario.k}"
        )
    if not result.scenario.json:
        result.show_table = statistics.median(
            orch(env, home, "runs", "show", run_id).wall for _ in range(3)
        )
        result.show_json = statistics.median(
            orch(env, home, "runs", "show", run_id, "--json").wall for _ in range(3)
        )


def gateway_rate(sandbox: Sandbox) -> float | None:
    """Orders per minute as the gateway saw them, from its first order to its last."""
    stamps = sorted(
        datetime.fromisoformat(order["created_at"].replace("Z", "+00:00"))
        for order in sandbox.state.snapshot()["orders"].values()
    )
    if len(stamps) < 2:
        return None
    span = (stamps[-1] - stamps[0]).total_seconds()
    return (len(stamps) - 1) / span * 60 if span > 0 else None


def round_trip_ms(latency_ms: int, count: int = 200) -> tuple[float, float]:
    """Median and 99th-percentile round trip of an order to the sandbox gateway, in ms.

    At L = 0 this is the sandbox's own cost (a server that wrote an answer in two writes would
    show ~40 ms here: Nagle's algorithm and the delayed ACK)."""
    times = []
    with Sandbox(SandboxFaults(latency_ms=latency_ms)) as sandbox, requests.Session() as http:
        http.get(f"{sandbox.gateway_url}/health", timeout=10).raise_for_status()
        for n in range(count):
            order = {"symbol": "AAPL", "side": "buy" if n % 2 else "sell", "qty": 1}
            order["client_order_id"] = f"rt{n:022d}"
            started = time.perf_counter()
            http.post(f"{sandbox.gateway_url}/api/v1/orders", json=order, timeout=10)
            times.append(time.perf_counter() - started)
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000


def command_seconds(env: Mapping[str, str], home: Path, *args: str, repeat: int) -> list[float]:
    """Wall times of `orch ARGS` (each must exit 0)."""
    walls = []
    for _ in range(repeat):
        done = orch(env, home, *args)
        if done.exit_code != 0:
            raise RuntimeError(f"orch {' '.join(args)}: {done.stderr.strip()[-300:]}")
        walls.append(done.wall)
    return walls
