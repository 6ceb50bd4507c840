"""Log lines for machines: one JSON object per line (LOG_FORMAT=json), and the run they belong to.

Only the standard library: `setup_logging` imports this on every command. A record's message is
emitted as written (every module already masks URLs and never logs a secret); the fields below
are added when the record carries them (`logger.info(..., extra={"phase": "submit"})`) or when
the run context holds them (`bind`, called once the run is known).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator_cli.errors import ConfigError

# The extra attributes a record may carry that a log pipeline can index.
KNOWN_FIELDS = (
    "run_id",
    "strategy_id",
    "as_of_date",
    "phase",
    "status",
    "exit_code",
    "action",
    "duration_seconds",
    "seconds",
    "count",
    "num_signals",
    "num_orders_submitted",
    "num_orders_accepted",
    "num_orders_rejected",
    "num_orders_blocked",
    "num_orders_unknown",
    "num_orders_not_sent",
    "num_orders_skipped",
)

# A plain dict rather than a ContextVar: orders are sent and settled from worker threads, which
# do not inherit a ContextVar, and one process carries out one run.
_run_context: dict[str, str] = {}
_structured = False


def bind(**fields: object) -> None:
    """Name the run (run_id, strategy_id, as_of_date) on every later log line; None unsets."""
    for name, value in fields.items():
        if value is None:
            _run_context.pop(name, None)
        else:
            _run_context[name] = str(value)


def run_context() -> dict[str, str]:
    """The run fields bound so far (a copy)."""
    return dict(_run_context)


def is_structured() -> bool:
    """Whether stderr carries JSON lines (so that nothing else may write plain text there)."""
    return _structured


def always(level: int, text: str) -> None:
    """A record whatever LOG_LEVEL says: what text mode prints to stderr unconditionally
    (the `Error:` line, a note about the run) must not vanish in JSON mode."""
    logger = logging.getLogger("orchestrator_cli")
    logger.handle(logger.makeRecord(logger.name, level, __file__, 0, "%s", (text,), None))


class JsonFormatter(logging.Formatter):
    """`{"ts": ISO 8601 UTC, "level", "logger", "msg", ...}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        document.update(_run_context)
        for name in KNOWN_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                document[name] = value
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        # default=str: Decimal, UUID and dates; ensure_ascii keeps each record on one line.
        return json.dumps(document, default=str)


def reset() -> None:
    """Plain text and no run, until settings say otherwise (each command starts here)."""
    global _structured
    _run_context.clear()
    _structured = False


def formatter(log_format: str, text: logging.Formatter) -> logging.Formatter:
    """JSON lines under LOG_FORMAT=json, else `text`; starts a fresh run context."""
    global _structured
    reset()
    _structured = log_format == "json"
    return JsonFormatter() if _structured else text


def file_handlers(
    log_file: Path | None, line_formatter: logging.Formatter
) -> list[logging.Handler]:
    """The LOG_FILE handler (appending the same lines as stderr), or none."""
    if log_file is None:
        return []
    try:
        handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"LOG_FILE {log_file}: cannot append to it ({exc.strerror or exc}); give a file in "
            "a directory that exists and that this user may write"
        ) from None
    handler.setFormatter(line_formatter)
    return [handler]
