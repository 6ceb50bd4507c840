"""Hostile payloads that pass a loose schema but would break later: each is a bad payload.

The Signal Service's and the gateway's answers are checked against orch's contract and against
the audit columns they end up in (models.py), so that SQLite (which stores almost anything)
and PostgreSQL (which refuses what does not fit) see the same refusal.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from decimal import Decimal

import pytest
import requests
import responses
from fakes import FakeGateway, FakePrices, FakeSignals, run, signals_of
from test_gateway import BASE as GATEWAY_BASE
from test_gateway import COID, ORDER, ORDER_URL, POSITIONS_URL, ack, add_reply, position
from test_gateway import make_client as make_gateway
from test_signals import METADATA, SYMBOLS, add, payload, signal
from test_signals import make_client as make_signals

from orchestrator_cli.errors import ServiceError, SignalPayloadError
from orchestrator_cli.schemas import WEIGHT_ROUNDING, OrderDetail, OutcomeKind, parse_json
from orchestrator_cli.transport import response_detail

BAD = "Signal Service returned a bad payload at POST /api/v1/signals/generate: "


def nested(depth: int = 100_000) -> str:
    return '{"detail": ' + "[" * depth + "]" * depth + "}"


@pytest.fixture
def signals(sleeps):
    with requests.Session() as session:
        yield make_signals(sleeps, session)


@pytest.fixture
def gateway(sleeps):
    with requests.Session() as session:
        yield make_gateway(sleeps, session, GATEWAY_BASE)


def fetch(client, strategy_id: str | None = "alpha_baseline"):
    return client.fetch_signals(SYMBOLS, as_of_date=date(2024, 12, 31), strategy_id=strategy_id)


def refusal(rsps, client, body: str, strategy_id: str | None = "alpha_baseline") -> str:
    add(rsps, body)
    with pytest.raises(SignalPayloadError) as caught:
        fetch(client, strategy_id)
    message = str(caught.value)
    assert message.startswith(BAD)
    assert message.endswith("; no order was sent")
    return message


A, M, T = (signal("AAPL", 1, "0.5"), signal("MSFT", 2, "0"), signal("TSLA", 3, "-0.5"))


# --- the strategy the service serves --------------------------------------------------------


def test_signals_of_another_strategy_are_a_bad_payload_naming_both(rsps, signals):
    message = refusal(rsps, signals, payload([A, M, T]), strategy_id="momo_trial")
    assert "metadata.strategy 'alpha_baseline' is not the run's strategy 'momo_trial'" in message
    assert "--strategy 'alpha_baseline'" in message  # quoted: it is the service's text


def test_signals_of_the_run_strategy_or_of_any_when_none_is_given(rsps, signals):
    add(rsps, payload([A, M, T]))
    add(rsps, payload([A, M, T]))
    assert len(fetch(signals, "alpha_baseline").signals) == 3
    assert len(fetch(signals, None).signals) == 3


def test_a_served_strategy_is_quoted_literally_never_as_markup(rsps, signals):
    metadata = METADATA.replace('"alpha_baseline"', json.dumps("[red]x[/x]"))
    message = refusal(rsps, signals, payload([A, M, T], metadata))
    assert "metadata.strategy '[red]x[/x]' is not the run's strategy 'alpha_baseline'" in message


# --- values that do not fit their columns ---------------------------------------------------


@pytest.mark.parametrize(
    ("signals_text", "metadata", "reason"),
    [
        pytest.param(
            [signal("AAPL", 2**31, "0.5"), M, T],
            METADATA,
            "signals[0].rank: Input should be less than or equal to 2147483647",
            id="rank-above-int32",
        ),
        pytest.param(
            [signal("AAPL", -(2**31) - 1, "0.5"), M, T],
            METADATA,
            "signals[0].rank: Input should be greater than or equal to -2147483648",
            id="rank-below-int32",
        ),
        pytest.param(
            [signal("AAPL", 1, "0.5", "1e18"), M, T],
            METADATA,
            "signals[0].predicted_return: 1E+18 is too large to record (limit 1e+18)",
            id="return-too-large",
        ),
        pytest.param(
            [A, M, T],
            METADATA.replace('"v1.0.0"', json.dumps("v" * 65)),
            "metadata.model_version: String should have at most 64 characters",
            id="model-version-too-long",
        ),
        pytest.param(
            [A, M, T],
            METADATA.replace("10:30:00.123456Z", "10:30:00.123456"),
            "metadata.generated_at: Input should have timezone info",
            id="naive-generated-at",
        ),
        pytest.param(
            [A, M, T],
            METADATA.replace("2024-12-31T10:30:00.123456Z", "0001-01-01T00:00:00+01:00"),
            "metadata.generated_at: timestamp 0001-01-01T00:00:00+01:00 is out of range",
            id="generated-at-before-utc-year-1",
        ),
    ],
)
def test_a_value_that_does_not_fit_its_column_is_a_bad_payload(
    rsps, signals, signals_text, metadata, reason
):
    message = refusal(rsps, signals, payload(signals_text, metadata))
    assert message == f"{BAD}{reason}; no order was sent"


def test_the_largest_values_that_fit_are_accepted(rsps, signals):
    edge = [signal("AAPL", 2**31 - 1, "0.5", "999999999999999999.9"), M, T]
    add(rsps, payload(edge, METADATA.replace('"v1.0.0"', json.dumps("v" * 64))))
    response = fetch(signals)
    assert response.signals[0].rank == 2**31 - 1
    assert response.metadata.generated_at.utcoffset() is not None


# --- longs above 1, shorts below -1 ----------------------------------------------------------


def universe(longs: int, shorts: int, long_weight: str, short_weight: str) -> list[str]:
    rows = [signal(f"L{i}", i + 1, long_weight) for i in range(longs)]
    rows += [signal(f"S{i}", longs + i + 1, short_weight) for i in range(shorts)]
    return rows


def symbols_of(rows: list[str]) -> list[str]:
    return [json.loads(row)["symbol"] for row in rows]


def test_longs_and_shorts_at_their_limit_in_float_precision_are_accepted(rsps, signals):
    # 1/67 and -1/66 as a service writes them: the longs sum to 0.99999999999999998...,
    # the shorts to -1.000000000000000032: at the limit up to the floats' own precision.
    rows = universe(67, 66, repr(1 / 67), repr(-1 / 66))
    add(rsps, payload(rows, METADATA))
    response = signals.fetch_signals(symbols_of(rows), as_of_date=None, strategy_id=None)
    shorts = sum(s.target_weight for s in response.signals if s.target_weight < 0)
    assert shorts < -1  # really beyond -1 in exact decimal arithmetic


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        pytest.param(
            [signal("AAPL", 1, "0.6"), signal("MSFT", 2, "0.5"), T],
            "long target weights sum to 1.1, beyond 1",
            id="longs-above-one",
        ),
        pytest.param(
            [A, signal("MSFT", 2, "-0.5"), signal("TSLA", 3, "-0.5000001")],
            "short target weights sum to -1.0000001, beyond -1",
            id="shorts-below-minus-one",
        ),
    ],
)
def test_longs_above_one_or_shorts_below_minus_one_are_a_bad_payload(rsps, signals, rows, reason):
    message = refusal(rsps, signals, payload(rows))
    assert message == f"{BAD}{reason}; no order was sent"


def test_a_sum_just_past_the_precision_tolerance_is_refused(rsps, signals):
    # Two longs: the tolerance is 2 * 2**-51 (about 8.9e-16); 1e-15 more is refused.
    rows = [signal("AAPL", 1, "0.5"), signal("MSFT", 2, "0.500000000000001"), T]
    assert Decimal("1e-15") > 2 * WEIGHT_ROUNDING
    message = refusal(rsps, signals, payload(rows))
    assert "long target weights sum to 1.000000000000001, beyond 1" in message


# --- JSON nested deeper than any parser allows ---------------------------------------------


def test_parse_json_refuses_deep_nesting_as_a_value_error():
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_json(nested())


def test_deeply_nested_signals_are_a_bad_payload(rsps, signals):
    message = refusal(rsps, signals, nested())
    assert (
        message
        == f"{BAD}body is not valid JSON (JSON nested too deeply to read); no order was sent"
    )


def test_a_deeply_nested_error_detail_is_one_short_line(rsps):
    rsps.add(responses.GET, "http://x.test/", body=nested(), status=500)
    text = response_detail(requests.get("http://x.test/", timeout=5))
    assert text.startswith('{"detail": [[[[')
    assert len(text) <= 200
    # nested just below the parser's limit: parsed, then shown only a few levels deep
    rsps.add(responses.GET, "http://y.test/", body=nested(400), status=500)
    assert response_detail(requests.get("http://y.test/", timeout=5)) == "..."


# --- the gateway's positions and order look-ups --------------------------------------------


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        pytest.param(
            [position("aaa", "10")],
            "position symbol 'aaa' is not in canonical form",
            id="lower-case",
        ),
        pytest.param(
            [position("AAA ", "10")],
            "position symbol 'AAA ' is not in canonical form",
            id="trailing-space",
        ),
        pytest.param(
            [position("A\u200bAPL", "10")],
            "position symbol 'A\\u200bAPL' is not in canonical form",
            id="zero-width-space",
        ),
        pytest.param(
            [position("AAPL", "1e18")],
            "positions[0].qty: 1E+18 is too large to record (limit 1e+18)",
            id="qty-too-large",
        ),
    ],
)
def test_positions_that_would_be_misread_are_a_bad_payload(rsps, gateway, rows, fragment):
    add_reply(rsps, responses.GET, POSITIONS_URL, (200, {"positions": rows}))
    with pytest.raises(ServiceError) as caught:
        gateway.get_positions()
    message = str(caught.value)
    assert message.startswith("Execution Gateway returned a bad payload at GET /api/v1/positions")
    assert fragment in message


def test_positions_in_symbols_outside_any_universe_are_kept(rsps, gateway):
    rows = [position("BTC/USD", "0.5"), position("AAPL240119C00150000", "2")]
    add_reply(rsps, responses.GET, POSITIONS_URL, (200, {"positions": rows}))
    assert gateway.get_positions() == {"BTC/USD": Decimal("0.5"), "AAPL240119C00150000": 2}


def test_deeply_nested_positions_are_a_bad_payload(rsps, gateway):
    add_reply(rsps, responses.GET, POSITIONS_URL, (200, nested()))
    with pytest.raises(ServiceError, match="JSON nested too deeply to read"):
        gateway.get_positions()


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        pytest.param({"filled_qty": "134"}, "filled_qty 134 is outside 0..qty (133)", id="above"),
        pytest.param({"filled_qty": "-1"}, "filled_qty -1 is outside 0..qty (133)", id="negative"),
        pytest.param(
            {"filled_qty": "1", "filled_avg_price": "1e14"},
            "filled_avg_price: 1E+14 is too large to record (limit 1e+14)",
            id="price-too-large",
        ),
        pytest.param(
            {"filled_qty": "1", "filled_at": "2024-12-31T14:30:05"},
            "filled_at: Input should have timezone info",
            id="naive-filled-at",
        ),
    ],
)
def test_an_unusable_order_look_up_is_a_bad_payload(rsps, gateway, changes, fragment):
    add_reply(rsps, responses.GET, ORDER_URL, (200, ack("filled", **changes)))
    with pytest.raises(ServiceError) as caught:
        gateway.get_order(COID)
    assert f"bad payload at GET /api/v1/orders/{COID}" in str(caught.value)
    assert fragment in str(caught.value)


def test_a_deeply_nested_order_answer_is_of_unknown_outcome(rsps, gateway):
    add_reply(rsps, responses.POST, f"{GATEWAY_BASE}/api/v1/orders", (200, nested()))
    outcome = gateway.submit_order(ORDER)
    assert outcome.kind is OutcomeKind.UNKNOWN
    assert "JSON nested too deeply to read" in (outcome.message or "")


# --- the run: strategy asked for, fills beyond the order -------------------------------------


class OverfillingGateway(FakeGateway):
    """Says every order it has was filled with one share more than was ordered."""

    def get_order(self, client_order_id: str) -> OrderDetail | None:
        detail = super().get_order(client_order_id)
        if detail is None:
            return None
        return detail.model_copy(update={"qty": None, "filled_qty": Decimal(detail.qty or 0) + 1})


def test_the_run_asks_for_signals_of_its_own_strategy(session_factory):
    signals = FakeSignals(signals_of(("AAPL", "0.5")))
    run(session_factory, signals, FakeGateway(), FakePrices({"AAPL": "150"}))
    assert signals.strategy_ids == ["alpha_baseline"]


def test_a_look_up_with_a_fill_beyond_the_order_is_not_recorded(session_factory, caplog):
    gateway = OverfillingGateway(answers={"AAPL": "unknown"})
    with caplog.at_level(logging.WARNING):
        result = run(
            session_factory,
            FakeSignals(signals_of(("AAPL", "0.5"))),
            gateway,
            FakePrices({"AAPL": "150"}),
        )
    (mapping,) = result.mappings
    assert len(gateway.lookups) == 1
    assert len(gateway.sent) == 1  # not sent again: the look-up was unusable, not a 404
    assert (mapping.order_status, mapping.filled_qty) == ("unknown", None)
    assert result.status == "failed"
    assert "filled_qty 134 is outside 0..133, the order's quantity" in caplog.text
