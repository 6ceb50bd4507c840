"""Rich tables and summary lines for runs; JSON documents for `--json`.

Everything from outside (symbols, gateway messages, error texts, strategy names) is data: table
cells are `Text` objects and markup strings escape it, so `[red]` or `[/x]` prints as written.

What a table shows depends on the console's width: a cron log (180 columns) gets every column;
a terminal of 100-149 columns leaves out the rank and the client order id (`orch runs show
--json` has them); an 80-column terminal keeps what a person checks first (symbol, weight,
price, held, target, order, status). The runs list shortens run ids to their first 8 hex
characters there, a prefix that `orch runs show` accepts.

A run of more than `SUMMARISE_ABOVE` mappings (a universe of thousands, most of them weight 0)
lists the mappings that are not skips (its orders) and counts its skips by reason in one
line, `skipped: 1,990 zero_weight, 8 qty_less_than_one_share`; `all_rows` (`--all-rows`)
lists every mapping.

Tables are printed with `layout.print_table`: what Rich prints, without Rich's cost in a log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from orchestrator_cli.layout import print_table
from orchestrator_cli.schemas import (
    ACCEPTED_STATUSES,
    MappingResult,
    RunPage,
    RunResult,
    RunSummary,
    money_text,
    plural,
)

STATUS_STYLE = {
    "completed": "green",
    "partial": "yellow",
    "failed": "red",
    "running": "cyan",
}
ORDER_STYLE = {
    "accepted": "green",
    "filled": "green",
    "partially_filled": "green",
    "new": "green",
    "dry_run": "cyan",
    "planned": "cyan",
}
FULL_WIDTH = 150  # every column
SUMMARISE_ABOVE = 50  # mappings; a larger run lists its orders and counts its skips by reason
TABLE_MEDIUM_WIDTH = 100  # the mapping table without rank and client order id
LIST_MEDIUM_WIDTH = 115  # the runs list with full run ids


def _qty(value: Decimal | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _weight(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _order(mapping: MappingResult) -> str:
    if not mapping.order_qty or mapping.order_side is None:
        return "-"
    leg = " (2nd leg)" if mapping.leg else ""
    return f"{mapping.order_side} {mapping.order_qty}{leg}"


def _status(mapping: MappingResult, *, narrow: bool) -> Text:
    if mapping.skip_reason:
        reason = mapping.skip_reason.replace("_", " ") if narrow else mapping.skip_reason
        return Text(reason if narrow else f"skip: {reason}", style="dim")
    status = mapping.order_status or "-"
    return Text(status, style=ORDER_STYLE.get(status, "red"))


def _detail(mapping: MappingResult, run_error: str | None) -> str:
    """The plan's note and, for an order not accepted, why; the run's own error only once."""
    parts = []
    if mapping.note:
        parts.append(mapping.note)
    if (
        mapping.detail
        and mapping.detail != mapping.note
        and mapping.detail != run_error
        and mapping.order_status not in ACCEPTED_STATUSES
    ):
        parts.append(mapping.detail)
    return " ".join(parts)


def mapping_table(
    result: RunResult, *, width: int = FULL_WIDTH, rows: Sequence[MappingResult] | None = None
) -> Table:
    """The signal-to-order mappings of one run (or `rows` of it), with the columns that fit
    `width`."""
    full = width >= FULL_WIDTH
    narrow = width < TABLE_MEDIUM_WIDTH
    table = Table(title=f"Run {result.run_id}", title_justify="left")
    columns: list[tuple[str, str, bool]] = [  # header, justify, no_wrap
        ("Symbol", "left", True),
        *([("Rank", "right", True)] if full else []),
        ("Weight", "right", True),
        ("Price", "right", True),
        ("Held", "right", True),
        ("Target", "right", True),
        ("Order", "right", not narrow),
        ("Status", "left", not narrow),
        *([("Client order id", "left", True)] if full else []),
        *([] if narrow else [("Detail", "left", False)]),
    ]
    for header, justify, no_wrap in columns:
        table.add_column(header, justify=justify, no_wrap=no_wrap)  # type: ignore[arg-type]
    for m in result.mappings if rows is None else rows:
        cells: list[str | Text] = [
            Text(m.symbol),
            *([Text("-" if m.rank is None else str(m.rank))] if full else []),
            _weight(m.target_weight),
            "-" if m.price is None else money_text(m.price),
            _qty(m.current_qty),
            _qty(m.target_qty),
            _order(m),
            _status(m, narrow=narrow),
            *([Text(m.client_order_id or "")] if full else []),
            *([] if narrow else [Text(_detail(m, result.error_message))]),
        ]
        table.add_row(*cells)
    return table


def _inputs(run: RunSummary) -> str:
    """`; 5 symbols, capital $100,000.00, cap $20,000.00, prices alpaca` (what it ran with)."""
    parts = []
    if run.num_symbols is not None:
        parts.append(plural(run.num_symbols, "symbol"))
    if run.capital is not None:
        parts.append(f"capital ${run.capital:,.2f}")
    if run.max_position_size is not None:
        parts.append(f"cap ${run.max_position_size:,.2f}")
    if run.price_source:
        parts.append(f"prices {run.price_source}")
    return "; " + ", ".join(parts) if parts else ""


def _duration(run: RunSummary) -> str:
    if run.duration_seconds is None:
        return ""
    text = f" in {run.duration_seconds:.2f}s"
    if run.elapsed_seconds is not None:
        text += f" (resumed; {run.elapsed_seconds:.2f}s since it started)"
    return text


def summary_line(run: RunSummary, *, half_day_close: str | None = None) -> str:
    """One line: status, strategy, date, counts and inputs (Rich markup, outside text escaped);
    `half_day_close` (e.g. `13:00 EST`) says the run's session closes early."""
    style = STATUS_STYLE.get(run.status, "white")
    mode = " (dry run: nothing sent)" if run.dry_run else ""
    if run.gateway_mode:
        mode += f" (gateway: {escape(run.gateway_mode)})"
    if half_day_close:
        mode += f" (half day: the market closes at {half_day_close})"
    line = (
        f"[{style}]{run.status}[/{style}] run {run.run_id} {escape(run.strategy_id)} "
        f"{run.as_of_date}{mode}: {plural(run.num_signals, 'signal')}, "
        f"{plural(run.num_orders_submitted, 'order')} submitted, "
        f"{run.num_orders_accepted} accepted, {run.num_orders_rejected} rejected"
    )
    if run.num_orders_blocked:
        line += f", {run.num_orders_blocked} blocked"
    if run.num_orders_unknown:
        line += f", {run.num_orders_unknown} unknown"
    line += _duration(run) + _inputs(run)
    if run.error_message:
        line += f" - {escape(run.error_message)}"
    return line


def limits_line(limits: dict[str, Any]) -> str | None:
    """The limits that are on, e.g. `limits: max_order_notional=5000, long_only` (plain text)."""
    parts = []
    for name, value in limits.items():
        if value in (None, False, [], "0"):
            continue
        if value is True:
            parts.append(name)
        elif isinstance(value, list):
            parts.append(f"{name}={','.join(value)}")
        else:
            parts.append(f"{name}={value}")
    return "limits: " + ", ".join(parts) if parts else None


def shown_rows(
    mappings: Sequence[MappingResult], *, all_rows: bool = False
) -> tuple[list[MappingResult], Counter[str]]:
    """The mappings a table lists and the skips it only counts, by reason: every mapping up
    to `SUMMARISE_ABOVE` of them (or with `all_rows`); above, every one that is not a skip."""
    if all_rows or len(mappings) <= SUMMARISE_ABOVE:
        return list(mappings), Counter()
    listed = [m for m in mappings if not m.skip_reason]
    return listed, Counter(m.skip_reason for m in mappings if m.skip_reason)


def skipped_line(skips: Counter[str]) -> str:
    """`skipped: 1,990 zero_weight, 8 qty_less_than_one_share (--all-rows lists them)`: most
    frequent reason first (plain text)."""
    counts = sorted(skips.items(), key=lambda item: (-item[1], item[0]))
    listed = ", ".join(f"{count:,} {reason}" for reason, count in counts)
    return f"skipped: {listed} (--all-rows lists them)"


def print_run(
    console: Console,
    result: RunResult,
    *,
    half_day_close: str | None = None,
    all_rows: bool = False,
) -> None:
    """The mapping table (when there is one), the skips it leaves out (a large run without
    `all_rows`), the limits line and the summary line.

    The skipped line and the summary line are never wrapped: one line each to grep in a cron log.
    """
    rows, skips = shown_rows(result.mappings, all_rows=all_rows)
    if rows:
        print_table(console, mapping_table(result, width=console.width, rows=rows))
    if skips:
        console.print(skipped_line(skips), markup=False, highlight=False, soft_wrap=True)
    if result.limits and (line := limits_line(result.limits)):
        console.print(line, markup=False, highlight=False)
    print_summary(console, result, half_day_close=half_day_close)


def print_summary(console: Console, run: RunSummary, *, half_day_close: str | None = None) -> None:
    console.print(summary_line(run, half_day_close=half_day_close), highlight=False, soft_wrap=True)


def runs_table(page: RunPage, *, width: int = FULL_WIDTH) -> Table:
    """`orch runs list`, newest first, with the columns that fit `width`."""
    if page.runs:
        title = f"Runs {page.offset + 1}-{page.offset + len(page.runs)} of {page.total}"
    else:
        title = f"No runs at offset {page.offset} ({page.total} in all)"
    table = Table(title=title)
    full = width >= FULL_WIDTH
    narrow = width < LIST_MEDIUM_WIDTH
    # At 80 columns every character counts: the strategy must keep some room.
    counts: Sequence[str] = ("Signals", "Submitted", "Accepted", "Rejected") if full else ()
    counts = counts or (("Acc/sent",) if narrow else ("Accepted/sent",))
    started_header = "Started UTC" if narrow else "Started (UTC)"
    for header in ("Run id", "Strategy", "Date", "Status", *counts, started_header):
        table.add_column(header, no_wrap=header != "Strategy")
    for run in page.runs:
        started = "-"
        if run.started_at is not None:
            started = run.started_at.strftime("%m-%d %H:%M" if narrow else "%Y-%m-%d %H:%M:%S")
        if full:
            numbers = [
                str(n)
                for n in (
                    run.num_signals,
                    run.num_orders_submitted,
                    run.num_orders_accepted,
                    run.num_orders_rejected,
                )
            ]
        else:
            numbers = [f"{run.num_orders_accepted}/{run.num_orders_submitted}"]
        table.add_row(
            run.run_id.hex[:8] if narrow else str(run.run_id),
            Text(run.strategy_id, overflow="fold"),  # all of it, over lines if narrow
            str(run.as_of_date),
            Text(
                f"{run.status} {'(dry)' if narrow else '(dry run)'}" if run.dry_run else run.status,
                style=STATUS_STYLE.get(run.status, "white"),
            ),
            *numbers,
            started,
        )
    return table


def print_runs(console: Console, page: RunPage) -> None:
    print_table(console, runs_table(page, width=console.width))
