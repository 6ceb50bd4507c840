"""`orch run` and the market calendar: a closed day sends nothing and contacts nothing, an
unknown calendar is refused, --ignore-calendar runs, a half day says so and stops at the close.

The subprocess tests pin their trading date with `--as-of` (a holiday in the past is closed
whatever today is); the in-process tests pin the CLI's clock.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from harness import Orch, orch_environ, settings_in
from test_render import completed_run, console_text, expected, summary_text
from typer.testing import CliRunner

from orchestrator_cli import calendars, cli, clock, render, request, runner
from orchestrator_cli.calendars import build_table
from orchestrator_cli.clock import CALENDAR_CACHE
from orchestrator_cli.request import RunRequest
from orchestrator_cli.runner import RunOutcome
from orchestrator_cli.sandbox import Sandbox, SandboxFaults
from orchestrator_cli.services import RunServices

SYMBOLS = "AAPL,MSFT,GOOGL,AMZN,TSLA"
NO_REQUESTS = {"signal": 0, "gateway": 0, "market_data": 0}
CALENDAR_ON = {"IGNORE_CALENDAR": "false"}


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A calendar cache built once for the module (XNYS, 2021-2031)."""
    path = tmp_path_factory.mktemp("calendar") / CALENDAR_CACHE
    table = build_table("XNYS", date(2021, 1, 1), date(2031, 12, 31))
    calendars._write_cache(path, calendars.library_version(), {"XNYS": table})
    return path


def with_cache(home: Path, cache: Path) -> None:
    """Put the prebuilt cache where orch looks for it (XDG_DATA_HOME=home/data)."""
    (home / "data" / "orch").mkdir(parents=True, exist_ok=True)
    shutil.copy(cache, home / "data" / "orch" / CALENDAR_CACHE)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxFaults(seed=11)) as running:
        yield running


@pytest.fixture
def orch(tmp_path: Path, sandbox: Sandbox) -> Orch:
    return Orch.at_sandbox(
        tmp_path, sandbox, f"sqlite:///{tmp_path}/orch.db", HTTP_TIMEOUT_SECONDS="5", **CALENDAR_ON
    )


# --- the real command in its own process ------------------------------------------------------


@pytest.mark.e2e
def test_thanksgiving_prints_one_line_and_contacts_nothing(
    orch: Orch, sandbox: Sandbox, tmp_path: Path
) -> None:
    done = orch("run", "--symbols", SYMBOLS, "--as-of", "2026-11-26")  # no cache yet: built
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "market closed on 2026-11-26: Thanksgiving\n",
        "",
    )
    assert sandbox.requests_seen == NO_REQUESTS
    assert sandbox.state.post_attempts == 0
    assert not (tmp_path / "orch.db").exists(), "the database was opened"
    assert (tmp_path / "data" / "orch" / CALENDAR_CACHE).exists()


@pytest.mark.e2e
def test_closed_day_json_is_one_document(
    orch: Orch, sandbox: Sandbox, tmp_path: Path, built_cache: Path
) -> None:
    with_cache(tmp_path, built_cache)
    done = orch("run", "--symbols", SYMBOLS, "--as-of", "2026-11-28", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "action": "market_closed",
        "as_of_date": "2026-11-28",
        "reason": "weekend",
        "market_calendar": "XNYS",
    }
    assert done.stderr == ""
    assert sandbox.requests_seen == NO_REQUESTS


@pytest.mark.e2e
def test_closed_day_needs_no_database(sandbox: Sandbox, tmp_path: Path, built_cache: Path) -> None:
    with_cache(tmp_path, built_cache)
    unreachable = "postgresql://orch:secret@127.0.0.1:1/trading"
    orch = Orch.at_sandbox(tmp_path, sandbox, unreachable, **CALENDAR_ON)
    done = orch("run", "--symbols", SYMBOLS, "--as-of", "2026-09-07")
    assert (done.returncode, done.stdout) == (0, "market closed on 2026-09-07: Labor Day\n")
    assert sandbox.requests_seen == NO_REQUESTS


@pytest.mark.e2e
def test_ignore_calendar_runs_on_a_holiday(
    orch: Orch, sandbox: Sandbox, tmp_path: Path, built_cache: Path
) -> None:
    with_cache(tmp_path, built_cache)
    # A real run may trade today only: the earlier holiday is planned as a dry run.
    args = ("run", "--symbols", SYMBOLS, "--as-of", "2026-11-26", "--ignore-calendar")
    code, run = orch.json(*args, "--dry-run")
    assert code == 0
    assert (run["action"], run["status"], run["as_of_date"]) == ("ran", "completed", "2026-11-26")
    assert sum(1 for m in run["mappings"] if m["client_order_id"]) > 0
    assert all(count > 0 for count in sandbox.requests_seen.values()), sandbox.requests_seen
    refused = orch(*args)
    assert refused.returncode == 4, refused.stderr
    assert "is an earlier day than today" in refused.stderr
    assert sandbox.state.orders_created() == 0


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("XNYZ", "'XNYZ' is not an exchange calendar (did you mean XNZE, XNYS?)"),
        ("X NYS", "'X NYS' is not an exchange calendar code (e.g. XNYS)"),
    ],
)
def test_unknown_calendar_exits_4_before_contacting_anything(
    orch: Orch, sandbox: Sandbox, tmp_path: Path, value: str, shown: str
) -> None:
    done = orch("run", "--symbols", SYMBOLS, MARKET_CALENDAR=value)
    assert done.returncode == 4, done.stderr
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("Error: "), line
    assert f"MARKET_CALENDAR: {shown}" in line
    assert sandbox.requests_seen == NO_REQUESTS
    assert not (tmp_path / "orch.db").exists()


@pytest.mark.e2e
def test_readme_main_job_succeeds_whatever_today_is(tmp_path: Path) -> None:
    """What CI runs after the tests: on a closed day one line and exit 0; then the audit
    view works with or without a recorded run."""
    orch = Orch(tmp_path, orch_environ(tmp_path, **CALENDAR_ON))
    done = orch("run", "--sandbox", "--symbols", SYMBOLS)
    assert done.returncode == 0, done.stderr
    closed = done.stdout.startswith("market closed on ")
    assert closed or "completed run" in done.stdout, done.stdout
    listed = orch("runs", "list", "--sandbox", "--limit", "5")
    assert listed.returncode == 0, listed.stderr
    assert ("No runs" in listed.stdout) is closed


# --- in process, the CLI's clock pinned --------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built_cache: Path) -> Iterator[Sandbox]:
    for name in settings_in(os.environ):
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/orch.db")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    with_cache(tmp_path, built_cache)
    with Sandbox(SandboxFaults(seed=5)) as running:
        monkeypatch.setenv("SIGNAL_SERVICE_URL", running.signal_url)
        monkeypatch.setenv("EXECUTION_GATEWAY_URL", running.gateway_url)
        monkeypatch.setenv("MARKET_DATA_URL", running.market_data_url)
        monkeypatch.setenv("PRICE_SOURCE", "alpaca")
        yield running


def at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    monkeypatch.setattr(clock, "utc_now", lambda: moment)


def invoke(*args: str):
    return CliRunner().invoke(cli.app, list(args))


def test_sunday_without_as_of_is_closed(env: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    at(monkeypatch, datetime(2026, 11, 29, 15, tzinfo=UTC))
    result = invoke("run", "--symbols", SYMBOLS)
    assert result.exit_code == 0, result.output
    assert result.stdout == "market closed on 2026-11-29: weekend\n"
    assert env.requests_seen == NO_REQUESTS


def test_after_the_close_is_closed(env: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    at(monkeypatch, datetime(2026, 11, 24, 21, 5, tzinfo=UTC))
    result = invoke("run", "--symbols", SYMBOLS)
    assert result.exit_code == 0, result.output
    assert result.stdout == "market closed on 2026-11-24: after the close at 16:00 EST\n"
    assert env.requests_seen == NO_REQUESTS


def test_half_day_run_says_so_and_sends_nothing_after_the_close(
    env: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's clock says 10:00 New York on the day after Thanksgiving: the market is open,
    closing at 13:00. The deadline is measured on the real clock, long after that close, so
    the cap at the close must stop every order."""
    at(monkeypatch, datetime(2026, 11, 27, 15, tzinfo=UTC))
    result = invoke("run", "--symbols", SYMBOLS, "--json")
    run = json.loads(result.stdout)
    assert run["as_of_date"] == "2026-11-27"
    orders = [m for m in run["mappings"] if m["order_qty"]]
    assert orders
    assert {m["order_status"] for m in orders} == {"not_sent"}
    details = {m.get("detail") for m in orders}
    assert details == {"not sent: the market's close at 13:00 EST passed first"}, details
    assert env.state.post_attempts == 0
    text = invoke("runs", "show", run["run_id"])
    assert "not sent: the market's close at 13:00 EST passed first" in text.stdout


def test_half_day_run_goes_ahead_with_its_deadline_at_the_close(
    env: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12:55 New York on a half day, the clock ticking: the run goes ahead, its deadline is
    the 13:00 close (five minutes, not RUN_DEADLINE_SECONDS), and its summary says so."""
    started_wall, started = datetime(2026, 11, 27, 17, 55, tzinfo=UTC), time.monotonic()

    def ticking() -> datetime:
        return started_wall + timedelta(seconds=time.monotonic() - started)

    monkeypatch.setattr(clock, "utc_now", ticking)
    monkeypatch.setattr(request, "utc_now", ticking)
    requests: list[RunRequest] = []
    execute = runner.execute_run

    def recording(run_request: RunRequest, services: RunServices) -> RunOutcome:
        requests.append(run_request)
        return execute(run_request, services)

    monkeypatch.setattr(runner, "execute_run", recording)
    result = invoke("run", "--symbols", SYMBOLS, "--deadline-seconds", "600")
    assert result.exit_code == 0, result.output
    assert "(half day: the market closes at 13:00 EST)" in result.stdout
    (execution,) = (r.execution for r in requests)
    assert execution.deadline is not None
    assert execution.deadline - started == pytest.approx(300, abs=10)
    assert execution.deadline_cause == "the market's close at 13:00 EST"
    assert env.state.orders_created() > 0

    monkeypatch.setenv("IGNORE_CALENDAR", "true")
    ignored = invoke("run", "--symbols", SYMBOLS, "--force", "--deadline-seconds", "600")
    assert ignored.exit_code == 0, ignored.output
    assert "half day" not in ignored.stdout
    assert requests[-1].execution.deadline_cause == "the run deadline (RUN_DEADLINE_SECONDS)"


def test_half_day_summary_text_exactly() -> None:
    run = completed_run()
    line = render.summary_line(run, half_day_close="13:00 EST")
    printed = console_text(lambda console: console.print(line, highlight=False), width=80)
    assert printed == expected(
        """
        completed run 5d0c7c4e-8a2b-4f1e-9c3d-7b6a5e4f3a21 alpha_baseline 2024-12-31
        (gateway: paper) (half day: the market closes at 13:00 EST): 8 signals, 4 orders
        submitted, 4 accepted, 0 rejected in 2.35s
        """
    )
    assert "half day" not in summary_text(run)


def test_resume_on_a_closed_market_sends_nothing_and_says_so(
    env: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume by hand after the close would leave its orders waiting for the next session,
    where that day's run orders again: it is refused before anything is contacted."""
    at(monkeypatch, datetime(2026, 11, 24, 21, 5, tzinfo=UTC))
    result = invoke("runs", "resume", "0123456789abcdef")
    assert result.exit_code == 4, result.output
    assert "market closed on 2026-11-24: after the close at 16:00 EST: nothing was sent" in (
        result.stderr
    )
    assert env.requests_seen == NO_REQUESTS


def test_a_broken_price_set_up_is_refused_even_on_a_closed_day(
    env: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Otherwise a cron set-up broken on Friday evening stays hidden all weekend."""
    at(monkeypatch, datetime(2026, 11, 29, 15, tzinfo=UTC))
    monkeypatch.setenv("PRICE_SOURCE", "file")
    result = invoke("run", "--symbols", SYMBOLS)
    assert result.exit_code == 4, result.output
    assert "PRICE_SOURCE=file needs PRICES_FILE" in result.stderr
    assert env.requests_seen == NO_REQUESTS
