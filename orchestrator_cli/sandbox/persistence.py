"""The sandbox's state file and its journal (see `state` for why a journal).

The state file is the whole state as JSON; `<file>.journal` holds, one JSON line each, the
mutations made since the file was last written, as absolute values (replaying a line twice
changes nothing).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def journal_of(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


def append(path: Path, change: dict[str, Any]) -> None:
    """Add one mutation to the journal of the state file `path`: one line, whatever the
    state's size. The file is opened for each line, so a journal removed meanwhile (another
    process wrote the state file) is started again rather than written into the void."""
    line = json.dumps(change, sort_keys=True) + "\n"
    try:
        handle = journal_of(path).open("a", encoding="utf-8")
    except FileNotFoundError:  # the first change to a state file in a folder not made yet
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = journal_of(path).open("a", encoding="utf-8")
    with handle:
        handle.write(line)


def read(path: Path) -> dict[str, Any] | None:
    """The state file's data with its journal replayed over it; None when there is neither."""
    journal = journal_of(path)
    if not path.exists() and not journal.exists():
        return None
    data: dict[str, Any] = {"prices": {}, "positions": {}, "orders": {}, "post_attempts": 0}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"sandbox state file {path} is not valid JSON") from exc
    for change in _changes(journal):
        _apply(data, change)
    return data


def write(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as the state file atomically (temp file + rename), then remove the journal
    it now holds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    journal_of(path).unlink(missing_ok=True)


def _changes(journal: Path) -> list[dict[str, Any]]:
    """The journal's changes in order; a torn last line (a crash mid-append) is left out."""
    if not journal.exists():
        return []
    lines = journal.read_text(encoding="utf-8").splitlines()
    changes = []
    for number, line in enumerate(lines, start=1):
        try:
            changes.append(json.loads(line))
        except ValueError as exc:
            if number == len(lines):
                break
            raise ValueError(f"sandbox journal {journal} line {number} is not valid JSON") from exc
    return changes


def _apply(data: dict[str, Any], change: dict[str, Any]) -> None:
    """One journal line over the state file's data."""
    if change.get("reset"):
        data["orders"], data["positions"] = {}, {}
    for part in ("prices", "positions", "orders"):
        data[part].update(change.get(part, {}))
    if "post_attempts" in change:
        data["post_attempts"] = change["post_attempts"]
