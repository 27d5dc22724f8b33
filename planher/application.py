"""The app: routes, lifespan (migrations, background tasks) and create_app."""

from __future__ import annotations

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
from planher.api.service import health, health_ready, metrics
from planher.api.users import delete_me, export_me, update_me
from planher.config import CORS_EXPOSED_HEADERS, CORS_REQUEST_HEADERS, Settings
from planher.energy.models import MODEL_SIGNATURE_SALT, ModelCache
from planher.energy.trainer import Trainer
from planher.energy.training_queue import QueuedTraining, TrainingQueue
from planher.metrics import forget_this_process
from planher.population_store import PopulationStore
from planher.retention_sweep import sweep_daily
from planher.security.authentication import BearerTokenBackend
from planher.security.passwords import hash_password
from planher.security.rate_limits import RequestCounter
from planher.security.tokens import MissingSecretKeys, TokenSigner, signing_keys
from planher.storage.database import background_task, database_for
from planher.storage.failures import DatabaseUnavailable, FailureLog, failure_kind
from planher.storage.migrations import migrate
from planher.web.access_log import mask_secret_paths
from planher.web.endpoint import Handler
from planher.web.error_handlers import (
    body_too_large,
    http_error,
    request_read_timeout,
    server_error,
    validation_error,
)
from planher.web.graceful_shutdown import CloseWhileDrainingMiddleware, GracefulShutdown
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
from planher.web.request_metrics import ROUTE_SCOPE_KEY, RequestMetricsMiddleware

logger = logging.getLogger(__name__)


def resource(path: str, **handlers: Handler) -> Route:
    """One route serving `path` with a handler per method (`get=…, put=…`), so that a 405
    lists every allowed method in its Allow header."""

    async def dispatch(request: Request) -> Response:
        request.scope[ROUTE_SCOPE_KEY] = path
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
    Route("/metrics", metrics, include_in_schema=False),
    resource("/openapi.json", get=openapi_json),
    resource("/docs", get=docs),
    Route("/docs/assets/{name}", docs_asset, include_in_schema=False),
]


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
        chores = []
        if app.state.serves_requests:
            app.state.shutdown.take_signal_first()
            chores = [
                background_task(sweep_daily(database)),
                background_task(app.state.cycle_population.keep_fresh()),
            ]
        yield
        for chore in chores:
            chore.cancel()
        await app.state.trainer.drain()
    finally:
        await database.disconnect()
        forget_this_process()
    app.state.shutdown.exit_cleanly_if_signalled()


TRAINING_MODES = ("inline", "worker")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_environ()
    log_beside_uvicorn(settings.log_format)  # before uvicorn's first line of this process
    if settings.training not in TRAINING_MODES:
        raise ValueError(f"TRAINING is {settings.training!r}: it can be inline or worker")
    shutdown = GracefulShutdown(settings.shutdown_drain_s)
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(QuietStartupFailureMiddleware),
            Middleware(RequestMetricsMiddleware),
            Middleware(RequestIdMiddleware),
            Middleware(CloseWhileDrainingMiddleware, shutdown=shutdown),
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
    app.state.shutdown = shutdown
    app.state.serves_requests = True  # with_app's commands run no chores and take no signal
    app.state.trainer = (
        QueuedTraining(
            TrainingQueue(app.state.database, settings.training_claim_stale_s),
            app.state.failure_log,
        )
        if settings.training == "worker"
        else Trainer(app)
    )
    app.state.request_counter = RequestCounter(settings.rate_limits["api_user"])
    app.state.rate_limits_purged_at = -math.inf
    return app


async def with_app(settings: Settings, work: Callable[[Starlette], Awaitable[Any]]) -> Any:
    """Run `work` inside the app's lifespan (database connected, migrations applied): for
    commands and benchmarks that need the app's state without serving it."""
    app = create_app(settings)
    app.state.serves_requests = False
    async with lifespan(app):
        return await work(app)
