"""What an operator watches, in Prometheus' text format: the series every layer records.

With METRICS_TOKEN set, every process of a server writes its samples to files in one
directory (prometheus_client's multiprocess mode), so a scrape that reaches any uvicorn
worker reports them all. The directory is PROMETHEUS_MULTIPROC_DIR if the operator sets
it, or else one per server (the uvicorn supervisor's process id and start time), under the
system's temporary directory. prometheus_client picks its mode when it is first imported,
so this module chooses the directory before importing it.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from pathlib import Path

from planher.config import environment_config

MULTIPROCESS_DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def _server_id() -> str:
    """The uvicorn supervisor's process (a worker's parent), or this one: its id and, on
    Linux, its start time, so a later server that gets the same id starts afresh."""
    parent = multiprocessing.parent_process()
    pid = parent.pid if parent is not None else os.getpid()
    try:
        started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return str(pid)
    return f"{pid}-{started}"


# Only METRICS_TOKEN is read here: the other settings are parsed when the app is created.
metrics_on = bool(environment_config()("METRICS_TOKEN", default=""))
if metrics_on and MULTIPROCESS_DIRECTORY_VARIABLE not in os.environ:
    directory = Path(tempfile.gettempdir()) / f"planher-metrics-{_server_id()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    os.environ[MULTIPROCESS_DIRECTORY_VARIABLE] = str(directory)

from prometheus_client import (  # noqa: E402 (after the directory is chosen, see above)
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
TRAINING_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)

REQUESTS = Counter("planher_requests", "Requests answered", ["route", "method", "status"])
REQUEST_DURATION = Histogram(
    "planher_request_duration_seconds",
    "Time from a request's arrival to the end of its answer",
    ["route", "method"],
    buckets=LATENCY_BUCKETS_S,
)
UNAVAILABLE = Counter(
    "planher_unavailable",
    "503 answers by cause: database_timeout, database_unavailable, pool_exhausted, "
    "shutting_down (readiness while draining)",
    ["cause"],
)
DATABASE_CALL_DURATION = Histogram(
    "planher_database_call_duration_seconds",
    "Database calls by kind: read, write (a unit of work), statement, large_read",
    ["kind"],
    buckets=LATENCY_BUCKETS_S,
)
DATABASE_CONNECTIONS_IN_USE = Gauge(
    "planher_database_connections_in_use",
    "Database calls running now (each holds a connection)",
    multiprocess_mode="livesum",
)
DATABASE_CONNECTION_WAIT = Histogram(
    "planher_database_connection_wait_seconds",
    "Time a call waited for a pooled connection",
    buckets=LATENCY_BUCKETS_S,
)
TRAINING_QUEUE_LENGTH = Gauge(
    "planher_training_queue_length",
    "Trainings waiting or running: queued in the database (TRAINING=worker, as a worker "
    "last saw it) or in a web process (TRAINING=inline)",
    multiprocess_mode="livemax",
)
TRAINING_DURATION = Histogram(
    "planher_training_duration_seconds",
    "Trainings of a model, from its data read to its version stored",
    ["model"],
    buckets=TRAINING_BUCKETS_S,
)
TRAINING_FAILURES = Counter("planher_training_failures", "Trainings that failed", ["model"])
MODEL_CACHE = Counter(
    "planher_model_cache", "Energy models looked up in a process's cache", ["result"]
)
IMPORTS = Counter("planher_imports", "Files imported, by format and outcome", ["format", "outcome"])


def metrics_text() -> tuple[bytes, str]:
    """Every series, of every process of this server in multiprocess mode; and its media
    type."""
    if MULTIPROCESS_DIRECTORY_VARIABLE in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def forget_this_process() -> None:
    """At a process's end: its live gauges stop counting (its counters still do)."""
    if MULTIPROCESS_DIRECTORY_VARIABLE in os.environ:
        multiprocess.mark_process_dead(os.getpid())
