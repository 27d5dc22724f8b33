"""The tables, in SQLAlchemy Core. The DDL itself lives in migrations/ and schema.sql."""

from __future__ import annotations

import sqlalchemy as sa

from planher.config import EMAIL_MAX_CHARS, NAME_MAX_CHARS, TIME_ZONE_MAX_CHARS

metadata = sa.MetaData()


def _user_id_column(nullable: bool = False) -> sa.Column:
    return sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=nullable
    )


def _timestamp_column(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime, nullable=nullable)


users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(EMAIL_MAX_CHARS), nullable=False),
    sa.Column("password_hash", sa.String(100), nullable=False),
    sa.Column("name", sa.String(NAME_MAX_CHARS)),
    sa.Column("role", sa.String(16), nullable=False, server_default="user"),
    _timestamp_column("created_at"),
    _timestamp_column("updated_at"),
    sa.Column("time_zone", sa.String(TIME_ZONE_MAX_CHARS), nullable=False, server_default="UTC"),
    sa.Column("retention_days", sa.Integer),
    sa.Index("ix_users_email", "email", unique=True),
)

logins = sa.Table(
    "logins",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _user_id_column(),
    sa.Column("login_key", sa.String(64), nullable=False),
    sa.Column("refresh_jti", sa.String(64), nullable=False),
    _timestamp_column("created_at"),
    _timestamp_column("refreshed_at"),
    _timestamp_column("revoked_at", nullable=True),
    sa.Column("revoked_reason", sa.String(32)),
    sa.Column("ip", sa.String(64)),
    sa.Column("previous_refresh_jti", sa.String(64)),
    sa.Index("ix_logins_login_key", "login_key", unique=True),
    sa.Index("ix_logins_user_id", "user_id"),
)

rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("bucket", sa.String(128), primary_key=True),
    _timestamp_column("window_start"),
    sa.Column("hits", sa.Integer, nullable=False),
    sa.Index("ix_rate_limits_window_start", "window_start"),
)

user_profiles = sa.Table(
    "user_profiles",
    metadata,
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("height_cm", sa.Integer, nullable=False),
    sa.Column("weight_kg", sa.Float, nullable=False),
    sa.Column("cycle_length", sa.Integer, nullable=False, server_default="28"),
    sa.Column("luteal_length", sa.Integer, nullable=False, server_default="14"),
    sa.Column("menses_length", sa.Integer, nullable=False, server_default="5"),
    sa.Column("unusual_bleeding", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("number_of_peak", sa.Integer, nullable=False, server_default="2"),
    _timestamp_column("created_at"),
    _timestamp_column("updated_at"),
)

period_records = sa.Table(
    "period_records",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _user_id_column(),
    sa.Column("start_date", sa.Date, nullable=False),
    sa.Column("end_date", sa.Date),
    sa.Column("notes", sa.String(2000)),
    _timestamp_column("created_at"),
    _timestamp_column("updated_at"),
    # The cycle this period starts is set aside: it counts in no estimate of cycle lengths.
    sa.Column("excluded", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_period_records_user_start", "user_id", "start_date", unique=True),
)

daily_moods = sa.Table(
    "daily_moods",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _user_id_column(),
    sa.Column("date", sa.Date, nullable=False),
    sa.Column("energy_level", sa.Integer, nullable=False),
    sa.Column("day_of_cycle", sa.Integer),
    sa.Column("notes", sa.String(2000)),
    _timestamp_column("created_at"),
    _timestamp_column("updated_at"),
    sa.Index("ix_daily_moods_user_date", "user_id", "date", unique=True),
    sa.Index("ix_daily_moods_updated_at", "updated_at"),
    sa.Index("ix_daily_moods_date", "date"),
)

observations = sa.Table(
    "observations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _user_id_column(),
    sa.Column("date", sa.Date, nullable=False),
    sa.Column("lh_test", sa.String(8)),
    sa.Column("bbt_celsius", sa.Float),
    sa.Column("cervical_mucus", sa.String(16)),
    sa.Column("notes", sa.String(2000)),
    _timestamp_column("created_at"),
    _timestamp_column("updated_at"),
    sa.Index("ix_observations_user_date", "user_id", "date", unique=True),
)

user_models = sa.Table(
    "user_models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _user_id_column(nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("model_type", sa.String(32), nullable=False),
    sa.Column("shipped", sa.Boolean, nullable=False),
    sa.Column("cv_accuracy", sa.Float, nullable=False),
    sa.Column("baseline_accuracy", sa.Float, nullable=False),
    sa.Column("n_samples", sa.Integer, nullable=False),
    sa.Column("candidates", sa.String(2000), nullable=False),
    sa.Column("sklearn_version", sa.String(32), nullable=False),
    sa.Column("model_blob", sa.LargeBinary),
    _timestamp_column("trained_at"),
    sa.Column("model_format", sa.Integer, nullable=False, server_default="1"),
    sa.Column("brier_score", sa.Float),
    sa.Index("ix_user_models_user_version", "user_id", "version", unique=True),
)

calendar_feeds = sa.Table(
    "calendar_feeds",
    metadata,
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("token_hash", sa.String(64), nullable=False),
    _timestamp_column("created_at"),
    sa.Column("remind_days_before", sa.Integer),  # an alarm this many days before, or none
    sa.Index("ix_calendar_feeds_token_hash", "token_hash", unique=True),
)

model_training_claims = sa.Table(
    "model_training_claims",
    metadata,
    sa.Column("subject", sa.String(32), primary_key=True),
    _timestamp_column("claimed_at"),
)

training_jobs = sa.Table(
    "training_jobs",
    metadata,
    sa.Column("subject", sa.String(32), primary_key=True),
    _user_id_column(nullable=True),
    sa.Column("force", sa.Boolean, nullable=False),
    _timestamp_column("queued_at"),
    _timestamp_column("requested_at"),
    _timestamp_column("claimed_at", nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Index("ix_training_jobs_queued_at", "queued_at"),
)

chore_runs = sa.Table(
    "chore_runs",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    _timestamp_column("last_run_at"),
)

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _user_id_column(),
    sa.Column("date", sa.Date, nullable=False),
    sa.Column("day_of_cycle", sa.Integer),
    sa.Column("phase", sa.String(16)),
    sa.Column("predicted_level", sa.Integer, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("model_version", sa.Integer),
    sa.Column("source", sa.String(16), nullable=False),
    _timestamp_column("created_at"),
    sa.Index("ix_predictions_user_date", "user_id", "date"),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _timestamp_column("at"),
    sa.Column("user_id", sa.Integer),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(255)),
    sa.Column("ip", sa.String(64)),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Index("ix_audit_events_user_at", "user_id", "at"),
    sa.Index("ix_audit_events_at", "at"),
)

# The migration runner's own bookkeeping; it creates this table itself.
schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("checksum", sa.String(64), nullable=False),
    _timestamp_column("applied_at"),
)
