"""End-to-end timing of `orch run` against the sandbox, by universe size and concurrency.

Each case runs the real `orch` command in its own process against a fresh sandbox with a fixed
per-request latency, on a throwaway SQLite database, and reports the wall time of the process
and the run's own `duration_seconds`. Usage:

    python benchmarks/run_benchmark.py [--symbols 50] [--latency-ms 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator_cli.sandbox import Sandbox, SandboxFaults


def one_run(symbols: int, latency_ms: int, concurrency: int) -> tuple[float, float, int]:
    universe = ",".join(f"B{i:03d}" for i in range(symbols))
    with (
        tempfile.TemporaryDirectory() as scratch,
        Sandbox(SandboxFaults(latency_ms=latency_ms)) as sb,
    ):
        env = {
            **os.environ,
            "SIGNAL_SERVICE_URL": sb.signal_url,
            "EXECUTION_GATEWAY_URL": sb.gateway_url,
            "MARKET_DATA_URL": sb.market_data_url,
            "PRICE_SOURCE": "alpaca",
            "DATABASE_URL": f"sqlite:///{Path(scratch) / 'bench.db'}",
            "ORDER_CONCURRENCY": str(concurrency),
            "LOG_LEVEL": "WARNING",
            "IGNORE_CALENDAR": "true",  # timed whatever today is
        }
        command = [sys.executable, "-m", "orchestrator_cli", "run", "--symbols", universe]
        command += ["--top-n", str(symbols // 2), "--bottom-n", str(symbols // 4), "--json"]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"orch exited {done.returncode}: {done.stderr.strip()[-500:]}")
        run = json.loads(done.stdout)
        return wall, float(run["duration_seconds"]), int(run["num_orders_submitted"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    print(f"{args.symbols} symbols, {args.latency_ms} ms latency per request, {args.repeat} runs")
    print(f"{'concurrency':>11} {'orders':>6} {'process s':>10} {'run s':>8}")
    for concurrency in args.concurrency:
        results = [one_run(args.symbols, args.latency_ms, concurrency) for _ in range(args.repeat)]
        wall = statistics.median(r[0] for r in results)
        run = statistics.median(r[1] for r in results)
        print(f"{concurrency:>11} {results[0][2]:>6} {wall:>10.3f} {run:>8.3f}")


if __name__ == "__main__":
    main()
