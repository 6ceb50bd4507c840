"""Cron-grade operations around one command: heartbeat, metrics, notification.

`observe(settings)` wraps `orch run` (and `orch runs resume`). On entry it pings the heartbeat's
`/start`; on exit, whatever the outcome, it learns the exit code from the exception passing
through (`typer.Exit`, a project error, an interrupt, a bug), writes and pushes the metrics,
posts the notification and pings the final heartbeat, then lets the exception go on unchanged.
Every one of these is best effort: a failure is a warning on stderr and never changes the exit
code. With none of the settings, nothing here imports anything or contacts anybody.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import typer

from orchestrator_cli import logs
from orchestrator_cli.errors import ExitCode, OrchError, RunInterrupted

if TYPE_CHECKING:
    from orchestrator_cli.config import Settings
    from orchestrator_cli.schemas import RunResult

logger = logging.getLogger(__name__)

ORDER_OUTCOMES = ("accepted", "rejected", "blocked", "unknown", "not_sent", "skipped")


@dataclass
class Observation:
    """What the command tells the observation while it runs (the run's result, once known)."""

    result: RunResult | None = None
    action: str | None = None  # `RunOutcome.action`: ran, resumed, already_completed, ...

    def record(self, result: RunResult, action: str | None = None) -> None:
        self.result, self.action = result, action
        logs.bind(
            run_id=result.run_id, strategy_id=result.strategy_id, as_of_date=result.as_of_date
        )


@dataclass(frozen=True)
class Finished:
    """The command as it ended: what monitoring and the notification are made of."""

    strategy_id: str
    exit_code: int
    seconds: float  # the command's own wall time
    ended_at: float  # Unix time
    result: RunResult | None = None
    error: str | None = None  # a project error's message (already free of secrets)
    interrupted_run: str | None = None  # the run an interrupt stopped, to resume
    action: str | None = None  # what the command did with the day's run (Observation.action)
    phase_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> str | None:
        return None if self.result is None else self.result.status


def order_outcomes(result: RunResult | None) -> dict[str, int]:
    """How many of the run's orders ended in each outcome (ORDER_OUTCOMES), skips included.

    The four counted outcomes are the run's own counts; an order in none of them was never sent
    (stopped before it, or a dry run).
    """
    counts = dict.fromkeys(ORDER_OUTCOMES, 0)
    if result is None:
        return counts
    counts["accepted"] = result.num_orders_accepted
    counts["rejected"] = result.num_orders_rejected
    counts["blocked"] = result.num_orders_blocked
    counts["unknown"] = result.num_orders_unknown
    orders = sum(1 for m in result.mappings if m.client_order_id)
    counted = sum(counts.values())
    counts["not_sent"] = max(0, orders - counted)
    counts["skipped"] = sum(1 for m in result.mappings if m.skip_reason)
    return counts


def is_active(settings: Settings) -> bool:
    """Whether any of the monitoring settings is set (else `observe` does nothing at all)."""
    return any(
        value is not None
        for value in (
            settings.metrics_file,
            settings.pushgateway_url,
            settings.heartbeat_url,
            settings.notify_webhook_url,
        )
    ) or (settings.log_format == "json" or settings.log_file is not None)


def _exit_code(exc: BaseException | None) -> int:
    """The exit code the command ends with when `exc` passes out of it."""
    if exc is None:
        return ExitCode.OK
    if isinstance(exc, typer.Exit):
        return int(exc.exit_code)
    if isinstance(exc, OrchError):
        return int(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.FAILED
    return ExitCode.INTERNAL


def _cause(exc: BaseException | None) -> BaseException | None:
    """The error behind a `typer.Exit` that `handle_errors` raised for it (`from None` hides
    it from tracebacks but keeps it as the context)."""
    if isinstance(exc, typer.Exit) and exc.__context__ is not None:
        return exc.__context__
    return exc


@contextmanager
def observe(settings: Settings) -> Iterator[Observation]:
    """Ping, measure and report the command it wraps (see the module docstring).

    Meant to wrap `handle_errors`, so that what passes out is the command's `typer.Exit`.
    """
    observation = Observation()
    if not is_active(settings):
        yield observation
        return
    logs.bind(strategy_id=settings.strategy_id)
    if settings.heartbeat_url is not None:
        from orchestrator_cli import heartbeat

        heartbeat.ping(settings.heartbeat_url.get_secret_value(), "start")
    started = time.monotonic()
    error: BaseException | None = None
    try:
        yield observation
    except BaseException as exc:
        error = exc
        raise
    finally:
        try:
            report(settings, _finished(settings, observation, error, time.monotonic() - started))
        except Exception as exc:  # how the run ended must reach the caller unchanged
            logger.warning("monitoring: reporting failed (%s)", type(exc).__name__)


def _finished(
    settings: Settings, observation: Observation, error: BaseException | None, seconds: float
) -> Finished:
    result = observation.result
    phases = getattr(result, "phase_seconds", None) or {}
    cause = _cause(error)
    return Finished(
        strategy_id=result.strategy_id if result is not None else settings.strategy_id,
        exit_code=_exit_code(error),
        seconds=seconds,
        ended_at=time.time(),
        result=result,
        error=str(cause) if isinstance(cause, OrchError) else None,
        interrupted_run=cause.run_id if isinstance(cause, RunInterrupted) else None,
        phase_seconds={str(k): float(v) for k, v in phases.items()},
        action=observation.action,
    )


def report(settings: Settings, finished: Finished) -> None:
    """Log the end, write and push metrics, notify, then the final heartbeat ping; never raises."""
    counts = order_outcomes(finished.result)
    logger.info(
        "finished with exit code %s (%s)",
        finished.exit_code,
        finished.status or "no run recorded",
        extra={
            "exit_code": finished.exit_code,
            "status": finished.status,
            "duration_seconds": round(finished.seconds, 3),
            **{f"num_orders_{name}": value for name, value in counts.items()},
        },
    )
    steps: list[tuple[str, Callable[[], object]]] = []
    if settings.metrics_file is not None or settings.pushgateway_url is not None:
        from orchestrator_cli import metrics

        steps.append(("metrics", lambda: metrics.publish(settings, finished)))
    if settings.notify_webhook_url is not None:
        from orchestrator_cli import notify

        steps.append(("notification", lambda: notify.maybe_notify(settings, finished)))
    if settings.heartbeat_url is not None:
        from orchestrator_cli import heartbeat

        url = settings.heartbeat_url.get_secret_value()
        suffix = "" if finished.exit_code == 0 else str(finished.exit_code)
        steps.append(("heartbeat", lambda: heartbeat.ping(url, suffix)))
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # a bug in reporting must not change how the run ended
            # The type only: a message may quote a URL, and these URLs hold secrets.
            logger.warning("monitoring: the %s failed (%s)", name, type(exc).__name__)
