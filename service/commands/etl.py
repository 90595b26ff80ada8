"""CLI: load files, publish releases, erase opted-out patients, list the upload ledger.

`kvarus load FILE --form F`, `kvarus release [--note TEXT]`, `kvarus erase --pseudonyms-file PATH`
(or `--stdin`, or `--pseudonym X`), `kvarus uploads`. Exit 0 when done, 1 when the file (or
request) is rejected, 2 on a usage error (`kvarus erase` without any pseudonym option). Nothing
printed here holds a pseudonym, a patient key or a record value: counts, statuses and check names
only.
"""

import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine

from etl.erasure import erase_patients
from etl.ledger import list_uploads
from etl.load import load_file
from etl.warehouse import Warehouse
from schemas.forms import Form
from schemas.organisations import Hierarchy
from service.commands.common import console, reports_errors, settings
from service.database import make_engine, session_scope
from service.publishing import ResultsUnderLocks, ensure_indicators, publish
from service.settings import Settings
from service.uploads import NAME_WITHHELD, ledger_filename

_STEPS = {"read": "Read", "validated": "Validated", "written": "Written"}


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
        uploaded_by: Annotated[str, typer.Option(help="Who uploads")] = "cli",
    ) -> None:
        """Load one extract file: validate, quarantine failing rows, store the rest."""
        config = settings()
        key = config.key_bytes()
        warehouse = Warehouse(config.warehouse_dir, config.releases_dir)
        known = frozenset(o.orgnr for o in Hierarchy.default().providers)
        engine = make_engine(config)
        # An opt-out's replacement release gets its indicators under the locks, before it is served.
        results = ResultsUnderLocks(config, required=False)
        with (
            _ledger_named(file) as source,
            Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                console=console, transient=True,
            ) as bar,
            session_scope(engine) as session,
        ):  # fmt: skip
            task = bar.add_task(f"Loading {source.name} ({form.value})")

            def progress(step: str, rows: int) -> None:
                bar.update(task, description=f"{_STEPS.get(step, step)}: {rows:,} rows")

            upload = load_file(
                source, form, warehouse=warehouse, session=session, key=key,
                known_providers=known, uploaded_by=uploaded_by, progress=progress,
                before_commit=results,
            )  # fmt: skip
            results.index(session)
            status, error = upload.status, upload.error
            summary = (
                f"upload {upload.id}: {status}; read {upload.rows_read}, accepted "
                f"{upload.rows_accepted}, quarantined {upload.rows_quarantined}, superseded "
                f"{upload.rows_superseded}, erased {upload.rows_erased}"
            )
        if status == "rejected":
            console.print(f"[bold red]Rejected:[/] {error}", highlight=False)
            raise typer.Exit(1)
        typer.echo(summary)
        # Should the replacement's indicators have failed under the locks (logged): compute them.
        _ensure_indicators(engine, config)

    @app.command("release")
    @reports_errors
    def release(
        note: Annotated[str | None, typer.Option(help="A note kept with the release")] = None,
    ) -> None:
        """Publish the warehouse's current state as the next numbered release, with indicators."""
        config = settings()
        with session_scope(make_engine(config)) as session:
            manifest, results = publish(config, session, note=note)
        counts = ", ".join(f"{name} {t.row_count}" for name, t in manifest.tables.items())
        typer.echo(f"release {manifest.release}: {counts}; indicators in {results}")

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
        provider: Annotated[str | None, typer.Option(help="Provider that reported")] = None,
        optout_date: Annotated[
            datetime | None,
            typer.Option(formats=["%Y-%m-%d"], help="Date of the opt-out, yyyy-mm-dd"),
        ] = None,
    ) -> None:
        """Erase every record of the patients physically; logs counts, never the pseudonym.

        Give the pseudonyms with --pseudonyms-file or --stdin: unlike --pseudonym, these keep
        them out of shell history and /proc/*/cmdline.
        """
        if not pseudonym and pseudonyms_file is None and not stdin:
            # A usage error (exit 2), as the README's convention has it, not rejected input.
            raise typer.BadParameter(
                "one of them is required",
                param_hint="'--pseudonyms-file', '--stdin' or '--pseudonym'",
            )
        pseudonym = list(pseudonym or [])
        if pseudonyms_file is not None:
            pseudonym += _lines(pseudonyms_file.read_text(encoding="utf-8-sig"))
        if stdin:
            pseudonym += _lines(sys.stdin.read())
        config = settings()
        warehouse = Warehouse(config.warehouse_dir, config.releases_dir)
        when = optout_date.date() if optout_date is not None else None
        engine = make_engine(config)
        # The replacement release gets its indicators before it is committed (and served).
        results = ResultsUnderLocks(config, required=False)
        with session_scope(engine) as session:
            # Commits before it releases the write locks: a writer waiting for them (another
            # erasure, a publish) must find the replacement release.
            erasure = erase_patients(
                pseudonym, warehouse=warehouse, session=session, key=config.key_bytes(),
                releases_dir=config.releases_dir, provider_orgnr=provider, optout_date=when,
                before_commit=results,
            )  # fmt: skip
            results.index(session)
            rows = sum(erasure.rows_erased.values())
            rebuilt = erasure.releases_rebuilt
        typer.echo(f"erased {rows} rows of {len(set(pseudonym))} patient(s)")
        if rebuilt:
            typer.echo(f"releases retired and rebuilt: {rebuilt}")
        _ensure_indicators(engine, config)

    @app.command("uploads")
    @reports_errors
    def uploads(
        limit: Annotated[int, typer.Option(help="How many, newest first")] = 50,
    ) -> None:
        """List the upload ledger, newest first."""
        config = settings()
        table = Table()
        for name in ("id", "form", "status"):
            # Never folded or cut, however narrow the terminal.
            table.add_column(name, no_wrap=True, min_width=len("duplicate") if name != "id" else 3)
        for name in ("read", "accepted", "quarantined", "superseded", "file", "by", "started"):
            table.add_column(name)
        with session_scope(make_engine(config)) as session:
            for u in list_uploads(session, limit):
                table.add_row(
                    str(u.id), u.form, u.status, str(u.rows_read), str(u.rows_accepted),
                    str(u.rows_quarantined), str(u.rows_superseded), u.filename, u.uploaded_by,
                    u.started_at.strftime("%Y-%m-%d %H:%M"),
                )  # fmt: skip
        console.print(table)


# The suffix (the reader picks the format by it) kept on a withheld name: a plain one only.
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,7}")


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


def _lines(text: str) -> list[str]:
    """One pseudonym per line, surrounding spaces stripped, blank lines skipped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def _ensure_indicators(engine: Engine, config: Settings) -> None:
    """Compute the indicators of releases that lack them (a replacement after an erasure).

    The file is loaded (or the patients erased) by then: a failure here is a warning, and the
    command still exits 0, as the API's upload job does (`service.uploads`).
    """
    try:
        with session_scope(engine) as session:
            computed = ensure_indicators(config, session)
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
