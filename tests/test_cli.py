"""The CLI surface: one test per exit code, configuration precedence, output discipline."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator_cli import cli, runner
from orchestrator_cli.errors import RunInterrupted
from orchestrator_cli.sandbox import Sandbox


def invoke(*args: str):
    return CliRunner().invoke(cli.app, list(args))


def test_completed_run_exits_0(sandbox: Sandbox) -> None:
    result = invoke("run", "--symbols", "AAPL,MSFT,GOOGL")
    assert result.exit_code == 0, result.output
    assert "completed" in result.stdout


def test_failed_run_exits_1(sandbox: Sandbox) -> None:
    sandbox.faults.signal_fault = "http_500"
    result = invoke("run", "--symbols", "AAPL,MSFT,GOOGL")
    assert result.exit_code == 1, result.output
    assert "failed" in result.stdout
    assert "HTTP 500" in result.stdout or "500" in result.stdout


def test_usage_error_exits_2(env: Path) -> None:
    result = invoke("run", "--no-such-flag")
    assert result.exit_code == 2, result.output


def test_partial_run_exits_3(sandbox: Sandbox) -> None:
    sandbox.faults.kill_switch_after_orders = 1
    result = invoke("run", "--symbols", "AAPL,MSFT,GOOGL,AMZN,TSLA")
    assert result.exit_code == 3, result.output
    assert "partial" in result.stdout


@pytest.mark.parametrize(
    ("args", "variables", "named"),
    [
        (["run", "--symbols", "AAPL"], {"CAPITAL": "abc"}, "CAPITAL"),
        (["run", "--symbols", "AAPL", "--capital", "-5"], {}, "--capital"),
        (["run", "--symbols", "AAPL"], {"MAX_POSITION_SIZE": "0"}, "MAX_POSITION_SIZE"),
        (["run", "--symbols", "AAPL"], {"PRICE_SOURCE": "bloomberg"}, "PRICE_SOURCE"),
        (["run", "--symbols", "AAPL"], {"SIGNAL_SERVICE_URL": "localhost"}, "SIGNAL_SERVICE_URL"),
        (["run", "--symbols", "AAPL"], {"HTTP_TIMEOUT_SECONDS": "0"}, "HTTP_TIMEOUT_SECONDS"),
        (["run", "--symbols", "AAPL"], {"PRICE_SOURCE": "file"}, "PRICES_FILE"),
        (["run", "--symbols", "AAPL"], {"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        (
            ["runs", "list"],
            {"DATABASE_URL": "postgresql://u:pw@127.0.0.1:notaport/x"},
            "DATABASE_URL",
        ),
        (["run", "--symbols", "AAPL"], {"CAPITAL": "0.001"}, "CAPITAL"),
        (["run", "--symbols", "AAPL"], {"CAPITAL": "1e18"}, "CAPITAL"),
        (["run", "--symbols", "AAPL"], {"SIGNAL_SERVICE_URL": "http://host name"}, "URL"),
        (["run", "--symbols", "AAPL", "--as-of", "2999-01-04"], {}, "--as-of"),
        (["run", "--symbols", "AAPL", "--as-of", "31/12/2024"], {}, "--as-of"),
        (["run", "--symbols", "AA PL"], {}, "symbol"),
        (["run"], {}, "--symbols"),
        (["run", "--symbols-file", "missing.txt"], {}, "--symbols-file"),
        (["runs", "list", "--status", "great"], {}, "--status"),
        (["runs", "show", "ffffffff"], {}, "orch runs list"),
    ],
)
def test_invalid_input_exits_4_naming_the_culprit(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    variables: dict[str, str],
    named: str,
) -> None:
    monkeypatch.setenv("MARKET_DATA_URL", "http://127.0.0.1:9")  # no credentials needed
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    result = invoke(*args)
    assert result.exit_code == 4, result.output
    assert named in result.stderr
    assert result.stderr.startswith("Error:")
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--symbols", "AA PL", "--json"],
        ["runs", "list", "--status", "great", "--json"],
        ["runs", "show", "ffffffff", "--json"],
    ],
)
def test_under_json_an_error_is_the_one_document_on_stdout(env: Path, args: list[str]) -> None:
    """A script reading `orch ... --json` always gets one JSON document, errors included."""
    result = invoke(*args)
    assert result.exit_code == 4, result.output
    document = json.loads(result.stdout)
    assert document["exit_code"] == 4
    assert result.stderr.strip() == f"Error: {document['error']}"


def test_alpaca_without_credentials_exits_4(env: Path) -> None:
    result = invoke("run", "--symbols", "AAPL")
    assert result.exit_code == 4, result.output
    assert "ALPACA_API_KEY_ID" in result.stderr


def test_internal_error_exits_70_without_traceback(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(runner, "execute_run", broken)
    result = invoke("run", "--symbols", "AAPL")
    assert result.exit_code == 70, result.output
    assert "internal error" in result.stderr
    assert "Traceback" not in result.output


def test_unreachable_database_exits_1_with_password_masked(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://orch:hunter2@127.0.0.1:1/trading")
    result = invoke("run", "--symbols", "AAPL")
    assert result.exit_code == 1, result.output
    assert "hunter2" not in result.output
    assert "***" in result.stderr
    assert sandbox.state.post_attempts == 0


def test_flag_beats_env_beats_dotenv(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("CAPITAL=1000\nMAX_POSITION_SIZE=50000\nSTRATEGY_ID=from_dotenv\n")
    sandbox.faults.signal_strategy = "from_dotenv"  # the Signal Service serves that strategy
    monkeypatch.setenv("CAPITAL", "2000")
    args = ("run", "--symbols", "AAPL", "--top-n", "1", "--bottom-n", "0", "--json")
    result = invoke(*args, "--capital", "3000")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    price = sandbox.state.price_of("AAPL")
    assert run["mappings"][0]["target_qty"] == int(3000 // price)
    assert run["strategy_id"] == "from_dotenv"


def test_json_output_is_exactly_one_document(sandbox: Sandbox) -> None:
    result = invoke("run", "--symbols", "AAPL,MSFT", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["status"] == "completed"
    assert next(iter(document)) == "action"  # what orch did comes first, then the run
    listed = invoke("runs", "list", "--json")
    page = json.loads(listed.stdout)
    assert (page["total"], page["limit"], page["offset"]) == (1, 50, 0)
    assert page["runs"][0]["run_id"] == document["run_id"]


def test_runs_show_accepts_a_unique_prefix(sandbox: Sandbox) -> None:
    run = json.loads(invoke("run", "--symbols", "AAPL", "--json").stdout)
    result = invoke("runs", "show", run["run_id"][:6], "--json")
    assert result.exit_code == 0, result.output
    assert run.pop("action") == "ran"  # orch run says what it did; the record is the same
    assert json.loads(result.stdout) == run


def test_dry_run_flag_sends_nothing(sandbox: Sandbox) -> None:
    result = invoke("run", "--symbols", "AAPL,MSFT,GOOGL", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dry_run"] is True
    assert sandbox.state.post_attempts == 0


def test_run_in_progress_exits_75_naming_it(sandbox: Sandbox, env: Path) -> None:
    from datetime import UTC, datetime

    from orchestrator_cli import db
    from orchestrator_cli.models import RunLockRow
    from orchestrator_cli.runner import trading_date

    engine = db.make_engine(f"sqlite:///{env}/orch.db")
    db.prepare_database(engine)
    now = datetime.now(UTC)
    holder_run = "0f0e0d0c-0b0a-4909-8807-060504030201"
    with db.make_session_factory(engine).begin() as session:
        session.add(
            RunLockRow(
                strategy_id="alpha_baseline",
                as_of_date=trading_date(now),
                run_id=uuid.UUID(holder_run),
                holder="another-host:1234",
                acquired_at=now,
                heartbeat_at=now,
            )
        )
    engine.dispose()
    result = invoke("run", "--symbols", "AAPL")
    assert result.exit_code == 75, result.output
    assert holder_run in result.stderr
    assert sandbox.state.post_attempts == 0


def test_runs_sync_and_resume_on_a_finished_run(sandbox: Sandbox) -> None:
    run = json.loads(invoke("run", "--symbols", "AAPL,MSFT,GOOGL", "--json").stdout)
    synced = invoke("runs", "sync", run["run_id"][:8], "--json")
    assert synced.exit_code == 0, synced.output
    document = json.loads(synced.stdout)
    assert document["status"] == "completed"
    assert {m["order_status"] for m in document["mappings"] if m["client_order_id"]} == {"filled"}
    assert all(
        m["filled_qty"] == m["order_qty"] for m in document["mappings"] if m["client_order_id"]
    )
    resumed = invoke("runs", "resume", run["run_id"])
    assert resumed.exit_code == 0, resumed.output
    assert "completed" in resumed.stdout
    assert sandbox.state.orders_created() == run["num_orders_submitted"]


def test_text_that_looks_like_markup_is_printed_as_written(env: Path) -> None:
    result = invoke("runs", "show", "[/red]")
    assert result.exit_code == 4, result.output
    assert "'[/red]' is not a run id" in result.stderr


def test_a_misspelt_setting_in_env_file_is_named_with_the_nearest_one(env: Path) -> None:
    (env / ".env").write_text("CAPTIAL=50000\nSOMETHING_ELSE=1\n")
    result = invoke("runs", "list")
    assert result.exit_code == 0, result.output
    assert "'CAPTIAL' is not a setting and is ignored; did you mean CAPITAL?" in result.stderr
    assert "SOMETHING_ELSE" not in result.stderr  # other programs' variables are left alone


def test_already_completed_names_what_differs_and_the_way_to_apply_it(sandbox: Sandbox) -> None:
    first = invoke("run", "--symbols", "AAPL,MSFT,GOOGL")
    assert first.exit_code == 0, first.output
    again = invoke("run", "--symbols", "AAPL,MSFT,GOOGL", "--capital", "50000")
    assert again.exit_code == 0, again.output
    differs = "already completed with other inputs (capital 100000.00 there, 50000 now)"
    assert differs in again.stdout
    assert "`orch run --force` with these inputs" in again.stdout


def test_sync_that_cannot_reach_the_gateway_exits_1_and_says_what(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = invoke("run", "--symbols", "AAPL,MSFT,GOOGL", "--json")
    assert done.exit_code == 0, done.output
    run_id = json.loads(done.stdout)["run_id"]
    monkeypatch.setenv("EXECUTION_GATEWAY_URL", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("HTTP_MAX_ATTEMPTS", "1")
    synced = invoke("runs", "sync", run_id)
    assert synced.exit_code == 1, synced.output
    orders = sum(1 for m in json.loads(done.stdout)["mappings"] if m["client_order_id"])
    assert f"could not settle {orders} of {orders} orders" in synced.stderr
    assert f"`orch runs sync {run_id}` again" in synced.stderr
    as_json = invoke("runs", "sync", run_id, "--json")  # the run is the one document
    assert as_json.exit_code == 1, as_json.output
    assert json.loads(as_json.stdout)["run_id"] == run_id


def test_the_summary_and_the_run_show_what_it_ran_with(sandbox: Sandbox) -> None:
    result = invoke("run", "--symbols", "AAPL,MSFT,GOOGL", "--json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert (run["num_symbols"], run["capital"], run["max_position_size"]) == (
        3,
        "100000.00",
        "20000.00",
    )
    assert run["price_source"] == "alpaca"
    shown = invoke("runs", "show", run["run_id"])
    assert "3 symbols, capital $100,000.00, cap $20,000.00, prices alpaca" in shown.stdout


def test_an_interrupt_while_printing_a_recorded_run_keeps_the_runs_exit_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C just as a completed run is printed: cron must still see 0, not 1."""
    import typer

    from orchestrator_cli import render
    from orchestrator_cli.runner import RunOutcome
    from orchestrator_cli.schemas import RunResult

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(render, "print_run", interrupted)
    result = RunResult(
        run_id=uuid.uuid4(),
        strategy_id="alpha_baseline",
        as_of_date="2024-12-31",
        status="completed",
        dry_run=False,
        num_signals=0,
        num_orders_submitted=0,
        num_orders_accepted=0,
        num_orders_rejected=0,
        duration_seconds=0.1,
        error_message=None,
    )
    with pytest.raises(typer.Exit) as exited:
        cli.show_outcome(RunOutcome(result, "ran"), json_output=False)
    assert exited.value.exit_code == 0


@pytest.mark.parametrize(
    ("params", "again", "resume"),
    [
        ({}, "`orch run` again (same arguments)", "`orch runs resume RID`"),
        ({"sandbox": True}, "`orch run --sandbox` again", "`orch runs resume RID --sandbox`"),
        ({"force": True}, "`orch run` again without --force", "`orch runs resume RID`"),
    ],
)
def test_an_interrupt_names_the_command_that_finishes_this_run(
    params: dict[str, Any], again: str, resume: str
) -> None:
    """A sandbox run is finished in the sandbox's database; a forced run run again with
    --force would abandon it and plan anew instead of finishing it."""
    ctx = SimpleNamespace(params=params)
    text = cli.interrupted_text(ctx, RunInterrupted("RID"))  # type: ignore[arg-type]
    assert again in text
    assert f"{resume} settles and finishes the run" in text


def test_sync_against_a_gateway_that_never_saw_the_orders_exits_1_and_keeps_them(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orders the gateway accepted, looked up at another gateway (one that says 404 to each):
    not "never arrived" and not quietly accepted either, but named, with their records kept."""
    done = invoke("run", "--symbols", "AAPL,MSFT,GOOGL", "--json")
    assert done.exit_code == 0, done.output
    run = json.loads(done.stdout)
    orders = [m for m in run["mappings"] if m["client_order_id"]]
    with Sandbox() as other:
        monkeypatch.setenv("EXECUTION_GATEWAY_URL", other.gateway_url)
        synced = invoke("runs", "sync", run["run_id"], "--json")
    assert synced.exit_code == 1, synced.output
    assert json.loads(synced.stdout)["num_orders_accepted"] == run["num_orders_accepted"]
    assert f"could not settle {len(orders)} of {len(orders)} orders" in synced.stderr
    assert "which now has no order with this id (is EXECUTION_GATEWAY_URL" in synced.stderr
