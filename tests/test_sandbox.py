"""The sandbox services over real sockets: contracts, faults, persistence and the control API."""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from orchestrator_cli.auth import BearerAuth, InternalTokenAuth
from orchestrator_cli.errors import ConfigError
from orchestrator_cli.sandbox import Sandbox, SandboxFaults, SandboxState
from orchestrator_cli.sandbox.state import OrderTicket
from orchestrator_cli.transport import HttpClient

FIVE = ["AAPL", "MSFT", "GOOGL", "AMZN", "TSLA"]
AS_OF = "2024-12-31"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxFaults(seed=1)) as running:
        yield running


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def signals(
    http: requests.Session, sandbox: Sandbox, symbols: list[str], **fields: Any
) -> requests.Response:
    body = {"symbols": symbols, "as_of_date": AS_OF, **fields}
    return http.post(f"{sandbox.signal_url}/api/v1/signals/generate", json=body, timeout=5)


def order(http: requests.Session, sandbox: Sandbox, **fields: Any) -> requests.Response:
    body = {"symbol": "AAPL", "side": "buy", "qty": 10, "client_order_id": "ord-1", **fields}
    return http.post(f"{sandbox.gateway_url}/api/v1/orders", json=body, timeout=5)


def gateway_get(http: requests.Session, sandbox: Sandbox, path: str) -> requests.Response:
    return http.get(f"{sandbox.gateway_url}{path}", timeout=5)


def positions(http: requests.Session, sandbox: Sandbox) -> dict[str, str]:
    body = gateway_get(http, sandbox, "/api/v1/positions").json()
    return {row["symbol"]: row["qty"] for row in body["positions"]}


# --- Signal Service ---------------------------------------------------------------------------


def test_signals_are_deterministic_ranked_and_weighted(
    http: requests.Session, sandbox: Sandbox
) -> None:
    first = signals(http, sandbox, FIVE)
    second = signals(http, sandbox, FIVE)
    assert first.status_code == 200, first.text
    rows = first.json()["signals"]
    assert rows == second.json()["signals"]
    assert [row["rank"] for row in rows] == [1, 2, 3, 4, 5]
    assert sorted(row["symbol"] for row in rows) == sorted(FIVE)
    returns = [row["predicted_return"] for row in rows]
    assert returns == sorted(returns, reverse=True)
    assert all(-0.05 <= r <= 0.05 and round(r, 4) == r for r in returns)
    # 5 symbols: top_n = round(5/3) = 2 longs, bottom_n = 5 // 3 = 1 short.
    assert [row["target_weight"] for row in rows] == [0.5, 0.5, 0.0, 0.0, -1.0]
    metadata = first.json()["metadata"]
    assert metadata["as_of_date"] == AS_OF
    assert (metadata["model_version"], metadata["strategy"]) == ("sandbox-1", "alpha_baseline")
    assert (metadata["num_signals"], metadata["top_n"], metadata["bottom_n"]) == (5, 2, 1)
    assert metadata["generated_at"].endswith("Z")

    other_day = signals(http, sandbox, FIVE, as_of_date="2025-01-02").json()["signals"]
    assert [row["predicted_return"] for row in other_day] != returns


@pytest.mark.parametrize(
    ("count", "fields", "expected"),
    [
        (1, {}, (1, 0)),
        (2, {}, (1, 0)),
        (3, {}, (1, 1)),
        (7, {}, (2, 2)),
        (4, {"top_n": 3, "bottom_n": 3}, (3, 1)),
        (4, {"top_n": 0, "bottom_n": 2}, (0, 2)),
    ],
)
def test_signal_counts_default_and_clip(
    http: requests.Session,
    sandbox: Sandbox,
    count: int,
    fields: dict[str, int],
    expected: tuple[int, int],
) -> None:
    symbols = [f"S{i}" for i in range(count)]
    body = signals(http, sandbox, symbols, **fields).json()
    top_n, bottom_n = expected
    assert (body["metadata"]["top_n"], body["metadata"]["bottom_n"]) == expected
    weights = [row["target_weight"] for row in body["signals"]]
    assert [w for w in weights if w > 0] == ([1 / top_n] * top_n if top_n else [])
    assert [w for w in weights if w < 0] == ([-1 / bottom_n] * bottom_n if bottom_n else [])
    assert len(weights) == count


def test_as_of_date_defaults_to_the_exchange_date(http: requests.Session, sandbox: Sandbox) -> None:
    body = signals(http, sandbox, ["AAPL"], as_of_date=None).json()
    assert (
        body["metadata"]["as_of_date"]
        == datetime.now(ZoneInfo("America/New_York")).date().isoformat()
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"symbols": []},
        {"symbols": "AAPL"},
        {"symbols": ["AAPL"], "top_n": -1},
        {"symbols": ["AAPL"], "bottom_n": "2"},
        {"symbols": ["AAPL"], "as_of_date": "31/12/2024"},
    ],
)
def test_bad_signal_request_is_422(http: requests.Session, sandbox: Sandbox, body: Any) -> None:
    response = http.post(f"{sandbox.signal_url}/api/v1/signals/generate", json=body, timeout=5)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


def _first(body: dict[str, Any]) -> Any:
    return body["signals"][0]


SIGNAL_FAULT_CHECKS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "malformed": lambda body: "target_weight" not in _first(body),
    "nan_weight": lambda body: math.isnan(_first(body)["target_weight"]),
    "weight_out_of_range": lambda body: _first(body)["target_weight"] == 1.5,
    "wrong_date": lambda body: body["metadata"]["as_of_date"] == "2024-12-30",
    "unrequested_symbol": lambda body: (
        {s["symbol"] for s in body["signals"]} - set(FIVE) == {"ZZZZ"}
    ),
    "duplicate_symbol": lambda body: (
        len(body["signals"]) == 6 and len({s["symbol"] for s in body["signals"]}) == 5
    ),
}


@pytest.mark.parametrize("fault", sorted(SIGNAL_FAULT_CHECKS))
def test_signal_payload_faults(http: requests.Session, sandbox: Sandbox, fault: str) -> None:
    sandbox.faults.signal_fault = fault
    response = signals(http, sandbox, FIVE)
    assert response.status_code == 200
    assert SIGNAL_FAULT_CHECKS[fault](json.loads(response.text))
    if fault == "nan_weight":
        assert '"target_weight": NaN' in response.text


@pytest.mark.parametrize(("fault", "status"), [("http_500", 500), ("http_503", 503)])
def test_signal_http_faults(
    http: requests.Session, sandbox: Sandbox, fault: str, status: int
) -> None:
    assert http.get(f"{sandbox.signal_url}/ready", timeout=5).status_code == 200
    sandbox.faults.signal_fault = fault
    assert signals(http, sandbox, FIVE).status_code == status
    ready = http.get(f"{sandbox.signal_url}/ready", timeout=5)
    health = http.get(f"{sandbox.signal_url}/health", timeout=5)
    assert ready.status_code == health.status_code == (503 if fault == "http_503" else 200)


# --- Execution Gateway: orders and positions ---------------------------------------------------


def test_market_order_fills_and_moves_the_position(
    http: requests.Session, sandbox: Sandbox
) -> None:
    response = order(http, sandbox)
    assert response.status_code == 200, response.text
    ack = response.json()
    assert ack["status"] == "filled"
    assert ack["message"] == "Order submitted to broker"
    assert ack["broker_order_id"]
    assert (ack["client_order_id"], ack["symbol"], ack["side"], ack["qty"]) == (
        "ord-1",
        "AAPL",
        "buy",
        10,
    )
    detail = gateway_get(http, sandbox, "/api/v1/orders/ord-1").json()
    assert (detail["filled_qty"], detail["filled_avg_price"]) == ("10", "190.00")
    assert detail["filled_at"].endswith("Z")
    assert detail["strategy_id"] is None
    assert positions(http, sandbox) == {"AAPL": "10"}
    assert sandbox.state.position("AAPL") == 10


def test_sell_without_holding_opens_a_short_and_flat_positions_are_omitted(
    http: requests.Session, sandbox: Sandbox
) -> None:
    assert order(http, sandbox, symbol="MSFT", side="sell", qty=15).status_code == 200
    assert order(http, sandbox, client_order_id="ord-2").status_code == 200
    assert order(http, sandbox, client_order_id="ord-3", side="sell").status_code == 200
    body = gateway_get(http, sandbox, "/api/v1/positions").json()
    assert [(row["symbol"], row["qty"]) for row in body["positions"]] == [("MSFT", "-15")]
    assert body["total_positions"] == 1
    assert body["positions"][0]["avg_entry_price"] == "420.00"


def test_idempotent_retry_returns_the_stored_order(
    http: requests.Session, sandbox: Sandbox
) -> None:
    first = order(http, sandbox).json()
    retry = order(http, sandbox, qty=10, limit_price=None)
    assert retry.status_code == 200
    assert retry.json()["message"] == "Order already exists (idempotent retry)"
    assert retry.json()["broker_order_id"] == first["broker_order_id"]
    assert sandbox.state.orders_created() == 1
    assert positions(http, sandbox) == {"AAPL": "10"}

    conflict = order(http, sandbox, qty=11)
    assert conflict.status_code == 409
    assert sandbox.state.orders_created() == 1
    assert sandbox.state.post_attempts == 3


def test_concurrent_submissions_of_one_id_create_one_order(sandbox: Sandbox) -> None:
    body = {"symbol": "NVDA", "side": "buy", "qty": 7, "client_order_id": "same"}

    def submit(_: int) -> int:
        url = f"{sandbox.gateway_url}/api/v1/orders"
        return requests.post(url, json=body, timeout=5).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(submit, range(16)))
    assert statuses == [200] * 16
    assert sandbox.state.orders_created() == 1
    assert sandbox.state.position("NVDA") == 7


def test_order_without_id_gets_a_derived_one(http: requests.Session, sandbox: Sandbox) -> None:
    first = order(http, sandbox, client_order_id=None).json()
    assert re.fullmatch(r"[0-9a-f]{24}", first["client_order_id"])
    again = order(http, sandbox, client_order_id=None).json()
    assert again["client_order_id"] == first["client_order_id"]
    assert again["message"] == "Order already exists (idempotent retry)"
    other = order(http, sandbox, client_order_id=None, qty=11).json()
    assert other["client_order_id"] != first["client_order_id"]


@pytest.mark.parametrize(
    "fields",
    [
        {"qty": 0},
        {"qty": -5},
        {"qty": 1.5},
        {"qty": "10"},
        {"qty": True},
        {"side": "hold"},
        {"order_type": "moo"},
        {"time_in_force": "week"},
        {"client_order_id": "bad id"},
        {"client_order_id": "x" * 25},
        {"client_order_id": ""},
        {"symbol": None},
        {"order_type": "limit"},
        {"order_type": "limit", "limit_price": "NaN"},
    ],
)
def test_invalid_order_is_422_and_not_stored(
    http: requests.Session, sandbox: Sandbox, fields: dict[str, Any]
) -> None:
    response = order(http, sandbox, **fields)
    assert response.status_code == 422, response.text
    assert sandbox.state.orders_created() == 0
    assert sandbox.state.post_attempts == 1


def test_malformed_json_is_422(http: requests.Session, sandbox: Sandbox) -> None:
    for url in (
        f"{sandbox.gateway_url}/api/v1/orders",
        f"{sandbox.signal_url}/api/v1/signals/generate",
    ):
        response = http.post(url, data=b"{not json", timeout=5)
        assert response.status_code == 422
        assert response.json()["detail"][0]["type"] == "json_invalid"
    assert sandbox.state.post_attempts == 1


def test_limit_order_is_new_and_not_filled(http: requests.Session, sandbox: Sandbox) -> None:
    ack = order(http, sandbox, order_type="limit", limit_price="185.5").json()
    assert (ack["status"], ack["limit_price"]) == ("new", "185.5")
    detail = gateway_get(http, sandbox, "/api/v1/orders/ord-1").json()
    assert (detail["filled_qty"], detail["filled_avg_price"]) == ("0", None)
    assert positions(http, sandbox) == {}
    retry = order(http, sandbox, order_type="limit", limit_price=185.50)
    assert retry.json()["message"] == "Order already exists (idempotent retry)"


def test_fat_finger_notional_is_400(http: requests.Session, sandbox: Sandbox) -> None:
    response = order(http, sandbox, symbol="SPY", qty=1800)  # 1800 * 560 > 1,000,000
    assert response.status_code == 400
    assert response.json() == {"detail": "Order rejected by fat-finger checks: notional"}
    assert sandbox.state.orders_created() == 0


def test_position_limit_is_422_in_shares(http: requests.Session, sandbox: Sandbox) -> None:
    sandbox.faults.max_position_shares = 100
    assert order(http, sandbox, qty=60).status_code == 200
    response = order(http, sandbox, qty=41, client_order_id="ord-2")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["error"] == "Position limit exceeded"
    assert (detail["current_position"], detail["resulting_position"]) == ("60", "101")
    assert order(http, sandbox, qty=40, client_order_id="ord-3").status_code == 200
    assert sandbox.state.position("AAPL") == 100


def test_order_detail_404(http: requests.Session, sandbox: Sandbox) -> None:
    response = gateway_get(http, sandbox, "/api/v1/orders/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Order not found: nope"}


def test_gateway_dry_run_records_without_filling(http: requests.Session, sandbox: Sandbox) -> None:
    sandbox.faults.gateway_dry_run = True
    ack = order(http, sandbox).json()
    assert (ack["status"], ack["broker_order_id"]) == ("dry_run", None)
    assert ack["message"] == "Order logged (DRY_RUN mode)"
    assert gateway_get(http, sandbox, "/api/v1/orders/ord-1").json()["filled_qty"] == "0"
    assert positions(http, sandbox) == {}
    assert gateway_get(http, sandbox, "/api/v1/config").json()["dry_run"] is True
    assert gateway_get(http, sandbox, "/health").json()["dry_run"] is True


@pytest.mark.parametrize("status", ["healthy", "degraded", "unhealthy"])
def test_gateway_health_is_always_http_200(
    http: requests.Session, sandbox: Sandbox, status: str
) -> None:
    sandbox.faults.gateway_health = status
    response = gateway_get(http, sandbox, "/health")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["service"], body["database_connected"]) == (
        status,
        "execution_gateway",
        True,
    )


def test_gateway_config(http: requests.Session, sandbox: Sandbox) -> None:
    body = gateway_get(http, sandbox, "/api/v1/config").json()
    assert {k: body[k] for k in ("service", "version", "environment", "dry_run")} == {
        "service": "execution_gateway",
        "version": "sandbox",
        "environment": "sandbox",
        "dry_run": False,
    }
    assert (body["alpaca_paper"], body["circuit_breaker_enabled"]) == (True, True)


# --- Execution Gateway: faults ----------------------------------------------------------------

KILL_TEXT = "Kill-switch engaged - new orders blocked"


def test_kill_switch_engaged_blocks_orders(http: requests.Session, sandbox: Sandbox) -> None:
    assert gateway_get(http, sandbox, "/api/v1/kill-switch/status").json()["state"] == "ACTIVE"
    sandbox.faults.kill_switch_engaged = True
    response = order(http, sandbox)
    assert response.status_code == 503
    assert response.json() == {"detail": KILL_TEXT}
    assert gateway_get(http, sandbox, "/api/v1/kill-switch/status").json()["state"] == "ENGAGED"
    assert sandbox.state.orders_created() == 0


def test_kill_switch_engages_after_n_orders(http: requests.Session, sandbox: Sandbox) -> None:
    sandbox.faults.kill_switch_after_orders = 2
    assert order(http, sandbox, client_order_id="a").status_code == 200
    assert order(http, sandbox, client_order_id="b").status_code == 200
    for later in ("c", "a"):  # a retry of a stored order is blocked too
        response = order(http, sandbox, client_order_id=later)
        assert response.status_code == 503
        assert response.json()["detail"] == KILL_TEXT
    assert gateway_get(http, sandbox, "/api/v1/kill-switch/status").json()["state"] == "ENGAGED"
    assert sandbox.state.orders_created() == 2


def test_rate_limit_is_429_with_retry_after(http: requests.Session, sandbox: Sandbox) -> None:
    sandbox.faults.rate_limit_rate = 1.0
    sandbox.faults.retry_after_seconds = 2.5
    response = order(http, sandbox)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2.5"
    assert sandbox.state.order("ord-1") is None
    assert sandbox.state.post_attempts == 1


def test_error_rate_is_503_before_storing(http: requests.Session, sandbox: Sandbox) -> None:
    sandbox.faults.error_rate = 1.0
    response = order(http, sandbox)
    assert response.status_code == 503
    assert response.json() == {"detail": "Broker unavailable"}
    assert sandbox.state.orders_created() == 0


def test_seed_replays_the_fault_pattern() -> None:
    def pattern() -> list[int]:
        with Sandbox(SandboxFaults(error_rate=0.5, seed=42)) as box, requests.Session() as http:
            return [order(http, box, client_order_id=f"o{i}").status_code for i in range(24)]

    first = pattern()
    assert set(first) == {200, 503}
    assert pattern() == first


def test_timeout_after_accept_stores_the_order(http: requests.Session, sandbox: Sandbox) -> None:
    sandbox.faults.timeout_after_accept_rate = 1.0
    sandbox.faults.hang_seconds = 0.5
    body = {"symbol": "AAPL", "side": "buy", "qty": 10, "client_order_id": "slow"}
    with pytest.raises(requests.Timeout):
        http.post(f"{sandbox.gateway_url}/api/v1/orders", json=body, timeout=0.2)
    stored = sandbox.state.order("slow")
    assert stored is not None
    assert stored["status"] == "filled"
    retry = order(http, sandbox, client_order_id="slow")  # retries are answered at once
    assert retry.json()["message"] == "Order already exists (idempotent retry)"


def test_drop_after_accept_stores_the_order(http: requests.Session, sandbox: Sandbox) -> None:
    sandbox.faults.drop_after_accept_rate = 1.0
    with pytest.raises(requests.ConnectionError):
        order(http, sandbox)
    assert sandbox.state.order("ord-1") is not None
    assert sandbox.state.position("AAPL") == 10
    assert order(http, sandbox).status_code == 200


# --- Market data ------------------------------------------------------------------------------


def test_snapshots_missing_and_stale(http: requests.Session, sandbox: Sandbox) -> None:
    sandbox.faults.missing_price_symbols = {"MSFT"}
    sandbox.faults.stale_price_symbols = {"TSLA"}
    url = f"{sandbox.market_data_url}/v2/stocks/snapshots"
    response = http.get(url, params={"symbols": "AAPL,MSFT,TSLA"}, timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert sorted(body) == ["AAPL", "TSLA"]
    aapl = body["AAPL"]
    assert aapl["latestTrade"]["p"] == 190.0
    assert (aapl["latestQuote"]["ap"], aapl["latestQuote"]["bp"]) == (190.01, 189.99)
    assert {"dailyBar", "prevDailyBar"} <= set(aapl)
    now = datetime.now(UTC)

    def age(snapshot: dict[str, Any], key: str) -> timedelta:
        stamp = snapshot[key]["t"]
        assert stamp.endswith("Z")
        return now - datetime.fromisoformat(stamp)

    assert age(aapl, "latestTrade") < timedelta(seconds=5)
    for key in ("latestTrade", "latestQuote"):
        assert timedelta(minutes=59) < age(body["TSLA"], key) < timedelta(minutes=61)

    keyed = http.get(
        url,
        params={"symbols": "AAPL"},
        headers={"APCA-API-KEY-ID": "id", "APCA-API-SECRET-KEY": "secret"},
        timeout=5,
    )
    assert keyed.json()["AAPL"]["latestTrade"]["p"] == 190.0
    assert http.get(url, timeout=5).status_code == 400


# --- State ------------------------------------------------------------------------------------


def test_prices_are_defaults_or_stable_hashes() -> None:
    state = SandboxState()
    assert state.price_of("AAPL") == Decimal("190.00")
    assert state.price_of("SPY") == Decimal("560.00")
    unknown = state.price_of("QWERTY")
    assert unknown == SandboxState().price_of("QWERTY")
    assert Decimal(10) <= unknown < Decimal(500)
    assert unknown.as_tuple().exponent == -2
    state.set_price("AAPL", Decimal("200.50"))
    assert state.snapshot()["prices"]["AAPL"] == "200.50"


def test_set_price_and_position_drive_fills(http: requests.Session, sandbox: Sandbox) -> None:
    sandbox.state.set_position("AAPL", Decimal(20))
    sandbox.state.set_price("AAPL", Decimal("200.00"))
    assert order(http, sandbox, side="sell", qty=30).status_code == 200
    assert sandbox.state.position("AAPL") == -10
    (row,) = gateway_get(http, sandbox, "/api/v1/positions").json()["positions"]
    assert (row["qty"], row["avg_entry_price"], row["realized_pl"]) == ("-10", "200.00", "200.00")


def test_state_persists_across_sandboxes(tmp_path: Path) -> None:
    state_file = tmp_path / "nested" / "state.json"
    with Sandbox(state_file=state_file) as first, requests.Session() as http:
        assert order(http, first).status_code == 200
        meanwhile = SandboxState(state_file)  # kept on the mutation, not only at stop
        meanwhile.load()
        assert meanwhile.order("ord-1")["status"] == "filled"  # type: ignore[index]
    with Sandbox(SandboxFaults(), state_file=state_file) as second, requests.Session() as http:
        assert second.state.position("AAPL") == 10
        assert second.state.post_attempts == 1
        assert positions(http, second) == {"AAPL": "10"}
        retry = order(http, second)
        assert retry.json()["message"] == "Order already exists (idempotent retry)"
        assert second.state.orders_created() == 1
    assert [p.name for p in state_file.parent.iterdir()] == ["state.json"]


def test_a_mutation_appends_one_journal_line_whatever_the_state_holds(tmp_path: Path) -> None:
    """Keeping an order costs the same at the thousandth order as at the first: one line of
    what changed, not the whole state rewritten."""
    state_file = tmp_path / "state.json"
    state = SandboxState(state_file)
    state.load()
    for number in range(300):
        state.place_order(
            OrderTicket(f"c-{number}", "AAPL", "buy", 1, "market", "day", None, None),
            dry_run=False,
            max_position_shares=10_000,
            kill_switch_after_orders=None,
        )
    journal = tmp_path / "state.json.journal"
    lines = journal.read_text().splitlines()
    assert len(lines) == 300
    assert len(lines[-1]) < 2 * len(lines[0])  # the last line is no longer than the first
    assert not state_file.exists()  # nothing rewritten yet
    replayed = SandboxState(state_file)
    replayed.load()  # the journal replayed, then written back as the file
    assert (replayed.orders_created(), replayed.position("AAPL")) == (300, 300)
    assert json.loads(state_file.read_text())["orders"]["c-299"]["status"] == "filled"
    assert not journal.exists()


def test_a_torn_last_journal_line_is_left_out(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    state = SandboxState(state_file)
    state.set_price("AAPL", Decimal("101.00"))
    state.set_position("AAPL", Decimal(7))
    journal = tmp_path / "state.json.journal"
    journal.write_text(journal.read_text() + '{"prices": {"AAPL": "1')  # a crash mid-append
    replayed = SandboxState(state_file)
    replayed.load()
    assert (replayed.price_of("AAPL"), replayed.position("AAPL")) == (Decimal("101.00"), 7)


# --- Control API ------------------------------------------------------------------------------


def test_control_api(http: requests.Session, sandbox: Sandbox) -> None:
    faults_url = f"{sandbox.gateway_url}/_sandbox/faults"
    update = {"error_rate": 1.0, "missing_price_symbols": ["AAPL"], "signal_fault": "wrong_date"}
    response = http.post(faults_url, json=update, timeout=5)
    assert response.status_code == 200
    assert response.json()["missing_price_symbols"] == ["AAPL"]
    assert sandbox.faults.missing_price_symbols == {"AAPL"}
    assert order(http, sandbox).status_code == 503

    for bad in ({"no_such_fault": 1}, {"error_rate": 2}, {"signal_fault": "nope"}, [1]):
        assert http.post(faults_url, json=bad, timeout=5).status_code == 422
    assert sandbox.faults.error_rate == 1.0

    assert http.post(faults_url, json={"error_rate": 0}, timeout=5).status_code == 200
    assert order(http, sandbox).status_code == 200
    state = gateway_get(http, sandbox, "/_sandbox/state").json()
    assert state["post_attempts"] == 2
    assert state["orders"]["ord-1"]["status"] == "filled"
    assert state["positions"]["AAPL"]["qty"] == "10"

    reset = http.post(f"{sandbox.gateway_url}/_sandbox/reset", timeout=5).json()
    assert (reset["orders"], reset["positions"], reset["post_attempts"]) == ({}, {}, 0)
    assert sandbox.state.orders_created() == 0


# --- HTTP behaviour ---------------------------------------------------------------------------


def test_each_response_arrives_whole_on_a_kept_alive_connection(sandbox: Sandbox) -> None:
    port = int(sandbox.gateway_url.rsplit(":", 1)[1])
    request = b"GET /api/v1/kill-switch/status HTTP/1.1\r\nHost: sandbox\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        for _ in range(2):
            connection.sendall(request)
            data = connection.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            assert len(body) == length
            assert json.loads(body) == {"state": "ACTIVE"}


def test_keep_alive_requests_do_not_stall_on_nagle(
    http: requests.Session, sandbox: Sandbox
) -> None:
    # Headers and body in two writes stall each answer ~40 ms (Nagle + delayed ACK): 50
    # requests would take over 2 s; in one write they take a few milliseconds each.
    started = time.perf_counter()
    for _ in range(50):
        gateway_get(http, sandbox, "/api/v1/kill-switch/status")
    assert time.perf_counter() - started < 1.0


def test_latency_delays_every_service(http: requests.Session, sandbox: Sandbox) -> None:
    sandbox.faults.latency_ms = 60
    for url in (sandbox.signal_url + "/health", sandbox.gateway_url + "/health"):
        assert http.get(url, timeout=5).elapsed >= timedelta(milliseconds=60)


def test_unknown_path_is_404(http: requests.Session, sandbox: Sandbox) -> None:
    response = http.get(f"{sandbox.market_data_url}/v2/nothing", timeout=5)
    assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})


def test_stop_releases_ports_and_wakes_waiters(http: requests.Session) -> None:
    box = Sandbox()
    box.start()
    port = int(box.gateway_url.rsplit(":", 1)[1])
    assert gateway_get(http, box, "/health").status_code == 200  # leaves a kept-alive connection
    waiter = threading.Thread(target=box.wait)
    waiter.start()
    box.stop()
    waiter.join(timeout=5)
    assert not waiter.is_alive()
    with pytest.raises(RuntimeError):
        _ = box.gateway_url
    with Sandbox(gateway_port=port) as again:
        assert again.gateway_url.endswith(f":{port}")
        assert gateway_get(http, again, "/health").status_code == 200


# --- Service authentication -------------------------------------------------------------------

SECRET = "sandbox-secret"
ORDER = {"symbol": "AAPL", "side": "buy", "qty": 10, "client_order_id": "ord-1"}


@pytest.fixture
def secured() -> Iterator[Sandbox]:
    with Sandbox(SandboxFaults(seed=1), auth_secret=SECRET) as running:
        yield running


def client(
    http: requests.Session, base_url: str, auth: requests.auth.AuthBase | None
) -> HttpClient:
    return HttpClient("sandbox", base_url, 5.0, session=http, sleep=lambda _: None, auth=auth)


def signed_order(sandbox: Sandbox) -> requests.PreparedRequest:
    """A signed order POST, prepared but not sent, to replay or tamper with."""
    return requests.Request(
        "POST",
        f"{sandbox.gateway_url}/api/v1/orders",
        data=json.dumps(ORDER).encode(),
        headers={"Content-Type": "application/json"},
        auth=InternalTokenAuth(SECRET),
    ).prepare()


def refusal(response: requests.Response) -> str:
    assert response.status_code == 401, response.text
    detail = response.json()["detail"]
    assert detail["message"]
    return str(detail["error"])


def test_signed_requests_are_accepted_end_to_end(http: requests.Session, secured: Sandbox) -> None:
    assert secured.auth_secret == SECRET
    assert secured.bearer_token is None
    auth = InternalTokenAuth(SECRET, strategy_id="alpha_baseline")
    signal_service = client(http, secured.signal_url, auth)
    gateway_service = client(http, secured.gateway_url, auth)
    generated = signal_service.request(
        "POST", "/api/v1/signals/generate", json_body={"symbols": FIVE, "as_of_date": AS_OF}
    )
    assert generated.status_code == 200, generated.text
    assert len(generated.json()["signals"]) == 5
    placed = gateway_service.request("POST", "/api/v1/orders", json_body=ORDER)
    assert placed.status_code == 200, placed.text
    for path, params in (
        ("/api/v1/orders/ord-1", None),
        ("/api/v1/positions", {"symbol": "AAPL", "note": "a b,c"}),  # the raw query is signed
        ("/api/v1/kill-switch/status", None),
        ("/api/v1/config", None),
    ):
        response = gateway_service.request("GET", path, params=params)
        assert response.status_code == 200, (path, response.text)
    assert secured.state.position("AAPL") == 10
    assert secured.auth_failures == 0


def test_each_retry_is_signed_anew(http: requests.Session, secured: Sandbox) -> None:
    secured.faults.error_rate = 1.0  # every attempt reaches the order handler and gets 503
    gateway_service = client(http, secured.gateway_url, InternalTokenAuth(SECRET))
    response = gateway_service.request("POST", "/api/v1/orders", json_body=ORDER)
    assert response.status_code == 503
    assert secured.state.post_attempts == 3
    assert secured.auth_failures == 0


def test_unsigned_requests_are_refused(http: requests.Session, secured: Sandbox) -> None:
    assert refusal(signals(http, secured, FIVE)) == "authentication_required"
    assert refusal(order(http, secured)) == "authentication_required"
    assert refusal(gateway_get(http, secured, "/api/v1/positions")) == "authentication_required"
    assert secured.auth_failures == 3
    assert secured.state.post_attempts == 0  # refused before the order handler


@pytest.mark.parametrize(
    "auth",
    [
        InternalTokenAuth("wrong-secret"),
        InternalTokenAuth(SECRET, clock=lambda: time.time() - 301),
        InternalTokenAuth(SECRET, clock=lambda: time.time() + 301),
    ],
    ids=["wrong-secret", "stale", "future"],
)
def test_bad_signature_is_refused(
    http: requests.Session, secured: Sandbox, auth: InternalTokenAuth
) -> None:
    for base_url, path, body in (
        (secured.signal_url, "/api/v1/signals/generate", {"symbols": FIVE}),
        (secured.gateway_url, "/api/v1/orders", ORDER),
    ):
        response = client(http, base_url, auth).request("POST", path, json_body=body)
        assert refusal(response) == "invalid_internal_token"
    assert secured.auth_failures == 2
    assert secured.state.orders_created() == 0


def test_tampered_body_is_refused(http: requests.Session, secured: Sandbox) -> None:
    prepared = signed_order(secured)
    headers = {k: v for k, v in prepared.headers.items() if k != "Content-Length"}
    tampered = json.dumps({**ORDER, "qty": 1000}).encode()
    url = f"{secured.gateway_url}/api/v1/orders"
    assert refusal(http.post(url, data=tampered, headers=headers, timeout=5)) == (
        "invalid_internal_token"
    )
    assert secured.state.orders_created() == 0
    # The untouched request, nonce unburnt by the refusal, still goes through.
    assert http.send(prepared, timeout=5).status_code == 200


def test_replayed_request_is_refused(http: requests.Session, secured: Sandbox) -> None:
    prepared = signed_order(secured)
    assert http.send(prepared, timeout=5).status_code == 200
    assert refusal(http.send(prepared, timeout=5)) == "invalid_internal_token"
    assert (secured.state.post_attempts, secured.auth_failures) == (1, 1)


def test_concurrent_replays_are_accepted_once(secured: Sandbox) -> None:
    prepared = signed_order(secured)

    def send(_: int) -> int:
        with requests.Session() as session:
            return session.send(prepared.copy(), timeout=5).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(send, range(8)))
    assert statuses == [200] + [401] * 7
    assert secured.auth_failures == 7


def test_bearer_token(http: requests.Session) -> None:
    with Sandbox(bearer_token="tok-1") as box:
        assert box.bearer_token == "tok-1"
        good = client(http, box.gateway_url, BearerAuth("tok-1"))
        assert good.request("POST", "/api/v1/orders", json_body=ORDER).status_code == 200
        bad = client(http, box.signal_url, BearerAuth("tok-2"))
        refused = bad.request("POST", "/api/v1/signals/generate", json_body={"symbols": FIVE})
        assert refusal(refused) == "invalid_token"
        unsigned = client(http, box.gateway_url, None).request("GET", "/api/v1/positions")
        assert refusal(unsigned) == "authentication_required"
        # A platform signature is no bearer token.
        signed = client(http, box.gateway_url, InternalTokenAuth(SECRET))
        assert refusal(signed.request("GET", "/api/v1/positions")) == "authentication_required"
        assert box.auth_failures == 3


def test_bearer_token_and_signature_both_required(http: requests.Session) -> None:
    with Sandbox(auth_secret=SECRET, bearer_token="tok-1") as box:
        prepared = signed_order(box)
        assert refusal(http.send(prepared.copy(), timeout=5)) == "authentication_required"
        prepared.headers["Authorization"] = "Bearer tok-1"
        assert http.send(prepared, timeout=5).status_code == 200
        assert box.auth_failures == 1


def test_health_control_api_and_market_data_are_never_checked(http: requests.Session) -> None:
    with Sandbox(auth_secret=SECRET, bearer_token="tok-1") as box:
        for url in (
            f"{box.signal_url}/health",
            f"{box.signal_url}/ready",
            f"{box.gateway_url}/health",
            f"{box.gateway_url}/_sandbox/state",
            f"{box.market_data_url}/v2/stocks/snapshots?symbols=AAPL",
        ):
            assert http.get(url, timeout=5).status_code == 200, url
        faults = http.post(f"{box.gateway_url}/_sandbox/faults", json={"latency_ms": 0}, timeout=5)
        assert faults.status_code == 200
        assert box.auth_failures == 0


@pytest.mark.parametrize("content", ["garbage", "{}", "[]", '{"prices": 5}', None])
def test_a_state_file_that_cannot_be_used_is_a_configuration_error(
    tmp_path: Path, content: str | None
) -> None:
    """Refused (exit 4) naming the file and how to start afresh, not an internal error."""
    path = tmp_path / "state.json"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught, Sandbox(state_file=path):
        pass
    assert f"the sandbox's state file {path} cannot be used" in str(caught.value)
    assert "delete it (and its .journal) to start from a flat book" in str(caught.value)
