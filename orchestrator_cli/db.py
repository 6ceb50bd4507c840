"""Engine, sessions and migrations: how `orch` reaches its database and keeps it at head.

`transaction` is the one way to commit data: a SQLAlchemy failure inside it becomes a
`DatabaseError`. Only `upgrade_database` and `prepare_database` (so `open_database`) commit
otherwise, their own migration transaction.

Durability: every transaction's commit is on disk when it returns (SQLite in WAL mode with
`synchronous=FULL`, set on every checkout of a pooled connection), except those that call
`relax_durability` first: the order outcomes, which a later run re-derives from the gateway.
"""

from __future__ import annotations

import atexit
import os
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator_cli.config import Settings, mask_url
from orchestrator_cli.errors import ConfigError, DatabaseError, DatabaseNotMigratedError

if TYPE_CHECKING:
    import alembic.config

# The newest migration this version of orch ships. Alembic is imported only to migrate, so
# every other command checks the database against this constant (tests/test_migrations.py
# checks it against the migrations folder).
HEAD_REVISION = "0006"
SQLITE_BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_SECONDS = 10


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLite enforces foreign keys only when asked, per connection.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Write-ahead log: a commit appends to the log instead of rewriting pages, and readers
        # never block the writer. The mode is kept in the file: after the first time a no-op.
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def _durable_by_default(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    # Every checkout starts durable (each commit synced to disk), whatever an earlier user of
    # this pooled connection chose: only a transaction that asks (`relax_durability`) is not.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


# Every engine this process made and still holds, closed at exit (`_close_at_exit`).
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Close every pooled connection as the process exits. The last connection to a SQLite
    database folds the write-ahead log into the database file and removes `-wal` and `-shm`,
    so the file alone holds every committed row (a backup that copies only `orch.db` loses
    nothing); PostgreSQL sees each connection end cleanly."""
    for engine in list(_ENGINES):
        with suppress(SQLAlchemyError, OSError):
            engine.dispose()


def make_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite the file's directory is created and foreign keys enforced."""
    try:
        sa_url = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"DATABASE_URL: not a database URL: {mask_url(url)}") from exc
    if sa_url.get_backend_name() == "sqlite":
        database = sa_url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(
                    f"cannot create the directory of {mask_url(url)}: {exc.strerror}"
                ) from exc
        engine = create_engine(sa_url)
        event.listen(engine, "connect", _set_sqlite_pragmas)
        event.listen(engine, "checkout", _durable_by_default)
        _ENGINES.add(engine)
        return engine
    if sa_url.drivername == "postgresql":
        # SQLAlchemy 2.1 picks psycopg 3 for a bare postgresql://; orch ships psycopg2.
        sa_url = sa_url.set(drivername="postgresql+psycopg2")
    connect_args: dict[str, Any] = {}
    # libpq waits for the OS TCP timeout (minutes) by default; a cron job should fail fast.
    if (
        sa_url.get_driver_name() in ("psycopg2", "psycopg")
        and "connect_timeout" not in sa_url.query
    ):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    try:
        engine = create_engine(sa_url, pool_pre_ping=True, connect_args=connect_args)
    except ArgumentError as exc:  # e.g. a driver that is not installed
        raise ConfigError(f"DATABASE_URL: {mask_url(url)}: {exc}") from exc
    _ENGINES.add(engine)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (expire_on_commit=False)."""
    return sessionmaker(engine, expire_on_commit=False)


def _short_reason(exc: SQLAlchemyError) -> str:
    """The first line of the driver's message (the rest is SQL and hints)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    lines = str(orig).strip().splitlines()
    return lines[0].strip() if lines else type(orig).__name__


@contextmanager
def transaction(sessions: sessionmaker[Session], what: str) -> Iterator[Session]:
    """One committed transaction; a SQLAlchemy failure becomes DatabaseError naming `what`."""
    try:
        with sessions.begin() as session:
            yield session
    except SQLAlchemyError as exc:
        raise DatabaseError(f"database failed while {what}: {_short_reason(exc)}") from exc


def relax_durability(session: Session) -> None:
    """Let this transaction's commit return before it is on disk; call it first in the
    transaction. For records that a later run can re-derive (order outcomes, read back from
    the gateway by client_order_id), never for the plan.

    A power loss (SQLite) or a server crash (PostgreSQL) may then lose the last such commits,
    never corrupt the database nor lose an earlier durable commit. SQLite (WAL mode):
    `synchronous=NORMAL` on this connection until its next checkout, which makes it durable
    again; PostgreSQL: `synchronous_commit` off for this transaction only.
    """
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect == "sqlite":
        connection.exec_driver_sql("PRAGMA synchronous=NORMAL")
    elif dialect == "postgresql":
        connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")


def migrations_dir() -> Path:
    """The packaged migrations in a wheel install, else the repository's top-level `alembic/`."""
    packaged = Path(__file__).parent / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "alembic"


def alembic_config(connection: Connection) -> alembic.config.Config:
    """An Alembic config that needs no ini file and migrates over `connection`."""
    import alembic.config

    # Alembic's default stream is whatever sys.stdout was when it was first imported.
    config = alembic.config.Config(stdout=sys.stdout)
    # The value goes through ConfigParser interpolation: a literal % must be doubled.
    config.set_main_option("script_location", str(migrations_dir()).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def _shown(engine: Engine) -> str:
    return mask_url(engine.url.render_as_string(hide_password=False))


@contextmanager
def _reaching(engine: Engine) -> Iterator[None]:
    """Turn a failure to talk to the database into a DatabaseError naming the masked URL."""
    try:
        yield
    except DBAPIError as exc:
        raise DatabaseError(
            f"cannot reach database {_shown(engine)}: {_short_reason(exc)}; "
            "check DATABASE_URL and that the server is up"
        ) from exc


def _revision(connection: Connection) -> str | None:
    """The `alembic_version` row, read without importing Alembic; None before any migration."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    found = list(versions)
    if len(found) > 1:
        raise DatabaseError(f"the database has several migration heads: {', '.join(found)}")
    return found[0] if found else None


def current_revision(engine: Engine) -> str | None:
    """The database's Alembic revision; None for a database never migrated."""
    with _reaching(engine), engine.connect() as connection:
        return _revision(connection)


def write_refusal(engine: Engine) -> str | None:
    """Why a run could not write to the database, or None; writes nothing. SQLite: the file
    and its folder (for the write-ahead log) must be writable; PostgreSQL: the session must
    not be read-only (a standby, default_transaction_read_only)."""
    if engine.dialect.name == "sqlite":
        database = Path(engine.url.database or "")
        for path in (database, database.parent):
            if path.exists() and not os.access(path, os.W_OK):
                return f"{path} is read-only for this user"
        return None
    with _reaching(engine), engine.connect() as connection:
        read_only = connection.execute(text("SHOW transaction_read_only")).scalar_one()
    return "the server takes no writes (transaction_read_only is on)" if read_only == "on" else None


def head_revision() -> str:
    """The newest migration this version of `orch` ships."""
    return HEAD_REVISION


def upgrade_database(engine: Engine) -> tuple[str | None, str]:
    """Migrate to head in one transaction; returns (revision before, revision after)."""
    import alembic.command
    from alembic.util import CommandError

    with _reaching(engine), engine.begin() as connection:
        before = _revision(connection)
        try:
            alembic.command.upgrade(alembic_config(connection), "head")
        except CommandError as exc:  # e.g. a revision from a newer orch
            raise DatabaseError(f"cannot migrate database {_shown(engine)}: {exc}") from exc
        after = _revision(connection)
    if after is None:
        raise RuntimeError("migration finished without a revision")
    return before, after


@contextmanager
def _sqlite_migration_lock(engine: Engine) -> Iterator[None]:
    """Serialise creating and migrating one SQLite file across processes.

    Two cron entries that first open a new database at the same moment would otherwise both
    find it empty and both create its tables. The lock is an flock on the file's directory (no
    lock file is left behind, and SQLite's own locks on the file are untouched).
    """
    database = engine.url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    import fcntl

    directory = os.open(Path(database).expanduser().resolve().parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        yield
    finally:
        os.close(directory)  # closing releases the flock


def prepare_database(engine: Engine) -> None:
    """Make the database usable: SQLite is migrated to head; any other must be at head already."""
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return
    if engine.dialect.name == "sqlite":
        with _sqlite_migration_lock(engine):
            if current_revision(engine) != head:  # another process may have done it meanwhile
                upgrade_database(engine)
        return
    raise DatabaseNotMigratedError(
        f"database {_shown(engine)} is "
        f"{f'at migration {current}' if current else 'not migrated yet'}, this orch needs {head}: "
        "run `orch db upgrade`"
    )


def open_database(settings: Settings) -> sessionmaker[Session]:
    """Engine + session factory for DATABASE_URL, checked (or, for SQLite, migrated) first."""
    engine = make_engine(settings.database_url)
    prepare_database(engine)
    return make_session_factory(engine)
