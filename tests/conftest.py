"""Shared fixtures: the same database tests run on SQLite and on PostgreSQL.

PostgreSQL comes from ORCH_TEST_DATABASE_URL (any database on the server: each test session
creates its own throwaway databases there and drops them at the end). Unset, PostgreSQL tests
are skipped with a visible reason, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import responses
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from orchestrator_cli import db
from orchestrator_cli.schemas import PlannedMapping, SkipReason

TEST_DATABASE_ENV = "ORCH_TEST_DATABASE_URL"
PRICE_TIME = datetime(2024, 12, 31, 14, 30, tzinfo=UTC)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of any database on the test PostgreSQL server (used to create throwaway ones)."""
    url = os.environ.get(TEST_DATABASE_ENV)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{TEST_DATABASE_ENV} not set: CI requires PostgreSQL")
        pytest.skip(f"{TEST_DATABASE_ENV} not set: PostgreSQL tests skipped")
    return url


@pytest.fixture(scope="session")
def new_postgres_database(postgres_server_url: str) -> Iterator[Callable[[], str]]:
    """A factory of empty throwaway databases on the test server, all dropped at session end."""
    server = db.make_engine(postgres_server_url)
    admin = server.execution_options(isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def create() -> str:
        name = f"orch_test_{secrets.token_hex(6)}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return server.url.set(database=name).render_as_string(hide_password=False)

    yield create
    with admin.connect() as connection:
        for name in created:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.fixture(scope="session")
def postgres_url(new_postgres_database: Callable[[], str]) -> str:
    """A throwaway PostgreSQL database for this test session (dropped at the end)."""
    return new_postgres_database()


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_url: str) -> str:
    """The session's PostgreSQL database, brought to head once."""
    engine = db.make_engine(postgres_url)
    try:
        db.upgrade_database(engine)
    finally:
        engine.dispose()
    return postgres_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A migrated-or-migratable empty database: a fresh SQLite file, or the emptied PG one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/orch.db"
    url: str = request.getfixturevalue("migrated_postgres_url")
    engine = db.make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "TRUNCATE signal_order_mappings, orchestration_runs, run_locks "
                    "RESTART IDENTITY CASCADE"
                )
            )
    finally:
        engine.dispose()
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = db.make_engine(database_url)
    db.prepare_database(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return db.make_session_factory(engine)


def _make_plan(
    symbol: str = "AAPL",
    *,
    rank: int = 1,
    predicted_return: str = "0.0234",
    target_weight: str = "0.5",
    price: str | None = "150.00",
    current_qty: str = "0",
    target_dollars: str | None = "20000.00",
    target_qty: int | None = 133,
    order_qty: int = 133,
    order_side: str | None = "buy",
    skip_reason: SkipReason | None = None,
    skip_detail: str | None = None,
) -> PlannedMapping:
    """A PlannedMapping with seed-like defaults; a skip_reason makes it a skipped signal."""
    if skip_reason is not None:
        order_qty, order_side = 0, None
    if price is None:
        target_dollars, target_qty = None, None
    return PlannedMapping(
        symbol=symbol,
        predicted_return=Decimal(predicted_return),
        rank=rank,
        target_weight=Decimal(target_weight),
        price=None if price is None else Decimal(price),
        price_timestamp=None if price is None else PRICE_TIME,
        current_qty=Decimal(current_qty),
        target_dollars=None if target_dollars is None else Decimal(target_dollars),
        target_qty=target_qty,
        order_qty=order_qty,
        order_side=order_side,
        skip_reason=skip_reason,
        skip_detail=skip_detail,
    )


@pytest.fixture
def make_plan() -> Callable[..., PlannedMapping]:
    """`make_plan("MSFT", rank=2, order_qty=5)`: see `_make_plan` for the defaults."""
    return _make_plan


REDIS_TEST_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The real Redis (logical database 15); skipped when unreachable, required in CI."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_TEST_URL} unreachable ({exc}): CI requires Redis")
        pytest.skip(f"Redis at {REDIS_TEST_URL} unreachable ({exc}): Redis tests skipped")
    finally:
        client.close()
    return REDIS_TEST_URL


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """Every registered reply must be requested (client tests assert their call counts)."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    """Injected as an HttpClient's `sleep`: records the waits, so retries never wait."""
    return []


# --- The CLI in-process: an isolated environment, and the sandbox it points at -------------


@pytest.fixture
def env(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """An isolated working directory and environment with a SQLite database in tmp_path."""
    from harness import settings_in

    for name in settings_in(os.environ):
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/orch.db")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.setenv("IGNORE_CALENDAR", "true")  # runs go ahead whatever today is
    return tmp_path


@pytest.fixture
def sandbox(env, monkeypatch: pytest.MonkeyPatch):
    """The sandbox, in-process, with the environment pointed at it (test files may override)."""
    from orchestrator_cli.sandbox import Sandbox, SandboxFaults

    with Sandbox(SandboxFaults(seed=3)) as running:
        monkeypatch.setenv("SIGNAL_SERVICE_URL", running.signal_url)
        monkeypatch.setenv("EXECUTION_GATEWAY_URL", running.gateway_url)
        monkeypatch.setenv("MARKET_DATA_URL", running.market_data_url)
        monkeypatch.setenv("PRICE_SOURCE", "alpaca")
        yield running
