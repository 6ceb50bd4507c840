"""Tables printed as Rich prints them, without Rich's cost where nothing can differ.

Rich lays out a table at about a millisecond a row (every cell measured, wrapped and padded
as a renderable), so a 3,000-row run table took seconds. When what is printed cannot depend on
that work, `print_table` writes the same characters directly, some thirty times faster:
a console that writes no colour or style (a cron log, a pipe), a table of the plain shape this
project draws (a box, a header, no footer, no fixed widths), every cell one line of printable
ASCII that Rich would not change (no markup or emoji code in a `str`, no leading, trailing or
double spaces), and the whole table within the console's width, so nothing wraps. Anything
else goes through Rich. `tests/test_render_scale.py` checks the two print the same, on
generated tables and on this project's own. Either way, a line printed where nothing is styled
ends at its last visible character.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.box import Box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text


def print_table(console: Console, table: Table) -> None:
    """Print `table` as `console.print(table)` would, directly when `plain_table` can.

    On a console that writes no colour or style (a cron log, a pipe), each line goes out
    without the spaces Rich pads it with to the table's width (after a title, or in a table
    without edges): there they carry nothing, and they would end every line of a log.
    """
    if console.color_system is not None or console.record:
        console.print(table)
        return
    lines = plain_table(console, table)
    if lines is None:
        with console.capture() as capture:
            console.print(table)
        lines = capture.get().splitlines()
    console.print(Text("\n".join(line.rstrip() for line in lines)), soft_wrap=True)


def plain_table(console: Console, table: Table) -> list[str] | None:
    """The lines `console.print(table)` prints, when nothing about them depends on Rich's
    layout (see the module's docstring); else None."""
    columns = _plain_columns(console, table)
    if columns is None:
        return None
    widths = [max(map(len, cells)) + 2 for cells in columns]  # one space of padding each side
    table_width = sum(widths) + len(widths) + 1
    title = _plain_title(console, table, table_width)
    if table_width > console.width or title is None or table.box is None:
        return None
    safe = console.safe_box if table.safe_box is None else table.safe_box
    frame = table.box.substitute(console.options, safe=safe)
    justify = [column.justify for column in table.columns]
    header, *body = zip(*columns, strict=True)
    lines = [
        *title,
        frame.get_top(widths),
        _line(header, widths, justify, frame.head_left, frame.head_vertical, frame.head_right),
        frame.get_row(widths, "head"),
    ]
    for number, row in enumerate(body, start=1):
        lines.append(_line(row, widths, justify, *_edges(frame, last=number == len(body))))
    lines.append(frame.get_bottom(widths))
    return lines


def _plain_cell(console: Console, cell: RenderableType) -> str | None:
    """The one line a cell shows, or None when Rich could render it otherwise (markup, emoji
    codes, wide or control characters, whitespace that wrapping or justifying would change)."""
    if isinstance(cell, str):
        cell = console.render_str(cell) if "[" in cell or ":" in cell else Text(cell)
    if not isinstance(cell, Text) or cell.justify is not None or cell.overflow is not None:
        return None
    plain = cell.plain
    if plain.isascii() and plain.isprintable() and plain == plain.strip() and "  " not in plain:
        return plain
    return None


def _plain_columns(console: Console, table: Table) -> list[list[str]] | None:
    """Each column's header and cells as plain text, or None when Rich must lay them out."""
    if console.color_system is not None or console.record or not _is_plain_layout(table):
        return None
    columns = []
    for column in table.columns:
        cells = [_plain_cell(console, cell) for cell in (column.header, *column.cells)]
        plain = [cell for cell in cells if cell is not None]
        if len(plain) < len(cells):
            return None
        columns.append(plain)
    return columns


def _plain_title(console: Console, table: Table, width: int) -> list[str] | None:
    """The title's line (none without a title), or None when Rich would wrap or change it."""
    if not table.title:
        return []
    title = _plain_cell(console, table.title)
    if title is None or len(title) > width:
        return None
    left = (width - len(title)) // 2 if table.title_justify == "center" else 0
    return [(" " * left + title).ljust(width)]


def _is_plain_layout(table: Table) -> bool:
    """Whether the table uses only what `plain_table` lays out (what this project's use)."""
    settings = (
        table.box is not None,
        table.show_header,
        table.show_edge,
        not table.show_footer,
        not table.show_lines,
        not table.leading,
        not table.caption,
        table.pad_edge,
        not table.collapse_padding,
        not table.expand,
        table.padding == (0, 1, 0, 1),
        table.width is None,
        table.min_width is None,
        not table.row_styles,
        table.title_justify in ("left", "center"),
    )
    return (
        all(settings)
        and not any(row.end_section for row in table.rows)
        and all(
            column.justify in ("left", "right")
            and (column.width, column.min_width, column.max_width) == (None, None, None)
            for column in table.columns
        )
    )


def _edges(frame: Box, *, last: bool) -> tuple[str, str, str]:
    """Left edge, column divider and right edge of a body row (Rich draws the last row with
    the box's foot characters)."""
    if last:
        return frame.foot_left, frame.foot_vertical, frame.foot_right
    return frame.mid_left, frame.mid_vertical, frame.mid_right


def _line(
    cells: Iterable[str],
    widths: Iterable[int],
    justify: Sequence[str],
    left: str,
    vertical: str,
    right: str,
) -> str:
    """One table line: each cell padded one space each side, justified within its width."""
    shown = (
        f" {cell.rjust(width - 2) if how == 'right' else cell.ljust(width - 2)} "
        for cell, width, how in zip(cells, widths, justify, strict=True)
    )
    return left + vertical.join(shown) + right
