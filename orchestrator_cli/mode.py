"""What differs between a run that sends orders and a dry run, decided in one place.

A dry run computes and records its plan and sends nothing, so it needs no run lock, never blocks
a real run, treats the gateway's refusals (kill switch, unhealthy, live account) as warnings,
counts a planned order as the good outcome, and has nothing to settle, resume or re-send. Every
part of a run asks its `RunMode` rather than testing a flag; an existing run's mode is read
from its row (`mode_of(run.dry_run)`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from orchestrator_cli.schemas import RunStatus
from orchestrator_cli.store import OutcomeCounts


@dataclass(frozen=True)
class RunMode:
    """The policy of one kind of run; see the module docstring."""

    name: str
    sends_orders: bool

    @property
    def takes_lock(self) -> bool:
        """Only a run that sends needs the strategy and date to itself."""
        return self.sends_orders

    @property
    def preflight_blocks(self) -> bool:
        """Whether a gateway refusal (kill switch, health, live account) stops the run."""
        return self.sends_orders

    @property
    def settles_with_gateway(self) -> bool:
        """Whether resume and sync ask the gateway about the run's orders."""
        return self.sends_orders

    def good(self, counts: OutcomeCounts) -> int:
        """Orders that came out as this mode wants them."""
        return counts.accepted if self.sends_orders else counts.planned

    def never_answered(self, counts: OutcomeCounts) -> int:
        """Orders still only planned: a problem when they should have been sent."""
        return counts.planned if self.sends_orders else 0

    def status(self, counts: OutcomeCounts) -> RunStatus:
        """`completed` only when everything needed was done; `failed` when nothing was."""
        problems = (
            counts.rejected
            + counts.blocked
            + counts.unknown
            + counts.not_sent
            + counts.price_unavailable
            + self.never_answered(counts)
        )
        if problems == 0:
            return "completed"
        if self.good(counts) == 0:
            return "failed"
        return "partial"

    def describe_problems(
        self, counts: OutcomeCounts, run_id: uuid.UUID, *, stopped_by: str | None = None
    ) -> str | None:
        """A one-line summary of what went wrong in a run, or None when nothing did. A run
        `stopped_by` its run lock's loss is not to be resumed: the run that took it goes on."""
        parts = [
            f"{n} {label}"
            for n, label in (
                (counts.rejected, "rejected"),
                (counts.blocked, "blocked"),
                (counts.unknown, "of unknown outcome"),
                (counts.not_sent, "not sent"),
                (self.never_answered(counts), "never answered"),
                (counts.price_unavailable, "without a usable price"),
            )
            if n
        ]
        if not parts:
            return None
        text = ", ".join(parts)
        unfinished = counts.unknown + counts.not_sent + counts.blocked
        if stopped_by is not None:
            text += f"; {stopped_by}: the run that took the lock carries on"
        elif self.sends_orders and (unfinished or counts.planned):
            text += f"; `orch runs resume {run_id}` settles and sends what is left"
        return text


REAL = RunMode("real", sends_orders=True)
DRY_RUN = RunMode("dry run", sends_orders=False)


def mode_of(dry_run: bool) -> RunMode:
    """The mode of a run from its request or its recorded `dry_run` column."""
    return DRY_RUN if dry_run else REAL
