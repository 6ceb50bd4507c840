"""What the market calendar adds to `orch run`, with and without its cache.

Each case runs the real `orch` command in its own process (median wall time of `--repeat`
runs, each in a fresh data directory unless the cache is kept) on a closed day and on an open
day, against a fresh sandbox, and compares it with the same run with the calendar ignored (or,
on the closed day, with a process stopped by a configuration error before the calendar). The
open day is made by shifting the command's clock to 10:00 New York on a recent trading day.
Then the calendar step alone is timed in this process. Usage:

    python benchmarks/calendar_benchmark.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from orchestrator_cli.clock import (
    CALENDAR_CACHE,
    MarketOpen,
    load_calendar,
    market_for_run,
    utc_now,
)
from orchestrator_cli.sandbox import Sandbox

SYMBOLS = "AAPL,MSFT,GOOGL,AMZN,TSLA"
CLOSED_DAY = "2025-11-27"  # Thanksgiving

# `orch` with its clock shifted by ORCH_BENCH_SHIFT seconds (both clocks that read the time:
# the command's, read as clock.utc_now when it runs, and the request's). The run path is
# imported first, so that every other module keeps the real clock (prices are stamped now).
SHIFTED = """
import os, sys
from datetime import timedelta
from orchestrator_cli import cli, clock, request, runner, wiring
shift = timedelta(seconds=float(os.environ["ORCH_BENCH_SHIFT"]))
real_now = clock.utc_now
clock.utc_now = request.utc_now = lambda: real_now() + shift
sys.argv[0] = "orch"
cli.main()
"""


def open_day_shift(cache: Path) -> float:
    """Seconds from now to 10:00 New York on the latest trading day before today."""
    now = utc_now()
    calendar = load_calendar("XNYS", now, cache_file=cache)
    day = now.astimezone(calendar.tz).date()
    while True:
        day -= timedelta(days=1)
        moment = datetime(day.year, day.month, day.day, 10, tzinfo=calendar.tz)
        if isinstance(market_for_run(calendar, moment.astimezone(UTC)), MarketOpen):
            return (moment - now).total_seconds()


def one_process(args: Sequence[str], home: Path, env: dict[str, str]) -> float:
    with Sandbox() as sandbox:
        variables = {
            **os.environ,
            "XDG_DATA_HOME": str(home),
            "DATABASE_URL": f"sqlite:///{home / 'bench.db'}",
            "SIGNAL_SERVICE_URL": sandbox.signal_url,
            "EXECUTION_GATEWAY_URL": sandbox.gateway_url,
            "MARKET_DATA_URL": sandbox.market_data_url,
            "PRICE_SOURCE": "alpaca",
            "LOG_LEVEL": "WARNING",
            **env,
        }
        started = time.perf_counter()
        done = subprocess.run(args, env=variables, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
    if done.returncode not in (0, 4):
        raise SystemExit(f"{args} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return wall


def case(args: Sequence[str], env: dict[str, str], *, cache: Path | None, repeat: int) -> float:
    """Median wall time; each run in a fresh data directory, given `cache` if not None."""
    walls = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as scratch:
            home = Path(scratch)
            if cache is not None:
                (home / "orch").mkdir()
                shutil.copy(cache, home / "orch" / CALENDAR_CACHE)
            walls.append(one_process(args, home, env))
    return statistics.median(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    orch = [sys.executable, "-m", "orchestrator_cli", "run", "--symbols", SYMBOLS]
    shifted = [sys.executable, "-c", SHIFTED, "run", "--symbols", SYMBOLS]
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch) / CALENDAR_CACHE
        shift = {"ORCH_BENCH_SHIFT": str(open_day_shift(cache))}
        on = {"IGNORE_CALENDAR": "false"}
        off = {"IGNORE_CALENDAR": "true"}
        closed = [*orch, "--as-of", CLOSED_DAY]
        rows = [
            ("closed day, stopped before the calendar", [*orch, "--capital", "x"], on, cache),
            ("closed day, calendar cached", closed, on, cache),
            ("closed day, no cache (first use)", closed, on, None),
            ("open day, calendar ignored", shifted, {**shift, **off}, None),
            ("open day, calendar cached", shifted, {**shift, **on}, cache),
            ("open day, no cache (first use)", shifted, {**shift, **on}, None),
        ]
        print(f"orch run --symbols {SYMBOLS}: median of {repeat} processes")
        for name, args, env, cached in rows:
            print(f"  {name:<42} {case(args, env, cache=cached, repeat=repeat):7.3f} s")
        now = utc_now()
        steps = []
        for _ in range(200):
            started = time.perf_counter()
            market_for_run(load_calendar("XNYS", now, date(2025, 11, 27), cache_file=cache), now)
            steps.append(time.perf_counter() - started)
        median = statistics.median(steps) * 1000
        print(f"  calendar step alone (cache read + decision), in process: {median:.2f} ms")


if __name__ == "__main__":
    main()
