"""The audit log, for the registry."""

from typing import Annotated

from fastapi import APIRouter, Query, Request

from schemas.api import AuditEventPublic, AuditPage
from service import audit
from service.deps import RegistryDep, SessionDep
from service.errors import problem_responses
from service.routers import PLAIN_TEXT, text_query

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=AuditPage, responses=problem_responses(401, 403, 422))
def list_audit_events(
    request: Request,
    _: RegistryDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    subject: Annotated[str | None, text_query(max_length=200), PLAIN_TEXT] = None,
    route: Annotated[str | None, text_query(max_length=200), PLAIN_TEXT] = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
) -> AuditPage:
    """Who asked for what, newest first.

    Every request this server process answered before this one is in the page. With several
    worker processes (`kvarus serve --workers N`) another worker's latest requests (its last
    ~50 ms, the audit writer's linger, plus a commit; longer while its writes are slow or
    retried) may not be in it yet.
    """
    # This process's writer only: each worker has its own (see `service.audit.AuditWriter`).
    request.app.state.audit.flush()
    events, total = audit.query_events(
        session, limit=limit, offset=offset, subject=subject, route=route, status=status
    )
    audit.note(request, rows=len(events))
    return AuditPage(
        items=[AuditEventPublic.model_validate(e) for e in events],
        total=total,
        limit=limit,
        offset=offset,
    )
