"""The `orch` command line: parse, load settings, build, call the use case, render, exit.

Start-up time is import time, so this module imports only Typer, the consoles (`terminal`)
and the error types: each command imports what it uses (`orch --help` loads no database library, no
HTTP client, no runner; `orch runs list` no HTTP client and no runner). Type-only imports sit
under TYPE_CHECKING. `tests/test_startup.py` keeps it so.

The cyclic garbage collector is off while a command loads (`main`): loading makes a few hundred
thousand objects that live as long as the process (modules, classes, the libraries' tables), and
collecting while they are made only walks them again and again (a tenth of start-up). A command
that goes on to real work calls `loaded()` once its modules are in: the collector runs again
from there and leaves what start-up made alone. At exit everything still alive is frozen, so
the interpreter's last collection does not walk it once more (0.15 s after a 1,000-order run);
a short command (`runs list`, `config`) makes too few cycles to need a collection at all.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape

from orchestrator_cli import __version__, logs, terminal
from orchestrator_cli.errors import ConfigError, ExitCode, OrchError, RunInterrupted, ServiceError
from orchestrator_cli.terminal import err, order_progress, out, setup_logging, stop_writing

if TYPE_CHECKING:
    from orchestrator_cli.clock import MarketClosed
    from orchestrator_cli.config import Settings
    from orchestrator_cli.runner import RunOutcome
    from orchestrator_cli.schemas import RunStatus

app = typer.Typer(
    name="orch",
    help="Trade orchestrator: target weights -> sized orders -> Execution Gateway, audited in SQL.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
runs_app = typer.Typer(help="The audit view of past runs.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")

logger = logging.getLogger("orchestrator_cli")

EXIT_FOR_STATUS: dict[RunStatus, ExitCode] = {
    "completed": ExitCode.OK,
    "partial": ExitCode.PARTIAL,
    "failed": ExitCode.FAILED,
    "running": ExitCode.INTERNAL,
}
RUN_STATUSES = ("running", "completed", "partial", "failed")
# Bounds of the counting options (every number has one): far above any real use, well inside
# a 64-bit column and what a service can be asked for.
MAX_SIGNAL_COUNT = 1_000_000
MAX_OFFSET = 1_000_000_000


def flag(*names: str, **options: Any) -> Any:
    """An on/off option. Typer 0.29 shows a `<bool>` value beside a flag in `--help`, as if
    it took one; an empty metavar shows none."""
    return typer.Option(*names, metavar="", **options)


JsonOutput = Annotated[bool, flag("--json", help="Print one JSON document.")]
# `orch run --sandbox` records its runs in the sandbox's own database (config.sandbox_settings).
SandboxRuns = Annotated[
    bool, flag("--sandbox", help="A run of `orch run --sandbox` (in the sandbox's database).")
]
AllRows = Annotated[
    bool,
    flag("--all-rows", help="Show every row (a run of over 50 sums up its skips)."),
]


@contextmanager
def handle_errors(ctx: typer.Context) -> Iterator[None]:
    """Turn the project's errors into `Error: ...` on stderr and their exit code; a command
    asked for `--json` also prints the error as its one JSON document on stdout."""
    debug = bool(ctx.obj and ctx.obj.get("debug"))
    as_json = bool(ctx.params.get("json_output"))
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt as exc:
        fail(interrupted_text(ctx, exc), ExitCode.FAILED, as_json=as_json)
    except Exception as exc:
        if debug:
            err.print_exception()
        if isinstance(exc, OrchError):
            fail(str(exc), exc.exit_code, as_json=as_json)
        text = f"internal error: {type(exc).__name__}: {exc} (--debug shows the traceback)"
        fail(text, ExitCode.INTERNAL, as_json=as_json)


def interrupted_text(ctx: typer.Context, exc: KeyboardInterrupt) -> str:
    """What an interrupt left and how to finish it, in the command's own terms: a sandbox run
    is finished with `--sandbox`; `--force` again would abandon the run and plan anew."""
    sandbox = " --sandbox" if ctx.params.get("sandbox") else ""
    again = "without --force" if ctx.params.get("force") else "(same arguments)"
    run_id = exc.run_id if isinstance(exc, RunInterrupted) else None
    finish = f"`orch runs resume {run_id}{sandbox}`" if run_id else "resuming"
    return (
        "interrupted: no further order was sent. Orders already sent are recorded with their "
        f"client_order_id; `orch run{sandbox}` again {again} or {finish} settles and finishes "
        "the run (one stopped before its plan was recorded sent nothing: it is closed and "
        "`orch run` plans the day anew)"
    )


def fail(text: str, code: ExitCode, *, as_json: bool) -> NoReturn:
    """`Error: <text>` on stderr (and, under --json, `{"error": ..., "exit_code": ...}` as the
    one document on stdout, so a script reading it always gets JSON), then exit `code`."""
    show_error(text)
    if as_json and not _Stdout.document_printed:  # a result already printed says it all
        emit_json(json.dumps({"error": text, "exit_code": int(code)}))
    raise typer.Exit(code)


def show_error(text: str) -> None:
    """`Error: <text>` on stderr; under LOG_FORMAT=json a log record, so every line is JSON."""
    if logs.is_structured():
        logs.always(logging.ERROR, f"Error: {text}")
    else:
        err.print(f"[red]Error:[/red] {escape(text)}", soft_wrap=True)


class _Stdout:
    """Whether this command has printed its JSON document (reset for each command)."""

    document_printed = False


def emit_json(document: str) -> None:
    """Exactly one JSON document on stdout (dropped if its reader has gone)."""
    try:
        typer.echo(document)
    except BrokenPipeError:
        stop_writing(sys.stdout)
    _Stdout.document_printed = True


def show_market_closed(closed: MarketClosed, *, json_output: bool) -> NoReturn:
    """One line (or one JSON document) and exit 0: a closed market is not a failure."""
    if json_output:
        emit_json(json.dumps(closed.document()))
    else:
        out.print(closed.line(), markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(ExitCode.OK)


def settings_from_options(ctx: typer.Context) -> Settings:
    """Settings with the command's options that are named after a setting laid over them.

    An option not given is None (a switch not set is False) and leaves the setting alone; an
    error names the option as the user typed it.
    """
    from orchestrator_cli.config import Settings, env_file_warnings, load_settings

    given: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if param.name in Settings.model_fields and value is not None and value is not False:
            given[param.name] = value
            spelled[param.name] = param.opts[0]
    try:
        settings = load_settings(given, **spelled)
    except ConfigError:
        with suppress(ConfigError):  # a bad option: the error is logged as the rest asks
            fallback = load_settings()
            setup_logging(fallback.log_level, fallback.log_format, fallback.log_file)
        raise
    setup_logging(settings.log_level, settings.log_format, settings.log_file)
    for warning in env_file_warnings():
        logger.warning("%s", warning)
    return settings


def recorded_settings(ctx: typer.Context, *, sandbox: bool) -> Settings:
    """The settings of a command that reads recorded runs: the sandbox's own with `--sandbox`."""
    from orchestrator_cli.config import sandbox_settings

    settings = settings_from_options(ctx)
    return sandbox_settings(settings) if sandbox else settings


def print_version(value: bool) -> None:
    if value:
        out.print(__version__)
        raise typer.Exit(ExitCode.OK)


@app.callback()
def main_options(
    ctx: typer.Context,
    debug: Annotated[
        bool,
        flag("--debug", help="Show tracebacks for errors (may include URLs)."),
    ] = False,
    show_version: Annotated[
        bool,
        flag(
            "--version",
            is_eager=True,
            callback=print_version,
            help="Print the version of orch and exit.",
        ),
    ] = False,
) -> None:
    """orch: turns a strategy's target weights into orders, once, with a complete audit trail."""
    ctx.obj = {"debug": debug}
    logs.reset()
    _Stdout.document_printed = False


@app.command()
def run(
    ctx: typer.Context,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated universe, e.g. AAPL,MSFT,GOOGL.")
    ] = None,
    symbols_file: Annotated[
        Path | None,
        typer.Option(help="File of symbols (comma- or line-separated, # comments)."),
    ] = None,
    strategy_id: Annotated[
        str | None, typer.Option("--strategy", help="Strategy id (env STRATEGY_ID).")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(help="Trading date YYYY-MM-DD (default: today in New York)."),
    ] = None,
    capital: Annotated[str | None, typer.Option(help="Capital in dollars (env CAPITAL).")] = None,
    max_position_size: Annotated[
        str | None, typer.Option(help="Cap per symbol in dollars (env MAX_POSITION_SIZE).")
    ] = None,
    top_n: Annotated[
        int | None,
        typer.Option(
            min=0, max=MAX_SIGNAL_COUNT, help="Number of long positions (Signal Service)."
        ),
    ] = None,
    bottom_n: Annotated[
        int | None,
        typer.Option(
            min=0, max=MAX_SIGNAL_COUNT, help="Number of short positions (Signal Service)."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        flag("--dry-run", help="Plan and record, send no order (env DRY_RUN)."),
    ] = False,
    allow_live_trading: Annotated[
        bool,
        flag(
            "--live",
            help="Allow a gateway that trades a live account (env ALLOW_LIVE_TRADING).",
        ),
    ] = False,
    max_order_notional: Annotated[
        str | None, typer.Option(help="Skip orders above this notional (env MAX_ORDER_NOTIONAL).")
    ] = None,
    max_gross_exposure: Annotated[
        str | None,
        typer.Option(help="Refuse plans above this x capital (env MAX_GROSS_EXPOSURE, 2)."),
    ] = None,
    max_orders_per_run: Annotated[
        str | None,
        typer.Option(
            "--max-orders", help="Refuse plans with more orders (env MAX_ORDERS_PER_RUN)."
        ),
    ] = None,
    long_only: Annotated[
        bool,
        flag("--long-only", help="Treat short signals as 0 (env LONG_ONLY)."),
    ] = False,
    restricted_symbols: Annotated[
        str | None,
        typer.Option(
            "--restricted", help="Comma-separated symbols never traded (env RESTRICTED_SYMBOLS)."
        ),
    ] = None,
    min_trade_dollars: Annotated[
        str | None, typer.Option(help="Skip smaller rebalances (env MIN_TRADE_DOLLARS).")
    ] = None,
    min_trade_pct: Annotated[
        str | None,
        typer.Option(help="Skip rebalances below this % of capital (env MIN_TRADE_PCT)."),
    ] = None,
    force: Annotated[
        bool,
        flag(
            "--force",
            help="Run again although today's run completed (plans only what is still missing).",
        ),
    ] = False,
    run_deadline_seconds: Annotated[
        str | None,
        typer.Option(
            "--deadline-seconds",
            help="Send no new order after this long (env RUN_DEADLINE_SECONDS, 300).",
        ),
    ] = None,
    gateway_max_orders_per_minute: Annotated[
        str | None,
        typer.Option(
            "--max-orders-per-minute",
            help="Pace order submissions to at most this many a minute "
            "(env GATEWAY_MAX_ORDERS_PER_MINUTE, off).",
        ),
    ] = None,
    sandbox: Annotated[
        bool,
        flag(
            "--sandbox",
            help="Run against the built-in simulated services on loopback ports.",
        ),
    ] = False,
    json_output: Annotated[
        bool, flag("--json", help="Print the run as one JSON document.")
    ] = False,
    ignore_calendar: Annotated[
        bool,
        flag(
            "--ignore-calendar",
            help="Run even when the market is closed (env IGNORE_CALENDAR; see MARKET_CALENDAR).",
        ),
    ] = False,
    all_rows: AllRows = False,
) -> None:
    """Fetch signals, size orders against positions, record the plan, submit, record outcomes.

    Exit codes: 0 completed (or already done today, or the market is closed), 3 partial,
    1 failed, 2 usage error, 4 invalid input, 75 another run in progress, 70 internal error.
    """
    from orchestrator_cli import clock, inputs
    from orchestrator_cli.ops import observe

    with handle_errors(ctx):
        settings = settings_from_options(ctx)
    with observe(settings) as observation, handle_errors(ctx):
        universe = inputs.parse_symbols(symbols, symbols_file)
        as_of_date = inputs.parse_as_of(as_of)
        market = clock.market_for(settings, as_of_date, clock.utc_now())
        if isinstance(market, clock.MarketClosed):  # before anything is started or contacted
            from orchestrator_cli.prices import check_price_source

            if not sandbox:  # a broken set-up must not hide all weekend
                check_price_source(settings)
            show_market_closed(market, json_output=json_output)
        from orchestrator_cli import runner, wiring  # a closed day or bad input loads neither

        loaded()
        with (
            wiring.sandboxed(settings, enabled=sandbox) as effective,
            order_progress(interactive=sys.stderr.isatty(), log=logger.info) as report,
        ):
            request, services = wiring.prepare_run(
                effective,
                universe,
                as_of_date=as_of_date if market is None else market.day,
                top_n=top_n,
                bottom_n=bottom_n,
                force=force,
                close=None if market is None else market.close,
                progress=logger.info,
                order_progress=report,
            )
            outcome = runner.execute_run(request, services)
        observation.record(outcome.result, outcome.action)
        early = str(market.close) if market is not None and market.close.early else None
        show_outcome(outcome, json_output=json_output, half_day_close=early, all_rows=all_rows)


def show_outcome(
    outcome: RunOutcome,
    *,
    json_output: bool,
    half_day_close: str | None = None,
    all_rows: bool = False,
) -> None:
    """Print the run (or why nothing was done) and exit with the run's code.

    The run is recorded by now: an interrupt while printing cuts the output short but does not
    change the exit code, which is the run's."""
    code = (
        ExitCode.OK
        if outcome.action == "already_completed"
        else EXIT_FOR_STATUS[outcome.result.status]
    )
    with suppress(KeyboardInterrupt):
        _print_outcome(
            outcome, json_output=json_output, half_day_close=half_day_close, all_rows=all_rows
        )
    raise typer.Exit(code)


def _print_outcome(
    outcome: RunOutcome, *, json_output: bool, half_day_close: str | None, all_rows: bool
) -> None:
    from orchestrator_cli import render

    if outcome.note and outcome.action != "ran":
        if json_output and logs.is_structured():
            logs.always(logging.WARNING, outcome.note)
        else:
            (err if json_output else out).print(outcome.note, markup=False, soft_wrap=True)
    if json_output:
        # The run as `runs show --json` prints it (pydantic's serializer, not json.dumps of
        # a dict: half the time for thousands of mappings), with the action first. Every
        # JSON document is ASCII (\u escapes): it prints whatever stdout's encoding is.
        document = outcome.result.model_dump_json(ensure_ascii=True)
        emit_json(f'{{"action":{json.dumps(outcome.action)},{document[1:]}')
    elif outcome.action == "already_completed":
        render.print_summary(out, outcome.result, half_day_close=half_day_close)
    else:
        render.print_run(out, outcome.result, half_day_close=half_day_close, all_rows=all_rows)


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Rows to show.")] = 50,
    offset: Annotated[
        int, typer.Option(min=0, max=MAX_OFFSET, help="Rows to skip (newest first).")
    ] = 0,
    status: Annotated[
        str | None, typer.Option(help="Only runs with this status: " + ", ".join(RUN_STATUSES))
    ] = None,
    strategy: Annotated[str | None, typer.Option(help="Only runs of this strategy.")] = None,
    sandbox: SandboxRuns = False,
    json_output: JsonOutput = False,
) -> None:
    """List runs, newest first."""
    with handle_errors(ctx):
        from orchestrator_cli import db, render, store

        if status is not None and status not in RUN_STATUSES:
            raise ConfigError(f"--status {status!r}: use one of {', '.join(RUN_STATUSES)}")
        sessions = db.open_database(recorded_settings(ctx, sandbox=sandbox))
        with db.transaction(sessions, "listing runs") as session:
            page = store.list_runs(
                session, limit=limit, offset=offset, status=status, strategy_id=strategy
            )
        if json_output:
            emit_json(page.model_dump_json(ensure_ascii=True))
        else:
            render.print_runs(out, page)


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id: the full UUID or a unique prefix.")],
    sandbox: SandboxRuns = False,
    json_output: JsonOutput = False,
    all_rows: AllRows = False,
) -> None:
    """Show one run and its signal-to-order mappings (over 50: its orders, skips counted)."""
    with handle_errors(ctx):
        from orchestrator_cli import db, render, store

        sessions = db.open_database(recorded_settings(ctx, sandbox=sandbox))
        with db.transaction(sessions, "reading the run") as session:
            result = store.load_run(session, store.resolve_run_id(session, run_id))
        if json_output:
            emit_json(result.model_dump_json(ensure_ascii=True))
        else:
            render.print_run(out, result, all_rows=all_rows)


@runs_app.command("resume")
def runs_resume(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id: the full UUID or a unique prefix.")],
    allow_live_trading: Annotated[
        bool,
        flag("--live", help="Allow a gateway on a live account (env ALLOW_LIVE_TRADING)."),
    ] = False,
    sandbox: SandboxRuns = False,
    ignore_calendar: Annotated[
        bool,
        flag(
            "--ignore-calendar",
            help="Resume although the market is closed (env IGNORE_CALENDAR).",
        ),
    ] = False,
    json_output: JsonOutput = False,
    all_rows: AllRows = False,
) -> None:
    """Continue an interrupted run from its recorded plan: settle unknown orders, send the rest.

    Orders that may have reached the gateway are looked up by client_order_id first; only
    those the gateway never saw are sent (with the same id). Nothing is re-planned.
    """
    from orchestrator_cli import clock, db, runner, store, wiring
    from orchestrator_cli.ops import observe

    with handle_errors(ctx):
        settings = settings_from_options(ctx)
    loaded()
    with observe(settings) as observation, handle_errors(ctx):
        market = clock.market_for(settings, None, clock.utc_now())
        if isinstance(market, clock.MarketClosed):  # its orders would wait for the next session
            raise ConfigError(
                f"{market.line()}: nothing was sent; resume the run while the market is open, "
                "or pass --ignore-calendar"
            )
        close = market.close if market is not None else None
        with (
            wiring.sandboxed(settings, enabled=sandbox) as effective,
            order_progress(interactive=sys.stderr.isatty(), log=logger.info) as report,
        ):
            execution, services = wiring.prepare_existing(
                effective, progress=logger.info, close=close, order_progress=report
            )
            with db.transaction(services.sessions, "finding the run") as session:
                found = store.resolve_run_id(session, run_id)
            outcome = runner.resume_run(found, execution, services)
        observation.record(outcome.result, outcome.action)
        show_outcome(outcome, json_output=json_output, all_rows=all_rows)


@runs_app.command("sync")
def runs_sync(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id: the full UUID or a unique prefix.")],
    sandbox: SandboxRuns = False,
    json_output: JsonOutput = False,
    all_rows: AllRows = False,
) -> None:
    """Refresh every order of a run from the gateway (status, fills) and update its counts.

    Exit 1 when an order could not be asked about: its record is left as it was.
    """
    with handle_errors(ctx):
        from orchestrator_cli import db, render, runner, store, wiring

        settings = settings_from_options(ctx)
        loaded()
        with wiring.sandboxed(settings, enabled=sandbox) as effective:
            execution, services = wiring.prepare_existing(effective, progress=logger.info)
            with db.transaction(services.sessions, "finding the run") as session:
                found = store.resolve_run_id(session, run_id)
            synced = runner.sync_run(found, execution, services)
        if json_output:
            emit_json(synced.result.model_dump_json(ensure_ascii=True))
        else:
            render.print_run(out, synced.result, all_rows=all_rows)
        if synced.unsettled:
            raise ServiceError(
                f"could not settle {len(synced.unsettled)} of {synced.orders} orders of run "
                f"{found} at the gateway (first: {synced.unsettled[0]}); their records are "
                f"unchanged: see to it, then `orch runs sync {found}` again"
            )


from orchestrator_cli import cli_tools  # noqa: E402, F401 - registers sandbox, health, config, db


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (systemd, a cron timeout, `kill`) stops the run like Ctrl-C: nothing more is
    sent, the run lock is released at once, and the run can be resumed."""
    raise KeyboardInterrupt


def loaded() -> None:
    """The command's modules are in: collect cycles again from here on, never walking what
    start-up made (see the module's docstring)."""
    gc.freeze()
    gc.enable()


def main() -> None:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    terminal.prepare_streams()
    gc.disable()
    try:
        app()
    finally:
        gc.freeze()  # the last collection at exit has nothing to walk
        gc.enable()
