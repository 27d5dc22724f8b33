"""uvicorn's access log: a calendar feed's secret never reaches it."""

import logging

import httpx

from conftest import PASSWORD, uvicorn_server
from planher.web.access_log import SecretPathFilter


def access_line(path: str) -> logging.LogRecord:
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", path, "1.1", 200),
        None,
    )


def test_a_feed_token_is_masked_and_every_other_path_kept():
    masking = SecretPathFilter()
    for path, logged in (
        ("/calendar/Zm9vYmFy-secret_token.ics", "/calendar/***.ics"),
        ("/calendar/Zm9vYmFy.ics?x=1", "/calendar/***.ics?x=1"),
        ("/moods/?limit=30", "/moods/?limit=30"),
        ("/users/me/calendar-feed", "/users/me/calendar-feed"),
    ):
        record = access_line(path)
        assert masking.filter(record)
        assert record.getMessage() == f'127.0.0.1:5000 - "GET {logged} HTTP/1.1" 200'


def test_the_procfile_servers_access_log_never_holds_a_feed_token(tmp_path):
    log = tmp_path / "server.log"
    with uvicorn_server(f"sqlite:///{tmp_path / 'feed.db'}", log, access_log=True) as (base, _):
        with httpx.Client(base_url=base, timeout=10) as http:
            body = {"email": "feed@example.org", "password": PASSWORD}
            assert http.post("/auth/register", json=body).status_code == 201
            token = http.post("/auth/login", json=body).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            http.post("/periods/", headers=headers, json={"start_date": "2026-11-01"})
            url = http.post("/users/me/calendar-feed", headers=headers).json()["url"]
            assert http.get(url).status_code == 200
    feed_token = url.rsplit("/", 1)[1].removesuffix(".ics")
    text = log.read_text()
    assert '"GET /calendar/***.ics HTTP/1.1" 200' in text, text
    assert feed_token not in text
