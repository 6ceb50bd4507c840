"""The gateway's words read as data: which 503 bodies halt, which health bodies fail closed."""

import json

import pytest

from orchestrator_cli.halts import describe, fail_closed_components, halt_status


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"detail": "Kill-switch engaged - new orders blocked"}, "blocked_kill_switch"),
        ({"detail": "kill switch engaged"}, "blocked_kill_switch"),
        ({"error": "Kill_Switch unavailable", "fail_closed": True}, "blocked_kill_switch"),
        ({"detail": "Circuit breaker tripped - trading paused"}, "blocked_circuit_breaker"),
        (
            {"detail": "Circuit-breaker state unavailable (fail-closed for safety)"},
            "blocked_circuit_breaker",
        ),
        ({"detail": "Position-reservation state unavailable (fail-closed for safety)"}, "blocked"),
        ({"detail": {"error": "Redis down", "fail_closed": True}}, "blocked"),
        ({"detail": {"error": "Redis down", "Fail-Closed": True}}, "blocked"),
        ({"detail": ["Risk state unavailable"]}, "blocked"),
        ("Trading halted: fail_closed", "blocked"),
        ({"detail": "Broker unavailable"}, None),
        ({"detail": "Broker unavailable", "fail_closed": False}, None),
        ({"detail": "Service unavailable", "circuit_breaker_enabled": True}, None),
        ("<html>503 Service Temporarily Unavailable</html>", None),
        ({}, None),
    ],
)
def test_halt_status(body, status):
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    assert halt_status(content) == status


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (
            {"status": "degraded", "circuit_breaker_available": False},
            ["circuit_breaker_available=false"],
        ),
        (
            {"status": "degraded", "killSwitch": {"isHealthy": False}},
            ["killSwitch.isHealthy=false"],
        ),
        ({"status": "degraded", "kill_switch": {"healthy": False}}, ["kill_switch.healthy=false"]),
        (
            {"status": "degraded", "position-reservation": "state unknown"},
            ['position-reservation="state unknown"'],
        ),
        ({"status": "degraded", "detail": "running fail-closed"}, ['detail="running fail-closed"']),
        ({"status": "degraded", "checks": [{"fail_closed": True}]}, ["checks.fail_closed=true"]),
        ({"status": "degraded", "circuit_breaker_enabled": False}, []),
        ({"status": "degraded", "circuit_breaker": {"state": "OPEN"}}, []),
        ({"status": "degraded", "database_connected": False}, []),
        ({"status": "degraded", "fail_closed": False}, []),
    ],
)
def test_fail_closed_components(body, named):
    assert fail_closed_components(body) == named


def test_a_long_value_is_cut_and_many_findings_are_counted():
    body = {f"kill_switch_{i}_available": False for i in range(5)} | {"note": "fail closed " * 20}
    named = fail_closed_components(body)
    assert len(named) == 6
    assert all(len(text) < 120 for text in named)
    assert describe(named).endswith("; and 3 more")
