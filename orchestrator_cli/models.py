"""SQLAlchemy tables of the audit trail: a row per run, a row per signal of a run. No queries."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from orchestrator_cli.dbtypes import ExactDecimal, FreeText, UTCDateTime

_ZERO = text("0")

# Deterministic constraint names, so migrations can name what they drop or alter.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class OrchestrationRun(Base):
    """One `orch run`: its inputs, settings snapshot, final status and order counts."""

    __tablename__ = "orchestration_runs"
    __table_args__ = (Index(None, "strategy_id", "as_of_date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    strategy_id: Mapped[str] = mapped_column(String(100))
    as_of_date: Mapped[date] = mapped_column(Date, index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    symbols: Mapped[list[str]] = mapped_column(JSON)
    capital: Mapped[Decimal] = mapped_column(ExactDecimal(20, 2))
    max_position_size: Mapped[Decimal] = mapped_column(ExactDecimal(20, 2))
    dry_run: Mapped[bool] = mapped_column(Boolean)
    price_source: Mapped[str] = mapped_column(String(20))
    num_signals: Mapped[int] = mapped_column(Integer, default=0, server_default=_ZERO)
    num_orders_submitted: Mapped[int] = mapped_column(Integer, default=0, server_default=_ZERO)
    num_orders_accepted: Mapped[int] = mapped_column(Integer, default=0, server_default=_ZERO)
    num_orders_rejected: Mapped[int] = mapped_column(Integer, default=0, server_default=_ZERO)
    num_orders_blocked: Mapped[int] = mapped_column(Integer, default=0, server_default=_ZERO)
    num_orders_unknown: Mapped[int] = mapped_column(Integer, default=0, server_default=_ZERO)
    model_version: Mapped[str | None] = mapped_column(String(64))
    signals_generated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    gateway_mode: Mapped[str | None] = mapped_column(String(16))
    # Runs before this one for the same strategy and date; part of every order id it plans.
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default=_ZERO)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the last resume
    duration_seconds: Mapped[Decimal | None] = mapped_column(ExactDecimal(12, 3))
    error_message: Mapped[str | None] = mapped_column(FreeText)
    # Seconds spent in each phase of the run (signals, record_plan, submit, ...), 3 decimals.
    phase_seconds: Mapped[dict[str, float] | None] = mapped_column(JSON)

    mappings: Mapped[list[SignalOrderMapping]] = relationship(
        back_populates="run",
        order_by="SignalOrderMapping.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class SignalOrderMapping(Base):
    """One signal of a run: its sizing, the order planned for it (if any) and what became of it."""

    __tablename__ = "signal_order_mappings"
    __table_args__ = (UniqueConstraint("run_id", "client_order_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey(OrchestrationRun.run_id, ondelete="CASCADE"), index=True
    )
    symbol: Mapped[str] = mapped_column(String(16), index=True)
    predicted_return: Mapped[Decimal] = mapped_column(ExactDecimal(36, 18))
    rank: Mapped[int] = mapped_column(Integer)
    target_weight: Mapped[Decimal] = mapped_column(ExactDecimal(36, 18))
    price: Mapped[Decimal | None] = mapped_column(ExactDecimal(20, 6))
    price_timestamp: Mapped[datetime | None] = mapped_column(UTCDateTime)
    current_qty: Mapped[Decimal] = mapped_column(ExactDecimal(24, 6))
    target_dollars: Mapped[Decimal | None] = mapped_column(ExactDecimal(20, 2))
    target_qty: Mapped[int | None] = mapped_column(BigInteger)
    leg: Mapped[int] = mapped_column(Integer, default=0, server_default=_ZERO)
    reduces: Mapped[bool | None] = mapped_column(Boolean)
    order_qty: Mapped[int | None] = mapped_column(BigInteger)
    order_side: Mapped[str | None] = mapped_column(String(4))
    client_order_id: Mapped[str | None] = mapped_column(String(24), index=True)
    broker_order_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str | None] = mapped_column(String(16))
    order_status: Mapped[str | None] = mapped_column(String(32))
    filled_qty: Mapped[Decimal | None] = mapped_column(ExactDecimal(24, 6))
    filled_avg_price: Mapped[Decimal | None] = mapped_column(ExactDecimal(20, 6))
    filled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    skip_reason: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(FreeText)  # the latest outcome's message
    note: Mapped[str | None] = mapped_column(FreeText)  # the plan's own note (skip, long-only)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    run: Mapped[OrchestrationRun] = relationship(back_populates="mappings")


class RunLockRow(Base):
    """At most one run in progress per strategy and trading date, on any machine.

    The primary key makes a second holder impossible; `heartbeat_at` lets another process tell
    a live holder from a dead one (on the same host, the holder's pid says it sooner).
    """

    __tablename__ = "run_locks"

    strategy_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    as_of_date: Mapped[date] = mapped_column(Date, primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    holder: Mapped[str] = mapped_column(String(200))  # "host:pid"
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
