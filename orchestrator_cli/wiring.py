"""Builds the run's collaborators (HTTP clients, price source, database) from `Settings`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from requests.auth import AuthBase
from rich.console import Console

from orchestrator_cli.auth import BearerAuth, InternalTokenAuth
from orchestrator_cli.clock import SessionClose
from orchestrator_cli.config import Settings, sandbox_settings, sandbox_state_path
from orchestrator_cli.db import open_database
from orchestrator_cli.errors import ConfigError, PriceSourceError
from orchestrator_cli.gateway import GatewayClient
from orchestrator_cli.pacing import RequestGate
from orchestrator_cli.prices import build_price_source
from orchestrator_cli.request import Execution, RunRequest, build_request, execution_from
from orchestrator_cli.schemas import PriceBook
from orchestrator_cli.services import RunServices
from orchestrator_cli.signals import SignalClient
from orchestrator_cli.transport import HttpClient, make_session


def build_run_services(
    settings: Settings,
    *,
    deadline: float | None,
    progress: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    with_prices: bool = True,
    order_progress: Callable[[int, int], None] = lambda _done, _total: None,
) -> RunServices:
    """Every client of a run, the price source included, over one pooled HTTP session.

    The price source is built (and a PRICES_FILE read) before the database is opened, so a
    bad price configuration is refused before anything is created or contacted. `deadline`
    (time.monotonic()) bounds how long a rate-limited request is waited out. Every request to
    the gateway waits at one shared gate (a 429 holds it for all workers; order submissions
    are paced by GATEWAY_MAX_ORDERS_PER_MINUTE); a run that stops sending stops its waiters.
    """
    session = make_session(settings.order_concurrency)
    prices = (
        build_price_source(settings, session=session, sleep=sleep) if with_prices else NoPrices()
    )
    sessions = open_database(settings)

    gateway_gate = RequestGate(
        max_per_minute=settings.gateway_max_orders_per_minute,
        sleep=None if sleep is time.sleep else sleep,  # the default wait is cut short by stop()
    )

    def client(
        service: str, base_url: str, token: SecretStr | None, gate: RequestGate | None = None
    ) -> HttpClient:
        return HttpClient(
            service=service,
            base_url=base_url,
            timeout=settings.http_timeout_seconds,
            max_attempts=settings.http_max_attempts,
            session=session,
            sleep=sleep,
            deadline=deadline,
            auth=service_auth(settings, token),
            gate=gate,
        )

    signals = client("Signal Service", settings.signal_service_url, settings.signal_api_token)
    gateway = client(
        "Execution Gateway",
        settings.execution_gateway_url,
        settings.gateway_api_token,
        gateway_gate,
    )
    return RunServices(
        signals=SignalClient(signals),
        gateway=GatewayClient(gateway),
        prices=prices,
        sessions=sessions,
        progress=progress,
        order_progress=order_progress,
        stop_waiting=gateway_gate.stop,
    )


def prepare_run(
    settings: Settings,
    symbols: Sequence[str],
    *,
    as_of_date: date | None = None,
    top_n: int | None = None,
    bottom_n: int | None = None,
    force: bool = False,
    close: SessionClose | None = None,
    progress: Callable[[str], None] = lambda _message: None,
    order_progress: Callable[[int, int], None] = lambda _done, _total: None,
) -> tuple[RunRequest, RunServices]:
    """A run as `orch run` makes it: `runner.execute_run(*prepare_run(settings, symbols))`.

    `close` (today's session close, from `clock.market_for_run`) caps the run's deadline,
    which the HTTP clients honour too. `order_progress(done, total)` hears of each answer."""
    request = build_request(
        settings,
        symbols,
        as_of_date=as_of_date,
        top_n=top_n,
        bottom_n=bottom_n,
        force=force,
        close=close,
    )
    services = build_run_services(
        settings,
        deadline=request.execution.deadline,
        progress=progress,
        order_progress=order_progress,
    )
    return request, services


def prepare_existing(
    settings: Settings,
    *,
    progress: Callable[[str], None],
    close: SessionClose | None = None,
    order_progress: Callable[[int, int], None] = lambda _done, _total: None,
) -> tuple[Execution, RunServices]:
    """What `runs resume` and `runs sync` need: they read no prices and plan nothing.

    `close` (today's session close) caps the deadline of a resume that sends orders."""
    execution = execution_from(settings, close=close)
    services = build_run_services(
        settings,
        deadline=execution.deadline,
        progress=progress,
        with_prices=False,
        order_progress=order_progress,
    )
    return execution, services


class NoPrices:
    """For commands that never price anything (resume, sync): asking is a bug."""

    name = "none"

    def fetch_prices(self, symbols: Sequence[str], *, now: datetime) -> PriceBook:  # noqa: ARG002
        raise PriceSourceError("this command reads no prices")


def service_auth(settings: Settings, bearer: SecretStr | None) -> AuthBase | None:
    """The platform's HMAC signing when INTERNAL_TOKEN_SECRET is set, else a bearer token."""
    if settings.internal_token_secret is not None:
        return InternalTokenAuth(
            settings.internal_token_secret.get_secret_value(),
            service_id=settings.service_id,
            strategy_id=settings.strategy_id,
        )
    if bearer is not None:
        return BearerAuth(bearer.get_secret_value())
    return None


@contextmanager
def sandboxed(settings: Settings, *, enabled: bool) -> Iterator[Settings]:
    """With `enabled`, serve the simulated services on free loopback ports for the block and
    yield settings pointed at them, and at the sandbox's own database (`sandbox_settings`:
    never DATABASE_URL). PRICE_SOURCE=alpaca reads the sandbox's market data;
    a file or redis price source is kept as configured. The simulated Signal Service serves
    the run's own strategy (a real one serves the strategy it is configured for)."""
    if not enabled:
        yield settings
        return
    from orchestrator_cli.sandbox import Sandbox, SandboxFaults

    secret = settings.internal_token_secret
    token = settings.gateway_api_token
    with Sandbox(
        SandboxFaults(signal_strategy=settings.strategy_id),
        state_file=sandbox_state_path(settings),
        auth_secret=secret.get_secret_value() if secret else None,
        bearer_token=token.get_secret_value() if token and not secret else None,
    ) as sandbox:
        yield sandbox_settings(settings).model_copy(
            update={
                "signal_service_url": sandbox.signal_url,
                "execution_gateway_url": sandbox.gateway_url,
                "market_data_url": sandbox.market_data_url,
            }
        )


def serve_sandbox(
    console: Console,
    *,
    host: str,
    ports: tuple[int, int, int],
    state_file: Path | None,
    fault_options: dict[str, Any],
    auth_secret: str | None = None,
    bearer_token: str | None = None,
) -> None:
    """Serve the simulated services in the foreground until interrupted; a bad fault option
    is refused (ConfigError) before anything is bound."""
    from orchestrator_cli.sandbox import Sandbox, SandboxFaults

    faults = SandboxFaults()
    try:
        faults.update(fault_options)  # the same checks as POST /_sandbox/faults
    except ValueError as exc:
        raise ConfigError(f"orch sandbox: {exc}; fix that option") from exc
    signal_port, gateway_port, market_data_port = ports
    sandbox = Sandbox(
        faults,
        state_file=state_file,
        host=host,
        signal_port=signal_port,
        gateway_port=gateway_port,
        market_data_port=market_data_port,
        auth_secret=auth_secret,
        bearer_token=bearer_token,
    )
    with sandbox:
        console.print("Sandbox serving; point orch at it with:")
        console.print(f"  export SIGNAL_SERVICE_URL={sandbox.signal_url}")
        console.print(f"  export EXECUTION_GATEWAY_URL={sandbox.gateway_url}")
        console.print(f"  export MARKET_DATA_URL={sandbox.market_data_url} PRICE_SOURCE=alpaca")
        if auth_secret:
            console.print("Requests to /api/v1/* must be signed: export INTERNAL_TOKEN_SECRET.")
        elif bearer_token:
            console.print(
                "Requests to /api/v1/* need the bearer token: export SIGNAL_API_TOKEN and "
                "GATEWAY_API_TOKEN."
            )
        console.print("Ctrl-C stops it.")
        with suppress(KeyboardInterrupt):
            sandbox.wait()
