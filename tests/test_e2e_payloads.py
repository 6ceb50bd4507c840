"""End to end: hostile or wrong answers from the services never crash `orch` or mislead it.

The real `orch` command, in its own process, against the sandbox serving each hostile payload
over real sockets; on SQLite and on PostgreSQL where anything is stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Orch

from orchestrator_cli.sandbox import Sandbox, SandboxFaults

pytestmark = pytest.mark.e2e

SYMBOLS = "AAPL,MSFT,GOOGL,AMZN,TSLA"
ALL_LONG = ("--top-n", "5", "--bottom-n", "0")  # every symbol long at 0.2: $20k each


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxFaults(seed=11)) as running:
        yield running


@pytest.fixture
def orch(tmp_path: Path, sandbox: Sandbox) -> Orch:
    """orch against the sandbox, on SQLite."""
    return Orch.at_sandbox(tmp_path, sandbox, f"sqlite:///{tmp_path}/orch.db")


@pytest.fixture
def orch_any_db(tmp_path: Path, sandbox: Sandbox, database_url: str) -> Orch:
    """orch against the sandbox, on SQLite and on PostgreSQL: for values that are stored,
    where SQLite would keep what PostgreSQL refuses."""
    return Orch.at_sandbox(tmp_path, sandbox, database_url)


def mappings(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["symbol"]: m for m in run["mappings"] if not m.get("leg")}


def assert_bad_payload(code: int, run: dict[str, Any], sandbox: Sandbox, *fragments: str) -> None:
    """A failed run with its reason stored, nothing sent, exit 1."""
    assert code == 1, run
    assert run["status"] == "failed"
    assert "bad payload" in run["error_message"]
    for fragment in fragments:
        assert fragment in run["error_message"]
    assert sandbox.state.post_attempts == 0
    assert run["num_orders_submitted"] == 0


# --- item: the strategy the Signal Service serves -------------------------------------------


def test_signals_of_another_strategy_fail_the_run_naming_both(orch: Orch, sandbox: Sandbox):
    code, run = orch.json("run", "--symbols", SYMBOLS, "--strategy", "momo_trial")
    assert_bad_payload(code, run, sandbox, "'alpha_baseline'", "'momo_trial'")
    assert run["strategy_id"] == "momo_trial"
    assert run["mappings"] == []


def test_a_signal_service_configured_for_the_strategy_is_followed(orch: Orch, sandbox: Sandbox):
    sandbox.faults.signal_strategy = "momo_trial"
    code, run = orch.json("run", "--symbols", SYMBOLS, "--strategy", "momo_trial")
    assert code == 0, run
    assert run["num_orders_accepted"] == sandbox.state.orders_created() > 0


# --- item: equal weights at the gross-exposure limit --------------------------------------


@pytest.mark.parametrize("size", [100, 200])
def test_equal_weight_universes_at_the_gross_limit_trade(orch: Orch, sandbox: Sandbox, size: int):
    # Weights of 1/33 (100 symbols) or 1/67 and -1/66 (200) sum past 2 in binary floats.
    universe = ",".join(f"B{i:03d}" for i in range(size))
    code, run = orch.json("run", "--symbols", universe)
    assert code == 0, run["error_message"]
    assert run["limits"]["max_gross_exposure"] == "2"
    longs_and_shorts = {100: 33 + 33, 200: 67 + 66}[size]
    assert run["num_orders_accepted"] == sandbox.state.orders_created() == longs_and_shorts


# --- item: payloads that pass a loose schema but break later ---------------------------------

# Values that do not fit their audit column: SQLite would store most, PostgreSQL would not.
UNFIT_SIGNALS = {
    "rank_out_of_range": "signals[0].rank: Input should be less than or equal to 2147483647",
    "return_out_of_range": "signals[0].predicted_return: 1E+30 is too large to record",
    "naive_generated_at": "metadata.generated_at: Input should have timezone info",
    "long_model_version": "metadata.model_version: String should have at most 64 characters",
}


@pytest.mark.parametrize("fault", sorted(UNFIT_SIGNALS))
def test_a_signal_payload_that_does_not_fit_fails_the_run_on_both_databases(
    orch_any_db: Orch, sandbox: Sandbox, fault: str
) -> None:
    sandbox.faults.signal_fault = fault
    code, run = orch_any_db.json("run", "--symbols", SYMBOLS)
    assert_bad_payload(code, run, sandbox, UNFIT_SIGNALS[fault])


def test_longs_summing_above_one_fail_the_run(orch: Orch, sandbox: Sandbox):
    sandbox.faults.signal_fault = "longs_above_one"
    code, run = orch.json("run", "--symbols", SYMBOLS)
    assert_bad_payload(code, run, sandbox, "long target weights sum to 1.5, beyond 1")


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/api/v1/signals/generate", "POST /api/v1/signals/generate: body is not valid JSON"),
        ("/api/v1/positions", "GET /api/v1/positions: body is not valid JSON"),
    ],
)
def test_deeply_nested_json_fails_the_run(orch: Orch, sandbox: Sandbox, path: str, fragment: str):
    sandbox.faults.nested_json_paths = {path}
    code, run = orch.json("run", "--symbols", SYMBOLS)
    assert_bad_payload(code, run, sandbox, fragment, "JSON nested too deeply to read")


@pytest.mark.parametrize(
    ("fault", "fragment"),
    [
        ("padded_symbol", "position symbol 'AAPL ' is not in canonical form"),
        ("lowercase_symbol", "position symbol 'aapl' is not in canonical form"),
    ],
)
def test_positions_that_would_be_misread_fail_the_run(
    orch: Orch, sandbox: Sandbox, fault: str, fragment: str
) -> None:
    sandbox.state.set_position("AAPL", 50)
    sandbox.faults.positions_fault = fault
    code, run = orch.json("run", "--symbols", SYMBOLS, *ALL_LONG)
    assert_bad_payload(code, run, sandbox, fragment)
    assert sandbox.state.position("AAPL") == 50  # the full target was not bought again


def test_a_position_too_large_to_record_fails_the_run_on_both_databases(
    orch_any_db: Orch, sandbox: Sandbox
) -> None:
    sandbox.state.set_position("AAPL", 50)
    sandbox.faults.positions_fault = "qty_out_of_range"
    code, run = orch_any_db.json("run", "--symbols", SYMBOLS, *ALL_LONG)
    assert_bad_payload(code, run, sandbox, "positions[0].qty: 1" + "0" * 30 + " is too large")


def test_a_naive_quote_time_makes_only_its_symbol_unavailable(orch: Orch, sandbox: Sandbox):
    sandbox.faults.naive_time_symbols = {"MSFT"}
    code, run = orch.json("run", "--symbols", SYMBOLS, *ALL_LONG)
    assert code == 3, run
    rows = mappings(run)
    assert rows["MSFT"]["skip_reason"] == "price_unavailable"
    assert "has no timezone" in rows["MSFT"]["detail"]
    filled = {s for s, m in rows.items() if m["order_status"] == "filled"}
    assert filled == set(SYMBOLS.split(",")) - {"MSFT"}
    assert sandbox.state.position("MSFT") == 0


# --- item: a price that is wrong, not missing ------------------------------------------------


def test_a_quote_far_from_the_previous_close_is_refused_and_the_rest_trade(
    orch: Orch, sandbox: Sandbox
) -> None:
    sandbox.faults.wrong_price_symbols = {"MSFT"}  # $4.20 for a stock that closed at $420
    code, run = orch.json("run", "--symbols", SYMBOLS, *ALL_LONG, "--max-order-notional", "25000")
    assert code == 3, run
    msft = mappings(run)["MSFT"]
    assert msft["skip_reason"] == "price_unavailable"
    assert msft["detail"] == (
        "quote 4.20 is 99.0% below the reference 420.00 (previous close), beyond "
        "MAX_PRICE_MOVE_PCT 25%"
    )
    assert msft["client_order_id"] is None
    assert sandbox.state.position("MSFT") == 0
    filled = {s for s, m in mappings(run).items() if m["order_status"] == "filled"}
    assert filled == {"AAPL", "GOOGL", "AMZN", "TSLA"}


def test_quotes_of_a_source_without_references_are_said_once_and_trade(
    orch: Orch, sandbox: Sandbox
):
    sandbox.faults.no_reference_symbols = set(SYMBOLS.split(","))
    done = orch("run", "--symbols", SYMBOLS, *ALL_LONG)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "no reference price" in line]
    assert len(warnings) == 1, done.stderr
    assert "for 5 of 5 quotes (" in warnings[0]
    assert sandbox.state.orders_created() == 5


def test_a_wrong_quote_missing_its_reference_is_refused_and_the_rest_trade(
    orch: Orch, sandbox: Sandbox
):
    """The source gives references, but not for TSLA, whose quote is also 100x too low: it
    must not size an order on it (only the gateway's fat-finger check stood in the way)."""
    sandbox.faults.no_reference_symbols = {"TSLA"}
    sandbox.faults.wrong_price_symbols = {"TSLA"}
    code, run = orch.json("run", "--symbols", SYMBOLS, *ALL_LONG)
    assert code == 3, run
    tsla = mappings(run)["TSLA"]
    assert tsla["skip_reason"] == "price_unavailable"
    assert tsla["client_order_id"] is None
    assert sandbox.state.position("TSLA") == 0
    filled = {s for s, m in mappings(run).items() if m["order_status"] == "filled"}
    assert filled == {"AAPL", "MSFT", "GOOGL", "AMZN"}


# --- item: files and numbers -----------------------------------------------------------------


def test_an_endless_symbols_file_and_an_absurd_number_exit_4(
    orch: Orch, sandbox: Sandbox, tmp_path: Path
) -> None:
    done = orch("run", "--symbols-file", "/dev/zero")
    assert done.returncode == 4, done.stderr
    assert "--symbols-file /dev/zero: it is larger than 10 MiB" in done.stderr
    done = orch("run", "--symbols", SYMBOLS, LOCK_STALE_SECONDS="1e300")
    assert done.returncode == 4, done.stderr
    assert "LOCK_STALE_SECONDS: " in done.stderr
    done = orch("run", "--symbols", SYMBOLS, PRICE_SOURCE="file", PRICES_FILE="/dev/zero")
    assert done.returncode == 4, done.stderr
    assert "PRICES_FILE /dev/zero: it is larger than 10 MiB" in done.stderr
    assert sandbox.state.post_attempts == 0
    assert not (tmp_path / "orch.db").exists()
