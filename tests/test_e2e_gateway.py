"""End to end, the real `orch` against the sandbox behaving as the real gateway was seen to:
a sliding-window rate limit that counts every request, fail-closed 503s and health, and orders
filed under the gateway's own strategy. Windows are a second or two, never a minute."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Orch

from orchestrator_cli.sandbox import Sandbox, SandboxFaults

pytestmark = pytest.mark.e2e

SYMBOLS = "AAPL,MSFT,GOOGL,AMZN,TSLA"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxFaults(seed=11)) as running:
        yield running


@pytest.fixture
def orch(tmp_path: Path, sandbox: Sandbox) -> Orch:
    return Orch.at_sandbox(
        tmp_path, sandbox, f"sqlite:///{tmp_path}/orch.db", HTTP_TIMEOUT_SECONDS="5"
    )


def universe(count: int) -> tuple[str, ...]:
    """`count` symbols, every one a long: `count` buy orders from a flat book."""
    symbols = ",".join(f"R{i:02d}" for i in range(count))
    return ("--symbols", symbols, "--top-n", str(count), "--bottom-n", "0")


def sent_ids(run: dict) -> list[str]:
    return [m["client_order_id"] for m in run["mappings"] if m["client_order_id"]]


# --- the rate limit ---------------------------------------------------------------------------


def test_a_run_over_the_rate_limit_backs_off_together_and_sends_each_order_once(
    orch: Orch, sandbox: Sandbox
) -> None:
    sandbox.faults.rate_limit_per_window = 4
    sandbox.faults.rate_limit_window_seconds = 1
    code, run = orch.json("run", *universe(12), ORDER_CONCURRENCY="8", RUN_DEADLINE_SECONDS="40")
    assert code == 0, run
    assert run["status"] == "completed"
    ids = sent_ids(run)
    assert len(ids) == len(set(ids)) == 12
    assert set(sandbox.state.snapshot()["orders"]) == set(ids)
    rejected = sandbox.rate_window.rejected
    # Each order was accepted once; every other request was a 429. Backing off together,
    # each window sees one burst of the workers still waiting (about 12 refusals in all);
    # workers waiting out the Retry-After each on its own clock refill one another's window
    # (about 30 here; with the real 60 s window and the old 30 s cap, none ever got through).
    assert sandbox.state.post_attempts == 12 + rejected
    assert 0 < rejected <= 2 * 8


def test_pacing_at_or_below_the_cap_meets_no_429(orch: Orch, sandbox: Sandbox) -> None:
    sandbox.faults.rate_limit_per_window = 3  # 3 a second: 180 a minute
    sandbox.faults.rate_limit_window_seconds = 1
    code, run = orch.json(
        "run",
        *universe(8),
        "--max-orders-per-minute",
        "150",
        ORDER_CONCURRENCY="8",
        RUN_DEADLINE_SECONDS="40",
    )
    assert code == 0, run
    assert sandbox.rate_window.rejected == 0
    assert sandbox.state.post_attempts == sandbox.state.orders_created() == 8
    assert run["status"] == "completed"


def test_a_retry_after_past_the_deadline_ends_the_run_at_once(orch: Orch, sandbox: Sandbox) -> None:
    sandbox.faults.rate_limit_per_window = 2
    sandbox.faults.rate_limit_window_seconds = 60  # the real gateway's: Retry-After: 60
    started = time.monotonic()
    code, run = orch.json("run", *universe(5), RUN_DEADLINE_SECONDS="20")
    assert time.monotonic() - started < 15  # not slept until the deadline, nor retried early
    assert code == 3, run
    assert run["status"] == "partial"
    statuses = sorted(m["order_status"] for m in run["mappings"])
    assert statuses == ["filled", "filled", "not_sent", "not_sent", "not_sent"]
    # Only the orders already in flight met the 429; none was retried inside the window.
    rejected = sandbox.rate_window.rejected
    assert 1 <= rejected <= 3
    assert sandbox.state.post_attempts == 2 + rejected
    details = [m["detail"] for m in run["mappings"] if m["order_status"] == "not_sent"]
    assert all("RUN_DEADLINE_SECONDS" in detail for detail in details)


# --- fail-closed halts ------------------------------------------------------------------------

FAIL_CLOSED = [
    pytest.param(
        "circuit_breaker",
        "blocked_circuit_breaker",
        "Circuit-breaker state unavailable (fail-closed for safety)",
        id="circuit-breaker",
    ),
    pytest.param(
        "position_reservation",
        "blocked",
        "Position-reservation state unavailable (fail-closed for safety)",
        id="position-reservation",
    ),
    pytest.param(
        "kill_switch",
        "blocked_kill_switch",
        "Kill-switch unavailable (message=Kill-switch state could not be read; new orders are "
        "refused, fail_closed=True)",
        id="kill-switch",
    ),
]


@pytest.mark.parametrize(("fault", "status", "words"), FAIL_CLOSED)
def test_a_fail_closed_503_halts_after_one_post_and_is_never_resent_as_unknown(
    orch: Orch, sandbox: Sandbox, fault: str, status: str, words: str
) -> None:
    sandbox.faults.fail_closed = fault
    code, run = orch.json("run", "--symbols", SYMBOLS)
    assert code == 1, run
    assert run["status"] == "failed"
    assert sandbox.state.post_attempts == 1  # the first order went alone and met the halt
    rows = [m for m in run["mappings"] if m["client_order_id"]]
    met = [m for m in rows if m["detail"] == words]  # in the gateway's own words
    assert len(met) == 1
    assert met[0]["order_status"] == status
    others = [m for m in rows if m is not met[0]]
    assert others
    assert {m["order_status"] for m in others} == {"blocked"}
    assert all(m["detail"] == f"not sent: {words}" for m in others)
    assert run["num_orders_unknown"] == 0

    code, synced = orch.json("runs", "sync", run["run_id"])
    assert sandbox.state.post_attempts == 1  # settling never sends
    assert "unknown" not in {m["order_status"] for m in synced["mappings"]}

    code, resumed = orch.json("runs", "resume", run["run_id"])
    assert code == 1, resumed
    assert sandbox.state.post_attempts == 2  # still failing closed: one order met it again
    assert sandbox.state.orders_created() == 0
    assert resumed["num_orders_unknown"] == 0

    sandbox.faults.fail_closed = None  # the state is back: resuming sends what was blocked
    code, finished = orch.json("runs", "resume", run["run_id"])
    assert code == 0, finished
    assert sandbox.state.orders_created() == len(rows)


def test_a_missing_breaker_state_refuses_the_run_before_any_order(
    orch: Orch, sandbox: Sandbox
) -> None:
    sandbox.faults.circuit_breaker_state_missing = True
    code, run = orch.json("run", "--symbols", SYMBOLS)
    assert code == 1, run
    assert run["status"] == "failed"
    assert sandbox.state.post_attempts == 0
    message = run["error_message"]
    assert "degraded with a safety component failing closed" in message
    assert "circuit_breaker_available=false" in message


def test_a_plain_degraded_gateway_is_a_warning_only(orch: Orch, sandbox: Sandbox) -> None:
    sandbox.faults.gateway_health = "degraded"
    done = orch("run", "--symbols", SYMBOLS)
    assert done.returncode == 0, done.stderr
    assert "degraded (GET /health); going ahead" in done.stderr


# --- the gateway's own strategy -------------------------------------------------------------


def test_a_gateway_filing_under_another_strategy_refuses_the_run(
    orch: Orch, sandbox: Sandbox
) -> None:
    sandbox.faults.gateway_strategy = "momentum_v2"
    code, run = orch.json("run", "--symbols", SYMBOLS)
    assert code == 1, run
    assert sandbox.state.post_attempts == 0
    assert "its own strategy 'momentum_v2'" in run["error_message"]
    assert "this run's strategy 'alpha_baseline'" in run["error_message"]
    sandbox.faults.signal_strategy = "momentum_v2"  # the signals must name the run's too
    code, same = orch.json("run", "--symbols", SYMBOLS, "--strategy", "momentum_v2")
    assert code == 0, same


def test_an_order_detail_naming_another_strategy_is_noted_when_settled(
    orch: Orch, sandbox: Sandbox
) -> None:
    sandbox.faults.gateway_strategy = "momentum_v2"
    sandbox.faults.gateway_strategy_in_config = False  # only the order details say it
    code, run = orch.json("run", "--symbols", SYMBOLS)
    assert code == 0, run
    synced = orch("runs", "sync", run["run_id"], "--json")
    assert synced.returncode == 0, synced.stderr
    note = "the gateway filed this order under strategy 'momentum_v2', not 'alpha_baseline'"
    assert note in synced.stderr
    code, shown = orch.json("runs", "show", run["run_id"])
    ordered = [m for m in shown["mappings"] if m["client_order_id"]]
    assert ordered
    assert all(m["note"] == note for m in ordered)
    assert shown["status"] == "completed"  # the orders are the run's own: their fills count


def test_orch_sandbox_refuses_a_bad_fault_option_before_serving(orch: Orch) -> None:
    done = orch("sandbox", "--port", "0", "--fail-closed", "broker")
    assert done.returncode == 4, done.stdout + done.stderr
    assert done.stderr.strip() == (
        "Error: orch sandbox: bad value for fault fail_closed: 'broker' (one of: "
        "circuit_breaker, kill_switch, position_reservation); fix that option"
    )
    assert done.stdout == ""


def test_the_gateways_words_are_printed_literally(orch: Orch, sandbox: Sandbox) -> None:
    sandbox.faults.gateway_strategy = "[bold red]momentum[/bold red]"
    done = orch("run", "--symbols", SYMBOLS)
    assert done.returncode == 1, done.stderr
    assert "its own strategy '[bold red]momentum[/bold red]'" in done.stdout
