"""The monitoring pieces on their own: settings, JSON log lines, messages, metrics, observe()."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import typer
from prometheus_client import generate_latest

from orchestrator_cli import logs, metrics, notify, ops
from orchestrator_cli.config import Settings, load_settings
from orchestrator_cli.errors import ConfigError, RunInterrupted, ServiceError
from orchestrator_cli.schemas import MappingResult, RunResult

RUN_ID = uuid.UUID("11111111-2222-3333-4444-555555555555")


def order(symbol: str, status: str | None, detail: str | None = None, **changes: Any):
    fields: dict[str, Any] = {
        "symbol": symbol,
        "predicted_return": None,
        "rank": None,
        "target_weight": None,
        "price": None,
        "current_qty": 0,
        "target_qty": 10,
        "order_qty": 10 if status else None,
        "order_side": "buy" if status else None,
        "client_order_id": f"id-{symbol}" if status else None,
        "order_status": status,
        "skip_reason": None,
        "detail": detail,
    }
    return MappingResult(**{**fields, **changes})


def result(status: str, mappings: list[MappingResult], **changes: Any) -> RunResult:
    fields: dict[str, Any] = {
        "run_id": RUN_ID,
        "strategy_id": "alpha_baseline",
        "as_of_date": date(2025, 3, 3),
        "status": status,
        "dry_run": False,
        "num_signals": len(mappings),
        "num_orders_submitted": 0,
        "num_orders_accepted": 0,
        "num_orders_rejected": 0,
        "duration_seconds": 1.0,
        "error_message": None,
        "mappings": mappings,
    }
    return RunResult(**{**fields, **changes})


def finished(run: RunResult | None, code: int, **changes: Any) -> ops.Finished:
    return ops.Finished(
        strategy_id="alpha_baseline",
        exit_code=code,
        seconds=2.5,
        ended_at=1_700_000_000.0,
        result=run,
        **changes,
    )


PARTIAL = result(
    "partial",
    [
        order("AAPL", "filled"),
        order("MSFT", "rejected", "insufficient buying power <!channel> & <https://x|click>"),
        order("TSLA", "not_sent", "not sent: run deadline passed first"),
        order("GME", None, skip_reason="restricted"),
    ],
    num_orders_accepted=1,
    num_orders_rejected=1,
    error_message="1 of 3 orders rejected",
)


@pytest.fixture(autouse=True)
def _no_run_context() -> Any:
    yield
    logs.reset()


# --- settings ----------------------------------------------------------------------------------


@pytest.fixture
def clean(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    return tmp_path


def test_monitoring_is_off_by_default(clean) -> None:
    settings = load_settings()
    assert settings.log_format == "text"
    assert settings.notify_on == "problems"
    assert not ops.is_active(settings)


@pytest.mark.parametrize(
    ("variable", "bad", "expected"),
    [
        ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ("NOTIFY_ON", "sometimes", "NOTIFY_ON"),
        ("PUSHGATEWAY_URL", "gateway:9091", "PUSHGATEWAY_URL: not an http(s) URL"),
        ("METRICS_FILE", "/no/such/dir/orch.prom", "the directory /no/such/dir does not exist"),
    ],
)
def test_bad_monitoring_settings_are_refused_by_name(clean, monkeypatch, variable, bad, expected):
    monkeypatch.setenv(variable, bad)
    with pytest.raises(ConfigError, match=r"^invalid configuration: ") as caught:
        load_settings()
    assert expected in str(caught.value)


def test_a_secret_url_is_never_echoed(clean, monkeypatch) -> None:
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "hooks.slack.com/services/T0/B0/sekrit")
    with pytest.raises(ConfigError, match="NOTIFY_WEBHOOK_URL: not an http") as caught:
        load_settings()
    assert "sekrit" not in str(caught.value)


def test_metrics_without_the_extra_are_refused_at_start(clean, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "prometheus_client" else real(name, *a),
    )
    monkeypatch.setenv("METRICS_FILE", str(clean / "orch.prom"))
    with pytest.raises(ConfigError, match=r"METRICS_FILE: needs prometheus_client: pip install"):
        load_settings()


def test_secret_urls_stay_out_of_the_run_record(clean, monkeypatch) -> None:
    from orchestrator_cli.request import settings_snapshot

    monkeypatch.setenv("HEARTBEAT_URL", "https://hc-ping.com/sekrit-uuid")
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "https://hooks.example/sekrit-hook")
    snapshot = json.dumps(settings_snapshot(load_settings()))
    assert "sekrit" not in snapshot


# --- JSON log lines ----------------------------------------------------------------------------


def test_a_json_line_carries_the_run_and_the_known_extras() -> None:
    formatter = logs.formatter("json", logging.Formatter())
    logs.bind(run_id=RUN_ID, strategy_id="s1", as_of_date=date(2025, 3, 3))
    record = logging.LogRecord("orchestrator_cli", logging.INFO, "x", 1, "sent %s", (3,), None)
    record.phase = "submit"
    record.unrelated = "kept out"
    line = json.loads(formatter.format(record))
    assert line["msg"] == "sent 3"
    assert line["level"] == "INFO"
    assert line["run_id"] == str(RUN_ID)
    assert line["as_of_date"] == "2025-03-03"
    assert line["phase"] == "submit"
    assert "unrelated" not in line
    logs.reset()
    assert not logs.is_structured()
    assert "run_id" not in json.loads(logs.JsonFormatter().format(record))


def test_a_multiline_message_stays_one_line() -> None:
    record = logging.LogRecord("x", logging.ERROR, "x", 1, "a\nb", (), None)
    assert "\n" not in logs.JsonFormatter().format(record)


def test_an_unwritable_log_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="LOG_FILE"):
        logs.file_handlers(tmp_path, logging.Formatter())  # a directory


# --- the notification --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notify_on", "status", "code", "expected"),
    [
        ("problems", "completed", 0, False),
        ("problems", "partial", 3, True),
        ("problems", None, 75, True),
        ("problems", None, 0, False),  # the market closed
        ("always", "completed", 0, True),
        ("never", "failed", 1, False),
    ],
)
def test_when_a_notification_is_sent(notify_on, status, code, expected) -> None:
    run = None if status is None else result(status, [])
    assert notify.should_notify(notify_on, finished(run, code)) is expected


def test_the_message_names_the_run_its_problems_and_how_to_finish_it() -> None:
    text = notify.message(finished(PARTIAL, 3))
    lines = text.splitlines()
    assert lines[0] == (
        "orch run alpha_baseline 2025-03-03: partial (exit 3), 4 signals; orders: 1 accepted, "
        "1 rejected, 0 blocked, 0 unknown, 1 not sent, 1 skipped"
    )
    assert "error: 1 of 3 orders rejected" in lines
    # Service text is data: no Slack mention or link survives.
    assert (
        "- buy 10 MSFT rejected: insufficient buying power &lt;!channel&gt; &amp; "
        "&lt;https://x|click&gt;"
    ) in lines
    assert "- buy 10 TSLA not_sent: not sent: run deadline passed first" in lines
    assert lines[-1] == f"to finish: orch runs resume {RUN_ID}"


def test_a_day_already_done_says_so() -> None:
    """NOTIFY_ON=always and a second cron line: the message must not read as a new run."""
    done = result("completed", [order("MSFT", "filled")], num_orders_accepted=1)
    first = notify.message(finished(done, 0, action="ran")).splitlines()[0]
    again = notify.message(finished(done, 0, action="already_completed")).splitlines()[0]
    assert first.startswith("orch run alpha_baseline 2025-03-03: completed (exit 0)")
    assert again.startswith(
        "orch run alpha_baseline 2025-03-03: completed earlier; nothing was done now (exit 0)"
    )


def test_a_run_with_nothing_left_to_send_has_no_resume_step() -> None:
    rejected = result("failed", [order("MSFT", "rejected")], num_orders_rejected=1)
    assert "orch runs resume" not in notify.message(finished(rejected, 1))


def test_an_interrupted_run_or_an_error_without_a_run() -> None:
    text = notify.message(finished(None, 1, interrupted_run="abc", error=None))
    assert text.splitlines()[-1] == "to finish: orch runs resume abc"
    text = notify.message(finished(None, 75, error="another run <b> holds the lock"))
    assert text.splitlines() == [
        "orch run alpha_baseline: exit 75, no run recorded",
        "error: another run &lt;b&gt; holds the lock",
    ]


def test_the_body_is_slack_json(rsps) -> None:
    rsps.post("https://hooks.example/T/B/sekrit", json={})
    assert notify.post("https://hooks.example/T/B/sekrit", 'say "hi"\n')
    assert json.loads(rsps.calls[0].request.body) == {"text": 'say "hi"\n'}


# --- metrics -----------------------------------------------------------------------------------


def test_order_outcomes_count_every_mapping() -> None:
    assert ops.order_outcomes(PARTIAL) == {
        "accepted": 1,
        "rejected": 1,
        "blocked": 0,
        "unknown": 0,
        "not_sent": 1,
        "skipped": 1,
    }


def test_phases_become_duration_series(tmp_path) -> None:
    timed = PARTIAL.model_copy(update={"phase_seconds": {"signals": 0.5, "submit": 1.25}})
    observation = ops.Observation()
    observation.record(timed)
    done = ops._finished(active(tmp_path), observation, typer.Exit(3), 2.5)
    assert done.phase_seconds == {"signals": 0.5, "submit": 1.25}
    text = generate_latest(metrics.registry_for(done, None)).decode()
    assert 'orch_run_duration_seconds{phase="submit",strategy_id="alpha_baseline"} 1.25' in text
    assert 'orch_run_duration_seconds{phase="total",strategy_id="alpha_baseline"} 2.5' in text
    assert "last_success" not in text


def test_a_damaged_previous_file_loses_only_the_last_success(tmp_path, caplog) -> None:
    path = tmp_path / "orch.prom"
    path.write_text("orch_run_last_success_timestamp_seconds{strategy_id= garbage\n")
    metrics.write_textfile(path, finished(PARTIAL, 3))
    assert "not in the Prometheus text format" in caplog.text
    assert "orch_run_exit_code" in path.read_text()


def test_an_unwritable_metrics_file_warns(tmp_path, monkeypatch, caplog) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(metrics, "write_to_textfile", refuse)
    metrics.write_textfile(tmp_path / "orch.prom", finished(PARTIAL, 3))
    assert "cannot write METRICS_FILE" in caplog.text


# --- observe() ---------------------------------------------------------------------------------


def active(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, log_format="json")  # active, contacts nothing


@pytest.mark.parametrize(
    ("raised", "code", "error", "interrupted"),
    [
        (typer.Exit(3), 3, None, None),
        (ServiceError("gateway down"), 1, "gateway down", None),
        (RunInterrupted("r-1"), 1, None, "r-1"),
        (RuntimeError("bug"), 70, None, None),
    ],
)
def test_observe_learns_the_exit_and_reraises_unchanged(
    tmp_path, monkeypatch, raised, code, error, interrupted
) -> None:
    seen: list[ops.Finished] = []
    monkeypatch.setattr(ops, "report", lambda settings, done: seen.append(done))
    with pytest.raises(type(raised)) as caught, ops.observe(active(tmp_path)):
        raise raised
    assert caught.value is raised
    (done,) = seen
    assert (done.exit_code, done.error, done.interrupted_run) == (code, error, interrupted)


def test_observe_sees_the_error_behind_handle_errors_exit(tmp_path, monkeypatch) -> None:
    seen: list[ops.Finished] = []
    monkeypatch.setattr(ops, "report", lambda settings, done: seen.append(done))

    def fail_as_handle_errors_does() -> None:
        try:
            raise ConfigError("bad symbols")
        except ConfigError as exc:
            raise typer.Exit(exc.exit_code) from None

    with pytest.raises(typer.Exit), ops.observe(active(tmp_path)):
        fail_as_handle_errors_does()
    assert (seen[0].exit_code, seen[0].error) == (4, "bad symbols")


def test_a_failing_report_never_changes_the_exit(tmp_path, monkeypatch, caplog) -> None:
    def broken(settings: Settings, done: ops.Finished) -> None:
        raise ValueError("https://secret.example/token")

    monkeypatch.setattr(ops, "report", broken)
    with pytest.raises(typer.Exit) as caught, ops.observe(active(tmp_path)):
        raise typer.Exit(0)
    assert caught.value.exit_code == 0
    assert "reporting failed (ValueError)" in caplog.text
    assert "secret.example" not in caplog.text


def test_observe_does_nothing_without_the_settings(monkeypatch) -> None:
    monkeypatch.setattr(ops, "report", lambda *a: pytest.fail("reported"))
    before = set(sys.modules)
    with pytest.raises(typer.Exit), ops.observe(Settings(_env_file=None)):
        raise typer.Exit(0)
    assert not {m for m in set(sys.modules) - before if m.startswith("orchestrator_cli.")}
