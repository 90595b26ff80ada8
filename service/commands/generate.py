"""CLI: `kvarus generate`, the synthetic register (extract files of every form)."""

import re
from pathlib import Path
from typing import Annotated, Final, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from etl.generate import as_of_date, generate_register
from schemas.forms import register_today
from service.commands.common import check_output_directory, console, reports_errors

# The most episodes `kvarus generate` and `kvarus demo` write. Memory stays bounded (chunks of
# 100,000 episodes: ~630 MB resident), but disk and time do not: measured, 1,000,000 episodes
# wrote 466 MB of CSV (Parquet ~80 bytes an episode) in 11 s, so 100 million is ~47 GB of CSV
# and ~20 minutes, ten times the benchmarks' 10-million-episode register (`bench/`). More is a
# typo: 20 digits filled a disk (40 GB in 13 minutes) and would have run for ever.
MAX_EPISODES: Final = 100_000_000


def _error_rate(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise typer.BadParameter("must lie between 0 and 1 (a share of rows)")
    return value


def _years(value: str) -> str:
    match = re.fullmatch(r"\s*(\d{4})\s*-\s*(\d{4})\s*", value)
    if match is None:
        raise typer.BadParameter("expected FIRST-LAST, e.g. 2019-2024")
    first, last = int(match.group(1)), int(match.group(2))
    if not 2000 <= first <= last <= 2100:
        raise typer.BadParameter("FIRST must not be after LAST, both within 2000-2100")
    # The generator dates records up to 31 December of LAST (`as_of_date`), and a load rejects a
    # file with a date after today in Norway (`intake_date.future`, a fatal check): LAST must be
    # over, or the extracts would not be the valid ones the command promises.
    today = register_today()
    if as_of_date((first, last)) > today:
        latest = today.year if as_of_date((today.year, today.year)) == today else today.year - 1
        raise typer.BadParameter(
            f"LAST must be a year that is over (at most {latest}): records are dated up to 31 "
            f"December of LAST, and a load rejects dates in the future"
        )
    return f"{first}-{last}"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `kvarus` app."""

    @app.command("generate")
    @reports_errors
    def generate(
        out: Annotated[Path, typer.Option(help="Directory to write the extract files to")],
        episodes: Annotated[
            int, typer.Option(min=1, max=MAX_EPISODES, help="Treatment courses to generate")
        ] = 10_000,
        seed: Annotated[int, typer.Option(min=0, help="Random seed: same seed, same bytes")] = 0,
        file_format: Annotated[
            Literal["csv", "xlsx", "parquet"], typer.Option("--format", help="File format")
        ] = "csv",
        error_rate: Annotated[
            float,
            typer.Option(
                callback=_error_rate, help="Share of rows with one planted row-level error (0-1)"
            ),
        ] = 0.0,
        years: Annotated[
            str,
            typer.Option(
                callback=_years, help="Years of intake, FIRST-LAST (LAST a year that is over)"
            ),
        ] = "2019-2024",
        chunk_episodes: Annotated[
            int, typer.Option(min=1, hidden=True, help="Episodes per chunk (memory bound)")
        ] = 100_000,
    ) -> None:
        """Write a synthetic register: every form's extract file, planted errors, reject files."""
        check_output_directory(out)
        first, last = (int(y) for y in years.split("-"))
        with Progress(
            TextColumn("Generating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("episodes", total=episodes)
            summary = generate_register(
                out,
                episodes=episodes,
                seed=seed,
                file_format=file_format,
                error_rate=error_rate,
                years=(first, last),
                chunk_episodes=chunk_episodes,
                progress=lambda done: progress.advance(task, done),
            )
        table = Table("form", "rows", "planted errors", "file")
        for form, rows in summary.rows.items():
            table.add_row(
                form.value, str(rows), str(summary.planted[form]), Text(str(summary.paths[form]))
            )
        console.print(table)
        console.print(
            f"Planted errors: {summary.planted_errors}; rejects: {out / 'rejects'}", markup=False
        )
