"""A tiny-release factory: warehouse-shaped Parquet files under `year=YYYY/` and a manifest.

Rows are written per `schemas.forms.warehouse_schema` without the `year` column (delta-rs keeps a
partition column in the directory names only) and with `upload_id` 1. Every column has a harmless
default, so a test states only what its hand count depends on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.forms import Form, warehouse_schema
from schemas.manifest import ReleaseManifest, TableSnapshot

# Real organisation numbers from schemas/data (reference list and demo private providers).
BERGEN = "983974724"  # HELSE BERGEN HF, Helse Vest
STAVANGER = "983974678"  # HELSE STAVANGER HF, Helse Vest
VESTLY = "991505482"  # VESTLY RUSKLINIKK (private), Helse Vest
OUS = "993467049"  # OSLO UNIVERSITETSSYKEHUS HF, Helse Sør-Øst
HELSE_VEST = "983658725"
HELSE_SOR_OST = "991324968"
NATION = "1"

TABLES = ("basis", "measurement", "discharge", "followup", "npr_counts")
YEAR_COLUMN = {
    "basis": "intake_date",
    "measurement": "measure_date",
    "discharge": "discharge_date",
    "followup": "followup_date",
}


def _date(value: str | date) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


class TinyRelease:
    """Collects rows per table; `manifest()` writes them and returns the release manifest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._record = 0

    def _common(
        self, episode: str, provider: str, patient: str | None, unit: str
    ) -> dict[str, Any]:
        self._record += 1
        return {
            "record_id": f"r{self._record}",
            "episode_id": episode,
            "patient_key": patient or f"patient-{episode}",
            "provider_orgnr": provider,
            "unit_code": unit,
            "upload_id": 1,
        }

    def basis(
        self,
        episode: str,
        provider: str = BERGEN,
        *,
        intake: str = "2022-03-01",
        referral: str | None = None,
        patient: str | None = None,
        unit: str = "U1",
        **values: Any,
    ) -> TinyRelease:
        row = self._common(episode, provider, patient, unit) | {
            "intake_date": _date(intake),
            "referral_date": _date(referral) if referral else None,
            "age": 40,
            "sex": 1,
            "home_hf_orgnr": provider,
            "treatment_type": 1,
            "primary_substance": 1,
            "icd10": "F10.2",
            "audit": None,
            "dudit": None,
            "housing": 1,
            "employment": 1,
            "injecting_6m": 0,
            "severity": 3,
            "research_consent": 0,
            "clinical_study_id": None,
        }
        self.rows["basis"].append(row | values)
        return self

    def measurement(
        self,
        episode: str,
        provider: str = BERGEN,
        *,
        on: str = "2022-06-01",
        patient: str | None = None,
        unit: str = "U1",
        **values: Any,
    ) -> TinyRelease:
        row = self._common(episode, provider, patient, unit) | {
            "measure_date": _date(on),
            "status": 1,
            "treatment_plan": 1,
            "crisis_plan": 1,
            "benefit": None,
            "use_days_30": None,
            "clinical_study_id": None,
        }
        self.rows["measurement"].append(row | values)
        return self

    def discharge(
        self,
        episode: str,
        provider: str = BERGEN,
        *,
        on: str = "2022-09-01",
        patient: str | None = None,
        unit: str = "U1",
        **values: Any,
    ) -> TinyRelease:
        row = self._common(episode, provider, patient, unit) | {
            "discharge_date": _date(on),
            "end_reason": 1,
            "audit": None,
            "dudit": None,
            "housing": 1,
            "employment": 1,
            "followup_arranged": 0,
            "satisfaction": None,
        }
        self.rows["discharge"].append(row | values)
        return self

    def followup(
        self,
        episode: str,
        provider: str = BERGEN,
        *,
        on: str = "2023-09-01",
        patient: str | None = None,
        unit: str = "U1",
        **values: Any,
    ) -> TinyRelease:
        row = self._common(episode, provider, patient, unit) | {
            "followup_date": _date(on),
            "followup_status": 1,
            "use_days_30": None,
            "housing": None,
            "employment": None,
            "readmitted": None,
        }
        self.rows["followup"].append(row | values)
        return self

    def npr(self, provider: str, year: int, episodes: int) -> TinyRelease:
        self.rows["npr_counts"].append(
            {"provider_orgnr": provider, "year": year, "episodes": episodes, "upload_id": 1}
        )
        return self

    def manifest(self, release: int = 1) -> ReleaseManifest:
        tables: dict[str, TableSnapshot] = {}
        for name in TABLES:
            schema = warehouse_schema(Form(name))
            stored = pa.schema([f for f in schema if f.name != "year"])
            by_year: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for row in self.rows[name]:
                year = row["year"] if name == "npr_counts" else row[YEAR_COLUMN[name]].year
                by_year[year].append({k: v for k, v in row.items() if k != "year"})
            files = []
            for year, rows in sorted(by_year.items()):
                directory = self.root / f"r{release}" / name / f"year={year}"
                directory.mkdir(parents=True, exist_ok=True)
                path = directory / "part-0.parquet"
                pq.write_table(pa.Table.from_pylist(rows, schema=stored), path)
                files.append(str(path))
            tables[name] = TableSnapshot(
                name=name, delta_version=0, files=files, row_count=len(self.rows[name])
            )
        return ReleaseManifest(
            release=release, created_at=datetime(2026, 1, 1, tzinfo=UTC), tables=tables
        )


@pytest.fixture
def tiny(tmp_path: Path) -> Callable[[], TinyRelease]:
    return lambda: TinyRelease(tmp_path)
