"""Uploads through the API: received into memory under a size limit, then loaded in the background.

The file as sent holds source pseudonyms (and, until the guard has read it, whatever else): it is
never written to disk (`etl.read.Received`). The body is parsed without Starlette's spooling to a
temporary file (`service.app`), read into memory by `receive` and handed to the job, whose load
reads it from there; a dead process leaves nothing of it behind.

The request row (status `pending`) is the id the client gets back at once (202). The background
job marks it `loading` (`etl.ledger.LOADING`) and runs the ETL (`etl.load.load_file`) with its own
catalog session; the ETL writes its own ledger row, which the request row then points at
(`loaded_as`) and mirrors (status, counts). Then it computes the indicators of any release that
lacks them (an opt-out file's erasure publishes a replacement release without them).

The upload list shows the request rows (with their load's outcome), never the ledger rows their
jobs created: the client knows the request's id, name and uploader, and polls that row.
"""

import logging
import os
import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Final
from urllib.parse import unquote

from fastapi import Request, UploadFile
from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select

from etl.ledger import (
    API_UPLOADER,
    LOADING,
    NOT_KEPT,
    api_uploader,
    let_go,
    loaded_for,
    mirror,
)
from etl.privacy import is_identity_number, safe_filename
from etl.read import Received
from schemas.catalog import Upload, ValidationRun
from schemas.errors import KvarusError, NotFound, RejectedInput
from schemas.forms import Form
from schemas.organisations import Hierarchy
from service.auth import Principal
from service.database import session_scope
from service.errors import PayloadTooLarge
from service.settings import Settings

logger = logging.getLogger("kvarus.uploads")


# The received file keeps the name's suffix (the reader picks the format by it: `.csv`, `.xlsx`,
# `.parquet`) only when it is one of these shapes; anything else cannot name a format anyway.
_SUFFIX: Final = re.compile(r"\.[a-z0-9]{1,7}")
# Unicode categories a file name never holds: control characters (NUL, line breaks, tabs) and
# lone surrogates. A NUL cannot even reach the file system or PostgreSQL (500s before).
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cs"})
# What the ledger keeps of a name that looks like it holds an identity number (the wording of
# `etl.privacy.safe_filename`, so that both checks read alike).
NAME_WITHHELD: Final = "(name withheld: it looks like it holds an identity number)"
# A national identity number has 11 digits (`etl.privacy.is_identity_number`).
_NUMBER_DIGITS: Final = 11


def check_filename(name: str) -> None:
    """Refuse (422) a file name holding a control character or a lone surrogate."""
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in name):
        raise RejectedInput(
            "the file name holds a control character (such as a NUL byte or a line break); "
            "rename the file and send it again"
        )


async def single_parts(request: Request) -> None:
    """Refuse (422) a multipart body with more than one `file` or `form` part: the route would
    silently load the last one only."""
    parts = await request.form()  # parsed once by the route already: Starlette caches it
    for name in ("file", "form"):
        count = len(parts.getlist(name))
        if count > 1:
            raise RejectedInput(
                f"the request holds {count} parts named '{name}'; send one file (and one form) "
                "per upload"
            )


def ledger_filename(name: str) -> str:
    """The name to keep in the ledger: `etl.privacy.safe_filename`'s, or `NAME_WITHHELD` when an
    identity number hides in it behind separators that check does not know (`_`, several spaces,
    a zero-width space, dots inside the date part, URL encoding)."""
    if any(_hides_number(text) for text in {name, unquote(name)}):
        return NAME_WITHHELD
    return safe_filename(name)


def _hides_number(name: str) -> bool:
    """Whether 11 consecutive digits of `name`, read with every character that is neither a
    letter nor a digit dropped, pass the identity-number check (any decimal digit counts, in
    NFKC form; a letter ends a run). A longer run is checked at every offset: a number may sit
    beside a date or a counter. A name withheld that held none is the cheaper error."""
    runs: list[str] = []
    current: list[str] = []
    for char in unicodedata.normalize("NFKC", name):
        digit = unicodedata.decimal(char, None)
        if digit is not None:
            current.append(str(digit))
        elif char.isalpha():
            runs.append("".join(current))
            current = []
    runs.append("".join(current))
    return any(
        is_identity_number(run[start : start + _NUMBER_DIGITS])
        for run in runs
        for start in range(len(run) - _NUMBER_DIGITS + 1)
    )


async def receive(file: UploadFile, settings: Settings) -> Received:
    """Read the upload into memory; 413 past the size limit, 422 for a file name holding a
    control character. Its name is `upload` and the client's suffix (the client's own name is the
    request row's, `create_request`)."""
    name = file.filename or "upload"
    check_filename(name)
    suffix = Path(name).suffix.lower()
    if not _SUFFIX.fullmatch(suffix):
        suffix = ""
    # The size first: the parser holds the whole part in memory already (`service.app`).
    try:
        if file.file.seek(0, os.SEEK_END) > settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"the file exceeds the limit of {settings.max_upload_bytes} bytes"
            )
        file.file.seek(0)
        data = file.file.read()
    finally:
        await file.close()  # the parser's copy: only ours stays
    return Received(f"upload{suffix}", data)


def create_request(
    session: Session, *, form: Form, filename: str, sha256: str, uploaded_by: str
) -> Upload:
    optout = form is Form.OPTOUT  # neither hash nor name kept (`etl.ledger.NOT_KEPT`)
    upload = Upload(
        file_sha256=NOT_KEPT if optout else sha256,
        form=form.value,
        filename=NOT_KEPT if optout else ledger_filename(filename)[:255],
        uploaded_by=uploaded_by,
    )
    session.add(upload)
    session.flush()
    return upload


def run_load(
    engine: Engine,
    settings: Settings,
    request_id: int,
    extract: Received,
    form: Form,
    held: IO[bytes],
) -> None:
    """The background job: load the file with its own session, then mirror the outcome. `held`:
    the request's lock (`etl.ledger.hold_request`), released when the job ends."""
    # Imported here: the ETL pulls in Great Expectations, seconds of import the API's other
    # routes should not wait for at start-up.
    from etl.load import load_file
    from etl.warehouse import Warehouse
    from service.publishing import ResultsUnderLocks

    # An opt-out's replacement release gets its indicators under the locks, before it is served.
    results = ResultsUnderLocks(settings, required=False)
    try:
        with session_scope(engine) as session:
            request = session.get(Upload, request_id)
            assert request is not None
            # Not `running`: that marks a load holding the write locks, which any other writer's
            # repair takes for dead (`etl.ledger`); this job may still be reading the file.
            request.status = LOADING
            request.started_at = datetime.now(UTC)
            session.add(request)
        with session_scope(engine) as session:
            loaded = load_file(
                extract,
                form,
                warehouse=Warehouse(settings.warehouse_dir, settings.releases_dir),
                session=session,
                key=settings.key_bytes(),
                known_providers=frozenset(o.orgnr for o in Hierarchy.default().providers),
                uploaded_by=api_uploader(request_id),
                before_commit=results,
            )
            session.flush()
            # The load's counts as committed now, its row and the request's locked until this
            # commit: a basis load that released the load's held rows since its commit counted
            # them in its ledger row (and in this request); one that does so from now on waits
            # for this commit (`etl.load._count_released`). The request's row is written first:
            # on SQLite that takes the write lock before the read (which locks nothing there),
            # and on PostgreSQL the rows are locked in id order, as the basis load locks them.
            session.execute(
                update(Upload)
                .where(col(Upload.id) == request_id)
                .values(loaded_as=loaded.id)
                .execution_options(synchronize_session=False)
            )
            session.exec(
                select(Upload)
                .where(col(Upload.id).in_((request_id, loaded.id)))
                .order_by(col(Upload.id))
                .with_for_update()
                .execution_options(populate_existing=True)
            ).all()
            request = session.get(Upload, request_id)
            assert request is not None
            mirror(request, loaded)
            session.add(request)
    except Exception as error:
        # A failed job must leave a visible status; the message names the error class only
        # unless it is one of ours (whose details never carry record values).
        detail = error.detail if isinstance(error, KvarusError) else type(error).__name__
        # The class only: a third-party message could quote a record value.
        logger.error("upload %s failed: %s", request_id, type(error).__name__)
        with session_scope(engine) as session:
            request = session.get(Upload, request_id)
            if request is not None:
                # Failed after its load was committed (telling the request, say): the load stands.
                finished = loaded_for(session, request_id)
                if finished is not None:
                    mirror(request, finished)
                else:
                    request.status = "failed"
                    request.error = detail
                session.add(request)
    else:
        # Should the replacement's indicators have failed under the locks (logged), or a replaced
        # release lack them for another reason: the API would serve it with none.
        _ensure_indicators(engine, settings, request_id)
    finally:
        let_go(held)


def _ensure_indicators(engine: Engine, settings: Settings, request_id: int) -> None:
    from service.publishing import ensure_indicators  # the indicator engine loads on first use

    try:
        with session_scope(engine) as session:
            computed = ensure_indicators(settings, session)
    except Exception as error:
        # The load itself is done; the results are computed by the next load, erase or publish.
        logger.error("upload %s: indicators not computed: %s", request_id, type(error).__name__)
        return
    if computed:
        logger.info("upload %s: indicators computed for release(s) %s", request_id, computed)


def providers_of(upload: Upload) -> list[str]:
    return [p for p in upload.providers.split(",") if p]


def is_internal(upload: Upload) -> bool:
    """Whether `upload` is the ledger row an API request's job created (`uploaded_by`
    `api:{request id}`, `etl.ledger.api_uploader`): its id, temporary file name and uploader are
    internal; the client polls the request row, which mirrors its outcome and serves its report."""
    return upload.uploaded_by.startswith(API_UPLOADER)


def visible_upload(session: Session, upload_id: int, principal: Principal) -> Upload:
    """Upload `upload_id` if the principal may see it (registry: all; trust: its own, but no
    opt-out); any other id is answered as a missing one (404).

    The ledger row of an API request's job (`is_internal`) is no upload of the API's: the list
    leaves it out (`list_uploads`), and its id is answered as a missing one (404, the same
    answer), to the registry too. The CLI (`kvarus uploads`, `kvarus report`) shows it."""
    upload = session.get(Upload, upload_id)
    if (
        upload is None
        or is_internal(upload)
        or (
            principal.role != "registry"
            and (upload.form == Form.OPTOUT.value or principal.provider not in providers_of(upload))
        )
    ):
        # One answer for a missing id and another provider's or an opt-out upload: a 403 would
        # tell a trust that the id is an upload (and which ids are opt-outs, `list_uploads`).
        # Not echoed: the id is what a client typed (an identity number without its leading
        # zero fits an int).
        raise NotFound("no upload with this id")
    return upload


# What a trust sees of a report on an upload that also holds other providers' rows: the file's
# and each check's counts, never which records failed (their record ids are another provider's).
SHARED_REPORT_KEYS: Final = (
    "form",
    "suite_version",
    "rows",
    "rejected",
    "rejection_reasons",  # "{check_id}: {n} of {rows} rows failed (tolerated x %)"
    "quarantined_rows",
    "categories",
    "notes",  # the reader's, on the file (`schemas.forms.READ_NOTES`): never a value
)
SHARED_CHECK_KEYS: Final = (
    "check_id",
    "column",
    "category",
    "severity",
    "status",
    "failing_count",
    "failing_percent",
    "tolerated_percent",
    "failing_record_ids_total",
)


def counts_only(report: dict[str, object]) -> dict[str, object]:
    """The report without any per-record detail: kept keys by whitelist, checks as counts."""
    result: dict[str, object] = {k: report[k] for k in SHARED_REPORT_KEYS if k in report}
    checks = report.get("checks")
    if isinstance(checks, list):
        result["checks"] = [
            {
                **{k: check[k] for k in SHARED_CHECK_KEYS if k in check},
                "failing_record_ids": [],  # withheld (the HTML report expects the key)
            }
            for check in checks
            if isinstance(check, dict)
        ]
    result["record_ids_withheld"] = True
    return result


# The checks of the column the upload's provider list is read from (`etl.load`): the list holds
# only well-formed orgnrs, so a row whose provider_orgnr is empty or malformed is in no one's
# list and may be any provider's. `validation.run.run_checks` reports every check of the suite
# (`not_applicable` when the column is missing, `error` when it could not be evaluated).
PROVIDER_CHECKS: Final = frozenset({"provider_orgnr.required", "provider_orgnr.pattern"})


def _provider_checks_passed(report: dict[str, object]) -> bool:
    """Whether no check of provider_orgnr in the report failed, was in error or was not
    applicable: then every row names a well-formed provider, one of the upload's list. A report
    that is not a suite's (no `checks` list) lists no record ids."""
    checks = report.get("checks")
    if not isinstance(checks, list):
        return True
    for check in checks:
        if not isinstance(check, dict):
            return False
        concerns_provider = (
            check.get("column") == "provider_orgnr" or check.get("check_id") in PROVIDER_CHECKS
        )
        if concerns_provider and check.get("status") != "passed":
            return False
    return True


def report_for(
    upload: Upload, principal: Principal, report: dict[str, object]
) -> dict[str, object]:
    """The report as `principal` may see it: in full for the registry, and for a trust only when
    every row of the upload is provably its own (its provider the only one listed, and every
    row's provider_orgnr checked well-formed); counts only otherwise: a row with an empty or
    malformed provider_orgnr is in no provider's list and may be another provider's record."""
    if principal.role == "registry":
        return report
    if (
        principal.provider is not None
        and providers_of(upload) == [principal.provider]
        and _provider_checks_passed(report)
    ):
        return report
    return counts_only(report)


def latest_report(session: Session, upload: Upload) -> dict[str, object] | None:
    target = upload.loaded_as if upload.loaded_as is not None else upload.id
    run = session.exec(
        select(ValidationRun)
        .where(ValidationRun.upload_id == target)
        .order_by(col(ValidationRun.id).desc())
    ).first()
    return run.report if run is not None else None


# `is_internal`'s test, negated, in SQL: a prefix compared exactly (SQLite's LIKE ignores case).
_NOT_INTERNAL: Final = func.substr(col(Upload.uploaded_by), 1, len(API_UPLOADER)) != API_UPLOADER


def list_uploads(
    session: Session,
    principal: Principal,
    *,
    limit: int,
    offset: int,
    form: str | None,
    status: str | None,
    provider: str | None,
) -> tuple[list[Upload], int]:
    """A page of uploads (newest first): the API's request rows (with their load's outcome) and the
    CLI's loads, as `GET /uploads/{id}` shows them (a trust: those holding its provider's rows,
    opt-outs not).

    The ledger row an API request's job created (`uploaded_by` `api:{request id}`, `is_internal`)
    is left out, and `visible_upload` answers its id as a missing one: its id, temporary file name
    and uploader are internal, and the request row mirrors its outcome (a job that failed before
    mirroring leaves the request `failed`).
    """
    statement = select(Upload).where(_NOT_INTERNAL)
    if form is not None:
        statement = statement.where(Upload.form == form)
    if status is not None:
        statement = statement.where(Upload.status == status)
    scope = principal.provider if principal.role == "trust" else provider
    if principal.role == "trust":
        if provider is not None and provider != principal.provider:
            return [], 0
        # An opt-out is the registry's: its row names every provider whose patients opted out,
        # and counts them, and a trust listed in it would learn that of the others.
        statement = statement.where(Upload.form != Form.OPTOUT.value)
    if scope is not None:
        # providers is a comma-separated list of 9-digit numbers: match whole entries.
        padded = "," + col(Upload.providers) + ","
        statement = statement.where(padded.contains(f",{scope},"))
    total = int(session.exec(select(func.count()).select_from(statement.subquery())).one())
    rows = session.exec(statement.order_by(col(Upload.id).desc()).offset(offset).limit(limit))
    return list(rows), total


def render_report(report: dict[str, object]) -> str:
    """The quality report as one self-contained HTML page (validation's own template)."""
    from validation.report import render_html  # the validation package loads on first use

    return render_html(dict(report))


# Statuses of an upload whose load has not finished: its report may still come.
UNFINISHED: Final = frozenset({"pending", "loading", "running"})


def without_report(session: Session, upload: Upload) -> str:
    """Why the upload has no quality report, in one line (`kvarus report`, the API's 404)."""
    if upload.status == "duplicate":
        # A duplicate is recorded before its file is read (`etl.load`): the report is the load's,
        # named by the id the API shows (an API upload's request row, not its job's ledger row).
        original = session.exec(
            select(Upload)
            .where(
                _NOT_INTERNAL,
                Upload.file_sha256 == upload.file_sha256,
                Upload.form == upload.form,
                Upload.status == "loaded",
                col(Upload.id) < upload.id,
            )
            .order_by(col(Upload.id).desc())
        ).first()
        loaded = f"; the same file was loaded as upload {original.id}" if original else ""
        return f"No quality report: a duplicate is not validated again{loaded}"
    if upload.status in UNFINISHED:
        return f"No quality report yet: the upload is {upload.status}"
    return f"No quality report: the upload was {upload.status} before a report was stored"
