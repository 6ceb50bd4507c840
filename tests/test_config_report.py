"""`orch config`: every setting's value, variable and source; secrets never shown."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from harness import SETTINGS_VARIABLES, settings_in
from typer.testing import CliRunner

from orchestrator_cli import cli
from orchestrator_cli.config import Settings
from orchestrator_cli.config_report import config_report, source_of

SECRET = "s3cr3t-Token-value"
DB_PASSWORD = "pa55-word"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in settings_in(os.environ):
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(cli.app, ["config", *args])


def configured(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CAPITAL and a secret from the environment, STRATEGY_ID and a misspelt key in .env."""
    monkeypatch.setenv("capital", "250000")  # names match in any case
    monkeypatch.setenv("GATEWAY_API_TOKEN", SECRET)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://orch:{DB_PASSWORD}@db.internal:5432/orch")
    (env / ".env").write_text(
        f"STRATEGY_ID=momentum\nMAX_POSITON_SIZE=5\nSIGNAL_API_TOKEN={SECRET}\nOTHER_TOOL=1\n"
    )


def test_json_lists_every_setting_with_value_and_source(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured(env, monkeypatch)
    result = invoke("--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == {"settings", "warnings"}
    rows = {row["name"]: row for row in document["settings"]}
    assert list(rows) == list(Settings.model_fields)
    assert {row["env"] for row in rows.values()} == SETTINGS_VARIABLES
    assert all(set(row) == {"name", "env", "value", "source"} for row in rows.values())
    assert rows["capital"] == {
        "name": "capital",
        "env": "CAPITAL",
        "value": "250000",
        "source": "environment",
    }
    assert rows["strategy_id"]["value"] == "momentum"
    assert rows["strategy_id"]["source"] == ".env"
    assert rows["max_position_size"]["value"] == "20000"
    assert rows["max_position_size"]["source"] == "default"
    assert rows["gateway_api_token"]["value"] == "***"
    assert rows["gateway_api_token"]["source"] == "environment"
    assert rows["signal_api_token"]["value"] == "***"
    assert rows["signal_api_token"]["source"] == ".env"
    assert rows["internal_token_secret"]["value"] is None
    assert rows["database_url"]["value"] == "postgresql://orch:***@db.internal:5432/orch"
    assert document["warnings"] == [
        ".env: 'MAX_POSITON_SIZE' is not a setting and is ignored; did you mean MAX_POSITION_SIZE?"
    ]


def test_table_shows_values_sources_and_warns_on_stderr(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured(env, monkeypatch)
    result = invoke()
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[0].strip(): line for line in result.stdout.splitlines()}
    assert [cell.strip() for cell in lines["CAPITAL"].split("│")] == [
        "CAPITAL",
        "250000",
        "environment",
    ]
    assert [cell.strip() for cell in lines["STRATEGY_ID"].split("│")] == [
        "STRATEGY_ID",
        "momentum",
        ".env",
    ]
    assert [cell.strip() for cell in lines["INTERNAL_TOKEN_SECRET"].split("│")] == [
        "INTERNAL_TOKEN_SECRET",
        "-",
        "default",
    ]
    assert "***" in lines["GATEWAY_API_TOKEN"]
    assert "did you mean MAX_POSITION_SIZE?" in result.stderr
    assert [line for line in result.stdout.splitlines() if line != line.rstrip()] == []


@pytest.mark.parametrize("args", [(), ("--json",)])
def test_secrets_never_appear_anywhere(
    env: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    configured(env, monkeypatch)
    monkeypatch.setenv("INTERNAL_TOKEN_SECRET", SECRET)
    monkeypatch.setenv("ALPACA_API_SECRET_KEY", SECRET)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.stdout + result.stderr
    assert DB_PASSWORD not in result.stdout + result.stderr


def test_bad_configuration_exits_4_with_one_line(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAPITAL", "-5")
    result = invoke("--json")
    assert result.exit_code == 4, result.output
    document = json.loads(result.stdout)  # under --json the error is the one document
    assert document["exit_code"] == 4
    assert document["error"].startswith("invalid configuration: CAPITAL")
    assert result.stderr.startswith("Error: invalid configuration: CAPITAL")
    assert len(result.stderr.strip().splitlines()) == 1


def test_environment_beats_env_file(tmp_path: Path) -> None:
    assert source_of("CAPITAL", {"Capital": "1"}, {"CAPITAL"}) == "environment"
    assert source_of("CAPITAL", {"OTHER": "1"}, {"CAPITAL"}) == ".env"
    assert source_of("CAPITAL", {}, set()) == "default"
    (tmp_path / ".env").write_text("CAPITAL\n")  # a bare key gives no value: not the source
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    report = config_report(settings, environ={}, env_file=tmp_path / ".env")
    capital = next(row for row in report.settings if row.name == "capital")
    assert capital.source == "default"


def test_a_blank_limit_is_reported_at_its_default(tmp_path: Path) -> None:
    """`MAX_GROSS_EXPOSURE=` keeps the default limit: the default is where its value is from."""
    assert source_of("MAX_GROSS_EXPOSURE", {"MAX_GROSS_EXPOSURE": " "}, set()) == "default"
    assert source_of("MAX_GROSS_EXPOSURE", {"MAX_GROSS_EXPOSURE": "3"}, set()) == "environment"
    (tmp_path / ".env").write_text("MAX_GROSS_EXPOSURE=\nMAX_ORDERS_PER_RUN=\n")
    settings = Settings(_env_file=tmp_path / ".env")  # type: ignore[call-arg]
    report = config_report(settings, environ={}, env_file=tmp_path / ".env")
    rows = {row.name: row for row in report.settings}
    assert (rows["max_gross_exposure"].value, rows["max_gross_exposure"].source) == ("2", "default")
    assert rows["max_orders_per_run"].source == "default"
    assert rows["restricted_symbols"].value is None  # shown as "-", not as an empty cell
