"""Fixtures of the API tests: an app over a tmp data dir, keys per role, a tiny release."""

import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from sqlmodel import Session
from starlette.exceptions import StarletteDeprecationWarning

from indicators.results import RESULT_SCHEMA
from schemas.catalog import Release
from schemas.manifest import ReleaseManifest, TableSnapshot
from service import auth
from service.app import create_app
from service.database import session_scope
from service.settings import Settings
from tests.conftest import PROVIDER_A, PROVIDER_B, TEST_KEY

with warnings.catch_warnings():
    # Starlette 1.10 prefers `httpx2` and warns on import when it finds `httpx` (what schemathesis
    # and our benchmark use); the test client works the same with either.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

# Helse Nord RHF: the RHF above both test providers (reference hierarchy).
RHF_NORD = "883658752"

Headers = dict[str, str]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a CLI test's `kvarus` (a module may define its own)."""
    return {
        "KVARUS_DATA_DIR": str(tmp_path / "var"),
        "KVARUS_PSEUDONYM_KEY": TEST_KEY,
        "KVARUS_DATABASE_URL": "",
        "COLUMNS": "200",  # one line per message
    }


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def headers(app: FastAPI) -> dict[str, Headers]:
    """Authorization headers per role (trust: PROVIDER_A); anonymous: none."""
    result: dict[str, Headers] = {"anonymous": {}}
    with session_scope(app.state.engine) as session:
        for role, provider in (
            ("registry", None),
            ("trust", PROVIDER_A),
            ("researcher", None),
        ):
            _, key = auth.create_key(session, role=role, provider=provider, name=f"test {role}")
            result[role] = {"Authorization": f"Bearer {key}"}
    return result


def result_row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(RESULT_SCHEMA.names)
    row |= {
        "release": 1,
        "context": "caregiver",
        "suppressed": False,
        "unit_code": None,
    }
    row |= values
    return row


def indicator_rows() -> list[dict[str, Any]]:
    """`plan` in 2023-2024 and `study` in 2024, at the levels the engine writes.

    As `indicators.levels.LEVELS`: caregiver rows at unit, provider, HF, RHF and nation (an HF's
    caregiver row sums the providers under it: HF A's holds a private provider too, so its
    numbers differ from provider A's), resident rows at HF and nation (2024).
    """
    rows: list[dict[str, Any]] = []
    plan = {
        # (context, level, orgnr, name): {year: (numerator, denominator)}
        ("caregiver", "nation", "1", "Norge"): {2023: (60, 100), 2024: (75, 100)},
        ("caregiver", "rhf", RHF_NORD, "Helse Nord"): {2023: (30, 50), 2024: (40, 50)},
        ("caregiver", "provider", PROVIDER_A, "Finnmarkssykehuset"): {
            2023: (10, 20),
            2024: (18, 20),
        },
        ("caregiver", "provider", PROVIDER_B, "UNN"): {2023: (20, 30), 2024: (22, 30)},
        ("caregiver", "hf", PROVIDER_A, "Finnmarkssykehuset"): {2023: (14, 26), 2024: (23, 26)},
        ("caregiver", "hf", PROVIDER_B, "UNN"): {2023: (20, 30), 2024: (22, 30)},
        ("resident", "nation", "1", "Norge"): {2024: (74, 100)},
        ("resident", "hf", PROVIDER_A, "Finnmarkssykehuset"): {2024: (19, 22)},
        ("resident", "hf", PROVIDER_B, "UNN"): {2024: (21, 28)},
    }
    for (context, level, orgnr, name), years in plan.items():
        for year, (numerator, denominator) in years.items():
            rows.append(
                result_row(
                    indicator_id="plan",
                    year=year,
                    context=context,
                    level=level,
                    orgnr=orgnr,
                    name=name,
                    numerator=numerator,
                    denominator=denominator,
                    value=numerator / denominator,
                )
            )
    rows.append(
        result_row(
            indicator_id="plan",
            year=2024,
            level="unit",
            orgnr=PROVIDER_A,
            unit_code="U1",
            name="Finnmarkssykehuset",
            numerator=9,
            denominator=10,
            value=0.9,
        )
    )
    study: dict[tuple[str, str, str], tuple[int | None, int]] = {
        ("nation", "1", "Norge"): (3, 100),
        ("provider", PROVIDER_A, "Finnmarkssykehuset"): (2, 20),
        ("hf", PROVIDER_A, "Finnmarkssykehuset"): (2, 26),
        # Denominator under the minimum: suppressed, the numerator withheld by the engine.
        ("provider", PROVIDER_B, "UNN"): (None, 3),
        ("hf", PROVIDER_B, "UNN"): (None, 3),
    }
    for (level, orgnr, name), (enrolled, treated) in study.items():
        rows.append(
            result_row(
                indicator_id="study",
                year=2024,
                level=level,
                orgnr=orgnr,
                name=name,
                numerator=enrolled,
                denominator=treated,
                value=None if enrolled is None else enrolled / treated,
                suppressed=enrolled is None,
                suppression_reason="min_denominator" if enrolled is None else None,
            )
        )
    return rows


def write_table(directory: Path, rows: list[dict[str, Any]], *, year_column: str = "year") -> str:
    """Rows as one Parquet file per year under `directory/year=Y/` (the hive layout)."""
    years = sorted({row[year_column] for row in rows})
    for year in years:
        part = [
            {k: v for k, v in r.items() if k != year_column} for r in rows if r[year_column] == year
        ]
        path = directory / f"year={year}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(part), path)
    return str(directory)


ReleaseWriter = Callable[..., int]


@pytest.fixture
def publish(app: FastAPI, settings: Settings) -> ReleaseWriter:
    """Write release N: basis/discharge Parquet, a manifest, indicator results, the catalog row."""

    def write(
        number: int = 1,
        *,
        basis: list[dict[str, Any]] | None = None,
        discharge: list[dict[str, Any]] | None = None,
        results: list[dict[str, Any]] | None = None,
    ) -> int:
        root = settings.releases_dir / str(number)
        root.mkdir(parents=True, exist_ok=True)
        tables: dict[str, TableSnapshot] = {}
        for name, rows in (("basis", basis), ("discharge", discharge)):
            if not rows:
                continue
            write_table(settings.data_dir / "files" / str(number) / name, rows)
            files = sorted(
                f"file://{p.resolve()}"
                for p in (settings.data_dir / "files" / str(number) / name).rglob("*.parquet")
            )
            tables[name] = TableSnapshot(
                name=name, delta_version=1, files=files, row_count=len(rows)
            )
        ReleaseManifest(release=number, created_at=datetime.now(UTC), tables=tables).write(
            root / "manifest.json"
        )
        result_rows = [r | {"release": number} for r in (results or indicator_rows())]
        pq.write_table(
            pa.Table.from_pylist(result_rows, schema=RESULT_SCHEMA), root / "indicators.parquet"
        )
        with Session(app.state.engine) as session:
            session.add(Release(number=number, manifest_path=str(root / "manifest.json")))
            session.commit()
        return number

    return write
