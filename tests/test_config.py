"""Settings: masking and validation that the CLI tests do not reach."""

from __future__ import annotations

import pytest

from orchestrator_cli.config import mask_url


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
    ],
)
def test_mask_url_hides_every_password(url, shown):
    assert mask_url(url) == shown


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
