"""While indicators are computed under the warehouse locks (a publish catching up an earlier
release's results, an erasure's replacement release, an opt-out load), the SQLite catalog stays
writable: a flushed change would hold its write transaction for the whole computation, and every
other writer (the audit, upload requests, a load's commit) would time out."""

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlmodel import Session

import service.publishing as publishing
from etl.erasure import erase_patients
from etl.load import load_file
from etl.warehouse import Warehouse
from indicators.results import RESULTS_FILE
from schemas.forms import Form
from schemas.manifest import ReleaseManifest
from schemas.organisations import Hierarchy
from service.database import make_engine
from service.settings import Settings
from tests.conftest import ExtractWriter, episode_row

KNOWN = frozenset(o.orgnr for o in Hierarchy.default().providers)


def _other_write(settings: Settings) -> str:
    """A write on another connection, waiting at most 1 s for SQLite's lock."""
    other = create_engine(settings.catalog_url, connect_args={"timeout": 1})
    try:
        with other.begin() as connection:
            connection.execute(text("UPDATE upload SET error = NULL WHERE id = 1"))
        return "written"
    except Exception as error:
        return type(error).__name__
    finally:
        other.dispose()


def _two_patients(write: ExtractWriter, settings: Settings, key: bytes) -> Warehouse:
    warehouse = Warehouse(settings.warehouse_dir, settings.releases_dir)
    rows = [episode_row(Form.BASIS, 1, "P1"), episode_row(Form.BASIS, 2, "P2")]
    with Session(make_engine(settings)) as session:
        load_file(
            write(Form.BASIS, rows), Form.BASIS, warehouse=warehouse, session=session, key=key,
            known_providers=KNOWN, today=date(2025, 11, 1),
        )  # fmt: skip
        session.commit()
        publishing.publish(settings, session)
    return warehouse


def test_an_erasure_hook_runs_with_the_catalog_writable(
    write_extract: ExtractWriter, settings: Settings, key: bytes
) -> None:
    warehouse = _two_patients(write_extract, settings, key)
    seen: list[str] = []
    with Session(make_engine(settings)) as session:
        erase_patients(
            ["P2"], warehouse=warehouse, session=session, key=key,
            releases_dir=settings.releases_dir, before_commit=lambda _: seen.append(
                _other_write(settings)
            ),
        )  # fmt: skip
    assert seen == ["written"]


def test_an_optout_load_hook_runs_with_the_catalog_writable(
    write_extract: ExtractWriter, settings: Settings, key: bytes
) -> None:
    warehouse = _two_patients(write_extract, settings, key)
    seen: list[str] = []

    def hook(manifest: ReleaseManifest) -> None:
        seen.append(_other_write(settings))

    optout = write_extract(Form.OPTOUT, [episode_row(Form.OPTOUT, 1, "P2")])
    with Session(make_engine(settings)) as session:
        upload = load_file(
            optout, Form.OPTOUT, warehouse=warehouse, session=session, key=key,
            known_providers=KNOWN, today=date(2025, 11, 1), before_commit=hook,
        )  # fmt: skip
        assert upload.status == "loaded"
    assert seen == ["written"]


def test_a_publish_catching_up_results_leaves_the_catalog_writable(
    write_extract: ExtractWriter,
    settings: Settings,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Release 1 lacks its results; the next publish computes them after its own. While it
    does, another connection can write."""
    _two_patients(write_extract, settings, key)
    (settings.releases_dir / "1" / RESULTS_FILE).unlink()
    real = publishing._compute
    seen: list[str] = []

    def compute(manifest: ReleaseManifest, engine: str) -> object:
        if manifest.release == 1:
            seen.append(_other_write(settings))
        return real(manifest, engine)

    monkeypatch.setattr(publishing, "_compute", compute)
    with Session(make_engine(settings)) as session:
        publishing.publish(settings, session)
    assert seen == ["written"]
    assert Path(settings.releases_dir / "1" / RESULTS_FILE).exists()
