"""Exit codes and the one exception hierarchy of `orch`; each error knows its exit code."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, documented in the README for cron."""

    OK = 0
    FAILED = 1
    USAGE = 2
    PARTIAL = 3
    INVALID = 4
    INTERNAL = 70
    RUN_IN_PROGRESS = 75


class OrchError(Exception):
    """Base of every error `orch` raises on purpose; the CLI turns it into one stderr line."""

    exit_code: ExitCode = ExitCode.INTERNAL


class ConfigError(OrchError):
    """A bad setting, flag or input file, refused before any service is contacted."""

    exit_code = ExitCode.INVALID


class DatabaseNotMigratedError(ConfigError):
    """A server database is not at the current migration; `orch db upgrade` fixes it."""


class RunNotFoundError(ConfigError):
    """No run matches the id or prefix the user gave (or more than one does)."""


class DatabaseError(OrchError):
    """The database could not be reached or refused a write."""

    exit_code = ExitCode.FAILED


class ServiceError(OrchError):
    """A remote service (signals, gateway, market data) failed or answered unusably."""

    exit_code = ExitCode.FAILED


class ServiceUnavailableError(ServiceError):
    """A transient failure (connection, timeout, 429, 502/503/504) that outlasted the retries."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SignalPayloadError(ServiceError):
    """The Signal Service answered with a payload that breaks its contract; nothing is sent."""


class PriceSourceError(ServiceError):
    """The price source as a whole could not be read (every price is then unavailable)."""


class RunInProgressError(OrchError):
    """Another run of the same strategy and trading date holds the run lock."""

    exit_code = ExitCode.RUN_IN_PROGRESS


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while a run was under way; carries the run's id for the message."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id
