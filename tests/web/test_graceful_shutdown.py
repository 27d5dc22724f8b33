"""SIGTERM: readiness fails at once, requests are still served (asking to close the
connection) for the drain delay, then the server stops and the process exits 0."""

import os
import signal
import time

import httpx
import pytest

from conftest import fresh_database_url, uvicorn_server
from planher.config import RETRY_AFTER_S


@pytest.mark.parametrize("workers", [1, 2])
def test_readiness_fails_at_once_on_sigterm_while_requests_are_still_served(tmp_path, workers):
    with fresh_database_url("sqlite", tmp_path) as url:
        log = tmp_path / "server.log"
        with uvicorn_server(url, log, workers=workers, SHUTDOWN_DRAIN_S="2") as (base, server):
            os.killpg(server.pid, signal.SIGTERM)  # as a platform stops an instance
            time.sleep(0.5)
            ready = httpx.get(f"{base}/health/ready")
            alive = httpx.get(f"{base}/health")
            exit_code = server.wait(timeout=30)
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{base}/health", timeout=2)
    assert ready.status_code == 503 and ready.json()["code"] == "shutting_down"
    assert ready.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert alive.status_code == 200 and alive.headers["Connection"] == "close"
    assert exit_code == 0
    assert log.read_text().count("draining for 2.0 s") == workers
