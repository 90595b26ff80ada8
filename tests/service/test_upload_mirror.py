"""An API request's row shows its load's counts as they stand when it is told, also when a basis
load released the load's held rows in between (its rows then count as accepted)."""

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from etl.ledger import api_uploader, hold_request
from etl.read import Received
from etl.warehouse import Warehouse
from schemas.catalog import Upload
from schemas.forms import Form
from service import uploads
from service.settings import Settings
from service.uploads import create_request, run_load
from tests.conftest import ExtractWriter, episode_row, load_ok

# How long the job waits for the other load before telling its request (the other load may wait
# for the job's transaction instead: then it goes on once the job commits).
WAIT_FOR_OTHER = 3.0


def _load_basis(engine: Engine, basis: Path, warehouse: Warehouse, key: bytes) -> None:
    with Session(engine, expire_on_commit=False) as other:
        load_ok(basis, Form.BASIS, warehouse, other, key, commit=True)


def _counts(row: Upload | None) -> tuple[int, int]:
    assert row is not None
    return row.rows_accepted, row.rows_quarantined


def test_a_basis_load_between_the_jobs_commit_and_its_mirror_counts_in_the_request(
    write_extract: ExtractWriter,
    settings: Settings,
    catalog_engine: Engine,
    warehouse: Warehouse,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A discharge whose intake has not arrived: held in quarantine (`cross.no_intake`).
    source = write_extract(Form.DISCHARGE, [episode_row(Form.DISCHARGE, 3, "P3")])
    basis = write_extract(Form.BASIS, [episode_row(Form.BASIS, 3, "P3")])
    other_load = threading.Thread(target=_load_basis, args=(catalog_engine, basis, warehouse, key))
    real_mirror = uploads.mirror

    def mirror(request: Upload, loaded: Upload) -> None:
        # The job's load is committed and the write locks are free: another writer's basis load
        # brings the intake now and releases the held discharge (or waits for this transaction).
        other_load.start()
        other_load.join(WAIT_FOR_OTHER)
        real_mirror(request, loaded)

    monkeypatch.setattr(uploads, "mirror", mirror)
    extract = Received(Path(source).name, Path(source).read_bytes())
    with Session(catalog_engine) as session:
        request = create_request(
            session, form=Form.DISCHARGE, filename="d.csv", sha256="0" * 64, uploaded_by="client"
        )
        session.commit()
        request_id = request.id
    assert request_id is not None

    run_load(
        catalog_engine, settings, request_id, extract, Form.DISCHARGE,
        hold_request(warehouse, request_id),
    )  # fmt: skip
    other_load.join()

    with Session(catalog_engine) as session:
        ledger = session.exec(
            select(Upload).where(Upload.uploaded_by == api_uploader(request_id))
        ).one()
        request_row = session.get(Upload, request_id)
        assert _counts(ledger) == (1, 0)
        assert request_row is not None
        assert request_row.loaded_as == ledger.id
        assert _counts(request_row) == (1, 0)
