"""The audit log: who asked for what, one catalog row per data request.

A middleware writes an `AuditEvent` after every request under `/api/v1` (subject, role, method,
route template, query string, status, rows returned, release). Routes say how many rows they
returned and from which release with `note(...)`. Bodies are never logged: an aggregate's filters
or an upload's content stay out of the log, and so do pseudonyms and record values.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from fastapi import Request, Response
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from schemas.catalog import AuditEvent
from service.database import session_scope

logger = logging.getLogger("kvarus.audit")

AUDITED_PREFIX: Final = "/api/v1"
# Long query strings are cut: the log records what was asked, not an unbounded echo of it.
MAX_QUERY_LENGTH: Final = 500


def note(request: Request, *, rows: int | None = None, release: int | None = None) -> None:
    """Tell the audit log how many rows a route returned and from which release."""
    if rows is not None:
        request.state.audit_rows = rows
    if release is not None:
        request.state.audit_release = release


def _route_template(request: Request) -> str:
    # The template (/api/v1/uploads/{upload_id}) groups requests; unknown paths keep their path.
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is Match.FULL:
            return str(getattr(route, "path", request.url.path))
    return request.url.path[:200]


def _write(engine: Engine, event: AuditEvent) -> None:
    with session_scope(engine) as session:
        session.add(event)


async def audit_requests(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Middleware: write one audit row per request under /api/v1 (failures included)."""
    if not request.url.path.startswith(AUDITED_PREFIX):
        return await call_next(request)
    try:
        response = await call_next(request)
    except Exception:
        # A bug: the error handler answers 500 outside this middleware; the row is still due.
        await _record(request, 500)
        raise
    await _record(request, response.status_code)
    return response


async def _record(request: Request, status: int) -> None:
    principal = getattr(request.state, "principal", None)
    event = AuditEvent(
        subject=principal.subject if principal is not None else "unauthenticated",
        role=principal.role if principal is not None else "none",
        method=request.method,
        route=_route_template(request),
        query=request.url.query[:MAX_QUERY_LENGTH],
        status=status,
        rows=getattr(request.state, "audit_rows", None),
        release=getattr(request.state, "audit_release", None),
    )
    try:
        await run_in_threadpool(_write, request.app.state.engine, event)
    except Exception:
        # An audit row that cannot be written is an operational alarm, not the client's error;
        # the response has already been produced.
        logger.exception("audit row could not be written for %s %s", event.method, event.route)


def query_events(
    session: Session,
    *,
    limit: int,
    offset: int,
    subject: str | None = None,
    route: str | None = None,
    status: int | None = None,
) -> tuple[list[AuditEvent], int]:
    """A page of audit events (newest first) and the total matching."""
    statement = select(AuditEvent)
    counter = select(func.count()).select_from(AuditEvent)
    for column, value in (
        (AuditEvent.subject, subject),
        (AuditEvent.route, route),
        (AuditEvent.status, status),
    ):
        if value is not None:
            statement = statement.where(column == value)
            counter = counter.where(column == value)
    total = int(session.exec(counter).one())
    events = session.exec(
        statement.order_by(col(AuditEvent.id).desc()).offset(offset).limit(limit)
    ).all()
    return list(events), total
