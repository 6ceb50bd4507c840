"""`orch` at scale: start-up, whole runs by phase, concurrency, output, memory and pacing.

Runs the real `orch` commands, each in its own process, against a fresh sandbox with injected
gateway latency (see measure.py for what one scenario does and why its inputs get every order
accepted), and prints a markdown report: the machine, start-up times, the sandbox's own round
trip, then one row per run with its wall time, the run's own duration and phases, orders per
second, peak RSS, the ratio to L x ceil(K/C) and the speed-up over the same run at C=1 (a
sequential baseline measured in the same invocation), and the targets met or missed.

    python benchmarks/run_benchmark.py            # the quick subset, about a minute
    python benchmarks/run_benchmark.py --full     # every scenario (tens of minutes)
    python benchmarks/run_benchmark.py --targets --runs 3  # what the targets need, median of 3
    python benchmarks/run_benchmark.py --pacing   # add the ~100 s paced run (any set)
    python benchmarks/run_benchmark.py --full --pacing --output report.md

PostgreSQL scenarios use throwaway databases on --postgres-url (default: the local server);
they are left out, with a note, when it cannot be reached.
"""

from __future__ import annotations

import argparse
import compileall
import itertools
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from measure import (
    Postgres,
    Result,
    Scenario,
    command_seconds,
    orch,
    orch_environ,
    round_trip_ms,
    run_scenario,
)

import orchestrator_cli
from orchestrator_cli.sandbox import Sandbox

QUICK_K = (10, 300)
FULL_K = (10, 300, 1000, 3000)
FULL_L = (0, 20, 100)
# Runs whose orders alone would take longer than this are left out (K=3,000 at 100 ms, C=1).
MAX_IDEAL_SECONDS = 120.0


def quick_plan(postgres: bool) -> list[Scenario]:
    plan = [Scenario("grid", 3000, k, 20, c) for k in QUICK_K for c in (1, 16)]
    plan.append(Scenario("table", 3000, 300, 20, 16, json=False))
    if postgres:
        plan += [Scenario("postgres", 3000, 300, 20, c, "postgres") for c in (1, 16)]
    return plan


def full_plan(postgres: bool) -> list[Scenario]:
    plan = [
        Scenario("grid", 3000, k, latency, c)
        for latency, k, c in itertools.product(FULL_L, FULL_K, (1, 16))
    ]
    plan += [Scenario("table", 3000, k, 20, 16, json=False) for k in FULL_K]
    plan.append(Scenario("linearity", 30000, 3000, 0, 16))  # against the grid's N=3,000, K=300
    if postgres:
        plan += [Scenario("postgres", 3000, k, 20, c, "postgres") for k in FULL_K for c in (1, 16)]
        plan.append(Scenario("postgres", 3000, 1000, 20, 16, "postgres", json=False))
    return [s for s in plan if s.ideal <= MAX_IDEAL_SECONDS]


def targets_plan(postgres: bool) -> list[Scenario]:
    """Just what the targets are judged on (a few minutes): K=300 at C=1 and C=16, K=1,000 and
    K=3,000 at C=16, and N=30,000 against N=3,000 at L=0; on both databases where they apply."""
    databases = ("sqlite", "postgres") if postgres else ("sqlite",)
    plan = [Scenario("grid", 3000, 300, 20, c) for c in (1, 16)]
    plan += [Scenario("grid", 3000, 1000, 20, 16), Scenario("grid", 3000, 3000, 20, 16)]
    plan += [Scenario("grid", 3000, 300, 0, 16), Scenario("linearity", 30000, 3000, 0, 16)]
    if "postgres" in databases:
        plan += [Scenario("postgres", 3000, 300, 20, c, "postgres") for c in (1, 16)]
        plan.append(Scenario("postgres", 3000, 1000, 20, 16, "postgres"))
    return plan


def pacing_plan() -> list[Scenario]:
    return [Scenario("pacing", 3000, 1000, 20, 16, per_minute=600)]


def run_plan(
    plan: Sequence[Scenario], home: Path, postgres: Postgres | None, timeout: float, runs: int = 1
) -> list[Result]:
    """Each scenario `runs` times; the run of median wall time stands for it (a failed run
    stands for it at once: a failure is never outvoted)."""
    results: dict[Scenario, Result] = {}
    for number, scenario in enumerate(plan, start=1):
        if scenario in results:
            continue
        print(f"[{number}/{len(plan)}] {scenario.label}", file=sys.stderr, flush=True)
        measured: list[Result] = []
        for _ in range(runs):
            result = run_scenario(scenario, home, postgres=postgres, timeout=timeout)
            print(f"    {result.error or f'{result.wall:.2f} s'}", file=sys.stderr, flush=True)
            measured.append(result)
            if result.error:
                break
        failed = [r for r in measured if r.error]
        results[scenario] = failed[0] if failed else median_run(measured)
    return list(results.values())


def median_run(measured: Sequence[Result]) -> Result:
    """The run of median wall time (the slower middle one of an even number)."""
    ordered = sorted(measured, key=lambda r: r.wall)
    return ordered[len(ordered) // 2]


# --- what the machine is ---------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine_lines(postgres: Postgres | None, postgres_note: str) -> list[str]:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    pg = postgres.version() if postgres else postgres_note
    return [
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; commit {commit()}",
        f"- machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {cpu_model()}; "
        f"load average {load} (1, 5, 15 min)",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, PostgreSQL {pg}",
        f"- orch's own modules {compile_orch()}",
    ]


def compile_orch() -> str:
    """Compile orch's modules to bytecode, as installing it (`pip install`, the Docker image)
    does. An editable install run with PYTHONDONTWRITEBYTECODE=1 (set on some machines, and in
    the image) never writes bytecode, so each `orch` process would compile orch's own source
    again: about 50 ms of start-up that an installed orch does not have."""
    package = Path(orchestrator_cli.__file__).parent
    if not compileall.compile_dir(package, quiet=1):
        return "could not all be compiled to bytecode: start-up includes compiling them"
    return "compiled to bytecode first, as an install leaves them"


# --- start-up and the sandbox ----------------------------------------------------------------


def startup_lines(home: Path, repeat: int) -> list[str]:
    """`orch --help` and `orch runs list` on an existing SQLite database with one run in it."""
    scenario = Scenario("startup", 20, 10, 0, 16)
    with Sandbox() as sandbox:
        env = orch_environ(scenario, sandbox, f"sqlite:///{home / 'startup.db'}", home)
        symbols = ",".join(f"B{i:05d}" for i in range(20))
        orch(env, home, "run", "--symbols", symbols, "--top-n", "5", "--bottom-n", "5")
        rows = []
        for args, target in ((("--help",), 0.3), (("runs", "list"), 0.5)):
            walls = command_seconds(env, home, *args, repeat=repeat)
            best, median = min(walls), statistics.median(walls)
            verdict = "met" if median < target else "missed"
            rows.append(
                f"| `orch {' '.join(args)}` | {median:.3f} | {best:.3f} | < {target} | {verdict} |"
            )
    return [
        f"Start-up (wall time of the process, {repeat} runs each; `runs list` on an existing "
        "SQLite database):",
        "",
        "| command | median s | best s | target s | |",
        "|---|---:|---:|---:|---|",
        *rows,
    ]


def round_trip_lines() -> list[str]:
    zero, zero_p99 = round_trip_ms(0)
    twenty, twenty_p99 = round_trip_ms(20)
    return [
        "Sandbox round trip of one order (POST /api/v1/orders, keep-alive, 200 in a row): "
        f"L=0: median {zero:.2f} ms, p99 {zero_p99:.2f} ms; L=20: median {twenty:.2f} ms, "
        f"p99 {twenty_p99:.2f} ms. The sandbox answers in one write with TCP_NODELAY, so it "
        "adds no Nagle/delayed-ACK stall (that would be ~40 ms at L=0).",
    ]


# --- the report ------------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def baseline_of(result: Result, results: Iterable[Result]) -> Result | None:
    """The same run at C=1, when it was measured."""
    s = result.scenario
    for other in results:
        o = other.scenario
        same = (o.n, o.k, o.latency_ms, o.database, o.json, o.per_minute)
        if o.concurrency == 1 and same == (
            s.n,
            s.k,
            s.latency_ms,
            s.database,
            s.json,
            s.per_minute,
        ):
            return other
    return None


def speedup(result: Result, results: Sequence[Result]) -> str:
    base = baseline_of(result, results)
    if base is None or base is result or base.error or result.error or not result.duration:
        return "-"
    run = (base.duration or 0) / result.duration
    return f"{base.wall / result.wall:.1f}x / {run:.1f}x"


def run_row(result: Result, results: Sequence[Result]) -> str:
    s = result.scenario
    if result.error and not result.run:
        return f"| {s.label} | failed: {result.error} |" + " |" * 10
    duration = result.duration
    submit = result.phases.get("submit") or duration
    rate = f"{s.k / submit:.0f}" if submit else "-"
    ideal = f"{result.wall / s.ideal:.2f}" if s.ideal else "-"
    within = "yes" if result.wall <= s.budget else "no"
    outside = None if duration is None else result.wall - duration
    status = result.error or "all accepted"
    return (
        f"| {s.label} | {result.wall:.2f} | {seconds(duration)} | {seconds(outside)} | "
        f"{s.ideal:.2f} | {ideal} | {s.budget:.2f} {within} | {rate} | {result.rss_mb:.0f} | "
        f"{speedup(result, results)} | {status} |"
    )


def runs_lines(results: Sequence[Result]) -> list[str]:
    return [
        "Runs (one process each; `run s` is the run's own duration_seconds, `outside` the rest "
        "of the process: interpreter start-up, imports, settings, output; `ideal` L x "
        "ceil(K/C); `budget` 1.3 x ideal + 1 s for the whole process; orders/s over the submit "
        "phase when recorded, else the run; speed-up over the same run at C=1 as wall / run):",
        "",
        "| scenario | wall s | run s | outside s | ideal s | wall/ideal | budget s | orders/s "
        "| peak RSS MB | vs C=1 | status |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
        *(run_row(r, results) for r in results),
    ]


def phases_lines(results: Sequence[Result]) -> list[str]:
    timed = [r for r in results if r.phases]
    if not timed:
        return [
            "Phases: this version of orch records no `phase_seconds` (`orch runs show --json`), "
            "so the run's time is not split by phase here."
        ]
    names = list(dict.fromkeys(name for r in timed for name in r.phases))
    rows = [
        f"| {r.scenario.label} | " + " | ".join(seconds(r.phases.get(n)) for n in names) + " |"
        for r in timed
    ]
    return [
        "Phases (seconds, as the run recorded them in `phase_seconds`):",
        "",
        "| scenario | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
        *rows,
    ]


def table_lines(results: Sequence[Result]) -> list[str]:
    shown = [r for r in results if r.show_table is not None and r.show_json is not None]
    if not shown:
        return []
    rows = [
        f"| {r.scenario.label} | {r.show_table:.2f} | {r.show_json:.2f} | "
        f"{(r.show_table or 0) - (r.show_json or 0):+.2f} |"
        for r in shown
    ]
    return [
        "Output: the table's cost is `orch runs show ID` minus `orch runs show ID --json` on "
        "the same recorded run (median of 3 each; the same process otherwise):",
        "",
        "| scenario | runs show s | runs show --json s | table - json s |",
        "|---|---:|---:|---:|",
        *rows,
    ]


def find(results: Sequence[Result], **wanted: object) -> list[Result]:
    """The results without error whose scenario has the `wanted` values (unpaced unless a
    `per_minute` is wanted)."""
    wanted = {"per_minute": None, **wanted}
    return [
        r
        for r in results
        if not r.error and all(getattr(r.scenario, k) == v for k, v in wanted.items())
    ]


def speedup_row(result: Result, base: Result | None) -> tuple[str, str, bool] | None:
    """C=16 against C=1: the submit phase (what concurrency speeds up), the run, the process.

    Met when the run (which also holds what concurrency cannot speed up: signals, prices, the
    plan, the records) is 8x faster; the process adds a fixed start-up on top."""
    if base is None or base.error or not result.duration or not base.duration:
        return None
    ratios = [
        f"{base.duration / result.duration:.1f}x run",
        f"{base.wall / result.wall:.1f}x process",
    ]
    if result.phases.get("submit") and base.phases.get("submit"):
        ratios.insert(0, f"{base.phases['submit'] / result.phases['submit']:.1f}x submit phase")
    return (
        f"K=300, L=20 ms, {result.scenario.database}: C=16 at least 8x faster than C=1 (the run)",
        ", ".join(ratios),
        base.duration / result.duration >= 8,
    )


def target_rows(results: Sequence[Result]) -> list[tuple[str, str, bool]]:
    """(target, what was measured, met) for each target the results can answer."""
    rows = []
    for database in ("sqlite", "postgres"):
        for r in find(results, n=3000, k=1000, latency_ms=20, concurrency=16, database=database):
            output = "json" if r.scenario.json else "table"
            rows.append(
                (
                    f"K=1,000 of N=3,000, L=20 ms, C=16, {database} ({output}): whole run "
                    f"<= {r.scenario.budget:.1f} s",
                    f"{r.wall:.2f} s",
                    r.wall <= r.scenario.budget,
                )
            )
    for r in find(results, n=3000, k=300, latency_ms=20, concurrency=16, json=True):
        if (row := speedup_row(r, baseline_of(r, results))) is not None:
            rows.append(row)
    planned = [r for r in find(results, n=3000, database="postgres") if "record_plan" in r.phases]
    if planned:
        slowest = max(r.phases["record_plan"] for r in planned)
        rows.append(
            (
                "recording the plan of 3,000 mappings on PostgreSQL under 0.3 s (slowest run)",
                f"{slowest:.2f} s",
                slowest < 0.3,
            )
        )
    if largest := find(results, k=3000, n=3000):
        peak = max(r.rss_mb for r in largest)
        rows.append(("peak RSS at K=3,000 under 150 MB", f"{peak:.0f} MB", peak < 150))
    small = find(results, n=3000, k=300, latency_ms=0, concurrency=16, database="sqlite", json=True)
    large = find(results, n=30000, k=3000, latency_ms=0)
    if small and large:
        ratio = large[0].wall / small[0].wall
        rows.append(
            (
                "N=30,000 (K=3,000) costs at most 10x N=3,000 (K=300), L=0",
                f"{ratio:.1f}x",
                ratio <= 10,
            )
        )
    for r in find(results, group="pacing", per_minute=600):
        rate = r.per_minute or 0
        ok = abs(rate - 600) <= 30 and r.rejected_429 == 0
        rows.append(
            (
                "GATEWAY_MAX_ORDERS_PER_MINUTE=600 over 1,000 orders: within 5%, no 429",
                f"{rate:.1f}/min at the gateway, {r.rejected_429} answered 429",
                ok,
            )
        )
    return rows


def targets_lines(results: Sequence[Result]) -> list[str]:
    rows = [f"| {t} | {m} | {'met' if ok else 'missed'} |" for t, m, ok in target_rows(results)]
    if not rows:
        return ["Targets: none of the run targets applies to these scenarios (see --full)."]
    return ["Targets:", "", "| target | measured | |", "|---|---|---|", *rows]


def report(sections: Iterable[list[str]]) -> str:
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--quick", action="store_true", help="the quick subset (default)")
    chosen.add_argument("--full", action="store_true", help="every scenario")
    chosen.add_argument("--smoke", action="store_true", help="one tiny run (the test suite's)")
    chosen.add_argument(
        "--targets", action="store_true", help="only the scenarios the targets are judged on"
    )
    parser.add_argument("--pacing", action="store_true", help="add the ~100 s paced run")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite scenarios only")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per orch process")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each start-up command")
    parser.add_argument(
        "--runs", type=int, default=1, help="runs of each scenario; the median one is reported"
    )
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    postgres, postgres_note = None, "not used"
    if not (args.no_postgres or args.smoke):
        try:
            postgres = Postgres(args.postgres_url)
            postgres.version()
        except Exception as exc:
            postgres, postgres_note = None, f"unreachable ({type(exc).__name__}): left out"
    if args.smoke:
        plan = [Scenario("smoke", 20, 4, 0, 2), Scenario("smoke", 20, 4, 0, 2, json=False)]
    elif args.full:
        plan = full_plan(postgres is not None)
    elif args.targets:
        plan = targets_plan(postgres is not None)
    else:
        plan = quick_plan(postgres is not None)
    plan += pacing_plan() if args.pacing else []
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as scratch:
        home = Path(scratch)
        machine = machine_lines(postgres, postgres_note)
        startup = startup_lines(home, 1 if args.smoke else args.repeat)
        round_trip = [] if args.smoke else round_trip_lines()
        results = run_plan(plan, home, postgres, args.timeout, max(1, args.runs))
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    text = report(
        [
            ["## orch benchmark", "", *machine, f"- load average at the end: {load}"],
            startup,
            round_trip,
            runs_lines(results),
            phases_lines(results),
            table_lines(results),
            targets_lines(results),
        ]
    )
    print(text, end="")
    if args.output:
        args.output.write_text(text)
    if any(r.error for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
