"""Researcher aggregates with disclosure control."""

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from schemas.api import AggregateCreate, AggregatePublic
from schemas.organisations import Hierarchy
from service import aggregates, audit, published
from service.deps import ResearcherDep, SessionDep, SettingsDep
from service.errors import problem_responses

router = APIRouter(prefix="/aggregates", tags=["aggregates"])


@router.post("", response_model=AggregatePublic, responses=problem_responses(401, 403, 404, 422))
async def create_aggregate(
    request: Request,
    body: AggregateCreate,
    _: ResearcherDep,
    session: SessionDep,
    settings: SettingsDep,
) -> AggregatePublic:
    """Counts by dimensions over a release, perturbed and suppressed so no one is singled out."""
    # Noted first: a refused query is asked too.
    asked = [
        audit.body_part("measures", body.measures),
        audit.body_part("dimensions", body.dimensions),
    ]
    asked += [audit.body_part(f"filters.{d}", v) for d, v in sorted(body.filters.items())]
    audit.note(request, asked=asked)
    number = published.get_release(session, body.release).number
    manifest = published.read_manifest(settings, number)
    result = await run_in_threadpool(
        aggregates.aggregate,
        manifest,
        body,
        pseudonym_key=settings.key_bytes(),
        hierarchy=Hierarchy.default(),
    )
    audit.note(request, rows=len(result.cells), release=number)
    return result
