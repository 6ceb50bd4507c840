"""`orch health`: could a run go ahead now? Each check is read-only and answers as a run would.

A check fails where a run would refuse or fail: the Signal Service not ready (`GET /ready`),
the gateway's health body unhealthy or degraded naming a safety component that fails closed
(`gateway.assess_safety`, as the run's preflight), its kill switch engaged or unknown (503), a
live gateway without ALLOW_LIVE_TRADING, the gateway filing orders under another strategy, a
server database behind the current migration, no usable price for the chosen symbol, and a
market closed now. Every request is one attempt within HTTP_TIMEOUT_SECONDS (no retries), the
checks run concurrently, nothing is written (a SQLite file that does not exist is not created)
and no order is ever sent. A `ConfigError` is not a failing check: it is raised (exit 4), as
every command does with a bad configuration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url

from orchestrator_cli import db
from orchestrator_cli.clock import MarketClosed, market_for
from orchestrator_cli.config import Settings, mask_url
from orchestrator_cli.errors import ConfigError, OrchError
from orchestrator_cli.gateway import GatewayClient, assess_safety, gateway_mode
from orchestrator_cli.layout import print_table
from orchestrator_cli.prices import PriceSource, build_price_source
from orchestrator_cli.schemas import SYMBOL_PATTERN, GatewayHealth, KillSwitchStatus
from orchestrator_cli.transport import HttpClient, describe_error, make_session, response_detail
from orchestrator_cli.wiring import service_auth

READY_PATH = "/ready"
# Stand-ins for the parts of `assess_safety` a check is not about, so each check fails alone.
_ACTIVE = KillSwitchStatus(state="ACTIVE")
_HEALTHY = GatewayHealth(status="healthy")


@dataclass(frozen=True)
class Check:
    """One named check: whether it passed and one line saying what was found."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class HealthReport:
    """Every check, in a fixed order; `ok` only when a run could go ahead now."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failing(self) -> list[str]:
        return [check.name for check in self.checks if not check.ok]

    def document(self) -> dict[str, Any]:
        """The `--json` document: `{"ok", "checks": [{"name", "ok", "detail"}]}`."""
        return {
            "ok": self.ok,
            "checks": [
                {"name": check.name, "ok": check.ok, "detail": check.detail}
                for check in self.checks
            ],
        }


def parse_symbol(text: str) -> str:
    """The --symbol to price, upper-cased; ConfigError when it is no ticker symbol."""
    symbol = text.strip().upper()
    if not re.fullmatch(SYMBOL_PATTERN, symbol):
        raise ConfigError(f"--symbol {text[:20]!r} is not a ticker symbol: give one such as SPY")
    return symbol


# --- the checks -----------------------------------------------------------------------------


def check_signal_service(http: HttpClient) -> list[Check]:
    """`GET /ready` answers 200 only when the service could generate signals."""
    where = mask_url(http.base_url)
    try:
        response = http.request("GET", READY_PATH)
    except requests.RequestException as exc:
        detail = f"unreachable at {where}: GET {READY_PATH} {describe_error(exc)}"
        return [Check("signal_service", False, detail + "; check SIGNAL_SERVICE_URL")]
    if response.status_code != 200:
        detail = f"not ready: GET {READY_PATH} answered HTTP {response.status_code}"
        return [Check("signal_service", False, f"{detail} ({response_detail(response)})")]
    return [Check("signal_service", True, f"ready at {where}")]


def check_gateway_health(gateway: GatewayClient) -> list[Check]:
    """The health body (the endpoint is always HTTP 200), judged as the run's preflight does."""
    health = gateway.get_health()
    safety = assess_safety(_ACTIVE, health)
    if safety.problems:
        return [Check("gateway_health", False, "; ".join(safety.problems))]
    return [Check("gateway_health", True, "; ".join(safety.warnings) or health.status)]


def check_kill_switch(gateway: GatewayClient) -> list[Check]:
    """ACTIVE passes; ENGAGED fails, and so does an unknown state (503, raised)."""
    safety = assess_safety(gateway.get_kill_switch(), _HEALTHY)
    if safety.problems:
        return [Check("kill_switch", False, "; ".join(safety.problems))]
    return [Check("kill_switch", True, "ACTIVE")]


def check_gateway_config(gateway: GatewayClient, settings: Settings) -> list[Check]:
    """The gateway's mode (live needs ALLOW_LIVE_TRADING) and the strategy it files under."""
    config = gateway.get_config()
    mode = gateway_mode(config)
    if mode == "live" and not settings.allow_live_trading:
        mode_check = Check(
            "gateway_mode",
            False,
            "live: orders would reach a LIVE account and a run refuses that; set "
            "ALLOW_LIVE_TRADING=true (or pass --live to orch run) to trade live",
        )
    elif mode == "live":
        mode_check = Check("gateway_mode", True, "live (ALLOW_LIVE_TRADING is set)")
    elif mode == "dry_run":
        mode_check = Check("gateway_mode", True, "dry_run: the gateway records orders only")
    else:
        mode_check = Check("gateway_mode", True, "paper")
    filing = config.filing_strategy
    safety = assess_safety(
        _ACTIVE, _HEALTHY, strategy_id=settings.strategy_id, gateway_strategy=filing
    )
    if safety.problems:
        strategy_check = Check("gateway_strategy", False, "; ".join(safety.problems))
    elif filing is None:
        detail = f"not reported by the gateway; STRATEGY_ID is {settings.strategy_id!r}"
        strategy_check = Check("gateway_strategy", True, detail)
    else:
        strategy_check = Check("gateway_strategy", True, f"{filing!r}, as STRATEGY_ID")
    return [mode_check, strategy_check]


def _sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite URL (None for another database or an in-memory one)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def check_database(settings: Settings) -> list[Check]:
    """Reachable and at the current migration; read only (a new SQLite file is not created)."""
    shown = mask_url(settings.database_url)
    sqlite_file = _sqlite_file(settings.database_url)
    if sqlite_file is not None and not sqlite_file.exists():
        return [Check("database", True, f"{shown} does not exist yet: created on first run")]
    engine = db.make_engine(settings.database_url)
    try:
        current = db.current_revision(engine)
        refusal = db.write_refusal(engine)
    finally:
        engine.dispose()
    if refusal is not None:
        return [Check("database", False, f"{shown} cannot be written: {refusal}")]
    head = db.head_revision()
    if current == head:
        return [Check("database", True, f"{shown} at migration {head}")]
    if engine.dialect.name == "sqlite":  # a run migrates SQLite itself
        detail = f"{shown} at migration {current or 'empty'}: migrated to {head} on the next run"
        return [Check("database", True, detail)]
    detail = (
        f"{shown} is at migration {current or 'empty'}, this orch needs {head}: "
        "run `orch db upgrade`"
    )
    return [Check("database", False, detail)]


def check_prices(source: PriceSource, symbol: str, now: datetime) -> list[Check]:
    """One quote for `symbol`, judged as a run judges it (age, reference price, ...)."""
    book = source.fetch_prices([symbol], now=now)
    quote = book.quotes.get(symbol)
    if quote is None:
        return [Check("prices", False, f"{symbol}: {book.reason(symbol)} ({source.name})")]
    age = max(0.0, (now - quote.timestamp).total_seconds())
    detail = f"{symbol} {quote.price} from {source.name}, {age:.0f}s old"
    return [Check("prices", True, detail)]


def check_market(settings: Settings, now: datetime) -> list[Check]:
    """Open now (or before today's open) per MARKET_CALENDAR; IGNORE_CALENDAR passes."""
    market = market_for(settings, None, now)
    if market is None:
        return [Check("market", True, "calendar ignored (IGNORE_CALENDAR)")]
    if isinstance(market, MarketClosed):
        return [Check("market", False, f"{market.line()} ({market.calendar})")]
    half = " (half day)" if market.close.early else ""
    return [Check("market", True, f"a session on {market.day}, closing at {market.close}{half}")]


# --- running them ---------------------------------------------------------------------------

Task = Callable[[], list[Check]]


def _guarded(names: Sequence[str], task: Task) -> list[Check]:
    """The task's checks; a failure of the project's own kind fails them by name. A
    ConfigError (a bad setting) is not a failing check: it propagates."""
    try:
        return task()
    except ConfigError:
        raise
    except OrchError as exc:
        first, *rest = names
        return [
            Check(first, False, str(exc)),
            *(Check(name, False, f"not checked: see {first}") for name in rest),
        ]


def run_checks(tasks: Sequence[tuple[Sequence[str], Task]]) -> HealthReport:
    """Every task at once (each is bounded by its own timeouts); checks in the tasks' order."""
    with ThreadPoolExecutor(max_workers=max(1, len(tasks))) as pool:
        futures = [pool.submit(_guarded, names, task) for names, task in tasks]
        results = [future.exception() or future.result() for future in futures]
    checks: list[Check] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        checks.extend(result)
    return HealthReport(tuple(checks))


def check_health(settings: Settings, *, symbol: str, now: datetime) -> HealthReport:
    """Every check against the configured services, each request tried once."""
    once = settings.model_copy(update={"http_max_attempts": 1})
    session = make_session(4)
    # Built first: a price setting that cannot work is a ConfigError before anything is asked.
    prices = build_price_source(once, session=session)

    def client(service: str, base_url: str, token: Any) -> HttpClient:
        return HttpClient(
            service=service,
            base_url=base_url,
            timeout=settings.http_timeout_seconds,
            max_attempts=1,
            session=session,
            auth=service_auth(settings, token),
        )

    signals = client("Signal Service", settings.signal_service_url, settings.signal_api_token)
    gateway = GatewayClient(
        client("Execution Gateway", settings.execution_gateway_url, settings.gateway_api_token)
    )
    try:
        return run_checks(
            [
                (("signal_service",), lambda: check_signal_service(signals)),
                (("gateway_health",), lambda: check_gateway_health(gateway)),
                (("kill_switch",), lambda: check_kill_switch(gateway)),
                (
                    ("gateway_mode", "gateway_strategy"),
                    lambda: check_gateway_config(gateway, settings),
                ),
                (("database",), lambda: check_database(settings)),
                (("prices",), lambda: check_prices(prices, symbol, now)),
                (("market",), lambda: check_market(settings, now)),
            ]
        )
    finally:
        session.close()


# --- output ---------------------------------------------------------------------------------


def summary_line(report: HealthReport) -> str:
    if report.ok:
        return "ready: a run could go ahead now"
    return f"not ready: {', '.join(report.failing)} failing"


def print_report(console: Console, report: HealthReport) -> None:
    """A table of the checks and a summary line; every detail is printed as data."""
    table = Table(show_edge=False, header_style="bold")
    table.add_column("check", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        mark = Text("ok", style="green") if check.ok else Text("FAILED", style="red")
        table.add_row(Text(check.name), mark, Text(check.detail))
    print_table(console, table)
    console.print(Text(summary_line(report), style="green" if report.ok else "red"))
