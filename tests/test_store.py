"""Store functions, run on SQLite and on PostgreSQL (see conftest's `database_url`)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, StatementError

from orchestrator_cli import db, store
from orchestrator_cli.errors import DatabaseError, RunNotFoundError
from orchestrator_cli.models import OrchestrationRun, SignalOrderMapping
from orchestrator_cli.outcomes import Answered, record_outcomes
from orchestrator_cli.schemas import OutcomeKind, SkipReason, SubmitOutcome

START = datetime(2024, 12, 31, 14, 30, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")


def new_run(session, run_id=None, *, strategy_id="alpha_baseline", started_at=START, **changes):
    run_id = run_id or uuid.uuid4()
    fields = {
        "run_id": run_id,
        "strategy_id": strategy_id,
        "as_of_date": date(2024, 12, 31),
        "symbols": ["AAPL", "MSFT"],
        "capital": Decimal("100000.00"),
        "max_position_size": Decimal("20000.00"),
        "dry_run": False,
        "price_source": "file",
        "started_at": started_at,
        "settings_snapshot": {"capital": Decimal("100000"), "order_concurrency": 8},
        "limits": {"max_order_notional": Decimal("25000"), "long_only": False},
        "generation": 0,
    }
    store.create_run(session, **(fields | changes))
    return run_id


def outcome(client_order_id, kind, status, **changes):
    return SubmitOutcome(client_order_id=client_order_id, kind=kind, order_status=status, **changes)


def record_outcome(session, mapping_id, outcome, *, at):
    """One order's outcome, as the outcome writer records a group."""
    record_outcomes(session, [Answered(mapping_id, outcome, at)])


# --- round trip -------------------------------------------------------------------------------


def test_run_and_mappings_round_trip_exactly(session_factory, make_plan):
    plans = [
        make_plan(
            "AAPL",
            target_weight="0.333333333333",
            predicted_return="-0.000123456789",
            price="187.123456",
            current_qty="-12.5",
            target_dollars="20000.00",
            target_qty=106,
            order_qty=118,
        ),
        make_plan(
            "MSFT",
            rank=2,
            price=None,
            skip_reason=SkipReason.PRICE_UNAVAILABLE,
            skip_detail="quote is 900 s old",
        ),
    ]
    sent_at = datetime(2024, 12, 31, 9, 30, 1, 250000, tzinfo=NEW_YORK)
    with session_factory.begin() as session:
        run_id = new_run(session, started_at=datetime(2024, 12, 31, 9, 30, tzinfo=NEW_YORK))
        store.record_signal_metadata(
            session, run_id, num_signals=2, model_version="v1.0.0", generated_at=START
        )
        ids = store.add_mappings(session, run_id, plans, ["orch-aapl-1", None])
        record_outcome(
            session,
            ids[0],
            outcome(
                "orch-aapl-1",
                OutcomeKind.ACCEPTED,
                "pending_new",
                broker_order_id="b-1",
                message="ok",
            ),
            at=sent_at,
        )
        store.finish_run(
            session,
            run_id,
            status="partial",
            error_message="1 price unavailable",
            completed_at=sent_at + timedelta(seconds=1.5),
        )

    with session_factory() as session:
        run = session.scalars(select(OrchestrationRun)).one()
        aapl, msft = session.scalars(select(SignalOrderMapping).order_by("id")).all()

    assert run.started_at == START
    assert run.started_at.tzinfo is UTC
    assert run.completed_at == START + timedelta(seconds=2.75)
    assert run.completed_at.tzinfo is UTC
    assert run.signals_generated_at == START
    assert run.duration_seconds == Decimal("2.750")
    assert (run.capital, run.max_position_size) == (Decimal("100000.00"), Decimal("20000.00"))
    assert run.symbols == ["AAPL", "MSFT"]
    assert run.settings == {"capital": "100000", "order_concurrency": 8}
    assert (run.limits, run.generation) == ({"max_order_notional": "25000", "long_only": False}, 0)
    assert (run.status, run.error_message, run.model_version) == (
        "partial",
        "1 price unavailable",
        "v1.0.0",
    )
    assert (run.num_signals, run.num_orders_submitted, run.num_orders_accepted) == (2, 1, 1)

    assert aapl.target_weight == Decimal("0.333333333333")
    assert aapl.predicted_return == Decimal("-0.000123456789")
    assert str(aapl.price) == "187.123456"
    assert aapl.current_qty == Decimal("-12.5")
    assert aapl.target_dollars == Decimal("20000.00")
    assert (aapl.target_qty, aapl.order_qty, aapl.order_side) == (106, 118, "buy")
    assert aapl.price_timestamp == START
    assert aapl.price_timestamp.tzinfo is UTC
    assert (aapl.outcome, aapl.order_status, aapl.broker_order_id, aapl.detail) == (
        "accepted",
        "pending_new",
        "b-1",
        "ok",
    )
    assert aapl.submitted_at == aapl.updated_at == sent_at
    assert aapl.submitted_at.tzinfo is UTC

    assert msft.price is None
    assert msft.price_timestamp is None
    assert (msft.client_order_id, msft.outcome, msft.order_status) == (None, None, None)
    assert (msft.order_qty, msft.order_side) == (None, None)
    assert (msft.skip_reason, msft.detail) == ("price_unavailable", "quote is 900 s old")


def test_decimals_are_stored_at_the_column_scale_on_every_backend(session_factory, make_plan):
    with session_factory.begin() as session:
        run_id = new_run(session)
        store.add_mappings(
            session,
            run_id,
            [make_plan(price="150", target_weight="0.1234567890123456785")],
            ["c-1"],
        )
    with session_factory() as session:
        mapping = session.scalars(select(SignalOrderMapping)).one()
    # Same text on both backends: quantized to the scale, half away from zero.
    assert str(mapping.price) == "150.000000"
    assert str(mapping.target_weight) == "0.123456789012345679"


def test_a_float_weight_from_json_is_kept_exactly(session_factory, make_plan):
    weight = Decimal(str(1 / 3))  # 0.3333333333333333, as the Signal Service sends it
    with session_factory.begin() as session:
        run_id = new_run(session)
        store.add_mappings(session, run_id, [make_plan(target_weight=str(weight))], ["c-1"])
    with session_factory() as session:
        assert session.scalars(select(SignalOrderMapping.target_weight)).one() == weight


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("started_at", datetime(2024, 12, 31, 14, 30), "naive datetime"),
        ("capital", Decimal("1E+18"), "does not fit"),
        ("capital", Decimal("1E+40"), "does not fit"),
        ("capital", Decimal("NaN"), "finite Decimal"),
    ],
)
def test_values_that_cannot_be_stored_faithfully_are_refused(
    session_factory, field, value, message
):
    with session_factory() as session, pytest.raises(StatementError, match=message):
        new_run(session, **{field: value})


def test_mappings_need_an_existing_run(session_factory, make_plan):
    with session_factory() as session, pytest.raises(IntegrityError):
        store.add_mappings(session, uuid.uuid4(), [make_plan()], ["c-1"])


def test_client_order_id_is_unique_within_a_run(session_factory, make_plan):
    with session_factory() as session:
        run_id = new_run(session)
        with pytest.raises(IntegrityError):
            store.add_mappings(session, run_id, [make_plan("AAPL"), make_plan("MSFT")], ["c", "c"])


def test_a_large_plan_is_inserted_at_once_with_its_ids_in_plan_order(session_factory, make_plan):
    # More rows than one batch of the driver's multi-row INSERT (1,000), in no sorted order.
    symbols = [f"S{(i * 7919) % 2500:04d}" for i in range(2500)]
    plans = [
        make_plan(s, rank=i + 1) if i % 3 else make_plan(s, skip_reason=SkipReason.ZERO_WEIGHT)
        for i, s in enumerate(symbols)
    ]
    coids = [None if i % 3 == 0 else f"c-{s}" for i, s in enumerate(symbols)]
    with session_factory.begin() as session:
        run_id = new_run(session)
        ids = store.add_mappings(session, run_id, plans, coids)
    with session_factory() as session:
        rows = session.execute(select(SignalOrderMapping.id, SignalOrderMapping.symbol)).all()
    stored = dict(rows)
    assert len(ids) == len(set(ids)) == 2500
    assert [stored[i] for i in ids] == symbols


def test_a_sqlite_without_returning_still_gets_the_plan_ids_in_order(
    tmp_path, make_plan, monkeypatch
):
    engine = db.make_engine(f"sqlite:///{tmp_path}/old.db")
    db.prepare_database(engine)
    # As SQLite before 3.35, which has no RETURNING.
    monkeypatch.setattr(
        engine.dialect, "insert_executemany_returning_sort_by_parameter_order", False
    )
    sessions = db.make_session_factory(engine)
    symbols = ["MSFT", "AAPL", "TSLA"]
    try:
        with sessions.begin() as session:
            run_id = new_run(session)
            plans = [make_plan(s) for s in symbols]
            ids = store.add_mappings(session, run_id, plans, ["a", "b", "c"])
        with sessions() as session:
            rows = session.execute(select(SignalOrderMapping.id, SignalOrderMapping.symbol)).all()
    finally:
        engine.dispose()
    stored = dict(rows)
    assert [stored[i] for i in ids] == symbols


@pytest.mark.parametrize(
    ("skip_reason", "client_order_id"),
    [(None, None), (SkipReason.ALREADY_AT_TARGET, "c-1")],
)
def test_a_client_order_id_comes_exactly_with_an_order(
    session_factory, make_plan, skip_reason, client_order_id
):
    with session_factory() as session:
        run_id = new_run(session)
        with pytest.raises(ValueError, match="client_order_id is required"):
            store.add_mappings(
                session, run_id, [make_plan(skip_reason=skip_reason)], [client_order_id]
            )


def test_record_outcome_keeps_the_first_send_time_and_checks_the_order(session_factory, make_plan):
    first, later = START, START + timedelta(minutes=5)
    with session_factory.begin() as session:
        run_id = new_run(session)
        (mapping_id,) = store.add_mappings(session, run_id, [make_plan()], ["c-1"])
        record_outcome(
            session,
            mapping_id,
            outcome("c-1", OutcomeKind.UNKNOWN, "unknown", message="timeout"),
            at=first,
        )
        record_outcome(
            session, mapping_id, outcome("c-1", OutcomeKind.ACCEPTED, "filled"), at=later
        )
        with pytest.raises(ValueError, match="c-2"):
            record_outcome(
                session, mapping_id, outcome("c-2", OutcomeKind.ACCEPTED, "new"), at=later
            )
    with session_factory() as session:
        mapping = session.get_one(SignalOrderMapping, mapping_id)
    assert (mapping.outcome, mapping.order_status, mapping.detail) == ("accepted", "filled", None)
    assert (mapping.submitted_at, mapping.updated_at) == (first, later)


# What a service's JSON can decode to: NUL, a lone surrogate, a terminal's escape and bell.
ODD = "nul\x00 lone\ud800 caf\u00e9 \U0001f600 \x1b[2J\x07 tab\tline\n"
ODD_STORED = "nul\\x00 lone\\ud800 caf\u00e9 \U0001f600 \\x1b[2J\\x07 tab\tline\n"


def test_free_text_a_database_cannot_hold_is_stored_escaped_alike(session_factory, make_plan):
    # NUL (PostgreSQL refuses it) and a lone surrogate (no UTF-8 for it) in a gateway's
    # message or a run's error must not fail the write that records them.
    with session_factory.begin() as session:
        run_id = new_run(session)
        (mapping_id,) = store.add_mappings(session, run_id, [make_plan(skip_detail=ODD)], ["c-1"])
        record_outcome(
            session,
            mapping_id,
            outcome("c-1", OutcomeKind.REJECTED, "rejected", message=ODD),
            at=START,
        )
        store.finish_run(session, run_id, status="failed", error_message=ODD, completed_at=START)
    with session_factory() as session:
        mapping = session.get_one(SignalOrderMapping, mapping_id)
        run = store.load_run(session, run_id)
    assert (mapping.detail, mapping.note) == (ODD_STORED, ODD_STORED)
    assert run.error_message == ODD_STORED


def test_record_outcomes_keeps_a_broker_id_until_a_new_one_comes(session_factory, make_plan):
    with session_factory.begin() as session:
        run_id = new_run(session)
        ids = store.add_mappings(session, run_id, [make_plan("A"), make_plan("B")], ["c-a", "c-b"])
    answers = [
        ("b-1", "new"),
        (None, "unknown"),  # a later answer without one (a timeout) keeps it
        ("b-2", "filled"),
    ]
    for broker, status in answers:
        with db.transaction(session_factory, "recording") as session:
            record_outcomes(
                session,
                [
                    Answered(
                        mapping_id,
                        outcome(coid, OutcomeKind.ACCEPTED, status, broker_order_id=broker),
                        START,
                    )
                    for mapping_id, coid in zip(ids, ["c-a", "c-b"], strict=True)
                ],
            )
            if broker is None:
                rows = session.scalars(select(SignalOrderMapping.broker_order_id)).all()
                assert rows == ["b-1", "b-1"]
    with session_factory() as session:
        rows = session.execute(
            select(SignalOrderMapping.broker_order_id, SignalOrderMapping.order_status)
        ).all()
    assert [tuple(row) for row in rows] == [("b-2", "filled"), ("b-2", "filled")]


def test_mark_not_sent_takes_more_orders_than_sqlite_takes_parameters(session_factory, make_plan):
    symbols = ["A", "B", "C"]
    with session_factory.begin() as session:
        run_id = new_run(session)
        ids = store.add_mappings(
            session, run_id, [make_plan(s) for s in symbols], [f"c-{s}" for s in symbols]
        )
        # SQLite takes at most 32,766 parameters by default, 250,000 as some distributions build it
        absent = range(max(ids) + 1, max(ids) + 300_001)
        store.mark_not_sent(session, [*absent, *ids], message="refused", at=START)
    with session_factory() as session:
        outcomes = session.scalars(select(SignalOrderMapping.outcome)).all()
    assert outcomes == ["not_sent"] * 3


# --- counts -----------------------------------------------------------------------------------


def test_outcome_counts_and_finish_run_count_each_kind(session_factory, make_plan):
    symbols = ["A", "B", "C", "D", "E", "F", "G"]
    plans = [make_plan(symbol, rank=i) for i, symbol in enumerate(symbols, 1)]
    plans += [
        make_plan("P", rank=8, price=None, skip_reason=SkipReason.PRICE_UNAVAILABLE),
        make_plan("Z", rank=9, skip_reason=SkipReason.ZERO_WEIGHT),
    ]
    ids_by_symbol = {}
    with session_factory.begin() as session:
        run_id = new_run(session)
        ids = store.add_mappings(session, run_id, plans, [f"c-{s}" for s in symbols] + [None, None])
        ids_by_symbol = dict(zip(symbols, ids, strict=False))
        answers = {
            "A": (OutcomeKind.ACCEPTED, "new", True),
            "B": (OutcomeKind.ACCEPTED, "dry_run", True),
            "C": (OutcomeKind.REJECTED, "rejected", True),
            "D": (OutcomeKind.BLOCKED, "blocked_kill_switch", True),
            "E": (OutcomeKind.UNKNOWN, "unknown", False),  # connection refused: never left
        }
        for symbol, (kind, status, sent) in answers.items():
            record_outcome(
                session,
                ids_by_symbol[symbol],
                outcome(f"c-{symbol}", kind, status, sent=sent),
                at=START,
            )
        store.mark_not_sent(session, [ids_by_symbol["F"]], message="kill switch engaged", at=START)
        store.mark_not_sent(session, [], message="x", at=START)
        store.record_signal_metadata(
            session, run_id, num_signals=9, model_version=None, generated_at=None
        )
        counts = store.outcome_counts(session, run_id)
        store.finish_run(
            session,
            run_id,
            status="partial",
            error_message=None,
            completed_at=START,
        )

    assert counts == store.OutcomeCounts(
        signals=9,
        orders_planned=7,
        planned=1,
        accepted=2,
        rejected=1,
        blocked=1,
        unknown=1,
        not_sent=1,
        submitted=4,
        price_unavailable=1,
    )
    with session_factory() as session:
        result = store.load_run(session, run_id)
        not_sent = session.get_one(SignalOrderMapping, ids_by_symbol["F"])
    assert (
        not_sent.outcome,
        not_sent.order_status,
        not_sent.detail,
        not_sent.submitted_at,
    ) == ("not_sent", "not_sent", "kill switch engaged", None)
    assert result.model_dump(
        include={
            "num_signals",
            "num_orders_submitted",
            "num_orders_accepted",
            "num_orders_rejected",
            "num_orders_blocked",
            "num_orders_unknown",
            "duration_seconds",
            "status",
        }
    ) == {
        "num_signals": 9,
        "num_orders_submitted": 4,
        "num_orders_accepted": 2,
        "num_orders_rejected": 1,
        "num_orders_blocked": 1,
        "num_orders_unknown": 1,
        "duration_seconds": 0.0,
        "status": "partial",
    }


def test_finish_run_refuses_an_unknown_status(session_factory):
    with session_factory() as session:
        run_id = new_run(session)
        with pytest.raises(ValueError, match="done"):
            store.finish_run(session, run_id, status="done", error_message=None, completed_at=START)


# --- listing and lookup -----------------------------------------------------------------------


@pytest.fixture
def five_runs(session_factory):
    """Runs 0..4 started a minute apart; odd ones failed; run 4 is of strategy `beta`."""
    run_ids = []
    with session_factory.begin() as session:
        for i in range(5):
            run_id = new_run(
                session,
                strategy_id="beta" if i == 4 else "alpha_baseline",
                started_at=START + timedelta(minutes=i),
            )
            store.finish_run(
                session,
                run_id,
                status="failed" if i % 2 else "completed",
                error_message=None,
                completed_at=START + timedelta(minutes=i, seconds=2),
            )
            run_ids.append(run_id)
    return run_ids


@pytest.mark.parametrize(
    ("filters", "limit", "offset", "expected", "total"),
    [
        ({}, 50, 0, [4, 3, 2, 1, 0], 5),
        ({}, 2, 0, [4, 3], 5),
        ({}, 2, 2, [2, 1], 5),
        ({}, 2, 4, [0], 5),
        ({}, 2, 6, [], 5),
        ({"status": "failed"}, 50, 0, [3, 1], 2),
        ({"strategy_id": "alpha_baseline"}, 3, 1, [2, 1, 0], 4),
        ({"strategy_id": "alpha_baseline", "status": "completed"}, 50, 0, [2, 0], 2),
        ({"status": "running"}, 50, 0, [], 0),
    ],
)
def test_list_runs_newest_first_with_filters_and_total(
    session_factory, five_runs, filters, limit, offset, expected, total
):
    with session_factory() as session:
        page = store.list_runs(session, limit=limit, offset=offset, **filters)
    assert [run.run_id for run in page.runs] == [five_runs[i] for i in expected]
    assert (page.total, page.limit, page.offset) == (total, limit, offset)


def test_list_runs_breaks_start_time_ties_by_insertion(session_factory):
    with session_factory.begin() as session:
        first, second = new_run(session), new_run(session)
    with session_factory() as session:
        page = store.list_runs(session, limit=10, offset=0)
    assert [run.run_id for run in page.runs] == [second, first]
    assert page.runs[0].started_at == START
    assert page.runs[0].duration_seconds is None


RUN_A = uuid.UUID("12345678-aaaa-4bbb-8ccc-000000000001")
RUN_B = uuid.UUID("12345678-aaaa-4bbb-8ccc-000000000002")
RUN_C = uuid.UUID("abcdef01-2345-4678-9abc-def012345678")


@pytest.fixture
def three_runs(session_factory):
    with session_factory.begin() as session:
        for run_id in (RUN_A, RUN_B, RUN_C):
            new_run(session, run_id)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (str(RUN_A), RUN_A),
        (RUN_B.hex, RUN_B),
        (str(RUN_C).upper(), RUN_C),
        ("abcd", RUN_C),
        ("ABCDEF01-23", RUN_C),
        ("abcdef0123", RUN_C),
        ("12345678-aaaa-4bbb-8ccc-000000000002", RUN_B),
        (f" {RUN_A.hex} ", RUN_A),
    ],
)
def test_resolve_run_id_by_full_id_or_unique_prefix(session_factory, three_runs, text, expected):
    with session_factory() as session:
        assert store.resolve_run_id(session, text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1234", "'1234' matches 2 runs: give more characters"),
        ("12345678-AAAA", "'12345678-AAAA' matches 2 runs"),
        ("ffff", "no run matches 'ffff': see `orch runs list` (`--sandbox` for the runs of"),
        (str(uuid.UUID(int=7)), "no run matches"),
        ("abc", "at least its first 4 hex characters"),
        ("abcx", "'abcx' is not a run id"),
        ("", "is not a run id"),
    ],
)
def test_resolve_run_id_refuses_ambiguous_unknown_or_short_text(
    session_factory, three_runs, text, message
):
    with session_factory() as session, pytest.raises(RunNotFoundError) as caught:
        store.resolve_run_id(session, text)
    assert message in str(caught.value)


def test_load_run_orders_mappings_by_rank_then_symbol(session_factory, make_plan):
    plans = [
        make_plan("TSLA", rank=3),
        make_plan("MSFT", rank=1, skip_reason=SkipReason.ALREADY_AT_TARGET, skip_detail="held"),
        make_plan("AAPL", rank=1, current_qty="100", order_qty=33),
        make_plan("GOOGL", rank=2, order_side="sell", order_qty=7),
    ]
    with session_factory.begin() as session:
        run_id = new_run(session)
        ids = store.add_mappings(session, run_id, plans, ["c-t", None, "c-a", "c-g"])
    assert ids == sorted(ids)
    with session_factory() as session:
        result = store.load_run(session, run_id)
    assert [m.symbol for m in result.mappings] == ["AAPL", "MSFT", "GOOGL", "TSLA"]
    aapl, msft, googl, _ = result.mappings
    assert (aapl.client_order_id, aapl.order_qty, aapl.current_qty) == ("c-a", 33, Decimal(100))
    assert (aapl.order_status, aapl.skip_reason) == ("planned", None)
    assert (msft.skip_reason, msft.detail, msft.order_status) == ("already_at_target", "held", None)
    assert googl.order_side == "sell"
    assert (result.run_id, result.status, result.num_signals) == (run_id, "running", 0)


def test_load_run_of_an_unknown_id_is_run_not_found(session_factory):
    with session_factory() as session, pytest.raises(RunNotFoundError):
        store.load_run(session, uuid.uuid4())


# --- transactions -----------------------------------------------------------------------------


def test_transaction_commits_and_turns_database_failures_into_database_error(
    session_factory, make_plan
):
    with db.transaction(session_factory, "creating") as session:
        run_id = new_run(session)
    with (
        pytest.raises(DatabaseError, match="database failed while adding mappings: "),
        db.transaction(session_factory, "adding mappings") as session,
    ):
        store.add_mappings(session, uuid.uuid4(), [make_plan()], ["c-1"])
    with session_factory() as session:
        assert [run.run_id for run in store.list_runs(session, limit=5, offset=0).runs] == [run_id]


def test_a_run_still_running_is_counted_from_its_orders(session_factory, make_plan):
    """An interrupted run's summary shows what it sent, not the zeros stored at its start."""
    with session_factory.begin() as session:
        run_id = new_run(session)
        first, _ = store.add_mappings(
            session, run_id, [make_plan("AAPL"), make_plan("MSFT")], ["c-1", "c-2"]
        )
        accepted = outcome("c-1", OutcomeKind.ACCEPTED, "filled", broker_order_id="b")
        record_outcome(session, first, accepted, at=START)
    with session_factory() as session:
        (listed,) = store.list_runs(session, limit=10, offset=0).runs
        shown = store.load_run(session, run_id)
    for summary in (listed, shown):
        assert summary.status == "running"
        assert (summary.num_orders_submitted, summary.num_orders_accepted) == (1, 1)
