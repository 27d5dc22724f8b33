"""PlanHer: the backend of a cycle-tracking app, in one Starlette module.

Women log their periods and their daily energy; PlanHer tells them where they are in their
cycle, when the next period comes and what energy to expect. The HTTP contract is
`../shared/API.md`; run the service with `uvicorn planher:app`, the command line with
`python planher.py --help`.

The module reads top to bottom: configuration, tables, the database (SQLAlchemy's engines
behind a small facade) and the queries that handlers share, migrations, security
(passwords, tokens, rate limits, audit), validation schemas (and the `@endpoint` decorator
that validates and documents each handler), the cycle calculator, the importers of other
trackers' files and the calendar feed, the energy models and their store, the handlers in
the contract's order (auth, users, profiles, periods, moods, observations, predictions,
admin, service),
error handlers and middleware, then the app and its command line.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import contextvars
import csv
import dataclasses
import datetime as dt
import decimal
import fcntl
import functools
import gc
import getpass
import gzip
import hashlib
import importlib.resources
import io
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import re
import secrets
import shlex
import sqlite3
import statistics
import sys
import tempfile
import time
import typing
import warnings
import xml.sax
import xml.sax.handler
import zipfile
import zlib
import zoneinfo
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import anyio
import anyio.to_thread
import bcrypt
import defusedxml
import defusedxml.sax
import icalendar
import itsdangerous
import joblib
import numpy as np
import sklearn
import sqlalchemy as sa
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    computed_field,
)
from pydantic_core import PydanticCustomError
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    UnauthenticatedUser,
)
from starlette.concurrency import run_in_threadpool
from starlette.config import Config
from starlette.datastructures import Headers, MutableHeaders, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from threadpoolctl import threadpool_limits
from uvicorn.protocols.http.auto import AutoHTTPProtocol

# ── Configuration ────────────────────────────────────────────────────────────────────────

__version__ = "0.1.0"

logger = logging.getLogger("planher")
# aiosqlite logs each call with its arguments at DEBUG, and those are her data: keep it quiet.
logging.getLogger("aiosqlite").setLevel(logging.INFO)

ROOT_DIR = Path(__file__).resolve().parent
MIGRATIONS_DIR = ROOT_DIR / "migrations"

DEFAULT_DATABASE_URL = "sqlite:///planher.db"
SECRET_KEY_FILE_SUFFIX = ".secret-key"  # SQLite without SECRET_KEYS: the key kept beside it
ACCESS_TOKEN_TTL_S = 15 * 60
REFRESH_TOKEN_TTL_S = 14 * 24 * 60 * 60
# A refresh token presented again this soon after it was used (two tabs, React StrictMode's
# double effect) gets the pair already issued for it; later, reuse is theft.
REFRESH_REUSE_GRACE_S = 30
BCRYPT_ROUNDS = 12
# What a browser app on another origin may send beyond the always-allowed ones (axios,
# fetch wrappers and request tracers add these), and the response headers it may read.
CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-Requested-With",
    "X-Request-Id",
    "Cache-Control",
    "Pragma",
)
CORS_EXPOSED_HEADERS = ("X-Total-Count", "Retry-After", "WWW-Authenticate")
DEFAULT_CORS_ORIGINS = (
    "http://localhost:3000",  # create-react-app dev server
    "http://127.0.0.1:3000",
    "http://localhost:5173",  # Vite dev server
    "http://127.0.0.1:5173",
)

# Background retraining waits at least this long after the last training, whatever a client
# sends (a flood of moods, a benchmark).
RETRAIN_PAUSE_S = 60
POPULATION_RETRAIN_PAUSE_S = 10 * 60
MODEL_CACHE_SIZE = 512  # loaded energy models kept per process (~80 KB each: ~40 MB)
MAX_BODY_BYTES = 1024 * 1024
# An import is a whole file from another tracker: larger, slower to upload, and unpacked
# (gzip, zip) only up to a bound of its own, so a small bomb cannot fill the disk or memory.
IMPORT_MAX_BYTES = 50 * 1024 * 1024
IMPORT_MAX_UNPACKED_BYTES = 4 * 1024 * 1024 * 1024  # Apple Health's export.xml can be GBs
IMPORT_MAX_JSON_BYTES = 64 * 1024 * 1024  # a JSON export is parsed whole: bound it
IMPORT_MAX_COMPRESSION_RATIO = 200  # deflate reaches ~1,000 only on data built to: a bomb
IMPORT_READ_TIMEOUT_S = 300.0  # 50 MB at ~170 KB/s, a slow mobile upload
IMPORT_SPOOL_BYTES = 1024 * 1024  # an upload larger than this waits in a temporary file
IMPORT_REPORT_DATES = 10  # the dates a skipped entry of the report names, at most
IMPORT_MAX_UNMAPPED_NAMES = 100  # the report counts at most so many names it cannot map
IMPORT_UNMAPPED_NAME_CHARS = 100
IMPORT_PATH = "/users/me/import"
# A request's headers, and then its body, must each arrive within this many seconds, or the
# client gets 408 and the connection is closed: a client that trickles bytes holds nothing.
REQUEST_READ_TIMEOUT_S = 15.0
REQUEST_READ_LINGER_S = 2.0  # after such a 408, what the client still sends is read and dropped

# The database. A call (pool checkout, statement, commit) that takes longer than
# DB_TIMEOUT_S is abandoned, its connection discarded, and the client told 503.
DB_TIMEOUT_S = 5.0
DB_POOL_SIZE = 8  # connections per process (the SQLite writer takes one at a time)
RETRY_AFTER_S = 5  # what a 503 asks the client to wait
FAILURE_LOG_INTERVAL_S = 10  # one log line per kind of database failure per interval
LARGE_READ_CHUNK_ROWS = 2_000  # a large read hands the event loop back after each chunk
WRITER_TURN_POLL_S = 0.002  # how often a writer checks whether another process is done
# Applied once to every SQLite connection: WAL lets readers run beside the writer,
# synchronous=FULL makes a committed write survive power loss, and foreign keys are off by
# default in SQLite, which would silently skip every ON DELETE CASCADE.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
)
# Errors that say the database cannot serve now (503), not that a statement was wrong:
# SQLite's result codes (extended ones start with these), PostgreSQL's SQLSTATEs (classes:
# connection, resources, operator intervention, system; a read-only transaction;
# serialization failures and deadlocks; a lock not available).
SQLITE_UNAVAILABLE_ERRORS = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_READONLY",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_NOTADB",
    "SQLITE_CORRUPT",
    "SQLITE_PROTOCOL",
    "SQLITE_PERM",
)
POSTGRES_UNAVAILABLE_STATES = ("08", "53", "57", "58", "25006", "40", "55P03")
# The inline reader runs on the event loop: it may wait for a lock only this long.
SQLITE_READER_BUSY_TIMEOUT_MS = 20
# Any constant shared by all app instances serializes their migration runs on PostgreSQL.
MIGRATION_LOCK_ID = 72_420_261

PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_BYTES = 72  # bcrypt ignores (bcrypt 5: refuses) anything longer
EMAIL_MAX_CHARS = 254
NAME_MAX_CHARS = 100
TIME_ZONE_MAX_CHARS = 64
DEFAULT_TIME_ZONE = "UTC"
ENERGY_LABELS = ("low", "medium", "high")  # energy_level 0, 1, 2
# The IANA zones her "today" may be in (the tzdata package carries them where the system
# has none).
TIME_ZONES = frozenset(zoneinfo.available_timezones())
TOKEN_MAX_CHARS = 1000
NOTES_MAX_CHARS = 2000
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
MAX_DATABASE_ID = 2**31 - 1  # INTEGER columns; a larger id in a path cannot exist
MAX_LIST_OFFSET = MAX_DATABASE_ID  # no list can hold more rows than there are ids
# Dates a client may send: a person's calendar, with room for every prediction's arithmetic.
EARLIEST_DATE = dt.date(1900, 1, 1)
LATEST_DATE = dt.date(2200, 12, 31)

# Her history on the server: retention_days is null (keep all) or at least this many days,
# and what is older goes in a sweep at start-up and then every RETENTION_SWEEP_INTERVAL_S.
RETENTION_MIN_DAYS = 90
RETENTION_MAX_DAYS = 100 * 366
RETENTION_SWEEP_INTERVAL_S = 24 * 60 * 60
RETENTION_RETRY_S = 60
# The calendar feed: her logged periods, and this many predicted ones with fertile windows.
CALENDAR_PREDICTED_PERIODS = 6
CALENDAR_FEED_TOKEN_BYTES = 32

# Cycle arithmetic (all in days).
# Imported bleeding days with at most this many days between them belong to one period
# (drip's own rule: one day without bleeding does not end a period).
BLEEDING_GAP_DAYS = 1
CYCLE_MIN_DAYS = 15  # a gap between period starts outside these bounds is not one cycle:
CYCLE_MAX_DAYS = 90  # a missed log, a pregnancy or an illness break
PERIOD_MAX_DAYS = 15
DEFAULT_CYCLE_LENGTH = 28
DEFAULT_LUTEAL_LENGTH = 14
DEFAULT_MENSES_LENGTH = 5
DEFAULT_NUMBER_OF_PEAK = 2
BBT_MIN_CELSIUS, BBT_MAX_CELSIUS = 35.0, 39.0
DEMO_DAYS = 180
DEFAULT_FORECAST_DAYS = 28
MAX_FORECAST_DAYS = 90
OVULATORY_HALF_WIDTH = 1  # the ovulatory phase is ovulation day ± 1
FERTILE_DAYS_BEFORE_OVULATION = 5
FERTILE_DAYS_AFTER_OVULATION = 1
# The cycle-length estimator (see estimate_cycle_length), tuned on FedCycleData.
PRIOR_WEIGHT_CYCLES = 1.0  # the profile's cycle_length (or 28) counts as one past cycle
RECENCY_HALF_LIFE_CYCLES = 8.0  # a cycle 8 cycles back weighs half as much as the latest
HUBER_THRESHOLD_DAYS = 3.0  # cycles further than this from the centre are down-weighted
POPULATION_CYCLE_SD = 3.0  # within-woman spread assumed before her own cycles say more
# The population prior: everyone's typical cycle, once enough women have logged enough.
POPULATION_PRIOR_MIN_WOMEN = 20
POPULATION_PRIOR_MIN_CYCLES = 3  # a woman's cycles before her typical length counts
POPULATION_PRIOR_REFRESH_S = 60 * 60
SPREAD_PRIOR_WEIGHT_CYCLES = 2
RANGE_Z = 1.2816  # ± z·sd holds 80% of a normal distribution
# Ovulation from her observations (see detect_ovulation): the temperature shift is three
# readings above the six before them, the third at least 0.2 °C above their highest.
BBT_SHIFT_LOW_READINGS = 6
BBT_SHIFT_HIGH_READINGS = 3
BBT_SHIFT_CELSIUS = 0.2
LUTEAL_MIN_DAYS, LUTEAL_MAX_DAYS = 7, 20  # a detected luteal phase outside these is noise
# Within-woman spread of the luteal phase before her own say more: FedCycleData's median
# within-woman SD is 1.1 days, its mean 1.6.
POPULATION_LUTEAL_SD = 1.5

COMMON_PASSWORDS = frozenset(
    line.strip()
    for line in (ROOT_DIR / "common-passwords.txt").read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("#")
)
ACCESS_TOKEN_SALT = "planher.access-token"
REFRESH_TOKEN_SALT = "planher.refresh-token"


@dataclasses.dataclass(frozen=True)
class RateLimit:
    limit: int  # requests allowed…
    window_s: int  # …per window of this many seconds

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """`30/60`: 30 per 60 seconds."""
        limit, _, window_s = text.partition("/")
        return cls(int(limit), int(window_s))


RATE_LIMIT_PURGE_INTERVAL_S = 60  # windows that have passed are deleted at most this often

DEFAULT_RATE_LIMITS = {
    "login_ip": RateLimit(30, 60),  # sign-in attempts from one client address
    "login_account_ip": RateLimit(5, 15 * 60),  # failed sign-ins to one account from one address
    # failed sign-ins to one account from addresses she has not signed in from lately
    "login_account": RateLimit(20, 15 * 60),
    "register_ip": RateLimit(10, 60 * 60),  # accounts created from one client address
    "api_user": RateLimit(600, 60),  # requests of one signed-in user, per worker process
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the environment (or a `.env` file) can change: each field is read from
    the variable of its name in capitals (`db_timeout_s` from DB_TIMEOUT_S), lists
    comma-separated, and rate limits from RATE_LIMIT_<NAME>=count/seconds."""

    database_url: str = DEFAULT_DATABASE_URL
    secret_keys: tuple[str, ...] = ()  # newest first; none: see signing_keys
    access_token_ttl_s: int = ACCESS_TOKEN_TTL_S
    refresh_token_ttl_s: int = REFRESH_TOKEN_TTL_S
    refresh_reuse_grace_s: int = REFRESH_REUSE_GRACE_S
    bcrypt_rounds: int = BCRYPT_ROUNDS
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    model_cache_size: int = MODEL_CACHE_SIZE
    retrain_pause_s: int = RETRAIN_PAUSE_S
    population_retrain_pause_s: int = POPULATION_RETRAIN_PAUSE_S
    db_timeout_s: float = DB_TIMEOUT_S
    db_pool_size: int = DB_POOL_SIZE
    forwarded_allow_ips: tuple[str, ...] = ()  # proxies whose X-Forwarded-For is believed
    request_read_timeout_s: float = REQUEST_READ_TIMEOUT_S
    import_max_bytes: int = IMPORT_MAX_BYTES
    import_max_unpacked_bytes: int = IMPORT_MAX_UNPACKED_BYTES
    rate_limits: Mapping[str, RateLimit] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_RATE_LIMITS)
    )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env_file = ".env" if Path(".env").is_file() else None
        config = Config(env_file, environ=os.environ if environ is None else environ)
        defaults, values = cls(), {}
        for field in dataclasses.fields(cls):
            default = getattr(defaults, field.name)
            if field.name == "rate_limits":
                values[field.name] = {
                    name: config(
                        f"RATE_LIMIT_{name.upper()}",
                        cast=RateLimit.parse,
                        default=f"{rule.limit}/{rule.window_s}",
                    )
                    for name, rule in default.items()
                }
            elif isinstance(default, tuple):
                values[field.name] = (
                    _comma_separated(config(field.name.upper(), default="")) or default
                )
            else:
                values[field.name] = config(field.name.upper(), cast=type(default), default=default)
        return cls(**values)


def _comma_separated(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


# Every error body is {"detail": …, "code": …}: `detail` for people, `code` for programs.
ERROR_CODES = {
    "malformed_body": "400: the body is not valid JSON (or form data)",
    "not_authenticated": "401: no Bearer access token was sent",
    "invalid_token": "401: the token is malformed, tampered with or of the wrong kind",
    "token_expired": "401: the token has expired (refresh the access token)",
    "token_revoked": "401: the token's login has ended (logout, password change, theft)",
    "refresh_token_reused": "401: a used refresh token came back: the login was ended",
    "wrong_credentials": "401: incorrect email or password",
    "forbidden": "403: this needs an admin account",
    "wrong_password": "403: current_password is incorrect",
    "not_found": "404: no such thing, or not hers",
    "method_not_allowed": "405: the path does not take this method",
    "request_timeout": "408: the request did not arrive within REQUEST_READ_TIMEOUT_S",
    "email_taken": "409: an account with this email already exists",
    "period_overlap": "409: the period overlaps one already logged",
    "mood_exists": "409: a mood is already logged for that date",
    "observation_exists": "409: an observation is already logged for that date",
    "nothing_to_predict_from": "409: a prediction needs a logged period or a profile",
    "not_enough_data": "409: training needs more logged days",
    "body_too_large": "413: the body is over MAX_BODY_BYTES (IMPORT_MAX_BYTES for an import)",
    "file_too_large": "413: an imported file unpacks to more than IMPORT_MAX_UNPACKED_BYTES",
    "unknown_format": "422: the imported file is in none of the formats PlanHer reads",
    "malformed_file": "422: the imported file breaks its format; `detail` says where",
    "validation_error": "422: a field breaks a rule; `detail` lists them",
    "rate_limited": "429: too many requests; wait Retry-After seconds",
    "internal_error": "500: a bug of ours",
    "database_unavailable": "503: the database cannot serve now; retry after Retry-After",
}
# The code of an error raised without one (Starlette's own 404 and 405).
STATUS_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


class APIError(HTTPException):
    """An error a client can act on: its status, its ERROR_CODES `code`, and a `detail` a
    person understands (never an API path or an internal)."""

    def __init__(
        self, status_code: int, code: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        assert code in ERROR_CODES, code
        super().__init__(status_code, detail=detail, headers=dict(headers or {}))
        self.code = code


# ── Tables (SQLAlchemy Core; the DDL itself lives in migrations/ and schema.sql) ────────

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
    sa.Index("ix_calendar_feeds_token_hash", "token_hash", unique=True),
)

model_training_claims = sa.Table(
    "model_training_claims",
    metadata,
    sa.Column("subject", sa.String(32), primary_key=True),
    _timestamp_column("claimed_at"),
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
SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name VARCHAR(200) NOT NULL,
    checksum VARCHAR(64) NOT NULL,
    applied_at TIMESTAMP NOT NULL
)"""

# How both drivers' "that row already exists" reaches us.
UNIQUE_VIOLATIONS = sa.exc.IntegrityError


def utc_now() -> dt.datetime:
    """The current UTC time as stored: naive (responses show it to the second)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def format_timestamp(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


def today_in(time_zone: str) -> dt.date:
    """Her calendar date now, in her IANA time zone."""
    return dt.datetime.now(zoneinfo.ZoneInfo(time_zone)).date()


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


# ── Database: SQLAlchemy's engines behind one small facade ──────────────────────────────


class DatabaseUnavailable(Exception):
    """The database did not answer within its timeout, or cannot serve now (down, frozen,
    locked by another program, read-only, out of disk). Clients get 503 with Retry-After."""


def masked_url(url: str) -> str:
    """The database URL as it may be logged: any password replaced by ***."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(an unreadable DATABASE_URL)"


def driver_url(url: str) -> sa.URL:
    """`sqlite:///file` or `postgresql://…` (`postgres://` too) as the async driver's URL."""
    parsed = sa.make_url(url)
    backend = parsed.drivername.partition("+")[0]
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise sa.exc.ArgumentError("PlanHer keeps its data in a file: sqlite:///planher.db")
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise sa.exc.ArgumentError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot serve now, rather than that a statement
    broke a rule (a duplicate: the caller's 409) or is wrong (a bug: 500)."""
    if isinstance(error, TimeoutError | OSError | sa.exc.TimeoutError):
        return True
    if not isinstance(error, sa.exc.DBAPIError):
        return False
    if error.connection_invalidated or isinstance(error, sa.exc.InterfaceError):
        return True
    sqlite_error = getattr(error.orig, "sqlite_errorname", None)
    if sqlite_error is not None:
        return sqlite_error.startswith(SQLITE_UNAVAILABLE_ERRORS)
    return (getattr(error.orig, "sqlstate", None) or "").startswith(POSTGRES_UNAVAILABLE_STATES)


def failure_kind(error: BaseException) -> str:
    """A failure's class and the first line of its message, without statement or values."""
    cause = error.orig if isinstance(error, sa.exc.DBAPIError) else error
    message = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {message}" if message else type(cause).__name__


class FailureLog:
    """One log line per kind of database failure per FAILURE_LOG_INTERVAL_S: an outage
    must not fill the log with a traceback per request."""

    def __init__(self, database: str) -> None:
        self.database = database
        self._last_logged: dict[str, float] = {}

    def record(self, error: DatabaseUnavailable) -> None:
        kind, now = failure_kind(error.__cause__ or error), time.monotonic()
        if now - self._last_logged.get(kind, -math.inf) >= FAILURE_LOG_INTERVAL_S:
            self._last_logged[kind] = now
            logger.error("database %s unavailable: %s", self.database, kind)


class WriterTurn:
    """One SQLite writer at a time, queued without SQLite's busy handler, which polls with
    sleeps of up to 100 ms so that under load writers starve. Writers of a process queue on
    an asyncio lock; processes take turns on an exclusive flock of a file beside the
    database, checked every WRITER_TURN_POLL_S. Waiting is cancellable, so a writer that
    waits longer than the database timeout gives up cleanly."""

    def __init__(self, database_path: str) -> None:
        self._lock = asyncio.Lock()
        self._file = open(f"{database_path}.writer-lock", "a+b")  # noqa: SIM115 (held open)

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        try:
            while True:
                try:
                    fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:  # another process is writing
                    await asyncio.sleep(WRITER_TURN_POLL_S)
        except BaseException:
            self._lock.release()
            raise

    async def __aexit__(self, *exc_info: Any) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._lock.release()

    def close(self) -> None:
        self._file.close()


def _configure_sqlite(busy_timeout_ms: int, *pragmas: str) -> Callable[[Any, Any], None]:
    """A `connect` event listener: SQLITE_PRAGMAS on each new connection, and the driver's
    own transaction handling off, so that ours (`BEGIN IMMEDIATE`) is the only one."""

    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (*SQLITE_PRAGMAS, f"PRAGMA busy_timeout = {busy_timeout_ms}", *pragmas):
            cursor.execute(pragma)
        cursor.close()

    return on_connect


def _begin_immediately(connection: sa.Connection) -> None:
    """A `begin` event listener: SQLite transactions take the write lock when they begin,
    so two read-then-write transactions queue instead of deadlocking at their first write."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


Query = sa.Executable | str  # a Core statement, or plain SQL without parameters


def _as_dicts(names: Sequence[str], rows: Iterable[Sequence]) -> list[dict[str, Any]]:
    """Rows as plain dicts: cheaper to build and to read than SQLAlchemy's Row objects."""
    return [dict(zip(names, row, strict=True)) for row in rows]


def _all_rows(result: sa.CursorResult) -> list[dict[str, Any]]:
    return _as_dicts(list(result.keys()), result.all())


def _first_row(result: sa.CursorResult) -> dict[str, Any] | None:
    row = result.mappings().first()
    return None if row is None else dict(row)


def _nothing(result: sa.CursorResult) -> None:
    return None


def background_task(coroutine: Awaitable[Any]) -> asyncio.Task:
    """Run `coroutine` as a task of its own, outside the caller's context: in particular
    outside any transaction the caller has open. Keep a reference to it."""
    return asyncio.get_running_loop().create_task(coroutine, context=contextvars.Context())


class Database:
    """The database as handlers use it: `fetch_all`, `fetch_one`, `fetch_val`, `execute`,
    and `transaction()`, whose block runs every call of the same task on one connection.

    Underneath are SQLAlchemy's own async engines (aiosqlite, asyncpg). Each call is
    bounded by the timeout; a failed call gives its connection back, a call that timed out
    or lost its server discards it, and either way the client gets DatabaseUnavailable
    (503). On SQLite, writes take turns (WriterTurn, BEGIN IMMEDIATE) and Core SELECTs
    outside a transaction run inline on the event loop, on a read-only connection of a
    synchronous engine: in WAL mode a read never waits for a writer, and an indexed read
    takes less time than the hop to a driver thread and back. Reads of many rows use
    `fetch_large`, which streams them in chunks and hands the event loop back in between.
    """

    def __init__(
        self, url: str, timeout_s: float = DB_TIMEOUT_S, pool_size: int = DB_POOL_SIZE
    ) -> None:
        self.url, self.display_url = url, masked_url(url)
        self.timeout_s, self.pool_size = timeout_s, pool_size
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        self.engine: AsyncEngine | None = None
        self._autocommit: AsyncEngine | None = None  # statements on their own, large reads
        self._engines: list[AsyncEngine] = []  # each with a pool of its own
        self._reader: sa.Engine | None = None
        self._writer_turn: WriterTurn | None = None
        self._transaction_connection: contextvars.ContextVar[AsyncConnection | None] = (
            contextvars.ContextVar(f"transaction of {self.display_url}", default=None)
        )
        self._discarding: set[asyncio.Task] = set()

    # — connecting —

    async def connect(self) -> None:
        """Open the engines and check that the database answers (DatabaseUnavailable if
        not; sa.exc.ArgumentError for a URL that names no database we serve)."""
        url = driver_url(self.url)
        options: dict[str, Any] = {
            "pool_size": self.pool_size,
            "max_overflow": 0,
            "pool_timeout": self.timeout_s,
            "hide_parameters": True,  # errors and logs never carry her data
        }
        if self.dialect == "postgresql":
            self.engine = create_async_engine(
                url, connect_args={"timeout": self.timeout_s}, **options
            )
            # Single statements need no transaction: one round trip each, not three.
            self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            self._engines = [self.engine]
        else:
            # SQLite itself gives up on a lock a little before our timeout: a clean error
            # rather than an abandoned connection.
            on_connect = _configure_sqlite(int(self.timeout_s * 900))
            self.engine = create_async_engine(url, **options)
            sa.event.listen(self.engine.sync_engine, "connect", on_connect)
            sa.event.listen(self.engine.sync_engine, "begin", _begin_immediately)
            # Statements on their own and large reads have connections of their own, in
            # autocommit mode: a write alone is atomic without BEGIN and COMMIT (two driver
            # round trips fewer), and a read never takes the write lock.
            self._autocommit = create_async_engine(url, isolation_level="AUTOCOMMIT", **options)
            sa.event.listen(self._autocommit.sync_engine, "connect", on_connect)
            self._engines = [self.engine, self._autocommit]
            self._reader = sa.create_engine(
                url.set(drivername="sqlite"),
                poolclass=sa.pool.StaticPool,  # one connection, only ever used on the loop
                connect_args={"check_same_thread": False},
                hide_parameters=True,
            )
            sa.event.listen(
                self._reader,
                "connect",
                _configure_sqlite(SQLITE_READER_BUSY_TIMEOUT_MS, "PRAGMA query_only = ON"),
            )
        try:
            async with self._connection(self.engine):  # fails here, not on the first request
                pass
            if self.dialect == "sqlite":
                self._writer_turn = WriterTurn(url.database)
                self._read_inline(sa.select(1), sa.CursorResult.scalar)
        except BaseException:
            await self.disconnect()
            raise

    async def disconnect(self) -> None:
        if self._discarding:
            await asyncio.wait(set(self._discarding), timeout=self.timeout_s)
        for engine in self._engines:
            await engine.dispose()
        if self._reader is not None:
            self._reader.dispose()
        if self._writer_turn is not None:
            self._writer_turn.close()
        self.engine = self._autocommit = None
        self._engines = []
        self._reader = self._writer_turn = None

    async def check_writable(self) -> None:
        """DatabaseUnavailable unless a write could begin now. The probe is a write that
        changes nothing: a read-only database refuses it, and on SQLite it waits for the
        write lock, which another program may hold longer than the timeout."""
        async with self.transaction():
            await self.execute(schema_migrations.delete().where(sa.false()))

    @property
    def connections_in_use(self) -> int:
        """Pooled connections checked out now: 0 whenever no call is running."""
        return sum(engine.pool.checkedout() for engine in self._engines)

    # — the calls handlers make —

    # `values` fill a statement's bind parameters: a hot statement is built once, with
    # sa.bindparam, rather than composed anew on every call.

    async def fetch_all(self, query: Query, values: Mapping | None = None) -> list[dict[str, Any]]:
        return await self._run(query, _all_rows, values)

    async def fetch_one(self, query: Query, values: Mapping | None = None) -> dict[str, Any] | None:
        return await self._run(query, _first_row, values)

    async def fetch_val(self, query: Query, values: Mapping | None = None) -> Any:
        return await self._run(query, sa.CursorResult.scalar, values)

    async def execute(
        self, query: Query, values: Mapping | Sequence[Mapping] | None = None
    ) -> None:
        """Run a statement for its effect (once per mapping, when `values` is a list)."""
        await self._run(query, _nothing, values)

    async def fetch_large(self, query: sa.Select) -> list[dict[str, Any]]:
        """Every row of a read that may be large (training data, an export), fetched in
        chunks of LARGE_READ_CHUNK_ROWS, each its own awaited call: the event loop serves
        other requests in between, and each chunk is bounded by the timeout."""
        rows: list[dict[str, Any]] = []
        async with self._connection_for_reads() as connection:
            result = await self._call(
                connection.stream(query.execution_options(yield_per=LARGE_READ_CHUNK_ROWS))
            )
            names = list(result.keys())
            while chunk := await self._call(result.fetchmany(LARGE_READ_CHUNK_ROWS)):
                rows += _as_dicts(names, chunk)
        return rows

    @contextlib.asynccontextmanager
    async def transaction(self):
        """The block's calls (in this task) on one connection, committed together at its
        end or, if it raises, not at all. A transaction inside another joins it."""
        if self._transaction_connection.get() is not None:
            yield
            return
        async with self._connection_in_turn(self.engine) as connection:
            token = self._transaction_connection.set(connection)
            try:
                await self._call(connection.begin())
                yield
            finally:
                self._transaction_connection.reset(token)
            try:
                await self._call(connection.commit())
            except Exception as error:
                # A COMMIT that failed (a deferred constraint) may leave SQLite's transaction
                # open, holding the write lock: this connection is never reused.
                if not isinstance(error, DatabaseUnavailable):
                    await self._call(connection.invalidate())
                raise

    # — how each call runs —

    async def _run(self, query: Query, take: Callable, values: Any = None) -> Any:
        statement = sa.text(query) if isinstance(query, str) else query
        if self.engine is None:
            raise self._unavailable(ConnectionError("the database is not connected"))
        connection = self._transaction_connection.get()
        if connection is not None:
            return take(await self._call(connection.execute(statement, values)))
        if self.dialect == "sqlite" and isinstance(statement, sa.Select):
            return self._read_inline(statement, take, values)
        async with self._connection_in_turn(self._autocommit) as connection:
            return take(await self._call(connection.execute(statement, values)))

    def _read_inline(self, statement: sa.Select, take: Callable, values: Any = None) -> Any:
        try:
            with self._reader.connect() as connection:
                return take(connection.execute(statement, values))
        except Exception as error:
            if not is_unavailable(error):
                raise
            raise self._unavailable(error) from error

    @contextlib.asynccontextmanager
    async def _connection_in_turn(self, engine: AsyncEngine):
        """A connection of `engine`, on SQLite (where only writes come here) once it is
        this writer's turn."""
        async with contextlib.AsyncExitStack() as stack:
            if self._writer_turn is not None:
                await self._call(stack.enter_async_context(self._writer_turn))
            yield await stack.enter_async_context(self._connection(engine))

    @contextlib.asynccontextmanager
    async def _connection_for_reads(self):
        connection = self._transaction_connection.get()
        if connection is not None:
            yield connection
            return
        # On PostgreSQL a server-side cursor lives in a transaction; on SQLite the
        # autocommit connections read without taking the write lock.
        engine = self.engine if self.dialect == "postgresql" else self._autocommit
        async with self._connection(engine) as connection:
            if self.dialect == "postgresql":
                await self._call(connection.begin())
            yield connection

    @contextlib.asynccontextmanager
    async def _connection(self, engine: AsyncEngine):
        """A pooled connection for the block, given back whatever happens. After a failure
        it is rolled back; if the database is unavailable, or the rollback fails, it is
        discarded instead, in the background, so the client's 503 does not wait for it."""
        if engine is None:
            raise self._unavailable(ConnectionError("the database is not connected"))
        try:
            connection = await self._call(engine.connect())
        except (sa.exc.DBAPIError, OSError) as error:  # whatever stops a connection opening
            raise self._unavailable(error) from error
        try:
            yield connection
        except BaseException as error:
            if is_unavailable(error) or isinstance(
                error, DatabaseUnavailable | asyncio.CancelledError
            ):
                self._discard(connection)
            else:
                with contextlib.suppress(Exception):
                    await self._give_back(connection)
            raise
        await self._give_back(connection)

    async def _give_back(self, connection: AsyncConnection) -> None:
        """Return a connection to the pool, rolling back what it began; if that fails,
        discard it."""
        try:
            await self._call(connection.close())
        except BaseException:
            self._discard(connection)
            raise

    async def _call(self, operation: Awaitable[Any]) -> Any:
        """Await one database operation within the timeout; DatabaseUnavailable if it does
        not answer in time or the database cannot serve."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await operation
        except Exception as error:
            if isinstance(error, DatabaseUnavailable) or not is_unavailable(error):
                raise
            raise self._unavailable(error) from error

    def _unavailable(self, error: BaseException) -> DatabaseUnavailable:
        """The 503's exception for `error`, which stays attached as its cause."""
        if isinstance(error, TimeoutError):
            unavailable = DatabaseUnavailable(
                f"The database did not answer within {self.timeout_s:g} s"
            )
        else:
            unavailable = DatabaseUnavailable("The database is unavailable")
        unavailable.__cause__ = error
        return unavailable

    def _discard(self, connection: AsyncConnection) -> None:
        """Invalidate (close for good, never reuse) a connection whose state is unknown."""

        async def discard() -> None:
            with contextlib.suppress(Exception):
                await connection.invalidate()
            with contextlib.suppress(Exception):
                await connection.close()

        task = background_task(discard())
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)


# ── Queries that handlers share ──────────────────────────────────────────────────────────


async def email_taken(database: Database, email: str) -> bool:
    found = await database.fetch_val(sa.select(users.c.id).where(users.c.email == email))
    return found is not None


async def signed_in_from(
    database: Database, user_id: int, ip: str, live_since: dt.datetime
) -> bool:
    """Whether she has a live login from this address: not revoked (logged out, stolen)
    and refreshed since `live_since` (its refresh token has not expired)."""
    found = await database.fetch_val(
        sa.select(logins.c.id)
        .where(
            logins.c.user_id == user_id,
            logins.c.ip == ip,
            logins.c.revoked_at.is_(None),
            logins.c.refreshed_at >= live_since,
        )
        .limit(1)
    )
    return found is not None


async def revoke_logins(database: Database, condition: Any, reason: str) -> None:
    await database.execute(
        logins.update()
        .where(condition, logins.c.revoked_at.is_(None))
        .values(revoked_at=utc_now(), revoked_reason=reason)
    )


PROFILE_OF = user_profiles.select().where(user_profiles.c.user_id == sa.bindparam("user_id"))
PERIOD_SPANS_OF = sa.select(period_records.c.start_date, period_records.c.end_date).where(
    period_records.c.user_id == sa.bindparam("user_id")
)

SIGN_FIELDS = ("date", "lh_test", "bbt_celsius", "cervical_mucus")
SIGNS_OF = (
    sa.select(*(observations.c[name] for name in SIGN_FIELDS))
    .where(observations.c.user_id == sa.bindparam("user_id"))
    .order_by(observations.c.date)
)


async def fetch_profile(database: Database, user_id: int) -> dict[str, Any] | None:
    return await database.fetch_one(PROFILE_OF, {"user_id": user_id})


async def fetch_periods(database: Database, user_id: int) -> list[dict[str, Any]]:
    """Her periods' start and end dates: what places her days in their cycles."""
    return await database.fetch_all(PERIOD_SPANS_OF, {"user_id": user_id})


async def delete_expired_history(database: Database) -> int:
    """Delete, for each woman who set retention_days, her periods, moods and served
    predictions older than that (by her own calendar). Returns how many rows went."""
    deleted = 0
    for user in await database.fetch_all(
        sa.select(users.c.id, users.c.time_zone, users.c.retention_days).where(
            users.c.retention_days.is_not(None)
        )
    ):
        keep_from = today_in(user["time_zone"]) - dt.timedelta(days=user["retention_days"])
        async with database.transaction():
            for table, older in (
                (
                    period_records,
                    sa.func.coalesce(period_records.c.end_date, period_records.c.start_date)
                    < keep_from,
                ),
                (daily_moods, daily_moods.c.date < keep_from),
                (observations, observations.c.date < keep_from),
                (predictions, predictions.c.date < keep_from),
            ):
                rows = await database.fetch_all(
                    table.delete().where(table.c.user_id == user["id"], older).returning(table.c.id)
                )
                deleted += len(rows)
    return deleted


@contextlib.asynccontextmanager
async def user_write_transaction(database: Database, user_id: int):
    """A transaction in which this user's checks-then-writes (overlaps, one mood a day, one
    profile) cannot interleave with another request of hers. SQLite's BEGIN IMMEDIATE already
    serializes writers; PostgreSQL locks her users row."""
    async with database.transaction():
        if database.dialect == "postgresql":
            await database.execute(
                sa.select(users.c.id).where(users.c.id == user_id).with_for_update()
            )
        yield


async def fetch_owned(database: Database, table: sa.Table, row_id: int, user_id: int, what: str):
    """Her row with this id. Another user's row is not found, exactly like a missing one."""
    row = await database.fetch_one(
        table.select().where(table.c.id == row_id, table.c.user_id == user_id)
    )
    if row is None:
        raise APIError(404, "not_found", f"{what} not found")
    return row


@dataclasses.dataclass(eq=False)
class Listing:
    """What a list endpoint pages through: rows of `table`, newest first by `date_column`,
    selecting `columns` from `source` (a join) when given; `owned` lists are one user's."""

    table: sa.Table
    date_column: sa.Column
    owned: bool = True
    columns: Sequence[Any] | None = None
    source: Any = None

    @functools.cache  # noqa: B019 (a few module-level listings, kept for the process)
    def statements(self, from_given: bool, to_given: bool) -> tuple[sa.Select, sa.Select]:
        """The count and the page, built once per filter shape, values bound per call."""
        condition = sa.true()
        if self.owned:
            condition &= self.table.c.user_id == sa.bindparam("owner_id")
        if from_given:
            condition &= self.date_column >= sa.bindparam("first_day")
        if to_given:
            condition &= self.date_column <= sa.bindparam("last_day")
        count = sa.select(sa.func.count()).select_from(self.table).where(condition)
        page = (
            sa.select(*(self.columns or self.table.c))
            .select_from(self.table if self.source is None else self.source)
            .where(condition)
            .order_by(self.date_column.desc(), self.table.c.id.desc())
            .limit(sa.bindparam("limit"))
            .offset(sa.bindparam("offset"))
        )
        return count, page


async def list_page(
    database: Database, listing: Listing, page: ListQuery, owner_id: int | None = None
) -> tuple[list, int]:
    """One `page` of `listing` (of `owner_id`'s rows if it is owned), with the total count
    for X-Total-Count. `from`/`to` are whole days, also on a timestamp column."""
    first_day, last_day = page.from_date, page.to_date
    if isinstance(listing.date_column.type, sa.DateTime):
        first_day = first_day and dt.datetime.combine(first_day, dt.time())
        last_day = last_day and dt.datetime.combine(last_day, dt.time.max)
    count, rows = listing.statements(first_day is not None, last_day is not None)
    values = {"owner_id": owner_id, "first_day": first_day, "last_day": last_day}
    total = await database.fetch_val(count, values)
    return await database.fetch_all(
        rows, {**values, "limit": page.limit, "offset": page.offset}
    ), total


ACCOUNT_COLUMNS = [column for column in users.c if column.name != "password_hash"]
# Every authenticated request runs this: built once, its values bound per call.
LIVE_LOGIN_ACCOUNT = (
    sa.select(*ACCOUNT_COLUMNS, logins.c.id.label("login_id"))
    .select_from(logins.join(users, users.c.id == logins.c.user_id))
    .where(
        logins.c.login_key == sa.bindparam("login_key"),
        logins.c.user_id == sa.bindparam("user_id"),
        logins.c.revoked_at.is_(None),
    )
)
HISTORY_SOURCE = predictions.outerjoin(
    daily_moods,
    sa.and_(
        daily_moods.c.user_id == predictions.c.user_id, daily_moods.c.date == predictions.c.date
    ),
)
HISTORY_COLUMNS = [*predictions.c, daily_moods.c.energy_level.label("actual_level")]
PERIODS = Listing(period_records, period_records.c.start_date)
MOODS = Listing(daily_moods, daily_moods.c.date)
OBSERVATIONS = Listing(observations, observations.c.date)
PREDICTION_HISTORY = Listing(predictions, predictions.c.date, True, HISTORY_COLUMNS, HISTORY_SOURCE)
ACCOUNTS = Listing(users, users.c.created_at, owned=False, columns=ACCOUNT_COLUMNS)
AUDIT_EVENTS = Listing(audit_events, audit_events.c.at, owned=False)


async def logged_on(database: Database, table: sa.Table, user_id: int, date: dt.date) -> Any:
    """Her row of `table` (moods, observations: one a day) on `date`, if any."""
    return await database.fetch_one(
        sa.select(table.c.id).where(table.c.user_id == user_id, table.c.date == date)
    )


MODEL_METADATA_COLUMNS = [column for column in user_models.c if column.name != "model_blob"]


def owner_condition(user_id: int | None) -> Any:
    """Her models, or the population model's (no owner)."""
    return user_models.c.user_id.is_(None) if user_id is None else user_models.c.user_id == user_id


async def newest_model_row(database: Database, user_id: int | None, shipped_only: bool) -> Any:
    condition = owner_condition(user_id)
    if shipped_only:
        condition &= user_models.c.shipped.is_(True)
    return await database.fetch_one(
        sa.select(*MODEL_METADATA_COLUMNS)
        .where(condition)
        .order_by(user_models.c.version.desc())
        .limit(1)
    )


async def changed_moods_since(
    database: Database, user_id: int | None, since: dt.datetime | None
) -> int:
    condition = sa.true() if user_id is None else daily_moods.c.user_id == user_id
    if since is not None:
        condition &= daily_moods.c.updated_at >= since
    return await database.fetch_val(
        sa.select(sa.func.count()).select_from(daily_moods).where(condition)
    )


# ── Migrations ───────────────────────────────────────────────────────────────────────────


class MigrationError(RuntimeError):
    """The database's recorded migrations disagree with the files: refuse to start."""


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


MIGRATION_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
DIALECT_ONLY_LINE = re.compile(r"^--\s*(sqlite|postgresql):\s*(.+)$")


def discover_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migration files have version {version:04d}")
        found[version] = Migration(version, match.group(2), path.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


def sql_statements(script: str, dialect: str) -> list[str]:
    """Split a SQL script into statements for `dialect`.

    Statements end with `;` at the end of a line. A comment line `-- <dialect>: statement;`
    is a statement only that dialect runs (PostgreSQL's identity columns, for instance).
    """
    lines = []
    for line in script.splitlines():
        dialect_only = DIALECT_ONLY_LINE.match(line.strip())
        if dialect_only:
            if dialect_only.group(1) == dialect:
                lines.append(dialect_only.group(2))
        elif not line.strip().startswith("--"):
            lines.append(line)
    statements = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return [statement.strip() for statement in statements if statement.strip()]


async def run_script(database: Database, script: str) -> None:
    for statement in sql_statements(script, database.dialect):
        await database.execute(statement)


async def _lock_migrations(database: Database) -> None:
    """Serialize concurrent runners for the rest of the current transaction.

    SQLite needs nothing more: our transactions begin IMMEDIATE, holding the write lock.
    """
    if database.dialect == "postgresql":
        await database.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")


async def _applied_migrations(database: Database) -> dict[int, dict]:
    rows = await database.fetch_all(schema_migrations.select())
    return {row["version"]: row for row in rows}


def check_applied_migrations(files: list[Migration], applied: dict[int, dict]) -> None:
    by_version = {migration.version: migration for migration in files}
    for version, row in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"migration {version:04d}_{row['name']} is applied to the database but its "
                f"file is missing from {MIGRATIONS_DIR.name}/; restore it before starting"
            )
        if migration.checksum != row["checksum"]:
            raise MigrationError(
                f"migration {version:04d}_{migration.name}.sql was changed after it was "
                "applied (checksum differs); put a change in a new migration file instead"
            )


async def migrate(database: Database, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply pending migrations in order, each with its bookkeeping row in one transaction.

    Safe when several app instances start at once. Returns the versions applied now.
    """
    files = discover_migrations(directory)
    newly_applied = []
    async with database.transaction():
        await _lock_migrations(database)
        await database.execute(SCHEMA_MIGRATIONS_DDL)
        check_applied_migrations(files, await _applied_migrations(database))
    for migration in files:
        async with database.transaction():
            await _lock_migrations(database)
            if migration.version in await _applied_migrations(database):
                continue  # another instance applied it while we waited
            await run_script(database, migration.sql)
            await database.execute(
                schema_migrations.insert().values(
                    version=migration.version,
                    name=migration.name,
                    checksum=migration.checksum,
                    applied_at=utc_now(),
                )
            )
            newly_applied.append(migration.version)
            logger.info("applied migration %04d_%s", migration.version, migration.name)
    return newly_applied


# ── Security: passwords, tokens, the authentication backend ─────────────────────────────


# bcrypt takes ~200 ms of CPU at cost 12. Run in worker threads, at most one per core: more
# would not hash faster, only crowd the event loop off the CPU.
BCRYPT_THREADS = anyio.CapacityLimiter(os.cpu_count() or 1)


async def hash_password(password: str, rounds: int) -> str:
    hashed = await anyio.to_thread.run_sync(
        bcrypt.hashpw, password.encode(), bcrypt.gensalt(rounds), limiter=BCRYPT_THREADS
    )
    return hashed.decode()


async def verify_password(password: str, password_hash: str) -> bool:
    return await anyio.to_thread.run_sync(
        bcrypt.checkpw, password.encode(), password_hash.encode(), limiter=BCRYPT_THREADS
    )


class MissingSecretKeys(Exception):
    """PostgreSQL without SECRET_KEYS: the instances sharing the database must share keys."""


def signing_keys(settings: Settings) -> tuple[str, ...]:
    """The keys tokens and models are signed with, newest first: SECRET_KEYS, or, on
    SQLite, a random key generated on the first start and kept in a file beside the
    database that only the service's user can read, so the quick start needs no setting and
    a restart keeps sessions. No key is ever written in the source."""
    if settings.secret_keys:
        return settings.secret_keys
    if not settings.database_url.startswith("sqlite"):
        raise MissingSecretKeys(
            "SECRET_KEYS is not set: every instance on this PostgreSQL database must sign "
            "with the same keys, so set SECRET_KEYS (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))')"
        )
    return (
        kept_secret_key(Path(sa.make_url(settings.database_url).database + SECRET_KEY_FILE_SUFFIX)),
    )


def kept_secret_key(path: Path) -> str:
    """The key in `path`, made on first use. Written to a private draft, then linked into
    place, so instances starting at once all end up with the first one's key."""
    if not path.exists():
        draft = path.with_name(f"{path.name}.{secrets.token_hex(6)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(48))
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(draft, path)
            logger.warning("SECRET_KEYS is not set: generated a signing key in %s", path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text(encoding="utf-8").strip()


class InvalidToken(Exception):
    """A token that is malformed, tampered with, expired or of the wrong purpose."""

    def __init__(self, detail: str, code: str) -> None:
        super().__init__(detail)
        self.code = code


class TokenSigner:
    """Signs and checks access and refresh tokens.

    A token is an itsdangerous timed payload naming the user and her login (`lid`); refresh
    tokens also carry the login's current refresh id (`jti`). Each purpose has its own salt,
    so one can never pass for the other. Keys are tried newest first, so rotating
    SECRET_KEYS keeps tokens signed with an older key valid while that key is listed.
    """

    def __init__(self, secret_keys: tuple[str, ...], access_ttl_s: int, refresh_ttl_s: int):
        keys_oldest_first = list(reversed(secret_keys))
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self._access = itsdangerous.URLSafeTimedSerializer(
            keys_oldest_first, salt=ACCESS_TOKEN_SALT
        )
        self._refresh = itsdangerous.URLSafeTimedSerializer(
            keys_oldest_first, salt=REFRESH_TOKEN_SALT
        )

    def token_pair(self, user_id: int, login_key: str, refresh_jti: str) -> dict[str, Any]:
        return {
            "access_token": self._access.dumps({"uid": user_id, "lid": login_key}),
            "refresh_token": self._refresh.dumps(
                {"uid": user_id, "lid": login_key, "jti": refresh_jti}
            ),
            "token_type": "bearer",
            "expires_in": self.access_ttl_s,
        }

    def load_access(self, token: str) -> dict[str, Any]:
        return self._load(self._access, token, self.access_ttl_s, ("uid", "lid"))

    def load_refresh(self, token: str) -> dict[str, Any]:
        return self._load(self._refresh, token, self.refresh_ttl_s, ("uid", "lid", "jti"))

    @staticmethod
    def _load(serializer, token: str, max_age_s: int, keys: tuple[str, ...]) -> dict[str, Any]:
        try:
            payload = serializer.loads(token, max_age=max_age_s)
        except itsdangerous.SignatureExpired as error:
            raise InvalidToken("Token has expired", "token_expired") from error
        except itsdangerous.BadData as error:
            raise InvalidToken("Invalid token", "invalid_token") from error
        if not isinstance(payload, dict) or set(payload) != set(keys):
            raise InvalidToken("Invalid token", "invalid_token")
        return payload


@dataclasses.dataclass
class AuthenticatedUser(BaseUser):
    account: dict[str, Any]  # her `users` row as loaded with the token, less the hash
    login_id: int

    @property
    def id(self) -> int:
        return self.account["id"]

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.account["name"] or self.account["email"]

    @property
    def identity(self) -> str:
        return str(self.id)


class Anonymous(UnauthenticatedUser):
    """No valid token; `reason` and `code` make the 401 if the route needs one."""

    def __init__(self, reason: str, code: str) -> None:
        self.reason, self.code = reason, code


class BearerTokenBackend(AuthenticationBackend):
    """Resolves `Authorization: Bearer <access token>` to the user, checking in the database
    that the token's login is still live (logout and password changes revoke logins).

    A missing or bad token leaves the request anonymous rather than failing it, so public
    routes such as /auth/refresh still work for a client that sends a stale token. So does
    an Authorization header of another scheme (Swagger UI sends `Basic` with the password
    flow): public routes ignore it, protected ones answer as to no token at all.
    """

    async def authenticate(self, connection: HTTPConnection):
        scheme, _, token = connection.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return AuthCredentials(), Anonymous("Not authenticated", "not_authenticated")
        try:
            payload = connection.app.state.tokens.load_access(token.strip())
        except InvalidToken as error:
            return AuthCredentials(), Anonymous(str(error), error.code)
        row = await connection.app.state.database.fetch_one(
            LIVE_LOGIN_ACCOUNT, {"login_key": payload["lid"], "user_id": payload["uid"]}
        )
        if row is None:
            return AuthCredentials(), Anonymous("Token has been revoked", "token_revoked")
        account = dict(row)
        login_id = account.pop("login_id")
        return AuthCredentials(["authenticated", row["role"]]), AuthenticatedUser(account, login_id)


BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}


# Plain SQL with bound parameters: the upsert is spelled the same on SQLite and PostgreSQL.
# Every SET expression sees the row as it was, so both CASEs test the old window.
COUNT_RATE_LIMIT_HIT = (
    "INSERT INTO rate_limits (bucket, window_start, hits) VALUES (:bucket, :now, 1) "
    "ON CONFLICT (bucket) DO UPDATE SET "
    "hits = CASE WHEN rate_limits.window_start <= :expired THEN 1 ELSE rate_limits.hits + 1 END, "
    "window_start = CASE WHEN rate_limits.window_start <= :expired THEN :now "
    "ELSE rate_limits.window_start END "
    "RETURNING hits, window_start"
)


def rate_bucket(name: str, key: str) -> str:
    """The limit's name and a hash of what it counts, so no email sits in the table."""
    return f"{name}:{hashlib.sha256(key.encode('utf-8')).hexdigest()[:48]}"


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_limited(retry_after_s: float, what: str) -> APIError:
    seconds = max(1, math.ceil(retry_after_s))
    return APIError(
        429,
        "rate_limited",
        f"Too many {what}; try again in {seconds} seconds",
        headers={"Retry-After": str(seconds)},
    )


async def count_against_limit(request: Request, name: str, key: str, what: str) -> None:
    """Count one hit in the shared (database) window of limit `name`; 429 past the limit."""
    rule = request.app.state.settings.rate_limits[name]
    now = utc_now()
    row = await request.app.state.database.fetch_one(
        sa.text(COUNT_RATE_LIMIT_HIT)
        .bindparams(
            bucket=rate_bucket(name, key),
            now=now,
            expired=now - dt.timedelta(seconds=rule.window_s),
        )
        .columns(hits=sa.Integer, window_start=sa.DateTime)
    )
    if row["hits"] > rule.limit:
        window_end = row["window_start"] + dt.timedelta(seconds=rule.window_s)
        raise rate_limited((window_end - now).total_seconds(), what)


async def refund_hit(request: Request, name: str, key: str) -> None:
    """Return a hit counted against limit `name` for `key` (a sign-in that succeeded)."""
    await request.app.state.database.execute(
        rate_limits.update()
        .where(rate_limits.c.bucket == rate_bucket(name, key), rate_limits.c.hits > 0)
        .values(hits=rate_limits.c.hits - 1)
    )


async def purge_expired_windows(app: Starlette) -> None:
    """Delete the windows of rate limits that have passed, at most once a
    RATE_LIMIT_PURGE_INTERVAL_S per process: they count nothing any more."""
    now = time.monotonic()
    if now - app.state.rate_limits_purged_at < RATE_LIMIT_PURGE_INTERVAL_S:
        return
    app.state.rate_limits_purged_at = now
    longest_window_s = max(rule.window_s for rule in app.state.settings.rate_limits.values())
    await app.state.database.execute(
        rate_limits.delete().where(
            rate_limits.c.window_start < utc_now() - dt.timedelta(seconds=longest_window_s)
        )
    )


class RequestCounter:
    """Per-user request counts in fixed windows, in this process only: each worker allows
    the limit on its own (cheap enough to run on every request, unlike a database row)."""

    def __init__(self, rule: RateLimit) -> None:
        self.rule = rule
        self._window_start = 0.0
        self._counts: dict[int, int] = {}

    def retry_after(self, user_id: int, now: float) -> float | None:
        """Count a request; the seconds to wait if it is over the limit, else None."""
        if now - self._window_start >= self.rule.window_s:
            self._window_start, self._counts = now, {}
        self._counts[user_id] = self._counts.get(user_id, 0) + 1
        if self._counts[user_id] > self.rule.limit:
            return self._window_start + self.rule.window_s - now
        return None


# ── Validation schemas ───────────────────────────────────────────────────────────────────


class RequestValidationError(Exception):
    """Input that parsed but broke a rule: answered 422 with FastAPI's error list."""

    def __init__(self, errors: list[dict[str, Any]], location: str) -> None:
        self.errors = [
            {"loc": [location, *error["loc"]], "msg": error["msg"], "type": error["type"]}
            for error in errors
        ]


class BodyTooLarge(Exception):
    """The request body grew past its limit (MAX_BODY_BYTES) while being read."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.max_bytes = max_bytes


class RequestReadTimeout(Exception):
    """The request body did not arrive within REQUEST_READ_TIMEOUT_S."""


class RequestBody(BaseModel):
    """A JSON request body: unknown fields are refused (a client never sets `id`, `role` or
    timestamps), and types are strict (`"5"` is not a number, `1` is not `true`)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# Control characters (C0, DEL, C1), which JSON can carry but no text needs (and PostgreSQL
# refuses NUL); notes may keep tabs and line breaks. (Lone surrogates never get this far:
# the JSON parser refuses them.)
CONTROL_CHARACTERS = "\\x00-\\x1f\\x7f-\\x9f"
NOTE_CONTROL_CHARACTERS = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f"


def _refusing(forbidden: str, what: str) -> AfterValidator:
    """A validator that refuses the `forbidden` characters with a message a person reads."""
    found = re.compile(f"[{forbidden}]").search

    def check(value: str) -> str:
        if found(value):
            raise PydanticCustomError(
                "control_character", f"{what} cannot contain control characters"
            )
        return value

    return AfterValidator(check)


def _pattern_refusing(forbidden: str) -> Any:
    """The same rule as a pattern in the document, so that clients can check it first."""
    return Field(json_schema_extra={"pattern": f"^[^{forbidden}]*$"})


def _date_in_range(value: dt.date) -> dt.date:
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise PydanticCustomError(
            "date_out_of_range",
            f"Dates must be between {EARLIEST_DATE.isoformat()} and {LATEST_DATE.isoformat()}",
        )
    return value


Date = Annotated[
    dt.date,
    # The document says the range with a pattern on the year, which a client can check.
    Field(json_schema_extra={"pattern": r"^(19\d\d|20\d\d|21\d\d|2200)-\d\d-\d\d$"}),
    AfterValidator(_date_in_range),
]


def _normalize_email(value: str) -> str:
    email = value.strip().lower()
    if len(email) > EMAIL_MAX_CHARS or not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise PydanticCustomError("email", "Enter a valid email address, like name@example.com")
    return email


def _check_password(value: str) -> str:
    if len(value) < PASSWORD_MIN_CHARS:
        raise PydanticCustomError(
            "password_too_short", f"Password must be at least {PASSWORD_MIN_CHARS} characters"
        )
    if value.lower() in COMMON_PASSWORDS:
        raise PydanticCustomError(
            "password_too_common",
            "This password is one of the most common ones, which attackers try first; "
            "choose another",
        )
    return _check_password_bytes(value)


def _check_password_bytes(value: str) -> str:
    if len(value.encode("utf-8")) > PASSWORD_MAX_BYTES:
        raise PydanticCustomError(
            "password_too_long",
            f"Password must be at most {PASSWORD_MAX_BYTES} bytes in UTF-8 (bcrypt's limit); "
            "accented letters and emoji take 2 to 4 bytes each",
        )
    return value


# The byte limit cannot be said in JSON Schema, so the document states it in words and
# marks the fields with OpenAPI's `password` format; the validators enforce it.
PASSWORD_DOCUMENTATION = {
    "format": "password",
    "maxLength": PASSWORD_MAX_BYTES,
    "description": f"at most {PASSWORD_MAX_BYTES} bytes in UTF-8 (bcrypt's limit), "
    "no control characters",
}
Email = Annotated[
    str,
    Field(json_schema_extra={"format": "email", "maxLength": EMAIL_MAX_CHARS}),
    _pattern_refusing(CONTROL_CHARACTERS),
    _refusing(CONTROL_CHARACTERS, "An email address"),
    AfterValidator(_normalize_email),
]
NewPassword = Annotated[
    str,
    Field(json_schema_extra={**PASSWORD_DOCUMENTATION, "minLength": PASSWORD_MIN_CHARS}),
    _refusing(CONTROL_CHARACTERS, "A password"),
    AfterValidator(_check_password),
]
GivenPassword = Annotated[
    str,
    Field(min_length=1, json_schema_extra=PASSWORD_DOCUMENTATION),
    _refusing(CONTROL_CHARACTERS, "A password"),
    AfterValidator(_check_password_bytes),
]
Name = Annotated[
    str,
    Field(max_length=NAME_MAX_CHARS),
    _pattern_refusing(CONTROL_CHARACTERS),
    _refusing(CONTROL_CHARACTERS, "A name"),
]
Token = Annotated[
    str,
    Field(min_length=1, max_length=TOKEN_MAX_CHARS),
    _pattern_refusing(CONTROL_CHARACTERS),
    _refusing(CONTROL_CHARACTERS, "A token"),
]


def _known_time_zone(value: str) -> str:
    if value not in TIME_ZONES:
        raise PydanticCustomError(
            "time_zone", "Unknown time zone: use an IANA name such as America/Los_Angeles"
        )
    return value


TimeZone = Annotated[
    str,
    # ~600 names, some of which differ only in punctuation (Etc/GMT+0, Etc/GMT-0, GMT0):
    # as an enum they would break client generators, so the document names a format.
    Field(
        max_length=TIME_ZONE_MAX_CHARS,
        json_schema_extra={
            "format": "iana-time-zone",
            "description": "An IANA time zone name, such as America/Los_Angeles",
            "examples": ["Europe/Berlin"],
        },
    ),
    AfterValidator(_known_time_zone),
]


RetentionDays = Annotated[int, Field(ge=RETENTION_MIN_DAYS, le=RETENTION_MAX_DAYS)]


class RegisterBody(RequestBody):
    email: Email
    password: NewPassword
    name: Name | None = None
    time_zone: TimeZone = DEFAULT_TIME_ZONE


class LoginBody(RequestBody):
    email: Email
    password: GivenPassword


class OAuth2PasswordForm(BaseModel):
    """The OAuth2 password flow's form (what the docs page's Authorize button sends)."""

    model_config = ConfigDict(extra="ignore")  # grant_type, scope, client_id, …
    username: Email
    password: GivenPassword

    @property
    def email(self) -> str:
        return self.username


class RefreshBody(RequestBody):
    refresh_token: Token


class LogoutBody(RequestBody):
    refresh_token: Token | None = None


class UserUpdateBody(RequestBody):
    # email and password default to None but do not accept null: leave them out instead.
    name: Name | None = None
    email: Email = None
    password: NewPassword = None
    current_password: GivenPassword = None
    time_zone: TimeZone = None
    retention_days: RetentionDays | None = Field(
        None,
        description=f"Keep only this many days of her history ({RETENTION_MIN_DAYS} at "
        "least); null keeps everything",
    )


def round_half_up(value: float, decimals: int) -> float:
    """Rounding as people do it (72.345 → 72.35), not binary floating point's 72.34."""
    quantum = decimal.Decimal(1).scaleb(-decimals)
    return float(decimal.Decimal(repr(value)).quantize(quantum, rounding=decimal.ROUND_HALF_UP))


def bmi(height_cm: int, weight_kg: float) -> float:
    return round_half_up(weight_kg / (height_cm / 100) ** 2, 1)


def bmi_category(bmi_value: float) -> str:
    """The WHO class of the BMI as shown (rounded), so 24.97 shows as 25.0, `overweight`."""
    if bmi_value < 18.5:
        return "underweight"
    if bmi_value < 25:
        return "normal"
    return "overweight" if bmi_value < 30 else "obese"


# Tracking data. Every range is the contract's; the rules that tie fields together
# (luteal + menses < cycle, end after start, …) are checked on the merged record instead,
# because a partial update must obey them too.
def _whole_number(value: Any) -> Any:
    """JSON Schema counts 2.0 as an integer; strict validation alone would refuse it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Whole = BeforeValidator(_whole_number)
HeightCm = Annotated[int, Field(ge=100, le=250), Whole]
WeightKg = Annotated[float, Field(ge=25, le=350), AfterValidator(lambda kg: round_half_up(kg, 2))]
CycleLength = Annotated[int, Field(ge=CYCLE_MIN_DAYS, le=CYCLE_MAX_DAYS), Whole]
LutealLength = Annotated[int, Field(ge=7, le=20), Whole]
MensesLength = Annotated[int, Field(ge=1, le=PERIOD_MAX_DAYS), Whole]
NumberOfPeak = Annotated[int, Field(ge=0, le=10), Whole]


def _not_a_boolean(value: Any) -> Any:
    """`true` equals 1 to a Literal; as everywhere else, it is not a number."""
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


# 0 low, 1 medium, 2 high: an enum in the document, so generated clients offer just these.
EnergyLevel = Annotated[Literal[0, 1, 2], Whole, BeforeValidator(_not_a_boolean)]
DayOfCycle = Annotated[int, Field(ge=1, le=CYCLE_MAX_DAYS), Whole]
Notes = Annotated[
    str,
    Field(max_length=NOTES_MAX_CHARS),
    _pattern_refusing(NOTE_CONTROL_CHARACTERS),
    _refusing(NOTE_CONTROL_CHARACTERS, "Notes"),
]


class ProfileBody(RequestBody):
    height_cm: HeightCm
    weight_kg: WeightKg
    cycle_length: CycleLength = DEFAULT_CYCLE_LENGTH
    luteal_length: LutealLength = DEFAULT_LUTEAL_LENGTH
    menses_length: MensesLength = DEFAULT_MENSES_LENGTH
    unusual_bleeding: bool = False
    number_of_peak: NumberOfPeak = DEFAULT_NUMBER_OF_PEAK


PROFILE_FIELDS = tuple(ProfileBody.model_fields)


class ProfileUpdateBody(RequestBody):
    # Each field defaults to None but refuses null: a profile field is never empty.
    height_cm: HeightCm = None
    weight_kg: WeightKg = None
    cycle_length: CycleLength = None
    luteal_length: LutealLength = None
    menses_length: MensesLength = None
    unusual_bleeding: bool = None
    number_of_peak: NumberOfPeak = None


class PeriodBody(RequestBody):
    start_date: Date
    end_date: Date | None = None
    notes: Notes | None = None


class PeriodUpdateBody(RequestBody):
    start_date: Date = None  # refuses null; end_date and notes may be cleared
    end_date: Date | None = None
    notes: Notes | None = None


class MoodBody(RequestBody):
    date: Date = Field(None, description="Left out: her today, in her time zone.")
    energy_level: EnergyLevel
    notes: Notes | None = None
    day_of_cycle: DayOfCycle | None = None


class MoodUpdateBody(RequestBody):
    date: Date = None
    energy_level: EnergyLevel = None
    notes: Notes | None = None
    day_of_cycle: DayOfCycle | None = None


LhTest = Literal["positive", "negative"]
CervicalMucus = Literal["dry", "sticky", "creamy", "watery", "egg_white"]
BbtCelsius = Annotated[
    float,
    Field(ge=BBT_MIN_CELSIUS, le=BBT_MAX_CELSIUS, description="two decimals (rounded)"),
    AfterValidator(lambda celsius: round_half_up(celsius, 2)),
]


class ObservationBody(RequestBody):
    date: Date = Field(None, description="Left out: her today, in her time zone.")
    lh_test: LhTest | None = None
    bbt_celsius: BbtCelsius | None = None
    cervical_mucus: CervicalMucus | None = None
    notes: Notes | None = None


class ObservationUpdateBody(RequestBody):
    date: Date = None
    lh_test: LhTest | None = None
    bbt_celsius: BbtCelsius | None = None
    cervical_mucus: CervicalMucus | None = None
    notes: Notes | None = None


OBSERVATION_SIGNS = ("lh_test", "bbt_celsius", "cervical_mucus")


class ListQuery(BaseModel):
    """`limit`, `offset`, `from`, `to` of every list; other query parameters are ignored."""

    model_config = ConfigDict(populate_by_name=True)
    limit: int = Field(DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_LIST_OFFSET)
    from_date: Date | None = Field(None, alias="from")
    to_date: Date | None = Field(None, alias="to")


class PredictionQuery(BaseModel):
    date: Date | None = None


class ForecastQuery(BaseModel):
    days: int = Field(DEFAULT_FORECAST_DAYS, ge=1, le=MAX_FORECAST_DAYS)
    date: Date | None = Field(None, description="The first day. Left out: her today.")


# Response shapes. Handlers build plain dicts; these models describe them in the OpenAPI
# document, and the schemathesis run in the tests checks every response against them.
Phase = Literal["menstrual", "follicular", "ovulatory", "luteal", "late"]
EnergyLabel = Literal["low", "medium", "high"]
EnergyLevelOut = Literal[0, 1, 2]
ModelSource = Literal["personal", "population", "phase_prior"]
# What competes in training (model_candidates, partial_pooling, the majority baseline, the
# population's expectation), and the phase prior served when no model is shipped.
ModelType = Literal[
    "random_forest",
    "hist_gradient_boosting",
    "logistic_regression",
    "mlp",
    "partial_pooling",
    "majority",
    "population",
    "phase_prior",
]
ErrorCode = Literal[tuple(ERROR_CODES)]
OvulationEvidence = Literal["lh", "bbt", "mucus", "estimated"]
# Stored naive in UTC; answered as the contract writes them: `2026-11-24T08:30:00Z`.
Timestamp = Annotated[
    dt.datetime,
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
# Each a component of its own in the document (one type in a generated client, not one per
# field that uses it).
DOCUMENTED_ENUMS = {
    "EnergyLevel": EnergyLevelOut,
    "EnergyLabel": EnergyLabel,
    "Phase": Phase,
    "ModelSource": ModelSource,
    "ModelType": ModelType,
    "Role": Literal["user", "admin"],
    "ErrorCode": ErrorCode,
    "LhTest": LhTest,
    "CervicalMucus": CervicalMucus,
    "OvulationEvidence": OvulationEvidence,
}


class ErrorOut(BaseModel):
    detail: str = Field(description="What went wrong, for people")
    code: ErrorCode = Field(
        description="What went wrong, for programs:\n\n"
        + "\n".join(f"- `{code}` ({meaning})" for code, meaning in ERROR_CODES.items())
    )


class ValidationErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    detail: list[ValidationErrorItem]
    code: Literal["validation_error"]


class UserOut(BaseModel):
    id: int
    email: str
    name: str | None
    role: Literal["user", "admin"]
    time_zone: str = Field(description="IANA name: her dates and her today are in it")
    retention_days: int | None = Field(
        description="Her periods and moods older than this many days are deleted daily; "
        "null keeps everything"
    )
    created_at: Timestamp
    updated_at: Timestamp


class TokenPairOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"]
    expires_in: int = Field(description="seconds the access token lives")


class ProfileOut(BaseModel):
    height_cm: int
    weight_kg: float
    cycle_length: int
    luteal_length: int
    menses_length: int
    unusual_bleeding: bool
    number_of_peak: int
    created_at: Timestamp
    updated_at: Timestamp

    @computed_field
    @property
    def bmi(self) -> float:
        return bmi(self.height_cm, self.weight_kg)

    @computed_field
    @property
    def bmi_category(self) -> Literal["underweight", "normal", "overweight", "obese"]:
        return bmi_category(self.bmi)


class PeriodOut(BaseModel):
    id: int
    start_date: dt.date
    end_date: dt.date | None
    notes: str | None
    cycle_length: int | None = Field(description="days to the next recorded start")
    created_at: Timestamp

    @computed_field(description="end - start + 1; null while the end is not logged")
    @property
    def length_days(self) -> int | None:
        return None if self.end_date is None else (self.end_date - self.start_date).days + 1


class MoodOut(BaseModel):
    id: int
    date: dt.date
    day_of_cycle: int | None = Field(description="from her periods when they cover the date")
    phase: Phase | None
    energy_level: EnergyLevelOut
    notes: str | None
    created_at: Timestamp

    @computed_field
    @property
    def energy_label(self) -> EnergyLabel:
        return ENERGY_LABELS[self.energy_level]


class ObservationOut(BaseModel):
    id: int
    date: dt.date
    lh_test: LhTest | None
    bbt_celsius: float | None
    cervical_mucus: CervicalMucus | None
    notes: str | None
    created_at: Timestamp


class OvulationOut(BaseModel):
    date: dt.date
    evidence: OvulationEvidence = Field(
        description="lh: a positive LH test the day before; bbt: a sustained temperature "
        "shift; mucus: her peak mucus day; estimated: from her cycle length and luteal phase"
    )


class CycleOut(BaseModel):
    length_estimate: int
    last_period_start: dt.date | None
    next_period_start: dt.date | None
    next_period_range: tuple[dt.date, dt.date] | None
    days_until_next_period: int | None
    fertile_window: tuple[dt.date, dt.date] | None
    ovulation: OvulationOut | None = Field(
        description="detected from her observations in this cycle, else estimated"
    )


class EnergyProbabilitiesOut(BaseModel):
    low: float
    medium: float
    high: float


class EnergyOut(BaseModel):
    level: EnergyLevelOut
    label: EnergyLabel
    confidence: float
    probabilities: EnergyProbabilitiesOut


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read off the EnergyModel served
    source: ModelSource
    version: int | None
    type: ModelType = Field(validation_alias=AliasChoices("type", "model_type"))
    trained_at: Timestamp | None
    n_samples: int
    cv_accuracy: float | None
    baseline_accuracy: float | None
    brier_score: float | None


class PredictionOut(BaseModel):
    date: dt.date
    day_of_cycle: int | None
    phase: Phase | None
    cycle: CycleOut
    energy: EnergyOut
    model: ModelOut


class PredictionHistoryOut(BaseModel):
    date: dt.date
    day_of_cycle: int | None
    phase: Phase | None
    predicted_level: EnergyLevelOut
    confidence: float
    model_version: int | None
    source: ModelSource
    actual_level: EnergyLevelOut | None = Field(description="her mood of that date, once logged")
    created_at: Timestamp

    @computed_field(description="whether the prediction was right, once her mood is logged")
    @property
    def hit(self) -> bool | None:
        return None if self.actual_level is None else self.actual_level == self.predicted_level


class CandidateScoreOut(BaseModel):
    type: ModelType
    cv_accuracy: float
    brier_score: float | None = Field(None, description="null for models trained before it")


class RetrainStateOut(BaseModel):
    state: Literal["queued", "running"]
    detail: str


def not_shipped_reason(
    shipped: bool, cv_accuracy: float, baseline_accuracy: float, prior_accuracy: float | None
) -> str | None:
    """Why a trained model is not used, in words for her (None when it is)."""
    if shipped:
        return None
    if cv_accuracy > baseline_accuracy and prior_accuracy is not None:
        return (
            f"Not used yet: on later days it had not seen, it guessed your energy right "
            f"{cv_accuracy:.0%} of the time, no better than the estimate your predictions "
            f"use now ({prior_accuracy:.0%}). Your predictions keep using that until your "
            "own days do better; each day you log helps."
        )
    return (
        f"Not used yet: on days it had not seen, it guessed your energy right "
        f"{cv_accuracy:.0%} of the time, no better than always guessing your most common "
        f"level ({baseline_accuracy:.0%}). Your predictions keep using what works better "
        "until then; each day you log helps."
    )


def _json_list(value: Any) -> Any:
    """`candidates` is stored as JSON text."""
    return json.loads(value) if isinstance(value, str) else value


class ModelSummaryOut(BaseModel):
    version: int
    type: ModelType = Field(validation_alias=AliasChoices("type", "model_type"))
    shipped: bool = Field(
        description="false unless the best candidate beat both the majority baseline and "
        "the prior alone (the population's expectation, else the phase prior)"
    )
    trained_at: Timestamp
    n_samples: int
    cv_accuracy: float = Field(
        description="forward-in-time: trained on earlier days, scored on later ones"
    )
    baseline_accuracy: float = Field(
        description="always her most common level so far, scored alike"
    )
    brier_score: float | None = Field(
        description="calibration on the same days: mean Σ (p − outcome)², 0 best, 2 worst; "
        "null for models trained before it"
    )
    candidates: Annotated[list[CandidateScoreOut], BeforeValidator(_json_list)]
    sklearn_version: str

    @computed_field(description="why it was not shipped, in words for her")
    @property
    def reason(self) -> str | None:
        priors = [c.cv_accuracy for c in self.candidates if c.type in ("population", "phase_prior")]
        return not_shipped_reason(
            self.shipped, self.cv_accuracy, self.baseline_accuracy, priors[0] if priors else None
        )


class ExportOut(BaseModel):
    user: UserOut
    profile: ProfileOut | None
    periods: list[PeriodOut]
    moods: list[MoodOut]
    observations: list[ObservationOut]
    predictions: list[PredictionHistoryOut]
    models: list[ModelSummaryOut]


# The formats POST /users/me/import reads (the importers below define each).
ImportFormat = Literal[
    "planher", "drip", "clue", "clue_backup", "flo", "mensinator", "periodical", "apple_health"
]


class ImportQuery(BaseModel):
    format: ImportFormat | None = Field(
        None, description="The file's format. Left out: recognized from the content."
    )
    dry_run: bool = Field(False, description="Report what would be imported; store nothing.")


class ImportCountOut(BaseModel):
    count: int
    first_date: dt.date | None
    last_date: dt.date | None


class ImportSkippedOut(BaseModel):
    what: Literal["period", "mood", "observation", "profile", "day"]
    reason: str
    count: int
    dates: list[dt.date] = Field(description=f"the first {IMPORT_REPORT_DATES} of them")


class ImportProfileOut(BaseModel):
    found: dict[str, int | float | bool] = Field(
        description="the profile settings the file carries"
    )
    applied: bool = Field(description="whether they made her profile (see `skipped` if not)")


class ImportReportOut(BaseModel):
    format: ImportFormat
    dry_run: bool
    periods: ImportCountOut = Field(description="imported (with dry_run: would be)")
    moods: ImportCountOut = Field(description="imported (with dry_run: would be)")
    observations: ImportCountOut = Field(description="imported (with dry_run: would be)")
    profile: ImportProfileOut | None = Field(description="null: the file has no settings")
    skipped: list[ImportSkippedOut]
    unmapped: dict[str, int] = Field(
        description="what the file holds that PlanHer has no field for, and how often"
    )


class CalendarFeedOut(BaseModel):
    url: str = Field(
        description="Her secret iCalendar feed: anyone with it sees her periods and "
        "predictions, so share it only with her calendar app"
    )


class AuditEventOut(BaseModel):
    id: int
    at: Timestamp
    user_id: int | None
    action: str
    target: str | None
    ip: str | None
    ok: bool


class LivenessOut(BaseModel):
    status: str
    version: str


class ReadinessOut(BaseModel):
    status: str
    database: str
    version: str


def rule_errors(problems: list[tuple[str, str]]) -> RequestValidationError:
    """A 422 for broken rules that span fields, as (field, message) pairs."""
    return RequestValidationError(
        [{"loc": (field,), "msg": message, "type": "value_error"} for field, message in problems],
        "body",
    )


def parse_query(request: Request, schema: type[BaseModel]) -> BaseModel:
    try:
        return schema.model_validate(dict(request.query_params))
    except ValidationError as error:
        raise RequestValidationError(_errors_without_input(error), "query") from None


async def parse_body(request: Request, schema: type[BaseModel]) -> BaseModel:
    """The request's JSON body validated against `schema`: 400 if it is not JSON, 422 if it
    breaks a rule. An empty body counts as `{}`, so missing fields are named."""
    body = await request.body()
    try:
        return schema.model_validate_json(body or b"{}")
    except ValidationError as error:
        if any(item["type"] == "json_invalid" for item in error.errors()):
            raise APIError(400, "malformed_body", "Request body is not valid JSON") from None
        raise RequestValidationError(_errors_without_input(error), "body") from None


def _errors_without_input(error: ValidationError) -> list[dict[str, Any]]:
    return error.errors(include_url=False, include_context=False, include_input=False)


async def parse_form(request: Request, schema: type[BaseModel]) -> BaseModel:
    try:
        form = dict(parse_qsl((await request.body()).decode("utf-8")))
    except UnicodeDecodeError:
        raise APIError(400, "malformed_body", "Form body is not valid UTF-8") from None
    try:
        return schema.model_validate(form)
    except ValidationError as error:
        raise RequestValidationError(_errors_without_input(error), "body") from None


Handler = Callable[[Request], Awaitable[Response]]


@dataclasses.dataclass(frozen=True)
class Operation:
    """What an endpoint takes and answers: the handler's contract and its OpenAPI entry."""

    summary: str
    ok_status: int
    ok_schema: Any  # a response model, list[model], or None for an empty body
    auth: str | None  # "user", "admin", or None for a public endpoint
    body: type[BaseModel] | None
    form: type[BaseModel] | None  # also accepted as a form (the OAuth2 password flow)
    query: type[BaseModel] | None
    errors: Mapping[int, str]  # the statuses it answers besides the shared ones
    media_type: str  # of the success response
    accepted: Any  # the 202 body of work that goes on in the background, if it can
    upload: str | None  # a file as the body: the media types it may come as


@dataclasses.dataclass(frozen=True)
class Reply:
    """A handler's answer when its status or headers are not the endpoint's usual ones;
    otherwise a handler returns the body alone (rows, dicts or models)."""

    body: Any
    status_code: int
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


def endpoint(
    summary: str,
    *,
    ok: tuple[int, Any] = (200, None),
    auth: str | None = "user",
    body: type[BaseModel] | None = None,
    form: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    errors: Mapping[int, str] | None = None,
    media_type: str = "application/json",
    accepted: type[BaseModel] | None = None,
    upload: str | None = None,
) -> Callable:
    """Declares an endpoint. The wrapper checks the caller (401, or 403 for a non-admin on
    an admin route), validates the query and body against the given models and passes them
    to the handler as `query=` and `body=`; the OpenAPI document is built from the same."""
    operation = Operation(
        summary, ok[0], ok[1], auth, body, form, query, errors or {}, media_type, accepted, upload
    )
    # The models that document the answers serialize them too.
    serializers = {} if ok[1] in (None, str) else {ok[0]: TypeAdapter(ok[1])}
    if accepted is not None:
        serializers[202] = TypeAdapter(accepted)

    def decorate(handler: Callable[..., Awaitable[Any]]) -> Handler:
        @functools.wraps(handler)
        async def checked(request: Request) -> Response:
            if auth is not None:
                await authorize(request, auth)
            arguments = {}
            if query is not None:
                arguments["query"] = parse_query(request, query)
            if form is not None and request.headers.get("Content-Type", "").startswith(
                "application/x-www-form-urlencoded"
            ):
                arguments["body"] = await parse_form(request, form)
            elif body is not None:
                arguments["body"] = await parse_body(request, body)
            answer = await handler(request, **arguments)
            if isinstance(answer, Response):
                return answer
            if not isinstance(answer, Reply):
                answer = Reply(answer, ok[0])
            serializer = serializers.get(answer.status_code) or serializers[ok[0]]
            return Response(
                serializer.dump_json(serializer.validate_python(answer.body)),
                status_code=answer.status_code,
                headers=dict(answer.headers),
                media_type="application/json",
            )

        checked.operation = operation
        return checked

    return decorate


async def audit(
    request: Request,
    action: str,
    *,
    ok: bool,
    user_id: int | None = None,
    target: str | None = None,
) -> None:
    """Record a security event: who, what, from where, and whether it succeeded. Never a
    password, a token or a health value."""
    if user_id is None and request.user.is_authenticated:
        user_id = request.user.id
    await request.app.state.database.execute(
        audit_events.insert().values(
            at=utc_now(),
            user_id=user_id,
            action=action,
            target=target,
            ip=request.client.host if request.client else None,
            ok=ok,
        )
    )


async def authorize(request: Request, role: str) -> None:
    if not request.user.is_authenticated:
        raise APIError(401, request.user.code, request.user.reason, BEARER_CHALLENGE)
    retry_after = request.app.state.request_counter.retry_after(request.user.id, time.monotonic())
    if retry_after is not None:
        raise rate_limited(retry_after, "requests")
    if role == "admin" and request.user.account["role"] != "admin":
        await audit(request, "admin_denied", ok=False, target=request.url.path)
        raise APIError(403, "forbidden", "This needs an admin account")


# ── Cycle calculator (pure functions: no I/O) ───────────────────────────────────────────

PHASES = ("menstrual", "follicular", "ovulatory", "luteal", "late")


def cycle_lengths(period_starts: Iterable[dt.date]) -> list[int]:
    """The lengths of her cycles: gaps between consecutive starts that can be one cycle."""
    starts = sorted(period_starts)
    gaps = [(later - earlier).days for earlier, later in itertools.pairwise(starts)]
    return [gap for gap in gaps if CYCLE_MIN_DAYS <= gap <= CYCLE_MAX_DAYS]


def weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    pairs = sorted(zip(values, weights, strict=True))
    half, running = sum(weights) / 2, 0.0
    for value, weight in pairs:
        running += weight
        if running >= half:
            return value
    return pairs[-1][0]


def huber_mean(values: Sequence[float], weights: Sequence[float]) -> tuple[float, float]:
    """A weighted mean in which values more than HUBER_THRESHOLD_DAYS from the centre count
    less (in proportion), so one 45-day cycle does not drag a 28-day woman's estimate.
    Returns the mean and the total weight it rests on."""
    centre = weighted_median(values, weights)
    for _ in range(10):
        robust_weights = [
            weight * min(1.0, HUBER_THRESHOLD_DAYS / max(abs(value - centre), 1e-9))
            for value, weight in zip(values, weights, strict=True)
        ]
        centre = sum(v * w for v, w in zip(values, robust_weights, strict=True)) / sum(
            robust_weights
        )
    return centre, sum(robust_weights)


@dataclasses.dataclass(frozen=True)
class CycleLengthEstimate:
    days: float  # expected length of her next cycle
    spread: float  # its standard deviation, in days
    n_cycles: int  # how many of her own cycles it rests on

    @property
    def length(self) -> int:
        return round(self.days)

    @property
    def range_days(self) -> int:
        """Half the width of the predicted range around the next start (80% coverage)."""
        return max(1, round(RANGE_Z * self.spread))


def estimate_cycle_length(
    lengths: Sequence[int], prior_length: float, prior_spread: float = POPULATION_CYCLE_SD
) -> CycleLengthEstimate:
    """Her next cycle's length from her past cycles (oldest first); the same for her luteal
    phase, from its past lengths and their own prior.

    A robust (Huber), recency-weighted mean of her cycles, shrunk towards `prior_length`
    (her profile's cycle_length, or 28) as if that were one more cycle, so that one or two
    cycles do not decide alone. The spread is her robust standard deviation (scaled median
    absolute deviation), shrunk towards POPULATION_CYCLE_SD in the same way. On FedCycleData
    this beats the mean of her past cycles; tests/test_cycle_evaluation.py measures it.
    """
    n = len(lengths)
    if n == 0:
        return CycleLengthEstimate(float(prior_length), prior_spread, 0)
    recency = [0.5 ** ((n - 1 - index) / RECENCY_HALF_LIFE_CYCLES) for index in range(n)]
    centre, weight = huber_mean(lengths, recency)
    days = (PRIOR_WEIGHT_CYCLES * prior_length + weight * centre) / (PRIOR_WEIGHT_CYCLES + weight)
    median = statistics.median(lengths)
    mad_sd = 1.4826 * statistics.median(abs(length - median) for length in lengths)
    spread = math.sqrt(
        (SPREAD_PRIOR_WEIGHT_CYCLES * prior_spread**2 + (n - 1) * mad_sd**2)
        / (SPREAD_PRIOR_WEIGHT_CYCLES + n - 1)
    )
    return CycleLengthEstimate(days, spread, n)


@dataclasses.dataclass(frozen=True)
class CyclePrior:
    """What a woman's few cycles are shrunk towards when her profile does not say."""

    length: float
    spread: float
    n_women: int  # whose cycles it rests on; 0 for the textbook fallback


TEXTBOOK_CYCLE_PRIOR = CyclePrior(float(DEFAULT_CYCLE_LENGTH), POPULATION_CYCLE_SD, 0)


def population_cycle_prior(lengths_by_woman: Iterable[Sequence[int]]) -> CyclePrior:
    """The cycles of everyone, as a prior for a woman with few: a robust (Huber) mean of
    each woman's median cycle (one vote per woman, however long she has logged), among
    women with at least POPULATION_PRIOR_MIN_CYCLES cycles. The spread stays the textbook
    within-woman one. While fewer than POPULATION_PRIOR_MIN_WOMEN such women exist: 28."""
    typical = [
        float(statistics.median(lengths))
        for lengths in lengths_by_woman
        if len(lengths) >= POPULATION_PRIOR_MIN_CYCLES
    ]
    if len(typical) < POPULATION_PRIOR_MIN_WOMEN:
        return TEXTBOOK_CYCLE_PRIOR
    centre, _ = huber_mean(typical, [1.0] * len(typical))
    return CyclePrior(centre, POPULATION_CYCLE_SD, len(typical))


def phase_on_day(
    day_of_cycle: int,
    cycle_length: int,
    bleeding_days: int,
    luteal_length: int,
    late_after_day: int | None = None,
) -> str:
    """The phase on a day of a cycle. Ovulation is `luteal_length` days before the cycle
    ends; `late_after_day` is where an open cycle's predicted range ends."""
    if day_of_cycle <= bleeding_days:
        return "menstrual"
    if late_after_day is not None and day_of_cycle > late_after_day:
        return "late"
    ovulation_day = cycle_length - luteal_length
    if abs(day_of_cycle - ovulation_day) <= OVULATORY_HALF_WIDTH:
        return "ovulatory"
    return "follicular" if day_of_cycle < ovulation_day else "luteal"


@dataclasses.dataclass(frozen=True)
class FertilitySign:
    """One day's observation: what places ovulation."""

    date: dt.date
    lh_test: str | None = None
    bbt_celsius: float | None = None
    cervical_mucus: str | None = None


@dataclasses.dataclass(frozen=True)
class Ovulation:
    date: dt.date
    evidence: str  # lh | bbt | mucus | estimated


MUCUS_FERTILITY = {"dry": 0, "sticky": 1, "creamy": 2, "watery": 3, "egg_white": 4}
FERTILE_MUCUS_RANK = MUCUS_FERTILITY["watery"]


def ovulation_from_lh(signs: Sequence[FertilitySign]) -> dt.date | None:
    """The LH surge comes a day or so before ovulation: the day after her first positive."""
    positive = [sign.date for sign in signs if sign.lh_test == "positive"]
    return positive[0] + dt.timedelta(days=1) if positive else None


def ovulation_from_bbt(signs: Sequence[FertilitySign]) -> dt.date | None:
    """The classic temperature shift: three readings in a row above the six before them,
    the third at least BBT_SHIFT_CELSIUS above the highest of the six. Ovulation is the day
    before the first high reading."""
    readings = [(sign.date, sign.bbt_celsius) for sign in signs if sign.bbt_celsius is not None]
    low, high = BBT_SHIFT_LOW_READINGS, BBT_SHIFT_HIGH_READINGS
    for first in range(low, len(readings) - high + 1):
        cover = max(celsius for _, celsius in readings[first - low : first])
        shift = [celsius for _, celsius in readings[first : first + high]]
        if min(shift) > cover and shift[-1] >= cover + BBT_SHIFT_CELSIUS - 1e-9:
            return readings[first][0] - dt.timedelta(days=1)
    return None


def ovulation_from_mucus(signs: Sequence[FertilitySign]) -> dt.date | None:
    """Her peak day: the last day of her most fertile mucus (watery or egg white), once a
    later day has drier mucus. Ovulation is within a day of it."""
    days = [
        (sign.date, MUCUS_FERTILITY[sign.cervical_mucus]) for sign in signs if sign.cervical_mucus
    ]
    best = max((rank for _, rank in days), default=-1)
    if best < FERTILE_MUCUS_RANK:
        return None
    peaks = [index for index, (_, rank) in enumerate(days) if rank == best]
    first_peak_run_end = peaks[0]
    while first_peak_run_end + 1 < len(days) and days[first_peak_run_end + 1][1] == best:
        first_peak_run_end += 1
    drier_later = any(rank < best for _, rank in days[first_peak_run_end + 1 :])
    return days[first_peak_run_end][0] if drier_later else None


def detect_ovulation(signs: Sequence[FertilitySign]) -> Ovulation | None:
    """Ovulation in one cycle from its signs (oldest first): an LH test if she took one,
    else her temperature shift, else her mucus peak."""
    for evidence, detector in (
        ("lh", ovulation_from_lh),
        ("bbt", ovulation_from_bbt),
        ("mucus", ovulation_from_mucus),
    ):
        if (date := detector(signs)) is not None:
            return Ovulation(date, evidence)
    return None


@dataclasses.dataclass(frozen=True)
class OpenCycle:
    """Her latest cycle, not over yet: its expected length and range, its luteal phase, and
    the ovulation her observations show, if they do."""

    length: int
    range_days: int
    luteal_length: int
    ovulation: Ovulation | None


@dataclasses.dataclass(frozen=True)
class PeriodSpan:
    start: dt.date
    end: dt.date | None  # None while she has not logged it


def ovulations_by_cycle(
    starts: Sequence[dt.date], signs: Sequence[FertilitySign]
) -> dict[dt.date, Ovulation]:
    """The ovulation each cycle's signs show (by the cycle's start; starts and signs oldest
    first): a cycle runs from one start to the day before the next."""
    dates = [sign.date for sign in signs]
    found = {}
    for index, start in enumerate(starts):
        first = bisect.bisect_left(dates, start)
        last = bisect.bisect_left(dates, starts[index + 1]) if index + 1 < len(starts) else None
        if (ovulation := detect_ovulation(signs[first:last])) is not None:
            found[start] = ovulation
    return found


def luteal_lengths(starts: Sequence[dt.date], ovulations: Mapping[dt.date, Ovulation]) -> list[int]:
    """Her past luteal phases, oldest first: from each detected ovulation to the day before
    the next start, where that makes a luteal phase at all."""
    lengths = []
    for start, next_start in itertools.pairwise(starts):
        ovulation = ovulations.get(start)
        if ovulation is not None and CYCLE_MIN_DAYS <= (next_start - start).days <= CYCLE_MAX_DAYS:
            luteal = (next_start - ovulation.date).days - 1
            if LUTEAL_MIN_DAYS <= luteal <= LUTEAL_MAX_DAYS:
                lengths.append(luteal)
    return lengths


@dataclasses.dataclass(frozen=True)
class CycleDay:
    """Where a date falls in her cycle."""

    day_of_cycle: int
    phase: str
    cycle_length: int  # the cycle's real length once it is over, else the estimate
    start: dt.date | None  # the cycle's first day, recorded or projected; None if unknown

    @property
    def days_until_next_period(self) -> int:
        return self.cycle_length - self.day_of_cycle + 1


@dataclasses.dataclass(frozen=True)
class CycleCalendar:
    """A user's cycles as her periods and profile describe them now."""

    periods: tuple[PeriodSpan, ...]  # oldest first
    estimate: CycleLengthEstimate
    luteal_length: int  # her profile's (or the default): where ovulation is not detected
    menses_length: int
    profile: Mapping[str, Any] | None = None
    ovulations: Mapping[dt.date, Ovulation] = dataclasses.field(default_factory=dict)
    luteal_estimate: CycleLengthEstimate | None = None  # from her detected ovulations
    prior: CyclePrior = TEXTBOOK_CYCLE_PRIOR

    @classmethod
    def build(
        cls,
        periods: Iterable[PeriodSpan],
        profile: Mapping[str, Any] | None = None,
        signs: Iterable[FertilitySign] = (),
        prior: CyclePrior = TEXTBOOK_CYCLE_PRIOR,
    ):
        """Her calendar; her cycles are shrunk towards her profile's cycle_length, else
        towards `prior` (everyone's cycles)."""
        known = profile or {}
        ordered = tuple(sorted(periods, key=lambda period: period.start))
        starts = [period.start for period in ordered]
        luteal_length = known.get("luteal_length", DEFAULT_LUTEAL_LENGTH)
        ovulations = ovulations_by_cycle(starts, sorted(signs, key=lambda sign: sign.date))
        return cls(
            periods=ordered,
            estimate=estimate_cycle_length(
                cycle_lengths(starts), known.get("cycle_length", prior.length), prior.spread
            ),
            luteal_length=luteal_length,
            menses_length=known.get("menses_length", DEFAULT_MENSES_LENGTH),
            profile=profile,
            ovulations=ovulations,
            luteal_estimate=estimate_cycle_length(
                luteal_lengths(starts, ovulations), luteal_length, POPULATION_LUTEAL_SD
            ),
            prior=prior,
        )

    @functools.cached_property
    def open_cycle(self) -> OpenCycle:
        """Her latest cycle: of the estimated length, unless her observations show its
        ovulation, which puts the next start her luteal phase (and a day) after it."""
        estimated = OpenCycle(
            self.estimate.length, self.estimate.range_days, self.luteal_length, None
        )
        ovulation = self.ovulations.get(self.periods[-1].start) if self.periods else None
        if ovulation is None or self.luteal_estimate is None:
            return estimated
        luteal = self.luteal_estimate.length
        length = (ovulation.date - self.periods[-1].start).days + luteal + 1
        if not CYCLE_MIN_DAYS <= length <= CYCLE_MAX_DAYS:
            return estimated  # signs that no cycle can have: trust the estimate
        return OpenCycle(length, self.luteal_estimate.range_days, luteal, ovulation)

    def _index_on_or_before(self, date: dt.date) -> int | None:
        index = bisect.bisect_right([period.start for period in self.periods], date) - 1
        return index if index >= 0 else None

    def cycle_length_from(self, start: dt.date) -> int | None:
        """Days from the period starting on `start` to the next recorded start."""
        later = [period.start for period in self.periods if period.start > start]
        return (min(later) - start).days if later else None

    def effective_end(self, period: PeriodSpan) -> dt.date:
        """Its logged end, else menses_length days from its start."""
        return period.end or period.start + dt.timedelta(days=self.menses_length - 1)

    @property
    def late_after_day(self) -> int:
        return self.open_cycle.length + self.open_cycle.range_days

    def luteal_length_of(self, start: dt.date, length: int) -> int:
        """The luteal phase of the cycle from `start` lasting `length` days: what places
        its ovulation (day `length − luteal`), detected or from her profile."""
        ovulation = self.ovulations.get(start)
        return (
            self.luteal_length if ovulation is None else length - (ovulation.date - start).days - 1
        )

    def cycle_day(self, date: dt.date, today: dt.date | None = None) -> CycleDay | None:
        """Day of cycle and phase on `date`, or None when her periods do not cover it (no
        start before it, or more than CYCLE_MAX_DAYS since the last one).

        Past dates use the recorded periods. Dates after `today` (when given) are projected:
        cycles of the estimated length follow her latest period, unless she is already late
        today, in which case nobody can say when the next one comes and she stays late.
        """
        index = self._index_on_or_before(date)
        if index is None:
            return None
        period = self.periods[index]
        length = self.cycle_length_from(period.start)
        if length is not None and length <= CYCLE_MAX_DAYS:
            # A completed cycle: its real length places ovulation; it cannot be late.
            day = (date - period.start).days + 1
            bleeding_days = (self.effective_end(period) - period.start).days + 1
            luteal = self.luteal_length_of(period.start, length)
            return CycleDay(
                day, phase_on_day(day, length, bleeding_days, luteal), length, period.start
            )
        start, bleeding_days = period.start, (self.effective_end(period) - period.start).days + 1
        open_cycle, estimated = self.open_cycle, self.estimate.length
        if (
            today is not None
            and date > today
            and (today - start).days < self.late_after_day
            and (date - start).days >= open_cycle.length
        ):
            # Past her open cycle: projected cycles of the estimated length follow it.
            later_days = (date - start).days - open_cycle.length
            start += dt.timedelta(days=open_cycle.length + later_days // estimated * estimated)
            day = (date - start).days + 1
            phase = phase_on_day(day, estimated, self.menses_length, self.luteal_length)
            return CycleDay(day, phase, estimated, start)
        day = (date - start).days + 1
        if day > CYCLE_MAX_DAYS:
            return None
        phase = phase_on_day(
            day, open_cycle.length, bleeding_days, open_cycle.luteal_length, self.late_after_day
        )
        return CycleDay(day, phase, open_cycle.length, start)

    def phase_on_estimated_cycle_day(self, day_of_cycle: int) -> str:
        """The phase on a day of a cycle her periods do not place: one of the estimate."""
        return phase_on_day(
            day_of_cycle,
            self.estimate.length,
            self.menses_length,
            self.luteal_length,
            self.estimate.length + self.estimate.range_days,
        )

    def overlapping(self, candidate: PeriodSpan, ignore_start: dt.date | None = None):
        """The first recorded period that overlaps `candidate`, if any."""
        candidate_end = self.effective_end(candidate)
        for period in self.periods:
            if period.start == ignore_start:
                continue
            if period.start <= candidate_end and candidate.start <= self.effective_end(period):
                return period
        return None

    def outlook(self, date: dt.date, today: dt.date | None = None) -> dict[str, Any]:
        """The contract's `cycle` block, seen from `date` (projected past `today`)."""
        length = self.estimate.length
        cycle = self.cycle_day(date, today)
        if cycle is None:
            index = self._index_on_or_before(date)
            return {
                "length_estimate": length,
                "last_period_start": None if index is None else self.periods[index].start,
                "next_period_start": None,
                "next_period_range": None,
                "days_until_next_period": None,
                "fertile_window": None,
                "ovulation": None,
            }
        last_start = cycle.start
        next_start = last_start + dt.timedelta(days=cycle.cycle_length)
        open_cycle = self.open_cycle
        in_open_cycle = bool(self.periods) and last_start == self.periods[-1].start
        range_days = open_cycle.range_days if in_open_cycle else self.estimate.range_days
        detected = open_cycle.ovulation if in_open_cycle else self.ovulations.get(last_start)
        if detected is not None:
            ovulation = detected
        else:
            # Day d of the cycle is start + d − 1; ovulation is day `length − luteal_length`.
            luteal = self.luteal_length
            estimated = last_start + dt.timedelta(days=cycle.cycle_length - luteal - 1)
            ovulation = Ovulation(estimated, "estimated")
        return {
            "length_estimate": length,
            "last_period_start": last_start,
            "next_period_start": next_start,
            "next_period_range": [
                next_start - dt.timedelta(days=range_days),
                next_start + dt.timedelta(days=range_days),
            ],
            "days_until_next_period": (next_start - date).days,
            "fertile_window": [
                ovulation.date - dt.timedelta(days=FERTILE_DAYS_BEFORE_OVULATION),
                ovulation.date + dt.timedelta(days=FERTILE_DAYS_AFTER_OVULATION),
            ],
            "ovulation": {"date": ovulation.date, "evidence": ovulation.evidence},
        }


def period_problems(start: dt.date, end: dt.date | None, today: dt.date) -> list[tuple[str, str]]:
    """Rule breaks of one period on its own, as (field, message)."""
    latest_allowed = today
    problems = []
    if start > latest_allowed:
        problems.append(
            ("start_date", f"start_date may not be in the future (after {latest_allowed})")
        )
    if end is not None:
        if end > latest_allowed:
            problems.append(
                ("end_date", f"end_date may not be in the future (after {latest_allowed})")
            )
        if end < start:
            problems.append(("end_date", "end_date must be on or after start_date"))
        elif (end - start).days + 1 > PERIOD_MAX_DAYS:
            problems.append(("end_date", f"A period lasts at most {PERIOD_MAX_DAYS} days"))
    return problems


def profile_problems(profile: Mapping[str, Any]) -> list[tuple[str, str]]:
    luteal, menses, cycle = (
        profile["luteal_length"],
        profile["menses_length"],
        profile["cycle_length"],
    )
    if luteal + menses < cycle:
        return []
    return [
        (
            "cycle_length",
            f"luteal_length + menses_length must be less than cycle_length "
            f"({luteal} + {menses} is not less than {cycle})",
        )
    ]


# ── Importers: other trackers' files as her history (pure: a file in, a history out) ─────
#
# Each format, its source and its mapping rules are in ../shared/formats/README.md. Every
# importer gives an ImportedHistory; plan_import then decides, against what she already has,
# what is stored and what is skipped, and why.


class UnknownFormat(Exception):
    """The file is in none of the formats PlanHer reads."""


class MalformedFile(Exception):
    """The file is in a known format but breaks it; the message says where."""


class FileTooLarge(Exception):
    """The file unpacks (gzip, zip) to more than the import's bound."""


@dataclasses.dataclass(frozen=True)
class ImportedPeriod:
    start: dt.date
    end: dt.date | None
    notes: str | None = None


@dataclasses.dataclass(frozen=True)
class ImportedMood:
    date: dt.date
    energy_level: int
    notes: str | None = None
    day_of_cycle: int | None = None


@dataclasses.dataclass(frozen=True)
class ImportedObservation:
    date: dt.date
    lh_test: str | None = None
    bbt_celsius: float | None = None
    cervical_mucus: str | None = None
    notes: str | None = None


class SkipLog:
    """What an import leaves out, grouped by (what, reason), with the dates concerned."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], list[dt.date | None]] = {}

    def add(self, what: str, reason: str, date: dt.date | None = None) -> None:
        self.entries.setdefault((what, reason), []).append(date)

    def report(self) -> list[dict[str, Any]]:
        return [
            {
                "what": what,
                "reason": reason,
                "count": len(dates),
                "dates": sorted({date for date in dates if date is not None})[:IMPORT_REPORT_DATES],
            }
            for (what, reason), dates in self.entries.items()
        ]


@dataclasses.dataclass
class ImportedHistory:
    """What a file holds, in PlanHer's terms, before anything she has is looked at."""

    format: str
    periods: list[ImportedPeriod] = dataclasses.field(default_factory=list)
    moods: list[ImportedMood] = dataclasses.field(default_factory=list)
    observations: list[ImportedObservation] = dataclasses.field(default_factory=list)
    profile: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped: SkipLog = dataclasses.field(default_factory=SkipLog)
    unmapped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def count_unmapped(self, name: str, times: int = 1) -> None:
        """Count what the file holds that PlanHer has no field for. A file's own names
        are bounded in number and length: a hostile file cannot grow the report."""
        name = name[:IMPORT_UNMAPPED_NAME_CHARS]
        if name not in self.unmapped and len(self.unmapped) >= IMPORT_MAX_UNMAPPED_NAMES:
            name = "(other names)"
        self.unmapped[name] += times


@dataclasses.dataclass
class DaySignals:
    """One day of a tracker's log as PlanHer can use it: bleeding, energy, words."""

    low_energy: bool = False
    high_energy: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)
    lh_test: str | None = None
    bbt_celsius: float | None = None
    cervical_mucus: str | None = None


SPOTTING_SKIPPED = "spotting (it never starts or extends a period)"
NOTE_CONTROL_CHARACTER = re.compile(f"[{NOTE_CONTROL_CHARACTERS}]")


def calendar_date(text: Any, where: str) -> dt.date:
    """The calendar day a tracker wrote, as written: `2025-01-06`, `2025-01-06T00:00:00Z`,
    `2025-01-06 00:00:00 +0100` and `20250106` are all 6 January, whatever the zone."""
    if isinstance(text, str):
        digits = text[:8] if re.fullmatch(r"\d{8}", text) else text[:10].replace("-", "")
        if re.fullmatch(r"\d{8}", digits) and (len(text) == 8 or text[4:5] == "-"):
            try:
                date = dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
            except ValueError:
                pass
            else:
                if EARLIEST_DATE <= date <= LATEST_DATE:
                    return date
                raise MalformedFile(
                    f"{where}: dates must be between {EARLIEST_DATE} and {LATEST_DATE}"
                )
    raise MalformedFile(f"{where}: not a date (expected YYYY-MM-DD)")


def clean_note(text: str) -> str | None:
    """A note as PlanHer keeps it: no control characters, at most NOTES_MAX_CHARS."""
    text = NOTE_CONTROL_CHARACTER.sub(" ", text).strip()
    if len(text) > NOTES_MAX_CHARS:
        text = text[: NOTES_MAX_CHARS - 1] + "…"
    return text or None


def periods_from_bleeding_days(
    days: Iterable[dt.date], starts: Iterable[dt.date] = ()
) -> list[ImportedPeriod]:
    """Bleeding days grouped into periods: days at most BLEEDING_GAP_DAYS apart are one
    period, unless the tracker marked a day as a period's first (`starts`)."""
    marked_starts, periods = set(starts), []
    for day in sorted(set(days)):
        if periods and day not in marked_starts:
            last = periods[-1]
            if (day - last.end).days <= BLEEDING_GAP_DAYS + 1:
                periods[-1] = ImportedPeriod(last.start, day)
                continue
        periods.append(ImportedPeriod(day, day))
    return periods


def energy_from_signals(low: bool, high: bool) -> int | None:
    """A day's energy level from a tracker's low and high energy marks (both: medium)."""
    if low and high:
        return 1
    return 0 if low else 2 if high else None


def moods_from_days(days: Mapping[dt.date, DaySignals], skipped: SkipLog) -> list[ImportedMood]:
    """A mood for each day with an energy signal; words alone make no mood."""
    moods = []
    for date, day in sorted(days.items()):
        notes = clean_note("; ".join(dict.fromkeys(note for note in day.notes if note.strip())))
        level = energy_from_signals(day.low_energy, day.high_energy)
        if level is not None:
            moods.append(ImportedMood(date, level, notes))
        elif notes:
            skipped.add("day", "notes without an energy level (a mood needs one)", date)
    return moods


def observations_from_days(
    days: Mapping[dt.date, DaySignals], skipped: SkipLog
) -> list[ImportedObservation]:
    """An observation for each day with a fertility sign PlanHer records."""
    found = []
    for date, day in sorted(days.items()):
        celsius = day.bbt_celsius
        if celsius is not None and not BBT_MIN_CELSIUS <= celsius <= BBT_MAX_CELSIUS:
            skipped.add("observation", "a temperature outside 35–39 °C", date)
            celsius = None
        if day.lh_test or celsius is not None or day.cervical_mucus:
            found.append(
                ImportedObservation(
                    date,
                    day.lh_test,
                    None if celsius is None else round_half_up(celsius, 2),
                    day.cervical_mucus,
                )
            )
    return found


def _celsius(text: Any, where: str) -> float | None:
    """A temperature as trackers write it: `36.45`, or nothing."""
    if text in (None, ""):
        return None
    try:
        celsius = float(text)
    except (TypeError, ValueError):
        raise MalformedFile(f"{where}: not a temperature") from None
    if not math.isfinite(celsius):
        raise MalformedFile(f"{where}: not a temperature")
    return celsius


def _words(option: str) -> str:
    return option.replace("_", " ").strip()


def _expect(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        names = {dict: "an object", list: "an array", str: "a string"}
        raise MalformedFile(f"{where}: expected {names.get(kind, kind.__name__)}")
    return value


def _objects(value: Any, name: str | None) -> Iterator[tuple[str, dict]]:
    """The objects of the array `name` (None: the whole file), each with where it is."""
    for index, item in enumerate(_expect(value, list, name or "the file")):
        where = f"element {index}" if name is None else f"{name}[{index}]"
        yield where, _expect(item, dict, where)


# — PlanHer's own export —


def read_planher_export(data: Any) -> ImportedHistory:
    history = ImportedHistory("planher")
    _expect(data, dict, "the export")
    if data.get("profile") is not None:
        try:
            history.profile = ProfileBody.model_validate(
                {name: data["profile"].get(name) for name in PROFILE_FIELDS}, strict=False
            ).model_dump()
        except (ValidationError, AttributeError):
            raise MalformedFile("profile: not a PlanHer profile") from None
    for where, period in _objects(data.get("periods"), "periods"):
        end = period.get("end_date")
        notes = period.get("notes")
        if notes is not None and not isinstance(notes, str):
            raise MalformedFile(f"{where}.notes: expected a string")
        history.periods.append(
            ImportedPeriod(
                calendar_date(period.get("start_date"), f"{where}.start_date"),
                None if end is None else calendar_date(end, f"{where}.end_date"),
                None if notes is None else clean_note(notes),
            )
        )
    for where, mood in _objects(data.get("moods"), "moods"):
        level, day, notes = mood.get("energy_level"), mood.get("day_of_cycle"), mood.get("notes")
        if level not in (0, 1, 2) or isinstance(level, bool):
            raise MalformedFile(f"{where}.energy_level: expected 0, 1 or 2")
        if day is not None and (isinstance(day, bool) or day not in range(1, CYCLE_MAX_DAYS + 1)):
            raise MalformedFile(f"{where}.day_of_cycle: expected 1 to {CYCLE_MAX_DAYS}")
        if notes is not None and not isinstance(notes, str):
            raise MalformedFile(f"{where}.notes: expected a string")
        history.moods.append(
            ImportedMood(
                calendar_date(mood.get("date"), f"{where}.date"),
                level,
                None if notes is None else clean_note(notes),
                day,
            )
        )
    for where, sign in _objects(data.get("observations", []), "observations"):
        try:
            read = ObservationBody.model_validate(
                {name: sign.get(name) for name in ("date", *OBSERVATION_SIGNS, "notes")},
                strict=False,
            )
        except ValidationError as error:
            field = ".".join(map(str, error.errors()[0]["loc"]))
            raise MalformedFile(f"{where}.{field}: {error.errors()[0]['msg']}") from None
        if read.date is None or all(getattr(read, name) is None for name in OBSERVATION_SIGNS):
            raise MalformedFile(f"{where}: an observation has a date and at least one sign")
        history.observations.append(ImportedObservation(**read.model_dump()))
    for key in ("user", "predictions", "models"):
        if data.get(key):
            history.count_unmapped(key, len(data[key]) if isinstance(data[key], list) else 1)
    return history


# — drip —

DRIP_LOW_ENERGY, DRIP_HIGH_ENERGY = "mood.fatigue", "mood.energetic"
DRIP_MOOD_WORDS = ("happy", "sad", "stressed", "balanced", "fine", "anxious", "angry", "other")
# drip's mucus value (from feeling and texture, as the sympto-thermal method scores it):
# 0 dry, 1 nothing felt, 2 moist, 3 stretchy, 4 the most fertile.
DRIP_MUCUS = {"0": "dry", "1": "sticky", "2": "creamy", "3": "watery", "4": "egg_white"}
DRIP_USED_COLUMNS = frozenset(
    {"date", "bleeding.value", "bleeding.exclude", "note.value", "mood.note"}
    | {"temperature.value", "temperature.exclude", "mucus.value", "mucus.exclude"}
    | {DRIP_LOW_ENERGY, DRIP_HIGH_ENERGY}
    | {f"mood.{word}" for word in DRIP_MOOD_WORDS}
)


def read_drip_csv(text: Iterable[str]) -> ImportedHistory:
    history = ImportedHistory("drip")
    reader = csv.DictReader(text)
    if reader.fieldnames is None or not {"date", "bleeding.value"} <= set(reader.fieldnames):
        raise MalformedFile("line 1: a drip export's header names `date` and `bleeding.value`")
    bleeding: list[dt.date] = []
    days: dict[dt.date, DaySignals] = collections.defaultdict(DaySignals)
    for row in reader:
        where = f"line {reader.line_num}"
        if None in row:
            raise MalformedFile(f"{where}: more cells than the header has columns")

        def flag(column: str, row: dict = row, where: str = where) -> bool:
            value = (row.get(column) or "").strip()
            if value not in ("", "true", "false"):
                raise MalformedFile(f"{where}: {column} must be true or false")
            return value == "true"

        date = calendar_date(row["date"], f"{where}, date")
        value = (row.get("bleeding.value") or "").strip()
        if value not in ("", "0", "1", "2", "3"):
            raise MalformedFile(f"{where}: bleeding.value must be 0, 1, 2 or 3")
        if value == "0":
            history.skipped.add("day", SPOTTING_SKIPPED, date)
        elif value and flag("bleeding.exclude"):
            history.skipped.add("day", "bleeding she marked as not her period", date)
        elif value:
            bleeding.append(date)
        day = days[date]
        if not flag("temperature.exclude"):
            day.bbt_celsius = _celsius(row.get("temperature.value"), f"{where}, temperature.value")
        mucus = (row.get("mucus.value") or "").strip()
        if mucus and mucus not in DRIP_MUCUS:
            raise MalformedFile(f"{where}: mucus.value must be 0 to 4")
        if mucus and not flag("mucus.exclude"):
            day.cervical_mucus = DRIP_MUCUS[mucus]
        day.low_energy, day.high_energy = flag(DRIP_LOW_ENERGY), flag(DRIP_HIGH_ENERGY)
        day.notes += [row.get("note.value") or "", row.get("mood.note") or ""]
        day.notes += [word for word in DRIP_MOOD_WORDS if flag(f"mood.{word}")]
        for column, cell in row.items():
            if column not in DRIP_USED_COLUMNS and cell not in (None, "", "false"):
                history.count_unmapped(column)
    history.periods = periods_from_bleeding_days(bleeding)
    history.moods = moods_from_days(days, history.skipped)
    history.observations = observations_from_days(days, history.skipped)
    return history


# — Clue —

CLUE_BLEEDING = frozenset({"light", "medium", "heavy", "very_heavy"})
CLUE_LOW_ENERGY = frozenset({"tired", "exhausted"})
CLUE_HIGH_ENERGY = frozenset({"energetic", "fully_energized"})
CLUE_NOTE_TYPES = frozenset({"feelings", "mind"})
CLUE_LH_TESTS = {"ovulation_positive": "positive", "ovulation_negative": "negative"}


def _options(value: Any, where: str) -> list[str]:
    entries = value if isinstance(value, list) else [value]
    options = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("option"), str):
            raise MalformedFile(f'{where}.value: expected {{"option": …}} entries')
        options.append(entry["option"])
    return options


def read_clue_measurements(data: Any) -> ImportedHistory:
    history = ImportedHistory("clue")
    bleeding: list[dt.date] = []
    days: dict[dt.date, DaySignals] = collections.defaultdict(DaySignals)
    for where, entry in _objects(data, None):
        kind = entry.get("type")
        if not isinstance(kind, str):
            raise MalformedFile(f"{where}: no `type`")
        date = calendar_date(entry.get("date"), f"{where}.date")
        if kind == "period":
            option = _options(entry.get("value"), where)[0]
            if option in CLUE_BLEEDING:
                bleeding.append(date)
            else:
                history.count_unmapped(f"period.{option}")
        elif kind == "spotting":
            history.skipped.add("day", SPOTTING_SKIPPED, date)
        elif kind == "energy":
            for option in _options(entry.get("value"), where):
                days[date].low_energy |= option in CLUE_LOW_ENERGY
                days[date].high_energy |= option in CLUE_HIGH_ENERGY
                if option not in CLUE_LOW_ENERGY | CLUE_HIGH_ENERGY:
                    history.count_unmapped(f"energy.{option}")
        elif kind == "tests":
            for option in _options(entry.get("value"), where):
                if option in CLUE_LH_TESTS:
                    days[date].lh_test = CLUE_LH_TESTS[option]
                else:
                    history.count_unmapped(f"tests.{option}")
        elif kind in CLUE_NOTE_TYPES:
            days[date].notes += [_words(option) for option in _options(entry.get("value"), where)]
        else:
            history.count_unmapped(kind)
    history.periods = periods_from_bleeding_days(bleeding)
    history.moods = moods_from_days(days, history.skipped)
    history.observations = observations_from_days(days, history.skipped)
    return history


CLUE_BACKUP_BLEEDING = frozenset({"light", "medium", "heavy"})
CLUE_BACKUP_SETTINGS = {"cycleLength": "cycle_length", "periodLength": "menses_length"}


def read_clue_backup(data: Any) -> ImportedHistory:
    history = ImportedHistory("clue_backup")
    _expect(data, dict, "the backup")
    bleeding = []
    for where, day in _objects(data.get("data"), "data"):
        date = calendar_date(day.get("day"), f"{where}.day")
        if day.get("marks_excluded_cycle") is True:
            history.skipped.add("day", "a day of a cycle she excluded", date)
            continue
        flow = day.get("period")
        if flow in CLUE_BACKUP_BLEEDING:
            bleeding.append(date)
        elif flow == "spotting":
            history.skipped.add("day", SPOTTING_SKIPPED, date)
        elif flow is not None:
            raise MalformedFile(f"{where}.period: expected spotting, light, medium or heavy")
        for key in day.keys() - {"day", "period", "marks_excluded_cycle"}:
            history.count_unmapped(key)
    history.periods = periods_from_bleeding_days(bleeding)
    try:
        averages = data["settings"]["user_defaults"][0]["defaults"]["user_defined_averages"]
    except (KeyError, IndexError, TypeError):
        averages = {}
    for name, value in averages.items():
        if name in CLUE_BACKUP_SETTINGS and isinstance(value, int | float):
            history.profile[CLUE_BACKUP_SETTINGS[name]] = round(value)
        else:
            history.count_unmapped(f"settings.{name}")
    return history


# — Flo —


def read_flo(data: Any) -> ImportedHistory:
    history = ImportedHistory("flo")
    _expect(data, dict, "the export")
    operational = _expect(data.get("operationalData"), dict, "operationalData")
    for where, cycle in _objects(operational.get("cycles", []), "cycles"):
        start = calendar_date(cycle.get("period_start_date"), f"{where}.period_start_date")
        if cycle.get("pregnant") is True:
            history.skipped.add("period", "a pregnancy, not a period", start)
            continue
        end = cycle.get("period_end_date")
        history.periods.append(
            ImportedPeriod(
                start, None if end is None else calendar_date(end, f"{where}.period_end_date")
            )
        )
    days: dict[dt.date, DaySignals] = collections.defaultdict(DaySignals)
    events = operational.get("point_events_manual_v2", [])
    for where, event in _objects(events, "point_events_manual_v2"):
        category, subcategory = event.get("category"), event.get("subcategory")
        date_key = "local_date" if "local_date" in event else "date"
        date = calendar_date(event.get(date_key), f"{where}.{date_key}")
        if (category, subcategory) == ("Mood", "Energetic"):
            days[date].high_energy = True
        elif (category, subcategory) == ("Symptom", "Fatigue"):
            days[date].low_energy = True
        elif category == "Mood" and isinstance(subcategory, str):
            days[date].notes.append(subcategory)
        elif category == "OvulationTest" and subcategory in ("Positive", "Negative"):
            days[date].lh_test = subcategory.lower()
        else:
            history.count_unmapped(f"{category}/{subcategory}")
    for key in data.keys() - {"operationalData"}:
        history.count_unmapped(key)
    history.moods = moods_from_days(days, history.skipped)
    history.observations = observations_from_days(days, history.skipped)
    return history


# — Mensinator —


def read_mensinator(data: Any) -> ImportedHistory:
    history = ImportedHistory("mensinator")
    _expect(data, dict, "the export")
    bleeding = []
    for where, row in _objects(data.get("periods"), "periods"):
        bleeding.append(calendar_date(row.get("date"), f"{where}.date"))
    history.periods = periods_from_bleeding_days(bleeding)
    symptoms = {
        row.get("id"): row.get("symptom_name")
        for row in data.get("symptoms", [])
        if isinstance(row, dict)
    }
    for row in data.get("symptom_date", []):
        name = symptoms.get(row.get("symptom_id")) if isinstance(row, dict) else None
        if name not in ("Heavy_Flow", "Medium_Flow", "Light_Flow"):  # flow: the periods say it
            history.count_unmapped(f"symptom {name}")
    for key in ("ovulations", "app_settings"):
        history.count_unmapped(key, len(data.get(key) or []))
    return history


# — Periodical —

PERIODICAL_VERSION = 6
PERIODICAL_OPTIONS = {"period_length": "menses_length", "luteal_length": "luteal_length"}
PERIODICAL_LOW_ENERGY, PERIODICAL_HIGH_ENERGY, PERIODICAL_SPOTTING = "20", "21", "19"
PERIODICAL_MOOD_WORDS = {"22": "sad", "14": "grumpiness", "23": "edgy"}


def read_periodical(data: Any) -> ImportedHistory:
    history = ImportedHistory("periodical")
    _expect(data, list, "the backup")
    if not data or not isinstance(data[0], dict) or data[0].get("version") != PERIODICAL_VERSION:
        raise MalformedFile(
            f"element 0: a Periodical backup starts with version {PERIODICAL_VERSION}"
        )
    tables: dict[str, list] = {}
    for index, table in enumerate(data[1:], start=1):
        _expect(table, dict, f"element {index}")
        for name, rows in table.items():
            tables[name] = _expect(rows, list, f"element {index}.{name}")
    bleeding, starts = [], []
    days: dict[dt.date, DaySignals] = collections.defaultdict(DaySignals)
    for where, row in _objects(tables.get("data", []), "data"):
        date = calendar_date(row.get("eventdate"), f"{where}.eventdate")
        kind = row.get("eventtype")
        if kind not in ("0", "1", "2"):
            raise MalformedFile(f"{where}.eventtype: expected 0, 1 or 2")
        days[date].bbt_celsius = _celsius(row.get("eventtemp"), f"{where}.eventtemp")
        if kind != "0":
            bleeding.append(date)
            if kind == "1":
                starts.append(date)
    history.periods = periods_from_bleeding_days(bleeding, starts)
    for where, row in _objects(tables.get("notes", []), "notes"):
        days[calendar_date(row.get("eventdate"), f"{where}.eventdate")].notes.append(
            str(row.get("content") or "")
        )
    for where, row in _objects(tables.get("symptoms", []), "symptoms"):
        date, code = calendar_date(row.get("eventdate"), f"{where}.eventdate"), row.get("symptom")
        if code == PERIODICAL_LOW_ENERGY:
            days[date].low_energy = True
        elif code == PERIODICAL_HIGH_ENERGY:
            days[date].high_energy = True
        elif code == PERIODICAL_SPOTTING:
            history.skipped.add("day", SPOTTING_SKIPPED, date)
        elif code in PERIODICAL_MOOD_WORDS:
            days[date].notes.append(PERIODICAL_MOOD_WORDS[code])
        else:
            history.count_unmapped(f"symptom {code}")
    for _, row in _objects(tables.get("options", []), "options"):
        name, value = row.get("name"), row.get("value")
        if name in PERIODICAL_OPTIONS and isinstance(value, str) and value.isdigit():
            history.profile[PERIODICAL_OPTIONS[name]] = int(value)
        else:
            history.count_unmapped(f"option {name}")
    history.moods = moods_from_days(days, history.skipped)
    history.observations = observations_from_days(days, history.skipped)
    return history


# — Apple Health —

APPLE_BLEEDING_TYPE = "HKCategoryTypeIdentifierMenstrualFlow"
APPLE_SPOTTING_TYPE = "HKCategoryTypeIdentifierIntermenstrualBleeding"
APPLE_FLOW_PREFIXES = ("HKCategoryValueMenstrualFlow", "HKCategoryValueVaginalBleeding")
APPLE_BLEEDING_FLOWS = frozenset({"Light", "Medium", "Heavy", "Unspecified"})
APPLE_CYCLE_START_KEYS = frozenset({"HKMenstrualCycleStart", "HKMetadataKeyMenstrualCycleStart"})


class AppleHealthReader(xml.sax.handler.ContentHandler):
    """export.xml read as a stream of SAX events: memory holds the bleeding days, never the
    document (a real export holds every health record of the phone, often gigabytes)."""

    def __init__(self, history: ImportedHistory) -> None:
        super().__init__()
        self.history = history
        self.bleeding: set[dt.date] = set()
        self.starts: set[dt.date] = set()
        self.record: dict[str, Any] | None = None
        self.seen_root = False

    def where(self) -> str:
        return f"line {self._locator.getLineNumber()}" if self._locator else "the document"

    def startElement(self, name: str, attrs: Any) -> None:  # noqa: N802 (SAX's names)
        if not self.seen_root:
            if name != "HealthData":
                raise MalformedFile(f"{self.where()}: an Apple Health export's root is HealthData")
            self.seen_root = True
        elif name == "Record":
            kind = attrs.get("type")
            if kind in (APPLE_BLEEDING_TYPE, APPLE_SPOTTING_TYPE):
                self.record = {"type": kind, "cycle_start": False, **dict(attrs)}
            else:
                self.history.count_unmapped(str(kind))
        elif name == "MetadataEntry" and self.record is not None:
            if attrs.get("key") in APPLE_CYCLE_START_KEYS and attrs.get("value") == "1":
                self.record["cycle_start"] = True

    def endElement(self, name: str) -> None:  # noqa: N802 (SAX's names)
        if name != "Record" or self.record is None:
            return
        record, self.record = self.record, None
        where = self.where()
        first = calendar_date(record.get("startDate"), f"{where}, startDate")
        end_text = record.get("endDate") or record.get("startDate")
        last = calendar_date(end_text, f"{where}, endDate")
        if last > first and end_text[11:19] == "00:00:00":
            last -= dt.timedelta(days=1)  # ends at the midnight that starts the next day
        if (last - first).days >= PERIOD_MAX_DAYS or last < first:
            raise MalformedFile(f"{where}: a bleeding record from {first} to {last}")
        days = [first + dt.timedelta(days=offset) for offset in range((last - first).days + 1)]
        value = record.get("value") or ""
        flow = next((value[len(p) :] for p in APPLE_FLOW_PREFIXES if value.startswith(p)), None)
        if record["type"] == APPLE_SPOTTING_TYPE:
            for day in days:
                self.history.skipped.add("day", SPOTTING_SKIPPED, day)
        elif flow in APPLE_BLEEDING_FLOWS:
            self.bleeding.update(days)
            if record["cycle_start"]:
                self.starts.add(first)
        elif flow != "None":
            raise MalformedFile(f"{where}: unknown menstrual flow value")


def read_apple_health_xml(stream: typing.BinaryIO) -> ImportedHistory:
    history = ImportedHistory("apple_health")
    reader = AppleHealthReader(history)
    parser = defusedxml.sax.make_parser()  # no entities, no external references
    parser.setFeature(xml.sax.handler.feature_external_ges, False)
    parser.setContentHandler(reader)
    try:
        parser.parse(stream)
    except xml.sax.SAXParseException as error:
        raise MalformedFile(f"line {error.getLineNumber()}: not well-formed XML") from None
    except defusedxml.DefusedXmlException:
        raise MalformedFile(
            "the XML declares entities or external references, which PlanHer never expands"
        ) from None
    if not reader.seen_root:
        raise MalformedFile("the document is empty")
    history.periods = periods_from_bleeding_days(reader.bleeding, reader.starts)
    return history


# — reading a file: containers, detection —


class BoundedReader(io.RawIOBase):
    """A stream that refuses to yield more than `limit` bytes (FileTooLarge): what bounds a
    decompressed member, whatever its header claims."""

    def __init__(self, stream: typing.BinaryIO, limit: int) -> None:
        self.stream, self.remaining = stream, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self.stream.read(len(buffer))
        self.remaining -= len(chunk)
        if self.remaining < 0:
            raise FileTooLarge()
        buffer[: len(chunk)] = chunk
        return len(chunk)


GZIP_MAGIC, ZIP_MAGIC = b"\x1f\x8b", b"PK\x03\x04"
APPLE_COMPANION_XML = "export_cda.xml"  # Apple's clinical document, beside export.xml

JSON_READERS: dict[str, Callable[[Any], ImportedHistory]] = {
    "planher": read_planher_export,
    "clue": read_clue_measurements,
    "clue_backup": read_clue_backup,
    "flo": read_flo,
    "mensinator": read_mensinator,
    "periodical": read_periodical,
}
assert set(JSON_READERS) | {"drip", "apple_health"} == set(typing.get_args(ImportFormat))


def json_format(data: Any) -> str | None:
    """Which tracker wrote this JSON, by its shape."""
    if isinstance(data, dict):
        if {"user", "periods", "moods"} <= data.keys():
            return "planher"
        if "operationalData" in data:
            return "flo"
        if "periods" in data and data.keys() & {"symptom_date", "symptoms", "app_settings"}:
            return "mensinator"
        if isinstance(data.get("data"), list) and data.keys() & {"settings", "environment"}:
            return "clue_backup"
    if isinstance(data, list) and data and isinstance(data[0], dict):
        if "version" in data[0]:
            return "periodical"
        if {"type", "date"} <= data[0].keys():
            return "clue"
    return None


def _load_json(stream: typing.BinaryIO) -> Any:
    text = BoundedReader(stream, IMPORT_MAX_JSON_BYTES).read()
    try:
        return json.loads(text.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise MalformedFile("the file is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise MalformedFile(
            f"line {error.lineno}, column {error.colno}: not valid JSON ({error.msg})"
        ) from None


def _export_xml_of(archive: zipfile.ZipFile, max_unpacked: int) -> zipfile.ZipInfo:
    members = [
        member
        for member in archive.infolist()
        if member.filename.lower().endswith(".xml")
        and Path(member.filename).name != APPLE_COMPANION_XML
    ]
    if len(members) != 1:
        raise MalformedFile(
            f"the zip holds {len(members)} XML documents; Apple Health's export.zip holds one "
            "(apple_health_export/export.xml)"
        )
    member = members[0]
    if member.file_size > max_unpacked or member.file_size > IMPORT_MAX_COMPRESSION_RATIO * max(
        member.compress_size, 1
    ):
        raise FileTooLarge()
    return member


def read_import(
    stream: typing.BinaryIO, format_name: str | None, max_unpacked: int
) -> ImportedHistory:
    """Her history from a file, its format named or recognized from its content. Blocking
    (it parses): run it in a worker thread."""
    head = stream.read(4096)
    stream.seek(0)
    if not head:
        raise MalformedFile("the file is empty")
    if head.startswith(ZIP_MAGIC):
        if format_name not in (None, "apple_health"):
            raise MalformedFile(f"a zip archive is not a {format_name} export")
        try:
            with zipfile.ZipFile(stream) as archive:
                member = _export_xml_of(archive, max_unpacked)
                with archive.open(member) as xml_stream:
                    return read_apple_health_xml(BoundedReader(xml_stream, max_unpacked))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError):
            raise MalformedFile("the zip archive is damaged or uses an unknown method") from None
    if head.startswith(GZIP_MAGIC):
        with gzip.GzipFile(fileobj=stream, mode="rb") as unpacked:
            try:
                return read_import(
                    io.BytesIO(BoundedReader(unpacked, IMPORT_MAX_JSON_BYTES).read()),
                    format_name,
                    max_unpacked,
                )
            except (OSError, EOFError, zlib.error):
                raise MalformedFile("the gzip file is damaged") from None
    text_head = head.decode("utf-8-sig", errors="replace").lstrip()
    detected = None
    if text_head.startswith("<"):
        detected = "apple_health"
    elif text_head[:1] in ("{", "["):
        detected = "json"
    elif {"date", "bleeding.value"} <= set(text_head.splitlines()[0].split(",")):
        detected = "drip"
    if format_name == "apple_health" or (format_name is None and detected == "apple_health"):
        return read_apple_health_xml(BoundedReader(stream, max_unpacked))
    if format_name == "drip" or (format_name is None and detected == "drip"):
        try:
            with io.TextIOWrapper(stream, encoding="utf-8-sig", newline="") as text:
                return read_drip_csv(text)
        except UnicodeDecodeError:
            raise MalformedFile("the file is not UTF-8 text") from None
        except csv.Error as error:
            raise MalformedFile(f"not a valid CSV file ({error})") from None
    if format_name is None and detected != "json":
        raise UnknownFormat()
    data = _load_json(stream)
    format_name = format_name or json_format(data)
    if format_name is None:
        raise UnknownFormat()
    try:
        return JSON_READERS[format_name](data)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, RecursionError):
        raise MalformedFile(f"it is not laid out as a {format_name} export") from None


def dated_kept(
    what: str,
    items: Iterable[Any],
    stored_dates: set[dt.date],
    today: dt.date,
    keep_from: dt.date | None,
    skipped: SkipLog,
) -> list[Any]:
    """Of a file's one-a-day items (moods, observations), those to store: none in the
    future, none her retention would delete, none on a date she has logged, one a date."""
    kept, dates = [], set(stored_dates)
    for item in sorted(items, key=lambda item: item.date):
        if item.date > today:
            skipped.add(what, "in the future", item.date)
        elif keep_from is not None and item.date < keep_from:
            skipped.add(what, "older than her retention_days keep", item.date)
        elif item.date in stored_dates:
            skipped.add(what, f"she already logged that day's {what}", item.date)
        elif item.date in dates:
            skipped.add(what, f"a second {what} for that day in the file", item.date)
        else:
            kept.append(item)
            dates.add(item.date)
    return kept


@dataclasses.dataclass
class ImportPlan:
    """What an import stores, given what she already has."""

    periods: list[ImportedPeriod]
    moods: list[ImportedMood]
    observations: list[ImportedObservation]
    profile: dict[str, Any] | None  # to create, when she has none and the file has one whole
    skipped: SkipLog


def plan_import(
    history: ImportedHistory,
    stored: CycleCalendar,
    stored_mood_dates: set[dt.date],
    stored_observation_dates: set[dt.date],
    has_profile: bool,
    today: dt.date,
    keep_from: dt.date | None,
) -> ImportPlan:
    """Her file against her history: what she already has wins, the future and what her
    retention would delete are left out, and every period kept obeys the periods' rules."""
    skipped = history.skipped
    kept: list[ImportedPeriod] = []
    spans = list(stored.periods)
    for period in sorted(history.periods, key=lambda period: period.start):
        end = period.end
        if end is not None and period.start <= today < end:
            end = None  # under way: she ends it when it ends
        candidate = PeriodSpan(period.start, end)
        calendar = dataclasses.replace(stored, periods=tuple(spans))
        if period.start > today:
            skipped.add("period", "starts in the future", period.start)
        elif end is not None and (end - period.start).days + 1 > PERIOD_MAX_DAYS:
            skipped.add("period", f"lasts more than {PERIOD_MAX_DAYS} days", period.start)
        elif end is not None and end < period.start:
            skipped.add("period", "ends before it starts", period.start)
        elif keep_from is not None and calendar.effective_end(candidate) < keep_from:
            skipped.add("period", "older than her retention_days keep", period.start)
        elif (overlap := calendar.overlapping(candidate)) is not None:
            reason = (
                "overlaps a period she already logged"
                if overlap in stored.periods
                else "overlaps another period in the file"
            )
            skipped.add("period", reason, period.start)
        else:
            kept.append(dataclasses.replace(period, end=end))
            spans.append(candidate)
    moods = dated_kept("mood", history.moods, stored_mood_dates, today, keep_from, skipped)
    kept_observations = dated_kept(
        "observation", history.observations, stored_observation_dates, today, keep_from, skipped
    )
    profile = None
    if history.profile:
        if has_profile:
            skipped.add("profile", "she already has a profile, and hers wins")
        elif not {"height_cm", "weight_kg"} <= history.profile.keys():
            skipped.add(
                "profile",
                "a profile needs height_cm and weight_kg, which the file does not carry: "
                "create it with the settings in `profile.found`",
            )
        elif problems := profile_problems(history.profile):
            skipped.add("profile", problems[0][1])
        else:
            profile = history.profile
    return ImportPlan(kept, moods, kept_observations, profile, skipped)


def import_report(history: ImportedHistory, plan: ImportPlan, dry_run: bool) -> dict[str, Any]:
    def counted(dates: list[dt.date]) -> dict[str, Any]:
        return {
            "count": len(dates),
            "first_date": min(dates, default=None),
            "last_date": max(dates, default=None),
        }

    return {
        "format": history.format,
        "dry_run": dry_run,
        "periods": counted([period.start for period in plan.periods]),
        "moods": counted([mood.date for mood in plan.moods]),
        "observations": counted([sign.date for sign in plan.observations]),
        "profile": (
            {"found": history.profile, "applied": plan.profile is not None}
            if history.profile
            else None
        ),
        "skipped": plan.skipped.report(),
        "unmapped": dict(sorted(history.unmapped.items())),
    }


# ── Calendar feed (iCalendar, RFC 5545) ──────────────────────────────────────────────────


@dataclasses.dataclass(frozen=True)
class PredictedPeriod:
    number: int  # 1 for the next period, 2 for the one after…
    start: dt.date
    range: tuple[dt.date, dt.date]
    fertile_window: tuple[dt.date, dt.date]  # of the cycle that this period ends


def predicted_periods(calendar: CycleCalendar, today: dt.date, count: int) -> list[PredictedPeriod]:
    """Her next `count` periods, each with its likely range (wider the further ahead: the
    errors of successive cycles add up) and the fertile window of the cycle before it."""
    outlook = calendar.outlook(today, today)
    if outlook["next_period_start"] is None:
        return []
    length, range_days = calendar.estimate.length, calendar.estimate.range_days
    first_range_days = (outlook["next_period_start"] - outlook["next_period_range"][0]).days
    predicted = []
    for number in range(1, count + 1):
        start = outlook["next_period_start"] + dt.timedelta(days=(number - 1) * length)
        spread = dt.timedelta(
            days=round(math.sqrt(first_range_days**2 + (number - 1) * range_days**2))
        )
        ovulation = start - dt.timedelta(days=calendar.luteal_length + 1)
        fertile_window = (
            ovulation - dt.timedelta(days=FERTILE_DAYS_BEFORE_OVULATION),
            ovulation + dt.timedelta(days=FERTILE_DAYS_AFTER_OVULATION),
        )
        if number == 1:  # this cycle's: where her observations may have placed it
            fertile_window = tuple(outlook["fertile_window"])
        predicted.append(
            PredictedPeriod(number, start, (start - spread, start + spread), fertile_window)
        )
    return predicted


def calendar_feed_ics(
    periods: Sequence[Mapping[str, Any]],
    calendar: CycleCalendar,
    today: dt.date,
    feed_key: str,
    now: dt.datetime,
) -> bytes:
    """Her calendar as iCalendar: logged periods, the next predicted ones and their fertile
    windows, as all-day events. UIDs are stable (a logged period's row id; a prediction's
    place after her latest logged start), so calendar apps update events, not repeat them."""
    feed = icalendar.Calendar()
    feed.add("prodid", "-//PlanHer//Cycle calendar//EN")
    feed.add("version", "2.0")
    feed.add("calscale", "GREGORIAN")
    feed.add("method", "PUBLISH")
    feed.add("x-wr-calname", "PlanHer")
    feed.add("refresh-interval", dt.timedelta(hours=6), parameters={"VALUE": "DURATION"})
    feed.add("x-published-ttl", "PT6H")

    def event(uid: str, summary: str, first: dt.date, last: dt.date, description: str) -> None:
        entry = icalendar.Event()
        entry.add("uid", f"{uid}-{feed_key}@planher")
        entry.add("dtstamp", now.replace(tzinfo=dt.UTC))
        entry.add("dtstart", first)
        entry.add("dtend", last + dt.timedelta(days=1))  # all-day: the end is exclusive
        entry.add("summary", summary)
        entry.add("description", description)
        entry.add("transp", "TRANSPARENT")
        feed.add_component(entry)

    for row in periods:
        last = calendar.effective_end(PeriodSpan(row["start_date"], row["end_date"]))
        logged = "Logged" if row["end_date"] else "Logged; the end is not logged yet"
        event(f"period-{row['id']}", "Period", row["start_date"], last, logged + ".")
    anchor = calendar.periods[-1].start.isoformat() if calendar.periods else "profile"
    for predicted in predicted_periods(calendar, today, CALENDAR_PREDICTED_PERIODS):
        earliest, latest = predicted.range
        event(
            f"predicted-period-{anchor}-{predicted.number}",
            "Period (predicted)",
            predicted.start,
            predicted.start + dt.timedelta(days=calendar.menses_length - 1),
            f"Predicted to start {predicted.start}, likely between {earliest} and {latest}.",
        )
        first, last = predicted.fertile_window
        event(
            f"fertile-window-{anchor}-{predicted.number}",
            "Fertile window (estimated)",
            first,
            last,
            "Estimated from her cycle length and luteal phase; not contraception.",
        )
    return feed.to_ical()


# ── Energy models ────────────────────────────────────────────────────────────────────────

# P(low, medium, high) by phase, served while no model can be: energy tends to be lowest
# during menses and highest around ovulation. None is "phase unknown".
PHASE_PRIOR = {
    "menstrual": (0.55, 0.35, 0.10),
    "follicular": (0.15, 0.40, 0.45),
    "ovulatory": (0.10, 0.30, 0.60),
    "luteal": (0.30, 0.50, 0.20),
    "late": (0.35, 0.45, 0.20),
    None: (0.30, 0.40, 0.30),
}
# The demo generator's true distribution: known, so its best possible accuracy is too.
DEMO_ENERGY_BY_PHASE = {
    "menstrual": (0.75, 0.20, 0.05),
    "follicular": (0.10, 0.30, 0.60),
    "ovulatory": (0.05, 0.15, 0.80),
    "luteal": (0.20, 0.65, 0.15),
    "late": (0.40, 0.50, 0.10),
}
# A woman unlike the phase prior and unlike everyone else: most energy in her period,
# least around ovulation. Her own model has something to learn.
DEMO_CONTRARY_ENERGY_BY_PHASE = {
    "menstrual": (0.05, 0.25, 0.70),
    "follicular": (0.15, 0.60, 0.25),
    "ovulatory": (0.70, 0.20, 0.10),
    "luteal": (0.20, 0.30, 0.50),
    "late": (0.15, 0.35, 0.50),
}

TYPICAL_BMI = 22.0
PERSONAL_MIN_DAYS = 10  # labelled days (a mood whose cycle position is known)
MIN_DISTINCT_LEVELS = 2
POPULATION_MIN_DAYS = 30
POPULATION_MAX_SAMPLES = 20_000  # the most recent labelled days of all users
RETRAIN_AFTER_CHANGED_MOODS = 5
POPULATION_RETRAIN_AFTER_CHANGED_MOODS = 25
# Forward-in-time validation: her days in date order; the later half is cut into at most
# this many blocks, each scored by models trained on every day before it (as she is served:
# trained on her past, asked about her future).
FORWARD_MAX_FOLDS = 5
# Partial pooling: her evidence weighs n / (n + k) against the prior's (the population
# model, else the phase prior), n her days (in that phase, for the phase table) and k days
# of prior; forward validation picks k. 0 trusts her days alone.
POOLING_PRIOR_DAYS = (0, 5, 15, 45, 135)
# A model ships when its forward Brier score beats the prior's by more than this many
# standard errors (see ForwardScore.clearly_beats). Measured on the demo generator with
# `python planher.py evaluate`: without it, lucky variants ship and lose ~1 point of accuracy.
SHIP_MIN_GAIN_SE = 1.0
TRAINING_CLAIM_HEARTBEAT_S = 15  # a trainer renews its claim this often, so a claim…
TRAINING_CLAIM_STALE_S = 45  # …not renewed for this long belongs to a process that died
MODEL_SIGNATURE_SALT = "planher.energy-model"
# The features and shape of a stored model. Bump it whenever energy_features or what
# fit_pooled stores changes: a stored model of another format is retrained, never fed rows
# it does not expect.
MODEL_FORMAT = 2
MAX_ANSWERS_PER_MODEL = 5_000  # memoized feature rows (the population model sees many)
# Energy follows the phase, a low-dimensional signal, and a woman has 10 to a few hundred
# labelled days: shallow, well-populated trees and small, regularized networks generalize
# best here (and stay small: every cached model costs memory, see the README).
RANDOM_FOREST_PARAMS = {
    "n_estimators": 50,
    "max_depth": 3,
    "min_samples_leaf": 5,
    "random_state": 0,
}
HIST_GRADIENT_BOOSTING_PARAMS = {
    "max_iter": 50,
    "max_depth": 2,
    "min_samples_leaf": 8,
    "learning_rate": 0.05,
    "random_state": 0,
}
LOGISTIC_REGRESSION_PARAMS = {"C": 1.0, "max_iter": 1_000}  # multinomial (lbfgs)
MLP_PARAMS = {
    "hidden_layer_sizes": (8,),
    "alpha": 1.0,
    "solver": "lbfgs",
    "max_iter": 100,
    "random_state": 0,
}
# A small network stopped at max_iter is not a failure: forward validation judges it.
warnings.filterwarnings("ignore", category=ConvergenceWarning)


def mood_cycle_day(
    calendar: CycleCalendar, date: dt.date, given_day: int | None
) -> CycleDay | None:
    """Where a mood's date falls: from her periods when they cover it, else from the day of
    cycle she gave (in a cycle of the estimated length), else unknown."""
    cycle = calendar.cycle_day(date)
    if cycle is not None or given_day is None:
        return cycle
    return CycleDay(
        given_day, calendar.phase_on_estimated_cycle_day(given_day), calendar.estimate.length, None
    )


def cycle_features(cycle: CycleDay) -> list[float]:
    """Day of cycle, its place in the cycle as an angle (so day 28 sits next to day 1),
    days until the next period, and the phase one-hot."""
    angle = 2 * math.pi * (cycle.day_of_cycle - 1) / cycle.cycle_length
    return [
        float(cycle.day_of_cycle),
        math.sin(angle),
        math.cos(angle),
        float(cycle.days_until_next_period),
        *(float(cycle.phase == phase) for phase in PHASES),
    ]


def profile_features(profile: Mapping[str, Any] | None) -> list[float]:
    """What sets one woman apart from another: only the population model uses these. A
    woman without a profile gets the defaults (and a typical BMI), flagged as such."""
    if profile is None:
        return [
            0.0,
            TYPICAL_BMI,
            DEFAULT_CYCLE_LENGTH,
            DEFAULT_LUTEAL_LENGTH,
            DEFAULT_MENSES_LENGTH,
            0.0,
            DEFAULT_NUMBER_OF_PEAK,
        ]
    return [
        1.0,
        bmi(profile["height_cm"], profile["weight_kg"]),
        float(profile["cycle_length"]),
        float(profile["luteal_length"]),
        float(profile["menses_length"]),
        float(profile["unusual_bleeding"]),
        float(profile["number_of_peak"]),
    ]


def energy_features(cycle: CycleDay, profile: Mapping | None, with_profile: bool) -> list[float]:
    return cycle_features(cycle) + (profile_features(profile) if with_profile else [])


def days_missing_for_a_model(levels: Sequence[int], min_days: int = PERSONAL_MIN_DAYS) -> int:
    """How many more labelled days are needed before a model can train (0: enough). One
    more day is needed if every day so far has the same level."""
    if len(levels) >= min_days and len(set(levels)) >= MIN_DISTINCT_LEVELS:
        return 0
    return max(min_days - len(levels), 1)


def forward_splits(n_samples: int) -> list[tuple[int, int]]:
    """Forward-in-time folds over days in date order, as (train_end, test_end): each block
    of the later half is scored by a model trained on every day before it."""
    first_test = (n_samples + 1) // 2
    blocks = min(FORWARD_MAX_FOLDS, n_samples - first_test)
    edges = [first_test + round(i * (n_samples - first_test) / blocks) for i in range(blocks + 1)]
    return list(itertools.pairwise(edges))


def model_candidates() -> dict[str, Any]:
    """The estimators that compete for her model (besides partial_pooling, the phase table
    of her own days shrunk toward the prior). Scale-sensitive ones see standardized rows."""
    return {
        "random_forest": RandomForestClassifier(**RANDOM_FOREST_PARAMS),
        "hist_gradient_boosting": HistGradientBoostingClassifier(**HIST_GRADIENT_BOOSTING_PARAMS),
        "logistic_regression": make_pipeline(
            StandardScaler(), LogisticRegression(**LOGISTIC_REGRESSION_PARAMS)
        ),
        "mlp": make_pipeline(StandardScaler(), MLPClassifier(**MLP_PARAMS)),
    }


def one_hot(levels: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.eye(len(ENERGY_LABELS))[np.asarray(levels, dtype=int)]


def level_probabilities(estimator: Any, rows: np.ndarray) -> np.ndarray:
    """predict_proba with a column for every level (0 for a level she never logged)."""
    probabilities = np.zeros((len(rows), len(ENERGY_LABELS)))
    probabilities[:, estimator.classes_.astype(int)] = estimator.predict_proba(rows)
    return probabilities


def pooled_phase_table(
    phases: Sequence[str | None],
    levels: Sequence[int],
    prior: Mapping[str | None, Sequence[float]],
    prior_days: float,
) -> dict[str | None, tuple[float, ...]]:
    """P(level | phase): her days in each phase with `prior_days` days of the prior's."""
    counts = {phase: np.zeros(len(ENERGY_LABELS)) for phase in prior}
    for phase, level in zip(phases, levels, strict=True):
        counts[phase][level] += 1
    table = {}
    for phase, expected in prior.items():
        days = counts[phase].sum() + prior_days
        pooled = (counts[phase] + prior_days * np.asarray(expected)) / days if days else expected
        table[phase] = tuple(np.asarray(pooled, dtype=float).tolist())
    return table


def pooled_probabilities(
    pooled: Mapping[str, Any], rows: Sequence[Sequence[float]], phases: Sequence[str | None]
) -> np.ndarray:
    """P(level) of a stored model: its estimator's answer weighed against its phase table
    (`estimator_weight` 0: the table alone). Stored as a plain dict of scikit-learn and
    numpy objects, so loading one never needs a class of ours."""
    table = np.asarray([pooled["phase_table"][phase] for phase in phases], dtype=float)
    if pooled["estimator"] is None:
        return table
    weight = pooled["estimator_weight"]
    estimated = level_probabilities(pooled["estimator"], np.asarray(rows, dtype=float))
    return weight * estimated + (1 - weight) * table


def evidence_weight(n_samples: int, prior_days: float) -> float:
    """Partial pooling: her n days against `prior_days` days of the prior."""
    return n_samples / (n_samples + prior_days) if n_samples + prior_days else 0.0


def fit_pooled(
    name: str,
    prior_days: float,
    rows: np.ndarray,
    phases: Sequence[str | None],
    levels: np.ndarray,
    prior: Mapping[str | None, Sequence[float]],
) -> dict[str, Any]:
    """One candidate fitted on these days and pooled with `prior_days` days of the prior.
    On days of a single level an estimator cannot fit: that level is all it knows."""
    if name == "partial_pooling":
        table = pooled_phase_table(phases, levels.tolist(), prior, prior_days)
        return {"estimator": None, "estimator_weight": 0.0, "phase_table": table}
    if len(set(levels.tolist())) < MIN_DISTINCT_LEVELS:
        estimator = DummyClassifier(strategy="most_frequent").fit(rows, levels)
    else:
        estimator = model_candidates()[name].fit(rows, levels)
    return {
        "estimator": estimator,
        "estimator_weight": evidence_weight(len(levels), prior_days),
        "phase_table": dict(prior),
    }


@dataclasses.dataclass(frozen=True)
class ForwardScore:
    """How a forecast did, day by day, on the days forward validation scored."""

    hits: np.ndarray  # whether its likeliest level was hers
    losses: np.ndarray  # Σ over levels of (p − outcome)²: 0 sure and right, 2 sure and wrong

    @classmethod
    def of(cls, probabilities: np.ndarray, levels: np.ndarray) -> ForwardScore:
        return cls(
            hits=probabilities.argmax(axis=1) == levels,
            losses=((probabilities - one_hot(levels)) ** 2).sum(axis=1),
        )

    @property
    def accuracy(self) -> float:
        return float(self.hits.mean())

    @property
    def brier_score(self) -> float:
        return float(self.losses.mean())

    def clearly_beats(self, other: ForwardScore) -> bool:
        """A lower Brier score than `other` on the same days by more than
        SHIP_MIN_GAIN_SE standard errors of their day-by-day difference: picked as the best
        of many variants, a model wins small margins by luck alone."""
        differences = self.losses - other.losses
        standard_error = differences.std(ddof=1) / math.sqrt(len(differences))
        return float(differences.mean()) < -SHIP_MIN_GAIN_SE * standard_error


def forward_validation(
    rows: np.ndarray,
    phases: Sequence[str | None],
    levels: np.ndarray,
    prior: Mapping[str | None, Sequence[float]],
) -> dict[tuple[str, float | None], ForwardScore]:
    """Each (candidate, prior days) scored on the forward folds; `majority` (her most
    common level so far) and `prior` (the prior alone) beside them."""
    forecasts = collections.defaultdict(list)
    prior_rows = np.asarray([prior[phase] for phase in phases], dtype=float)
    scored = []
    for train_end, test_end in forward_splits(len(levels)):
        train, test = slice(0, train_end), slice(train_end, test_end)
        training = (rows[train], phases[train], levels[train], prior)
        scored.append(levels[test])
        majority = collections.Counter(levels[train].tolist()).most_common(1)[0][0]
        forecasts["majority", None].append(one_hot([majority] * (test_end - train_end)))
        forecasts["prior", None].append(prior_rows[test])
        for name in ("partial_pooling", *model_candidates()):
            # An estimator is fitted once; its pooled variants only weigh its answers.
            alone = None
            if name != "partial_pooling":
                fitted = fit_pooled(name, 0.0, *training)
                alone = pooled_probabilities(fitted, rows[test], phases[test])
            for prior_days in POOLING_PRIOR_DAYS:
                if alone is None:  # a phase table: refitting it is counting
                    fitted = fit_pooled(name, prior_days, *training)
                    probabilities = pooled_probabilities(fitted, rows[test], phases[test])
                else:
                    weight = evidence_weight(train_end, prior_days)
                    probabilities = weight * alone + (1 - weight) * prior_rows[test]
                forecasts[name, prior_days].append(probabilities)
    outcomes = np.concatenate(scored)
    return {
        variant: ForwardScore.of(np.concatenate(parts), outcomes)
        for variant, parts in forecasts.items()
    }


@dataclasses.dataclass
class TrainingResult:
    model_type: str
    shipped: bool
    cv_accuracy: float  # forward-in-time, as every figure here
    baseline_accuracy: float  # always her most common level so far
    brier_score: float
    prior_days: float  # how many days of the prior her evidence was pooled with
    n_samples: int
    candidates: list[dict[str, Any]]
    pooled: dict[str, Any] | None  # fitted on every sample when shipped, else None


def train_energy_model(
    features: Sequence[Sequence[float]],
    phases: Sequence[str | None],
    levels: Sequence[int],
    prior: Mapping[str | None, Sequence[float]] = PHASE_PRIOR,
    prior_name: str = "phase_prior",
) -> TrainingResult:
    """Forward-validate every candidate at every pooling strength on her days in date
    order and pick the best calibrated (Brier score: accuracy alone is too coarse to choose
    among variants on a few dozen days). It ships only when it is right more often than
    her majority level and clearly beats the prior alone (`prior_name` says which prior
    that is). CPU-bound: call it in a worker thread."""
    rows, levels = np.asarray(features, dtype=float), np.asarray(levels, dtype=int)
    phases = np.asarray(phases, dtype=object)
    # One native thread: HistGradientBoosting would otherwise take every core (OpenMP) and
    # starve the event loop; trainings of different users already run side by side.
    with threadpool_limits(limits=1):
        scores = forward_validation(rows, phases, levels, prior)
        best_of: dict[str, tuple[str, float | None]] = {}
        for variant, score in scores.items():
            name = variant[0]
            if name not in best_of or score.brier_score < scores[best_of[name]].brier_score:
                best_of[name] = variant
        best = min(
            (variant for name, variant in best_of.items() if name not in ("majority", "prior")),
            key=lambda variant: scores[variant].brier_score,
        )
        winner, baseline = scores[best], scores["majority", None]
        shipped = winner.accuracy > baseline.accuracy and winner.clearly_beats(
            scores["prior", None]
        )
        pooled = fit_pooled(*best, rows, phases, levels, prior) if shipped else None
    return TrainingResult(
        model_type=best[0],
        shipped=shipped,
        cv_accuracy=round(winner.accuracy, 4),
        baseline_accuracy=round(baseline.accuracy, 4),
        brier_score=round(winner.brier_score, 4),
        prior_days=best[1],
        n_samples=len(levels),
        candidates=[
            {
                "type": prior_name if name == "prior" else name,
                "cv_accuracy": round(scores[variant].accuracy, 4),
                "brier_score": round(scores[variant].brier_score, 4),
            }
            for name, variant in best_of.items()
        ],
        pooled=pooled,
    )


def serialize_model(pooled: Mapping[str, Any], signer: itsdangerous.Signer) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(dict(pooled), buffer, compress=3)
    return signer.sign(buffer.getvalue())


def deserialize_model(blob: bytes, signer: itsdangerous.Signer) -> dict[str, Any]:
    """Loading a pickle runs code: only bytes that carry our own signature are loaded."""
    return joblib.load(io.BytesIO(signer.unsign(blob)))


@dataclasses.dataclass(frozen=True)
class EnergyModel:
    """What serves an energy prediction: a trained, pooled model, or the phase prior."""

    source: str  # personal | population | phase_prior
    pooled: Mapping[str, Any] | None = None  # what fit_pooled returned
    with_profile: bool = False
    version: int | None = None
    model_type: str = "phase_prior"
    trained_at: dt.datetime | None = None
    n_samples: int = 0
    cv_accuracy: float | None = None
    baseline_accuracy: float | None = None
    brier_score: float | None = None
    # A fitted model's output depends only on its features, and a woman's days repeat the
    # same few feature rows: each row's probabilities are computed once, then looked up.
    answers: dict[tuple[float, ...], tuple[float, ...]] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    def probabilities(
        self, rows: list[list[float]], phases: list[str | None]
    ) -> list[tuple[float, ...]]:
        """P(low, medium, high) for feature rows (and their phases, which the rows
        determine), asking the model once for the rows it has not answered yet."""
        keys = [tuple(row) for row in rows]
        unanswered = {key: phase for key, phase in zip(keys, phases, strict=True)}
        for key in self.answers.keys() & unanswered.keys():
            del unanswered[key]
        if unanswered:
            if len(self.answers) > MAX_ANSWERS_PER_MODEL:
                self.answers.clear()
            answered = pooled_probabilities(
                self.pooled, list(unanswered), list(unanswered.values())
            )
            for key, probabilities in zip(unanswered, answered.tolist(), strict=True):
                self.answers[key] = tuple(probabilities)
        return [self.answers[key] for key in keys]


PHASE_PRIOR_MODEL = EnergyModel(source="phase_prior")


def predict_energy(
    model: EnergyModel, cycles: Sequence[CycleDay | None], profile: Mapping | None
) -> list[tuple[tuple[float, ...], EnergyModel]]:
    """P(low, medium, high) for each day, with the model that gave it, in one batch. A day
    whose cycle position is unknown gets the phase prior."""
    known = [index for index, cycle in enumerate(cycles) if cycle is not None]
    results = [(PHASE_PRIOR[None], PHASE_PRIOR_MODEL)] * len(cycles)
    if model.pooled is None:
        for index in known:
            results[index] = (PHASE_PRIOR[cycles[index].phase], model)
        return results
    rows = [energy_features(cycles[index], profile, model.with_profile) for index in known]
    phases = [cycles[index].phase for index in known]
    for index, probabilities in zip(known, model.probabilities(rows, phases), strict=True):
        results[index] = (probabilities, model)
    return results


def phase_table_of(
    model: EnergyModel, samples: Sequence[tuple[CycleDay, Mapping | None, int]]
) -> dict[str | None, tuple[float, ...]]:
    """What `model` expects of her in each phase: its answers on her own days, averaged by
    phase (the phase prior for a phase she has no day in). Her personal model is pooled
    toward this. Asked directly, not through the model's memo: this runs in a worker thread
    while the event loop serves from the same cached model."""
    cycles = [cycle for cycle, _, _ in samples]
    rows = [energy_features(cycle, profile, model.with_profile) for cycle, profile, _ in samples]
    answers = pooled_probabilities(model.pooled, rows, [cycle.phase for cycle in cycles])
    by_phase = collections.defaultdict(list)
    for cycle, probabilities in zip(cycles, answers, strict=True):
        by_phase[cycle.phase].append(probabilities)
    return {
        phase: tuple(np.mean(by_phase[phase], axis=0).tolist()) if by_phase[phase] else prior
        for phase, prior in PHASE_PRIOR.items()
    }


def energy_json(probabilities: Sequence[float]) -> dict[str, Any]:
    rounded = [round(p, 3) for p in probabilities]
    level = max(range(3), key=lambda index: probabilities[index])
    rounded[level] = round(1 - sum(rounded) + rounded[level], 3)  # so they sum to 1
    return {
        "level": level,
        "label": ENERGY_LABELS[level],
        "confidence": rounded[level],
        "probabilities": dict(zip(ENERGY_LABELS, rounded, strict=True)),
    }


class ModelCache:
    """Loaded models by subject ('user:<id>', 'population'), least recently used first out.
    Each entry remembers its version, so a retrain elsewhere is noticed on the next lookup."""

    def __init__(self, max_models: int) -> None:
        self.max_models = max_models
        self._models: collections.OrderedDict[str, EnergyModel] = collections.OrderedDict()

    def get(self, subject: str, version: int) -> EnergyModel | None:
        model = self._models.get(subject)
        if model is None or model.version != version:
            return None
        self._models.move_to_end(subject)
        return model

    def put(self, subject: str, model: EnergyModel) -> None:
        self._models[subject] = model
        self._models.move_to_end(subject)
        while len(self._models) > self.max_models:
            self._models.popitem(last=False)

    def __len__(self) -> int:
        return len(self._models)


def generate_demo_history(
    days: int,
    today: dt.date,
    seed: int = 0,
    energy_by_phase: Mapping[str, Sequence[float]] = DEMO_ENERGY_BY_PHASE,
):
    """Realistic periods and daily energy for `days` days up to `today`: cycles of 26–32
    days, periods of 4–6, and each day's energy drawn from `energy_by_phase` for the phase
    the service itself computes. Returns (periods, [(date, level)])."""
    rng = random.Random(seed)
    first = today - dt.timedelta(days=days - 1)
    start = first - dt.timedelta(days=rng.randint(0, 20))
    periods = []
    while start <= today:
        periods.append(PeriodSpan(start, min(start + dt.timedelta(days=rng.randint(3, 5)), today)))
        start += dt.timedelta(days=rng.choice((26, 27, 28, 28, 29, 29, 30, 31, 32)))
    calendar = CycleCalendar.build(periods)
    moods = []
    for offset in range(days):
        date = first + dt.timedelta(days=offset)
        phase = calendar.cycle_day(date).phase
        moods.append((date, rng.choices(range(3), weights=energy_by_phase[phase])[0]))
    return periods, moods


def bayes_rate(
    phases: Iterable[str], energy_by_phase: Mapping[str, Sequence[float]] = DEMO_ENERGY_BY_PHASE
) -> float:
    """The best accuracy any model can reach on days drawn from `energy_by_phase`: it knows
    the phase and guesses its most likely level."""
    phases = list(phases)
    return sum(max(energy_by_phase[phase]) for phase in phases) / len(phases)


# ── Energy model store: versions, cache, background training ─────────────────────────


def model_subject(user_id: int | None) -> str:
    return "population" if user_id is None else f"user:{user_id}"


def loadable(row: Mapping[str, Any]) -> bool:
    """Whether a stored model was saved by this scikit-learn for today's features; any
    other is retrained rather than loaded."""
    return row["sklearn_version"] == sklearn.__version__ and row["model_format"] == MODEL_FORMAT


async def shipped_model(app: Starlette, user_id: int | None) -> EnergyModel | None:
    """Her shipped personal model (user_id None: the population model), from the cache or
    loaded, or None. One cheap query checks the shipped version, so a model retrained by
    another worker replaces the cached one at once; only a new version is loaded."""
    database, cache = app.state.database, app.state.model_cache
    row = await newest_model_row(database, user_id, shipped_only=True)
    if row is None:
        return None
    subject = model_subject(user_id)
    if not loadable(row):
        app.state.trainer.schedule(user_id)
        return None
    model = cache.get(subject, row["version"])
    if model is not None:
        return model
    blob = await database.fetch_val(
        sa.select(user_models.c.model_blob).where(user_models.c.id == row["id"])
    )
    try:
        pooled = await run_in_threadpool(deserialize_model, blob, app.state.model_signer)
    except Exception as error:  # a foreign or tampered blob is never unpickled
        logger.warning(
            "%s model version %s refused (%s); retraining it",
            subject,
            row["version"],
            type(error).__name__,
        )
        await database.execute(  # no instance tries it again
            user_models.update()
            .where(user_models.c.id == row["id"])
            .values(shipped=False, model_blob=None)
        )
        app.state.trainer.schedule(user_id, force=True)
        return None
    model = EnergyModel(
        source="population" if user_id is None else "personal",
        pooled=pooled,
        with_profile=user_id is None,
        version=row["version"],
        model_type=row["model_type"],
        trained_at=row["trained_at"],
        n_samples=row["n_samples"],
        cv_accuracy=row["cv_accuracy"],
        baseline_accuracy=row["baseline_accuracy"],
        brier_score=row["brier_score"],
    )
    cache.put(subject, model)
    return model


async def active_model(app: Starlette, user_id: int) -> EnergyModel:
    """Her personal model if one is shipped, else the population model, else the phase
    prior."""
    return await shipped_model(app, user_id) or await shipped_model(app, None) or PHASE_PRIOR_MODEL


async def training_samples(database: Database, user_id: int | None):
    """Her labelled days, or (user_id None) the most recent labelled days of everyone, as
    (cycle day, profile, level). The rows are fetched here; placing thousands of days in
    their cycles is CPU work, done in a worker thread."""
    mood_columns = [
        daily_moods.c.user_id,
        daily_moods.c.date,
        daily_moods.c.day_of_cycle,
        daily_moods.c.energy_level,
    ]
    period_columns = [
        period_records.c.user_id,
        period_records.c.start_date,
        period_records.c.end_date,
    ]
    if user_id is not None:
        moods = await database.fetch_large(
            sa.select(*mood_columns).where(daily_moods.c.user_id == user_id)
        )
        periods = await database.fetch_large(
            sa.select(*period_columns).where(period_records.c.user_id == user_id)
        )
        profile = await fetch_profile(database, user_id)
        profiles = {} if profile is None else {user_id: profile}
    else:
        moods = await database.fetch_large(
            sa.select(*mood_columns)
            .order_by(daily_moods.c.date.desc())
            .limit(POPULATION_MAX_SAMPLES)
        )
        periods = await database.fetch_large(sa.select(*period_columns))
        profiles = {
            row["user_id"]: row for row in await database.fetch_large(user_profiles.select())
        }
    return await run_in_threadpool(labelled_samples, moods, periods, profiles)


def labelled_samples(
    moods: Sequence[Mapping], periods: Sequence[Mapping], profiles: Mapping[int, Mapping]
) -> list[tuple[CycleDay, Mapping | None, int]]:
    """(cycle day, profile, level) of every mood whose cycle position is known, each placed
    in its owner's calendar, in date order (forward validation trains on the earlier)."""
    spans, owned = collections.defaultdict(list), collections.defaultdict(list)
    for row in periods:
        spans[row["user_id"]].append(PeriodSpan(row["start_date"], row["end_date"]))
    for mood in moods:
        owned[mood["user_id"]].append(mood)
    dated = []
    for owner, days in owned.items():
        calendar = CycleCalendar.build(spans[owner], profiles.get(owner))
        for mood in days:
            cycle = mood_cycle_day(calendar, mood["date"], mood["day_of_cycle"])
            if cycle is not None:
                dated.append((mood["date"], cycle, calendar.profile, mood["energy_level"]))
    dated.sort(key=lambda sample: sample[0])
    return [(cycle, profile, level) for _, cycle, profile, level in dated]


# Plain SQL with bound parameters: the upsert is spelled the same on SQLite and PostgreSQL.
CLAIM_TRAINING = (
    "INSERT INTO model_training_claims (subject, claimed_at) VALUES (:subject, :now) "
    "ON CONFLICT (subject) DO UPDATE SET claimed_at = excluded.claimed_at "
    "WHERE model_training_claims.claimed_at < :stale_before RETURNING subject"
)


@contextlib.asynccontextmanager
async def training_claim(database: Database, subject: str):
    """Yields whether this process may train `subject` now. The claim is a database row,
    so it holds across every app instance; its holder renews it every
    TRAINING_CLAIM_HEARTBEAT_S, so the claim of a process that died is taken over soon."""
    now = utc_now()
    claimed = await database.fetch_one(
        sa.text(CLAIM_TRAINING).bindparams(
            subject=subject,
            now=now,
            stale_before=now - dt.timedelta(seconds=TRAINING_CLAIM_STALE_S),
        )
    )
    if claimed is None:
        yield False
        return

    async def renew_claim() -> None:
        while True:
            await asyncio.sleep(TRAINING_CLAIM_HEARTBEAT_S)
            await database.execute(
                model_training_claims.update()
                .where(model_training_claims.c.subject == subject)
                .values(claimed_at=utc_now())
            )

    heartbeat = background_task(renew_claim())
    try:
        yield True
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError, DatabaseUnavailable):
            await heartbeat
        await database.execute(
            model_training_claims.delete().where(model_training_claims.c.subject == subject)
        )


def train_on_samples(
    samples: list, with_profile: bool, population: EnergyModel | None
) -> TrainingResult:
    """Features, then training, pooled toward what the population model expects of her
    (when there is one), else the phase prior: CPU work for a worker thread."""
    features = [energy_features(cycle, profile, with_profile) for cycle, profile, _ in samples]
    return train_energy_model(
        features,
        [cycle.phase for cycle, _, _ in samples],
        [level for _, _, level in samples],
        PHASE_PRIOR if population is None else phase_table_of(population, samples),
        "phase_prior" if population is None else "population",
    )


class TrainingBusy(Exception):
    """Another request or instance is training this model right now."""


async def train_and_store(
    app: Starlette, user_id: int | None, samples: list, as_of: dt.datetime
) -> dict[str, Any]:
    """Train on `samples` (the data as of `as_of`) in a worker thread and store the result
    as the next version; moods changed after `as_of` count towards the next training."""
    database = app.state.database
    async with training_claim(database, model_subject(user_id)) as claimed:
        if not claimed:
            raise TrainingBusy()
        population = None if user_id is None else await shipped_model(app, None)
        result = await run_in_threadpool(train_on_samples, samples, user_id is None, population)
        blob = None
        if result.shipped:
            blob = await run_in_threadpool(serialize_model, result.pooled, app.state.model_signer)
        async with database.transaction():
            version = 1 + (
                await database.fetch_val(
                    sa.select(sa.func.coalesce(sa.func.max(user_models.c.version), 0)).where(
                        owner_condition(user_id)
                    )
                )
            )
            row = await database.fetch_one(
                user_models.insert()
                .values(
                    user_id=user_id,
                    version=version,
                    model_type=result.model_type,
                    shipped=result.shipped,
                    cv_accuracy=result.cv_accuracy,
                    baseline_accuracy=result.baseline_accuracy,
                    brier_score=result.brier_score,
                    n_samples=result.n_samples,
                    candidates=json.dumps(result.candidates),
                    sklearn_version=sklearn.__version__,
                    model_format=MODEL_FORMAT,
                    model_blob=blob,
                    trained_at=as_of,
                )
                .returning(*MODEL_METADATA_COLUMNS)
            )
    logger.info(
        "trained %s model version %s: %s pooled with %s days of prior, shipped=%s",
        model_subject(user_id),
        version,
        result.model_type,
        result.prior_days,
        result.shipped,
    )
    return row


async def retrain_if_due(app: Starlette, user_id: int | None, force: bool = False) -> None:
    """Retrain when enough moods changed since the last training (her own model), or
    across everyone (the population model), or when `force`d, and there is enough data."""
    database, personal = app.state.database, user_id is not None
    minimum = PERSONAL_MIN_DAYS if personal else POPULATION_MIN_DAYS
    last = await newest_model_row(database, user_id, shipped_only=False)
    if not force and last is not None and loadable(last):
        every = RETRAIN_AFTER_CHANGED_MOODS if personal else POPULATION_RETRAIN_AFTER_CHANGED_MOODS
        settings = app.state.settings
        pause_s = settings.retrain_pause_s if personal else settings.population_retrain_pause_s
        if utc_now() - last["trained_at"] < dt.timedelta(seconds=pause_s):
            return
        if await changed_moods_since(database, user_id, last["trained_at"]) < every:
            return
    elif not force and await changed_moods_since(database, user_id, None) < minimum:
        return  # too few days to train on: no need to read them
    as_of = utc_now()
    samples = await training_samples(database, user_id)
    if days_missing_for_a_model([level for *_, level in samples], minimum) == 0:
        with contextlib.suppress(TrainingBusy):
            await train_and_store(app, user_id, samples, as_of)


class Trainer:
    """Background training: at most one task per model in this process (and one across
    processes, by the claim row), never on the event loop, never delaying a response."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self._running: dict[int | None, asyncio.Task] = {}
        self._asked_again: set[int | None] = set()
        self._forced: set[int | None] = set()

    def schedule(self, user_id: int | None, force: bool = False) -> None:
        """Consider retraining her model (and then the population model) in the background;
        `force` retrains even if little changed (a model that could not be loaded). Asked
        while that is running, it looks again once the running pass is done."""
        if force:
            self._forced.add(user_id)
        if user_id in self._running:
            self._asked_again.add(user_id)
            return
        self._running[user_id] = background_task(self._retrain(user_id))

    async def _retrain(self, user_id: int | None) -> None:
        try:
            while True:
                self._asked_again.discard(user_id)
                force = user_id in self._forced
                self._forced.discard(user_id)
                await retrain_if_due(self.app, user_id, force)
                if user_id is not None:
                    self.schedule(None)  # one population task per process, however many users
                if user_id not in self._asked_again:
                    break
        except DatabaseUnavailable as error:
            self.app.state.failure_log.record(error)  # the next change of a mood retries
        except Exception:
            logger.exception("background training of %s failed", model_subject(user_id))
        finally:
            self._running.pop(user_id, None)

    def is_busy(self, user_id: int | None) -> bool:
        """Whether a background pass over this model is under way in this process."""
        return user_id in self._running

    async def drain(self) -> None:
        """Wait for every scheduled training (at shutdown, and in tests)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)


# ── Handlers: what the groups share ──────────────────────────────────────────────────────


async def fetch_signs(database: Database, user_id: int) -> list[FertilitySign]:
    """Her observations as the cycle calculator reads them, oldest first."""
    return [
        FertilitySign(**row) for row in await database.fetch_all(SIGNS_OF, {"user_id": user_id})
    ]


async def her_calendar(request: Request) -> CycleCalendar:
    """The signed-in woman's cycles: her periods, profile and observations, and everyone's
    cycles for what hers do not say yet."""
    database, user_id = request.app.state.database, request.user.id
    rows = await fetch_periods(database, user_id)
    return CycleCalendar.build(
        [PeriodSpan(row["start_date"], row["end_date"]) for row in rows],
        await fetch_profile(database, user_id),
        await fetch_signs(database, user_id),
        request.app.state.cycle_prior,
    )


def her_today(request: Request) -> dt.date:
    """The signed-in woman's calendar date now, in her own time zone."""
    return today_in(request.user.account["time_zone"])


def path_id(request: Request) -> int:
    """The `{id}` of the path: 422 for a number no INTEGER column can hold."""
    row_id = request.path_params["id"]
    if row_id > MAX_DATABASE_ID:
        message = f"Input should be less than or equal to {MAX_DATABASE_ID}"
        raise RequestValidationError(
            [{"loc": ("id",), "msg": message, "type": "less_than_equal"}], "path"
        )
    return row_id


async def delete_owned(request: Request, table: sa.Table, what: str) -> Response:
    deleted = await request.app.state.database.fetch_one(
        table.delete()
        .where(table.c.id == path_id(request), table.c.user_id == request.user.id)
        .returning(table.c.id)
    )
    if deleted is None:
        raise APIError(404, "not_found", f"{what} not found")
    return Response(status_code=204)


def list_response(items: list[Any], total: int) -> Reply:
    return Reply(items, 200, {"X-Total-Count": str(total)})


# ── Handlers: auth ───────────────────────────────────────────────────────────────────────


@endpoint(
    "Create an account",
    ok=(201, UserOut),
    auth=None,
    body=RegisterBody,
    errors={409: "An account with this email already exists", 429: "Too many registrations"},
)
async def register(request: Request, body: RegisterBody) -> Any:
    await count_against_limit(request, "register_ip", client_ip(request), "new accounts from here")
    database = request.app.state.database
    if await email_taken(database, body.email):
        raise APIError(409, "email_taken", "An account with this email already exists")
    password_hash = await hash_password(body.password, request.app.state.settings.bcrypt_rounds)
    now = utc_now()
    try:
        row = await database.fetch_one(
            users.insert()
            .values(
                email=body.email,
                password_hash=password_hash,
                name=body.name,
                time_zone=body.time_zone,
                role="user",
                created_at=now,
                updated_at=now,
            )
            .returning(*users.c)
        )
    except UNIQUE_VIOLATIONS:  # the same email registered concurrently
        raise APIError(409, "email_taken", "An account with this email already exists") from None
    return row


@endpoint(
    "Sign in: JSON, or the OAuth2 password flow's form (username = email)",
    ok=(200, TokenPairOut),
    auth=None,
    body=LoginBody,
    form=OAuth2PasswordForm,
    errors={401: "Incorrect email or password", 429: "Too many attempts"},
)
async def login(request: Request, body: LoginBody | OAuth2PasswordForm) -> Any:
    """Limits, balanced so that an attacker cannot lock a woman out: at most `login_ip`
    attempts per address; `login_account_ip` failures per account and address; and
    `login_account` failures per account across addresses, which never applies to an
    address with a live login of hers (her own devices keep working during an attack)."""
    database, ip = request.app.state.database, client_ip(request)
    await count_against_limit(request, "login_ip", ip, "sign-in attempts from here")
    await purge_expired_windows(request.app)
    row = await database.fetch_one(
        sa.select(users.c.id, users.c.password_hash).where(users.c.email == body.email)
    )
    user_id = row["id"] if row else None
    # Every attempt takes a slot of the per-account limits before bcrypt runs, in one
    # atomic step: of many parallel guesses only as many as the limit are checked. A
    # sign-in that succeeds gives its slots back (the limits count failures).
    slots = [("login_account_ip", f"{body.email}|{ip}", "failed sign-ins")]
    live_since = utc_now() - dt.timedelta(seconds=request.app.state.tokens.refresh_ttl_s)
    if row is None or not await signed_in_from(database, row["id"], ip, live_since):
        slots.append(("login_account", body.email, "failed sign-ins to this account"))
    taken = []
    try:
        for name, key, what in slots:
            await count_against_limit(request, name, key, what)
            taken.append((name, key))
    except HTTPException:
        for name, key in taken:
            await refund_hit(request, name, key)
        await audit(request, "login", ok=False, user_id=user_id, target="rate limited")
        raise
    # An unknown email still costs one bcrypt check, so timing does not reveal accounts.
    password_hash = row["password_hash"] if row else request.app.state.dummy_password_hash
    if not await verify_password(body.password, password_hash) or row is None:
        await audit(request, "login", ok=False, user_id=user_id)
        raise APIError(401, "wrong_credentials", "Incorrect email or password", BEARER_CHALLENGE)
    for name, key in taken:
        await refund_hit(request, name, key)
    await audit(request, "login", ok=True, user_id=row["id"])
    return await start_login(request.app, row["id"], ip)


async def start_login(app: Starlette, user_id: int, ip: str) -> dict[str, Any]:
    """Record a new login for the user and return its token pair."""
    database, tokens = app.state.database, app.state.tokens
    now = utc_now()
    login_key, refresh_jti = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    # Logins whose refresh token has expired can never be used again: drop hers.
    await database.execute(
        logins.delete().where(
            logins.c.user_id == user_id,
            logins.c.refreshed_at < now - dt.timedelta(seconds=tokens.refresh_ttl_s),
        )
    )
    await database.execute(
        logins.insert().values(
            user_id=user_id,
            login_key=login_key,
            refresh_jti=refresh_jti,
            created_at=now,
            refreshed_at=now,
            ip=ip,
        )
    )
    return tokens.token_pair(user_id, login_key, refresh_jti)


@endpoint(
    "Exchange a refresh token for a new pair (the old refresh token stops working)",
    ok=(200, TokenPairOut),
    auth=None,
    body=RefreshBody,
    errors={401: "Invalid, expired, revoked or reused refresh token"},
)
async def refresh(request: Request, body: RefreshBody) -> Any:
    database, tokens = request.app.state.database, request.app.state.tokens
    try:
        payload = tokens.load_refresh(body.refresh_token)
    except InvalidToken as error:
        raise APIError(401, error.code, str(error), BEARER_CHALLENGE) from None
    login_row = await database.fetch_one(
        logins.select().where(
            logins.c.login_key == payload["lid"], logins.c.user_id == payload["uid"]
        )
    )
    if login_row is None or login_row["revoked_at"] is not None:
        raise APIError(401, "token_revoked", "Token has been revoked", BEARER_CHALLENGE)
    new_jti = secrets.token_urlsafe(16)
    # Compare-and-swap on the current refresh id: of two uses of one token, only one wins.
    rotated = await database.fetch_one(
        logins.update()
        .where(
            logins.c.id == login_row["id"],
            logins.c.refresh_jti == payload["jti"],
            logins.c.revoked_at.is_(None),
        )
        .values(refresh_jti=new_jti, previous_refresh_jti=payload["jti"], refreshed_at=utc_now())
        .returning(logins.c.id)
    )
    if rotated is None:
        # The row as the winner left it: a token it replaced moments ago gets the same pair.
        current = await database.fetch_one(logins.select().where(logins.c.id == login_row["id"]))
        grace = dt.timedelta(seconds=request.app.state.settings.refresh_reuse_grace_s)
        if (
            current is not None
            and current["revoked_at"] is None
            and current["previous_refresh_jti"] == payload["jti"]
            and utc_now() - current["refreshed_at"] <= grace
        ):
            return tokens.token_pair(payload["uid"], payload["lid"], current["refresh_jti"])
        await revoke_logins(database, logins.c.id == login_row["id"], "refresh_reuse")
        await audit(
            request,
            "refresh_reuse",
            ok=False,
            user_id=payload["uid"],
            target=f"login {login_row['id']}",
        )
        raise APIError(
            401,
            "refresh_token_reused",
            "Refresh token was already used; this login has been signed out everywhere "
            "for safety. Please sign in again",
            BEARER_CHALLENGE,
        )
    return tokens.token_pair(payload["uid"], payload["lid"], new_jti)


@endpoint(
    "Sign out the login of the access token, of the refresh token given, or both",
    ok=(204, None),
    auth=None,
    body=LogoutBody,
    errors={401: "Neither a live access token nor a valid refresh token"},
)
async def logout(request: Request, body: LogoutBody) -> Response:
    """A refresh token alone ends its login (a client whose access token expired can still
    sign out); given with an access token, it counts only if it is hers."""
    signed_in = request.user.is_authenticated
    user_id = request.user.id if signed_in else None
    ended = [logins.c.id == request.user.login_id] if signed_in else []
    refresh_error = None
    if body.refresh_token is not None:
        try:
            payload = request.app.state.tokens.load_refresh(body.refresh_token)
        except InvalidToken as error:
            refresh_error = error
        else:
            if user_id in (None, payload["uid"]):
                user_id = payload["uid"]
                ended.append(logins.c.login_key == payload["lid"])
    if not ended:
        if refresh_error is not None:
            raise APIError(401, refresh_error.code, str(refresh_error), BEARER_CHALLENGE)
        raise APIError(401, request.user.code, request.user.reason, BEARER_CHALLENGE)
    await revoke_logins(
        request.app.state.database,
        sa.and_(logins.c.user_id == user_id, sa.or_(*ended)),
        "logout",
    )
    await audit(request, "logout", ok=True, user_id=user_id)
    return Response(status_code=204)


@endpoint("The signed-in user", ok=(200, UserOut))
async def auth_me(request: Request) -> Any:
    return request.user.account


# ── Handlers: users ──────────────────────────────────────────────────────────────────────


@endpoint(
    "Change name, email or password (email and password need current_password)",
    ok=(200, UserOut),
    body=UserUpdateBody,
    errors={403: "Current password is incorrect", 409: "Email taken"},
)
async def update_me(request: Request, body: UserUpdateBody) -> Any:
    database = request.app.state.database
    given = body.model_fields_set
    changes: dict[str, Any] = {}
    if "name" in given:
        changes["name"] = body.name
    if "time_zone" in given:
        changes["time_zone"] = body.time_zone
    if "retention_days" in given:
        changes["retention_days"] = body.retention_days
    if given & {"email", "password"}:
        if body.current_password is None:
            raise RequestValidationError(
                [
                    {
                        "loc": ("current_password",),
                        "msg": "current_password is required to change email or password",
                        "type": "missing",
                    }
                ],
                "body",
            )
        password_hash = await database.fetch_val(
            sa.select(users.c.password_hash).where(users.c.id == request.user.id)
        )
        if not await verify_password(body.current_password, password_hash):
            for field in sorted(given & {"email", "password"}):
                await audit(request, f"{field}_change", ok=False)
            raise APIError(403, "wrong_password", "Current password is incorrect")
    if body.email is not None and body.email != request.user.account["email"]:
        if await email_taken(database, body.email):
            raise APIError(409, "email_taken", "An account with this email already exists")
        changes["email"] = body.email
    if body.password is not None:
        changes["password_hash"] = await hash_password(
            body.password, request.app.state.settings.bcrypt_rounds
        )
    if not changes:
        return request.user.account
    try:
        row = await database.fetch_one(
            users.update()
            .where(users.c.id == request.user.id)
            .values(**changes, updated_at=utc_now())
            .returning(*users.c)
        )
    except UNIQUE_VIOLATIONS:
        raise APIError(409, "email_taken", "An account with this email already exists") from None
    if "password_hash" in changes:
        await revoke_logins(
            database,
            sa.and_(logins.c.user_id == request.user.id, logins.c.id != request.user.login_id),
            "password_change",
        )
        await audit(request, "password_change", ok=True)
    if "email" in changes:
        await audit(request, "email_change", ok=True)
    return row


@endpoint("Delete the account and everything it owns", ok=(204, None))
async def delete_me(request: Request) -> Response:
    # Profile, periods, moods, models, predictions and logins go with it (ON DELETE CASCADE).
    await request.app.state.database.execute(users.delete().where(users.c.id == request.user.id))
    await audit(request, "account_deletion", ok=True)
    return Response(status_code=204)


@endpoint("Everything the user owns", ok=(200, ExportOut))
async def export_me(request: Request) -> Any:
    """Everything she owns, and only that: models as metadata, never their bytes."""
    database, user_id = request.app.state.database, request.user.id

    async def owned(table: sa.Table, *order: Any) -> list:
        return await database.fetch_large(
            table.select().where(table.c.user_id == user_id).order_by(*order)
        )

    profile = await fetch_profile(database, user_id)
    periods = await owned(period_records, period_records.c.start_date.desc())
    moods = await owned(daily_moods, daily_moods.c.date.desc())
    served = await database.fetch_large(
        sa.select(*HISTORY_COLUMNS)
        .select_from(HISTORY_SOURCE)
        .where(predictions.c.user_id == user_id)
        .order_by(predictions.c.date.desc(), predictions.c.id.desc())
    )
    models = await database.fetch_all(
        sa.select(*MODEL_METADATA_COLUMNS)
        .where(user_models.c.user_id == user_id)
        .order_by(user_models.c.version.desc())
    )
    signs = await owned(observations, observations.c.date.desc())
    calendar = CycleCalendar.build(
        [PeriodSpan(row["start_date"], row["end_date"]) for row in periods],
        profile,
        [FertilitySign(**{name: row[name] for name in SIGN_FIELDS}) for row in signs],
        request.app.state.cycle_prior,
    )
    await audit(request, "export", ok=True)
    return {
        "user": request.user.account,
        "profile": profile,
        "periods": [period_out(row, calendar) for row in periods],
        "moods": [mood_out(row, calendar) for row in moods],
        "observations": signs,
        "predictions": served,
        "models": models,
    }


IMPORT_MEDIA_TYPES = (
    "application/octet-stream, text/csv, application/json, application/gzip, application/xml, "
    "application/zip, or multipart/form-data with one file field"
)


@contextlib.asynccontextmanager
async def uploaded_file(request: Request):
    """The request's file, spooled to a temporary file past IMPORT_SPOOL_BYTES: the body
    itself, or the one file of a multipart form."""
    if request.headers.get("Content-Type", "").startswith("multipart/form-data"):
        try:
            async with request.form(max_files=1, max_fields=10) as form:
                files = [value for value in form.values() if isinstance(value, UploadFile)]
                if len(files) != 1:
                    raise APIError(
                        422, "malformed_file", "Send one file (a multipart form with one file)"
                    )
                yield files[0].file
                return
        except HTTPException as error:
            if isinstance(error, APIError):
                raise
            raise APIError(400, "malformed_body", "The multipart form is malformed") from None
    with tempfile.SpooledTemporaryFile(IMPORT_SPOOL_BYTES) as spool:
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
        yield spool


async def read_her_file(request: Request, format_name: str | None) -> ImportedHistory:
    """Her file as history, parsed off the event loop; 413 or 422 for a file we cannot take."""
    max_unpacked = request.app.state.settings.import_max_unpacked_bytes
    async with uploaded_file(request) as file:
        try:
            return await run_in_threadpool(read_import, file, format_name, max_unpacked)
        except UnknownFormat:
            raise APIError(
                422,
                "unknown_format",
                "The file is in none of the formats PlanHer reads (tried: "
                + ", ".join(typing.get_args(ImportFormat))
                + "); name one with ?format= if it is one of them",
            ) from None
        except MalformedFile as error:
            raise APIError(422, "malformed_file", f"The file cannot be imported: {error}") from None
        except FileTooLarge:
            raise APIError(
                413,
                "file_too_large",
                f"The file unpacks to more than {max_unpacked} bytes, or suspiciously much "
                "for its size (a zip bomb?)",
            ) from None


async def import_plan(
    request: Request, history: ImportedHistory, today: dt.date, keep_from: dt.date | None
) -> ImportPlan:
    database, user_id = request.app.state.database, request.user.id
    calendar = await her_calendar(request)  # her periods and profile, read once

    async def dates_of(table: sa.Table) -> set[dt.date]:
        rows = await database.fetch_large(sa.select(table.c.date).where(table.c.user_id == user_id))
        return {row["date"] for row in rows}

    return plan_import(
        history,
        calendar,
        await dates_of(daily_moods),
        await dates_of(observations),
        calendar.profile is not None,
        today,
        keep_from,
    )


@endpoint(
    "Import her history from another tracker's file or a PlanHer export",
    ok=(200, ImportReportOut),
    query=ImportQuery,
    upload=IMPORT_MEDIA_TYPES,
    errors={
        413: "The file is over IMPORT_MAX_BYTES, or unpacks to too much",
        422: "Not a format PlanHer reads, or malformed (`detail` says where)",
    },
)
async def import_me(request: Request, query: ImportQuery) -> Any:
    """What she already has wins; all or nothing; her model retrains once, afterwards."""
    history = await read_her_file(request, query.format)
    database, user_id, now = request.app.state.database, request.user.id, utc_now()
    today, retention_days = her_today(request), request.user.account["retention_days"]
    keep_from = None if retention_days is None else today - dt.timedelta(days=retention_days)
    if query.dry_run:
        plan = await import_plan(request, history, today, keep_from)
        return import_report(history, plan, dry_run=True)
    stamps = {"user_id": user_id, "created_at": now, "updated_at": now}
    async with user_write_transaction(database, user_id):
        plan = await import_plan(request, history, today, keep_from)
        if plan.profile is not None:
            await database.execute(user_profiles.insert().values(**stamps, **plan.profile))
        if plan.periods:
            await database.execute(
                period_records.insert(),
                [
                    {**stamps, "start_date": p.start, "end_date": p.end, "notes": p.notes}
                    for p in plan.periods
                ],
            )
        if plan.moods:
            await database.execute(
                daily_moods.insert(),
                [
                    {
                        **stamps,
                        "date": mood.date,
                        "energy_level": mood.energy_level,
                        "notes": mood.notes,
                        "day_of_cycle": mood.day_of_cycle,
                    }
                    for mood in plan.moods
                ],
            )
        if plan.observations:
            await database.execute(
                observations.insert(),
                [{**stamps, **dataclasses.asdict(sign)} for sign in plan.observations],
            )
    await audit(request, "import", ok=True, target=history.format)
    if plan.periods or plan.moods:
        request.app.state.trainer.schedule(user_id, force=True)
    return import_report(history, plan, dry_run=False)


def calendar_feed_hash(feed_token: str) -> str:
    return hashlib.sha256(feed_token.encode("utf-8")).hexdigest()


@endpoint(
    "Create her secret calendar feed URL (a new one replaces the old)", ok=(201, CalendarFeedOut)
)
async def create_calendar_feed(request: Request) -> Any:
    database, user_id = request.app.state.database, request.user.id
    feed_token = secrets.token_urlsafe(CALENDAR_FEED_TOKEN_BYTES)
    async with user_write_transaction(database, user_id):
        await database.execute(calendar_feeds.delete().where(calendar_feeds.c.user_id == user_id))
        await database.execute(
            calendar_feeds.insert().values(
                user_id=user_id, token_hash=calendar_feed_hash(feed_token), created_at=utc_now()
            )
        )
    await audit(request, "calendar_feed_created", ok=True)
    return {"url": f"{request.base_url}calendar/{feed_token}.ics"}


@endpoint("Revoke her calendar feed URL", ok=(204, None))
async def delete_calendar_feed(request: Request) -> Response:
    await request.app.state.database.execute(
        calendar_feeds.delete().where(calendar_feeds.c.user_id == request.user.id)
    )
    await audit(request, "calendar_feed_revoked", ok=True)
    return Response(status_code=204)


CALENDAR_FEED_OWNER = (
    sa.select(users.c.id, users.c.time_zone, users.c.created_at)
    .select_from(users.join(calendar_feeds, calendar_feeds.c.user_id == users.c.id))
    .where(calendar_feeds.c.token_hash == sa.bindparam("token_hash"))
)


@endpoint(
    "Her calendar of periods, predictions and fertile windows (the feed URL is the key)",
    ok=(200, str),
    auth=None,
    media_type="text/calendar",
    errors={404: "No such feed, or revoked", 503: "The database is unavailable"},
)
async def calendar_feed(request: Request) -> Response:
    database = request.app.state.database
    owner = await database.fetch_one(
        CALENDAR_FEED_OWNER,
        {"token_hash": calendar_feed_hash(request.path_params["feed_token"])},
    )
    if owner is None:
        raise APIError(404, "not_found", "No such calendar feed: it may have been revoked")
    periods = await database.fetch_large(
        sa.select(period_records.c.id, period_records.c.start_date, period_records.c.end_date)
        .where(period_records.c.user_id == owner["id"])
        .order_by(period_records.c.start_date)
    )
    calendar = CycleCalendar.build(
        [PeriodSpan(row["start_date"], row["end_date"]) for row in periods],
        await fetch_profile(database, owner["id"]),
        await fetch_signs(database, owner["id"]),
        request.app.state.cycle_prior,
    )
    # Opaque, stable per user, and no use to anyone: UIDs must not carry her account id.
    feed_key = hashlib.sha256(f"{owner['id']}:{owner['created_at']}".encode()).hexdigest()[:16]
    body = calendar_feed_ics(periods, calendar, today_in(owner["time_zone"]), feed_key, utc_now())
    return Response(body, media_type="text/calendar; charset=utf-8")


# ── Handlers: profiles ───────────────────────────────────────────────────────────────────

NO_PROFILE = "No profile yet: create one first"


@endpoint("Her profile", ok=(200, ProfileOut), errors={404: "No profile yet"})
async def get_profile(request: Request) -> Any:
    profile = await fetch_profile(request.app.state.database, request.user.id)
    if profile is None:
        raise APIError(404, "not_found", NO_PROFILE)
    return profile


@endpoint(
    "Create her profile (201), or replace it whole (200)",
    ok=(201, ProfileOut),
    body=ProfileBody,
    errors={200: "Replaced"},
)
async def create_profile(request: Request, body: ProfileBody) -> Any:
    fields = body.model_dump()
    if problems := profile_problems(fields):
        raise rule_errors(problems)
    database, user_id, now = request.app.state.database, request.user.id, utc_now()
    async with user_write_transaction(database, user_id):
        if await fetch_profile(database, user_id) is None:
            row = await database.fetch_one(
                user_profiles.insert()
                .values(user_id=user_id, **fields, created_at=now, updated_at=now)
                .returning(*user_profiles.c)
            )
            return row
        row = await database.fetch_one(
            user_profiles.update()
            .where(user_profiles.c.user_id == user_id)
            .values(**fields, updated_at=now)
            .returning(*user_profiles.c)
        )
    return Reply(row, 200)  # replaced


@endpoint(
    "Change some profile fields",
    ok=(200, ProfileOut),
    body=ProfileUpdateBody,
    errors={404: "No profile yet"},
)
async def update_profile(request: Request, body: ProfileUpdateBody) -> Any:
    changes = body.model_dump(include=body.model_fields_set)
    database, user_id = request.app.state.database, request.user.id
    async with user_write_transaction(database, user_id):
        current = await fetch_profile(database, user_id)
        if current is None:
            raise APIError(404, "not_found", NO_PROFILE)
        if problems := profile_problems({**current, **changes}):
            raise rule_errors(problems)
        row = await database.fetch_one(
            user_profiles.update()
            .where(user_profiles.c.user_id == user_id)
            .values(**changes, updated_at=utc_now())
            .returning(*user_profiles.c)
        )
    return row


# ── Handlers: periods ────────────────────────────────────────────────────────────────────


def period_out(row: Mapping[str, Any], calendar: CycleCalendar) -> dict[str, Any]:
    """Her period as stored, with what only her other periods can tell: its cycle length."""
    return {**row, "cycle_length": calendar.cycle_length_from(row["start_date"])}


def overlap_conflict(period: PeriodSpan) -> APIError:
    ends = f" to {period.end}" if period.end else " (no end logged yet)"
    return APIError(
        409,
        "period_overlap",
        f"This period overlaps the one from {period.start}{ends}; edit that one instead",
    )


@endpoint("Her periods, newest first", ok=(200, list[PeriodOut]), query=ListQuery)
async def list_periods(request: Request, query: ListQuery) -> Any:
    rows, total = await list_page(request.app.state.database, PERIODS, query, request.user.id)
    calendar = await her_calendar(request)
    return list_response([period_out(row, calendar) for row in rows], total)


@endpoint(
    "Log a period",
    ok=(201, PeriodOut),
    body=PeriodBody,
    errors={409: "Overlaps a logged period"},
)
async def create_period(request: Request, body: PeriodBody) -> Any:
    if problems := period_problems(body.start_date, body.end_date, her_today(request)):
        raise rule_errors(problems)
    database, user_id, now = request.app.state.database, request.user.id, utc_now()
    try:
        async with user_write_transaction(database, user_id):
            calendar = await her_calendar(request)
            if clash := calendar.overlapping(PeriodSpan(body.start_date, body.end_date)):
                raise overlap_conflict(clash)
            row = await database.fetch_one(
                period_records.insert()
                .values(user_id=user_id, **body.model_dump(), created_at=now, updated_at=now)
                .returning(*period_records.c)
            )
    except UNIQUE_VIOLATIONS:  # the same start logged twice at once
        raise APIError(
            409, "period_overlap", "A period starting on that day is already logged"
        ) from None
    return period_out(row, calendar)


@endpoint(
    "Change a period",
    ok=(200, PeriodOut),
    body=PeriodUpdateBody,
    errors={404: "Period not found", 409: "Overlaps a logged period"},
)
async def update_period(request: Request, body: PeriodUpdateBody) -> Any:
    period_id = path_id(request)
    changes = body.model_dump(include=body.model_fields_set)
    database, user_id = request.app.state.database, request.user.id
    async with user_write_transaction(database, user_id):
        current = await fetch_owned(database, period_records, period_id, user_id, "Period")
        updated = PeriodSpan(
            changes.get("start_date", current["start_date"]),
            changes.get("end_date", current["end_date"]),
        )
        if problems := period_problems(updated.start, updated.end, her_today(request)):
            raise rule_errors(problems)
        calendar = await her_calendar(request)
        if clash := calendar.overlapping(updated, ignore_start=current["start_date"]):
            raise overlap_conflict(clash)
        row = await database.fetch_one(
            period_records.update()
            .where(period_records.c.id == period_id)
            .values(**changes, updated_at=utc_now())
            .returning(*period_records.c)
        )
    moved = [period for period in calendar.periods if period.start != current["start_date"]]
    calendar = CycleCalendar.build([*moved, updated], calendar.profile, prior=calendar.prior)
    return period_out(row, calendar)


@endpoint("Delete a period", ok=(204, None), errors={404: "Period not found"})
async def delete_period(request: Request) -> Response:
    return await delete_owned(request, period_records, "Period")


# ── Handlers: moods ──────────────────────────────────────────────────────────────────────


def mood_out(row: Mapping[str, Any], calendar: CycleCalendar) -> dict[str, Any]:
    """Her mood as stored, with its cycle day and phase as her periods now place it."""
    cycle = mood_cycle_day(calendar, row["date"], row["day_of_cycle"])
    return {
        **row,
        "day_of_cycle": None if cycle is None else cycle.day_of_cycle,
        "phase": None if cycle is None else cycle.phase,
    }


def check_not_in_the_future(date: dt.date, today: dt.date) -> None:
    if date > today:
        raise rule_errors([("date", f"date may not be in the future (after {today})")])


def mood_conflict(date: dt.date) -> APIError:
    return APIError(409, "mood_exists", f"A mood is already logged for {date}; change that one")


@endpoint("Her moods, newest first", ok=(200, list[MoodOut]), query=ListQuery)
async def list_moods(request: Request, query: ListQuery) -> Any:
    rows, total = await list_page(request.app.state.database, MOODS, query, request.user.id)
    calendar = await her_calendar(request)
    return list_response([mood_out(row, calendar) for row in rows], total)


@endpoint(
    "Log a day's energy",
    ok=(201, MoodOut),
    body=MoodBody,
    errors={409: "A mood is already logged for that date"},
)
async def create_mood(request: Request, body: MoodBody) -> Any:
    today = her_today(request)
    fields = {**body.model_dump(), "date": body.date or today}
    check_not_in_the_future(fields["date"], today)
    database, user_id, now = request.app.state.database, request.user.id, utc_now()
    try:
        async with user_write_transaction(database, user_id):
            if await logged_on(database, daily_moods, user_id, fields["date"]):
                raise mood_conflict(fields["date"])
            row = await database.fetch_one(
                daily_moods.insert()
                .values(user_id=user_id, **fields, created_at=now, updated_at=now)
                .returning(*daily_moods.c)
            )
    except UNIQUE_VIOLATIONS:
        raise mood_conflict(fields["date"]) from None
    request.app.state.trainer.schedule(user_id)
    return mood_out(row, await her_calendar(request))


@endpoint(
    "Change a mood",
    ok=(200, MoodOut),
    body=MoodUpdateBody,
    errors={404: "Mood not found", 409: "A mood is already logged for that date"},
)
async def update_mood(request: Request, body: MoodUpdateBody) -> Any:
    mood_id = path_id(request)
    changes = body.model_dump(include=body.model_fields_set)
    database, user_id = request.app.state.database, request.user.id
    async with user_write_transaction(database, user_id):
        current = await fetch_owned(database, daily_moods, mood_id, user_id, "Mood")
        if "date" in changes and changes["date"] != current["date"]:
            check_not_in_the_future(changes["date"], her_today(request))
            if await logged_on(database, daily_moods, user_id, changes["date"]):
                raise mood_conflict(changes["date"])
        row = await database.fetch_one(
            daily_moods.update()
            .where(daily_moods.c.id == mood_id)
            .values(**changes, updated_at=utc_now())
            .returning(*daily_moods.c)
        )
    request.app.state.trainer.schedule(user_id)
    return mood_out(row, await her_calendar(request))


@endpoint("Delete a mood", ok=(204, None), errors={404: "Mood not found"})
async def delete_mood(request: Request) -> Response:
    response = await delete_owned(request, daily_moods, "Mood")
    request.app.state.trainer.schedule(request.user.id)
    return response


# ── Handlers: observations ───────────────────────────────────────────────────────────────


def check_signs(fields: Mapping[str, Any]) -> None:
    if all(fields.get(name) is None for name in OBSERVATION_SIGNS):
        message = "Give at least one of lh_test, bbt_celsius and cervical_mucus"
        raise RequestValidationError([{"loc": (), "msg": message, "type": "missing"}], "body")


def observation_conflict(date: dt.date) -> APIError:
    return APIError(
        409, "observation_exists", f"An observation is already logged for {date}; change that one"
    )


@endpoint(
    "Her fertility observations, newest first", ok=(200, list[ObservationOut]), query=ListQuery
)
async def list_observations(request: Request, query: ListQuery) -> Any:
    rows, total = await list_page(request.app.state.database, OBSERVATIONS, query, request.user.id)
    return list_response(rows, total)


@endpoint(
    "Log a day's fertility signs (an LH test, her temperature, her mucus)",
    ok=(201, ObservationOut),
    body=ObservationBody,
    errors={409: "An observation is already logged for that date"},
)
async def create_observation(request: Request, body: ObservationBody) -> Any:
    today = her_today(request)
    fields = {**body.model_dump(), "date": body.date or today}
    check_not_in_the_future(fields["date"], today)
    check_signs(fields)
    database, user_id, now = request.app.state.database, request.user.id, utc_now()
    try:
        async with user_write_transaction(database, user_id):
            if await logged_on(database, observations, user_id, fields["date"]):
                raise observation_conflict(fields["date"])
            return await database.fetch_one(
                observations.insert()
                .values(user_id=user_id, **fields, created_at=now, updated_at=now)
                .returning(*observations.c)
            )
    except UNIQUE_VIOLATIONS:
        raise observation_conflict(fields["date"]) from None


@endpoint(
    "Change an observation",
    ok=(200, ObservationOut),
    body=ObservationUpdateBody,
    errors={404: "Observation not found", 409: "An observation is already logged for that date"},
)
async def update_observation(request: Request, body: ObservationUpdateBody) -> Any:
    observation_id = path_id(request)
    changes = body.model_dump(include=body.model_fields_set)
    database, user_id = request.app.state.database, request.user.id
    async with user_write_transaction(database, user_id):
        current = await fetch_owned(database, observations, observation_id, user_id, "Observation")
        check_signs({**current, **changes})
        if "date" in changes and changes["date"] != current["date"]:
            check_not_in_the_future(changes["date"], her_today(request))
            if await logged_on(database, observations, user_id, changes["date"]):
                raise observation_conflict(changes["date"])
        return await database.fetch_one(
            observations.update()
            .where(observations.c.id == observation_id)
            .values(**changes, updated_at=utc_now())
            .returning(*observations.c)
        )


@endpoint("Delete an observation", ok=(204, None), errors={404: "Observation not found"})
async def delete_observation(request: Request) -> Response:
    return await delete_owned(request, observations, "Observation")


# ── Handlers: predictions ────────────────────────────────────────────────────────────────

NOTHING_TO_PREDICT_FROM = (
    "Nothing to predict from yet: log the first day of your last period, or create your profile"
)


def prediction_json(
    date: dt.date,
    cycle: CycleDay | None,
    outlook: dict[str, Any],
    energy: tuple[tuple[float, float, float], EnergyModel],
) -> dict[str, Any]:
    probabilities, model = energy
    return {
        "date": date,
        "day_of_cycle": None if cycle is None else cycle.day_of_cycle,
        "phase": None if cycle is None else cycle.phase,
        "cycle": outlook,
        "energy": energy_json(probabilities),
        "model": model,
    }


async def prediction_inputs(request: Request) -> tuple[CycleCalendar, EnergyModel]:
    user_id = request.user.id
    calendar = await her_calendar(request)
    if not calendar.periods and calendar.profile is None:
        raise APIError(409, "nothing_to_predict_from", NOTHING_TO_PREDICT_FROM)
    return calendar, await active_model(request.app, user_id)


@endpoint(
    "Her cycle and energy today (or on `date`); recorded for the history",
    ok=(200, PredictionOut),
    query=PredictionQuery,
    errors={409: "Neither a period nor a profile to predict from"},
)
async def current_prediction(request: Request, query: PredictionQuery) -> Any:
    today = her_today(request)
    date = query.date or today
    calendar, model = await prediction_inputs(request)
    cycle = calendar.cycle_day(date, today)
    [energy] = predict_energy(model, [cycle], calendar.profile)
    prediction = prediction_json(date, cycle, calendar.outlook(date, today), energy)
    served = prediction["energy"]
    await request.app.state.database.execute(
        predictions.insert().values(
            user_id=request.user.id,
            date=date,
            day_of_cycle=prediction["day_of_cycle"],
            phase=prediction["phase"],
            predicted_level=served["level"],
            confidence=served["confidence"],
            model_version=energy[1].version,
            source=energy[1].source,
            created_at=utc_now(),
        )
    )
    return prediction


@endpoint(
    "One prediction per day from today",
    ok=(200, list[PredictionOut]),
    query=ForecastQuery,
    errors={409: "Neither a period nor a profile to predict from"},
)
async def forecast(request: Request, query: ForecastQuery) -> Any:
    today = her_today(request)
    first = query.date or today
    calendar, model = await prediction_inputs(request)
    dates = [first + dt.timedelta(days=offset) for offset in range(query.days)]
    cycles = [calendar.cycle_day(date, today) for date in dates]
    energies = predict_energy(model, cycles, calendar.profile)  # one batch for all days
    return [
        prediction_json(date, cycle, calendar.outlook(date, today), energy)
        for date, cycle, energy in zip(dates, cycles, energies, strict=True)
    ]


@endpoint(
    "Predictions served, scored once the day's mood is logged",
    ok=(200, list[PredictionHistoryOut]),
    query=ListQuery,
)
async def prediction_history(request: Request, query: ListQuery) -> Any:
    rows, total = await list_page(
        request.app.state.database, PREDICTION_HISTORY, query, request.user.id
    )
    return list_response(rows, total)


RETRAIN_QUEUED = (
    "Your model is being updated with your latest days right now; this training follows "
    "it, and your predictions use the result within a minute"
)
RETRAIN_RUNNING = (
    "Your model is being trained right now; your predictions use the result within a minute"
)


@endpoint(
    "Train her energy model now",
    ok=(200, ModelSummaryOut),
    accepted=RetrainStateOut,
    errors={409: "Too little data (says how many more days to log)"},
)
async def retrain(request: Request) -> Any:
    as_of = utc_now()
    samples = await training_samples(request.app.state.database, request.user.id)
    levels = [level for *_, level in samples]
    if missing := days_missing_for_a_model(levels):
        raise APIError(
            409,
            "not_enough_data",
            f"Log {missing} more day{'s' if missing > 1 else ''} of energy to train "
            f"your own model: it needs {PERSONAL_MIN_DAYS} days whose cycle day is known "
            f"(a period logged before them), with at least {MIN_DISTINCT_LEVELS} different "
            f"levels; you have {len(levels)}",
        )
    trainer = request.app.state.trainer
    if trainer.is_busy(request.user.id):  # a background pass: this training follows it
        trainer.schedule(request.user.id, force=True)
        return Reply({"state": "queued", "detail": RETRAIN_QUEUED}, 202)
    try:
        row = await train_and_store(request.app, request.user.id, samples, as_of)
    except TrainingBusy:  # another worker or instance holds her model's training claim
        return Reply({"state": "running", "detail": RETRAIN_RUNNING}, 202)
    await audit(request, "retrain", ok=True, target=f"model version {row['version']}")
    return row


# ── Handlers: admin ──────────────────────────────────────────────────────────────────────


@endpoint(
    "Every account, newest first: account fields only",
    ok=(200, list[UserOut]),
    auth="admin",
    query=ListQuery,
)
async def admin_users(request: Request, query: ListQuery) -> Any:
    rows, total = await list_page(request.app.state.database, ACCOUNTS, query)
    return list_response(rows, total)


@endpoint(
    "Security events, newest first", ok=(200, list[AuditEventOut]), auth="admin", query=ListQuery
)
async def admin_audit(request: Request, query: ListQuery) -> Any:
    rows, total = await list_page(request.app.state.database, AUDIT_EVENTS, query)
    return list_response(rows, total)


# ── Handlers: service ────────────────────────────────────────────────────────────────────


@endpoint("Liveness: the process answers (no database call)", ok=(200, LivenessOut), auth=None)
async def health(request: Request) -> Any:
    return {"status": "ok", "version": __version__}


@endpoint(
    "Readiness: the database answers and a write could begin",
    ok=(200, ReadinessOut),
    auth=None,
    errors={503: "The database is unavailable or too slow"},
)
async def health_ready(request: Request) -> Any:
    await request.app.state.database.check_writable()
    return {"status": "ok", "database": "ok", "version": __version__}


def _defaults_described(schema: dict[str, Any]) -> dict[str, Any]:
    """A request schema without `default`s: a field that may be left out is simply not
    required, and the value the server then uses is said in words. (Generators such as
    openapi-typescript take a `default` to mean the field is always there, and a
    `default: null` on a field that refuses null contradicts itself.)"""
    for field in schema.get("properties", {}).values():
        if "default" in field and (default := field.pop("default")) is not None:
            said = f"Left out: {json.dumps(default)}."
            field["description"] = (
                f"{field['description']} {said}" if "description" in field else said
            )
    return schema


def _schema_reference(annotation: Any, mode: str, components: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a model or list of models, its models moved to `components`;
    request schemas (mode `validation`) carry no defaults."""
    schema = TypeAdapter(annotation).json_schema(
        mode=mode, ref_template="#/components/schemas/{model}"
    )
    components.update(schema.pop("$defs", {}))
    if mode == "validation":
        _defaults_described(schema)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        components[annotation.__name__] = schema
        return {"$ref": f"#/components/schemas/{annotation.__name__}"}
    return schema


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation_document(
    operation: Operation, path: str, components: dict[str, Any]
) -> dict[str, Any]:
    error = _schema_reference(ErrorOut, "serialization", components)
    responses: dict[str, Any] = {}

    def answer(status: int, description: str, schema: dict[str, Any] | None = error, **extra):
        responses[str(status)] = {"description": description, **extra}
        if schema is not None:
            responses[str(status)]["content"] = _json_content(schema)

    success = None
    if operation.ok_schema is not None:
        success = _schema_reference(operation.ok_schema, "serialization", components)
    for status, description in [(operation.ok_status, "Success"), *operation.errors.items()]:
        if status < 300:  # a success: the endpoint's own body
            answer(status, description, None)
            if success is not None:
                responses[str(status)]["content"] = {operation.media_type: {"schema": success}}
            if typing.get_origin(operation.ok_schema) is list:
                responses[str(status)]["headers"] = {
                    "X-Total-Count": {
                        "description": "How many items match, on every page",
                        "schema": {"type": "integer", "minimum": 0},
                    }
                }
        elif status == 422:  # its own 422s besides the validation errors
            answer(
                422,
                description,
                {
                    "anyOf": [
                        _schema_reference(ValidationErrorOut, "serialization", components),
                        error,
                    ]
                },
            )
        else:
            answer(status, description)
    if operation.accepted is not None:
        answer(
            202,
            "Accepted: the work goes on in the background",
            _schema_reference(operation.accepted, "serialization", components),
        )
    if operation.auth is not None:
        answer(
            401,
            "Missing, invalid, expired or revoked token",
            headers={"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
        )
    if operation.auth == "admin":
        answer(403, "Not an admin")
    if "{id}" in path and 404 not in operation.errors:
        answer(404, "Not found, or not hers")
    if operation.body is not None:
        answer(400, "Malformed JSON")
        answer(413, "Body over 1 MiB")
    if operation.upload is not None:
        answer(400, "Malformed multipart form")
    if (operation.body is not None or operation.query is not None) and 422 not in operation.errors:
        answer(
            422,
            "Validation error",
            _schema_reference(ValidationErrorOut, "serialization", components),
        )
    retry_after = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
    if operation.auth is not None or 429 in operation.errors:
        answer(429, "Rate limited", headers=retry_after)
    if operation.auth is not None or operation.body is not None or 503 in operation.errors:
        answer(503, "The database is unavailable or too slow", headers=retry_after)

    document: dict[str, Any] = {"summary": operation.summary, "responses": responses}
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": (
                {"type": "integer", "minimum": 1, "maximum": MAX_DATABASE_ID}
                if name == "id"
                else {"type": "string"}
            ),
        }
        for name in re.findall(r"\{(\w+)\}", path)
    ]
    if operation.query is not None:
        query_schema = _defaults_described(operation.query.model_json_schema(by_alias=True))
        for name, field in operation.query.model_fields.items():
            alias = field.alias or name
            parameters.append(
                {
                    "name": alias,
                    "in": "query",
                    "required": field.is_required(),
                    "schema": query_schema["properties"][alias],
                }
            )
    if parameters:
        document["parameters"] = parameters
    if operation.body is not None:
        content = _json_content(_schema_reference(operation.body, "validation", components))
        if operation.form is not None:
            # Said in words, not as a second content type: generators make a body that is
            # JSON or a form into a client that does not import (openapi-python-client 0.29).
            fields = ", ".join(operation.form.model_fields)
            document["description"] = (
                "Also takes the OAuth2 password flow's form "
                f"(`application/x-www-form-urlencoded`: {fields}), which the docs page's "
                "Authorize button sends."
            )
        # A body whose fields are all optional may be left out: it means `{}`.
        required = any(field.is_required() for field in operation.body.model_fields.values())
        document["requestBody"] = {"required": required, "content": content}
    if operation.upload is not None:
        # One binary content type: what every client generator turns into "send this file".
        document["description"] = f"The file as the body: {operation.upload}."
        document["requestBody"] = {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    if operation.auth is not None:
        document["security"] = [{"OAuth2PasswordBearer": []}]
    return document


API_GROUPS = (
    "auth",
    "users",
    "profiles",
    "periods",
    "moods",
    "observations",
    "predictions",
    "admin",
)


def _enums_named(document: Any, enums: Mapping[str, Any]) -> Any:
    """The document with every inline enum of `enums` (name → Literal) replaced by a
    reference to one component of that name, so generated clients get one type each."""
    by_values = {tuple(typing.get_args(literal)): name for name, literal in enums.items()}

    def named(node: Any) -> Any:
        if isinstance(node, list):
            return [named(item) for item in node]
        if not isinstance(node, dict):
            return node
        if (name := by_values.get(tuple(node.get("enum", ())))) is not None:
            return {"$ref": f"#/components/schemas/{name}"} | (
                {"description": node["description"]} if "description" in node else {}
            )
        return {key: named(value) for key, value in node.items()}

    document = named(document)
    for name, literal in enums.items():
        values = list(typing.get_args(literal))
        kind = "integer" if isinstance(values[0], int) else "string"
        document["components"]["schemas"][name] = {"title": name, "type": kind, "enum": values}
    document["components"]["schemas"] = dict(sorted(document["components"]["schemas"].items()))
    return document


def openapi_document(routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route, from the models the handlers validate with."""
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for route in routes:
        if not route.include_in_schema:
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method, handler in route.handlers.items():
            document = _operation_document(handler.operation, path, components)
            # Stable and unique: the method and the path (`get_periods`, `put_periods_id`).
            document["operationId"] = re.sub(r"\W+", "_", f"{method} {path}").strip("_")
            group = path.strip("/").split("/")[0]
            group = "users" if group == "calendar" else group  # her feed, in the contract's users
            document["tags"] = [group if group in API_GROUPS else "service"]
            paths.setdefault(path, {})[method] = document
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "PlanHer",
            "version": __version__,
            "description": "Cycle and energy tracking. Authorize with your email and password.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "OAuth2PasswordBearer": {
                    "type": "oauth2",
                    "flows": {"password": {"tokenUrl": "/auth/login", "scopes": {}}},
                }
            },
        },
    }
    return _enums_named(document, DOCUMENTED_ENUMS)


@endpoint("This document", ok=(200, dict[str, Any]), auth=None)
async def openapi_json(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


# Swagger UI is served from the pinned swagger-ui-py package, so /docs works with no network,
# and its page may run nothing but those files (the Content-Security-Policy says so).
SWAGGER_UI_DIR = Path(str(importlib.resources.files("swagger_ui") / "static"))
SWAGGER_UI_FILES = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}
SWAGGER_UI_START = (
    'window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", '
    "persistAuthorization: true});"
)
SWAGGER_UI_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PlanHer API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/start.js"></script>
</body></html>"""
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@endpoint("Swagger UI for this API", ok=(200, str), auth=None, media_type="text/html")
async def docs(request: Request) -> Response:
    return HTMLResponse(
        SWAGGER_UI_PAGE, headers={"Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY}
    )


async def docs_asset(request: Request) -> Response:
    """The docs page's files (not part of the API, so not in its document)."""
    name = request.path_params["name"]
    if name == "start.js":
        return Response(SWAGGER_UI_START, media_type="text/javascript")
    if name not in SWAGGER_UI_FILES:
        raise APIError(404, "not_found", "Not found")
    return FileResponse(SWAGGER_UI_DIR / name, media_type=SWAGGER_UI_FILES[name])


# ── Error handlers and middleware ────────────────────────────────────────────────────────

# Health data must never sit in a browser's or proxy's cache.
STANDARD_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def error_response(
    status_code: int, code: str, detail: Any, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    headers = dict(headers or {})
    if status_code == 401:
        headers.update(BEARER_CHALLENGE)
    return JSONResponse({"detail": detail, "code": code}, status_code=status_code, headers=headers)


async def http_error(request: Request, exc: HTTPException) -> Response:
    code = getattr(exc, "code", None) or STATUS_ERROR_CODES.get(exc.status_code, "not_found")
    return error_response(exc.status_code, code, exc.detail, exc.headers)


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    return error_response(422, "validation_error", exc.errors)


async def body_too_large(request: Request, exc: BodyTooLarge) -> Response:
    return error_response(
        413, "body_too_large", f"Request body is larger than {exc.max_bytes} bytes"
    )


async def request_read_timeout(request: Request, exc: RequestReadTimeout) -> Response:
    # The rest of the body may still be on its way: the connection cannot serve another.
    return error_response(
        408, "request_timeout", REQUEST_READ_TIMEOUT_DETAIL, {"Connection": "close"}
    )


async def server_error(request: Request, exc: Exception) -> Response:
    # Runs outside the other middleware, so it sets the standard headers itself.
    return error_response(500, "internal_error", "Internal server error", STANDARD_HEADERS)


class ClientAddressMiddleware:
    """The client's address, as no client can forge it: the connection's peer, unless that
    peer is a proxy listed in FORWARDED_ALLOW_IPS (`*`: whatever its address, as Heroku's
    router); then the rightmost X-Forwarded-For entry that is not a listed proxy, which is
    the address the nearest trusted proxy saw. Entries left of it are the client's own."""

    def __init__(self, app: ASGIApp, trusted: Sequence[str]) -> None:
        self.app = app
        self.any_peer = "*" in trusted
        self.proxies = frozenset(trusted) - {"*"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if scope["type"] == "http" and peer and (self.any_peer or peer[0] in self.proxies):
            forwarded = [
                entry.strip()
                for header in Headers(scope=scope).getlist("x-forwarded-for")
                for entry in header.split(",")
            ]
            for entry in reversed(forwarded):
                if entry not in self.proxies:
                    with contextlib.suppress(ValueError):  # not an address: keep the peer
                        scope = {**scope, "client": (str(ipaddress.ip_address(entry)), 0)}
                    break
        await self.app(scope, receive, send)


class StandardHeadersMiddleware:
    """Adds STANDARD_HEADERS to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(STANDARD_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class DatabaseUnavailableMiddleware:
    """503 with Retry-After for a request that needed the database while it could not
    serve, wherever that was found (in a handler or in the authentication backend)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        response_started = False

        async def send_watching(message: Message) -> None:
            nonlocal response_started
            response_started |= message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_watching)
        except DatabaseUnavailable as error:
            if response_started:
                raise
            scope["app"].state.failure_log.record(error)
            response = error_response(
                503, "database_unavailable", str(error), {"Retry-After": str(RETRY_AFTER_S)}
            )
            await response(scope, receive, send)


class StartupFailed(Exception):
    """The service cannot start; lifespan has logged the one line that says why."""


class QuietStartupFailureMiddleware:
    """Uvicorn prints the traceback that Starlette hands it with a failed start-up. For a
    StartupFailed the line lifespan logged says it all, so the traceback is left out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def send_quietly(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and isinstance(
                sys.exc_info()[1], StartupFailed
            ):
                message = {**message, "message": ""}
            await send(message)

        await self.app(scope, receive, send_quietly)


# The connection (a RequestReadDeadline, when uvicorn runs with it) whose bytes are being
# handed to the app: set while uvicorn parses them, so the request's task inherits it.
READING_CONNECTION: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "reading_connection", default=None
)
REQUEST_READ_TIMEOUT_DETAIL = "The request did not arrive in time; send it again, faster"


class RequestReadTimeoutMiddleware:
    """RequestReadTimeout when the body has not fully arrived `timeout_s` after the headers.
    It also tells the connection's RequestReadDeadline when the app holds the request, so
    the header deadline does not run while the app works."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        connection = READING_CONNECTION.get()
        if connection is not None:
            connection.request_started()
        timeout_s = IMPORT_READ_TIMEOUT_S if scope["path"] == IMPORT_PATH else self.timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s
        body_complete = False

        async def receive_before_deadline() -> Message:
            nonlocal body_complete
            if body_complete:  # what follows is only the client's disconnect
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestReadTimeout() from None
            body_complete = not message.get("more_body", False)
            return message

        try:
            await self.app(scope, receive_before_deadline, send)
        finally:
            if connection is not None:
                connection.request_finished()


class BodySizeLimitMiddleware:
    """413 for bodies over MAX_BODY_BYTES (an import's: IMPORT_MAX_BYTES): at once when
    Content-Length says so, else as soon as the streamed body passes the limit, without
    ever holding more of it."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        import_max_bytes: int = IMPORT_MAX_BYTES,
    ) -> None:
        self.app = app
        self.max_bytes, self.import_max_bytes = max_bytes, import_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        max_bytes = self.import_max_bytes if scope["path"] == IMPORT_PATH else self.max_bytes
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            response = error_response(
                413, "body_too_large", f"Request body is larger than {max_bytes} bytes"
            )
            return await response(scope, receive, send)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise BodyTooLarge(max_bytes)
            return message

        await self.app(scope, limited_receive, send)


# ── App assembly and command line ────────────────────────────────────────────────────────


def resource(path: str, **handlers: Handler) -> Route:
    """One route serving `path` with a handler per method (`get=…, put=…`), so that a 405
    lists every allowed method in its Allow header."""

    async def dispatch(request: Request) -> Response:
        method = "get" if request.method == "HEAD" else request.method.lower()
        return await handlers[method](request)

    route = Route(path, dispatch, methods=[method.upper() for method in handlers])
    route.handlers = handlers  # for the OpenAPI document
    return route


def with_and_without_slash(path: str, **handlers: Handler) -> list[Route]:
    """`/periods` and `/periods/` are the same resource, and neither redirects; the document
    lists it once, as the contract spells it (with the slash)."""
    twin = resource(path, **handlers)
    twin.include_in_schema = False
    return [twin, resource(f"{path}/", **handlers)]


ROUTES = [
    resource("/auth/register", post=register),
    resource("/auth/login", post=login),
    resource("/auth/refresh", post=refresh),
    resource("/auth/logout", post=logout),
    resource("/auth/me", get=auth_me),
    resource("/users/me", get=auth_me, put=update_me, delete=delete_me),
    resource("/users/me/export", get=export_me),
    resource("/users/me/import", post=import_me),
    resource("/users/me/calendar-feed", post=create_calendar_feed, delete=delete_calendar_feed),
    resource("/calendar/{feed_token}.ics", get=calendar_feed),
    resource("/profiles/me", get=get_profile, post=create_profile, put=update_profile),
    *with_and_without_slash("/periods", get=list_periods, post=create_period),
    resource("/periods/{id:int}", put=update_period, delete=delete_period),
    *with_and_without_slash("/moods", get=list_moods, post=create_mood),
    resource("/moods/{id:int}", put=update_mood, delete=delete_mood),
    *with_and_without_slash("/observations", get=list_observations, post=create_observation),
    resource("/observations/{id:int}", put=update_observation, delete=delete_observation),
    resource("/predictions/current", get=current_prediction),
    resource("/predictions/forecast", get=forecast),
    resource("/predictions/history", get=prediction_history),
    resource("/predictions/retrain", post=retrain),
    resource("/admin/users", get=admin_users),
    resource("/admin/audit", get=admin_audit),
    resource("/health", get=health),
    resource("/health/ready", get=health_ready),
    resource("/openapi.json", get=openapi_json),
    resource("/docs", get=docs),
    Route("/docs/assets/{name}", docs_asset, include_in_schema=False),
]


async def sweep_expired_history(database: Database) -> bool:
    """One retention sweep; False if the database could not serve it."""
    try:
        deleted = await delete_expired_history(database)
    except DatabaseUnavailable:
        return False
    if deleted:
        logger.info("retention: deleted %d rows past their owners' retention_days", deleted)
    return True


async def sweep_expired_history_daily(database: Database) -> None:
    """Retention after start-up: a sweep every RETENTION_SWEEP_INTERVAL_S, and a minute
    after one that failed (the database may be back by then)."""
    pause = RETENTION_SWEEP_INTERVAL_S
    while True:
        await asyncio.sleep(pause)
        pause = (
            RETENTION_SWEEP_INTERVAL_S
            if await sweep_expired_history(database)
            else RETENTION_RETRY_S
        )


async def refresh_cycle_prior(app: Starlette) -> None:
    """Everyone's cycles, read in chunks and summed up in a worker thread: the prior for a
    woman with few cycles of her own (app.state.cycle_prior)."""
    rows = await app.state.database.fetch_large(
        sa.select(period_records.c.user_id, period_records.c.start_date)
    )

    def summarize() -> CyclePrior:
        starts = collections.defaultdict(list)
        for row in rows:
            starts[row["user_id"]].append(row["start_date"])
        return population_cycle_prior(cycle_lengths(dates) for dates in starts.values())

    app.state.cycle_prior = await run_in_threadpool(summarize)


async def refresh_cycle_prior_hourly(app: Starlette) -> None:
    """From start-up on, in the background: start-up never waits for everyone's periods."""
    while True:
        with contextlib.suppress(DatabaseUnavailable):
            await refresh_cycle_prior(app)
        await asyncio.sleep(POPULATION_PRIOR_REFRESH_S)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    settings, database = app.state.settings, app.state.database
    try:
        keys = signing_keys(settings)
    except (MissingSecretKeys, OSError) as error:
        logger.critical("cannot start: %s", error)
        raise StartupFailed(str(error)) from None
    app.state.tokens = TokenSigner(keys, settings.access_token_ttl_s, settings.refresh_token_ttl_s)
    app.state.model_signer = itsdangerous.Signer(
        list(reversed(keys)), salt=MODEL_SIGNATURE_SALT, digest_method=hashlib.sha256
    )
    try:
        await database.connect()
        await migrate(database)
        await database.check_writable()
    except BaseException as error:
        await database.disconnect()
        if not isinstance(error, DatabaseUnavailable | sa.exc.SQLAlchemyError | OSError):
            raise
        cause = failure_kind(error.__cause__ or error)
        logger.critical("cannot start: the database %s: %s", database.display_url, cause)
        raise StartupFailed(cause) from None
    try:
        app.state.dummy_password_hash = await hash_password(
            secrets.token_urlsafe(16), settings.bcrypt_rounds
        )
        # The ~150,000 objects of the loaded libraries never die: out of the collector's
        # sight, a full collection (in whichever thread allocates, holding the GIL and so
        # the event loop) takes milliseconds instead of ~50-80 ms.
        gc.collect()
        gc.freeze()
        await sweep_expired_history(database)
        chores = [
            background_task(sweep_expired_history_daily(database)),
            background_task(refresh_cycle_prior_hourly(app)),
        ]
        yield
        for chore in chores:
            chore.cancel()
        await app.state.trainer.drain()
    finally:
        await database.disconnect()


def database_for(settings: Settings) -> Database:
    return Database(settings.database_url, settings.db_timeout_s, settings.db_pool_size)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_environ()
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(QuietStartupFailureMiddleware),
            Middleware(RequestReadTimeoutMiddleware, timeout_s=settings.request_read_timeout_s),
            Middleware(ClientAddressMiddleware, trusted=settings.forwarded_allow_ips),
            Middleware(StandardHeadersMiddleware),
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                allow_headers=CORS_REQUEST_HEADERS,
                expose_headers=CORS_EXPOSED_HEADERS,
                max_age=600,
            ),
            Middleware(DatabaseUnavailableMiddleware),
            Middleware(BodySizeLimitMiddleware, import_max_bytes=settings.import_max_bytes),
            Middleware(AuthenticationMiddleware, backend=BearerTokenBackend()),
        ],
        exception_handlers={
            HTTPException: http_error,
            RequestValidationError: validation_error,
            BodyTooLarge: body_too_large,
            RequestReadTimeout: request_read_timeout,
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # `/periods` and `/periods/` are both served as-is
    app.state.openapi = openapi_document(app.routes)
    app.state.settings = settings
    app.state.database = database_for(settings)
    app.state.failure_log = FailureLog(app.state.database.display_url)
    app.state.model_cache = ModelCache(settings.model_cache_size)
    app.state.cycle_prior = TEXTBOOK_CYCLE_PRIOR
    app.state.trainer = Trainer(app)
    app.state.request_counter = RequestCounter(settings.rate_limits["api_user"])
    app.state.rate_limits_purged_at = -math.inf
    return app


app = create_app()


class RequestReadDeadline(asyncio.Protocol):
    """uvicorn's own HTTP protocol with a deadline on each request's headers, which uvicorn
    parses before the app sees anything: run it with `uvicorn planher:app --http
    planher:RequestReadDeadline` (the Procfile does). The deadline starts with the first
    byte of a request (or the connection) and ends when the app takes the request; when it
    passes, the client gets 408 and the connection is closed — silently if it never sent a
    byte, as nginx does. RequestReadTimeoutMiddleware then bounds the body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.http = AutoHTTPProtocol(*args, **kwargs)
        self.timeout_s = app.state.settings.request_read_timeout_s
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.bytes_since_armed = False
        self.in_app = False
        self.lingering = False

    def arm(self) -> None:
        if self.deadline is None:
            self.bytes_since_armed = False
            self.deadline = self.loop.call_later(self.timeout_s, self.expire)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def expire(self) -> None:
        self.deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        if self.bytes_since_armed:
            body = json.dumps(
                {"detail": REQUEST_READ_TIMEOUT_DETAIL, "code": "request_timeout"}
            ).encode()
            head = [
                "HTTP/1.1 408 Request Timeout",
                "content-type: application/json",
                f"content-length: {len(body)}",
                "connection: close",
                *(f"{name.lower()}: {value}" for name, value in STANDARD_HEADERS.items()),
            ]
            self.transport.write("\r\n".join(head).encode() + b"\r\n\r\n" + body)
            # Closing with bytes still unread would reset the connection, and the reset can
            # overtake the 408: say we are done writing, and drop what still comes a while.
            self.lingering = True
            self.transport.write_eof()
            self.loop.call_later(REQUEST_READ_LINGER_S, self.transport.close)
            return
        self.transport.close()

    def request_started(self) -> None:
        self.in_app = True
        self.disarm()

    def request_finished(self) -> None:
        self.in_app = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.arm()
        self.http.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        if not self.in_app:
            self.arm()
            self.bytes_since_armed = True
        token = READING_CONNECTION.set(self)
        try:
            self.http.data_received(data)
        finally:
            READING_CONNECTION.reset(token)

    def eof_received(self) -> bool | None:
        if self.lingering:
            self.transport.close()
            return None
        return self.http.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        self.http.connection_lost(exc)

    def pause_writing(self) -> None:
        self.http.pause_writing()

    def resume_writing(self) -> None:
        self.http.resume_writing()


async def _with_database(settings: Settings, work: Callable[[Database], Awaitable[Any]]) -> Any:
    database = database_for(settings)
    await database.connect()
    try:
        return await work(database)
    finally:
        await database.disconnect()


async def _with_app(settings: Settings, work: Callable[[Starlette], Awaitable[Any]]) -> Any:
    """Run `work` inside the app's lifespan (database connected, migrations applied)."""
    app = create_app(settings)
    async with lifespan(app):
        return await work(app)


def _admin_password() -> str:
    password = os.environ.get("PLANHER_ADMIN_PASSWORD")
    if password is None:
        password = getpass.getpass("Password for the admin: ")
        if getpass.getpass("Repeat it: ") != password:
            raise SystemExit("The two passwords differ.")
    try:
        return TypeAdapter(NewPassword).validate_python(password)
    except ValidationError as error:
        raise SystemExit(error.errors()[0]["msg"]) from None


async def create_admin(database: Database, settings: Settings, email: str) -> str:
    """Create an admin account, or make an existing account an admin."""
    await migrate(database)
    now = utc_now()
    if await email_taken(database, email):
        await database.execute(
            users.update().where(users.c.email == email).values(role="admin", updated_at=now)
        )
        return f"{email} is now an admin."
    password_hash = await hash_password(_admin_password(), settings.bcrypt_rounds)
    await database.execute(
        users.insert().values(
            email=email,
            password_hash=password_hash,
            role="admin",
            created_at=now,
            updated_at=now,
        )
    )
    return f"Created the admin {email}."


async def seed_demo(app: Starlette, days: int = DEMO_DAYS) -> dict[str, Any]:
    """A demo user with `days` days of generated periods and energy, her model trained."""
    database, now, today = app.state.database, utc_now(), utc_today()
    email = f"demo-{secrets.token_hex(3)}@planher.example"
    password = secrets.token_urlsafe(12)
    password_hash = await hash_password(password, app.state.settings.bcrypt_rounds)
    user_id = await database.fetch_val(
        users.insert()
        .values(
            email=email,
            password_hash=password_hash,
            name="Demo",
            role="user",
            created_at=now,
            updated_at=now,
        )
        .returning(users.c.id)
    )
    stamps = {"user_id": user_id, "created_at": now, "updated_at": now}
    await database.execute(user_profiles.insert().values(**stamps, height_cm=166, weight_kg=61.5))
    periods, moods = generate_demo_history(days, today, seed=secrets.randbelow(10**6))
    await database.execute(
        period_records.insert(),
        [{**stamps, "start_date": period.start, "end_date": period.end} for period in periods],
    )
    await database.execute(
        daily_moods.insert(),
        [{**stamps, "date": date, "energy_level": level} for date, level in moods],
    )
    as_of = utc_now()
    samples = await training_samples(database, user_id)
    model = await train_and_store(app, user_id, samples, as_of)
    await retrain_if_due(app, None)
    return {
        "email": email,
        "password": password,
        "periods": len(periods),
        "moods": len(moods),
        "model": model,
        "bayes_rate": bayes_rate(cycle.phase for cycle, _, _ in samples),
    }


def sqlite_path(settings: Settings) -> Path | None:
    """The SQLite database's file, or None on PostgreSQL."""
    url = sa.make_url(settings.database_url)
    return Path(url.database) if url.drivername.startswith("sqlite") else None


def libpq_url(settings: Settings) -> str:
    """The PostgreSQL URL as pg_dump and pg_restore take it: no driver, no password (they
    read it from PGPASSWORD or ~/.pgpass, so it is never printed)."""
    url = sa.make_url(settings.database_url)
    return url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)


def sqlite_accounts(path: Path) -> int:
    """How many accounts a SQLite database holds (0 for none, or a file with no tables)."""
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as connection:
        if connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'users'").fetchone():
            return connection.execute("SELECT count(*) FROM users").fetchone()[0]
    return 0


def backup_sqlite(database_path: Path, target: Path) -> str:
    """A consistent snapshot while the service runs and writes: SQLite's online backup API
    copies, in one step, the pages of one read transaction (in WAL mode writers go on
    meanwhile). The copy is checked, made a self-contained file, then moved into place."""
    if not database_path.exists():
        raise SystemExit(f"There is no database at {database_path}.")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    started = time.monotonic()
    with (
        contextlib.closing(sqlite3.connect(database_path)) as source,
        contextlib.closing(sqlite3.connect(partial)) as copy,
    ):
        source.execute(f"PRAGMA busy_timeout = {int(DB_TIMEOUT_S * 1000)}")
        source.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")
        if copy.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise SystemExit("The copy failed its integrity check; nothing was written.")
    os.replace(partial, target)
    return (
        f"Backed up {database_path} to {target} ({target.stat().st_size / 1e6:.1f} MB, "
        f"{sqlite_accounts(target)} accounts) in {time.monotonic() - started:.1f} s."
    )


def restore_sqlite(backup: Path, database_path: Path, force: bool) -> str:
    """The backup's contents become the database (through SQLite's backup API, so a live
    WAL file cannot mix old pages in). Refuses a database with accounts unless forced."""
    if not backup.is_file():
        raise SystemExit(f"There is no backup at {backup}.")
    with contextlib.closing(sqlite3.connect(f"file:{backup}?mode=ro", uri=True)) as source:
        try:
            checked = source.execute("PRAGMA integrity_check").fetchone()[0]
            migrations = source.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
        except sqlite3.DatabaseError:
            raise SystemExit(f"{backup} is not a PlanHer SQLite backup.") from None
        if checked != "ok" or not migrations:
            raise SystemExit(f"{backup} is damaged or not a PlanHer backup; nothing was changed.")
        accounts = sqlite_accounts(database_path)
        if accounts and not force:
            raise SystemExit(
                f"{database_path} is not empty ({accounts} accounts): stop the service, then "
                "restore with --force to replace everything in it."
            )
        with contextlib.closing(sqlite3.connect(database_path)) as target:
            source.backup(target)
    return (
        f"Restored {backup} into {database_path} ({sqlite_accounts(database_path)} accounts). "
        "Pending migrations apply when the service starts."
    )


async def postgres_accounts(database: Database) -> int:
    try:
        return await database.fetch_val(sa.select(sa.func.count()).select_from(users))
    except sa.exc.ProgrammingError:  # no users table: a database never migrated
        return 0


def backup(settings: Settings, target: Path) -> str:
    database_path = sqlite_path(settings)
    if database_path is not None:
        return backup_sqlite(database_path, target)
    return (
        "On PostgreSQL the backup is pg_dump's (a consistent snapshot while the service runs):\n"
        f"  pg_dump --format=custom --no-owner --file {shlex.quote(str(target))} "
        f"--dbname {shlex.quote(libpq_url(settings))}"
    )


def restore(settings: Settings, backup_file: Path, force: bool) -> str:
    database_path = sqlite_path(settings)
    if database_path is not None:
        return restore_sqlite(backup_file, database_path, force)
    accounts = asyncio.run(_with_database(settings, postgres_accounts))
    if accounts and not force:
        raise SystemExit(
            f"The database is not empty ({accounts} accounts): stop the service, then restore "
            "with --force to replace everything in it."
        )
    return (
        "On PostgreSQL the restore is pg_restore's (stop the service first):\n"
        f"  pg_restore --clean --if-exists --no-owner --single-transaction "
        f"--dbname {shlex.quote(libpq_url(settings))} {shlex.quote(str(backup_file))}"
    )


# — evaluate: the figures of the README, re-measured —

FEDCYCLE_DATA = ROOT_DIR.parent / "shared" / "data" / "FedCycleData071012.csv"
FEDCYCLE_FIRST_START = dt.date(2000, 1, 1)  # the file has lengths, not dates
FEDCYCLE_BREAK_DAYS = 300  # a missing length breaks her chain of dates: start anew
ENERGY_EVALUATION_WOMEN = 20
ENERGY_EVALUATION_TEST_DAYS = 60  # her following days, on which each predictor is scored
ENERGY_EVALUATION_OTHER_SEEDS = 1_000  # the population model's women: none evaluated


def read_fedcycle(path: Path) -> dict[str, list[tuple[int | None, int | None]]]:
    """Each woman's (cycle length, estimated day of ovulation) in cycle order. The file
    starts with a byte-order mark, and a missing value is a single space."""
    cycles: dict[str, list[tuple[int, int | None, int | None]]] = collections.defaultdict(list)
    with path.open(encoding="utf-8-sig", newline="") as file:
        for row in csv.DictReader(file):
            length, ovulation = row["LengthofCycle"].strip(), row["EstimatedDayofOvulation"].strip()
            cycles[row["ClientID"].strip()].append(
                (
                    int(row["CycleNumber"]),
                    int(length) if length else None,
                    int(ovulation) if ovulation else None,
                )
            )
    return {
        client: [(length, ovulation) for _, length, ovulation in sorted(rows)]
        for client, rows in cycles.items()
    }


def walk_forward(cycles: Sequence[tuple[int | None, int | None]]):
    """(starts so far, ovulation day of the cycle under way, the actual next start) at each
    start of hers: a predictor sees only the past."""
    starts = [FEDCYCLE_FIRST_START]
    for length, ovulation_day in cycles:
        if length is None:
            starts = [starts[-1] + dt.timedelta(days=FEDCYCLE_BREAK_DAYS)]
            continue
        next_start = starts[-1] + dt.timedelta(days=length)
        yield list(starts), ovulation_day, next_start
        starts.append(next_start)


def leave_one_out_priors(women: Mapping[str, Sequence]) -> dict[str, CyclePrior]:
    """For each woman, the population prior learned from the other women only."""
    lengths = {
        client: [length for length, _ in cycles if length is not None]
        for client, cycles in women.items()
    }
    return {
        client: population_cycle_prior(other for name, other in lengths.items() if name != client)
        for client in women
    }


def score_next_starts(predictions: Sequence[tuple[dict[str, Any], dt.date]]) -> dict[str, float]:
    """MAE, share within ±2 days, range coverage and width of (outlook, actual) pairs."""
    errors = [abs((outlook["next_period_start"] - actual).days) for outlook, actual in predictions]
    ranges = [outlook["next_period_range"] for outlook, _ in predictions]
    return {
        "predictions": len(errors),
        "mae_days": statistics.mean(errors),
        "within_2_days": sum(error <= 2 for error in errors) / len(errors),
        "range_coverage": statistics.mean(
            low <= actual <= high
            for (low, high), (_, actual) in zip(ranges, predictions, strict=True)
        ),
        "mean_range_width_days": statistics.mean((high - low).days for low, high in ranges),
    }


def evaluate_next_start(
    women: Mapping[str, Sequence], priors: Mapping[str, CyclePrior] | None = None, few: bool = False
) -> dict[str, float]:
    """The next start predicted on each start after her first (with `few`: only where she
    has one or two known cycles), towards `priors` (default: the textbook 28)."""
    predictions = []
    for client, cycles in women.items():
        prior = TEXTBOOK_CYCLE_PRIOR if priors is None else priors[client]
        for starts, _, actual in walk_forward(cycles):
            if len(starts) < 2 or (few and len(starts) > 3):
                continue
            calendar = CycleCalendar.build(
                [PeriodSpan(start, None) for start in starts], prior=prior
            )
            predictions.append((calendar.outlook(starts[-1]), actual))
    return score_next_starts(predictions)


def evaluate_with_ovulation(women: Mapping[str, Sequence]) -> dict[str, float]:
    """An LH test positive the day before each cycle's estimated ovulation (and in each
    earlier cycle of hers), the next start predicted two days after it."""
    predictions = []
    for cycles in women.values():
        signs: list[FertilitySign] = []
        for starts, ovulation_day, actual in walk_forward(cycles):
            if len(starts) == 1:
                signs = []  # a new chain of dates
            if ovulation_day is None or not 2 <= ovulation_day < (actual - starts[-1]).days:
                continue
            positive = starts[-1] + dt.timedelta(days=ovulation_day - 2)
            signs.append(FertilitySign(positive, lh_test="positive"))
            calendar = CycleCalendar.build(
                [PeriodSpan(start, None) for start in starts], None, signs
            )
            asked = positive + dt.timedelta(days=2)
            predictions.append((calendar.outlook(asked, asked), actual))
    return score_next_starts(predictions)


def demo_samples(
    days: int,
    today: dt.date,
    seed: int,
    energy_by_phase: Mapping[str, Sequence[float]] = DEMO_ENERGY_BY_PHASE,
) -> list[tuple[CycleDay, None, int]]:
    """A generated woman's labelled days in date order, as training_samples gives them."""
    periods, moods = generate_demo_history(days, today, seed, energy_by_phase)
    calendar = CycleCalendar.build(periods)
    return [(calendar.cycle_day(date), None, level) for date, level in moods]


@functools.cache
def evaluation_population_model(days: int, women: int, today: dt.date) -> EnergyModel | None:
    """The population model of `women` other generated women with `days` days each (seeds
    no evaluated woman has), or None when it would not ship."""
    histories = [
        demo_samples(days, today, seed)
        for seed in range(ENERGY_EVALUATION_OTHER_SEEDS, ENERGY_EVALUATION_OTHER_SEEDS + women)
    ]
    samples = [sample for same_date in zip(*histories, strict=True) for sample in same_date]
    result = train_on_samples(samples, with_profile=True, population=None)
    if not result.shipped:
        return None
    return EnergyModel(source="population", pooled=result.pooled, with_profile=True)


def evaluate_energy(
    days: int,
    women: int = ENERGY_EVALUATION_WOMEN,
    energy_by_phase: Mapping[str, Sequence[float]] = DEMO_ENERGY_BY_PHASE,
) -> dict[str, float]:
    """On the demo generator (whose best possible accuracy is known): train on her first
    `days` days as the service does (pooled toward a population model of other, typical
    women, and, for a new service, toward the phase prior alone), serve what it would
    serve, and score it on the ENERGY_EVALUATION_TEST_DAYS after them. Her days follow
    `energy_by_phase`."""
    hits: dict[str, list[bool]] = collections.defaultdict(list)
    brier: dict[str, list[float]] = collections.defaultdict(list)
    best_possible, reported, actual = (
        [],
        collections.defaultdict(list),
        collections.defaultdict(list),
    )
    today = dt.date(2026, 1, 1)
    populations = {
        "planher": evaluation_population_model(days, women, today),
        "planher_new_service": None,
    }
    for seed in range(women):
        samples = demo_samples(days + ENERGY_EVALUATION_TEST_DAYS, today, seed, energy_by_phase)
        training, test = samples[:days], samples[days:]
        cycles = [cycle for cycle, _, _ in test]
        levels = np.asarray([level for _, _, level in test])
        majority = collections.Counter(level for *_, level in training).most_common(1)[0][0]
        served = {
            "majority": one_hot([majority] * len(test)),
            "phase_table": np.asarray([PHASE_PRIOR[cycle.phase] for cycle in cycles]),
        }
        for name, population in populations.items():
            result = train_on_samples(training, with_profile=False, population=population)
            model = population or PHASE_PRIOR_MODEL
            if result.shipped:
                model = EnergyModel(source="personal", pooled=result.pooled)
                reported[name].append(result.cv_accuracy)
            answers = predict_energy(model, cycles, None)
            served[name] = np.asarray([probabilities for probabilities, _ in answers])
            if result.shipped:
                actual[name].append(ForwardScore.of(served[name], levels).accuracy)
        for name, probabilities in served.items():
            score = ForwardScore.of(probabilities, levels)
            hits[name].append(score.accuracy)
            brier[name].append(score.brier_score)
        best_possible.append(bayes_rate((cycle.phase for cycle in cycles), energy_by_phase))
    figures = {name: statistics.mean(values) for name, values in hits.items()}
    figures |= {f"{name}_brier": statistics.mean(values) for name, values in brier.items()}
    figures["best_possible"] = statistics.mean(best_possible)
    for name in populations:
        figures[f"{name}_shipped_actual"] = (
            statistics.mean(actual[name]) if actual[name] else math.nan
        )
        figures[f"{name}_reported"] = (
            statistics.mean(reported[name]) if reported[name] else math.nan
        )
        figures[f"{name}_shipped"] = len(reported[name]) / women
    return figures


def evaluation_report(fedcycle: Path, women: int = ENERGY_EVALUATION_WOMEN) -> str:
    """Every figure issue 13 asks for, beside its baseline, as text."""
    lines = []
    if fedcycle.is_file():
        charted = read_fedcycle(fedcycle)
        priors = leave_one_out_priors(charted)
        rows = [
            ("at cycle start, textbook prior 28", evaluate_next_start(charted)),
            (
                "at cycle start, population prior (other women)",
                evaluate_next_start(charted, priors),
            ),
            ("1-2 known cycles, textbook prior 28", evaluate_next_start(charted, few=True)),
            ("1-2 known cycles, population prior", evaluate_next_start(charted, priors, few=True)),
            ("ovulation known (LH the day before, +2 days)", evaluate_with_ovulation(charted)),
        ]
        lines.append(f"Next period on {fedcycle.name} ({len(charted)} women):")
        for name, figures in rows:
            lines.append(
                f"  {name:50} n={figures['predictions']:5}  MAE {figures['mae_days']:.3f} d  "
                f"within ±2 d {figures['within_2_days']:.1%}  range holds it "
                f"{figures['range_coverage']:.1%}  width {figures['mean_range_width_days']:.2f} d"
            )
    else:
        lines.append(f"FedCycleData is not at {fedcycle}: next-period figures skipped.")
    lines.append(
        f"Energy on the demo generator ({women} women of each kind, scored on the "
        f"{ENERGY_EVALUATION_TEST_DAYS} days after training; the population model is "
        f"{women} other, typical women's):"
    )
    kinds = {"typical": DEMO_ENERGY_BY_PHASE, "unlike everyone": DEMO_CONTRARY_ENERGY_BY_PHASE}
    for kind, energy_by_phase in kinds.items():
        for days in (60, 120):
            figures = evaluate_energy(days, women, energy_by_phase)
            lines.append(
                f"  {kind:15} {days:3} days: PlanHer {figures['planher']:.1%} (new service "
                f"{figures['planher_new_service']:.1%})  her majority level "
                f"{figures['majority']:.1%}  phase table {figures['phase_table']:.1%}  best "
                f"possible {figures['best_possible']:.1%}  Brier {figures['planher_brier']:.3f} "
                f"({figures['planher_new_service_brier']:.3f}), phase table "
                f"{figures['phase_table_brier']:.3f}"
            )
            lines.append(
                f"  {'':25}personal model shipped for {figures['planher_shipped']:.0%} "
                f"({figures['planher_new_service_shipped']:.0%}): its cv_accuracy "
                f"{figures['planher_reported']:.1%} "
                f"({figures['planher_new_service_reported']:.1%}), right on the days after "
                f"{figures['planher_shipped_actual']:.1%} "
                f"({figures['planher_new_service_shipped_actual']:.1%})"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="planher.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    admin_parser = commands.add_parser(
        "create-admin",
        help="create an admin account (password from PLANHER_ADMIN_PASSWORD or a prompt)",
    )
    admin_parser.add_argument("email")
    demo_parser = commands.add_parser(
        "demo", help="create a demo user with months of periods and energy, and print her login"
    )
    demo_parser.add_argument("--days", type=int, default=DEMO_DAYS)
    backup_parser = commands.add_parser(
        "backup",
        help="SQLite: write a consistent snapshot to FILE while the service runs; "
        "PostgreSQL: print the pg_dump command",
    )
    backup_parser.add_argument("file", type=Path)
    restore_parser = commands.add_parser(
        "restore",
        help="SQLite: replace the database with the backup FILE; PostgreSQL: print the "
        "pg_restore command. Refuses a database with accounts without --force",
    )
    evaluate_parser = commands.add_parser(
        "evaluate",
        help="print the next-period figures on FedCycleData and the energy figures on the "
        "demo generator, beside their baselines",
    )
    evaluate_parser.add_argument("--fedcycle", type=Path, default=FEDCYCLE_DATA)
    evaluate_parser.add_argument(
        "--women", type=int, default=ENERGY_EVALUATION_WOMEN, help="generated women for energy"
    )
    restore_parser.add_argument("file", type=Path)
    restore_parser.add_argument(
        "--force", action="store_true", help="replace a database that holds accounts"
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings.from_environ()

    if arguments.command == "migrate":
        applied = asyncio.run(_with_database(settings, migrate))
        print(f"Applied {len(applied)} migration(s)." if applied else "Already up to date.")
    elif arguments.command == "create-admin":
        try:
            email = TypeAdapter(Email).validate_python(arguments.email)
        except ValidationError as error:
            raise SystemExit(error.errors()[0]["msg"]) from None
        print(asyncio.run(_with_database(settings, lambda db: create_admin(db, settings, email))))
    elif arguments.command == "evaluate":
        print(evaluation_report(arguments.fedcycle, arguments.women))
    elif arguments.command == "backup":
        print(backup(settings, arguments.file))
    elif arguments.command == "restore":
        print(restore(settings, arguments.file, arguments.force))
    elif arguments.command == "demo":
        demo = asyncio.run(_with_app(settings, lambda app: seed_demo(app, arguments.days)))
        model = ModelSummaryOut.model_validate(demo["model"])
        print(
            f"Demo user: {demo['email']}  password: {demo['password']}\n"
            f"{demo['periods']} periods and {demo['moods']} days of energy. Her model: version "
            f"{model.version}, {model.type}, forward-validated accuracy {model.cv_accuracy:.2f} "
            f"(Brier {model.brier_score:.3f}) against {model.baseline_accuracy:.2f} for always "
            f"guessing her most common level; the best any model could do on this generator "
            f"(its Bayes rate) is {demo['bayes_rate']:.2f}. "
            + (model.reason or "Her predictions use it.")
        )


if __name__ == "__main__":
    main()
