"""Writing a run's plan in one go (`bulk`): on PostgreSQL through COPY, on SQLite through one
executemany; the same rows, values and ids in order on both, and the same refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DataError, StatementError
from test_store import new_run

from orchestrator_cli import store
from orchestrator_cli.models import SignalOrderMapping
from orchestrator_cli.schemas import SkipReason

AWKWARD = ['say "no", twice', "a,b", "line\nbreak", "", "back\\slash \\N", "tab\there", "€ ✓"]


def read(session_factory) -> list[SignalOrderMapping]:
    with session_factory() as session:
        return list(session.scalars(select(SignalOrderMapping).order_by(SignalOrderMapping.id)))


@pytest.mark.parametrize("text", AWKWARD)
def test_text_is_stored_as_it_was_given(session_factory, make_plan, text):
    """Quotes, commas, line breaks, backslashes and the empty string are data, not CSV."""
    plan = make_plan("MSFT", skip_reason=SkipReason.PRICE_UNAVAILABLE, skip_detail=text)
    with session_factory.begin() as session:
        run_id = new_run(session)
        store.add_mappings(session, run_id, [make_plan("AAPL"), plan], ["c-1", None])
    aapl, msft = read(session_factory)
    assert (msft.note, msft.detail) == (text, text)
    assert (aapl.note, aapl.detail, aapl.skip_reason) == (None, None, None)  # NULL stays NULL


def test_every_kind_of_value_round_trips(session_factory, make_plan):
    plan = make_plan(price="150.123456", target_weight="-0.25", current_qty="-20.5", order_qty=7)
    with session_factory.begin() as session:
        run_id = new_run(session)
        store.add_mappings(session, run_id, [plan], ["c-1"])
    (row,) = read(session_factory)
    assert row.run_id == run_id
    assert (row.price, row.target_weight, row.current_qty) == (
        Decimal("150.123456"),
        Decimal("-0.25"),
        Decimal("-20.5"),
    )
    assert row.price_timestamp == plan.price_timestamp
    assert row.price_timestamp is not None
    assert row.price_timestamp.tzinfo is not None
    assert (row.order_qty, row.order_side, row.reduces, row.leg) == (7, "buy", False, 0)


def test_a_value_that_does_not_fit_is_refused_and_nothing_is_written(session_factory, make_plan):
    with session_factory() as session:
        run_id = new_run(session)
        session.commit()
        too_big = make_plan("MSFT", price="1E+20")
        with pytest.raises(StatementError, match="does not fit"):
            store.add_mappings(session, run_id, [make_plan("AAPL"), too_big], ["c-1", "c-2"])
        session.rollback()
    assert read(session_factory) == []


def test_a_naive_timestamp_is_refused(session_factory, make_plan):
    plan = make_plan()
    naive = plan.model_copy(update={"price_timestamp": datetime(2024, 12, 31, 14, 30)})
    with session_factory() as session:
        run_id = new_run(session)
        with pytest.raises(StatementError, match="naive datetime"):
            store.add_mappings(session, run_id, [naive], ["c-1"])


def test_a_database_refusal_is_raised_as_sqlalchemy_raises_it(session_factory, make_plan):
    """A symbol longer than its column: PostgreSQL refuses it (SQLite stores it) with the
    SQLAlchemy error an INSERT would raise, which `db.transaction` turns into a DatabaseError."""
    with session_factory() as session:
        run_id = new_run(session)
        if session.get_bind().dialect.name == "sqlite":
            pytest.skip("SQLite does not enforce VARCHAR lengths")
        with pytest.raises(DataError, match="too long"):
            store.add_mappings(session, run_id, [make_plan("X" * 40)], ["c-1"])


def test_a_second_plan_for_the_same_run_gets_only_its_own_ids(session_factory, make_plan):
    with session_factory.begin() as session:
        run_id = new_run(session)
        first = store.add_mappings(session, run_id, [make_plan("AAPL")], ["c-1"])
        second = store.add_mappings(
            session, run_id, [make_plan("MSFT"), make_plan("IBM")], ["c-2", "c-3"]
        )
    assert len(first) == 1
    assert len(second) == 2
    assert min(second) > first[0]


def test_timestamps_keep_their_instant(session_factory, make_plan):
    instant = datetime(2024, 12, 31, 14, 30, 15, 123456, tzinfo=UTC)
    plan = make_plan().model_copy(update={"price_timestamp": instant})
    with session_factory.begin() as session:
        run_id = new_run(session)
        store.add_mappings(session, run_id, [plan], ["c-1"])
    (row,) = read(session_factory)
    assert row.price_timestamp == instant
