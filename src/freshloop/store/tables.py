"""SQL tables of the metadata store (SQLAlchemy Core); Alembic migrations mirror them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

schemas = Table(
    "schemas", metadata,
    Column("name", String(200), primary_key=True),
    Column("body", JSON, nullable=False),
    Column("locked_at", Float, nullable=False),
)

batches = Table(
    "batches", metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # features | labels
    Column("source", String(200), nullable=False),
    Column("source_batch_id", String(200), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # accepted | partial | quarantined
    Column("rows_submitted", Integer, nullable=False),
    Column("rows_accepted", Integer, nullable=False),
    Column("rows_quarantined", Integer, nullable=False),
    Column("path", String(500)),
    Column("raw_path", String(500)),
    Column("t_min", Float),
    Column("t_max", Float),
    Column("created_at", Float, nullable=False),
    Column("reasons", JSON, nullable=False),
    UniqueConstraint("source", "source_batch_id", name="uq_batches_source_batch"),
)

quarantine = Table(
    "quarantine", metadata,
    Column("id", String(64), primary_key=True),
    Column("batch_id", String(64), ForeignKey("batches.id"), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("path", String(500), nullable=False),
    Column("status", String(16), nullable=False),  # held | reingested
    Column("reingested_as", String(64)),
    Column("created_at", Float, nullable=False),
)

snapshots = Table(
    "snapshots", metadata,
    Column("id", String(64), primary_key=True),
    Column("body", JSON, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("cutoff", Float, nullable=False),
    Column("created_at", Float, nullable=False),
)

runs = Table(
    "runs", metadata,
    Column("id", String(64), primary_key=True),
    Column("run_key", String(200), nullable=False, unique=True),
    Column("snapshot_id", String(64), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("lineage", JSON, nullable=False),
    Column("train_rows", Integer, nullable=False),
    Column("train_seconds", Float, nullable=False),
    Column("created_at", Float, nullable=False),
)

verdicts = Table(
    "verdicts", metadata,
    Column("id", String(64), primary_key=True),
    Column("run_id", String(64), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)

versions = Table(
    "versions", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("run_id", String(64), nullable=False),
    Column("verdict_id", String(64)),
    Column("artifact_sha256", String(64), nullable=False),
    Column("artifact_path", String(500), nullable=False),
    Column("artifact_hmac", String(64)),  # HMAC-SHA256 of the artifact, with a key the store does not hold
    Column("lineage", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)

aliases = Table(
    "aliases", metadata,
    Column("name", String(64), primary_key=True),
    Column("version", Integer),
    Column("revision", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

alias_history = Table(
    "alias_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("old_version", Integer),
    Column("new_version", Integer),
    Column("actor", String(200), nullable=False),
    Column("reason", String(2000), nullable=False),
    Column("at", Float, nullable=False),
)

decisions = Table(
    "decisions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("kind", String(16), nullable=False),  # retrain | skip
    Column("run_key", String(200)),
    Column("reasons", JSON, nullable=False),
    # what the policy remembers after this decision (streaks, the drift it saw), so a loop opened later goes on
    Column("state", JSON),
    Column("triggers", JSON),  # retrain: what fired, one per reason (the loop acts on these, never on the text)
    Column("guard", String(40)),  # skip: what held a retrain back, or why none was due
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", String(2000), nullable=False),
    Column("payload", JSON, nullable=False),
)

rollouts = Table(
    "rollouts", metadata,
    Column("id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("champion_version", Integer),
    Column("strategy", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # running | promoted | rolled_back | awaiting_approval
    Column("step", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("step_started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("evidence", JSON, nullable=False),
)
