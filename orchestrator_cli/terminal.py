"""What `orch` writes around its results: the two consoles, log lines and order progress.

stdout carries results only (a table and summary line, or exactly one JSON document); logs and
progress go to stderr. On a terminal, log lines are Rich's and sending orders shows a progress
bar that disappears when the run ends. Elsewhere (cron's log file, a pipe) log lines are plain
UTC-stamped text and sending orders writes `sent 412/1,000 orders` at most once every
`PROGRESS_LOG_SECONDS`, never a line per order.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, TextIO

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

# Cron logs are files, not terminals: give them wide lines instead of Rich's 80 columns.
LOG_WIDTH = 180
# Below this many columns no table is laid out (a smaller COLUMNS is ignored).
MIN_COLUMNS = 80
# A run that sends its orders faster than this writes no progress line at all.
PROGRESS_LOG_SECONDS = 5.0


def console_width(stream: TextIO) -> int | None:
    """The width tables are laid out for: COLUMNS when it is a whole number of at least
    MIN_COLUMNS (the narrowest layout the tables have); else, on a terminal, the terminal's
    own width, and LOG_WIDTH for a file or a pipe. None lets Rich measure the terminal (and
    follow a resize); a COLUMNS that Rich would take but no table fits (0, 5) is passed over
    for the terminal's own width.
    """
    columns = os.environ.get("COLUMNS", "")
    usable = columns.isdigit() and int(columns) >= MIN_COLUMNS
    if not stream.isatty():
        return int(columns) if usable else LOG_WIDTH
    if usable or not columns.isdigit():
        return None  # Rich reads a usable COLUMNS itself, else measures the terminal
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return LOG_WIDTH


def stop_writing(stream: IO[str]) -> None:
    """The reader of `stream` has gone (`orch runs list | head -1`): what is left to write is
    dropped, so the command still ends with its own exit code (a recorded run's)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())  # the interpreter's last flush must not fail either
    finally:
        os.close(devnull)


def prepare_streams() -> None:
    """Text a stream's encoding cannot hold (a service's message on a latin-1 console, a lone
    surrogate) is printed as its escape rather than failing the command; off a terminal,
    Typer lays `--help` out at the tables' width (TERMINAL_WIDTH, unless set) instead of 80
    columns, which cut long option names short."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    if not sys.stdout.isatty():
        os.environ.setdefault("TERMINAL_WIDTH", str(console_width(sys.stdout)))


class _Console(Console):
    """Rich's console, except that a reader going away (a broken pipe) is not a failure:
    Rich's own handling exits 1, which cron and alerting would read as a failed run."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        stop_writing(self.file)


out = _Console(highlight=False, width=console_width(sys.stdout))
err = _Console(stderr=True, highlight=False, width=console_width(sys.stderr))

OrderProgress = Callable[[int, int], None]


class UTCFormatter(logging.Formatter):
    """Plain lines for log files: ISO 8601 UTC timestamps, no padding."""

    def __init__(self) -> None:
        super().__init__("%(asctime)sZ %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")

    def converter(self, seconds: float | None) -> time.struct_time:
        return time.gmtime(seconds)


def setup_logging(level: str, log_format: str = "text", log_file: Path | None = None) -> None:
    """Rich log lines on a terminal; plain UTC-stamped lines in files (cron logs); JSON lines
    everywhere under LOG_FORMAT=json; the same lines appended to LOG_FILE too."""
    from orchestrator_cli import logs

    handler: logging.Handler
    line_formatter = logs.formatter(log_format, UTCFormatter())
    if sys.stderr.isatty() and not logs.is_structured():
        from rich.logging import RichHandler

        handler = RichHandler(console=err, show_path=False, show_time=True, markup=False)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(line_formatter)
    handlers = [handler, *logs.file_handlers(log_file, line_formatter)]
    logging.basicConfig(level=level, handlers=handlers, format="%(message)s", force=True)
    logging.captureWarnings(True)  # a library's warning is a log line too (JSON under json)
    for noisy in ("urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class ProgressLines:
    """`sent 412/1,000 orders` through `log`, at most once every `interval` seconds.

    The first line comes `interval` seconds after the first answer; the last count is written
    only after an earlier line, so a run that sends everything within `interval` writes none.
    Safe to call from several threads.
    """

    def __init__(
        self,
        log: Callable[[str], None],
        *,
        interval: float = PROGRESS_LOG_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None  # the first answer, then the last line written
        self._written = False

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            now = self._clock()
            if self._since is None:
                self._since = now
            last = done >= total and self._written
            if last or now - self._since >= self._interval:
                self._since, self._written = now, True
                self._log(f"sent {done:,}/{total:,} orders")


class ProgressBar:
    """A Rich progress bar on `console`, started by the first answer, removed by `close`."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            if self._progress is None or self._task is None:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                )

                self._progress = Progress(
                    TextColumn("sending orders"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=self._console,
                    transient=True,
                )
                self._progress.start()
                self._task = self._progress.add_task("orders", total=total)
            self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()


@contextmanager
def order_progress(*, interactive: bool, log: Callable[[str], None]) -> Iterator[OrderProgress]:
    """The `RunServices.order_progress` hook of one command: a bar on stderr when `interactive`
    (stderr is a terminal), else `ProgressLines` through `log`. Never writes to stdout."""
    if not interactive:
        yield ProgressLines(log)
        return
    bar = ProgressBar(err)
    try:
        yield bar
    finally:
        bar.close()
