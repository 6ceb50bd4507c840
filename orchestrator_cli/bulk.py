"""A run's plan (one row per symbol of the universe, thousands of them) written in one go.

`insert_mappings` returns the new rows' ids in the order of the rows given, which is what ties
each planned order to its row. Per database, the fastest way that keeps the columns' own
checks (`dbtypes`: exact decimals that must fit, UTC timestamps):

- PostgreSQL through psycopg2: `COPY ... FROM STDIN` of the values as the columns' bind
  processors make them (0.04-0.06 s for 3,000 rows, where `INSERT ... SELECT FROM unnest` of one
  array per column took 0.18-0.3 s, most of it the server reading the arrays);
- PostgreSQL through another driver: that `INSERT ... SELECT FROM unnest(...)`, in order;
- SQLite: one executemany of the same processed values, straight to the driver (an
  `INSERT ... RETURNING` whose ids must come back in the rows' order is run one row at a time
  there: 3,000 statements for a 3,000-symbol universe);
- anything else: `INSERT ... RETURNING` with `sort_by_parameter_order`.

Where the ids are read back (SQLite, COPY), they are the run's rows newer than its newest row
before the insert, in ascending id order: both databases number new rows in the order they are
inserted (SQLite: the largest rowid plus one, under the transaction's write lock; PostgreSQL:
the id sequence, called row after row by the one statement). The rows read back must be the
rows given, symbol and leg in the same order, or nothing is recorded.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select
from sqlalchemy.exc import DBAPIError, StatementError

from orchestrator_cli.models import SignalOrderMapping

_MAPPINGS = SignalOrderMapping.metadata.tables[SignalOrderMapping.__tablename__]


def insert_mappings(
    connection: Connection, run_id: uuid.UUID, rows: list[dict[str, Any]]
) -> list[int]:
    """Insert `rows` (column name -> value, the same names in every row) for run `run_id`;
    their ids, in the order of `rows`."""
    dialect = connection.dialect
    if dialect.name == "postgresql" and dialect.driver != "psycopg2":
        return _insert_unnested(connection, rows)
    if dialect.name not in ("postgresql", "sqlite"):
        statement = insert(_MAPPINGS).returning(_MAPPINGS.c.id, sort_by_parameter_order=True)
        return [int(row_id) for row_id in connection.execute(statement, rows).scalars()]
    newest = select(func.max(_MAPPINGS.c.id)).where(_MAPPINGS.c.run_id == run_id)
    before = connection.execute(newest).scalar_one_or_none() or 0
    if dialect.name == "postgresql":
        _copy(connection, rows)
    else:
        _executemany(connection, rows)
    return _read_back(connection, run_id, rows, after=before)


def _read_back(
    connection: Connection, run_id: uuid.UUID, rows: list[dict[str, Any]], *, after: int
) -> list[int]:
    c = _MAPPINGS.c
    found = connection.execute(
        select(c.id, c.symbol, c.leg).where(c.run_id == run_id, c.id > after).order_by(c.id)
    ).all()
    if [(r.symbol, r.leg) for r in found] != [(row["symbol"], row["leg"]) for row in rows]:
        raise RuntimeError(
            f"the {len(rows)} mappings just inserted read back as {len(found)} rows in another "
            "order; nothing was recorded"
        )
    return [int(r.id) for r in found]


def _copy(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL (psycopg2): the rows as CSV through `COPY ... FROM STDIN`, in this transaction."""
    names = list(rows[0])
    statement = f"COPY {_MAPPINGS.name} ({', '.join(names)}) FROM STDIN WITH (FORMAT csv, NULL '')"
    lines = io.StringIO()
    for values in _processed(connection, statement, names, rows):
        lines.write(",".join(["" if v is None else _quoted(v) for v in values]))
        lines.write("\n")
    lines.seek(0)
    _on_driver(connection, statement, lambda cursor: cursor.copy_expert(statement, lines))


def _executemany(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """SQLite: one executemany of the processed values, straight to the driver (SQLAlchemy's
    own executemany builds a parameter dictionary per row: a third of the time)."""
    names = list(rows[0])
    statement = (
        f"INSERT INTO {_MAPPINGS.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    )
    values = _processed(connection, statement, names, rows)
    _on_driver(connection, statement, lambda cursor: cursor.executemany(statement, values))


def _processed(
    connection: Connection, statement: str, names: list[str], rows: list[dict[str, Any]]
) -> list[list[Any]]:
    """Each row's values as its columns' bind processors make them for this database, as an
    INSERT through SQLAlchemy would send them (a value that does not fit is refused the same
    way: a StatementError naming the problem)."""
    dialect = connection.dialect
    processors: list[tuple[str, Callable[[Any], Any] | None]] = [
        (name, _MAPPINGS.c[name].type.dialect_impl(dialect).bind_processor(dialect))
        for name in names
    ]
    try:
        return [
            [
                row[name] if process is None or row[name] is None else process(row[name])
                for name, process in processors
            ]
            for row in rows
        ]
    except (ValueError, TypeError) as exc:
        raise StatementError(str(exc), statement, None, exc) from exc


def _on_driver(connection: Connection, statement: str, call: Callable[[Any], object]) -> None:
    """`call(cursor)` on the driver's own cursor, in this connection's transaction; a driver
    error is raised as SQLAlchemy raises it for a statement (an IntegrityError, a DataError),
    and a lost connection is invalidated as SQLAlchemy would."""
    raw = connection.connection
    dbapi = connection.dialect.loaded_dbapi
    cursor = raw.cursor()
    try:
        call(cursor)
    except dbapi.Error as exc:
        disconnected = connection.dialect.is_disconnect(exc, raw, cursor)
        if disconnected:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            statement,
            None,
            exc,
            dbapi.Error,
            connection_invalidated=disconnected,
            dialect=connection.dialect,
        ) from exc
    finally:
        cursor.close()


def _quoted(value: Any) -> str:
    """A value (not None) as one quoted CSV field: NULL is the unquoted empty field, so an
    empty string, a comma, a quote or a line break in a detail stays data."""
    if isinstance(value, Decimal):
        text = format(value, "f")
    elif isinstance(value, datetime):
        text = value.isoformat()
    else:
        text = str(value)
    return '"' + text.replace('"', '""') + '"'


def _insert_unnested(connection: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """PostgreSQL: the rows as one INSERT ... SELECT from one array per column, in order.

    Ids come from the table's sequence as the ordered rows are inserted, so the ascending ids
    are the rows' order (what SQLAlchemy's sort_by_parameter_order relies on there too).
    """
    from sqlalchemy.dialects.postgresql import ARRAY  # only here: SQLite never loads it

    names = list(rows[0])
    arrays = (bindparam(name, type_=ARRAY(_MAPPINGS.c[name].type)) for name in names)
    plan = func.unnest(*arrays).table_valued(*names, with_ordinality="position")
    plan = plan.render_derived(name="plan")
    ordered = select(*(plan.c[name] for name in names)).order_by(plan.c.position)
    statement = insert(_MAPPINGS).from_select(names, ordered).returning(_MAPPINGS.c.id)
    ids = connection.execute(statement, {name: [row[name] for row in rows] for name in names})
    return sorted(int(row_id) for row_id in ids.scalars())
