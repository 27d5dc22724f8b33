"""uvicorn's access log without the secrets that some paths carry."""

from __future__ import annotations

import logging
import re

# A calendar feed's URL is its key: whoever reads it can read her cycles.
SECRET_PATH = re.compile(r"^/calendar/[^/?]+\.ics")
MASKED_FEED_PATH = "/calendar/***.ics"
PATH_ARGUMENT = 2  # uvicorn's access line: client, method, path with query, version, status


class SecretPathFilter(logging.Filter):
    """Masks a calendar feed's token in uvicorn's access lines; every line still passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        arguments = record.args
        if isinstance(arguments, tuple) and len(arguments) > PATH_ARGUMENT:
            path = arguments[PATH_ARGUMENT]
            if isinstance(path, str) and SECRET_PATH.match(path):
                masked = SECRET_PATH.sub(MASKED_FEED_PATH, path)
                record.args = (*arguments[:PATH_ARGUMENT], masked, *arguments[PATH_ARGUMENT + 1 :])
        return True


def mask_secret_paths() -> None:
    """Filter uvicorn's access log (once per process, however many apps it starts)."""
    access_logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(known, SecretPathFilter) for known in access_logger.filters):
        access_logger.addFilter(SecretPathFilter())
