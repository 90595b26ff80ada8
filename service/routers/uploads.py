"""Uploads: send an extract, follow its load, read its quality report."""

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, File, Form, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from etl.ledger import hold_request, let_go
from etl.warehouse import Warehouse
from schemas.api import UploadAccepted, UploadDetail, UploadPage, UploadPublic
from schemas.catalog import Upload
from schemas.errors import NotFound
from schemas.forms import Form as ExtractForm
from service import audit, uploads
from service.database import MAX_CATALOG_ID
from service.deps import RegistryDep, SessionDep, SettingsDep, StaffDep
from service.errors import problem_responses
from service.routers import PLAIN_TEXT, text_query

router = APIRouter(prefix="/uploads", tags=["uploads"])

# Catalog ids are SQL integers, 32-bit on PostgreSQL: anything larger is a 422, not a DataError.
UploadId = Annotated[int, Path(ge=1, le=MAX_CATALOG_ID)]


def _public(upload: Upload) -> UploadPublic:
    assert upload.id is not None
    return UploadPublic(
        id=upload.id,
        form=upload.form,
        filename=upload.filename,
        status=upload.status,
        providers=uploads.providers_of(upload),
        rows_read=upload.rows_read,
        rows_accepted=upload.rows_accepted,
        rows_quarantined=upload.rows_quarantined,
        rows_superseded=upload.rows_superseded,
        uploaded_by=upload.uploaded_by,
        started_at=upload.started_at,
        finished_at=upload.finished_at,
    )


@router.post(
    "",
    status_code=202,
    response_model=UploadAccepted,
    responses=problem_responses(401, 403, 413, 422),
)
async def create_upload(
    request: Request,
    principal: RegistryDep,
    session: SessionDep,
    settings: SettingsDep,
    background: BackgroundTasks,
    file: Annotated[UploadFile, File(description="The extract: CSV, XLSX or Parquet")],
    form: Annotated[ExtractForm, Form(description="Which form the file holds")],
) -> UploadAccepted:
    """Receive an extract and load it in the background; answers with the upload id."""
    await uploads.single_parts(request)
    extract = await uploads.receive(file, settings)
    # Off the event loop (0.6 s for 512 MiB); kept for the load, which needs it too.
    sha256 = await run_in_threadpool(lambda: extract.sha256)
    held = None
    try:
        upload = uploads.create_request(
            session,
            form=form,
            filename=file.filename or "upload",
            sha256=sha256,
            uploaded_by=principal.subject,
        )
        assert upload.id is not None
        # Held from before the row is seen until the job ends: no repair takes it for dead.
        held = hold_request(Warehouse(settings.warehouse_dir), upload.id)
        # The job must see the committed row: commit before the response is sent.
        session.commit()
        background.add_task(
            uploads.run_load, request.app.state.engine, settings, upload.id, extract, form, held
        )
    except BaseException:
        if held is not None:
            let_go(held)
        raise
    audit.note(request, rows=1, created=("upload_id", upload.id))
    return UploadAccepted(id=upload.id, status=upload.status)


@router.get("", response_model=UploadPage, responses=problem_responses(401, 403, 422))
def list_uploads(
    request: Request,
    principal: StaffDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    form: ExtractForm | None = None,
    status: Annotated[str | None, text_query(max_length=20), PLAIN_TEXT] = None,
    provider: Annotated[str | None, Query(pattern=r"^[0-9]{9}$")] = None,
) -> UploadPage:
    """List uploads, newest first (a trust sees only uploads holding its own provider)."""
    rows, total = uploads.list_uploads(
        session,
        principal,
        limit=limit,
        offset=offset,
        form=form.value if form is not None else None,
        status=status,
        provider=provider,
    )
    audit.note(request, rows=len(rows))
    return UploadPage(items=[_public(u) for u in rows], total=total, limit=limit, offset=offset)


@router.get(
    "/{upload_id}", response_model=UploadDetail, responses=problem_responses(401, 403, 404, 422)
)
def get_upload(
    request: Request, upload_id: UploadId, principal: StaffDep, session: SessionDep
) -> UploadDetail:
    """An upload's status, row counts and quality report.

    A trust sees the report in full only when the upload holds no other provider's rows;
    otherwise counts only (no failing record ids).
    """
    upload = uploads.visible_upload(session, upload_id, principal)
    report = uploads.latest_report(session, upload)
    audit.note(request, rows=1)
    return UploadDetail(
        **_public(upload).model_dump(),
        error=upload.error,
        report=None if report is None else uploads.report_for(upload, principal, report),
    )


@router.get(
    "/{upload_id}/report.html",
    response_class=HTMLResponse,
    responses=problem_responses(401, 403, 404, 422),
)
def get_upload_report(
    request: Request, upload_id: UploadId, principal: StaffDep, session: SessionDep
) -> HTMLResponse:
    """An upload's quality report as a web page."""
    upload = uploads.visible_upload(session, upload_id, principal)
    report = uploads.latest_report(session, upload)
    if report is None:
        raise NotFound(uploads.without_report(session, upload))
    audit.note(request, rows=1)
    return HTMLResponse(uploads.render_report(uploads.report_for(upload, principal, report)))
