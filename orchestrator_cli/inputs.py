"""The operator's own inputs: files (`--symbols-file`, `PRICES_FILE`) read with a size bound,
the universe (`parse_symbols`) and the trading date (`parse_as_of`) given on the command line.

A symbols file or a prices file is a few kilobytes; anything above `MAX_INPUT_FILE_BYTES`
(10 MiB) is a mistake (`/dev/zero`, a log, a binary), so at most that many bytes plus one
are read and a larger file is refused instead of being read until the machine runs out of
memory. The text must be UTF-8 without NUL bytes (a leading byte-order mark, as spreadsheets
write, is dropped).
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import BinaryIO

from orchestrator_cli.errors import ConfigError
from orchestrator_cli.schemas import SYMBOL_PATTERN, symbols_from

MAX_INPUT_FILE_BYTES = 10 * 1024 * 1024
# The calendars do not reach further back (exchange_calendars fails on year 0 and before).
EARLIEST_AS_OF = date(1900, 1, 1)


class InputFileError(ValueError):
    """Why an input file cannot be used, as a phrase for the caller's message."""


def read_input_text(path: Path, *, limit: int = MAX_INPUT_FILE_BYTES) -> str:
    """The file's text; InputFileError if it cannot be read, is larger than `limit` bytes or
    is not UTF-8 text."""
    try:
        with _opened(path) as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputFileError(f"cannot read it ({exc.strerror or type(exc).__name__})") from None
    if len(data) > limit:
        raise InputFileError(f"it is larger than {_size(limit)}")
    if b"\0" in data:
        raise InputFileError(f"it is not a text file (NUL byte at offset {data.index(0)})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"it is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def _opened(path: Path) -> BinaryIO:
    """The file opened for reading without waiting on the open: a named pipe nobody writes to
    reads as empty (and is refused as such) instead of hanging a cron job until it is killed;
    one with a writer (`--symbols-file <(command)`, /dev/stdin) is read as it comes."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def parse_symbols(symbols: str | None, symbols_file: Path | None) -> list[str]:
    """Symbols from --symbols (comma-separated) and --symbols-file (commas/lines, # comments)."""
    raw: list[str] = []
    if symbols:
        raw.extend(symbols.split(","))
    if symbols_file is not None:
        try:
            text = read_input_text(symbols_file)
        except InputFileError as exc:
            raise ConfigError(
                f"--symbols-file {symbols_file}: {exc}; give a text file of symbols "
                f"(comma- or line-separated, at most {MAX_INPUT_FILE_BYTES // 2**20} MiB)"
            ) from None
        for line in text.splitlines():
            raw.extend(line.split("#", 1)[0].split(","))
    result = symbols_from(raw)
    if not result and symbols_file is not None:
        raise ConfigError(
            f"--symbols-file {symbols_file} holds no symbols: give one per line or "
            "comma-separated (# starts a comment)"
        )
    if not result:
        raise ConfigError("no symbols given: pass --symbols AAPL,MSFT or --symbols-file PATH")
    bad = [s for s in result if not re.fullmatch(SYMBOL_PATTERN, s)]
    if bad:
        # At most a few, each cut short: a wrong file can hold megabytes of non-symbols.
        shown = ", ".join(repr(s if len(s) <= 20 else s[:17] + "...") for s in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ConfigError(f"not a ticker symbol: {shown}{more} (check --symbols / --symbols-file)")
    return result


def parse_as_of(value: str | None) -> date | None:
    """The --as-of date (`clock.market_for` checks it against today)."""
    if value is None:
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):  # fromisoformat takes 20261127 too
            raise ValueError(value)
        day = date.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(f"--as-of {value!r} is not a date: use YYYY-MM-DD") from exc
    if day < EARLIEST_AS_OF:
        raise ConfigError(
            f"--as-of {value} is before {EARLIEST_AS_OF.year}: no market calendar covers it; "
            "give the trading date of the run (YYYY-MM-DD)"
        )
    return day


def _size(limit: int) -> str:
    mebibytes, rest = divmod(limit, 1024 * 1024)
    return f"{mebibytes} MiB" if mebibytes and not rest else f"{limit} bytes"
