"""Start-up: what `orch --help` and `orch runs list` import.

Most of their time is import time (SQLAlchemy alone takes a quarter of a second), so each
command imports only what it uses. Each case runs the real command in a fresh interpreter
and reads the modules it had loaded when it exited. Timings are the benchmark's job
(`benchmarks/run_benchmark.py`), never a test's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from harness import orch_environ

from orchestrator_cli import calendars
from orchestrator_cli.clock import CALENDAR_CACHE

# Runs `orch` with the given arguments and, at exit, writes the names of the loaded modules.
PROBE = """
import atexit, json, sys
target = sys.argv[1]
atexit.register(lambda: open(target, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["orch", *sys.argv[2:]]
from orchestrator_cli.cli import main
main()
"""
# What no command that neither sends orders nor migrates needs.
RUN_PATH = (
    "requests",
    "urllib3",
    "alembic",
    "orchestrator_cli.runner",
    "orchestrator_cli.wiring",
    "orchestrator_cli.submission",
    "orchestrator_cli.gateway",
    "orchestrator_cli.sandbox",
    "exchange_calendars",
    "pandas",
)


def loaded_modules(
    tmp_path: Path, *args: str, **variables: str
) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    listing = tmp_path / "modules.json"
    env = orch_environ(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/orch.db", **variables)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(listing), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(listing.read_text())), done


def imported(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The modules of `packages` (a package or any module under it) that were loaded."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


@pytest.mark.parametrize("args", [("--help",), ("run", "--help"), ("runs", "--help")])
def test_help_loads_no_database_http_client_runner_or_sandbox(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    modules, done = loaded_modules(tmp_path, *args)
    assert "Usage" in done.stdout
    assert (
        imported(modules, ("sqlalchemy", "pydantic_settings", "orchestrator_cli.db", *RUN_PATH))
        == []
    )


def test_runs_list_loads_no_http_client_runner_or_migrations(tmp_path: Path) -> None:
    """On an existing database (a new SQLite file is migrated first, which needs Alembic)."""
    loaded_modules(tmp_path, "runs", "list")
    modules, done = loaded_modules(tmp_path, "runs", "list")
    assert "No runs at offset 0 (0 in all)" in done.stdout
    assert "sqlalchemy" in modules  # it did read the database
    assert imported(modules, RUN_PATH) == []
    assert imported(modules, ("sqlalchemy.dialects.postgresql",)) == []  # SQLite's only


def test_a_closed_market_loads_no_runner_or_database(tmp_path: Path) -> None:
    """A holiday's `orch run` stops before the run path: it neither contacts nor loads it. It
    does build the price source (an HTTP client) to refuse a broken set-up, and drops it."""
    cache = tmp_path / "data" / "orch" / CALENDAR_CACHE
    cache.parent.mkdir(parents=True)
    table = calendars.build_table("XNYS", date(2021, 1, 1), date(2031, 12, 31))
    calendars._write_cache(cache, calendars.library_version(), {"XNYS": table})
    modules, done = loaded_modules(
        tmp_path,
        "run",
        "--symbols",
        "AAPL",
        "--as-of",
        "2025-12-25",
        IGNORE_CALENDAR="false",
        ALPACA_API_KEY_ID="key-id",  # a working price set-up: a broken one is refused (exit 4)
        ALPACA_API_SECRET_KEY="secret",
    )
    assert done.stdout == "market closed on 2025-12-25: Christmas\n"
    run_path = [m for m in RUN_PATH if m not in ("requests", "urllib3")]
    assert imported(modules, (*run_path, "orchestrator_cli.db")) == []
