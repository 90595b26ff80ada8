"""The indicator result table: its schema, Parquet I/O, and compute-and-store for a release.

One row per release × indicator × year × context × level × organisation (× unit at level unit).
Suppressed rows (denominator under the indicator's minimum, a provider under 60 % coverage, or
complementary: a sibling hidden so that a suppressed result cannot be recovered by subtracting
published ones from their parent; rules in `indicators.engine`) keep their denominator but carry
no numerator, value, interval, target level or funnel signal.

The results file also carries, in its Parquet key-value metadata (`VARIATION_KEY`), the
standardised variation figures of the release's outcome indicators
(`indicators.variation_report.standardised_variation`): they need the release's records, so they
are computed with the results, and kept in the same file so that they are written atomically with
the results they were computed from, read with them (the API's cache of the file holds them) and
deleted with them when an erasure retires the release. A file without the key (written before it
existed) has no stored figures: the API then serves none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.manifest import ReleaseManifest

if TYPE_CHECKING:
    from indicators.catalogue import IndicatorDefinition
    from indicators.episodes import EngineName

RESULT_SCHEMA: Final = pa.schema(
    [
        pa.field("indicator_id", pa.string(), nullable=False),
        pa.field("release", pa.int32(), nullable=False),
        pa.field("year", pa.int32(), nullable=False),
        pa.field("context", pa.string(), nullable=False),  # caregiver | resident
        pa.field("level", pa.string(), nullable=False),  # unit | provider | hf | rhf | nation
        pa.field("orgnr", pa.string(), nullable=False),  # level unit: the provider's orgnr
        pa.field("unit_code", pa.string()),  # set at level unit only
        pa.field("name", pa.string()),
        pa.field("numerator", pa.int64()),  # null for median/mean and when suppressed
        pa.field("denominator", pa.int64(), nullable=False),
        pa.field("value", pa.float64()),  # proportion 0..1, median/mean in the measure's unit
        pa.field("ci95_low", pa.float64()),
        pa.field("ci95_high", pa.float64()),
        pa.field("ci998_low", pa.float64()),
        pa.field("ci998_high", pa.float64()),
        pa.field("target_level", pa.string()),  # high | moderate | low | null
        pa.field("suppressed", pa.bool_(), nullable=False),
        # min_denominator | low_coverage | complementary | null
        pa.field("suppression_reason", pa.string()),
        pa.field("funnel_signal", pa.string()),  # high_0.001 | ... | not_significant | null
        pa.field("previous_value", pa.float64()),  # same org/context/level, previous year
    ]
)

RESULTS_FILE: Final = "indicators.parquet"
# Parquet key-value metadata of the results file: {"version": 1, "entries": [...]}, one entry per
# standardised indicator × year × context (`standardised_variation`). Another version is not read.
VARIATION_KEY: Final = b"kvarus.variation"
VARIATION_VERSION: Final = 1


def with_variation(table: pa.Table, entries: Sequence[dict[str, Any]]) -> pa.Table:
    """`table` carrying the standardised variation `entries` in its schema metadata."""
    document = {"version": VARIATION_VERSION, "entries": list(entries)}
    # allow_nan=False: a NaN would be invalid JSON; the figures are None where they do not exist.
    encoded = json.dumps(document, allow_nan=False, separators=(",", ":")).encode()
    return table.replace_schema_metadata({**(table.schema.metadata or {}), VARIATION_KEY: encoded})


def stored_variation(schema: pa.Schema) -> list[dict[str, Any]] | None:
    """The standardised variation entries a results table (or file schema) carries; None when it
    carries none (results computed before they were stored) or of another version."""
    encoded = (schema.metadata or {}).get(VARIATION_KEY)
    if encoded is None:
        return None
    document = json.loads(encoded)
    if not isinstance(document, dict) or document.get("version") != VARIATION_VERSION:
        return None
    entries = document.get("entries")
    return entries if isinstance(entries, list) else None


def write(table: pa.Table, path: Path) -> None:
    """Write results as Parquet (the schema is enforced: a wrong column fails here), with the
    stored variation figures the table carries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = table.select(RESULT_SCHEMA.names).cast(RESULT_SCHEMA)  # cast drops the metadata
    encoded = (table.schema.metadata or {}).get(VARIATION_KEY)
    if encoded is not None:
        written = written.replace_schema_metadata({VARIATION_KEY: encoded})
    pq.write_table(written, path)


def read(path: Path) -> pa.Table:
    table = pq.read_table(path, schema=RESULT_SCHEMA)  # read with a schema: without metadata
    encoded = (pq.read_schema(path).metadata or {}).get(VARIATION_KEY)
    return table if encoded is None else table.replace_schema_metadata({VARIATION_KEY: encoded})


def compute_with_variation(
    manifest: ReleaseManifest,
    *,
    engine: EngineName = "duckdb",
    spark_session: Any = None,
    catalogue: list[IndicatorDefinition] | None = None,
) -> pa.Table:
    """The packaged catalogue over a release (`indicators.engine.compute`), carrying its
    standardised variation figures."""
    from indicators.engine import compute  # the engine loads on first use
    from schemas.organisations import Hierarchy

    table = compute(
        manifest,
        hierarchy=Hierarchy.default(),
        engine=engine,
        catalogue=catalogue,
        spark_session=spark_session,
    )
    return attach_variation(
        manifest, table, engine=engine, spark_session=spark_session, catalogue=catalogue
    )


def attach_variation(
    manifest: ReleaseManifest,
    table: pa.Table,
    *,
    engine: EngineName = "duckdb",
    spark_session: Any = None,
    catalogue: list[IndicatorDefinition] | None = None,
) -> pa.Table:
    """Results `table` of `manifest`'s release with its standardised variation figures (computed
    over the release's records, on `engine`)."""
    from indicators.variation_report import standardised_variation

    entries = standardised_variation(
        manifest, table, catalogue=catalogue, engine=engine, spark_session=spark_session
    )
    return with_variation(table, entries)


def compute_and_store(
    manifest: ReleaseManifest, releases_dir: Path, *, engine: str = "duckdb"
) -> Path:
    """Compute the packaged catalogue over a release and write `releases/{N}/indicators.parquet`
    (with its standardised variation figures)."""
    from indicators.engine import engine_name

    table = compute_with_variation(manifest, engine=engine_name(engine))
    path = releases_dir / str(manifest.release) / RESULTS_FILE
    write(table, path)
    return path


# A CSV cell a spreadsheet evaluates as a formula when the file is opened (OWASP: CSV injection):
# text starting with one of these. unit_code is an extract's free text, so a result row may carry
# `=HYPERLINK(...)`; in CSV it is written after an apostrophe, which spreadsheets take as "text"
# and do not show. JSON and Parquet keep the value as it is.
FORMULA_START: Final = re.compile(r"^[=+\-@\t\r]")


def spreadsheet_safe(value: str) -> str:
    """A text cell for CSV: an apostrophe before text a spreadsheet would evaluate."""
    return f"'{value}" if FORMULA_START.match(value) else value


def spreadsheet_safe_table(table: pa.Table) -> pa.Table:
    """`spreadsheet_safe` over every text column of a table (for `pyarrow.csv.write_csv`)."""
    for index, column in enumerate(table.columns):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            quoted = pc.binary_join_element_wise("'", column, "")
            risky = pc.match_substring_regex(column, FORMULA_START.pattern)
            table = table.set_column(index, table.field(index), pc.if_else(risky, quoted, column))
    return table
