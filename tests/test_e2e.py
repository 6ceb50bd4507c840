"""End to end: the real `orch` command, in its own process, against the sandbox over sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from harness import SETTINGS_VARIABLES, Orch, orch_environ
from sqlalchemy import select, text

from orchestrator_cli import db
from orchestrator_cli.models import OrchestrationRun, SignalOrderMapping
from orchestrator_cli.sandbox import Sandbox, SandboxFaults

pytestmark = pytest.mark.e2e

SPEC_RUN_KEYS = {
    "run_id",
    "strategy_id",
    "as_of_date",
    "status",
    "dry_run",
    "num_signals",
    "num_orders_submitted",
    "num_orders_accepted",
    "num_orders_rejected",
    "duration_seconds",
    "error_message",
    "mappings",
}
SPEC_MAPPING_KEYS = {
    "symbol",
    "predicted_return",
    "rank",
    "target_weight",
    "price",
    "current_qty",
    "target_qty",
    "order_qty",
    "order_side",
    "client_order_id",
    "order_status",
    "skip_reason",
}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxFaults(seed=7)) as running:
        yield running


def orch_at(tmp_path: Path, sandbox: Sandbox, database_url: str) -> Orch:
    return Orch.at_sandbox(tmp_path, sandbox, database_url, HTTP_TIMEOUT_SECONDS="5")


@pytest.fixture
def orch(tmp_path: Path, sandbox: Sandbox) -> Orch:
    return orch_at(tmp_path, sandbox, f"sqlite:///{tmp_path}/orch.db")


@pytest.fixture
def orch_any_db(tmp_path: Path, sandbox: Sandbox, database_url: str) -> Orch:
    """On SQLite and on PostgreSQL (already migrated by the fixture)."""
    return orch_at(tmp_path, sandbox, database_url)


SYMBOLS = "AAPL,MSFT,GOOGL,AMZN,TSLA"


def test_first_run_prints_table_and_shows_in_the_audit_view(orch_any_db: Orch) -> None:
    done = orch_any_db("run", "--symbols", SYMBOLS)
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout
    for symbol in SYMBOLS.split(","):
        assert symbol in done.stdout
    # As cron's log gets it: no line padded with spaces after its text (the table's title).
    assert [line for line in done.stdout.splitlines() if line != line.rstrip()] == []

    code, page = orch_any_db.json("runs", "list")
    assert code == 0
    assert page["total"] == 1
    (listed,) = page["runs"]
    assert listed["status"] == "completed"

    prefix = listed["run_id"][:8]
    shown = orch_any_db("runs", "show", prefix)
    assert shown.returncode == 0, shown.stderr
    assert listed["run_id"] in shown.stdout
    code, run = orch_any_db.json("runs", "show", listed["run_id"])
    assert code == 0
    assert len(run["mappings"]) == 5


def test_json_output_is_one_document_in_the_spec_shape(orch: Orch, sandbox: Sandbox) -> None:
    code, run = orch.json("run", "--symbols", SYMBOLS)
    assert code == 0
    assert set(run) >= SPEC_RUN_KEYS
    assert run["status"] == "completed"
    assert run["num_signals"] == 5
    for mapping in run["mappings"]:
        assert set(mapping) >= SPEC_MAPPING_KEYS
        assert isinstance(mapping["target_weight"], int | float)
        if mapping["order_qty"]:
            assert isinstance(mapping["price"], str)
            order = sandbox.state.order(mapping["client_order_id"])
            assert order is not None
            assert order["qty"] == mapping["order_qty"]
    submitted = [m for m in run["mappings"] if m["client_order_id"]]
    assert run["num_orders_submitted"] == len(submitted) == sandbox.state.orders_created()


def test_run_and_runs_show_carry_the_runs_phase_timings(orch_any_db: Orch) -> None:
    code, run = orch_any_db.json("run", "--symbols", SYMBOLS)
    assert code == 0, run
    phases = run["phase_seconds"]
    assert set(phases) >= {"signals", "prices", "plan", "record_plan", "submit"}
    assert set(phases) >= {"record_outcomes", "settle", "positions"}
    assert all(isinstance(seconds, int | float) and seconds >= 0 for seconds in phases.values())
    code, shown = orch_any_db.json("runs", "show", run["run_id"])
    assert code == 0
    assert shown["phase_seconds"] == phases


def test_rerun_after_fills_orders_only_the_remaining_difference(
    orch: Orch, sandbox: Sandbox
) -> None:
    args = ("run", "--symbols", "AAPL", "--top-n", "1", "--bottom-n", "0")
    code, first = orch.json(*args, "--max-position-size", "10000")
    assert code == 0
    (aapl,) = first["mappings"]
    price = sandbox.state.price_of("AAPL")
    assert aapl["order_qty"] == int(10000 // price)
    assert sandbox.state.position("AAPL") == aapl["order_qty"]

    code, second = orch.json(*args, "--max-position-size", "15000", "--force")
    assert code == 0
    (again,) = second["mappings"]
    assert again["current_qty"] == aapl["order_qty"]
    assert again["target_qty"] == int(15000 // price)
    assert again["order_qty"] == again["target_qty"] - aapl["order_qty"]
    assert sandbox.state.position("AAPL") == again["target_qty"]

    code, third = orch.json(*args, "--max-position-size", "15000", "--force")
    assert code == 0
    assert third["mappings"][0]["skip_reason"] == "already_at_target"
    assert sandbox.state.orders_created() == 2

    done = orch(*args, "--max-position-size", "20000")  # not forced: the day is done
    assert done.returncode == 0
    assert "already completed" in done.stdout
    assert sandbox.state.orders_created() == 2


def test_rerun_of_the_same_plan_creates_no_second_order(orch: Orch, sandbox: Sandbox) -> None:
    sandbox.faults.gateway_dry_run = True  # the gateway logs orders and never fills them
    code, first = orch.json("run", "--symbols", SYMBOLS)
    assert code == 0
    created = sandbox.state.orders_created()
    assert created == first["num_orders_submitted"] > 0

    again = orch("run", "--symbols", SYMBOLS)  # the day's run completed: nothing to do
    assert again.returncode == 0, again.stderr
    assert "already completed" in again.stdout
    assert sandbox.state.post_attempts == created

    # Forced: the gateway only logged the first orders (dry_run never fills), so they are
    # not in flight; the forced run orders again, under new ids, never reusing an old one.
    code, forced = orch.json("run", "--symbols", SYMBOLS, "--force")
    assert code == 0
    assert forced["run_id"] != first["run_id"]
    assert sandbox.state.orders_created() == 2 * created
    ids = lambda run: {m["client_order_id"] for m in run["mappings"] if m["client_order_id"]}  # noqa: E731
    assert not ids(first) & ids(forced)


def test_malformed_signal_payload_sends_nothing(orch: Orch, sandbox: Sandbox) -> None:
    sandbox.faults.signal_fault = "malformed"
    done = orch("run", "--symbols", SYMBOLS)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "bad payload" in done.stdout + done.stderr
    assert sandbox.state.post_attempts == 0
    _, page = orch.json("runs", "list")
    assert page["runs"][0]["status"] == "failed"
    assert "bad payload" in page["runs"][0]["error_message"]


def test_bad_configuration_is_refused_before_any_service_call(
    orch: Orch, sandbox: Sandbox, tmp_path: Path
) -> None:
    done = orch("run", "--symbols", SYMBOLS, CAPITAL="lots")
    assert done.returncode == 4
    assert "CAPITAL" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert sandbox.state.post_attempts == 0
    assert not (tmp_path / "orch.db").exists()


def test_kill_switch_mid_run_blocks_the_rest(orch: Orch, sandbox: Sandbox) -> None:
    sandbox.faults.kill_switch_after_orders = 1
    code, run = orch.json("run", "--symbols", SYMBOLS, ORDER_CONCURRENCY="1")
    assert code == 3
    assert run["status"] == "partial"
    assert run["num_orders_accepted"] == 1 == sandbox.state.orders_created()
    statuses = [m["order_status"] for m in run["mappings"] if m["client_order_id"]]
    assert statuses.count("filled") == 1
    assert all(s in {"filled", "blocked", "blocked_kill_switch"} for s in statuses)
    # Only the order that met the engaged switch was sent after it.
    assert sandbox.state.post_attempts == 2


def test_missing_price_makes_the_run_partial(orch: Orch, sandbox: Sandbox) -> None:
    code, first = orch.json("run", "--symbols", SYMBOLS, "--dry-run")
    traded = [m["symbol"] for m in first["mappings"] if m["order_qty"]]
    sandbox.faults.missing_price_symbols = {traded[0]}
    code, run = orch.json("run", "--symbols", SYMBOLS)
    assert code == 3
    skipped = {m["symbol"]: m for m in run["mappings"]}[traded[0]]
    assert skipped["skip_reason"] == "price_unavailable"
    assert sandbox.state.order(skipped["client_order_id"] or "") is None


def test_every_price_missing_fails_and_sends_nothing(orch: Orch, sandbox: Sandbox) -> None:
    sandbox.faults.missing_price_symbols = set(SYMBOLS.split(","))
    code, run = orch.json("run", "--symbols", SYMBOLS)
    assert code == 1
    assert run["status"] == "failed"
    assert sandbox.state.post_attempts == 0


def test_sigkill_mid_run_leaves_every_sent_order_recorded(
    orch: Orch, sandbox: Sandbox, tmp_path: Path
) -> None:
    symbols = ",".join(f"S{i:02d}" for i in range(12))
    sandbox.faults.latency_ms = 150
    args = ("run", "--symbols", symbols, "--top-n", "12", "--bottom-n", "0")
    process = orch.start(
        *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, ORDER_CONCURRENCY="2"
    )
    deadline = time.monotonic() + 60
    while sandbox.state.orders_created() < 3 and process.poll() is None:
        assert time.monotonic() < deadline, "no orders reached the sandbox"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    at_gateway = set(sandbox.state.snapshot()["orders"])
    assert 3 <= len(at_gateway) < 12
    engine = db.make_engine(orch.database_url)
    try:
        with engine.connect() as connection:
            recorded = set(connection.scalars(select(SignalOrderMapping.client_order_id)).all())
    finally:
        engine.dispose()
    assert at_gateway <= recorded


def test_unmigrated_postgres_is_refused_until_db_upgrade(
    tmp_path: Path, sandbox: Sandbox, postgres_url: str
) -> None:
    fresh = postgres_url.rsplit("/", 1)[0] + f"/orch_e2e_{os.getpid()}"
    admin = db.make_engine(postgres_url).execution_options(isolation_level="AUTOCOMMIT")
    name = fresh.rsplit("/", 1)[1]
    try:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            connection.execute(text(f"CREATE DATABASE {name}"))
        orch = orch_at(tmp_path, sandbox, fresh)
        refused = orch("run", "--symbols", SYMBOLS)
        assert refused.returncode == 4
        assert "orch db upgrade" in refused.stderr
        assert sandbox.state.post_attempts == 0

        upgraded = orch("db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
        done = orch("run", "--symbols", SYMBOLS)
        assert done.returncode == 0, done.stderr
        again = orch("db", "upgrade")
        assert "already" in again.stdout
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_sandbox_flag_keeps_state_between_runs(tmp_path: Path) -> None:
    orch = Orch(tmp_path, orch_environ(tmp_path, SANDBOX_STATE_FILE=str(tmp_path / "sandbox.json")))
    command = ("run", "--sandbox", "--symbols", SYMBOLS)
    first = orch(*command, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["num_orders_accepted"] > 0
    second = orch(*command, "--json", "--force")
    assert second.returncode == 0, second.stderr
    rerun = json.loads(second.stdout)
    assert rerun["num_orders_submitted"] == 0
    assert {m["skip_reason"] for m in rerun["mappings"]} <= {"already_at_target", "zero_weight"}
    assert (tmp_path / "sandbox.db").is_file(), "the runs are recorded beside the sandbox state"
    assert not list((tmp_path / "data").rglob("orch.db")), "DATABASE_URL is never touched"
    code, page = orch.json("runs", "list", "--sandbox")
    assert (code, page["total"]) == (0, 2)
    shown = orch("runs", "show", page["runs"][0]["run_id"][:8], "--sandbox")
    assert shown.returncode == 0, shown.stderr
    assert page["runs"][0]["run_id"] in shown.stdout


def test_after_a_run_the_sqlite_file_alone_holds_it(tmp_path: Path, orch: Orch) -> None:
    """The write-ahead log is folded into the database as orch exits: no `-wal` or `-shm` is
    left, and a copy of the one file (a naive backup) has the run and its mappings."""
    code, run = orch.json("run", "--symbols", SYMBOLS)
    assert code == 0, run
    assert sorted(p.name for p in tmp_path.glob("orch.db*")) == ["orch.db"]
    copy = tmp_path / "copy.db"
    copy.write_bytes((tmp_path / "orch.db").read_bytes())
    engine = db.make_engine(f"sqlite:///{copy}")
    try:
        with engine.connect() as connection:
            runs = connection.execute(select(OrchestrationRun.run_id)).scalars().all()
            mappings = connection.execute(select(SignalOrderMapping.id)).scalars().all()
    finally:
        engine.dispose()
    assert [str(r) for r in runs] == [run["run_id"]]
    assert len(mappings) == len(run["mappings"])


def test_a_sandbox_rehearsal_leaves_the_days_real_run_alone(
    tmp_path: Path, sandbox: Sandbox, database_url: str
) -> None:
    """`--sandbox` records its runs in its own database: the real run of the same strategy and
    day (same DATABASE_URL) is neither "already completed" nor renumbered by it, and the
    rehearsal's run is not in the real audit trail."""
    real = orch_at(tmp_path, sandbox, database_url)
    rehearsal = real("run", "--sandbox", "--symbols", SYMBOLS, "--json")
    assert rehearsal.returncode == 0, rehearsal.stderr
    rehearsed = json.loads(rehearsal.stdout)
    assert rehearsed["num_orders_accepted"] > 0
    assert sandbox.state.snapshot()["orders"] == {}, "the rehearsal reached the real gateway"

    code, run = real.json("run", "--symbols", SYMBOLS)
    assert code == 0, run
    assert run["action"] == "ran"
    assert run["num_orders_accepted"] > 0
    assert set(sandbox.state.snapshot()["orders"]) == {
        m["client_order_id"] for m in run["mappings"] if m["client_order_id"]
    }
    code, page = real.json("runs", "list")
    assert [r["run_id"] for r in page["runs"]] == [run["run_id"]]
    unknown = real("runs", "show", rehearsed["run_id"])
    assert unknown.returncode == 4
    assert "`--sandbox` for the runs of `orch run --sandbox`" in unknown.stderr


def test_no_setting_of_the_developer_reaches_orch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {"DATABASE_URL", "CAPITAL", "SANDBOX_STATE_FILE"} <= SETTINGS_VARIABLES
    for name in SETTINGS_VARIABLES:  # each one invalid, in either case: read, it would fail
        monkeypatch.setenv(name, "not a valid value")
        monkeypatch.setenv(name.lower(), "not a valid value")
    orch = Orch(tmp_path, orch_environ(tmp_path))
    code, page = orch.json("runs", "list")
    assert code == 0, page
    assert page["total"] == 0


SECRET = "e2e-shared-secret"


@pytest.fixture
def signed_sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxFaults(seed=11), auth_secret=SECRET) as running:
        yield running


@pytest.fixture
def redis_prices(redis_server: str) -> Iterator[Callable[[dict[str, Decimal]], None]]:
    """Writes the platform's price:{SYMBOL} quotes (fresh, mid = price) into test Redis."""
    import redis

    client = redis.Redis.from_url(redis_server)
    written: list[str] = []

    def publish(prices: dict[str, Decimal]) -> None:
        now = datetime.now(UTC).isoformat()
        for symbol, price in prices.items():
            quote = {
                "symbol": symbol,
                "bid": str(price - Decimal("0.01")),
                "ask": str(price + Decimal("0.01")),
                "mid": str(price),
                "bid_size": 100,
                "ask_size": 100,
                "timestamp": now,
            }
            client.set(f"price:{symbol}", json.dumps(quote))
            written.append(f"price:{symbol}")

    yield publish
    if written:
        client.delete(*written)
    client.close()


def test_signed_requests_and_redis_prices_end_to_end(
    tmp_path: Path,
    signed_sandbox: Sandbox,
    redis_server: str,
    redis_prices: Callable[[dict[str, Decimal]], None],
) -> None:
    symbols = ["AAPL", "MSFT", "GOOGL", "AMZN", "TSLA"]
    redis_prices({s: signed_sandbox.state.price_of(s) for s in symbols})
    orch = orch_at(tmp_path, signed_sandbox, f"sqlite:///{tmp_path}/orch.db")
    env = {"PRICE_SOURCE": "redis", "REDIS_URL": redis_server, "INTERNAL_TOKEN_SECRET": SECRET}
    code, run = orch.json("run", "--symbols", ",".join(symbols), **env)
    assert code == 0, run
    assert run["status"] == "completed"
    assert run["num_orders_accepted"] == signed_sandbox.state.orders_created() > 0
    assert signed_sandbox.auth_failures == 0
    shown = orch("runs", "show", run["run_id"])
    assert SECRET not in shown.stdout + shown.stderr

    code, refused = orch.json(
        "run",
        "--symbols",
        ",".join(symbols),
        "--force",
        **{**env, "INTERNAL_TOKEN_SECRET": "wrong"},
    )
    assert code == 1
    assert "401" in refused["error_message"]
    assert signed_sandbox.auth_failures > 0
    assert signed_sandbox.state.orders_created() == run["num_orders_accepted"]


def test_a_429_storm_is_ridden_out_without_a_duplicate(orch: Orch, sandbox: Sandbox) -> None:
    sandbox.faults.rate_limit_rate = 0.6
    sandbox.faults.retry_after_seconds = 0
    symbols = ",".join(f"R{i:02d}" for i in range(10))
    code, run = orch.json("run", "--symbols", symbols, "--top-n", "10", "--bottom-n", "0")
    assert code == 0, run
    ids = [m["client_order_id"] for m in run["mappings"] if m["client_order_id"]]
    assert len(ids) == len(set(ids)) == 10
    assert sandbox.state.orders_created() == 10
    assert sandbox.state.post_attempts > 10  # the storm happened and was waited out


def test_rate_limited_past_the_deadline_is_not_sent_and_says_so(
    orch: Orch, sandbox: Sandbox
) -> None:
    sandbox.faults.rate_limit_rate = 1.0
    sandbox.faults.retry_after_seconds = 0.2
    code, run = orch.json("run", "--symbols", SYMBOLS, RUN_DEADLINE_SECONDS="1")
    assert code == 1
    assert sandbox.state.orders_created() == 0
    statuses = {m["order_status"] for m in run["mappings"] if m["client_order_id"]}
    assert statuses == {"not_sent"}


def test_limits_are_enforced_and_shown(orch: Orch, sandbox: Sandbox) -> None:
    # Every symbol long, so AMZN has a weight whatever the day's signals rank it.
    every_long = ("--top-n", "5", "--bottom-n", "0")
    code, run = orch.json(
        "run",
        "--symbols",
        SYMBOLS,
        *every_long,
        "--max-order-notional",
        "15000",
        "--restricted",
        "amzn",
    )
    rows = {m["symbol"]: m for m in run["mappings"]}
    assert rows["AMZN"]["skip_reason"] == "restricted_symbol"
    assert run["limits"]["restricted_symbols"] == ["AMZN"]
    assert run["limits"]["max_order_notional"] == "15000"
    for m in run["mappings"]:
        if m["order_qty"]:
            assert m["order_qty"] * float(m["price"]) <= 15000
    shown = orch("runs", "show", run["run_id"])
    assert "limits: " in shown.stdout
    assert "restricted_symbol" in shown.stdout

    code, refused = orch.json("run", "--symbols", SYMBOLS, "--max-gross-exposure", "0.1", "--force")
    assert code == 1
    assert "MAX_GROSS_EXPOSURE" in refused["error_message"]


def test_sigterm_stops_sending_releases_the_lock_and_the_run_resumes(
    orch: Orch, sandbox: Sandbox
) -> None:
    from orchestrator_cli.models import RunLockRow

    args = ("run", "--symbols", ",".join(f"T{i:02d}" for i in range(10)), "--top-n", "10")
    args += ("--bottom-n", "0")
    sandbox.faults.latency_ms = 150
    process = orch.start(*args, stdout=subprocess.DEVNULL, ORDER_CONCURRENCY="1")
    deadline = time.monotonic() + 60
    while sandbox.state.orders_created() < 2 and process.poll() is None:
        assert time.monotonic() < deadline, "no orders reached the sandbox"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    assert "interrupted: no further order was sent" in stderr
    assert sandbox.state.orders_created() < 10
    engine = db.make_engine(orch.database_url)
    try:
        with engine.connect() as connection:
            assert connection.scalars(select(RunLockRow.run_id)).all() == []  # released at once
            (run_id,) = connection.scalars(select(OrchestrationRun.run_id)).all()
        assert f"`orch runs resume {run_id}` settles and finishes the run" in stderr
    finally:
        engine.dispose()

    sandbox.faults.latency_ms = 0
    code, run = orch.json(*args)
    assert code == 0, run
    assert run["action"] == "resumed"
    assert sandbox.state.orders_created() == 10
    planned = {m["client_order_id"] for m in run["mappings"] if m["client_order_id"]}
    assert set(sandbox.state.snapshot()["orders"]) == planned


def test_a_columns_of_zero_still_prints_the_error(orch: Orch) -> None:
    # Off a terminal a COLUMNS that no table fits is ignored: Rich at width 0 prints nothing.
    done = orch("runs", "show", "nonexist", COLUMNS="0")
    assert done.returncode == 4
    assert "'nonexist' is not a run id" in done.stderr


@pytest.mark.parametrize("json_output", [True, False])
def test_service_text_a_console_cannot_encode_is_printed_escaped(
    orch: Orch, sandbox: Sandbox, json_output: bool
) -> None:
    sandbox.faults.signal_strategy = "caf\u00e9\U0001f600"  # not latin-1
    args = ("run", "--symbols", SYMBOLS, *(["--json"] if json_output else []))
    done = subprocess.run(
        orch.command(*args),
        cwd=orch.cwd,
        env={**orch.env, "PYTHONIOENCODING": "latin-1"},
        capture_output=True,
        encoding="latin-1",  # what a latin-1 console shows
        timeout=orch.timeout,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # the run's own code, not an internal error
    assert "internal error" not in done.stdout + done.stderr
    if json_output:
        assert done.stdout.isascii()
        run = json.loads(done.stdout)
        assert run["status"] == "failed"
        assert "'caf\u00e9\U0001f600'" in run["error_message"]
    else:
        assert "\\U0001f600" in done.stdout + done.stderr


def test_a_lone_surrogate_from_the_signal_service_fails_the_run_cleanly(
    orch: Orch, sandbox: Sandbox
) -> None:
    sandbox.faults.signal_strategy = "x\ud800"  # a JSON "\ud800" escape decodes to this
    code, run = orch.json("run", "--symbols", SYMBOLS)
    assert code == 1, run
    assert run["status"] == "failed"  # finished and recorded, not left `running`
    assert "'x\\ud800'" in run["error_message"]
    assert sandbox.state.post_attempts == 0


@pytest.mark.parametrize("output", [(), ("--json",)])
def test_a_reader_that_stops_early_does_not_fail_the_command(
    orch: Orch, output: tuple[str, ...]
) -> None:
    """`orch run | head -1`: the run is recorded whatever happens to its output, so a reader
    going away (stdout closed before orch writes) leaves the run's own exit code, 0 here."""
    command = orch.command("run", "--symbols", SYMBOLS, *output)
    with subprocess.Popen(
        command,
        cwd=orch.cwd,
        env=orch.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()
        stderr = process.stderr.read()
        assert process.wait(timeout=60) == 0, stderr
    assert "Error" not in stderr
    code, page = orch.json("runs", "list")
    assert (code, [r["status"] for r in page["runs"]]) == (0, ["completed"])


def test_help_off_a_terminal_shows_every_option_whole(orch: Orch) -> None:
    """Piped to a file or `less`, `--help` is laid out as wide as the tables: no option name
    is cut short (at Typer's 80 columns, `--timeout-after-accep…`)."""
    done = orch("sandbox", "--help", COLUMNS="")
    assert done.returncode == 0, done.stderr
    assert "--timeout-after-accept-rate" in done.stdout
    assert "\u2026" not in done.stdout
