"""Load benchmark: PlanHer beside a bare Starlette JSON endpoint (the ceiling), in one run.

Not part of the pytest run. Needs `wrk` (Debian: `apt-get install wrk`). Usage:

    .venv/bin/python tests/bench.py [--duration 10] [--connections 64]

It starts each server with uvicorn (1 worker) on 127.0.0.1, seeds a user on a fresh SQLite
database (or on DATABASE_URL when it is PostgreSQL), drives each endpoint with wrk and
prints requests/s, p50/p99 latency and the ratio to the ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import planher  # noqa: E402  (for the demo generator)

PASSWORD = "benchmark passphrase"
HISTORY_DAYS = 120


async def ceiling_endpoint(request):
    return JSONResponse({"id": 1, "email": "ceiling@example.org", "role": "user"})


ceiling_app = Starlette(routes=[Route("/ceiling", ceiling_endpoint)])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(app: str, port: int, environment: dict[str, str]) -> subprocess.Popen:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--app-dir",
            str(ROOT / "tests") if app.startswith("bench:") else str(ROOT),
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=environment,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"{app} did not start on port {port}")


def call(method: str, url: str, body: dict | None = None, headers: dict | None = None):
    request = urllib.request.Request(
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


def log_history(base: str, auth: dict, days: int) -> None:
    """Periods and daily energy from the demo generator, through the API."""
    periods, moods = planher.generate_demo_history(days, planher.utc_today(), seed=1)
    for period in periods:
        body = {"start_date": period.start.isoformat(), "end_date": period.end.isoformat()}
        call("POST", f"{base}/periods/", body, auth)
    for date, level in moods:
        call("POST", f"{base}/moods/", {"date": date.isoformat(), "energy_level": level}, auth)


def timed_ms(method: str, url: str, headers: dict) -> float:
    started = time.perf_counter()
    call(method, url, headers=headers)
    return (time.perf_counter() - started) * 1000


def retrain_when_idle(base: str, auth: dict) -> None:
    """POST /predictions/retrain, waiting out a background training that holds the claim."""
    for _ in range(100):
        try:
            call("POST", f"{base}/predictions/retrain", headers=auth)
            return
        except urllib.error.HTTPError as error:
            if error.code != 409:
                raise
            time.sleep(0.1)
    raise RuntimeError("the model stayed busy for 10 s")


def prediction_latency(base: str, auth: dict, samples: int = 10) -> dict:
    """Sequential latency of GET /predictions/current: cold (the first request after a
    retrain, which loads and verifies the new model) and warm (model in the cache)."""
    cold = []
    for _ in range(samples):
        retrain_when_idle(base, auth)
        cold.append(timed_ms("GET", f"{base}/predictions/current", auth))
    warm = [timed_ms("GET", f"{base}/predictions/current", auth) for _ in range(100)]
    return {"cold_ms": statistics.median(cold), "warm_ms": statistics.median(warm)}


WRK_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, duration_s: int, connections: int, headers: dict[str, str]) -> dict:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration_s}s", "--latency", url]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    latencies = {p: float(v) * UNIT_MS[u] for p, v, u in WRK_LATENCY.findall(output)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": latencies.get("50"),
        "p99_ms": latencies.get("99"),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per endpoint")
    parser.add_argument("--connections", type=int, default=64)
    arguments = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    workdir = Path(tempfile.mkdtemp(prefix="planher-bench-"))
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{workdir / 'bench.db'}"
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEYS": "benchmark-secret",
        # One user drives all the load: lift the abuse limits for the measurement.
        **{f"RATE_LIMIT_{name.upper()}": "100000000/60" for name in planher.DEFAULT_RATE_LIMITS},
    }
    ceiling_port, planher_port = free_port(), free_port()
    servers = [
        start_server("bench:ceiling_app", ceiling_port, environment),
        start_server("planher:app", planher_port, environment),
    ]
    try:
        base = f"http://127.0.0.1:{planher_port}"
        email = f"bench-{int(time.time())}@example.org"
        call("POST", f"{base}/auth/register", {"email": email, "password": PASSWORD})
        tokens = call("POST", f"{base}/auth/login", {"email": email, "password": PASSWORD})
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        log_history(base, auth, HISTORY_DAYS)
        latency = prediction_latency(base, auth)

        rows = [
            ("bare Starlette JSON (ceiling)", f"http://127.0.0.1:{ceiling_port}/ceiling", {}),
            ("GET /auth/me", f"{base}/auth/me", auth),
            ("GET /predictions/current (warm)", f"{base}/predictions/current", auth),
            ("GET /predictions/forecast", f"{base}/predictions/forecast", auth),
        ]
        results = [
            (name, wrk(url, arguments.duration, arguments.connections, headers))
            for name, url, headers in rows
        ]
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)

    ceiling_rps = results[0][1]["rps"]
    backend = "PostgreSQL" if database_url.startswith("postgres") else "SQLite"
    print(
        f"\nwrk -t2 -c{arguments.connections} -d{arguments.duration}s, 1 uvicorn worker, "
        f"{backend}, {os.cpu_count()} cores\n"
    )
    print("| endpoint | req/s | ratio to ceiling | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, result in results:
        errors = f"{result['errors']} {result['socket_errors']}".strip()
        print(
            f"| {name} | {result['rps']:,.0f} | {result['rps'] / ceiling_rps:.3f} | "
            f"{result['p50_ms']:.1f} | {result['p99_ms']:.1f} | {errors} |"
        )
    print(
        f"\nGET /predictions/current one at a time ({HISTORY_DAYS} days of history): "
        f"cold (first after a retrain) {latency['cold_ms']:.1f} ms, "
        f"warm {latency['warm_ms']:.1f} ms (medians)"
    )


if __name__ == "__main__":
    main()
