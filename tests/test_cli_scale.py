"""A large run at the command line: the table lists the orders and counts the skips,
`--all-rows` lists every mapping, and progress stays off stdout, a few lines at most."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestrator_cli import cli, runner
from orchestrator_cli.request import RunRequest
from orchestrator_cli.runner import RunOutcome
from orchestrator_cli.sandbox import Sandbox
from orchestrator_cli.services import RunServices
from orchestrator_cli.terminal import ProgressBar, ProgressLines, order_progress

UNIVERSE = ",".join(f"S{n:03d}" for n in range(1, 61))  # 60 symbols: more than 50
# Two longs and a short among 60 symbols; capped so that no order passes the gateway's
# 1,000-share position limit at the sandbox's prices (10 to 500 dollars).
LARGE_RUN = ("run", "--symbols", UNIVERSE, "--top-n", "2", "--bottom-n", "1")
LARGE_RUN_LIMITS = ("--max-position-size", "5000")


def invoke(*args: str):
    return CliRunner().invoke(cli.app, list(args))


def table_rows(stdout: str) -> list[str]:
    """The symbols of the table's rows (a wrapped row's continuation lines left out)."""
    return [line.split()[1] for line in stdout.splitlines() if line.startswith("│ S")]


def test_a_large_run_lists_its_orders_and_all_rows_lists_every_mapping(sandbox: Sandbox) -> None:
    result = invoke(*LARGE_RUN, *LARGE_RUN_LIMITS)
    assert result.exit_code == 0, result.output
    assert len(table_rows(result.stdout)) == 3
    assert "skipped: 57 zero_weight (--all-rows lists them)\n" in result.stdout
    assert sandbox.state.orders_created() == 3

    run_id = invoke("runs", "list", "--json").stdout
    (listed,) = json.loads(run_id)["runs"]
    shown = invoke("runs", "show", listed["run_id"])
    assert len(table_rows(shown.stdout)) == 3
    every = invoke("runs", "show", listed["run_id"], "--all-rows")
    assert sorted(table_rows(every.stdout)) == UNIVERSE.split(",")
    assert "skipped:" not in every.stdout
    synced = invoke("runs", "sync", listed["run_id"], "--all-rows")
    assert synced.exit_code == 0, synced.output
    assert len(table_rows(synced.stdout)) == 60


def test_orch_run_takes_all_rows(sandbox: Sandbox) -> None:
    result = invoke(*LARGE_RUN, *LARGE_RUN_LIMITS, "--dry-run", "--all-rows")
    assert result.exit_code == 0, result.output
    assert sorted(table_rows(result.stdout)) == UNIVERSE.split(",")


def test_a_run_off_a_terminal_reports_order_progress_as_log_lines(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stderr is not a terminal here (as under cron): the run's `order_progress` hook is the
    throttled log-line reporter, and nothing of it reaches stdout (the one JSON document)."""
    hooks: list[object] = []
    execute = runner.execute_run

    def recording(request: RunRequest, services: RunServices) -> RunOutcome:
        hooks.append(services.order_progress)
        return execute(request, services)

    monkeypatch.setattr(runner, "execute_run", recording)
    result = invoke(*LARGE_RUN, *LARGE_RUN_LIMITS, "--json")
    assert result.exit_code == 0, result.output
    (hook,) = hooks
    assert isinstance(hook, ProgressLines)
    assert json.loads(result.stdout)["num_orders_submitted"] == 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_order_progress_off_a_terminal_is_a_line_every_few_seconds() -> None:
    """1,000 answers over 12 seconds: a line at 5 s, one at 10 s and the last count."""
    clock, lines = FakeClock(), []
    report = ProgressLines(lines.append, interval=5.0, clock=clock)
    for done in range(1, 1001):
        report(done, 1000)
        clock.now += 0.012
    assert lines == ["sent 418/1,000 orders", "sent 835/1,000 orders", "sent 1,000/1,000 orders"]


def test_order_progress_of_a_quick_run_writes_nothing() -> None:
    clock, lines = FakeClock(), []
    report = ProgressLines(lines.append, interval=5.0, clock=clock)
    for done in range(1, 301):
        report(done, 300)
        clock.now += 0.01
    assert lines == []


def test_order_progress_on_a_terminal_is_a_bar_that_never_writes_to_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    screen = Console(file=io.StringIO(), force_terminal=True, width=80)
    bar = ProgressBar(screen)
    for done in range(1, 4):
        bar(done, 3)
    bar.close()
    assert "sending orders" in screen.file.getvalue()
    assert "3/3" in screen.file.getvalue()
    assert capsys.readouterr().out == ""
    with order_progress(interactive=True, log=print) as report:
        assert isinstance(report, ProgressBar)
    with order_progress(interactive=False, log=print) as report:
        assert isinstance(report, ProgressLines)


def test_off_a_terminal_the_width_is_columns_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator_cli.terminal import LOG_WIDTH, console_width

    log = io.StringIO()  # not a terminal: a cron log, a pipe
    monkeypatch.delenv("COLUMNS", raising=False)
    assert console_width(log) == LOG_WIDTH
    monkeypatch.setenv("COLUMNS", "96")
    assert console_width(log) == 96
    # Not a width any table fits, or not a number Rich reads: the log's own width.
    for columns in ("0", "5", "79", " 90", "wide", "-100"):
        monkeypatch.setenv("COLUMNS", columns)
        assert console_width(log) == LOG_WIDTH, columns


def test_on_a_terminal_a_columns_no_table_fits_gives_way_to_its_width(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fcntl
    import os
    import struct
    import termios

    from orchestrator_cli.terminal import console_width

    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    with open(leader, "wb", buffering=0), open(follower, "w") as terminal:
        monkeypatch.delenv("COLUMNS", raising=False)
        assert console_width(terminal) is None  # Rich measures it (and follows a resize)
        monkeypatch.setenv("COLUMNS", "120")
        assert console_width(terminal) is None  # Rich takes a usable COLUMNS itself
        monkeypatch.setenv("COLUMNS", "0")  # Rich would lay out 0 columns: nothing printed
        assert console_width(terminal) == 100
