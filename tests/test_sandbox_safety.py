"""The sandbox gateway's rate-limit window, fail-closed refusals and its own strategy, over
real sockets, as the real gateway was seen to answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fakes import FakeClock

from orchestrator_cli.sandbox import Sandbox, SandboxFaults
from orchestrator_cli.sandbox.gateway import RateWindow


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxFaults(seed=1)) as running:
        yield running


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def order(http: requests.Session, sandbox: Sandbox, coid: str = "ord-1") -> requests.Response:
    body = {"symbol": "AAPL", "side": "buy", "qty": 10, "client_order_id": coid}
    return http.post(f"{sandbox.gateway_url}/api/v1/orders", json=body, timeout=5)


def get(http: requests.Session, sandbox: Sandbox, path: str) -> Any:
    response = http.get(f"{sandbox.gateway_url}{path}", timeout=5)
    assert response.status_code == 200
    return response.json()


# --- the rate limit ---------------------------------------------------------------------------


def test_the_window_counts_every_request_rejected_ones_included():
    clock = FakeClock(start=0.0)
    window = RateWindow(clock=clock)
    assert [window.admit(2, 10) for _ in range(3)] == [True, True, False]
    clock.now = 5
    assert window.admit(2, 10) is False  # t=0, 0, 0 (rejected) still in the window
    clock.now = 10.5  # the three at t=0 left; the rejected one at t=5 still counts
    assert window.admit(2, 10) is True
    assert window.admit(2, 10) is False
    assert window.rejected == 3
    assert window.admit(None, 10) is True  # no cap: counted, never refused


def test_a_request_over_the_cap_gets_the_real_429(http, sandbox):
    sandbox.faults.rate_limit_per_window = 2
    sandbox.faults.rate_limit_window_seconds = 60
    assert [order(http, sandbox, f"o{i}").status_code for i in range(2)] == [200, 200]
    refused = order(http, sandbox, "o2")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "60"
    assert refused.json() == {
        "detail": {
            "error": "rate_limited",
            "message": "Rate limit exceeded: 2 orders per 60s",
            "retry_after": 60.0,
            "reason": "per_user_limit_exceeded",
        }
    }
    assert sandbox.state.order("o2") is None
    assert order(http, sandbox, "o0").status_code == 429  # a retry is a request too
    assert (sandbox.rate_window.rejected, sandbox.state.post_attempts) == (2, 4)
    get(http, sandbox, "/api/v1/positions")  # reads are not order requests
    http.post(f"{sandbox.gateway_url}/_sandbox/reset", timeout=5)
    assert sandbox.rate_window.rejected == 0
    assert order(http, sandbox, "o3").status_code == 200


def test_a_short_window_says_so_in_retry_after(http, sandbox):
    sandbox.faults.rate_limit_per_window = 1
    sandbox.faults.rate_limit_window_seconds = 1.5
    order(http, sandbox, "a")
    assert order(http, sandbox, "b").headers["Retry-After"] == "1.5"


# --- fail-closed refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "body"),
    [
        (
            "circuit_breaker",
            {"detail": "Circuit-breaker state unavailable (fail-closed for safety)"},
        ),
        (
            "position_reservation",
            {"detail": "Position-reservation state unavailable (fail-closed for safety)"},
        ),
        (
            "kill_switch",
            {
                "error": "Kill-switch unavailable",
                "message": "Kill-switch state could not be read; new orders are refused",
                "fail_closed": True,
            },
        ),
    ],
)
def test_fail_closed_refuses_every_order_with_the_real_503(http, sandbox, fault, body):
    sandbox.faults.fail_closed = fault
    for coid in ("a", "a", "b"):
        refused = order(http, sandbox, coid)
        assert (refused.status_code, refused.json()) == (503, body)
    assert sandbox.state.orders_created() == 0
    assert get(http, sandbox, "/health")["status"] == "healthy"  # lost after the preflight
    assert get(http, sandbox, "/api/v1/kill-switch/status") == {"state": "ACTIVE"}


def test_a_missing_circuit_breaker_state_degrades_health_and_refuses_orders(http, sandbox):
    sandbox.faults.circuit_breaker_state_missing = True
    health = get(http, sandbox, "/health")
    assert health["status"] == "degraded"
    assert health["circuit_breaker_available"] is False
    assert health["message"] == "Circuit-breaker state unavailable (fail-closed for safety)"
    refused = order(http, sandbox)
    assert refused.status_code == 503
    assert refused.json() == {
        "detail": "Circuit-breaker state unavailable (fail-closed for safety)"
    }
    assert sandbox.state.orders_created() == 0


def test_the_fault_options_are_checked(http, sandbox):
    url = f"{sandbox.gateway_url}/_sandbox/faults"
    for bad in (
        {"fail_closed": "broker"},
        {"rate_limit_window_seconds": 0},
        {"rate_limit_per_window": 0},
        {"circuit_breaker_state_missing": "yes"},
    ):
        response = http.post(url, json=bad, timeout=5)
        assert response.status_code == 422, bad
    detail = http.post(url, json={"fail_closed": "broker"}, timeout=5).json()["detail"]
    assert detail == (
        "bad value for fault fail_closed: 'broker' "
        "(one of: circuit_breaker, kill_switch, position_reservation)"
    )
    good = {"fail_closed": "kill_switch", "rate_limit_per_window": 5, "gateway_strategy": "m"}
    assert http.post(url, json=good, timeout=5).status_code == 200
    assert sandbox.faults.fail_closed == "kill_switch"


# --- the gateway's own strategy -------------------------------------------------------------


def test_orders_are_filed_under_the_gateways_strategy_whatever_the_header(http, sandbox):
    assert "strategy_id" not in get(http, sandbox, "/api/v1/config")
    sandbox.faults.gateway_strategy = "momentum"
    assert get(http, sandbox, "/api/v1/config")["strategy_id"] == "momentum"
    body = {"symbol": "AAPL", "side": "buy", "qty": 1, "client_order_id": "s1"}
    headers = {"X-Strategy-ID": "alpha_baseline"}
    url = f"{sandbox.gateway_url}/api/v1/orders"
    assert http.post(url, json=body, headers=headers, timeout=5).status_code == 200
    assert get(http, sandbox, "/api/v1/orders/s1")["strategy_id"] == "momentum"
    sandbox.faults.gateway_strategy_in_config = False
    assert "strategy_id" not in get(http, sandbox, "/api/v1/config")


def test_a_busy_port_is_refused_naming_it_not_an_internal_error() -> None:
    import socket

    from orchestrator_cli.errors import ConfigError
    from orchestrator_cli.sandbox import Sandbox

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}: Address already in use"):
            Sandbox(signal_port=port).start()
