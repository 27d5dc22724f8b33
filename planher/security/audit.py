"""The audit trail: security events, never a password, a token or a health value."""

from __future__ import annotations

from starlette.requests import Request

from planher.clock import utc_now
from planher.storage.tables import audit_events


async def audit(
    request: Request,
    action: str,
    *,
    ok: bool,
    user_id: int | None = None,
    target: str | None = None,
) -> None:
    """Record a security event: who, what, from where, and whether it succeeded. Never a
    password, a token or a health value."""
    if user_id is None and request.user.is_authenticated:
        user_id = request.user.id
    await request.app.state.database.execute(
        audit_events.insert().values(
            at=utc_now(),
            user_id=user_id,
            action=action,
            target=target,
            ip=request.client.host if request.client else None,
            ok=ok,
        )
    )
