"""The authentication backend: a bearer token in, the signed-in user (or why not) out."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    UnauthenticatedUser,
)
from starlette.requests import HTTPConnection

from planher.security.tokens import InvalidToken
from planher.storage.queries import ACCOUNT_COLUMNS
from planher.storage.tables import logins, users

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
