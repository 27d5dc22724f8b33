"""/auth: register, sign in, refresh, sign out, who am I."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import sqlalchemy as sa
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from planher.clock import utc_now
from planher.errors import APIError
from planher.schemas.requests import (
    LoginBody,
    LogoutBody,
    OAuth2PasswordForm,
    RefreshBody,
    RegisterBody,
)
from planher.schemas.responses import TokenPairOut, UserOut
from planher.security.audit import audit, audit_event
from planher.security.authentication import BEARER_CHALLENGE
from planher.security.passwords import hash_password, verify_password
from planher.security.rate_limits import (
    client_ip,
    count_against_limit,
    purge_expired_windows,
    refund_hit,
)
from planher.security.tokens import InvalidToken
from planher.storage.database import UNIQUE_VIOLATIONS
from planher.storage.queries import email_taken, revoke_logins, signed_in_from
from planher.storage.tables import audit_events, logins, users
from planher.web.endpoint import endpoint


@endpoint(
    "Create an account",
    ok=(201, UserOut),
    auth=None,
    body=RegisterBody,
    errors={409: "An account with this email already exists", 429: "Too many registrations"},
)
async def register(request: Request, body: RegisterBody) -> Any:
    await count_against_limit(request, "register_ip", client_ip(request), "new accounts from here")
    database = request.app.state.database
    if await email_taken(database, body.email):
        raise APIError(409, "email_taken", "An account with this email already exists")
    password_hash = await hash_password(body.password, request.app.state.settings.bcrypt_rounds)
    now = utc_now()
    try:
        row = await database.fetch_one(
            users.insert()
            .values(
                email=body.email,
                password_hash=password_hash,
                name=body.name,
                time_zone=body.time_zone,
                role="user",
                created_at=now,
                updated_at=now,
            )
            .returning(*users.c)
        )
    except UNIQUE_VIOLATIONS:  # the same email registered concurrently
        raise APIError(409, "email_taken", "An account with this email already exists") from None
    return row


@endpoint(
    "Sign in: JSON, or the OAuth2 password flow's form (username = email)",
    ok=(200, TokenPairOut),
    auth=None,
    body=LoginBody,
    form=OAuth2PasswordForm,
    errors={401: "Incorrect email or password", 429: "Too many attempts"},
)
async def login(request: Request, body: LoginBody | OAuth2PasswordForm) -> Any:
    """Limits, balanced so that an attacker cannot lock a woman out: at most `login_ip`
    attempts per address; `login_account_ip` failures per account and address; and
    `login_account` failures per account across addresses, which never applies to an
    address with a live login of hers (her own devices keep working during an attack)."""
    database, ip = request.app.state.database, client_ip(request)
    await count_against_limit(request, "login_ip", ip, "sign-in attempts from here")
    await purge_expired_windows(request.app)
    row = await database.fetch_one(
        sa.select(users.c.id, users.c.password_hash).where(users.c.email == body.email)
    )
    user_id = row["id"] if row else None
    # Every attempt takes a slot of the per-account limits before bcrypt runs, in one
    # atomic step: of many parallel guesses only as many as the limit are checked. A
    # sign-in that succeeds gives its slots back (the limits count failures).
    slots = [("login_account_ip", f"{body.email}|{ip}", "failed sign-ins")]
    live_since = utc_now() - dt.timedelta(seconds=request.app.state.tokens.refresh_ttl_s)
    if row is None or not await signed_in_from(database, row["id"], ip, live_since):
        slots.append(("login_account", body.email, "failed sign-ins to this account"))
    taken = []
    try:
        for name, key, what in slots:
            await count_against_limit(request, name, key, what)
            taken.append((name, key))
    except HTTPException:
        for name, key in taken:
            await refund_hit(request, name, key)
        await audit(request, "login", ok=False, user_id=user_id, target="rate limited")
        raise
    # An unknown email still costs one bcrypt check, so timing does not reveal accounts.
    password_hash = row["password_hash"] if row else request.app.state.dummy_password_hash
    if not await verify_password(body.password, password_hash) or row is None:
        await audit(request, "login", ok=False, user_id=user_id)
        raise APIError(401, "wrong_credentials", "Incorrect email or password", BEARER_CHALLENGE)
    for name, key in taken:
        await refund_hit(request, name, key)
    tokens = request.app.state.tokens
    login_key, refresh_jti = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    await request.app.state.database.write(
        record_login,
        row["id"],
        ip,
        login_key,
        refresh_jti,
        tokens.refresh_ttl_s,
        audit_event(request, "login", ok=True, user_id=row["id"]),
    )
    return tokens.token_pair(row["id"], login_key, refresh_jti)


def record_login(
    connection: sa.Connection,
    user_id: int,
    ip: str,
    login_key: str,
    refresh_jti: str,
    refresh_ttl_s: float,
    event: dict[str, Any],
) -> None:
    """A unit of work: her new login, and the sign-in in the audit trail."""
    now = utc_now()
    # Logins whose refresh token has expired can never be used again: drop hers.
    connection.execute(
        logins.delete().where(
            logins.c.user_id == user_id,
            logins.c.refreshed_at < now - dt.timedelta(seconds=refresh_ttl_s),
        )
    )
    connection.execute(
        logins.insert().values(
            user_id=user_id,
            login_key=login_key,
            refresh_jti=refresh_jti,
            created_at=now,
            refreshed_at=now,
            ip=ip,
        )
    )
    connection.execute(audit_events.insert().values(event))


@endpoint(
    "Exchange a refresh token for a new pair (the old refresh token stops working)",
    ok=(200, TokenPairOut),
    auth=None,
    body=RefreshBody,
    errors={401: "Invalid, expired, revoked or reused refresh token"},
)
async def refresh(request: Request, body: RefreshBody) -> Any:
    database, tokens = request.app.state.database, request.app.state.tokens
    try:
        payload = tokens.load_refresh(body.refresh_token)
    except InvalidToken as error:
        raise APIError(401, error.code, str(error), BEARER_CHALLENGE) from None
    login_row = await database.fetch_one(
        logins.select().where(
            logins.c.login_key == payload["lid"], logins.c.user_id == payload["uid"]
        )
    )
    if login_row is None or login_row["revoked_at"] is not None:
        raise APIError(401, "token_revoked", "Token has been revoked", BEARER_CHALLENGE)
    new_jti = secrets.token_urlsafe(16)
    # Compare-and-swap on the current refresh id: of two uses of one token, only one wins.
    rotated = await database.fetch_one(
        logins.update()
        .where(
            logins.c.id == login_row["id"],
            logins.c.refresh_jti == payload["jti"],
            logins.c.revoked_at.is_(None),
        )
        .values(refresh_jti=new_jti, previous_refresh_jti=payload["jti"], refreshed_at=utc_now())
        .returning(logins.c.id)
    )
    if rotated is None:
        # The row as the winner left it: a token it replaced moments ago gets the same pair.
        current = await database.fetch_one(logins.select().where(logins.c.id == login_row["id"]))
        grace = dt.timedelta(seconds=request.app.state.settings.refresh_reuse_grace_s)
        if (
            current is not None
            and current["revoked_at"] is None
            and current["previous_refresh_jti"] == payload["jti"]
            and utc_now() - current["refreshed_at"] <= grace
        ):
            return tokens.token_pair(payload["uid"], payload["lid"], current["refresh_jti"])
        await revoke_logins(database, logins.c.id == login_row["id"], "refresh_reuse")
        await audit(
            request,
            "refresh_reuse",
            ok=False,
            user_id=payload["uid"],
            target=f"login {login_row['id']}",
        )
        raise APIError(
            401,
            "refresh_token_reused",
            "Refresh token was already used; this login has been signed out everywhere "
            "for safety. Please sign in again",
            BEARER_CHALLENGE,
        )
    return tokens.token_pair(payload["uid"], payload["lid"], new_jti)


@endpoint(
    "Sign out the login of the access token, of the refresh token given, or both",
    ok=(204, None),
    auth=None,
    body=LogoutBody,
    errors={401: "Neither a live access token nor a valid refresh token"},
)
async def logout(request: Request, body: LogoutBody) -> Response:
    """A refresh token alone ends its login (a client whose access token expired can still
    sign out); given with an access token, it counts only if it is hers."""
    signed_in = request.user.is_authenticated
    user_id = request.user.id if signed_in else None
    ended = [logins.c.id == request.user.login_id] if signed_in else []
    refresh_error = None
    if body.refresh_token is not None:
        try:
            payload = request.app.state.tokens.load_refresh(body.refresh_token)
        except InvalidToken as error:
            refresh_error = error
        else:
            if user_id in (None, payload["uid"]):
                user_id = payload["uid"]
                ended.append(logins.c.login_key == payload["lid"])
    if not ended:
        if refresh_error is not None:
            raise APIError(401, refresh_error.code, str(refresh_error), BEARER_CHALLENGE)
        raise APIError(401, request.user.code, request.user.reason, BEARER_CHALLENGE)
    await revoke_logins(
        request.app.state.database,
        sa.and_(logins.c.user_id == user_id, sa.or_(*ended)),
        "logout",
    )
    await audit(request, "logout", ok=True, user_id=user_id)
    return Response(status_code=204)


@endpoint("The signed-in user", ok=(200, UserOut))
async def auth_me(request: Request) -> Any:
    return request.user.account
