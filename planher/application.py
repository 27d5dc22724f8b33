"""The app: routes, lifespan (migrations, background tasks) and create_app."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import itsdangerous
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from planher.api.admin import admin_audit, admin_users
from planher.api.auth import auth_me, login, logout, refresh, register
from planher.api.calendar import (
    calendar_feed,
    create_calendar_feed,
    delete_calendar_feed,
    update_calendar_feed,
)
from planher.api.docs import docs, docs_asset, openapi_json
from planher.api.imports import import_me
from planher.api.moods import create_mood, delete_mood, list_moods, update_mood
from planher.api.observations import (
    create_observation,
    delete_observation,
    list_observations,
    update_observation,
)
from planher.api.periods import create_period, delete_period, list_periods, update_period
from planher.api.predictions import current_prediction, forecast, prediction_history, retrain
from planher.api.profiles import create_profile, get_profile, update_profile
from planher.api.service import health, health_ready
from planher.api.users import delete_me, export_me, update_me
from planher.config import (
    CORS_EXPOSED_HEADERS,
    CORS_REQUEST_HEADERS,
    RETENTION_RETRY_S,
    RETENTION_SWEEP_INTERVAL_S,
    Settings,
)
from planher.energy.models import MODEL_SIGNATURE_SALT, ModelCache
from planher.energy.trainer import Trainer
from planher.population_store import PopulationStore
from planher.security.authentication import BearerTokenBackend
from planher.security.passwords import hash_password
from planher.security.rate_limits import RequestCounter
from planher.security.tokens import MissingSecretKeys, TokenSigner, signing_keys
from planher.storage.database import Database, background_task, database_for
from planher.storage.failures import DatabaseUnavailable, FailureLog, failure_kind
from planher.storage.migrations import migrate
from planher.storage.queries import delete_expired_history
from planher.web.access_log import mask_secret_paths
from planher.web.endpoint import Handler
from planher.web.error_handlers import (
    body_too_large,
    http_error,
    request_read_timeout,
    server_error,
    validation_error,
)
from planher.web.log_lines import log_beside_uvicorn
from planher.web.middleware import (
    BodySizeLimitMiddleware,
    ClientAddressMiddleware,
    ClientGoneMiddleware,
    DatabaseUnavailableMiddleware,
    QuietStartupFailureMiddleware,
    RequestReadTimeoutMiddleware,
    StandardHeadersMiddleware,
    StartupFailed,
)
from planher.web.openapi import openapi_document
from planher.web.request_errors import BodyTooLarge, RequestReadTimeout, RequestValidationError
from planher.web.request_id import RequestIdMiddleware

logger = logging.getLogger(__name__)


def resource(path: str, **handlers: Handler) -> Route:
    """One route serving `path` with a handler per method (`get=…, put=…`), so that a 405
    lists every allowed method in its Allow header."""

    async def dispatch(request: Request) -> Response:
        method = "get" if request.method == "HEAD" else request.method.lower()
        return await handlers[method](request)

    route = Route(path, dispatch, methods=[method.upper() for method in handlers])
    route.handlers = handlers  # for the OpenAPI document
    return route


def with_and_without_slash(path: str, **handlers: Handler) -> list[Route]:
    """`/periods` and `/periods/` are the same resource, and neither redirects; the document
    lists it once, as the contract spells it (with the slash)."""
    twin = resource(path, **handlers)
    twin.include_in_schema = False
    return [twin, resource(f"{path}/", **handlers)]


ROUTES = [
    resource("/auth/register", post=register),
    resource("/auth/login", post=login),
    resource("/auth/refresh", post=refresh),
    resource("/auth/logout", post=logout),
    resource("/auth/me", get=auth_me),
    resource("/users/me", get=auth_me, put=update_me, delete=delete_me),
    resource("/users/me/export", get=export_me),
    resource("/users/me/import", post=import_me),
    resource(
        "/users/me/calendar-feed",
        post=create_calendar_feed,
        put=update_calendar_feed,
        delete=delete_calendar_feed,
    ),
    resource("/calendar/{feed_token}.ics", get=calendar_feed),
    resource("/profiles/me", get=get_profile, post=create_profile, put=update_profile),
    *with_and_without_slash("/periods", get=list_periods, post=create_period),
    resource("/periods/{id:int}", put=update_period, delete=delete_period),
    *with_and_without_slash("/moods", get=list_moods, post=create_mood),
    resource("/moods/{id:int}", put=update_mood, delete=delete_mood),
    *with_and_without_slash("/observations", get=list_observations, post=create_observation),
    resource("/observations/{id:int}", put=update_observation, delete=delete_observation),
    resource("/predictions/current", get=current_prediction),
    resource("/predictions/forecast", get=forecast),
    resource("/predictions/history", get=prediction_history),
    resource("/predictions/retrain", post=retrain),
    resource("/admin/users", get=admin_users),
    resource("/admin/audit", get=admin_audit),
    resource("/health", get=health),
    resource("/health/ready", get=health_ready),
    resource("/openapi.json", get=openapi_json),
    resource("/docs", get=docs),
    Route("/docs/assets/{name}", docs_asset, include_in_schema=False),
]


async def sweep_expired_history(database: Database) -> bool:
    """One retention sweep; False if the database could not serve it."""
    try:
        deleted = await delete_expired_history(database)
    except DatabaseUnavailable:
        return False
    if deleted:
        logger.info("retention: deleted %d rows past their owners' retention_days", deleted)
    return True


async def sweep_expired_history_daily(database: Database) -> None:
    """Retention after start-up: a sweep every RETENTION_SWEEP_INTERVAL_S, and a minute
    after one that failed (the database may be back by then)."""
    pause = RETENTION_SWEEP_INTERVAL_S
    while True:
        await asyncio.sleep(pause)
        pause = (
            RETENTION_SWEEP_INTERVAL_S
            if await sweep_expired_history(database)
            else RETENTION_RETRY_S
        )


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    settings, database = app.state.settings, app.state.database
    mask_secret_paths()
    try:
        keys = signing_keys(settings)
    except (MissingSecretKeys, OSError) as error:
        logger.critical("cannot start: %s", error)
        raise StartupFailed(str(error)) from None
    app.state.tokens = TokenSigner(keys, settings.access_token_ttl_s, settings.refresh_token_ttl_s)
    app.state.model_signer = itsdangerous.Signer(
        list(reversed(keys)), salt=MODEL_SIGNATURE_SALT, digest_method=hashlib.sha256
    )
    try:
        await database.connect()
        await migrate(database)
        await database.check_writable()
    except BaseException as error:
        await database.disconnect()
        if not isinstance(error, DatabaseUnavailable | sa.exc.SQLAlchemyError | OSError):
            raise
        cause = failure_kind(error.__cause__ or error)
        logger.critical("cannot start: the database %s: %s", database.display_url, cause)
        raise StartupFailed(cause) from None
    try:
        app.state.dummy_password_hash = await hash_password(
            secrets.token_urlsafe(16), settings.bcrypt_rounds
        )
        # The ~150,000 objects of the loaded libraries never die: out of the collector's
        # sight, a full collection (in whichever thread allocates, holding the GIL and so
        # the event loop) takes milliseconds instead of ~50-80 ms.
        gc.collect()
        gc.freeze()
        await sweep_expired_history(database)
        chores = [
            background_task(sweep_expired_history_daily(database)),
            background_task(app.state.cycle_population.keep_fresh()),
        ]
        yield
        for chore in chores:
            chore.cancel()
        await app.state.trainer.drain()
    finally:
        await database.disconnect()


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_environ()
    log_beside_uvicorn(settings.log_format)  # before uvicorn's first line of this process
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(QuietStartupFailureMiddleware),
            Middleware(RequestIdMiddleware),
            Middleware(ClientGoneMiddleware),
            Middleware(RequestReadTimeoutMiddleware, timeout_s=settings.request_read_timeout_s),
            Middleware(ClientAddressMiddleware, trusted=settings.forwarded_allow_ips),
            Middleware(StandardHeadersMiddleware),
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                allow_headers=CORS_REQUEST_HEADERS,
                expose_headers=CORS_EXPOSED_HEADERS,
                max_age=600,
            ),
            Middleware(DatabaseUnavailableMiddleware),
            Middleware(BodySizeLimitMiddleware, import_max_bytes=settings.import_max_bytes),
            Middleware(AuthenticationMiddleware, backend=BearerTokenBackend()),
        ],
        exception_handlers={
            HTTPException: http_error,
            RequestValidationError: validation_error,
            BodyTooLarge: body_too_large,
            RequestReadTimeout: request_read_timeout,
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # `/periods` and `/periods/` are both served as-is
    app.state.openapi = openapi_document(app.routes)
    app.state.settings = settings
    app.state.database = database_for(settings)
    app.state.failure_log = FailureLog(app.state.database.display_url)
    app.state.model_cache = ModelCache(settings.model_cache_size)
    app.state.cycle_population = PopulationStore(app.state.database, settings.population_check_s)
    app.state.trainer = Trainer(app)
    app.state.request_counter = RequestCounter(settings.rate_limits["api_user"])
    app.state.rate_limits_purged_at = -math.inf
    return app


async def with_app(settings: Settings, work: Callable[[Starlette], Awaitable[Any]]) -> Any:
    """Run `work` inside the app's lifespan (database connected, migrations applied): for
    commands and benchmarks that need the app's state without serving it."""
    app = create_app(settings)
    async with lifespan(app):
        return await work(app)
