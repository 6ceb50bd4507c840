"""Exact output of what people read: the run table, the limits and summary lines, the runs list.

Each is rendered as `orch` prints it (no colour, no highlighting, a fixed width, no terminal)
and compared line for line with the expected text. Rich pads a table's title to the table's
width; trailing spaces are dropped before comparing (they are invisible, and an editor would
strip them from the expected text), everything else is compared character for character.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from textwrap import dedent
from typing import Any

import pytest
from rich.console import Console

from orchestrator_cli import render
from orchestrator_cli.schemas import MappingResult, RunPage, RunResult, RunStatus, RunSummary

WIDTH = 120
NARROW = 80
AS_OF = date(2024, 12, 31)
STARTED = datetime(2024, 12, 31, 14, 31, 5, tzinfo=UTC)
COMPLETED_ID = uuid.UUID("5d0c7c4e-8a2b-4f1e-9c3d-7b6a5e4f3a21")
PARTIAL_ID = uuid.UUID("e2a41f07-6c3b-4d8e-a915-0b7c2d4e6f81")
FAILED_ID = uuid.UUID("9b3e2d1c-0a4f-4e5d-8c7b-6a5f4e3d2c1b")
DRY_ID = uuid.UUID("17c5a9e3-2d4b-4f6a-8e1c-3b5d7f9a1c2e")
FRACTIONAL_ID = uuid.UUID("a0b1c2d3-e4f5-4a6b-9c8d-7e6f5a4b3c2d")


def console_text(draw: Callable[[Console], None], *, width: int = WIDTH) -> str:
    """What `draw` prints on a console like `orch`'s stdout (no highlighting), without colour."""
    console = Console(
        file=io.StringIO(),
        width=width,
        color_system=None,
        force_terminal=False,
        force_interactive=False,
        force_jupyter=False,
        legacy_windows=False,
        highlight=False,
    )
    draw(console)
    output = console.file.getvalue()
    assert isinstance(output, str)
    return "\n".join(line.rstrip() for line in output.splitlines()) + "\n"


def expected(text: str) -> str:
    return dedent(text).lstrip("\n")


def run_text(result: RunResult, *, width: int = WIDTH) -> str:
    """`orch run` / `orch runs show`: the mapping table, the limits line, the summary line."""
    return console_text(lambda console: render.print_run(console, result), width=width)


def runs_list_text(page: RunPage, *, width: int = WIDTH) -> str:
    """`orch runs list`."""
    return console_text(lambda console: render.print_runs(console, page), width=width)


def summary_text(run: RunSummary) -> str:
    """The summary line alone, as printed for a day whose run already completed."""
    return console_text(lambda console: render.print_summary(console, run))


def row(
    symbol: str,
    *,
    rank: int | None,
    weight: str | None,
    price: str | None,
    held: str = "0",
    target: int | None = None,
    order: tuple[str, int] | None = None,
    client_order_id: str | None = None,
    status: str | None = None,
    skip: str | None = None,
    note: str | None = None,
    detail: str | None = None,
    leg: int = 0,
) -> MappingResult:
    """One mapping as `store.load_run` gives it; a skipped signal has no order fields."""
    side, qty = order if order else (None, None)
    return MappingResult(
        symbol=symbol,
        predicted_return=Decimal("0.0100"),
        rank=rank,
        target_weight=None if weight is None else Decimal(weight),
        price=None if price is None else Decimal(price),
        current_qty=Decimal(held),
        target_qty=target,
        order_qty=qty,
        order_side=side,
        client_order_id=client_order_id,
        order_status=status,
        skip_reason=skip,
        note=note,
        detail=detail,
        leg=leg,
    )


LIMITS_OFF: dict[str, Any] = {
    "max_order_notional": None,
    "max_gross_exposure": None,
    "max_orders_per_run": None,
    "long_only": False,
    "restricted_symbols": [],
    "min_trade_dollars": "0",
    "min_trade_pct": "0",
}


def summary(run_id: uuid.UUID, status: RunStatus, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "run_id": run_id,
        "strategy_id": "alpha_baseline",
        "as_of_date": AS_OF,
        "status": status,
        "dry_run": False,
        "num_signals": 0,
        "num_orders_submitted": 0,
        "num_orders_accepted": 0,
        "num_orders_rejected": 0,
        "duration_seconds": 1.5,
        "error_message": None,
        "started_at": STARTED,
    }
    return {**fields, **changes}


def completed_run() -> RunResult:
    """Buys, a sell, a short split into two legs, and four kinds of skipped signal."""
    return RunResult(
        **summary(
            COMPLETED_ID,
            "completed",
            num_signals=8,
            num_orders_submitted=4,
            num_orders_accepted=4,
            duration_seconds=2.3456,
            gateway_mode="paper",
        ),
        limits={
            **LIMITS_OFF,
            "max_order_notional": "30000",
            "max_gross_exposure": "2",
            "restricted_symbols": ["GME"],
            "min_trade_dollars": "100",
        },
        mappings=[
            row(
                "AAPL",
                rank=1,
                weight="0.25",
                price="190.00",
                target=131,
                order=("buy", 131),
                client_order_id="8f14e45fceea167a5a36dedd",
                status="filled",
            ),
            row(
                "MSFT",
                rank=2,
                weight="0.2",
                price="420.50",
                held="60",
                target=47,
                order=("sell", 13),
                client_order_id="c9f0f895fb98ab9159f51fd0",
                status="accepted",
            ),
            row(
                "GME",
                rank=3,
                weight="0.15",
                price="22.40",
                target=669,
                skip="restricted_symbol",
                note="symbol is on RESTRICTED_SYMBOLS",
                detail="symbol is on RESTRICTED_SYMBOLS",
            ),
            row(
                "NVDA",
                rank=4,
                weight="0.1",
                price="120.00",
                held="83",
                target=83,
                skip="already_at_target",
            ),
            row(
                "INTC",
                rank=5,
                weight="0.001",
                price="22.00",
                target=4,
                skip="below_min_trade",
                note="rebalance of $88.00 is below the minimum trade of $100.00",
                detail="rebalance of $88.00 is below the minimum trade of $100.00",
            ),
            row("GOOGL", rank=6, weight="0", price="170.00", target=0, skip="zero_weight"),
            row(
                "TSLA",
                rank=7,
                weight="-0.1",
                price="250.00",
                held="10",
                target=-40,
                order=("sell", 10),
                client_order_id="45c48cce2e2d7fbdea1afc51",
                status="filled",
            ),
            row(
                "TSLA",
                rank=7,
                weight="-0.1",
                price="250.00",
                held="10",
                target=-40,
                order=("sell", 40),
                client_order_id="d3d9446802a44259755d38e6",
                status="accepted",
                leg=1,
            ),
        ],
    )


UNKNOWN_DETAIL = (
    "no answer from the Execution Gateway (timed out) after 3 attempts; the order may exist: "
    "settle it with GET /api/v1/orders/6512bd43d9caa6e02c990b0a"
)
PARTIAL_ERROR = (
    "1 rejected, 1 blocked, 1 of unknown outcome, 1 not sent, 1 without a usable price; "
    f"`orch runs resume {PARTIAL_ID}` settles and sends what is left"
)


def partial_run() -> RunResult:
    """Orders the gateway did not accept, each with its message; a long-only note."""
    return RunResult(
        **summary(
            PARTIAL_ID,
            "partial",
            num_signals=7,
            num_orders_submitted=4,
            num_orders_accepted=1,
            num_orders_rejected=1,
            num_orders_blocked=1,
            num_orders_unknown=1,
            duration_seconds=4.5,
            error_message=PARTIAL_ERROR,
            gateway_mode="paper",
        ),
        limits={**LIMITS_OFF, "long_only": True},
        mappings=[
            row(
                "AAPL",
                rank=1,
                weight="0.25",
                price="190.00",
                target=131,
                order=("buy", 131),
                client_order_id="8f14e45fceea167a5a36dedd",
                status="new",
                detail="order received",  # the gateway's message on an accepted order: not shown
            ),
            row(
                "MSFT",
                rank=2,
                weight="0.2",
                price="420.50",
                target=47,
                order=("buy", 47),
                client_order_id="c9f0f895fb98ab9159f51fd0",
                status="rejected",
                detail="Position limit exceeded",
            ),
            row(
                "NVDA",
                rank=3,
                weight="0.15",
                price="120.00",
                target=125,
                order=("buy", 125),
                client_order_id="6512bd43d9caa6e02c990b0a",
                status="unknown",
                detail=UNKNOWN_DETAIL,
            ),
            row(
                "TSLA",
                rank=4,
                weight="0.1",
                price="250.00",
                target=40,
                order=("buy", 40),
                client_order_id="c20ad4d76fe97759aa27a0c9",
                status="blocked_kill_switch",
                detail="Kill-switch engaged - new orders blocked",
            ),
            row(
                "AMD",
                rank=5,
                weight="0.05",
                price="160.00",
                target=31,
                order=("buy", 31),
                client_order_id="c51ce410c124a10e0db5e4b9",
                status="not_sent",
                detail="not sent: Kill-switch engaged - new orders blocked",
            ),
            row(
                "AMZN",
                rank=6,
                weight="0.05",
                price=None,
                skip="price_unavailable",
                note="latest quote: stale: 75s old, limit 60s; latest trade: stale: 80s old, "
                "limit 60s",
                detail="latest quote: stale: 75s old, limit 60s; latest trade: stale: 80s old, "
                "limit 60s",
            ),
            row(
                "META",
                rank=7,
                weight="0",
                price="500.00",
                target=0,
                skip="long_only",
                note="long-only: short signal (weight -0.05) treated as 0",
                detail="long-only: short signal (weight -0.05) treated as 0",
            ),
        ],
    )


def failed_run() -> RunResult:
    """The signals never came: no mapping, the reason in the summary line."""
    return RunResult(
        **summary(
            FAILED_ID,
            "failed",
            duration_seconds=30.0,
            error_message="Signal Service answered HTTP 503 after 3 attempts",
        ),
        limits=dict(LIMITS_OFF),
    )


def dry_run() -> RunResult:
    """Planned orders, none sent."""
    return RunResult(
        **summary(DRY_ID, "completed", dry_run=True, num_signals=2, duration_seconds=0.8),
        limits=dict(LIMITS_OFF),
        mappings=[
            row(
                "AAPL",
                rank=1,
                weight="0.25",
                price="190.00",
                target=131,
                order=("buy", 131),
                client_order_id="8f14e45fceea167a5a36dedd",
                status="planned",
            ),
            row(
                "TSLA",
                rank=2,
                weight="-0.1",
                price="250.00",
                target=-40,
                order=("sell", 40),
                client_order_id="d3d9446802a44259755d38e6",
                status="planned",
            ),
        ],
    )


# --- the run: mapping table, limits line, summary line ------------------------------------


def test_completed_run() -> None:
    assert run_text(completed_run()) == expected(
        """
        Run 5d0c7c4e-8a2b-4f1e-9c3d-7b6a5e4f3a21
        ┏━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
        ┃ Symbol ┃  Weight ┃  Price ┃ Held ┃ Target ┃             Order ┃ Status                  ┃ Detail                     ┃
        ┡━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
        │ AAPL   │ +0.2500 │ 190.00 │    0 │    131 │           buy 131 │ filled                  │                            │
        │ MSFT   │ +0.2000 │ 420.50 │   60 │     47 │           sell 13 │ accepted                │                            │
        │ GME    │ +0.1500 │  22.40 │    0 │    669 │                 - │ skip: restricted_symbol │ symbol is on               │
        │        │         │        │      │        │                   │                         │ RESTRICTED_SYMBOLS         │
        │ NVDA   │ +0.1000 │ 120.00 │   83 │     83 │                 - │ skip: already_at_target │                            │
        │ INTC   │ +0.0010 │  22.00 │    0 │      4 │                 - │ skip: below_min_trade   │ rebalance of $88.00 is     │
        │        │         │        │      │        │                   │                         │ below the minimum trade of │
        │        │         │        │      │        │                   │                         │ $100.00                    │
        │ GOOGL  │ +0.0000 │ 170.00 │    0 │      0 │                 - │ skip: zero_weight       │                            │
        │ TSLA   │ -0.1000 │ 250.00 │   10 │    -40 │           sell 10 │ filled                  │                            │
        │ TSLA   │ -0.1000 │ 250.00 │   10 │    -40 │ sell 40 (2nd leg) │ accepted                │                            │
        └────────┴─────────┴────────┴──────┴────────┴───────────────────┴─────────────────────────┴────────────────────────────┘
        limits: max_order_notional=30000, max_gross_exposure=2, restricted_symbols=GME, min_trade_dollars=100
        completed run 5d0c7c4e-8a2b-4f1e-9c3d-7b6a5e4f3a21 alpha_baseline 2024-12-31 (gateway: paper): 8 signals, 4 orders submitted, 4 accepted, 0 rejected in 2.35s
        """
    )


def test_partial_run_shows_why_each_order_was_not_accepted() -> None:
    assert run_text(partial_run()) == expected(
        """
        Run e2a41f07-6c3b-4d8e-a915-0b7c2d4e6f81
        ┏━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━┳━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
        ┃ Symbol ┃  Weight ┃  Price ┃ Held ┃ Target ┃   Order ┃ Status                  ┃ Detail                               ┃
        ┡━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━╇━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
        │ AAPL   │ +0.2500 │ 190.00 │    0 │    131 │ buy 131 │ new                     │                                      │
        │ MSFT   │ +0.2000 │ 420.50 │    0 │     47 │  buy 47 │ rejected                │ Position limit exceeded              │
        │ NVDA   │ +0.1500 │ 120.00 │    0 │    125 │ buy 125 │ unknown                 │ no answer from the Execution Gateway │
        │        │         │        │      │        │         │                         │ (timed out) after 3 attempts; the    │
        │        │         │        │      │        │         │                         │ order may exist: settle it with GET  │
        │        │         │        │      │        │         │                         │ /api/v1/orders/6512bd43d9caa6e02c99… │
        │ TSLA   │ +0.1000 │ 250.00 │    0 │     40 │  buy 40 │ blocked_kill_switch     │ Kill-switch engaged - new orders     │
        │        │         │        │      │        │         │                         │ blocked                              │
        │ AMD    │ +0.0500 │ 160.00 │    0 │     31 │  buy 31 │ not_sent                │ not sent: Kill-switch engaged - new  │
        │        │         │        │      │        │         │                         │ orders blocked                       │
        │ AMZN   │ +0.0500 │      - │    0 │      - │       - │ skip: price_unavailable │ latest quote: stale: 75s old, limit  │
        │        │         │        │      │        │         │                         │ 60s; latest trade: stale: 80s old,   │
        │        │         │        │      │        │         │                         │ limit 60s                            │
        │ META   │ +0.0000 │ 500.00 │    0 │      0 │       - │ skip: long_only         │ long-only: short signal (weight      │
        │        │         │        │      │        │         │                         │ -0.05) treated as 0                  │
        └────────┴─────────┴────────┴──────┴────────┴─────────┴─────────────────────────┴──────────────────────────────────────┘
        limits: long_only
        partial run e2a41f07-6c3b-4d8e-a915-0b7c2d4e6f81 alpha_baseline 2024-12-31 (gateway: paper): 7 signals, 4 orders submitted, 1 accepted, 1 rejected, 1 blocked, 1 unknown in 4.50s - 1 rejected, 1 blocked, 1 of unknown outcome, 1 not sent, 1 without a usable price; `orch runs resume e2a41f07-6c3b-4d8e-a915-0b7c2d4e6f81` settles and sends what is left
        """
    )


def test_failed_run_without_signals() -> None:
    assert run_text(failed_run()) == expected(
        """
        failed run 9b3e2d1c-0a4f-4e5d-8c7b-6a5f4e3d2c1b alpha_baseline 2024-12-31: 0 signals, 0 orders submitted, 0 accepted, 0 rejected in 30.00s - Signal Service answered HTTP 503 after 3 attempts
        """
    )


def test_dry_run() -> None:
    assert run_text(dry_run()) == expected(
        """
        Run 17c5a9e3-2d4b-4f6a-8e1c-3b5d7f9a1c2e
        ┏━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━┳━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┓
        ┃ Symbol ┃  Weight ┃  Price ┃ Held ┃ Target ┃   Order ┃ Status  ┃ Detail ┃
        ┡━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━╇━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━┩
        │ AAPL   │ +0.2500 │ 190.00 │    0 │    131 │ buy 131 │ planned │        │
        │ TSLA   │ -0.1000 │ 250.00 │    0 │    -40 │ sell 40 │ planned │        │
        └────────┴─────────┴────────┴──────┴────────┴─────────┴─────────┴────────┘
        completed run 17c5a9e3-2d4b-4f6a-8e1c-3b5d7f9a1c2e alpha_baseline 2024-12-31 (dry run: nothing sent): 2 signals, 0 orders submitted, 0 accepted, 0 rejected in 0.80s
        """
    )


def test_fractional_and_missing_quantities() -> None:
    result = RunResult(
        **summary(FRACTIONAL_ID, "partial", num_signals=4, num_orders_submitted=1),
        mappings=[
            row(
                "SIRI",
                rank=1,
                weight="0.1",
                price="3.4567",
                held="12.75",
                target=2892,
                order=("buy", 2879),
                client_order_id="aab3238922bcc25a6f606eb5",
                status="partially_filled",
            ),
            row(
                "QQQ",
                rank=2,
                weight="0.05",
                price="480",
                held="10.000",
                target=10,
                skip="already_at_target",
            ),
            row(
                "V",
                rank=3,
                weight="0.05",
                price=None,
                held="0.25",
                skip="price_unavailable",
                note="not known to the market-data API",
                detail="not known to the market-data API",
            ),
            row("JPM", rank=None, weight=None, price="200", held="-3.5"),
        ],
    )
    assert run_text(result) == expected(
        """
        Run a0b1c2d3-e4f5-4a6b-9c8d-7e6f5a4b3c2d
        ┏━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━━┳━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
        ┃ Symbol ┃  Weight ┃  Price ┃  Held ┃ Target ┃    Order ┃ Status                  ┃ Detail                           ┃
        ┡━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━━╇━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
        │ SIRI   │ +0.1000 │ 3.4567 │ 12.75 │   2892 │ buy 2879 │ partially_filled        │                                  │
        │ QQQ    │ +0.0500 │ 480.00 │    10 │     10 │        - │ skip: already_at_target │                                  │
        │ V      │ +0.0500 │      - │  0.25 │      - │        - │ skip: price_unavailable │ not known to the market-data API │
        │ JPM    │       - │ 200.00 │  -3.5 │      - │        - │ -                       │                                  │
        └────────┴─────────┴────────┴───────┴────────┴──────────┴─────────────────────────┴──────────────────────────────────┘
        partial run a0b1c2d3-e4f5-4a6b-9c8d-7e6f5a4b3c2d alpha_baseline 2024-12-31: 4 signals, 1 order submitted, 0 accepted, 0 rejected in 1.50s
        """
    )


def test_mapping_table_at_80_columns() -> None:
    assert run_text(completed_run(), width=NARROW) == expected(
        """
        Run 5d0c7c4e-8a2b-4f1e-9c3d-7b6a5e4f3a21
        ┏━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━┓
        ┃ Symbol ┃  Weight ┃  Price ┃ Held ┃ Target ┃           Order ┃ Status         ┃
        ┡━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━┩
        │ AAPL   │ +0.2500 │ 190.00 │    0 │    131 │         buy 131 │ filled         │
        │ MSFT   │ +0.2000 │ 420.50 │   60 │     47 │         sell 13 │ accepted       │
        │ GME    │ +0.1500 │  22.40 │    0 │    669 │               - │ restricted     │
        │        │         │        │      │        │                 │ symbol         │
        │ NVDA   │ +0.1000 │ 120.00 │   83 │     83 │               - │ already at     │
        │        │         │        │      │        │                 │ target         │
        │ INTC   │ +0.0010 │  22.00 │    0 │      4 │               - │ below min      │
        │        │         │        │      │        │                 │ trade          │
        │ GOOGL  │ +0.0000 │ 170.00 │    0 │      0 │               - │ zero weight    │
        │ TSLA   │ -0.1000 │ 250.00 │   10 │    -40 │         sell 10 │ filled         │
        │ TSLA   │ -0.1000 │ 250.00 │   10 │    -40 │    sell 40 (2nd │ accepted       │
        │        │         │        │      │        │            leg) │                │
        └────────┴─────────┴────────┴──────┴────────┴─────────────────┴────────────────┘
        limits: max_order_notional=30000, max_gross_exposure=2, restricted_symbols=GME,
        min_trade_dollars=100
        completed run 5d0c7c4e-8a2b-4f1e-9c3d-7b6a5e4f3a21 alpha_baseline 2024-12-31 (gateway: paper): 8 signals, 4 orders submitted, 4 accepted, 0 rejected in 2.35s
        """
    )


# --- the limits line ----------------------------------------------------------------------


def test_limits_line_names_every_limit_that_is_on() -> None:
    limits = {
        "max_order_notional": "5000",
        "max_gross_exposure": "1.5",
        "max_orders_per_run": 20,
        "long_only": True,
        "restricted_symbols": ["AMC", "GME"],
        "min_trade_dollars": "250",
        "min_trade_pct": "0.5",
    }
    assert render.limits_line(limits) == (
        "limits: max_order_notional=5000, max_gross_exposure=1.5, max_orders_per_run=20, "
        "long_only, restricted_symbols=AMC,GME, min_trade_dollars=250, min_trade_pct=0.5"
    )


def test_limits_line_is_absent_when_every_limit_is_off() -> None:
    assert render.limits_line(LIMITS_OFF) is None
    assert render.limits_line({}) is None


# --- the summary line for each status -----------------------------------------------------

RUNNING = RunSummary(
    **summary(
        DRY_ID,
        "running",
        num_signals=3,
        num_orders_submitted=1,
        duration_seconds=None,
        gateway_mode="dry_run",
    )
)


@pytest.mark.parametrize(
    ("run", "text"),
    [
        pytest.param(
            completed_run(),
            """
            completed run 5d0c7c4e-8a2b-4f1e-9c3d-7b6a5e4f3a21 alpha_baseline 2024-12-31 (gateway: paper): 8 signals, 4 orders submitted, 4 accepted, 0 rejected in 2.35s
            """,
            id="completed",
        ),
        pytest.param(
            partial_run(),
            """
            partial run e2a41f07-6c3b-4d8e-a915-0b7c2d4e6f81 alpha_baseline 2024-12-31 (gateway: paper): 7 signals, 4 orders submitted, 1 accepted, 1 rejected, 1 blocked, 1 unknown in 4.50s - 1 rejected, 1 blocked, 1 of unknown outcome, 1 not sent, 1 without a usable price; `orch runs resume e2a41f07-6c3b-4d8e-a915-0b7c2d4e6f81` settles and sends what is left
            """,
            id="partial",
        ),
        pytest.param(
            failed_run(),
            """
            failed run 9b3e2d1c-0a4f-4e5d-8c7b-6a5f4e3d2c1b alpha_baseline 2024-12-31: 0 signals, 0 orders submitted, 0 accepted, 0 rejected in 30.00s - Signal Service answered HTTP 503 after 3 attempts
            """,
            id="failed",
        ),
        pytest.param(
            RUNNING,
            """
            running run 17c5a9e3-2d4b-4f6a-8e1c-3b5d7f9a1c2e alpha_baseline 2024-12-31 (gateway: dry_run): 3 signals, 1 order submitted, 0 accepted, 0 rejected
            """,
            id="running",
        ),
        pytest.param(
            dry_run(),
            """
            completed run 17c5a9e3-2d4b-4f6a-8e1c-3b5d7f9a1c2e alpha_baseline 2024-12-31 (dry run: nothing sent): 2 signals, 0 orders submitted, 0 accepted, 0 rejected in 0.80s
            """,
            id="dry-run",
        ),
    ],
)
def test_summary_line(run: RunSummary, text: str) -> None:
    assert summary_text(run) == expected(text)


# --- orch runs list -----------------------------------------------------------------------


def listed(run_id: str, status: RunStatus, started: datetime | None, **fields: Any) -> RunSummary:
    trading_day = AS_OF if started is None else started.date()
    return RunSummary(
        **summary(uuid.UUID(run_id), status, as_of_date=trading_day, started_at=started, **fields)
    )


PAGE = RunPage(
    runs=[
        listed(
            "0b1c2d3e-4f50-4a6b-8c7d-8e9fa0b1c2d3",
            "running",
            None,
            num_signals=12,
            num_orders_submitted=5,
            num_orders_accepted=5,
            duration_seconds=None,
        ),
        listed(
            "3a7f9c2e-1b4d-4e6f-8a0c-2d4f6b8e0a1c",
            "partial",
            datetime(2024, 12, 30, 14, 31, 2, tzinfo=UTC),
            num_signals=7,
            num_orders_submitted=4,
            num_orders_accepted=1,
            num_orders_rejected=1,
        ),
        listed(
            "c4e6a8b0-d2f4-4a6c-9e8b-0f2a4c6e8b1d",
            "completed",
            datetime(2024, 12, 27, 14, 30, 59, tzinfo=UTC),
            strategy_id="momentum_v2",
            num_signals=8,
            num_orders_submitted=4,
            num_orders_accepted=4,
        ),
        listed(
            "71d3f5b7-9a1c-4e3f-b5d7-f9a1c3e5b7d9",
            "failed",
            datetime(2024, 12, 26, 9, 5, tzinfo=UTC),
            error_message="Signal Service answered HTTP 503 after 3 attempts",
        ),
    ],
    total=9,
    limit=4,
    offset=2,
)


def test_runs_list() -> None:
    assert runs_list_text(PAGE) == expected(
        """
                                                             Runs 3-6 of 9
        ┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━┓
        ┃ Run id                               ┃ Strategy       ┃ Date       ┃ Status    ┃ Accepted/sent ┃ Started (UTC)       ┃
        ┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━┩
        │ 0b1c2d3e-4f50-4a6b-8c7d-8e9fa0b1c2d3 │ alpha_baseline │ 2024-12-31 │ running   │ 5/5           │ -                   │
        │ 3a7f9c2e-1b4d-4e6f-8a0c-2d4f6b8e0a1c │ alpha_baseline │ 2024-12-30 │ partial   │ 1/4           │ 2024-12-30 14:31:02 │
        │ c4e6a8b0-d2f4-4a6c-9e8b-0f2a4c6e8b1d │ momentum_v2    │ 2024-12-27 │ completed │ 4/4           │ 2024-12-27 14:30:59 │
        │ 71d3f5b7-9a1c-4e3f-b5d7-f9a1c3e5b7d9 │ alpha_baseline │ 2024-12-26 │ failed    │ 0/0           │ 2024-12-26 09:05:00 │
        └──────────────────────────────────────┴────────────────┴────────────┴───────────┴───────────────┴─────────────────────┘
        """
    )


def test_runs_list_marks_a_dry_run() -> None:
    page = RunPage(
        runs=[RunSummary(**summary(DRY_ID, "completed", dry_run=True, num_signals=2))],
        total=1,
        limit=50,
        offset=0,
    )
    text = console_text(lambda console: render.print_runs(console, page), width=200)
    assert "completed (dry run)" in text
    # At 80 columns the marker is shorter and the strategy keeps its room, folded if need be.
    narrow = console_text(lambda console: render.print_runs(console, page), width=NARROW)
    assert "completed (dry)" in narrow
    strategy = [line.split("\u2502")[2].strip() for line in narrow.splitlines()[4:-1]]
    assert "".join(strategy) == "alpha_baseline"


def test_runs_list_empty_page() -> None:
    page = RunPage(runs=[], total=9, limit=50, offset=50)
    assert runs_list_text(page) == expected(
        """
                           No runs at offset 50 (9 in all)
        ┏━━━━━━━━┳━━━━━━━━━━┳━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
        ┃ Run id ┃ Strategy ┃ Date ┃ Status ┃ Accepted/sent ┃ Started (UTC) ┃
        ┡━━━━━━━━╇━━━━━━━━━━╇━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
        └────────┴──────────┴──────┴────────┴───────────────┴───────────────┘
        """
    )


def test_runs_list_at_80_columns() -> None:
    assert runs_list_text(PAGE, width=NARROW) == expected(
        """
                                         Runs 3-6 of 9
        ┏━━━━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━┓
        ┃ Run id   ┃ Strategy       ┃ Date       ┃ Status    ┃ Acc/sent ┃ Started UTC ┃
        ┡━━━━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━┩
        │ 0b1c2d3e │ alpha_baseline │ 2024-12-31 │ running   │ 5/5      │ -           │
        │ 3a7f9c2e │ alpha_baseline │ 2024-12-30 │ partial   │ 1/4      │ 12-30 14:31 │
        │ c4e6a8b0 │ momentum_v2    │ 2024-12-27 │ completed │ 4/4      │ 12-27 14:30 │
        │ 71d3f5b7 │ alpha_baseline │ 2024-12-26 │ failed    │ 0/0      │ 12-26 09:05 │
        └──────────┴────────────────┴────────────┴───────────┴──────────┴─────────────┘
        """
    )


# --- what the field showed: cron-log width, outside text, refusals, inputs, resumes -------


def test_completed_run_in_a_cron_log_shows_every_column() -> None:
    assert run_text(completed_run(), width=180) == expected(
        """
        Run 5d0c7c4e-8a2b-4f1e-9c3d-7b6a5e4f3a21
        ┏━━━━━━━━┳━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
        ┃ Symbol ┃ Rank ┃  Weight ┃  Price ┃ Held ┃ Target ┃             Order ┃ Status                  ┃ Client order id          ┃ Detail                                               ┃
        ┡━━━━━━━━╇━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
        │ AAPL   │    1 │ +0.2500 │ 190.00 │    0 │    131 │           buy 131 │ filled                  │ 8f14e45fceea167a5a36dedd │                                                      │
        │ MSFT   │    2 │ +0.2000 │ 420.50 │   60 │     47 │           sell 13 │ accepted                │ c9f0f895fb98ab9159f51fd0 │                                                      │
        │ GME    │    3 │ +0.1500 │  22.40 │    0 │    669 │                 - │ skip: restricted_symbol │                          │ symbol is on RESTRICTED_SYMBOLS                      │
        │ NVDA   │    4 │ +0.1000 │ 120.00 │   83 │     83 │                 - │ skip: already_at_target │                          │                                                      │
        │ INTC   │    5 │ +0.0010 │  22.00 │    0 │      4 │                 - │ skip: below_min_trade   │                          │ rebalance of $88.00 is below the minimum trade of    │
        │        │      │         │        │      │        │                   │                         │                          │ $100.00                                              │
        │ GOOGL  │    6 │ +0.0000 │ 170.00 │    0 │      0 │                 - │ skip: zero_weight       │                          │                                                      │
        │ TSLA   │    7 │ -0.1000 │ 250.00 │   10 │    -40 │           sell 10 │ filled                  │ 45c48cce2e2d7fbdea1afc51 │                                                      │
        │ TSLA   │    7 │ -0.1000 │ 250.00 │   10 │    -40 │ sell 40 (2nd leg) │ accepted                │ d3d9446802a44259755d38e6 │                                                      │
        └────────┴──────┴─────────┴────────┴──────┴────────┴───────────────────┴─────────────────────────┴──────────────────────────┴──────────────────────────────────────────────────────┘
        limits: max_order_notional=30000, max_gross_exposure=2, restricted_symbols=GME, min_trade_dollars=100
        completed run 5d0c7c4e-8a2b-4f1e-9c3d-7b6a5e4f3a21 alpha_baseline 2024-12-31 (gateway: paper): 8 signals, 4 orders submitted, 4 accepted, 0 rejected in 2.35s
        """
    )


HOSTILE = RunResult(
    **summary(
        PARTIAL_ID,
        "failed",
        strategy_id="alpha_baseline",
        num_signals=1,
        num_orders_submitted=1,
        num_orders_rejected=1,
        error_message="gateway said [/x] and [red]no[/red]",
    ),
    mappings=[
        row(
            "AAPL",
            rank=1,
            weight="0.5",
            price="150",
            target=133,
            order=("buy", 133),
            client_order_id="8f14e45fceea167a5a36dedd",
            status="[bold]rejected[/bold]",
            detail="Order rejected by fat-finger checks: [/x] notional",
        ),
    ],
)


def test_text_from_outside_is_printed_as_written() -> None:
    assert run_text(HOSTILE) == expected(
        """
        Run e2a41f07-6c3b-4d8e-a915-0b7c2d4e6f81
        ┏━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━┳━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
        ┃ Symbol ┃  Weight ┃  Price ┃ Held ┃ Target ┃   Order ┃ Status                ┃ Detail                                 ┃
        ┡━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━╇━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
        │ AAPL   │ +0.5000 │ 150.00 │    0 │    133 │ buy 133 │ [bold]rejected[/bold] │ Order rejected by fat-finger checks:   │
        │        │         │        │      │        │         │                       │ [/x] notional                          │
        └────────┴─────────┴────────┴──────┴────────┴─────────┴───────────────────────┴────────────────────────────────────────┘
        failed run e2a41f07-6c3b-4d8e-a915-0b7c2d4e6f81 alpha_baseline 2024-12-31: 1 signal, 1 order submitted, 0 accepted, 1 rejected in 1.50s - gateway said [/x] and [red]no[/red]
        """
    )


REFUSED_REASON = "pre-trade limit breached, no order was sent: MAX_ORDERS_PER_RUN: 2 > 1"
REFUSED = RunResult(
    **summary(FAILED_ID, "failed", num_signals=2, error_message=REFUSED_REASON),
    mappings=[
        row(
            symbol,
            rank=rank,
            weight="0.5",
            price="100",
            target=100,
            order=("buy", 100),
            client_order_id=f"{rank:024d}",
            status="not_sent",
            detail=REFUSED_REASON,
        )
        for rank, symbol in enumerate(("AAPL", "MSFT"), start=1)
    ],
)


def test_a_refused_plan_gives_its_reason_once() -> None:
    text = run_text(REFUSED, width=180)
    assert text.count("MAX_ORDERS_PER_RUN") == 1
    assert text == expected(
        """
        Run 9b3e2d1c-0a4f-4e5d-8c7b-6a5f4e3d2c1b
        ┏━━━━━━━━┳━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━┳━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━┓
        ┃ Symbol ┃ Rank ┃  Weight ┃  Price ┃ Held ┃ Target ┃   Order ┃ Status   ┃ Client order id          ┃ Detail ┃
        ┡━━━━━━━━╇━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━╇━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━┩
        │ AAPL   │    1 │ +0.5000 │ 100.00 │    0 │    100 │ buy 100 │ not_sent │ 000000000000000000000001 │        │
        │ MSFT   │    2 │ +0.5000 │ 100.00 │    0 │    100 │ buy 100 │ not_sent │ 000000000000000000000002 │        │
        └────────┴──────┴─────────┴────────┴──────┴────────┴─────────┴──────────┴──────────────────────────┴────────┘
        failed run 9b3e2d1c-0a4f-4e5d-8c7b-6a5f4e3d2c1b alpha_baseline 2024-12-31: 2 signals, 0 orders submitted, 0 accepted, 0 rejected in 1.50s - pre-trade limit breached, no order was sent: MAX_ORDERS_PER_RUN: 2 > 1
        """
    )


RESUMED = RunSummary(
    **summary(
        COMPLETED_ID,
        "completed",
        num_signals=5,
        num_orders_submitted=3,
        num_orders_accepted=3,
        duration_seconds=0.42,
        elapsed_seconds=358.0,
        num_symbols=5,
        capital=Decimal("100000"),
        max_position_size=Decimal("20000"),
        price_source="alpaca",
    )
)


def test_summary_line_of_a_resumed_run_names_its_inputs_and_both_times() -> None:
    assert summary_text(RESUMED) == expected(
        """
        completed run 5d0c7c4e-8a2b-4f1e-9c3d-7b6a5e4f3a21 alpha_baseline 2024-12-31: 5 signals, 3 orders submitted, 3 accepted, 0 rejected in 0.42s (resumed; 358.00s since it started); 5 symbols, capital $100,000.00, cap $20,000.00, prices alpaca
        """
    )


def test_summary_line_is_never_wrapped() -> None:
    assert len(summary_text(partial_run()).splitlines()) == 1
