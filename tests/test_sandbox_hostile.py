"""The sandbox serves the hostile and wrong answers that real services have been seen to give."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests
from test_sandbox import FIVE, gateway_get, order, signals

from orchestrator_cli.sandbox import Sandbox, SandboxFaults


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxFaults(seed=1)) as running:
        yield running


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def snapshots(http: requests.Session, sandbox: Sandbox, symbols: str) -> dict[str, Any]:
    url = f"{sandbox.market_data_url}/v2/stocks/snapshots"
    body: dict[str, Any] = http.get(url, params={"symbols": symbols}, timeout=5).json()
    return body


def test_the_signal_service_names_its_configured_strategy(http, sandbox):
    assert signals(http, sandbox, FIVE).json()["metadata"]["strategy"] == "alpha_baseline"
    sandbox.faults.signal_strategy = "momo_trial"
    assert signals(http, sandbox, FIVE).json()["metadata"]["strategy"] == "momo_trial"
    health = http.get(f"{sandbox.signal_url}/health", timeout=5).json()
    assert health["model_info"]["strategy"] == "momo_trial"


def _first(body: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = body["signals"][0]
    return first


HOSTILE_SIGNALS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "rank_out_of_range": lambda body: _first(body)["rank"] == 2**31,
    "return_out_of_range": lambda body: _first(body)["predicted_return"] == 1e30,
    "naive_generated_at": lambda body: not body["metadata"]["generated_at"].endswith("Z"),
    "long_model_version": lambda body: len(body["metadata"]["model_version"]) == 65,
    "longs_above_one": lambda body: (
        sum(s["target_weight"] for s in body["signals"] if s["target_weight"] > 0) > 1
    ),
}


@pytest.mark.parametrize("fault", sorted(HOSTILE_SIGNALS))
def test_hostile_signal_payloads(http, sandbox, fault):
    sandbox.faults.signal_fault = fault
    response = signals(http, sandbox, FIVE)
    assert response.status_code == 200
    assert HOSTILE_SIGNALS[fault](response.json())


@pytest.mark.parametrize(
    "path", ["/api/v1/signals/generate", "/api/v1/positions", "/v2/stocks/snapshots"]
)
def test_any_answer_can_be_nested_too_deeply_to_parse(http, sandbox, path):
    sandbox.faults.nested_json_paths = {path}
    if path.startswith("/v2"):
        response = http.get(f"{sandbox.market_data_url}{path}?symbols=AAPL", timeout=5)
    elif path.endswith("generate"):
        response = signals(http, sandbox, FIVE)
    else:
        response = gateway_get(http, sandbox, path)
    assert response.status_code == 200
    assert response.content.startswith(b'{"detail": [[[[')
    with pytest.raises(RecursionError):
        json.loads(response.content)


def test_nesting_covers_the_paths_below_an_entry_and_only_answers_of_200(http, sandbox):
    assert order(http, sandbox).status_code == 200
    sandbox.faults.nested_json_paths = {"/api/v1/orders"}
    detail = gateway_get(http, sandbox, "/api/v1/orders/ord-1")
    assert detail.content.startswith(b'{"detail": [[[[')
    assert gateway_get(http, sandbox, "/api/v1/orders/nope").status_code == 404
    assert gateway_get(http, sandbox, "/api/v1/positions").json()["positions"]


@pytest.mark.parametrize(
    ("fault", "symbol", "qty"),
    [
        ("lowercase_symbol", "aapl", "10"),
        ("padded_symbol", "AAPL ", "10"),
        ("qty_out_of_range", "AAPL", "1" + "0" * 30),
    ],
)
def test_hostile_positions(http, sandbox, fault, symbol, qty):
    sandbox.state.set_position("AAPL", Decimal(10))
    sandbox.faults.positions_fault = fault
    (row,) = gateway_get(http, sandbox, "/api/v1/positions").json()["positions"]
    assert (row["symbol"], row["qty"]) == (symbol, qty)


def test_hostile_order_look_ups(http, sandbox):
    assert order(http, sandbox).status_code == 200
    sandbox.faults.order_fault = "filled_qty_above_qty"
    assert gateway_get(http, sandbox, "/api/v1/orders/ord-1").json()["filled_qty"] == "11"
    sandbox.faults.order_fault = "naive_filled_at"
    assert not gateway_get(http, sandbox, "/api/v1/orders/ord-1").json()["filled_at"].endswith("Z")


def test_snapshots_carry_the_previous_close_as_the_reference(http, sandbox):
    aapl = snapshots(http, sandbox, "AAPL")["AAPL"]
    assert aapl["prevDailyBar"]["c"] == 190.0


def test_a_wrong_price_keeps_the_true_previous_close(http, sandbox):
    sandbox.faults.wrong_price_symbols = {"AAPL"}
    aapl = snapshots(http, sandbox, "AAPL")["AAPL"]
    assert aapl["latestTrade"]["p"] == 1.9
    assert (aapl["latestQuote"]["ap"], aapl["latestQuote"]["bp"]) == (1.91, 1.89)
    assert aapl["prevDailyBar"]["c"] == 190.0


def test_no_reference_and_naive_times_on_chosen_symbols(http, sandbox):
    sandbox.faults.no_reference_symbols = {"AAPL"}
    sandbox.faults.naive_time_symbols = {"MSFT"}
    body = snapshots(http, sandbox, "AAPL,MSFT")
    assert "prevDailyBar" not in body["AAPL"]
    assert body["AAPL"]["latestTrade"]["t"].endswith("Z")
    assert not body["MSFT"]["latestTrade"]["t"].endswith("Z")
    assert not body["MSFT"]["latestQuote"]["t"].endswith("Z")


def test_the_control_api_takes_the_new_faults_and_refuses_unknown_choices(http, sandbox):
    url = f"{sandbox.gateway_url}/_sandbox/faults"
    update = {
        "signal_strategy": "momo_trial",
        "wrong_price_symbols": ["MSFT"],
        "nested_json_paths": ["/api/v1/positions"],
        "positions_fault": "padded_symbol",
        "order_fault": "filled_qty_above_qty",
    }
    answer = http.post(url, json=update, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.json()["wrong_price_symbols"] == ["MSFT"]
    assert sandbox.faults.signal_strategy == "momo_trial"
    for bad in ({"positions_fault": "nope"}, {"order_fault": "nope"}, {"signal_strategy": 1}):
        assert http.post(url, json=bad, timeout=5).status_code == 422
    assert sandbox.faults.positions_fault == "padded_symbol"
