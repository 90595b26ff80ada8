"""The Delta warehouse: no patient_key statistics, merge counts, undoing an upload's commits."""

import json
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.warehouse import QUARANTINE, TABLES, Warehouse, quarantine_rows
from schemas.forms import Form, warehouse_schema


def _rows(ids: list[str], ages: list[int], upload_id: int) -> pa.Table:
    n = len(ids)
    schema = warehouse_schema(Form.BASIS)
    columns: dict[str, list[Any]] = {name: [None] * n for name in schema.names}
    columns |= {
        "record_id": ids,
        "episode_id": [f"e-{i}" for i in ids],
        "patient_key": [f"{i:0>64}" for i in ids],
        "provider_orgnr": ["983974880"] * n,
        "unit_code": ["U1"] * n,
        "intake_date": [date(2024, 1, 10)] * n,
        "age": ages,
        "sex": [1] * n,
        "treatment_type": [1] * n,
        "primary_substance": [1] * n,
        "icd10": ["F10"] * n,
        "housing": [1] * n,
        "employment": [1] * n,
        "severity": [3] * n,
        "research_consent": [1] * n,
        "year": [2024] * n,
        "upload_id": [upload_id] * n,
    }
    return pa.table(columns, schema=schema)


def test_patient_key_has_no_statistics_in_the_log_or_the_parquet_footers(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "warehouse")
    warehouse.ensure()
    warehouse.write(Form.BASIS, _rows(["1", "2"], [30, 40], 1), upload_id=1)
    warehouse.write(Form.BASIS, _rows(["2", "3"], [41, 50], 2), upload_id=2)  # merge

    adds = 0
    for log in sorted((warehouse.path("basis") / "_delta_log").glob("*.json")):
        for line in log.read_text().splitlines():
            action = json.loads(line)
            if "metaData" in action:
                stats_columns = action["metaData"]["configuration"][
                    "delta.dataSkippingStatsColumns"
                ]
                assert "patient_key" not in stats_columns.split(",")
                assert "record_id" in stats_columns.split(",")
            if "add" in action:
                adds += 1
                stats = json.loads(action["add"]["stats"])
                assert "age" in stats["minValues"]
                for part in ("minValues", "maxValues", "nullCount"):
                    assert "patient_key" not in stats[part]
    assert adds == 2  # the append's file, then the merge's rewrite of it (one file)
    for uri in warehouse.files("basis"):
        metadata = pq.ParquetFile(uri).metadata
        names = [metadata.schema.column(i).name for i in range(metadata.num_columns)]
        column = metadata.row_group(0).column(names.index("patient_key"))
        assert column.statistics is None or not column.statistics.has_min_max


def test_quarantine_keeps_no_statistics_of_the_key_or_the_row_values(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "warehouse")
    warehouse.ensure()
    rows = _rows(["1", "2"], [30, 40], 1)
    failures = pa.table(
        {
            "row_index": pa.array([1], pa.int64()),
            "check": ["age.range"],
            "reason": ["age outside 13-110"],
            "severity": ["error"],
        }
    )
    warehouse.append_quarantine(quarantine_rows(Form.BASIS, 1, rows, failures), upload_id=1)
    stored = warehouse.read(QUARANTINE).to_pylist()
    assert [(r["record_id"], r["check"]) for r in stored] == [("2", "age.range")]
    assert json.loads(stored[0]["values"])["age"] == 40
    for log in (warehouse.path(QUARANTINE) / "_delta_log").glob("*.json"):
        for line in log.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                stats = json.loads(action["add"]["stats"])
                assert "check" in stats["minValues"]
                assert not {"patient_key", "values"} & set(stats["minValues"])
    for uri in warehouse.files(QUARANTINE):
        metadata = pq.ParquetFile(uri).metadata
        for i in range(metadata.num_columns):
            column = metadata.row_group(0).column(i)
            if column.path_in_schema in ("patient_key", "values"):
                assert column.statistics is None or not column.statistics.has_min_max


def test_merge_counts_inserted_superseded_and_unchanged(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "warehouse")
    warehouse.ensure()
    first = warehouse.write(Form.BASIS, _rows(["1", "2", "3"], [30, 40, 50], 1), upload_id=1)
    assert (first.inserted, first.superseded, first.unchanged) == (3, 0, 0)
    second = warehouse.write(Form.BASIS, _rows(["1", "2", "4"], [30, 41, 60], 2), upload_id=2)
    assert (second.inserted, second.superseded, second.unchanged) == (1, 1, 1)
    stored = warehouse.table(Form.BASIS).sort_by("record_id")
    assert stored.column("age").to_pylist() == [30, 41, 50, 60]
    assert stored.column("upload_id").to_pylist() == [1, 2, 1, 2]


def test_restore_before_undoes_exactly_one_uploads_commits(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "warehouse")
    warehouse.ensure()
    assert set(warehouse.versions()) == set(TABLES)
    warehouse.write(Form.BASIS, _rows(["1"], [30], 1), upload_id=1)
    warehouse.write(Form.BASIS, _rows(["1", "2"], [31, 40], 2), upload_id=2)
    warehouse.write(Form.BASIS, _rows(["3"], [50], 2), upload_id=2)
    restored = warehouse.restore_before(2)
    assert restored == {"basis": 1}
    stored = warehouse.table(Form.BASIS)
    assert stored.column("record_id").to_pylist() == ["1"]
    assert stored.column("age").to_pylist() == [30]
    assert warehouse.count(QUARANTINE) == 0


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.dictionaries(st.sampled_from("abcdef"), st.integers(13, 15), min_size=1),
        min_size=1,
        max_size=4,
    )
)
def test_writes_keep_the_last_value_of_every_record(
    tmp_path_factory: pytest.TempPathFactory, batches: list[dict[str, int]]
) -> None:
    """Model: a dict record_id → age, last writer wins; counts follow from the model."""
    warehouse = Warehouse(tmp_path_factory.mktemp("warehouse"))
    warehouse.ensure()
    model: dict[str, int] = {}
    for upload_id, batch in enumerate(batches, start=1):
        ids = sorted(batch)
        counts = warehouse.write(
            Form.BASIS, _rows(ids, [batch[i] for i in ids], upload_id), upload_id=upload_id
        )
        assert counts.inserted == sum(1 for i in ids if i not in model)
        assert counts.superseded == sum(1 for i in ids if i in model and model[i] != batch[i])
        assert counts.unchanged == sum(1 for i in ids if model.get(i) == batch[i])
        model |= batch
    stored = warehouse.table(Form.BASIS).sort_by("record_id")
    assert stored.column("record_id").to_pylist() == sorted(model)
    assert stored.column("age").to_pylist() == [model[i] for i in sorted(model)]


def test_select_in_reads_the_rows_of_the_values_asked_only(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "warehouse")
    warehouse.ensure()
    asked = pa.array(["e-1", "e-3", "e-3", "e-9"])
    empty = warehouse.select_in("basis", ["episode_id", "age"], "episode_id", asked)
    assert empty.num_rows == 0
    assert empty.schema.names == ["episode_id", "age"]
    warehouse.write(Form.BASIS, _rows(["1", "2", "3"], [30, 40, 50], 1), upload_id=1)
    found = warehouse.select_in("basis", ["episode_id", "age"], "episode_id", asked)
    assert sorted(found.to_pylist(), key=str) == [
        {"episode_id": "e-1", "age": 30},
        {"episode_id": "e-3", "age": 50},
    ]
    for bad in ('episode_id" OR 1=1 --', "pseudonym"):
        with pytest.raises(ValueError, match="not a column"):
            warehouse.select_in("basis", ["age"], bad, asked)
        with pytest.raises(ValueError, match="not a column"):
            warehouse.select_in("basis", ["age"], "episode_id", asked, where={bad: "x"})


def test_select_in_with_where_and_release_by_version(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "warehouse")
    warehouse.ensure()
    failures = pa.table(
        {
            "row_index": pa.array([0, 1, 2], pa.int64()),
            "check": ["age.range", "age.range", "sex.code"],
            "reason": ["r", "r", "r"],
            "severity": ["error"] * 3,
        }
    )
    for upload in (1, 2):  # record "2" quarantined in two uploads (two versions)
        rows = _rows(["1", "2", "3"], [30 + upload, 40 + upload, 50], upload)
        quarantined = quarantine_rows(Form.BASIS, upload, rows, failures)
        warehouse.append_quarantine(quarantined, upload_id=upload)
    found = warehouse.select_in(
        QUARANTINE, ["upload_id", "values"], "record_id", pa.array(["2", "3", "9"]),
        where={"form": "basis", "check": "age.range"},
    )  # fmt: skip
    assert sorted((r["upload_id"], json.loads(r["values"])["age"]) for r in found.to_pylist()) == [
        (1, 41),
        (2, 42),
    ]  # "3" is held by sex.code
    other_form = warehouse.select_in(
        QUARANTINE, ["values"], "record_id", pa.array(["2"]), where={"form": "measurement"}
    )
    assert other_form.num_rows == 0
    assert warehouse.release_quarantined(Form.BASIS, [("2", 1)], upload_id=3) == 1
    left = warehouse.read(QUARANTINE).to_pylist()
    assert sorted((r["record_id"], r["upload_id"]) for r in left) == [
        ("1", 1), ("1", 2), ("2", 2), ("3", 1), ("3", 2),
    ]  # fmt: skip
