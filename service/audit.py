"""The audit log: who asked for what, one catalog row per data request.

A middleware writes an `AuditEvent` after every request under `/api/v1` (subject, role, method,
route template, query string, status, rows returned, release). Routes say how many rows they
returned and from which release with `note(...)`. Bodies are never logged: an aggregate's filters
or an upload's content stay out of the log, and so do pseudonyms and record values.
"""

import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Final

from fastapi import Request, Response
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select
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


class AuditWriter:
    """Writes audit rows from one background thread, in batches, with its own connection.

    Requests only enqueue their row: a write per request on the request's path held a pooled
    connection per in-flight request and exhausted the pool under 50 concurrent clients (the
    benchmark found it). `flush()` waits until every queued row is committed; the audit route
    calls it, so the registry always reads a complete log.
    """

    # Rows per transaction: one commit (one fsync on SQLite) per batch instead of per request.
    BATCH: Final = 500

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.queue: queue.Queue[AuditEvent | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="kvarus-audit", daemon=True)
        self.thread.start()

    def submit(self, event: AuditEvent) -> None:
        self.queue.put(event)

    def flush(self) -> None:
        self.queue.join()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[AuditEvent] = []
            item = self.queue.get()
            taken = 1
            if item is None:
                stopping = True
            else:
                batch.append(item)
            while not stopping and len(batch) < self.BATCH:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                taken += 1
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            try:
                if batch:
                    with session_scope(self.engine) as session:
                        session.add_all(batch)
            except Exception:
                # An audit row that cannot be written is an operational alarm; the thread goes on.
                logger.exception("%d audit rows could not be written", len(batch))
            finally:
                for _ in range(taken):
                    self.queue.task_done()


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
        _record(request, 500)
        raise
    _record(request, response.status_code)
    return response


def _record(request: Request, status: int) -> None:
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
    request.app.state.audit.submit(event)


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
