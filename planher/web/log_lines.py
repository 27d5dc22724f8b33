"""How log lines are written: PlanHer's beside uvicorn's, each written during a request
with that request's id, as text or (LOG_FORMAT=json) one JSON object per line."""

from __future__ import annotations

import logging

from uvicorn.logging import AccessFormatter

from planher.web.request_id import NO_REQUEST, JsonFormatter, RequestIdFilter

UVICORN_LOGGERS = ("uvicorn", "uvicorn.access")  # the two uvicorn gives handlers
PLANHER_TEXT_FORMAT = "%(levelname)s:     %(name)s: %(message)s"
UVICORN_ACCESS_FORMAT = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'


class WithRequestId(logging.Formatter):
    """A text line, then ` [request id]` when it was written during a request."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", NO_REQUEST)
        return line if request_id == NO_REQUEST else f"{line} [{request_id}]"


class AccessWithRequestId(WithRequestId, AccessFormatter):
    """uvicorn's access line, then its request's id."""


def log_beside_uvicorn(log_format: str) -> None:
    """Uvicorn configures only its own loggers: unless something else configured logging,
    PlanHer's INFO lines (migrations applied, models trained, clients gone) are written
    beside uvicorn's rather than dropped. Lines written during a request get its id; with
    `json`, every line, theirs and ours, is one JSON object."""
    package_logger = logging.getLogger("planher")
    if not logging.getLogger().handlers and not package_logger.handlers:
        package_logger.addHandler(logging.StreamHandler())
        if package_logger.level == logging.NOTSET:
            package_logger.setLevel(logging.INFO)
    for name in ("planher", *UVICORN_LOGGERS):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(known, RequestIdFilter) for known in handler.filters):
                handler.addFilter(RequestIdFilter())
            if log_format == "json":
                handler.setFormatter(JsonFormatter())
            elif name == "planher":
                handler.setFormatter(WithRequestId(PLANHER_TEXT_FORMAT))
            elif name == "uvicorn.access":
                handler.setFormatter(AccessWithRequestId(UVICORN_ACCESS_FORMAT))
