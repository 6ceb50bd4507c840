"""`orch health` checks, one by one, against `responses` and fakes; the runner of the checks;
the table. End to end against the sandbox: tests/test_e2e_health.py."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import requests
import responses
from rich.console import Console
from sqlalchemy import text

from orchestrator_cli import db, health
from orchestrator_cli.config import Settings
from orchestrator_cli.errors import ConfigError, PriceSourceError, ServiceError
from orchestrator_cli.gateway import GatewayClient
from orchestrator_cli.health import Check, HealthReport
from orchestrator_cli.schemas import PriceBook, PriceQuote
from orchestrator_cli.transport import HttpClient

SIGNAL = "http://signal.test"
GATEWAY = "http://gateway.test"
NOW = datetime(2024, 12, 31, 15, 0, tzinfo=UTC)  # a Tuesday, 10:00 in New York
SATURDAY = datetime(2024, 12, 28, 15, 0, tzinfo=UTC)
CONFIG = {"service": "execution_gateway", "dry_run": False, "alpaca_paper": True}


def http(base_url: str, service: str) -> HttpClient:
    return HttpClient(service=service, base_url=base_url, timeout=1, max_attempts=1)


@pytest.fixture
def gateway() -> GatewayClient:
    return GatewayClient(http(GATEWAY, "Execution Gateway"))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)  # no developer's .env
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return Settings(database_url=f"sqlite:///{tmp_path}/orch.db", _env_file=None)  # type: ignore[call-arg]


def only(checks: list[Check]) -> Check:
    assert len(checks) == 1, checks
    return checks[0]


# --- Signal Service ---------------------------------------------------------------------------


def test_signal_service_ready(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{SIGNAL}/ready", json={"status": "ready"})
    check = only(health.check_signal_service(http(SIGNAL, "Signal Service")))
    assert check == Check("signal_service", True, f"ready at {SIGNAL}")


def test_signal_service_not_ready_is_asked_once(rsps: responses.RequestsMock) -> None:
    ready = rsps.get(f"{SIGNAL}/ready", status=503, json={"detail": "Model not loaded"})
    check = only(health.check_signal_service(http(SIGNAL, "Signal Service")))
    assert check == Check(
        "signal_service", False, "not ready: GET /ready answered HTTP 503 (Model not loaded)"
    )
    assert ready.call_count == 1


def test_signal_service_unreachable(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{SIGNAL}/ready", body=requests.ConnectionError("Connection refused"))
    check = only(health.check_signal_service(http(SIGNAL, "Signal Service")))
    assert not check.ok
    assert check.detail == (
        f"unreachable at {SIGNAL}: GET /ready connection failed; check SIGNAL_SERVICE_URL"
    )


# --- the gateway's health body ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "ok", "detail"),
    [
        ({"status": "healthy"}, True, "healthy"),
        (
            {"status": "degraded", "database_connected": True},
            True,
            "the gateway reports itself degraded (GET /health); going ahead",
        ),
        ({"status": "unhealthy"}, False, "the gateway reports itself unhealthy (GET /health)"),
    ],
)
def test_gateway_health_body(
    rsps: responses.RequestsMock,
    gateway: GatewayClient,
    body: dict[str, object],
    ok: bool,
    detail: str,
) -> None:
    rsps.get(f"{GATEWAY}/health", json=body)  # always HTTP 200: the body says
    assert only(health.check_gateway_health(gateway)) == Check("gateway_health", ok, detail)


def test_gateway_degraded_naming_a_fail_closed_component_fails(
    rsps: responses.RequestsMock, gateway: GatewayClient
) -> None:
    rsps.get(
        f"{GATEWAY}/health",
        json={
            "status": "degraded",
            "circuit_breaker_available": False,
            "message": "Circuit-breaker state unavailable (fail-closed for safety)",
        },
    )
    check = only(health.check_gateway_health(gateway))
    assert not check.ok
    assert "safety component failing closed" in check.detail
    assert "circuit" in check.detail


# --- kill switch --------------------------------------------------------------------------------


def test_kill_switch_active(rsps: responses.RequestsMock, gateway: GatewayClient) -> None:
    rsps.get(f"{GATEWAY}/api/v1/kill-switch/status", json={"state": "ACTIVE"})
    assert only(health.check_kill_switch(gateway)) == Check("kill_switch", True, "ACTIVE")


def test_kill_switch_engaged(rsps: responses.RequestsMock, gateway: GatewayClient) -> None:
    rsps.get(f"{GATEWAY}/api/v1/kill-switch/status", json={"state": "ENGAGED"})
    assert only(health.check_kill_switch(gateway)) == Check(
        "kill_switch", False, "the gateway's kill switch is engaged"
    )


def test_kill_switch_unknown_fails_named_and_is_asked_once(
    rsps: responses.RequestsMock, gateway: GatewayClient
) -> None:
    status = rsps.get(
        f"{GATEWAY}/api/v1/kill-switch/status", status=503, json={"detail": "unavailable"}
    )
    report = health.run_checks([(("kill_switch",), lambda: health.check_kill_switch(gateway))])
    check = only(list(report.checks))
    assert (check.name, check.ok) == ("kill_switch", False)
    assert "kill-switch state unknown (HTTP 503: unavailable)" in check.detail
    assert status.call_count == 1


# --- gateway mode and strategy ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "allow_live", "ok", "detail"),
    [
        ({}, False, True, "paper"),
        ({"dry_run": True}, False, True, "dry_run: the gateway records orders only"),
        ({"alpaca_paper": False}, True, True, "live (ALLOW_LIVE_TRADING is set)"),
        (
            {"alpaca_paper": False},
            False,
            False,
            "live: orders would reach a LIVE account and a run refuses that; set "
            "ALLOW_LIVE_TRADING=true (or pass --live to orch run) to trade live",
        ),
    ],
)
def test_gateway_mode(
    rsps: responses.RequestsMock,
    gateway: GatewayClient,
    settings: Settings,
    config: dict[str, object],
    allow_live: bool,
    ok: bool,
    detail: str,
) -> None:
    rsps.get(f"{GATEWAY}/api/v1/config", json={**CONFIG, **config})
    live = settings.model_copy(update={"allow_live_trading": allow_live})
    mode, _strategy = health.check_gateway_config(gateway, live)
    assert mode == Check("gateway_mode", ok, detail)


def test_gateway_strategy_not_reported_passes(
    rsps: responses.RequestsMock, gateway: GatewayClient, settings: Settings
) -> None:
    rsps.get(f"{GATEWAY}/api/v1/config", json=CONFIG)
    _mode, strategy = health.check_gateway_config(gateway, settings)
    assert strategy == Check(
        "gateway_strategy", True, "not reported by the gateway; STRATEGY_ID is 'alpha_baseline'"
    )


def test_gateway_strategy_other_than_strategy_id_fails(
    rsps: responses.RequestsMock, gateway: GatewayClient, settings: Settings
) -> None:
    rsps.get(f"{GATEWAY}/api/v1/config", json={**CONFIG, "strategy_id": "momentum"})
    _mode, strategy = health.check_gateway_config(gateway, settings)
    assert not strategy.ok
    assert strategy.detail.startswith("the gateway files every order under its own strategy")


def test_gateway_config_unreadable_fails_both_checks(
    rsps: responses.RequestsMock, gateway: GatewayClient, settings: Settings
) -> None:
    rsps.get(f"{GATEWAY}/api/v1/config", status=500, json={"detail": "boom"})
    report = health.run_checks(
        [
            (
                ("gateway_mode", "gateway_strategy"),
                lambda: health.check_gateway_config(gateway, settings),
            )
        ]
    )
    mode, strategy = report.checks
    assert (mode.name, mode.ok) == ("gateway_mode", False)
    assert "HTTP 500: boom" in mode.detail
    assert strategy == Check("gateway_strategy", False, "not checked: see gateway_mode")


# --- database -----------------------------------------------------------------------------------


def test_sqlite_not_created_yet_passes_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "new" / "orch.db"
    settings = Settings(database_url=f"sqlite:///{path}", _env_file=None)  # type: ignore[call-arg]
    check = only(health.check_database(settings))
    assert check == Check(
        "database", True, f"sqlite:///{path} does not exist yet: created on first run"
    )
    assert not path.parent.exists()


def test_sqlite_at_head_passes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/orch.db"
    engine = db.make_engine(url)
    db.prepare_database(engine)
    engine.dispose()
    settings = Settings(database_url=url, _env_file=None)  # type: ignore[call-arg]
    assert only(health.check_database(settings)) == Check(
        "database", True, f"{url} at migration {db.head_revision()}"
    )


@pytest.mark.postgres
def test_postgres_not_migrated_fails_naming_the_fix(new_postgres_database) -> None:
    url = new_postgres_database()
    settings = Settings(database_url=url, _env_file=None)  # type: ignore[call-arg]
    check = only(health.check_database(settings))
    assert not check.ok
    assert check.detail.endswith(
        f"is at migration empty, this orch needs {db.head_revision()}: run `orch db upgrade`"
    )


def test_a_sqlite_file_that_cannot_be_written_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only mount (or permissions): every run would fail taking the run lock."""
    url = f"sqlite:///{tmp_path}/orch.db"
    engine = db.make_engine(url)
    db.prepare_database(engine)
    engine.dispose()
    real_access = os.access
    monkeypatch.setattr(
        db.os, "access", lambda path, mode: mode != os.W_OK and real_access(path, mode)
    )
    settings = Settings(database_url=url, _env_file=None)  # type: ignore[call-arg]
    check = only(health.check_database(settings))
    assert not check.ok
    assert check.detail == f"{url} cannot be written: {tmp_path}/orch.db is read-only for this user"


@pytest.mark.postgres
def test_a_read_only_postgres_fails(new_postgres_database) -> None:
    url = new_postgres_database()
    engine = db.make_engine(url)
    db.upgrade_database(engine)
    with engine.connect() as connection:
        name = connection.execute(text("SELECT current_database()")).scalar_one()
        connection.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
        connection.commit()
    engine.dispose()
    settings = Settings(database_url=url, _env_file=None)  # type: ignore[call-arg]
    check = only(health.check_database(settings))
    assert not check.ok
    assert check.detail.endswith(
        "cannot be written: the server takes no writes (transaction_read_only is on)"
    )


def test_unreachable_postgres_fails_with_the_password_masked() -> None:
    url = "postgresql://orch:hunter2@127.0.0.1:1/orch"
    settings = Settings(database_url=url, _env_file=None)  # type: ignore[call-arg]
    report = health.run_checks([(("database",), lambda: health.check_database(settings))])
    check = only(list(report.checks))
    assert (check.name, check.ok) == ("database", False)
    assert "cannot reach database postgresql+psycopg2://orch:***@127.0.0.1:1/orch" in check.detail
    assert "hunter2" not in check.detail


# --- prices -------------------------------------------------------------------------------------


class FakePrices:
    name = "fake"

    def __init__(self, book: PriceBook | None = None, error: Exception | None = None) -> None:
        self.book = book or PriceBook()
        self.error = error
        self.asked: list[list[str]] = []

    def fetch_prices(self, symbols: Sequence[str], *, now: datetime) -> PriceBook:
        self.asked.append(list(symbols))
        if self.error is not None:
            raise self.error
        return self.book


def test_prices_one_quote_for_the_symbol() -> None:
    quote = PriceQuote(
        symbol="SPY", price=Decimal("560.00"), timestamp=NOW.replace(second=0), source="mid"
    )
    source = FakePrices(PriceBook(quotes={"SPY": quote}))
    check = only(health.check_prices(source, "SPY", NOW.replace(second=12)))
    assert check == Check("prices", True, "SPY 560.00 from fake, 12s old")
    assert source.asked == [["SPY"]]


def test_prices_missing_for_the_symbol_fails_with_the_reason() -> None:
    source = FakePrices(PriceBook(problems={"QQQ": "quote is 45s old (limit 30s)"}))
    assert only(health.check_prices(source, "QQQ", NOW)) == Check(
        "prices", False, "QQQ: quote is 45s old (limit 30s) (fake)"
    )


def test_price_source_down_fails_named() -> None:
    source = FakePrices(error=PriceSourceError("market data answered HTTP 500"))
    report = health.run_checks([(("prices",), lambda: health.check_prices(source, "SPY", NOW))])
    assert report.checks == (Check("prices", False, "market data answered HTTP 500"),)


# --- market -------------------------------------------------------------------------------------


def test_market_closed_on_a_weekend_fails(settings: Settings) -> None:
    check = only(health.check_market(settings, SATURDAY))
    assert check == Check("market", False, "market closed on 2024-12-28: weekend (XNYS)")


def test_market_open_on_a_weekday_passes(settings: Settings) -> None:
    check = only(health.check_market(settings, NOW))
    assert check == Check("market", True, "a session on 2024-12-31, closing at 16:00 EST")


def test_market_with_the_calendar_ignored_passes(settings: Settings) -> None:
    ignoring = settings.model_copy(update={"ignore_calendar": True})
    assert only(health.check_market(ignoring, SATURDAY)) == Check(
        "market", True, "calendar ignored (IGNORE_CALENDAR)"
    )


# --- running the checks -------------------------------------------------------------------------


def test_a_config_error_is_raised_not_reported() -> None:
    def bad() -> list[Check]:
        raise ConfigError("MARKET_CALENDAR: unknown")

    with pytest.raises(ConfigError, match="MARKET_CALENDAR"):
        health.run_checks([(("signal_service",), lambda: []), (("market",), bad)])


def test_checks_keep_their_order_and_a_failure_fails_the_report() -> None:
    def down() -> list[Check]:
        raise ServiceError("gateway down")

    report = health.run_checks(
        [
            (("a",), lambda: [Check("a", True, "fine")]),
            (("b", "c"), down),
            (("d",), lambda: [Check("d", True, "fine")]),
        ]
    )
    assert [c.name for c in report.checks] == ["a", "b", "c", "d"]
    assert (report.ok, report.failing) == (False, ["b", "c"])
    assert report.document() == {
        "ok": False,
        "checks": [
            {"name": "a", "ok": True, "detail": "fine"},
            {"name": "b", "ok": False, "detail": "gateway down"},
            {"name": "c", "ok": False, "detail": "not checked: see b"},
            {"name": "d", "ok": True, "detail": "fine"},
        ],
    }


@pytest.mark.parametrize("text", ["spy", " SPY "])
def test_symbol_is_upper_cased(text: str) -> None:
    assert health.parse_symbol(text) == "SPY"


def test_bad_symbol_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"--symbol 'S P Y' is not a ticker symbol"):
        health.parse_symbol("S P Y")


# --- output -------------------------------------------------------------------------------------


def test_table_prints_details_literally() -> None:
    report = HealthReport(
        (
            Check("signal_service", True, "ready at http://s"),
            Check("kill_switch", False, "[red]engaged[/red] [/x]"),
        )
    )
    buffer = io.StringIO()
    health.print_report(Console(file=buffer, width=80, color_system=None), report)
    assert buffer.getvalue().splitlines() == [
        " check          ┃        ┃ detail",
        "━━━━━━━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━",
        " signal_service │ ok     │ ready at http://s",
        " kill_switch    │ FAILED │ [red]engaged[/red] [/x]",
        "not ready: kill_switch failing",
    ]
