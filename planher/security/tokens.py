"""Signing keys and the signed access and refresh tokens."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

import itsdangerous
import sqlalchemy as sa

from planher.config import ACCESS_TOKEN_SALT, REFRESH_TOKEN_SALT, SECRET_KEY_FILE_SUFFIX, Settings

logger = logging.getLogger(__name__)


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
