"""What a run is, and how it is executed, both built from `Settings` in one place.

`RunSpec` is what a run *is*: recorded on its row and compared when an interrupted run is
found (universe, strategy, capital, cap, limits, mode). `Execution` is how this process carries
it out (concurrency, deadline, lock staleness, live opt-in, force) and is never compared.
`build_request` is the one path from settings to a run, shared by the CLI and Python callers;
each default lives once, in `Settings`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any, get_args

from pydantic import SecretStr

from orchestrator_cli.clock import SessionClose, utc_now
from orchestrator_cli.config import Settings, mask_url
from orchestrator_cli.risk import Limits


@dataclass(frozen=True)
class RunSpec:
    """What the user asked for, already validated; what the run records."""

    symbols: Sequence[str]
    strategy_id: str
    capital: Decimal
    max_position_size: Decimal
    dry_run: bool
    limits: Limits
    as_of_date: date | None = None
    top_n: int | None = None
    bottom_n: int | None = None
    # The non-secret settings in force, stored on the run for the audit trail.
    settings_snapshot: dict[str, Any] = field(default_factory=dict, compare=False)

    def differences(
        self,
        symbols: Sequence[str],
        capital: Decimal,
        max_position_size: Decimal,
        limits: dict[str, Any] | None,
    ) -> list[str]:
        """How these inputs differ from a recorded run's, each as `<what> <recorded> there,
        <asked> now` (symbols as counts: a universe can be thousands long)."""
        found = []
        if sorted(symbols) != sorted(self.symbols):
            recorded, asked = set(symbols), set(self.symbols)
            found.append(
                f"symbols: {len(recorded):,} there, {len(asked):,} now "
                f"({len(asked - recorded):,} added, {len(recorded - asked):,} left out)"
            )
        if capital != self.capital:
            found.append(f"capital {capital} there, {self.capital} now")
        if max_position_size != self.max_position_size:
            found.append(
                f"max position size {max_position_size} there, {self.max_position_size} now"
            )
        if limits is not None and limits != self.limits.record():
            found.append("pre-trade limits")
        return found


@dataclass(frozen=True)
class Execution:
    """How this process carries a run out; never recorded as part of what the run is."""

    order_concurrency: int
    lock_stale_seconds: float
    allow_live_trading: bool
    deadline: float | None = None  # time.monotonic() after which no new order is sent
    force: bool = False
    # What the deadline is, for the orders it stops ("... passed first").
    deadline_cause: str = "the run deadline (RUN_DEADLINE_SECONDS)"


@dataclass(frozen=True)
class RunRequest:
    """A run to carry out: what it is and how."""

    spec: RunSpec
    execution: Execution


def limits_from(settings: Settings) -> Limits:
    """The pre-trade limits in force: each `Limits` field is read from the setting of its name."""
    return Limits(**{limit.name: getattr(settings, limit.name) for limit in fields(Limits)})


# Stored in their own columns (or the limits column), so left out of the settings snapshot.
_RECORDED_APART = frozenset(
    {"strategy_id", "capital", "max_position_size", "dry_run"} | {f.name for f in fields(Limits)}
)


def _is_secret(name: str) -> bool:
    annotation = Settings.model_fields[name].annotation
    return annotation is SecretStr or SecretStr in get_args(annotation)


def settings_snapshot(settings: Settings) -> dict[str, Any]:
    """Every setting not recorded elsewhere on the run: secrets left out, URLs masked."""
    snapshot = settings.model_dump(
        mode="json",
        exclude={name for name in Settings.model_fields if _is_secret(name)} | _RECORDED_APART,
    )
    for name, value in snapshot.items():
        if name.endswith("_url") and isinstance(value, str):
            snapshot[name] = mask_url(value)
    snapshot["service_auth"] = auth_mode(settings)
    return snapshot


def auth_mode(settings: Settings) -> str:
    """How requests to the services are authenticated (never the secret itself)."""
    if settings.internal_token_secret is not None:
        return f"internal-token as {settings.service_id}"
    if settings.gateway_api_token is not None or settings.signal_api_token is not None:
        return "bearer"
    return "none"


def execution_from(
    settings: Settings,
    *,
    force: bool = False,
    close: SessionClose | None = None,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] | None = None,
) -> Execution:
    """How to execute: the deadline starts now and never runs past the session's `close`.

    `clock` (monotonic) and `now` (wall, default `utc_now`) are read at the same instant."""
    started = clock()
    seconds = settings.run_deadline_seconds
    cause = Execution.deadline_cause
    if close is not None:
        # The same instant on both clocks: the close in wall time, the deadline in monotonic.
        until_close = (close.at - (now or utc_now)()).total_seconds()
        if until_close < seconds:
            seconds, cause = until_close, f"the market's close at {close}"
    return Execution(
        order_concurrency=settings.order_concurrency,
        lock_stale_seconds=settings.lock_stale_seconds,
        allow_live_trading=settings.allow_live_trading,
        deadline=started + seconds,
        force=force,
        deadline_cause=cause,
    )


def build_request(
    settings: Settings,
    symbols: Sequence[str],
    *,
    as_of_date: date | None = None,
    top_n: int | None = None,
    bottom_n: int | None = None,
    force: bool = False,
    close: SessionClose | None = None,
) -> RunRequest:
    """The run the settings and these inputs describe, as the CLI's `orch run` builds it;
    `close` is today's session close, past which no order is sent."""
    spec = RunSpec(
        symbols=list(symbols),
        strategy_id=settings.strategy_id,
        capital=settings.capital,
        max_position_size=settings.max_position_size,
        dry_run=settings.dry_run,
        limits=limits_from(settings),
        as_of_date=as_of_date,
        top_n=top_n,
        bottom_n=bottom_n,
        settings_snapshot=settings_snapshot(settings),
    )
    return RunRequest(spec, execution_from(settings, force=force, close=close))
