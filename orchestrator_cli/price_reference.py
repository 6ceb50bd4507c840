"""A quote checked against its reference price: a wrong price is refused, not only a missing one.

A $1 quote for a stock that closed at $100 yesterday sizes an order 100 times too big, and a
notional limit checked at that same price cannot see it. With `MAX_PRICE_MOVE_PCT` on, a quote
further than that from its reference (the previous close: Alpaca's `prevDailyBar.c`, or the
`prev_close` column of a `PRICES_FILE`) makes its symbol `price_unavailable`, with the quote,
the reference and the move in the reason.

A source that gives no reference at all (Redis quotes, a file without the column) cannot be
checked: that is said in one warning per fetch (one per run) and the run goes ahead. A source
that gives references for some quotes but not for another (a snapshot without `prevDailyBar`,
a file row without `prev_close`) makes that symbol `price_unavailable`: its quote is exactly
the one a check could not vouch for, and a wrong price there would size an order many times
too big with nothing else to catch it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from orchestrator_cli.schemas import PriceBook, PriceQuote, money_text

if TYPE_CHECKING:
    from orchestrator_cli.prices import PriceSource

logger = logging.getLogger(__name__)

LISTED_SYMBOLS = 5


def price_move_pct(quote: PriceQuote) -> Decimal | None:
    """How far the quote is from its reference, in % of the reference; None without one."""
    if quote.reference is None:
        return None
    return abs(quote.price - quote.reference) / quote.reference * 100


def move_problem(quote: PriceQuote, max_move_pct: Decimal) -> str | None:
    """Why a quote is too far from its reference to be trusted, or None."""
    move = price_move_pct(quote)
    if move is None or quote.reference is None or move <= max_move_pct:
        return None
    direction = "above" if quote.price > quote.reference else "below"
    return (
        f"quote {money_text(quote.price)} is {move:.1f}% {direction} the reference "
        f"{money_text(quote.reference)} (previous close), beyond MAX_PRICE_MOVE_PCT "
        f"{max_move_pct}%"
    )


@dataclass(frozen=True)
class CheckedBook:
    """A price book after the reference check, and the symbols it could not check."""

    book: PriceBook
    unchecked: list[str] = field(default_factory=list)


NO_REFERENCE = (
    "no reference price (previous close) to check the quote against, though the price source "
    "gave one for other symbols"
)


def check_moves(book: PriceBook, max_move_pct: Decimal) -> CheckedBook:
    """Move each quote beyond `max_move_pct` of its reference into the book's problems; when
    the source gave references, a quote without one too. `unchecked` lists the quotes of a
    source that gave none."""
    checked = PriceBook(problems=dict(book.problems))
    gives_references = any(quote.reference is not None for quote in book.quotes.values())
    unchecked = []
    for symbol, quote in book.quotes.items():
        problem = move_problem(quote, max_move_pct)
        if problem is None and quote.reference is None and gives_references:
            problem = NO_REFERENCE
        if problem is not None:
            checked.problems[symbol] = problem
            continue
        if quote.reference is None:
            unchecked.append(symbol)
        checked.quotes[symbol] = quote
    return CheckedBook(checked, unchecked)


def unchecked_warning(source: str, unchecked: Sequence[str], quotes: int) -> str:
    """The one line saying which quotes had no reference price to be checked against."""
    listed = ", ".join(unchecked[:LISTED_SYMBOLS])
    more = len(unchecked) - LISTED_SYMBOLS
    if more > 0:
        listed += f" and {more} more"
    return (
        f"price source {source} gave no reference price (previous close) for {len(unchecked)} "
        f"of {quotes} quotes ({listed}): MAX_PRICE_MOVE_PCT cannot check them; going ahead"
    )


class ReferenceCheck:
    """A `PriceSource` whose quotes are checked against their reference price."""

    def __init__(self, source: PriceSource, *, max_move_pct: Decimal) -> None:
        self.name = source.name
        self._source = source
        self._max_move_pct = max_move_pct

    def fetch_prices(self, symbols: Sequence[str], *, now: datetime) -> PriceBook:
        """The source's book, with quotes too far from their reference made unavailable."""
        book = self._source.fetch_prices(symbols, now=now)
        checked = check_moves(book, self._max_move_pct)
        if checked.unchecked:
            logger.warning("%s", unchecked_warning(self.name, checked.unchecked, len(book.quotes)))
        return checked.book
