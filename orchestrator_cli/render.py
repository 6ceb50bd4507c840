"""Rich tables and summary lines for runs; JSON documents for `--json`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator_cli.schemas import (
    ACCEPTED_STATUSES,
    MappingResult,
    RunPage,
    RunResult,
    RunSummary,
    money_text,
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


def _qty(value: Decimal | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return str(int(value))
    return str(value)


def _weight(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _order(mapping: MappingResult) -> str:
    if not mapping.order_qty or mapping.order_side is None:
        return "-"
    leg = " (2nd leg)" if mapping.leg else ""
    return f"{mapping.order_side} {mapping.order_qty}{leg}"


def _status(mapping: MappingResult) -> str:
    if mapping.skip_reason:
        return f"[dim]skip: {mapping.skip_reason}[/dim]"
    status = mapping.order_status or "-"
    style = ORDER_STYLE.get(status, "red")
    return f"[{style}]{escape(status)}[/{style}]"  # the gateway's word, printed literally


def mapping_table(result: RunResult) -> Table:
    """The signal-to-order mappings of one run."""
    table = Table(title=f"Run {result.run_id}", title_justify="left")
    for header, justify in (
        ("Symbol", "left"),
        ("Rank", "right"),
        ("Weight", "right"),
        ("Price", "right"),
        ("Held", "right"),
        ("Target", "right"),
        ("Order", "right"),
        ("Status", "left"),
        ("Client order id / detail", "left"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for m in result.mappings:
        parts = [m.client_order_id or ""]
        if m.note:
            parts.append(m.note)
        if m.detail and m.detail != m.note and m.order_status not in ACCEPTED_STATUSES:
            parts.append(m.detail)
        note = escape(" ".join(part for part in parts if part))  # service text: never markup
        table.add_row(
            m.symbol,
            "-" if m.rank is None else str(m.rank),
            _weight(m.target_weight),
            "-" if m.price is None else money_text(m.price),
            _qty(m.current_qty),
            _qty(m.target_qty),
            _order(m),
            _status(m),
            note,
        )
    return table


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def summary_line(run: RunSummary) -> str:
    """One line: status, strategy, date and counts (Rich markup)."""
    style = STATUS_STYLE.get(run.status, "white")
    duration = "" if run.duration_seconds is None else f" in {run.duration_seconds:.2f}s"
    mode = " (dry run: nothing sent)" if run.dry_run else ""
    if run.gateway_mode:
        mode += f" (gateway: {run.gateway_mode})"
    line = (
        f"[{style}]{run.status}[/{style}] run {run.run_id} {run.strategy_id} {run.as_of_date}"
        f"{mode}: {plural(run.num_signals, 'signal')}, "
        f"{plural(run.num_orders_submitted, 'order')} submitted, "
        f"{run.num_orders_accepted} accepted, {run.num_orders_rejected} rejected"
    )
    if run.num_orders_blocked:
        line += f", {run.num_orders_blocked} blocked"
    if run.num_orders_unknown:
        line += f", {run.num_orders_unknown} unknown"
    line += duration
    if run.error_message:
        line += f" - {escape(run.error_message)}"
    return line


def limits_line(limits: dict[str, Any]) -> str | None:
    """The limits that are on, e.g. `limits: max_order_notional=5000, long_only`."""
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


def print_run(console: Console, result: RunResult) -> None:
    console.print(mapping_table(result))
    if result.limits and (line := limits_line(result.limits)):
        console.print(line, highlight=False)
    console.print(summary_line(result), highlight=False)


def runs_table(page: RunPage) -> Table:
    """`orch runs list`: newest first."""
    if page.runs:
        title = f"Runs {page.offset + 1}-{page.offset + len(page.runs)} of {page.total}"
    else:
        title = f"No runs at offset {page.offset} ({page.total} in all)"
    table = Table(title=title)
    for header in (
        "Run id",
        "Strategy",
        "Date",
        "Status",
        "Signals",
        "Submitted",
        "Accepted",
        "Rejected",
        "Started (UTC)",
    ):
        table.add_column(header)
    for run in page.runs:
        style = STATUS_STYLE.get(run.status, "white")
        started = "-" if run.started_at is None else run.started_at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            str(run.run_id),
            run.strategy_id,
            str(run.as_of_date),
            f"[{style}]{run.status}[/{style}]",
            str(run.num_signals),
            str(run.num_orders_submitted),
            str(run.num_orders_accepted),
            str(run.num_orders_rejected),
            started,
        )
    return table
