"""Releases: list, describe and publish numbered, immutable versions of the register."""

from typing import Annotated, Final

from fastapi import APIRouter, Path, Request

from etl.privacy import holds_identity_number
from schemas.api import ReleaseCreate, ReleaseDetail, ReleasePublic, TablePublic
from schemas.catalog import Release
from schemas.errors import RejectedInput
from service import audit, published
from service.database import MAX_CATALOG_ID
from service.deps import PrincipalDep, RegistryDep, SessionDep, SettingsDep
from service.errors import problem_responses

router = APIRouter(prefix="/releases", tags=["releases"])

# The wording of `kvarus release --note` and `kvarus keys create --name`; the note is not echoed.
NOTE_REFUSED: Final = (
    "note: it looks like it holds a national identity number: write the note without it; "
    "nothing was published"
)


def _public(release: Release) -> ReleasePublic:
    return ReleasePublic(
        number=release.number,
        created_at=release.created_at,
        note=release.note,
        retired=release.retired,
        published_by=release.published_by,
    )


@router.get("", response_model=list[ReleasePublic], responses=problem_responses(401))
def list_releases(
    request: Request, principal: PrincipalDep, session: SessionDep
) -> list[ReleasePublic]:
    """The served releases, newest first; the registry's list also holds the retired ones."""
    releases = published.list_releases(session)
    if principal.role != "registry":
        # A retired release is one an erasure took out of service: the public list would say
        # that a patient opted out, and when.
        releases = [r for r in releases if not r.retired]
    audit.note(request, rows=len(releases))
    return [_public(r) for r in releases]


@router.get("/{number}", response_model=ReleaseDetail, responses=problem_responses(401, 404, 422))
def get_release(
    request: Request,
    number: Annotated[int, Path(ge=1, le=MAX_CATALOG_ID)],
    _: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
) -> ReleaseDetail:
    """A release's manifest summary: tables, Delta versions and row counts."""
    release = published.get_release(session, number)
    manifest = published.read_manifest(settings, number)
    audit.note(request, rows=len(manifest.tables), release=number)
    return ReleaseDetail(
        **_public(release).model_dump(),
        spec_version=manifest.spec_version,
        tables=[
            TablePublic(name=t.name, delta_version=t.delta_version, row_count=t.row_count)
            for t in manifest.tables.values()
        ],
    )


@router.post(
    "",
    status_code=201,
    response_model=ReleaseDetail,
    responses=problem_responses(401, 403, 409, 422),
)
def create_release(
    request: Request,
    principal: RegistryDep,
    session: SessionDep,
    settings: SettingsDep,
    body: ReleaseCreate | None = None,
) -> ReleaseDetail:
    """Publish the warehouse as the next release and compute its indicators (the body, with
    its note, may be left out)."""
    from service.publishing import publish  # the ETL and indicator engine load on first use

    # Refused before anything is published or computed: the catalog and the release's manifest
    # would keep the note, and `GET /releases` shows it to anyone. The privacy guard's own
    # detector (every shape and spelling a file is refused for), as `kvarus keys create --name`.
    note = body.note if body is not None else None
    if note is not None and holds_identity_number(note):
        raise RejectedInput(NOTE_REFUSED)
    manifest, _ = publish(settings, session, note=note, published_by=principal.subject)
    session.flush()
    audit.note(request, rows=len(manifest.tables), release=manifest.release)
    release = published.get_release(session, manifest.release)
    return ReleaseDetail(
        **_public(release).model_dump(),
        spec_version=manifest.spec_version,
        tables=[
            TablePublic(name=t.name, delta_version=t.delta_version, row_count=t.row_count)
            for t in manifest.tables.values()
        ],
    )
