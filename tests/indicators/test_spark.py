"""The same Ibis expressions through Spark (local mode) give the same results as DuckDB."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from indicators.catalogue import load_catalogue
from indicators.engine import compute
from schemas.organisations import Hierarchy
from tests.indicators.conftest import BERGEN, OUS, STAVANGER, VESTLY, TinyRelease
from tests.indicators.test_engine import early_course

pytestmark = pytest.mark.spark


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    if shutil.which("java") is None:
        pytest.skip("Java is not installed: Spark (local mode) needs a JVM")
    pyspark_sql = pytest.importorskip("pyspark.sql", reason="pyspark is not installed")
    session = (
        pyspark_sql.SparkSession.builder.master("local[2]")
        .appName("kvarus-indicators-test")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    yield session
    session.stop()


def mixed_release(release: TinyRelease) -> TinyRelease:
    """Every table filled, every indicator with rows in several years, contexts and levels."""
    early_course(release)
    for i in range(7):
        provider = (BERGEN, STAVANGER, VESTLY, OUS)[i % 4]
        episode = f"x{i}"
        release.basis(
            episode,
            provider,
            intake=f"202{1 + i % 2}-0{1 + i}-10",
            referral=f"202{1 + i % 2}-01-0{1 + i}",
            audit=i if i % 3 else None,
            research_consent=i % 2,
            clinical_study_id="S9" if i == 3 else None,
            patient=f"q{i % 5}",
            unit=f"U{i % 2}",
        )
        release.measurement(
            episode, provider, on=f"2022-0{2 + i}-01", patient=f"q{i % 5}", use_days_30=10 + i
        )
        release.discharge(
            episode, provider, on=f"2023-0{1 + i}-15", end_reason=(1, 2, 4, 1, 3, 1, 2)[i]
        )
        release.followup(
            episode, provider, on="2024-02-01", use_days_30=3 * i, housing=(1, 3, 2, 9, 1, 4, 2)[i]
        )
    # Distinct patients in one cell, in two cells (two rows) and in three (DuckDB counts those
    # three ways), with homes that are not an HF of the hierarchy or missing.
    release.basis("p1", intake="2023-02-01", patient="P", clinical_study_id="S1")
    release.basis("p2", STAVANGER, intake="2023-03-01", patient="P", home_hf_orgnr=BERGEN)
    release.basis("p3", OUS, intake="2023-04-01", patient="P", unit="U2")
    release.basis("r1", intake="2023-02-01", patient="R", home_hf_orgnr="999999999")
    release.basis(
        "r2", intake="2023-05-01", patient="R", home_hf_orgnr=None, clinical_study_id="S2"
    )
    release.basis("t1", VESTLY, intake="2023-02-01", patient="T", unit="U2")
    release.measurement(
        "t1", VESTLY, on="2023-06-01", patient="T", unit="U3", clinical_study_id="S3"
    )
    release.basis("t2", intake="2023-07-01", patient="T")
    release.basis("w1", intake="2023-03-01", patient="W")
    release.basis("w2", intake="2023-08-01", patient="W", unit="U2", clinical_study_id="S4")
    for year in (2021, 2022):
        release.npr(BERGEN, year, 6).npr(STAVANGER, year, 5).npr(OUS, year, 1)
    return release


def test_spark_equals_duckdb_on_the_whole_catalogue(
    spark: Any, tiny: Callable[[], TinyRelease]
) -> None:
    manifest = mixed_release(tiny()).manifest()
    catalogue = [d.model_copy(update={"min_denominator": 2}) for d in load_catalogue()]
    hierarchy = Hierarchy.default()
    duckdb = compute(manifest, hierarchy=hierarchy, catalogue=catalogue)
    on_spark = compute(
        manifest, hierarchy=hierarchy, engine="spark", catalogue=catalogue, spark_session=spark
    )
    assert duckdb.num_rows > 200
    assert {r["indicator_id"] for r in duckdb.to_pylist()} == {d.id for d in catalogue}
    # Every column of every row, floats included, compared exactly.
    assert on_spark.schema == duckdb.schema
    assert on_spark.to_pylist() == duckdb.to_pylist()
