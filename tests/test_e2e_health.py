"""End to end: `orch health` in its own process against the sandbox over real sockets.

The harness sets IGNORE_CALENDAR=true, so the market check passes whatever day it is (the
closed-market check is pinned in tests/test_health.py).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import Orch, orch_environ

from orchestrator_cli.sandbox import Sandbox, SandboxFaults

pytestmark = pytest.mark.e2e

CHECKS = [
    "signal_service",
    "gateway_health",
    "kill_switch",
    "gateway_mode",
    "gateway_strategy",
    "database",
    "prices",
    "market",
]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxFaults(seed=5)) as running:
        yield running


@pytest.fixture
def orch(tmp_path: Path, sandbox: Sandbox) -> Orch:
    return Orch.at_sandbox(
        tmp_path, sandbox, f"sqlite:///{tmp_path}/orch.db", HTTP_TIMEOUT_SECONDS="5"
    )


def health_json(orch: Orch, *args: str, **env: str) -> tuple[int, dict[str, bool], dict[str, str]]:
    """Exit code, ok per check and detail per check; stdout holds exactly one document."""
    done = orch("health", "--json", *args, **env)
    document = json.loads(done.stdout)  # one document, nothing else on stdout
    assert set(document) == {"ok", "checks"}, document
    assert all(set(check) == {"name", "ok", "detail"} for check in document["checks"])
    assert [check["name"] for check in document["checks"]] == CHECKS
    assert document["ok"] is (done.returncode == 0), done.stderr
    oks = {check["name"]: check["ok"] for check in document["checks"]}
    details = {check["name"]: check["detail"] for check in document["checks"]}
    return done.returncode, oks, details


def failing(oks: dict[str, bool]) -> list[str]:
    return [name for name, ok in oks.items() if not ok]


def test_healthy_sandbox_exits_0_with_every_check_ok(orch: Orch, tmp_path: Path) -> None:
    code, oks, details = health_json(orch)
    assert code == 0, details
    assert failing(oks) == []
    assert details["database"].endswith("does not exist yet: created on first run")
    assert not (tmp_path / "orch.db").exists()  # health creates nothing
    assert details["prices"].startswith("SPY 560.00 from alpaca")
    assert details["market"] == "calendar ignored (IGNORE_CALENDAR)"
    assert details["gateway_mode"] == "paper"


def test_table_names_the_failing_check(orch: Orch, sandbox: Sandbox) -> None:
    sandbox.faults.kill_switch_engaged = True
    done = orch("health")
    assert done.returncode == 1, done.stderr
    assert "kill_switch      │ FAILED │ the gateway's kill switch is engaged" in done.stdout
    assert done.stdout.splitlines()[-1] == "not ready: kill_switch failing"


@pytest.mark.parametrize(
    ("fault", "failing_check", "words"),
    [
        ({"kill_switch_engaged": True}, "kill_switch", "kill switch is engaged"),
        ({"kill_switch_state_unknown": True}, "kill_switch", "kill-switch state unknown"),
        ({"circuit_breaker_state_missing": True}, "gateway_health", "failing closed"),
        ({"gateway_health": "unhealthy"}, "gateway_health", "unhealthy"),
        ({"gateway_live": True}, "gateway_mode", "ALLOW_LIVE_TRADING=true"),
        ({"gateway_strategy": "momentum"}, "gateway_strategy", "'momentum'"),
        ({"missing_price_symbols": {"SPY"}}, "prices", "SPY: "),
        ({"signal_fault": "http_503"}, "signal_service", "HTTP 503 (Model not loaded)"),
    ],
)
def test_a_fault_exits_1_naming_its_check_alone(
    orch: Orch, sandbox: Sandbox, fault: dict[str, object], failing_check: str, words: str
) -> None:
    for name, value in fault.items():
        setattr(sandbox.faults, name, value)
    code, oks, details = health_json(orch)
    assert code == 1
    assert failing(oks) == [failing_check], details
    assert words in details[failing_check]


def test_dry_run_gateway_is_ok_and_shown(orch: Orch, sandbox: Sandbox) -> None:
    sandbox.faults.gateway_dry_run = True
    code, _oks, details = health_json(orch)
    assert code == 0, details
    assert details["gateway_mode"] == "dry_run: the gateway records orders only"


def test_live_gateway_with_live_trading_allowed_is_ok(orch: Orch, sandbox: Sandbox) -> None:
    sandbox.faults.gateway_live = True
    code, _oks, details = health_json(orch, ALLOW_LIVE_TRADING="true")
    assert code == 0, details
    assert details["gateway_mode"] == "live (ALLOW_LIVE_TRADING is set)"


def test_another_symbol_is_priced_with_symbol(orch: Orch, sandbox: Sandbox) -> None:
    sandbox.faults.missing_price_symbols = {"SPY"}
    code, _oks, details = health_json(orch, "--symbol", "aapl")
    assert code == 0, details
    assert details["prices"].startswith("AAPL 190.00 from alpaca")


@pytest.mark.postgres
def test_postgres_not_migrated_exits_1_naming_the_database(
    tmp_path: Path, sandbox: Sandbox, new_postgres_database: Callable[[], str]
) -> None:
    orch = Orch.at_sandbox(tmp_path, sandbox, new_postgres_database(), HTTP_TIMEOUT_SECONDS="5")
    code, oks, details = health_json(orch)
    assert code == 1
    assert failing(oks) == ["database"]
    assert details["database"].endswith("run `orch db upgrade`")
    assert orch("db", "upgrade").returncode == 0
    code, _oks, details = health_json(orch)
    assert code == 0, details


def test_services_down_fail_quickly_one_attempt_each(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = orch_environ(
        tmp_path,
        SIGNAL_SERVICE_URL=closed,
        EXECUTION_GATEWAY_URL=closed,
        MARKET_DATA_URL=closed,
        PRICE_SOURCE="alpaca",
        HTTP_MAX_ATTEMPTS="10",
        DATABASE_URL=f"sqlite:///{tmp_path}/orch.db",
    )
    code, oks, details = health_json(Orch(tmp_path, env, timeout=30))
    assert code == 1
    assert failing(oks) == [*CHECKS[:5], "prices"], details
    assert "after 1 attempt(s)" in details["prices"]


def test_sandbox_flag_checks_the_built_in_services(tmp_path: Path) -> None:
    env = orch_environ(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/orch.db")
    code, oks, details = health_json(Orch(tmp_path, env), "--sandbox")
    assert code == 0, details
    assert failing(oks) == []
    assert details["signal_service"].startswith("ready at http://127.0.0.1:")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"CAPITAL": "lots"}, "Error: invalid configuration: CAPITAL"),
        (("--symbol", "S P Y"), {}, "Error: --symbol 'S P Y' is not a ticker symbol"),
        ((), {"MARKET_CALENDAR": "NOPE", "IGNORE_CALENDAR": "false"}, "MARKET_CALENDAR"),
    ],
)
def test_bad_configuration_exits_4_with_one_line(
    orch: Orch, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    done = orch("health", "--json", *args, **env)
    assert done.returncode == 4, done.stderr
    assert json.loads(done.stdout)["exit_code"] == 4  # under --json the error is the document
    assert message.removeprefix("Error: ") in json.loads(done.stdout)["error"]
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
