"""Settings: masking and validation that the CLI tests do not reach."""

from __future__ import annotations

import pytest

from orchestrator_cli.config import mask_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://orch:secret@db:5432/x", "postgresql://orch:***@db:5432/x"),
        ("postgresql://orch:p@ss#w0rd/x@db:5432/t", "postgresql://orch:***@db:5432/t"),
        ("http://user:hunter2@host:80/path", "http://user:***@host:80/path"),
        ("redis://:only-password@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("http://host:8001", "http://host:8001"),
        ("sqlite:////tmp/a@b.db", "sqlite:////tmp/a@b.db"),
        ("postgresql://orch@db/x", "postgresql://orch@db/x"),
    ],
)
def test_mask_url_hides_every_password(url, shown):
    assert mask_url(url) == shown


def test_dry_run_is_accepted_but_never_in_flight():
    from orchestrator_cli.schemas import (
        ACCEPTED_STATUSES,
        OPEN_STATUSES,
        OutcomeKind,
        classify_status,
    )

    assert classify_status("dry_run") is OutcomeKind.ACCEPTED
    assert "dry_run" in ACCEPTED_STATUSES
    assert "dry_run" not in OPEN_STATUSES  # it never fills: a later run must not wait on it
    assert OPEN_STATUSES < ACCEPTED_STATUSES
