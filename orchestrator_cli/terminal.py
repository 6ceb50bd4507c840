"""What `orch` writes around its results: the two consoles and log lines.

stdout carries results only (a table and summary line, or exactly one JSON document); logs go
to stderr: Rich's lines on a terminal, plain UTC-stamped text elsewhere (cron's log file).
"""

from __future__ import annotations

import logging
import sys
import time

from rich.console import Console

# Cron logs are files, not terminals: give them wide lines instead of Rich's 80 columns.
LOG_WIDTH = 180

out = Console(highlight=False, width=None if sys.stdout.isatty() else LOG_WIDTH)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else LOG_WIDTH)


class UTCFormatter(logging.Formatter):
    """Plain lines for log files: ISO 8601 UTC timestamps, no padding."""

    def __init__(self) -> None:
        super().__init__("%(asctime)sZ %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")

    def converter(self, seconds: float | None) -> time.struct_time:
        return time.gmtime(seconds)


def setup_logging(level: str) -> None:
    """Rich log lines on a terminal; plain UTC-stamped lines in files (cron logs)."""
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(console=err, show_path=False, show_time=True, markup=False)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(UTCFormatter())
    logging.basicConfig(level=level, handlers=[handler], format="%(message)s", force=True)
    for noisy in ("urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
