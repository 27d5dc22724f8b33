"""Settings read from the environment, and the named constants everything else shares."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import zoneinfo
from collections.abc import Mapping
from pathlib import Path

from starlette.config import Config

__version__ = "0.1.0"

# The repository: migrations/, schema.sql and the password list live beside the package.
ROOT_DIR = Path(__file__).resolve().parent.parent
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
CORS_EXPOSED_HEADERS = ("X-Total-Count", "Retry-After", "WWW-Authenticate", "X-Request-ID")
DEFAULT_CORS_ORIGINS = (
    "http://localhost:3000",  # create-react-app dev server
    "http://127.0.0.1:3000",
    "http://localhost:5173",  # Vite dev server
    "http://127.0.0.1:5173",
)

# Background retraining waits at least this long after the last training, whatever a client
# sends (a flood of moods, a benchmark).
RETRAIN_PAUSE_S = 60
TRAINING_CLAIM_STALE_S = 45  # a training claim not renewed this long is a dead process's
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
DB_POOL_SIZE = 8  # connections per process (SQLite: for large reads; its writer has one)
RETRY_AFTER_S = 5  # what a 503 asks the client to wait
# After SIGTERM an instance answers unready but keeps serving this long: at least two probe
# intervals of the load balancer in front of it (web/graceful_shutdown.py).
SHUTDOWN_DRAIN_S = 1.0
FAILURE_LOG_INTERVAL_S = 10  # one log line per kind of database failure per interval
LARGE_READ_CHUNK_ROWS = 2_000  # a large read hands the event loop back after each chunk
WRITER_TURN_POLL_S = 0.002  # how often a writer checks whether another process is done
# SQLite's writer commits the units of work that queued during its last commit together,
# at most this many: one fsync for all of them, and no wait for one that came alone.
GROUP_COMMIT_MAX_UNITS = 64
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
# and what is older goes in a daily sweep (retention_sweep.py).
RETENTION_MIN_DAYS = 90
RETENTION_MAX_DAYS = 100 * 366
RETENTION_SWEEP_INTERVAL_S = 24 * 60 * 60  # one sweep per day for all instances together…
RETENTION_CHECK_S = 10 * 60  # …which each asks for this often (one upsert)
# The calendar feed: her logged periods, and this many predicted ones with fertile windows.
CALENDAR_PREDICTED_PERIODS = 6
CALENDAR_FEED_TOKEN_BYTES = 32
REMIND_MAX_DAYS_BEFORE = 7  # the furthest ahead a feed's reminder may be set

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
# Her luteal phase, from the ovulations her observations show (estimate_phase_length):
# a robust, recency-weighted mean shrunk toward her profile's luteal_length.
PRIOR_WEIGHT_CYCLES = 1.0  # her profile's luteal_length counts as one past cycle
RECENCY_HALF_LIFE_CYCLES = 8.0  # a cycle 8 cycles back weighs half as much as the latest
HUBER_THRESHOLD_DAYS = 3.0  # cycles further than this from the centre are down-weighted
SPREAD_PRIOR_WEIGHT_CYCLES = 2
# Her cycle length: the hierarchical model of planher/cycles/population.py, learned from
# everyone's cycles. The grid of typical lengths and spreads a woman may have:
TYPICAL_LENGTH_GRID_DAYS = (18.0, 50.0, 0.5)  # from, to, step
SPREAD_GRID_DAYS = (0.5, 9.0, 14)  # from, to, points (evenly apart on a log scale)
# What a new service assumes (broad, from the literature on app users' cycles, e.g. Bull
# et al., npj Digital Medicine 2019: mean 29.3 days), until its own women replace it:
BUILT_IN_TYPICAL_LENGTH_DAYS = 29.0
BUILT_IN_TYPICAL_LENGTH_SD_DAYS = 3.0  # between women
BUILT_IN_SPREAD_DAYS = 2.0  # a woman's own sd, median over women
BUILT_IN_SPREAD_LOG_SD = 0.6  # how that sd varies between women (log scale)
BUILT_IN_IRREGULAR_SHARE = 0.1  # of cycles, irregular: long, early, or a period not logged
BUILT_IN_IRREGULAR_SHIFT_DAYS = 5.0  # from her typical length, on average
BUILT_IN_IRREGULAR_SD_DAYS = 8.0
# The built-in population counts as this many women when the service's own are learned:
# 20 women move it a little, thousands decide it.
BUILT_IN_WEIGHT_WOMEN = 20
POPULATION_FIT_ITERATIONS = 150  # of expectation-maximisation; converged well before
POPULATION_FIT_MAX_WOMEN = 2_000  # learned from at most this many (evenly spread) women
# The recency half-lives (in cycles; None: none) among which the service's own women choose:
# the one under which their cycles, walked forward, were most probable.
RECENCY_HALF_LIFE_CHOICES = (None, 12.0, 8.0, 5.0, 3.0)
RANGE_COVERAGE = 0.8  # of the predictive distribution, in the shortest run of days
# Everyone's population is learned anew off the request path: hourly, and sooner once new
# periods were logged (checked every POPULATION_CHECK_S), but never spending more than
# 1/POPULATION_REFRESH_DUTY of the time on it.
POPULATION_REFRESH_S = 60 * 60
POPULATION_CHECK_S = 10
POPULATION_REFRESH_DUTY = 30
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
    population_check_s: float = POPULATION_CHECK_S  # everyone's cycles: see PopulationStore
    shutdown_drain_s: float = SHUTDOWN_DRAIN_S
    training: str = "inline"  # or worker: web processes queue trainings for `planher worker`
    training_claim_stale_s: float = TRAINING_CLAIM_STALE_S
    log_format: str = "text"  # or json: one JSON object per line
    metrics_token: str = ""  # GET /metrics answers only to this Bearer token; none: off
    db_timeout_s: float = DB_TIMEOUT_S
    db_pool_size: int = DB_POOL_SIZE
    db_statement_cache: bool = True  # false behind a transaction-mode pooler (docs/operations.md)
    forwarded_allow_ips: tuple[str, ...] = ()  # proxies whose X-Forwarded-For is believed
    request_read_timeout_s: float = REQUEST_READ_TIMEOUT_S
    import_max_bytes: int = IMPORT_MAX_BYTES
    import_max_unpacked_bytes: int = IMPORT_MAX_UNPACKED_BYTES
    rate_limits: Mapping[str, RateLimit] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_RATE_LIMITS)
    )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        config = environment_config(environ)
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


def environment_config(environ: Mapping[str, str] | None = None) -> Config:
    """The environment (or `environ`), over a `.env` file's values when there is one."""
    env_file = ".env" if Path(".env").is_file() else None
    return Config(env_file, environ=os.environ if environ is None else environ)


def _comma_separated(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())
