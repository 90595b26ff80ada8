"""CLI: `kvarus report UPLOAD_ID`, the stored quality report of one upload.

Staff who run the register from the command line see why rows of an upload were quarantined or why
the file was rejected: the report that validation stored for it (`schemas.catalog.ValidationRun`),
rendered as `kvarus validate` renders its own, and the upload's ledger row above it. The report
names failing checks, counts and failing rows' record ids (never a pseudonym); the ledger row its
counts, status and stored error, which hold no input value either.

The ledger row an API upload's job created (`uploaded_by` `api:N`, the server's temporary file
name) is reported too, with a line naming its request: `kvarus uploads` lists the whole ledger,
and whoever runs the CLI has the catalog itself. The API serves only the request row (upload N):
it answers the ledger row's id as a missing one (`service.uploads.visible_upload`).

Exit codes as `service.commands.common` says: 0 the report (or, for an upload that has none, its
status and error; with `--format json` as JSON, its `report` null and `reason` saying why), 1 no
such upload, 2 a usage error (a bad `--format`, an `--out` not writable).
"""

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from etl.ledger import request_id_of
from schemas.catalog import Upload
from schemas.errors import NotFound
from service.commands.common import check_output_file, console, fail, reports_errors, settings
from service.database import MAX_CATALOG_ID, make_engine, session_scope
from service.uploads import is_internal, latest_report, without_report
from validation.report import render_html, render_text


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `kvarus` app."""

    @app.command("report")
    @reports_errors
    def report(
        upload_id: Annotated[
            int,
            typer.Argument(
                help="The upload's id, as `kvarus uploads` lists it", show_default=False
            ),
        ],
        output_format: Annotated[
            Literal["text", "json", "html"], typer.Option("--format", help="Report format")
        ] = "text",
        out: Annotated[
            Path | None,
            typer.Option(dir_okay=False, help="Write the report here (default: stdout)"),
        ] = None,
    ) -> None:
        """Show why an upload's rows were quarantined or its file rejected: its quality report."""
        if out is not None:
            check_output_file(out)
        config = settings()
        with session_scope(make_engine(config)) as session:
            # An id outside the catalog's range is no upload's: never asked of the database,
            # where PostgreSQL (32-bit ids) would refuse it as a DataError.
            upload = session.get(Upload, upload_id) if 1 <= upload_id <= MAX_CATALOG_ID else None
            if upload is None:
                # Not echoed, as the API does not: an identity number without its leading zero
                # fits an int, and the id is what the user typed.
                raise NotFound("no upload with this id")
            heading = _heading(upload)
            request_id = request_id_of(upload.uploaded_by) if is_internal(upload) else None
            if request_id is not None:
                heading += f"\nloaded for API upload {request_id} (the row the API serves)"
            stored = latest_report(session, upload)
            without = without_report(session, upload) if stored is None else ""
        if stored is None and output_format == "json":
            # A script asked for JSON: it gets JSON, the report null and why.
            answer = {
                "upload_id": upload.id,
                "form": upload.form,
                "status": upload.status,
                "error": upload.error,
                "report": None,
                "reason": without,
            }
            _write(json.dumps(answer, indent=2, ensure_ascii=False) + "\n", out)
            return
        if stored is None:
            typer.echo(heading)
            if upload.error is not None:
                typer.echo(f"Error: {upload.error}")
            typer.echo(without)
            if out is not None:
                console.print(f"Nothing written to {out}", highlight=False, markup=False)
            return
        _write(_rendered(stored, output_format, heading, upload_id), out)


def _write(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"Report written to {out}", highlight=False, markup=False)


def _heading(upload: Upload) -> str:
    """One line naming the upload: id, form, status, file name (as the ledger keeps it), counts."""
    return (
        f"upload {upload.id}: form {upload.form}, status {upload.status}, file {upload.filename}; "
        f"read {upload.rows_read}, accepted {upload.rows_accepted}, quarantined "
        f"{upload.rows_quarantined}, superseded {upload.rows_superseded}"
    )


def _rendered(report: dict[str, object], output_format: str, heading: str, upload_id: int) -> str:
    """The stored report in `output_format`; the text one under the upload's heading."""
    if output_format == "json":
        return json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    try:
        if output_format == "html":
            return render_html(dict(report))
        return f"{heading}\n{render_text(dict(report))}"
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        # A stored report of an older or damaged shape: name the class, never its content.
        fail(
            "Failed",
            f"the stored quality report of upload {upload_id} cannot be rendered as "
            f"{output_format} ({type(error).__name__}); --format json prints it as stored",
            1,
        )
