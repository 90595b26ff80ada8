"""The indicator result table: its schema, Parquet I/O, and compute-and-store for a release.

One row per release × indicator × year × context × level × organisation (× unit at level unit).
Suppressed rows (denominator under the indicator's minimum, a provider under 60 % coverage, or
complementary: a sibling hidden so that a suppressed result cannot be recovered by subtracting
published ones from their parent; rules in `indicators.engine`) keep their denominator but carry
no numerator, value, interval, target level or funnel signal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.manifest import ReleaseManifest

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


def write(table: pa.Table, path: Path) -> None:
    """Write results as Parquet (the schema is enforced: a wrong column fails here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.select(RESULT_SCHEMA.names).cast(RESULT_SCHEMA), path)


def read(path: Path) -> pa.Table:
    return pq.read_table(path, schema=RESULT_SCHEMA)


def compute_and_store(
    manifest: ReleaseManifest, releases_dir: Path, *, engine: str = "duckdb"
) -> Path:
    """Compute the packaged catalogue over a release and write `releases/{N}/indicators.parquet`."""
    from indicators.engine import compute, engine_name
    from schemas.organisations import Hierarchy

    table = compute(manifest, hierarchy=Hierarchy.default(), engine=engine_name(engine))
    path = releases_dir / str(manifest.release) / RESULTS_FILE
    write(table, path)
    return path
