"""A real browser: headless Chromium (Debian's `chromium`, installed by .ci/run) driven by
Playwright walks the journey of tests/browser/journey.js — from a page on another origin
(CORS) and through Vite's dev-server proxy, as the README configures it — with an expired
access token refreshed once; and signs in through /docs' Authorize button and runs one
"Try it out". In CI these run; elsewhere they skip, saying what is missing."""

import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import threading

import httpx
import pytest

from conftest import (
    ON_POSTGRES,
    PASSWORD,
    ROOT,
    free_port,
    fresh_database_url,
    new_email,
    uvicorn_server,
    wait_until_answering,
)

BROWSER_DIR = ROOT / "tests" / "browser"
NODE_MODULES = ROOT / "tests" / "clients" / "node_modules"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ACCESS_TOKEN_TTL_S = 2  # the journey waits it out, to refresh once


def missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs {what} for the browser tests")
    pytest.skip(f"{what} is not installed: the browser tests need it")


@pytest.fixture
def browser(api):
    """Chromium, started after the server: Playwright's synchronous API runs an event loop
    in this thread while it lives, and the fixtures that make databases need the thread's
    own."""
    if not os.path.exists(CHROMIUM):
        missing("Debian's chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Python's playwright")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@contextlib.contextmanager
def static_site(folder):
    """The journey's page on an origin of its own."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The Procfile's server, accepting the journey page's origin."""
    folder = tmp_path_factory.mktemp("browser")
    with static_site(BROWSER_DIR) as page_origin:
        with fresh_database_url("postgresql" if ON_POSTGRES else "sqlite", folder) as url:
            with uvicorn_server(
                url,
                folder / "server.log",
                CORS_ORIGINS=page_origin,
                ACCESS_TOKEN_TTL_S=str(ACCESS_TOKEN_TTL_S),
            ) as (base, _):
                yield base, page_origin


def walk(browser, url: str) -> dict:
    page = browser.new_page()
    try:
        page.goto(url)
        page.wait_for_function("window.journeyResult !== undefined", timeout=30_000)
        return page.evaluate("window.journeyResult")
    finally:
        page.close()


def assert_the_whole_journey(result: dict) -> None:
    assert "error" not in result, result
    assert result["log"][:3] == [
        "POST /auth/register 201",
        "POST /auth/login 200",
        "POST /profiles/me 201",
    ]
    assert result["forecastDays"] == 7 and result["totalCount"] == "1"
    assert result["phase"] in ("menstrual", "follicular", "ovulatory", "luteal", "late")
    assert result["expiredCode"] == "token_expired" and result["challenge"] == "Bearer"
    assert "POST /auth/refresh 200" in result["log"]
    assert result["meAfterRefresh"] == 200 and result["afterLogout"] == 401


def test_the_journey_from_another_origin_through_cors(browser, api):
    base, page_origin = api
    assert_the_whole_journey(walk(browser, f"{page_origin}/index.html?api={base}"))


VITE_CONFIG = """
const api = process.env.PLANHER_API;
export default {
  server: {
    proxy: Object.fromEntries(
      ["/auth", "/users", "/profiles", "/periods", "/moods", "/predictions", "/admin",
       "/health"].map((prefix) => [prefix, api])),
  },
};
"""


@contextlib.contextmanager
def vite_dev_server(folder, api_base: str):
    """Vite's dev server on the journey's page, proxying the API as the README says."""
    for name in ("index.html", "journey.js"):
        shutil.copy(BROWSER_DIR / name, folder / name)
    (folder / "vite.config.mjs").write_text(VITE_CONFIG)
    port = free_port()
    server = subprocess.Popen(
        [
            NODE_MODULES / ".bin" / "vite",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--strictPort",
        ],
        cwd=folder,
        env={**os.environ, "PLANHER_API": api_base},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    origin = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{origin}/index.html", server, lambda: "vite did not start")
        yield origin
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_journey_through_vites_dev_server_proxy(browser, api, tmp_path):
    if shutil.which("npm") is None:
        missing("npm")
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_MODULES.parent,
        check=True,
        timeout=300,
    )
    base, _ = api
    with vite_dev_server(tmp_path, base) as origin:
        assert_the_whole_journey(walk(browser, f"{origin}/index.html"))


def test_docs_authorize_signs_in_and_try_it_out_calls_the_api(browser, api):
    base, _ = api
    email = new_email()
    registered = httpx.post(f"{base}/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201
    page = browser.new_page()
    try:
        page.goto(f"{base}/docs")
        page.click("button.authorize")
        page.fill("#oauth_username", email)
        page.fill("#oauth_password", PASSWORD)
        page.click(".auth-btn-wrapper button.authorize")
        page.wait_for_selector(".auth-container h6:has-text('Authorized')")  # signed in
        page.click(".auth-btn-wrapper button.btn-done")
        operation = page.locator("#operations-auth-get_auth_me")
        operation.locator(".opblock-summary").click()
        operation.locator("button.try-out__btn").click()
        operation.locator("button.execute").click()
        status = operation.locator(".live-responses-table tr.response .response-col_status").first
        status.wait_for(timeout=15_000)
        assert status.inner_text().strip() == "200"
        assert email in operation.locator(".live-responses-table .microlight").first.inner_text()
    finally:
        page.close()
