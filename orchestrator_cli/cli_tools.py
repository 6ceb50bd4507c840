"""The commands around a run: `orch sandbox`, `orch health`, `orch config`, `orch db upgrade`.

They share the CLI's app, error handling and consoles (`cli.py`); each imports what it uses in
its body, so `orch --help` stays light.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator_cli.cli import (
    JsonOutput,
    app,
    db_app,
    emit_json,
    flag,
    handle_errors,
    settings_from_options,
)
from orchestrator_cli.errors import ExitCode
from orchestrator_cli.terminal import err, out


@app.command("sandbox")
def sandbox_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind (keep it on loopback).")] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Base port: Signal Service on it, gateway on +1, market data on +2 "
            "(overrides the three ports below).",
        ),
    ] = None,
    signal_port: Annotated[int, typer.Option(help="Signal Service port (0: any).")] = 8001,
    gateway_port: Annotated[int, typer.Option(help="Execution Gateway port (0: any).")] = 8002,
    market_data_port: Annotated[int, typer.Option(help="Market-data port (0: any).")] = 8003,
    state_file: Annotated[
        Path | None, typer.Option(help="Keep positions and orders in this JSON file.")
    ] = None,
    latency_ms: Annotated[
        int, typer.Option(min=0, help="Milliseconds from each request to its answer.")
    ] = 0,
    error_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of orders answered 503 before storing.")
    ] = 0.0,
    rate_limit_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of orders answered 429.")
    ] = 0.0,
    timeout_after_accept_rate: Annotated[
        float,
        typer.Option(min=0, max=1, help="Share of orders stored, then answered too late."),
    ] = 0.0,
    drop_after_accept_rate: Annotated[
        float,
        typer.Option(min=0, max=1, help="Share of orders stored, then the connection dropped."),
    ] = 0.0,
    kill_switch: Annotated[
        bool, flag("--kill-switch", help="Start with the kill switch engaged.")
    ] = False,
    gateway_dry_run: Annotated[
        bool,
        flag("--gateway-dry-run", help="Gateway records orders as dry_run."),
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Seed for the fault randomness.")] = None,
    signal_strategy: Annotated[
        str,
        typer.Option(help="Strategy the Signal Service serves (named in metadata.strategy)."),
    ] = "alpha_baseline",
    rate_limit_per_window: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Answer 429 past this many orders in the sliding window (every request counts).",
        ),
    ] = None,
    rate_limit_window_seconds: Annotated[
        float, typer.Option(min=0.001, help="The rate limit's window and Retry-After, seconds.")
    ] = 60.0,
    fail_closed: Annotated[
        str | None,
        typer.Option(
            help="Refuse every order with the 503 of a safety state the gateway cannot read: "
            "circuit_breaker, position_reservation or kill_switch."
        ),
    ] = None,
    circuit_breaker_state_missing: Annotated[
        bool,
        flag(
            "--circuit-breaker-state-missing",
            help="Health degraded naming the circuit breaker; every order refused fail-closed.",
        ),
    ] = False,
    gateway_strategy: Annotated[
        str | None, typer.Option(help="The strategy the gateway files every order under.")
    ] = None,
    auth_secret: Annotated[
        str | None,
        typer.Option(
            envvar="INTERNAL_TOKEN_SECRET",
            show_envvar=False,
            help="Verify the platform's request signatures with this secret "
            "(env INTERNAL_TOKEN_SECRET).",
        ),
    ] = None,
    bearer_token: Annotated[
        str | None, typer.Option(help="Require Authorization: Bearer with this token.")
    ] = None,
) -> None:
    """Serve the simulated Signal Service, Execution Gateway and market data until Ctrl-C."""
    with handle_errors(ctx):
        from orchestrator_cli.wiring import serve_sandbox

        options: dict[str, Any] = {
            "latency_ms": latency_ms,
            "error_rate": error_rate,
            "rate_limit_rate": rate_limit_rate,
            "timeout_after_accept_rate": timeout_after_accept_rate,
            "drop_after_accept_rate": drop_after_accept_rate,
            "kill_switch_engaged": kill_switch,
            "gateway_dry_run": gateway_dry_run,
            "seed": seed,
            "signal_strategy": signal_strategy,
            "rate_limit_per_window": rate_limit_per_window,
            "rate_limit_window_seconds": rate_limit_window_seconds,
            "fail_closed": fail_closed,
            "circuit_breaker_state_missing": circuit_breaker_state_missing,
            "gateway_strategy": gateway_strategy,
        }
        ports = (signal_port, gateway_port, market_data_port)
        if port is not None:
            ports = (port, port + 1, port + 2) if port else (0, 0, 0)
        serve_sandbox(
            out,
            host=host,
            ports=ports,
            state_file=state_file,
            fault_options=options,
            auth_secret=auth_secret,
            bearer_token=bearer_token,
        )


@app.command("health")
def health_command(
    ctx: typer.Context,
    symbol: Annotated[
        str, typer.Option(help="The symbol whose price is fetched to check the price source.")
    ] = "SPY",
    sandbox: Annotated[
        bool,
        flag("--sandbox", help="Check the built-in simulated services instead."),
    ] = False,
    json_output: JsonOutput = False,
) -> None:
    """Could a run go ahead now? Checks the services, database, prices and market; sends nothing.

    Exit codes: 0 every check passed, 1 a check failed (named), 4 invalid configuration.
    """
    from orchestrator_cli import clock, health, wiring

    with handle_errors(ctx):
        settings = settings_from_options(ctx)
        wanted = health.parse_symbol(symbol)
        with wiring.sandboxed(settings, enabled=sandbox) as effective:
            report = health.check_health(effective, symbol=wanted, now=clock.utc_now())
        if json_output:
            emit_json(json.dumps(report.document()))
        else:
            health.print_report(out, report)
        raise typer.Exit(ExitCode.OK if report.ok else ExitCode.FAILED)


@app.command("config")
def config_command(
    ctx: typer.Context,
    json_output: JsonOutput = False,
) -> None:
    """Show every setting's effective value (secrets masked), variable and source."""
    from orchestrator_cli import config_report
    from orchestrator_cli.config import load_settings

    with handle_errors(ctx):
        report = config_report.config_report(load_settings())
        if json_output:
            emit_json(json.dumps(report.document()))
        else:
            config_report.print_report(out, err, report)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply the Alembic migrations to DATABASE_URL (needed once for PostgreSQL)."""
    with handle_errors(ctx):
        from orchestrator_cli import db
        from orchestrator_cli.config import mask_url

        settings = settings_from_options(ctx)
        engine = db.make_engine(settings.database_url)
        before, after = db.upgrade_database(engine)
        where = mask_url(settings.database_url)
        if before == after:
            out.print(f"{where} is already at migration {after}", markup=False)
        else:
            out.print(f"{where} upgraded from {before or 'empty'} to {after}", markup=False)
