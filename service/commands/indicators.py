"""CLI: compute the indicator catalogue over a release.

`kvarus indicators [--release N] [--engine duckdb|spark] [--format json|csv|parquet] [--out PATH]`
reads `{data_dir}/releases/{N}/manifest.json` (default: the highest N present), writes
`{data_dir}/releases/{N}/indicators.parquet` (and `--out` in the chosen format) and records an
`IndicatorRun` in the catalog. Results are aggregates with small cells suppressed: nothing printed
or written holds a record value of a single patient.
"""

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import typer

from indicators import results
from indicators.engine import compute, engine_name
from schemas.catalog import IndicatorRun
from schemas.errors import NotFound
from schemas.manifest import ReleaseManifest
from schemas.organisations import Hierarchy
from service.commands.common import console, reports_errors, settings
from service.database import make_engine, session_scope


class Engine(StrEnum):
    DUCKDB = "duckdb"
    SPARK = "spark"


class OutputFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    PARQUET = "parquet"


def latest_release(releases_dir: Path) -> int:
    numbers = [
        int(p.name)
        for p in releases_dir.glob("*")
        if p.name.isdigit() and (p / "manifest.json").exists()
    ]
    if not numbers:
        raise NotFound(f"no release with a manifest.json under {releases_dir}")
    return max(numbers)


def write_output(table: pa.Table, path: Path, output_format: OutputFormat) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if output_format is OutputFormat.PARQUET:
        results.write(table, path)
    elif output_format is OutputFormat.CSV:
        pacsv.write_csv(table, path)
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
            int | None, typer.Option("--release", help="Release number (default: the latest)")
        ] = None,
        engine: Annotated[Engine, typer.Option("--engine", help="Query engine")] = Engine.DUCKDB,
        output_format: Annotated[
            OutputFormat, typer.Option("--format", help="Format of --out")
        ] = OutputFormat.PARQUET,
        out: Annotated[
            Path | None, typer.Option("--out", help="Also write the results here")
        ] = None,
    ) -> None:
        """Compute every indicator of the catalogue over a release."""
        config = settings()
        number = release if release is not None else latest_release(config.releases_dir)
        manifest_path = config.releases_dir / str(number) / "manifest.json"
        if not manifest_path.exists():
            raise NotFound(f"release {number} has no manifest.json")
        manifest = ReleaseManifest.read(manifest_path)
        started = time.perf_counter()
        spark = _spark_session() if engine is Engine.SPARK else None
        try:
            table = compute(
                manifest,
                hierarchy=Hierarchy.default(),
                engine=engine_name(engine.value),
                spark_session=spark,
            )
        finally:
            if spark is not None:
                spark.stop()
        path = config.releases_dir / str(number) / results.RESULTS_FILE
        results.write(table, path)
        if out is not None:
            write_output(table, out, output_format)
        with session_scope(make_engine(config)) as session:
            session.add(
                IndicatorRun(
                    release=number,
                    engine=engine.value,
                    results_path=str(path),
                    rows=table.num_rows,
                )
            )
        console.print(
            f"Release {number}: {table.num_rows:,} indicator results on {engine.value} in "
            f"{time.perf_counter() - started:.1f} s → {path}",
            highlight=False,
        )
