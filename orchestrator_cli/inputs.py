"""The operator's own input files (`--symbols-file`, `PRICES_FILE`), read with a size bound.

A symbols file or a prices file is a few kilobytes; anything above `MAX_INPUT_FILE_BYTES`
(10 MiB) is a mistake (`/dev/zero`, a log, a binary), so at most that many bytes plus one
are read and a larger file is refused instead of being read until the machine runs out of
memory. The text must be UTF-8 without NUL bytes (a leading byte-order mark, as spreadsheets
write, is dropped).
"""

from __future__ import annotations

from pathlib import Path

MAX_INPUT_FILE_BYTES = 10 * 1024 * 1024


class InputFileError(ValueError):
    """Why an input file cannot be used, as a phrase for the caller's message."""


def read_input_text(path: Path, *, limit: int = MAX_INPUT_FILE_BYTES) -> str:
    """The file's text; InputFileError if it cannot be read, is larger than `limit` bytes or
    is not UTF-8 text."""
    try:
        with path.open("rb") as handle:
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


def _size(limit: int) -> str:
    mebibytes, rest = divmod(limit, 1024 * 1024)
    return f"{mebibytes} MiB" if mebibytes and not rest else f"{limit} bytes"
