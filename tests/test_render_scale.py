"""Output that scales: a large run lists its orders and counts its skips; a table for a log is
laid out directly, character for character as Rich lays it out.

Exact output as in `test_render.py` (same helpers: no colour, a fixed width, trailing spaces
dropped); the direct layout is compared with Rich's own on generated tables.
"""

from __future__ import annotations

import io
import uuid
from collections import Counter
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table
from rich.text import Text
from test_render import LIMITS_OFF, NARROW, WIDTH, console_text, expected, row, summary

from orchestrator_cli import layout, render
from orchestrator_cli.schemas import MappingResult, RunResult

LARGE_ID = uuid.UUID("6f1d2c3b-4a59-4e8f-9d7c-1b2a3c4d5e6f")


def large_run() -> RunResult:
    """55 mappings: three orders among 49 zero weights, two too small, one without a price."""
    orders = [
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
            target=47,
            order=("buy", 47),
            client_order_id="c9f0f895fb98ab9159f51fd0",
            status="rejected",
            detail="Position limit exceeded",
        ),
        row(
            "TSLA",
            rank=55,
            weight="-0.1",
            price="250.00",
            held="10",
            target=-40,
            order=("sell", 50),
            client_order_id="45c48cce2e2d7fbdea1afc51",
            status="accepted",
        ),
    ]
    tiny = [
        row(symbol, rank=rank, weight="0.0001", price="600000.00", target=0, skip=reason)
        for rank, symbol, reason in (
            (3, "BRK.A", "qty_less_than_one_share"),
            (4, "NVR", "qty_less_than_one_share"),
        )
    ]
    unpriced = row(
        "AMZN",
        rank=5,
        weight="0.1",
        price=None,
        skip="price_unavailable",
        note="not known to the market-data API",
        detail="not known to the market-data API",
    )
    zero = [
        row(f"Z{n:03d}", rank=n + 5, weight="0", price=None, target=0, skip="zero_weight")
        for n in range(1, 50)
    ]
    mappings = [*orders[:2], *tiny, unpriced, *zero, orders[2]]
    return RunResult(
        **summary(
            LARGE_ID,
            "partial",
            num_signals=55,
            num_orders_submitted=3,
            num_orders_accepted=2,
            num_orders_rejected=1,
            duration_seconds=2.0,
            gateway_mode="paper",
        ),
        limits=dict(LIMITS_OFF),
        mappings=mappings,
    )


def run_text(result: RunResult, *, width: int = WIDTH, all_rows: bool = False) -> str:
    return console_text(
        lambda console: render.print_run(console, result, all_rows=all_rows), width=width
    )


def test_a_large_run_lists_its_orders_and_counts_its_skips() -> None:
    assert run_text(large_run()) == expected(
        """
        Run 6f1d2c3b-4a59-4e8f-9d7c-1b2a3c4d5e6f
        ┏━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━┳━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━┓
        ┃ Symbol ┃  Weight ┃  Price ┃ Held ┃ Target ┃   Order ┃ Status   ┃ Detail                  ┃
        ┡━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━╇━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━┩
        │ AAPL   │ +0.2500 │ 190.00 │    0 │    131 │ buy 131 │ filled   │                         │
        │ MSFT   │ +0.2000 │ 420.50 │    0 │     47 │  buy 47 │ rejected │ Position limit exceeded │
        │ TSLA   │ -0.1000 │ 250.00 │   10 │    -40 │ sell 50 │ accepted │                         │
        └────────┴─────────┴────────┴──────┴────────┴─────────┴──────────┴─────────────────────────┘
        skipped: 49 zero_weight, 2 qty_less_than_one_share, 1 price_unavailable (--all-rows lists them)
        partial run 6f1d2c3b-4a59-4e8f-9d7c-1b2a3c4d5e6f alpha_baseline 2024-12-31 (gateway: paper): 55 signals, 3 orders submitted, 2 accepted, 1 rejected in 2.00s
        """
    )


def test_a_large_run_at_80_columns_keeps_the_skipped_line_whole() -> None:
    assert run_text(large_run(), width=NARROW) == expected(
        """
        Run 6f1d2c3b-4a59-4e8f-9d7c-1b2a3c4d5e6f
        ┏━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━┳━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━┓
        ┃ Symbol ┃  Weight ┃  Price ┃ Held ┃ Target ┃   Order ┃ Status   ┃
        ┡━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━╇━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━┩
        │ AAPL   │ +0.2500 │ 190.00 │    0 │    131 │ buy 131 │ filled   │
        │ MSFT   │ +0.2000 │ 420.50 │    0 │     47 │  buy 47 │ rejected │
        │ TSLA   │ -0.1000 │ 250.00 │   10 │    -40 │ sell 50 │ accepted │
        └────────┴─────────┴────────┴──────┴────────┴─────────┴──────────┘
        skipped: 49 zero_weight, 2 qty_less_than_one_share, 1 price_unavailable (--all-rows lists them)
        partial run 6f1d2c3b-4a59-4e8f-9d7c-1b2a3c4d5e6f alpha_baseline 2024-12-31 (gateway: paper): 55 signals, 3 orders submitted, 2 accepted, 1 rejected in 2.00s
        """
    )


def test_all_rows_lists_every_mapping_of_a_large_run() -> None:
    text = run_text(large_run(), all_rows=True)
    body = [line for line in text.splitlines() if line.startswith("│ ") and line[2] != " "]
    assert [line.split()[1] for line in body] == [m.symbol for m in large_run().mappings]
    assert "skipped:" not in text
    (last_zero,) = (line for line in body if line.startswith("│ Z049 "))
    assert "skip: zero_weight" in last_zero


def test_a_run_of_50_mappings_is_listed_whole() -> None:
    result = large_run()
    result.mappings = result.mappings[:50]
    text = run_text(result)
    assert "skipped:" not in text
    assert text.count("skip: zero_weight") == 45


def test_a_large_run_of_skips_only_prints_no_empty_table() -> None:
    result = large_run()
    result.mappings = [m for m in result.mappings if m.skip_reason]
    lines = run_text(result).splitlines()
    assert lines[0] == (
        "skipped: 49 zero_weight, 2 qty_less_than_one_share, 1 price_unavailable "
        "(--all-rows lists them)"
    )
    assert lines[1].startswith("partial run 6f1d2c3b")


def test_skipped_line_puts_the_most_frequent_reason_first() -> None:
    skips = Counter(
        {"price_unavailable": 2, "zero_weight": 1990, "qty_less_than_one_share": 8, "b": 2}
    )
    assert render.skipped_line(skips) == (
        "skipped: 1,990 zero_weight, 8 qty_less_than_one_share, 2 b, 2 price_unavailable "
        "(--all-rows lists them)"
    )


# --- the direct layout: what Rich would print, without Rich's cost -------------------------


def plain_console(width: int) -> Console:
    return Console(
        file=io.StringIO(),
        width=width,
        color_system=None,
        force_terminal=False,
        force_interactive=False,
        force_jupyter=False,
        legacy_windows=False,
        highlight=False,
    )


def printed(width: int, draw: Any) -> str:
    console = plain_console(width)
    draw(console)
    output = console.file.getvalue()
    assert isinstance(output, str)
    return output


def rich_printed(width: int, table: Table) -> str:
    """What Rich prints for `table`, each line without the spaces padding it to the table's
    width (which `print_table` leaves out where nothing is styled)."""
    lines = printed(width, lambda c: c.print(table)).splitlines()
    return "".join(line.rstrip() + "\n" for line in lines)


def many_orders(count: int) -> RunResult:
    result = large_run()
    template = result.mappings[0]
    result.mappings = [
        template.model_copy(
            update={"symbol": f"S{n:05d}", "rank": n, "client_order_id": f"{n:024d}"}
        )
        for n in range(1, count + 1)
    ]
    return result


def test_a_large_table_in_a_log_is_laid_out_directly_as_rich_would() -> None:
    result = many_orders(300)
    table = render.mapping_table(result, width=180)
    console = plain_console(180)
    lines = layout.plain_table(console, table)
    assert lines is not None
    assert len(lines) == 300 + 5  # title, top, header, separator, rows, bottom
    assert printed(180, lambda c: layout.print_table(c, table)) == rich_printed(180, table)


def test_a_terminal_with_colour_gets_rich_layout() -> None:
    console = Console(file=io.StringIO(), width=180, color_system="truecolor", force_terminal=True)
    assert layout.plain_table(console, render.mapping_table(many_orders(3), width=180)) is None


def test_lines_in_a_log_end_at_their_last_character() -> None:
    """A title, and a table without edges (`orch config`, `orch health`), are padded by Rich
    to the table's width; in a log or a pipe each line ends where its text does."""
    titled = render.mapping_table(many_orders(3), width=180)
    edgeless = Table(show_edge=False)
    edgeless.add_column("check")
    edgeless.add_column("detail")
    edgeless.add_row("database", "ok")
    edgeless.add_row("market", "a session on 2026-11-30, closing at 16:00 EST")
    for table in (titled, edgeless):
        output = printed(180, lambda c, t=table: layout.print_table(c, t))
        assert output == rich_printed(180, table)
        assert all(line == line.rstrip() for line in output.splitlines())
    assert output.splitlines()[2] == " database \u2502 ok"


def test_a_terminal_with_colour_gets_exactly_what_rich_prints() -> None:
    table = render.mapping_table(many_orders(3), width=180)
    outputs = []
    for draw in (lambda c: layout.print_table(c, table), lambda c: c.print(table)):
        console = Console(
            file=io.StringIO(), width=180, color_system="truecolor", force_terminal=True
        )
        draw(console)
        outputs.append(console.file.getvalue())
    assert "\x1b[" in outputs[0]
    assert outputs[0] == outputs[1]


def test_text_that_is_markup_or_not_plain_ascii_goes_through_rich() -> None:
    console = plain_console(180)
    for cell in ("caf\u00e9", "a\tb", " padded", "two  spaces", "\u4e2d"):
        table = Table(title="t")
        table.add_column("Detail")
        table.add_row(Text(cell))
        assert layout.plain_table(console, table) is None, cell


# Cells as this module writes them: words of printable ASCII (brackets and colons included),
# single spaces between words, as `Text` (never markup) or as `str`, which Rich reads as markup
# and emoji codes (`:smile:`), so some words are those.
ASCII_WORD = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8
)
SPECIAL_WORD = st.sampled_from(["[b]bold[/b]", ":smile:", "14:31:05", "a:b:"])
WORD = st.integers(min_value=0, max_value=19).flatmap(
    lambda n: SPECIAL_WORD if n == 0 else ASCII_WORD  # one word in twenty
)
CELL_TEXT = st.lists(WORD, max_size=3).map(" ".join)
MARKUP = CELL_TEXT.filter(lambda s: "[" not in s.replace("[b]", "").replace("[/b]", ""))
CELL = st.one_of(CELL_TEXT.map(Text), MARKUP)


@st.composite
def tables(draw: st.DrawFn) -> Table:
    columns = draw(st.integers(min_value=1, max_value=6))
    title = draw(st.one_of(st.none(), MARKUP))
    table = Table(title=title, title_justify=draw(st.sampled_from(["left", "center"])))
    for _ in range(columns):
        header = draw(MARKUP)
        table.add_column(
            header,
            justify=draw(st.sampled_from(["left", "right"])),
            no_wrap=draw(st.booleans()),
        )
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        table.add_row(*(draw(CELL) for _ in range(columns)))
    return table


@settings(max_examples=400, deadline=None)
@given(table=tables(), width=st.integers(min_value=20, max_value=240))
def test_the_direct_layout_is_what_rich_prints(table: Table, width: int) -> None:
    if layout.plain_table(plain_console(width), table) is None:
        event("laid out by Rich")
        return  # too wide, or text that Rich would change
    event("laid out directly")
    assert printed(width, lambda c: layout.print_table(c, table)) == rich_printed(width, table)


def test_the_mapping_tables_of_this_module_are_laid_out_directly_at_log_width() -> None:
    """Tables as a cron log gets them (180 columns, nothing wrapped): direct, and the same."""
    from test_render import dry_run

    for result in (dry_run(), large_run(), many_orders(60)):
        table = render.mapping_table(result, width=180)
        assert layout.plain_table(plain_console(180), table) is not None
        assert printed(180, lambda c, t=table: layout.print_table(c, t)) == rich_printed(180, table)


def test_a_large_run_prints_each_order_once(monkeypatch: Any) -> None:
    result = many_orders(60)
    result.mappings.append(
        MappingResult.model_validate(
            {**row("ZZZ", rank=61, weight="0", price=None, skip="zero_weight").model_dump()}
        )
    )
    text = run_text(result, width=180)
    assert text.count("│ S000") == 60
    assert "skipped: 1 zero_weight (--all-rows lists them)" in text
