"""Upload files under incoming/ (raw extracts: pseudonyms, health data) do not outlive the process
that received them: the next writer's repair, an erasure's included, deletes the file of a request
whose process died, and leaves the file of a live process's request alone."""

import asyncio
import io
from pathlib import Path

from fastapi import UploadFile
from sqlalchemy import Engine
from sqlmodel import Session

from etl.erasure import erase_patients
from etl.ledger import LOADING, hold_request, let_go, repair
from etl.warehouse import Warehouse
from schemas.catalog import Upload
from schemas.forms import Form
from service import uploads
from service.settings import Settings

CONTENT = b"record_id;pseudonym\nR1;P-INCOMING-1\n"


def _request(engine: Engine, name: str, status: str) -> int:
    with Session(engine) as session:
        request = uploads.create_request(
            session, form=Form.BASIS, filename=name, sha256="0" * 64, uploaded_by="client"
        )
        request.status = status
        session.commit()
        assert request.id is not None
        return request.id


def _received(settings: Settings, name: str) -> Path:
    """A file received by this (live) process, as `POST /uploads` receives it."""
    upload = UploadFile(io.BytesIO(CONTENT), filename=name)
    path, _ = asyncio.run(uploads.receive(upload, settings))
    return path


def _left_by_a_dead_process(settings: Settings, engine: Engine, warehouse: Warehouse) -> Path:
    """A request whose process died while its job read the file: its request lock and its file
    are nobody's any more (the kernel dropped its locks)."""
    incoming = settings.data_dir / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    path = incoming / "tmpdead0.csv"
    path.write_bytes(CONTENT)
    request_id = _request(engine, "dead.csv", LOADING)
    hold_request(warehouse, request_id).close()
    return path


def test_a_repair_deletes_the_file_of_a_dead_request_and_keeps_a_live_ones(
    settings: Settings, catalog_engine: Engine, warehouse: Warehouse
) -> None:
    live_path = _received(settings, "live.csv")
    live = _request(catalog_engine, "live.csv", "pending")
    held = hold_request(warehouse, live)
    dead_path = _left_by_a_dead_process(settings, catalog_engine, warehouse)
    try:
        with Session(catalog_engine) as session:
            repair(session, warehouse)
        assert not dead_path.exists()
        assert live_path.exists()  # its job has yet to read it
        assert live_path.read_bytes() == CONTENT
        with Session(catalog_engine) as session:
            request = session.get(Upload, live)
            assert request is not None
            assert request.status == "pending"
    finally:
        let_go(held)
        uploads.release_file(live_path)


def test_an_erasure_deletes_the_file_of_a_dead_request(
    settings: Settings, catalog_engine: Engine, warehouse: Warehouse, key: bytes
) -> None:
    dead_path = _left_by_a_dead_process(settings, catalog_engine, warehouse)
    with Session(catalog_engine, expire_on_commit=False) as session:
        erase_patients(
            ["P-INCOMING-1"], warehouse=warehouse, session=session, key=key,
            releases_dir=warehouse.releases_dir,
        )  # fmt: skip
        session.commit()
    assert not dead_path.exists()


def test_the_job_deletes_its_received_file(
    settings: Settings, catalog_engine: Engine, warehouse: Warehouse
) -> None:
    """A file that is not a valid extract: the job fails, and its file goes with it."""
    path = _received(settings, "basis.csv")
    request_id = _request(catalog_engine, "basis.csv", "pending")
    held = hold_request(warehouse, request_id)
    uploads.run_load(catalog_engine, settings, request_id, path, Form.BASIS, held)
    assert not path.exists()
    assert list((settings.data_dir / "incoming").iterdir()) == []
    with Session(catalog_engine) as session:
        request = session.get(Upload, request_id)
        assert request is not None
        assert request.status in ("rejected", "failed")
