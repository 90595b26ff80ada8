"""Shared fixtures: settings with a temporary data directory, a catalog engine on SQLite and on
PostgreSQL (a fresh schema per test), the warehouse, and a writer of tiny extract CSVs."""

import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, text
from sqlmodel import Session, SQLModel, create_engine

import schemas.catalog  # noqa: F401  (registers the catalog tables)
from etl.warehouse import Warehouse
from schemas.catalog import Upload
from schemas.forms import FORMS, Form
from service.database import make_engine
from service.settings import Settings

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TEST_KEY = "test-pseudonym-key-0123456789-abcdef"  # 36 characters: over the 32 minimum
# Two providers of the reference hierarchy (valid orgnrs, known to the register).
PROVIDER_A = "983974880"
PROVIDER_B = "983974899"


def _postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", pseudonym_key=SecretStr(TEST_KEY))


@pytest.fixture
def key(settings: Settings) -> bytes:
    return settings.key_bytes()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def catalog_engine(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(settings)
        yield engine
        engine.dispose()
        return
    if not _postgres_reachable():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(
        POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"}, pool_pre_ping=True
    )
    SQLModel.metadata.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def session(catalog_engine: Engine) -> Iterator[Session]:
    with Session(catalog_engine, expire_on_commit=False) as session:
        yield session
        session.commit()


@pytest.fixture
def warehouse(settings: Settings) -> Warehouse:
    return Warehouse(settings.warehouse_dir, settings.releases_dir)


# The day the ETL tests validate on (the rows' dates lie before it) and the providers they know.
LOAD_DAY = date(2025, 11, 1)


def load_ok(
    path: Path,
    form: Form,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    *,
    commit: bool = False,
) -> "Upload":
    """Load a file as the ETL tests do (the register's providers, validated on `LOAD_DAY`),
    assert that it loaded, and commit the catalog if asked."""
    from etl.load import load_file  # Great Expectations: imported by the tests that load only
    from schemas.organisations import Hierarchy

    upload = load_file(
        path, form, warehouse=warehouse, session=session, key=key, today=LOAD_DAY,
        known_providers=frozenset(o.orgnr for o in Hierarchy.default().providers),
    )  # fmt: skip
    if commit:
        session.commit()
    assert upload.status == "loaded"
    return upload


# Values of a valid row per form, apart from the common columns.
DEFAULTS: dict[Form, dict[str, str]] = {
    Form.BASIS: {
        "intake_date": "10.01.2024",
        "referral_date": "02.01.2024",
        "age": "34",
        "sex": "1",
        "treatment_type": "1",
        "primary_substance": "1",
        "icd10": "F10.2",
        "audit": "20",
        "housing": "1",
        "employment": "1",
        "severity": "3",
        "research_consent": "1",
    },
    Form.MEASUREMENT: {
        "measure_date": "10.04.2024",
        "status": "1",
        "treatment_plan": "2",
        "crisis_plan": "2",
        "benefit": "4",
        "use_days_30": "3",
    },
    Form.DISCHARGE: {
        "discharge_date": "10.06.2024",
        "end_reason": "1",
        "housing": "1",
        "employment": "1",
        "followup_arranged": "1",
    },
    Form.FOLLOWUP: {"followup_date": "10.06.2025", "followup_status": "1"},
    Form.OPTOUT: {"optout_date": "01.03.2025"},
    Form.NPR_COUNTS: {},
}

ExtractWriter = Callable[..., Path]


def episode_row(form: Form, n: int, patient: str, **values: Any) -> dict[str, str]:
    """A valid row of `form` for episode `e{n}` of `patient`; `values` override."""
    row: dict[str, str] = {}
    if form not in (Form.OPTOUT, Form.NPR_COUNTS):
        row |= {
            "record_id": f"{form.value[0]}{n}",
            "episode_id": f"e{n}",
            "patient_pseudonym": patient,
            "provider_orgnr": PROVIDER_A,
            "unit_code": "U1",
        }
    elif form is Form.OPTOUT:
        row |= {"record_id": f"o{n}", "patient_pseudonym": patient, "provider_orgnr": PROVIDER_A}
    row |= DEFAULTS[form]
    row |= {k: str(v) for k, v in values.items()}
    return row


@pytest.fixture
def write_extract(tmp_path: Path) -> ExtractWriter:
    """Write rows (dicts of raw text) as a `;`-separated CSV of the form's columns."""
    counter = iter(range(1_000_000))

    def write(form: Form, rows: list[dict[str, str]], name: str | None = None) -> Path:
        columns = FORMS[form].column_names
        path = tmp_path / "extracts" / (name or f"{form.value}-{next(counter)}.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [";".join(columns)]
        lines += [";".join(row.get(c, "") for c in columns) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write
