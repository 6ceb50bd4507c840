"""Settings: masking and validation that the CLI tests do not reach."""

from __future__ import annotations

import os

import pytest

from orchestrator_cli.config import load_settings, mask_url, sandbox_settings
from orchestrator_cli.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://orch:secret@db:5432/x", "postgresql://orch:***@db:5432/x"),
        ("postgresql://orch:p@ss#w0rd/x@db:5432/t", "postgresql://orch:***@db:5432/t"),
        ("http://user:hunter2@host:80/path", "http://user:***@host:80/path"),
        ("redis://:only-password@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("http://host:8001", "http://host:8001"),
        ("sqlite:////tmp/a@b.db", "sqlite:////tmp/a@b.db"),
        ("postgresql://orch@db/x", "postgresql://orch@db/x"),
        (
            "postgresql://u:pw@h/db?password=S3&sslmode=x",
            "postgresql://u:***@h/db?password=***&sslmode=x",
        ),
        ("postgresql:///db?host=h&PASSWORD=S3", "postgresql:///db?host=h&PASSWORD=***"),
    ],
)
def test_mask_url_hides_every_password(url, shown):
    assert mask_url(url) == shown


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sqlite:///", "is an in-memory database, which keeps no record once orch exits"),
        ("sqlite:///:memory:", "is an in-memory database"),
        ("sqlite:///file:x?mode=memory&uri=true", "is an in-memory database"),
        ("postgresql+asyncpg://u@h/db", "not postgresql+asyncpg"),
        ("postgresql+psycopg://u@h/db", "not postgresql+psycopg"),
        ("postgresql://u:pa@ss@h/db", "percent-encode an @ in the password as %40"),
    ],
)
def test_a_database_url_orch_cannot_keep_records_in_is_refused(url, problem):
    """Refused with the settings (exit 4), before anything is contacted: an in-memory
    database would let an order go out with no durable record of it."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"database_url": url}, database_url="DATABASE_URL")
    assert problem in str(caught.value)
    assert "ss@h" not in str(caught.value)


def test_the_database_urls_orch_uses_are_accepted():
    for url in ("sqlite:////tmp/orch.db", "postgresql://u:p%40ss@h:5432/db"):
        assert load_settings({"database_url": url}).database_url == url
    assert load_settings({"database_url": "postgresql+psycopg2://h/db"}).database_url


def test_dry_run_is_accepted_but_never_in_flight():
    from orchestrator_cli.schemas import (
        ACCEPTED_STATUSES,
        OPEN_STATUSES,
        OutcomeKind,
        classify_status,
    )

    assert classify_status("dry_run") is OutcomeKind.ACCEPTED
    assert "dry_run" in ACCEPTED_STATUSES
    assert "dry_run" not in OPEN_STATUSES  # it never fills: a later run must not wait on it
    assert OPEN_STATUSES < ACCEPTED_STATUSES


# --- GATEWAY_MAX_ORDERS_PER_MINUTE ------------------------------------------------------------


@pytest.fixture
def no_pacing_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.delenv("GATEWAY_MAX_ORDERS_PER_MINUTE", raising=False)


def test_pacing_is_off_by_default(no_pacing_variable):
    from orchestrator_cli.config import load_settings

    assert load_settings().gateway_max_orders_per_minute is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("80", 80), ("1", 1), ("6000", 6000), ("0", None), ("off", None), ("None", None), ("", None)],
)
def test_pacing_takes_a_rate_or_off(no_pacing_variable, monkeypatch, value, expected):
    from orchestrator_cli.config import load_settings

    monkeypatch.setenv("GATEWAY_MAX_ORDERS_PER_MINUTE", value)
    assert load_settings().gateway_max_orders_per_minute == expected


@pytest.mark.parametrize("value", ["-1", "6001", "1.5", "lots"])
def test_a_bad_pacing_rate_is_refused_naming_the_variable_or_flag(
    no_pacing_variable, monkeypatch, value
):
    from orchestrator_cli.config import load_settings
    from orchestrator_cli.errors import ConfigError

    monkeypatch.setenv("GATEWAY_MAX_ORDERS_PER_MINUTE", value)
    with pytest.raises(ConfigError, match="GATEWAY_MAX_ORDERS_PER_MINUTE"):
        load_settings()
    flag = {"gateway_max_orders_per_minute": value}
    with pytest.raises(ConfigError, match="--max-orders-per-minute"):
        load_settings(flag, gateway_max_orders_per_minute="--max-orders-per-minute")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'CAPITAL="100\n', ".env line 1 sets CAPITAL but cannot be read"),
        (b"# capital\nCAPITAL: 5000\n", ".env line 2 sets CAPITAL but cannot be read"),
        (b"X=1\n\nexport LONG_ONLY='true\n", ".env line 3 sets LONG_ONLY but cannot be read"),
        (b"\xff\xfeC\x00A\x00", ".env is not UTF-8 text"),
    ],
)
def test_an_env_file_that_would_be_read_wrong_is_refused(tmp_path, monkeypatch, content, message):
    """python-dotenv skips a line it cannot parse, and the setting would silently take its
    default (capital 100000 for a CAPITAL="100 typo)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert message in str(caught.value)


def test_an_env_file_that_is_a_named_pipe_is_refused_not_waited_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / ".env")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_settings()


def test_other_programs_lines_in_env_file_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text('OTHER_TOOL="unclosed\nSTRATEGY_ID=momentum\n')
    assert load_settings().strategy_id == "momentum"


@pytest.mark.parametrize("value", ["[b]", "AAPL;MSFT", "AAPL MSFT"])
def test_a_restriction_that_is_no_ticker_is_refused(value):
    """It could never match an order's symbol: the restriction would silently do nothing."""
    with pytest.raises(ConfigError, match="is not a ticker symbol"):
        load_settings({"restricted_symbols": value})


def test_restricted_symbols_are_tickers_in_capitals():
    settings = load_settings({"restricted_symbols": " aapl, BRK.B ,,"})
    assert settings.restricted_symbols == {"AAPL", "BRK.B"}


def test_the_sandbox_never_records_its_runs_in_database_url(tmp_path):
    """A state file named like the database (orch.json beside orch.db) would put sandbox
    runs in the real audit trail, where they make the real day 'already completed'."""
    settings = load_settings(
        {
            "database_url": f"sqlite:///{tmp_path}/orch.db",
            "sandbox_state_file": tmp_path / "orch.json",
        }
    )
    with pytest.raises(ConfigError, match="which is DATABASE_URL: give the sandbox's state file"):
        sandbox_settings(settings)
    apart = settings.model_copy(update={"sandbox_state_file": tmp_path / "sandbox.json"})
    assert sandbox_settings(apart).database_url == f"sqlite:///{tmp_path}/sandbox.db"
