"""Engine and migrations: preparing a database, and failing clearly when it cannot be reached."""

from __future__ import annotations

import json
import time

import pytest

from orchestrator_cli import db
from orchestrator_cli.errors import DatabaseError, DatabaseNotMigratedError


def test_sqlite_database_is_created_and_migrated_in_a_new_directory(tmp_path):
    path = tmp_path / "not" / "yet" / "orch.db"
    engine = db.make_engine(f"sqlite:///{path}")
    try:
        assert db.current_revision(engine) is None
        db.prepare_database(engine)
        db.prepare_database(engine)  # already at head: nothing to do
        assert db.current_revision(engine) == db.head_revision()
    finally:
        engine.dispose()
    assert path.is_file()


@pytest.mark.postgres
def test_empty_postgresql_database_is_never_migrated_implicitly(new_postgres_database):
    engine = db.make_engine(new_postgres_database())
    try:
        with pytest.raises(DatabaseNotMigratedError) as caught:
            db.prepare_database(engine)
        assert db.current_revision(engine) is None
    finally:
        engine.dispose()
    message = str(caught.value)
    assert "is not migrated yet, this orch needs" in message
    assert f"needs {db.head_revision()}" in message
    assert "run `orch db upgrade`" in message


def test_unreachable_postgresql_is_a_quick_database_error_without_the_password():
    engine = db.make_engine("postgresql://orch:s3cret@127.0.0.1:1/orch")
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseError) as caught:
            db.prepare_database(engine)
    finally:
        engine.dispose()
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith("cannot reach database postgresql")
    assert "://orch:***@127.0.0.1:1/orch: " in message
    assert message.endswith("; check DATABASE_URL and that the server is up")
    assert "s3cret" not in message


def test_sqlite_file_under_a_regular_file_is_a_database_error(tmp_path):
    (tmp_path / "plain").write_text("")
    with pytest.raises(DatabaseError, match="cannot create the directory of sqlite:///"):
        db.make_engine(f"sqlite:///{tmp_path}/plain/orch.db")


@pytest.mark.e2e
def test_processes_opening_a_new_sqlite_database_at_once_all_succeed(tmp_path) -> None:
    """Two strategies' cron entries at 09:31 on a new machine: creation is serialised."""
    from harness import Orch, orch_environ

    for round_ in range(4):
        database = f"sqlite:///{tmp_path}/round{round_}/orch.db"
        orch = Orch(tmp_path, orch_environ(tmp_path, DATABASE_URL=database))
        processes = [orch.start("runs", "list", "--json") for _ in range(3)]
        answers = [process.communicate(timeout=120) for process in processes]
        for process, (stdout, stderr) in zip(processes, answers, strict=True):
            assert process.returncode == 0, stderr
            assert json.loads(stdout)["runs"] == []


# --- durability: the plan is synced to disk, outcomes may wait ------------------------------------


def _durability(session) -> str:
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        level = connection.exec_driver_sql("PRAGMA synchronous").scalar_one()
        return {0: "off", 1: "normal", 2: "full", 3: "extra"}[level]
    return str(connection.exec_driver_sql("SHOW synchronous_commit").scalar_one())


def test_sqlite_files_are_in_wal_mode(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/orch.db")
    try:
        db.prepare_database(engine)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    finally:
        engine.dispose()


def test_only_a_relaxed_transaction_commits_without_a_sync(engine, session_factory):
    durable = "full" if engine.dialect.name == "sqlite" else "on"
    relaxed = "normal" if engine.dialect.name == "sqlite" else "off"
    # One pooled connection, reused by every transaction below: what the relaxed transaction
    # set must not outlive it.
    engine.pool.dispose()
    with db.transaction(session_factory, "durable") as session:
        assert _durability(session) == durable
    with db.transaction(session_factory, "relaxed") as session:
        db.relax_durability(session)
        assert _durability(session) == relaxed
    for _ in range(2):
        with db.transaction(session_factory, "the plan") as session:
            assert _durability(session) == durable
