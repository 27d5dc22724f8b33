"""/admin: accounts and the audit trail, for admins."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from planher.api.common import list_response
from planher.schemas.requests import ListQuery
from planher.schemas.responses import AuditEventOut, UserOut
from planher.storage.queries import ACCOUNT_COLUMNS, Listing, list_page
from planher.storage.tables import audit_events, users
from planher.web.endpoint import endpoint

AUDIT_EVENTS = Listing(audit_events, audit_events.c.at, owned=False)
ACCOUNTS = Listing(users, users.c.created_at, owned=False, columns=ACCOUNT_COLUMNS)


@endpoint(
    "Every account, newest first: account fields only",
    ok=(200, list[UserOut]),
    auth="admin",
    query=ListQuery,
)
async def admin_users(request: Request, query: ListQuery) -> Any:
    rows, total = await list_page(request.app.state.database, ACCOUNTS, query)
    return list_response(rows, total)


@endpoint(
    "Security events, newest first", ok=(200, list[AuditEventOut]), auth="admin", query=ListQuery
)
async def admin_audit(request: Request, query: ListQuery) -> Any:
    rows, total = await list_page(request.app.state.database, AUDIT_EVENTS, query)
    return list_response(rows, total)
