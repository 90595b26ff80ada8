"""CLI: compute the indicator catalogue over a release.

`kvarus indicators [--release N] [--engine duckdb|spark] [--out PATH [--format json|csv|parquet]]`
reads `{data_dir}/releases/{N}/manifest.json` (default: the highest N present), writes
`{data_dir}/releases/{N}/indicators.parquet` (and `--out` in the format its extension names, or
`--format`, which must not contradict it) and records an `IndicatorRun` in the catalog. `--out` and
its format are checked before the computation (seconds on a large register), which a path that
cannot be written, or a file named for one format and written in another, would waste. Results
are aggregates with small cells suppressed: nothing printed or written holds a record value of a
single patient.

The results are computed without locks and written under the warehouse's write locks, after
checking (in the committed catalog) that the release is not retired, as `service.publishing` does:
an erasure retires releases and deletes their results under those locks, and a computation that
overlapped it must not write a retired release's results back. A retired release is a usage error
(exit 2).
"""

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import typer
from sqlmodel import Session

from etl.ledger import check_releases_here
from etl.release import latest_release
from indicators import results
from indicators.engine import compute, engine_name
from schemas.errors import Conflict, NotFound
from schemas.manifest import ReleaseManifest
from schemas.organisations import Hierarchy
from service.commands.common import check_output_file, console, reports_errors, settings
from service.database import MAX_CATALOG_ID, make_engine, session_scope
from service.publishing import release_retired, write_results


class Engine(StrEnum):
    DUCKDB = "duckdb"
    SPARK = "spark"


class OutputFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    PARQUET = "parquet"


class ReleaseRetired(Conflict):
    """Indicators asked for a retired release (an erasure removed patients it holds)."""

    title = "Release retired"
    type_slug = "release-retired"
    exit_code = 2  # a usage error: the release may not be computed, whatever the input


def latest_served(session: Session) -> int:
    """The newest release in service, from the catalog: a directory under releases/ may be a
    publish that never committed (killed), or a retired release."""
    latest = latest_release(session)
    if latest is None:
        raise NotFound("no release in service: publish one with `kvarus release`")
    return latest.number


def output_format_of(out: Path, given: OutputFormat | None) -> OutputFormat:
    """The format to write `out` in: `given`, else the one its extension names.

    Raises a usage error (exit 2) when neither names one, or when `given` contradicts the
    extension: results.json holding Parquet or CSV would mislead whoever opens it.
    """
    extension = out.suffix.lower()
    named = next((f for f in OutputFormat if extension == f".{f.value}"), None)
    if given is None:
        if named is None:
            raise typer.BadParameter(
                f"cannot tell the format of {out} from its extension: end it in .json, .csv or "
                f".parquet, or give --format json|csv|parquet",
                param_hint="'--out'",
            )
        return named
    if named is not None and named is not given:
        raise typer.BadParameter(
            f"--format {given.value} contradicts the extension of {out} ({extension}): "
            f"give one that agrees, or leave --format out",
            param_hint="'--format'",
        )
    return given


def write_output(table: pa.Table, path: Path, output_format: OutputFormat) -> None:
    if output_format is OutputFormat.PARQUET:
        results.write(table, path)
    elif output_format is OutputFormat.CSV:
        pacsv.write_csv(results.spreadsheet_safe_table(table), path)
    else:
        rows: list[dict[str, Any]] = table.to_pylist()
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")


def _spark_session() -> Any:
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master("local[2]")
        .appName("kvarus-indicators")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `kvarus` app."""

    @app.command("indicators")
    @reports_errors
    def indicators(
        release: Annotated[
            int | None,
            typer.Option(
                "--release",
                help="Release number (default: the newest in service)",
                # A catalog id: a larger one is a usage error, not a DataError on PostgreSQL.
                min=1,
                max=MAX_CATALOG_ID,
            ),
        ] = None,
        engine: Annotated[Engine, typer.Option("--engine", help="Query engine")] = Engine.DUCKDB,
        output_format: Annotated[
            OutputFormat | None,
            typer.Option("--format", help="Format of --out [default: from its extension]"),
        ] = None,
        out: Annotated[
            Path | None,
            typer.Option("--out", dir_okay=False, help="Also write the results here"),
        ] = None,
    ) -> None:
        """Compute every indicator of the catalogue over a release."""
        if output_format is not None and out is None:
            # Said rather than ignored: the results go to the release's indicators.parquet.
            raise typer.BadParameter(
                "--format is the format of --out: give --out PATH as well", param_hint="'--format'"
            )
        out_format = OutputFormat.PARQUET
        if out is not None:
            out_format = output_format_of(out, output_format)
            check_output_file(out)
        config = settings()
        database = make_engine(config)
        with session_scope(database) as session:
            check_releases_here(session, config.releases_dir)
            number = release if release is not None else latest_served(session)
            _check_servable(session, number)  # before a long computation; again under the locks
        manifest_path = config.releases_dir / str(number) / "manifest.json"
        if not manifest_path.exists():
            raise NotFound(f"release {number} has no manifest.json")
        manifest = ReleaseManifest.read(manifest_path)
        started = time.perf_counter()
        with console.status(f"Computing the indicators of release {number} on {engine.value}…"):
            spark = _spark_session() if engine is Engine.SPARK else None
            try:
                table = compute(
                    manifest,
                    hierarchy=Hierarchy.default(),
                    engine=engine_name(engine.value),
                    spark_session=spark,
                )
            except Exception:
                # An erasure may have retired the release and deleted its files meanwhile.
                with session_scope(database) as session:
                    _check_servable(session, number)
                raise
            finally:
                if spark is not None:
                    spark.stop()
        with console.status("Writing the results…"), session_scope(database) as session:
            path = write_results(number, table, config, session, engine=engine.value)
            if path is None:  # retired (or gone) while computing: say which
                _check_servable(session, number)
                raise AssertionError("a release write_results refused is not servable")
        written = f"{path}"
        if out is not None:
            write_output(table, out, out_format)
            written += f" and {out}"
        console.print(
            f"Release {number}: {table.num_rows:,} indicator results on {engine.value} in "
            f"{time.perf_counter() - started:.1f} s → {written}",
            highlight=False,
            soft_wrap=True,  # one line: a path folded across lines cannot be copied
            markup=False,  # a path may hold [brackets], which Rich would take for styles
        )


def _check_servable(session: Session, number: int) -> None:
    """Raise unless release `number` is in the catalog and not retired, as committed now."""
    retired = release_retired(session, number)
    if retired is None:
        raise NotFound(f"release {number} is not in the catalog")
    if retired:
        raise ReleaseRetired(
            f"release {number} is retired (an erasure removed records it held); its indicators "
            f"are not computed. Use a release that is not retired (GET /api/v1/releases lists them)"
        )
