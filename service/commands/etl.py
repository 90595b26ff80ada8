"""CLI: load files, publish releases, erase opted-out patients, list the upload ledger.

`kvarus load FILE --form F`, `kvarus release [--note TEXT]`, `kvarus erase --pseudonyms-file PATH`
(or `--stdin`, or `--pseudonym X`), `kvarus uploads`. Exit codes as `service.commands.common` says:
0 done, 1 the file (or request) rejected, 2 a usage error, 130 interrupted. Nothing printed here
holds a pseudonym, a patient key or a record value: counts, statuses and check names only.

An erasure (`kvarus erase`, `kvarus load --form optout`) holds SIGINT and SIGTERM until it is done:
stopped between its deletes and its catalog commit, it would leave its patients in the release
still served, and a repair cannot finish it (the keys live only in its memory).
"""

import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Annotated, Final

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine

from etl.erasure import erase_patients
from etl.ledger import API_UPLOADER, list_uploads
from etl.load import InterruptedAfterLoading, load_file
from etl.privacy import holds_identity_number
from etl.release import latest_release
from etl.warehouse import Warehouse
from schemas.errors import RejectedInput
from schemas.forms import Form, register_today
from schemas.manifest import ReleaseManifest
from schemas.organisations import Hierarchy, is_valid_orgnr
from service.commands.common import (
    EXIT_INTERRUPTED,
    console,
    fail,
    reports_errors,
    settings,
    signals_deferred,
)
from service.database import make_engine, session_scope
from service.publishing import ResultsUnderLocks, ensure_indicators, publish
from service.settings import Settings
from service.uploads import NAME_WITHHELD, latest_report, ledger_filename

# What `etl.load.load_file` runs after each step it reports done: the spinner names the step now
# running (named when done, `guarded` stayed on screen through the seconds of validation).
_RUNNING: Final = {
    "read": "Checking {rows:,} rows for direct identifiers",
    "guarded": "Validating {rows:,} rows",
    "validated": "Checking {rows:,} rows against the warehouse",
    "checked": "Staging the rows ({rows:,} passed every check)",
    "staged": "Writing {rows:,} rows to the warehouse",
    "stored": "Recording the upload ({rows:,} rows stored)",
    "released": "Recording the upload ({rows:,} held rows released)",
    "written": "Recording the upload",
}
ERASURE_CONTINUES: Final = "Finishing the erasure first: it cannot be left half done"
# SQL's LIMIT is a signed 64-bit integer (SQLite, PostgreSQL): a larger one overflows the driver.
MAX_LIMIT: Final = 2**63 - 1
# The uploads table to standard output: it is the command's answer (and piped, the pipe's input).
output = Console()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `kvarus` app."""

    @app.command("load")
    @reports_errors
    def load(
        file: Annotated[
            Path,
            typer.Argument(
                exists=True,
                dir_okay=False,
                readable=True,
                help="Extract file: CSV, XLSX or Parquet",
            ),
        ],
        form: Annotated[Form, typer.Option("--form", help="The form the file holds")],
        uploaded_by: Annotated[
            str, typer.Option(callback=_uploader, help="Who uploads (a system, a unit, a role)")
        ] = "cli",
    ) -> None:
        """Load one extract file: validate, quarantine failing rows, store the rest."""
        config = settings()
        key = config.key_bytes()
        warehouse = Warehouse(config.warehouse_dir, config.releases_dir)
        known = frozenset(o.orgnr for o in Hierarchy.default().providers)
        engine = make_engine(config)
        # An opt-out's replacement release gets its indicators under the locks, before it is served.
        results = ResultsUnderLocks(config, required=False)
        # An opt-out file's load is an erasure.
        erasing: AbstractContextManager[list[int]] = (
            signals_deferred(ERASURE_CONTINUES) if form is Form.OPTOUT else nullcontext([])
        )
        loaded: int | None = None
        try:
            with (
                erasing as received,
                _ledger_named(file) as source,
                Progress(
                    SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    # Not on a pipe or a log file: there it left an empty line on stderr.
                    console=console, transient=True, disable=not console.is_terminal,
                ) as bar,
                session_scope(engine) as session,
            ):  # fmt: skip
                task = bar.add_task(f"Reading {source.name} ({form.value})…")

                def progress(step: str, rows: int) -> None:
                    bar.update(task, description=_running(step, rows, form))

                upload = load_file(
                    source, form, warehouse=warehouse, session=session, key=key,
                    known_providers=known, uploaded_by=uploaded_by, progress=progress,
                    before_commit=results,
                )  # fmt: skip
                status, error = upload.status, upload.error
                loaded = upload.id if status == "loaded" else None
                summary = (
                    f"upload {upload.id}: {status}; read {upload.rows_read}, accepted "
                    f"{upload.rows_accepted}, quarantined {upload.rows_quarantined}, superseded "
                    f"{upload.rows_superseded}, erased {upload.rows_erased}"
                )
                notes = _notes(latest_report(session, upload))
        except KeyboardInterrupt as interrupt:
            # `load_file` undoes a load it is stopped in (`etl.load`): only a returned one stands,
            # or one stopped after its final commit.
            if isinstance(interrupt, InterruptedAfterLoading):
                loaded = interrupt.upload_id
            done = "nothing was stored" if loaded is None else f"upload {loaded} was loaded"
            fail("Interrupted", done, EXIT_INTERRUPTED)
        # The reader's notes on the file (a workbook's other sheet that holds data was not read),
        # as its stored report has them: on stderr, beside the verdict.
        for note in notes:
            console.print(f"[bold]Note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        if status == "rejected":
            fail("Rejected", str(error), 1)
        typer.echo(summary)
        if received:
            _interrupted_after_erasure(received)
        # Should the replacement's indicators have failed under the locks (logged): compute them.
        _ensure_indicators(engine, config)

    @app.command("release")
    @reports_errors
    def release(
        note: Annotated[
            str | None, typer.Option(callback=_release_note, help="A note kept with the release")
        ] = None,
    ) -> None:
        """Publish the warehouse's current state as the next numbered release, with indicators."""
        config = settings()
        with (
            console.status("Publishing the next release and computing its indicators…"),
            session_scope(make_engine(config)) as session,
        ):
            previous = latest_release(session)
            # Its files, read before publishing (none when its directory is gone).
            path = None if previous is None else Path(previous.manifest_path)
            before = _files_of(ReleaseManifest.read(path)) if path and path.exists() else None
            manifest, results = publish(config, session, note=note)
        counts = ", ".join(f"{name} {t.row_count}" for name, t in manifest.tables.items())
        typer.echo(f"release {manifest.release}: {counts}; indicators in {results}")
        if previous is not None and before == _files_of(manifest):
            # Not refused: publishing again recomputes the indicators (a catalogue changed).
            typer.echo(
                f"release {manifest.release} holds the same data as release "
                f"{previous.number}: nothing was loaded or erased in between"
            )

    @app.command("erase")
    @reports_errors
    def erase(
        pseudonym: Annotated[
            list[str] | None,
            typer.Option(
                "--pseudonym",
                help="Source pseudonym (repeatable). It lands in shell history and in the "
                "process list: prefer --pseudonyms-file or --stdin",
            ),
        ] = None,
        pseudonyms_file: Annotated[
            Path | None,
            typer.Option(
                "--pseudonyms-file",
                help="File with one source pseudonym per line; keeps them out of shell history "
                "and the process list",
                exists=True,
                dir_okay=False,
                readable=True,
            ),
        ] = None,
        stdin: Annotated[
            bool,
            typer.Option(
                "--stdin",
                help="Read source pseudonyms from standard input, one per line; keeps them out "
                "of shell history and the process list",
            ),
        ] = False,
        provider: Annotated[
            str | None,
            typer.Option(
                callback=_provider, help="Organisation number of the provider that reported"
            ),
        ] = None,
        optout_date: Annotated[
            datetime | None,
            typer.Option(
                # The extracts' two date formats (EXTRACT_SPEC.md).
                formats=["%Y-%m-%d", "%d.%m.%Y"],
                callback=_optout_date,
                help="Date of the opt-out, yyyy-mm-dd or dd.mm.yyyy",
            ),
        ] = None,
    ) -> None:
        """Erase every record of the patients physically; logs counts, never the pseudonym.

        --pseudonyms-file and --stdin keep the pseudonyms out of shell history and /proc/*/cmdline.
        """
        if not pseudonym and pseudonyms_file is None and not stdin:
            # A usage error (exit 2), as the README's convention has it, not rejected input.
            raise typer.BadParameter(
                "one of them is required",
                param_hint="'--pseudonyms-file', '--stdin' or '--pseudonym'",
            )
        try:  # standard input may be read from a terminal, where Ctrl-C ends the typing
            sources = _pseudonyms(pseudonym or [], pseudonyms_file, stdin)
        except KeyboardInterrupt:
            fail("Interrupted", "nothing was erased", EXIT_INTERRUPTED)
        config = settings()
        key = config.key_bytes()
        warehouse = Warehouse(config.warehouse_dir, config.releases_dir)
        when = optout_date.date() if optout_date is not None else None
        engine = make_engine(config)
        # The replacement release gets its indicators before it is committed (and served).
        results = ResultsUnderLocks(config, required=False)
        with signals_deferred(ERASURE_CONTINUES) as received, session_scope(engine) as session:
            # Commits before it releases the write locks: a writer waiting for them (another
            # erasure, a publish) must find the replacement release.
            erasure = erase_patients(
                sources, warehouse=warehouse, session=session, key=key,
                releases_dir=config.releases_dir, provider_orgnr=provider, optout_date=when,
                before_commit=results,
            )  # fmt: skip
            rows = sum(erasure.rows_erased.values())
            rebuilt = erasure.releases_rebuilt
        typer.echo(f"erased {rows} rows of {len(set(sources))} patient(s)")
        if rebuilt:
            typer.echo(f"releases retired and rebuilt: {rebuilt}")
        if received:
            _interrupted_after_erasure(received)
        _ensure_indicators(engine, config)

    @app.command("uploads")
    @reports_errors
    def uploads(
        limit: Annotated[
            int, typer.Option(min=1, max=MAX_LIMIT, help="How many, newest first")
        ] = 50,
    ) -> None:
        """List the upload ledger, newest first."""
        config = settings()
        # Fits 80 columns: no borders, one space between columns, and the columns that may fold
        # (started, by and the file's name) share the last one. The others are never folded or
        # cut, however narrow the terminal.
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0))
        for name in ("id", "form", "status"):
            table.add_column(name, no_wrap=True)
        for name in ("read", "accepted", "quarantined", "superseded"):
            table.add_column(name, no_wrap=True, justify="right")
        table.add_column("started · by · file", overflow="fold")
        with session_scope(make_engine(config)) as session:
            for u in list_uploads(session, limit):
                started = u.started_at.strftime("%Y-%m-%d %H:%M")
                table.add_row(
                    str(u.id), u.form, u.status, str(u.rows_read), str(u.rows_accepted),
                    str(u.rows_quarantined), str(u.rows_superseded),
                    # Text, not markup: a file name may hold [brackets].
                    Text(f"{started} · {u.uploaded_by} · {u.filename}"),
                )  # fmt: skip
        output.print(table)


# The suffix (the reader picks the format by it) kept on a withheld name: a plain one only.
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,7}")


def _files_of(release: ReleaseManifest) -> dict[str, list[str]]:
    """A release's files per table."""
    return {name: table.files for name, table in release.tables.items()}


def _notes(report: dict[str, object] | None) -> list[str]:
    """The notes of a stored validation report (`schemas.forms.READ_NOTES`); none in a report
    stored before they existed, or when the reader refused the file (its message says it all)."""
    notes = (report or {}).get("notes")
    return [str(note) for note in notes] if isinstance(notes, list) else []


@contextmanager
def _ledger_named(file: Path) -> Iterator[Path]:
    """`file`, or a link to it under a neutral name when its name hides an identity number that
    `etl.privacy.safe_filename` (which `load_file` applies to the name it stores) misses: the
    ledger keeps the name and shows it to every user who may see the upload."""
    if ledger_filename(file.name) != NAME_WITHHELD:
        yield file
        return
    suffix = file.suffix if _SUFFIX.fullmatch(file.suffix) else ""
    with tempfile.TemporaryDirectory(prefix="kvarus-load-") as directory:
        link = Path(directory) / f"{NAME_WITHHELD}{suffix}"
        link.symlink_to(file.resolve())
        yield link


def _running(step: str, rows: int, form: Form) -> str:
    """The spinner's text once `load_file` reported `step` done for `rows` rows."""
    if form is Form.OPTOUT and step == "validated":
        return f"Erasing the patients of {rows:,} opt-outs…"
    return _RUNNING.get(step, "{step}: {rows:,} rows").format(step=step, rows=rows) + "…"


# The prefixes of the uploaders the API records (`service.auth` subjects, `etl.ledger`).
API_UPLOADERS: Final = (API_UPLOADER, "key:", "oidc:")


def _uploader(value: str) -> str:
    """An uploader that looks like it holds an identity number is a usage error (exit 2), never
    stored: the ledger keeps it, and `kvarus uploads` and `GET /api/v1/uploads` (to trust keys
    too) show it. Checked before the file is read. Nor may it take the shape of the API's
    uploaders (`key:N`, `oidc:...`, and `api:N`, which would hide the upload from the API's list
    as an internal row): the ledger would name a key holder who uploaded nothing."""
    if holds_identity_number(value):
        raise typer.BadParameter(
            "it looks like it holds a national identity number: name the uploader otherwise "
            "(a system, a unit, a role)"
        )
    if value.startswith(API_UPLOADERS):
        raise typer.BadParameter(
            "api:, key: and oidc: name the API's uploaders: name the uploader otherwise "
            "(a system, a unit, a role)"
        )
    return value


def _release_note(value: str | None) -> str | None:
    """A note that looks like it holds an identity number is a usage error (exit 2), never
    stored: the catalog and the release's manifest keep it, and `GET /api/v1/releases` shows it
    to anyone. Checked before anything is published or computed."""
    if value is not None and holds_identity_number(value):
        raise typer.BadParameter(
            "it looks like it holds a national identity number: write the note without it"
        )
    return value


def _provider(value: str | None) -> str | None:
    if value is not None and not is_valid_orgnr(value):
        raise typer.BadParameter(
            "expected an organisation number: 9 digits, the last a check digit"
        )
    return value


def _optout_date(value: datetime | None) -> datetime | None:
    if value is not None and value.date() > register_today():
        raise typer.BadParameter("an opt-out date cannot lie in the future")
    return value


def _pseudonyms(given: list[str], file: Path | None, stdin: bool) -> list[str]:
    """The pseudonyms of the options, the file's and standard input's lines, checked as UTF-8.

    The re-keying hashes their UTF-8 bytes. The decoder's own message would quote the offending
    byte, a part of a pseudonym: the error names only where the text came from.
    """
    if any(not _is_utf8(p) for p in given):
        raise RejectedInput("a --pseudonym is not UTF-8 text")
    # Stripped as the lines are (and as a loaded file's values were before they were keyed).
    pseudonyms = [p.strip() for p in given if p.strip()]
    if file is not None:
        pseudonyms += _lines(_decoded(file.read_bytes(), "the pseudonyms file"))
    if stdin:
        pseudonyms += _lines(_decoded(sys.stdin.buffer.read(), "the standard input"))
    return pseudonyms


def _is_utf8(text: str) -> bool:
    """False for an argument of bytes the locale could not decode (held as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decoded(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RejectedInput(f"{source} is not UTF-8 text") from None


def _lines(text: str) -> list[str]:
    """One pseudonym per line, surrounding spaces stripped, blank lines skipped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def _interrupted_after_erasure(received: list[int]) -> None:
    """Exit as interrupted by the first signal that an erasure held back until it was done."""
    fail(
        "Interrupted after the erasure finished",
        "the patients are erased from the tables and the releases served; the next load, erase "
        "or release computes any indicators missing",
        128 + received[0],
    )


def _ensure_indicators(engine: Engine, config: Settings) -> None:
    """Compute the indicators of releases that lack them (a replacement after an erasure).

    The file is loaded (or the patients erased) by then: a failure here is a warning, and the
    command still exits 0, as the API's upload job does (`service.uploads`).
    """
    try:
        with session_scope(engine) as session:
            computed = ensure_indicators(config, session)
    except KeyboardInterrupt:
        fail(
            "Interrupted",
            "indicators not computed; the next load, erase or release computes them",
            EXIT_INTERRUPTED,
        )
    except Exception as error:
        # The class only: an engine's message may quote a record value.
        console.print(
            f"[bold yellow]Warning:[/] indicators not computed ({type(error).__name__}); the next "
            "load, erase or release computes them",
            highlight=False,
        )
        return
    if computed:
        typer.echo(f"indicators computed for release(s) {', '.join(map(str, computed))}")
