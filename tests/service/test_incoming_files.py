"""An upload as sent (pseudonyms, and whatever else until the guard has read it) never reaches
the disk: it is received into memory (Starlette's spooling to a temporary file past 1 MiB is off)
and loaded from there. Upload files that an earlier version kept under incoming/ are deleted by
the next writer's repair, an erasure's included."""

import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

import etl.load
from etl.erasure import erase_patients
from etl.ledger import LOADING, hold_request, repair
from etl.warehouse import Warehouse
from schemas.forms import Form
from service import uploads
from service.settings import Settings
from tests.conftest import ExtractWriter, episode_row
from tests.service.conftest import Headers

API = "/api/v1"

CONTENT = b"record_id;pseudonym\nR1;P-INCOMING-1\n"
NEEDLE = b"P-NEVER-ON-DISK"


def _request(engine: Engine, name: str, status: str) -> int:
    with Session(engine) as session:
        request = uploads.create_request(
            session, form=Form.BASIS, filename=name, sha256="0" * 64, uploaded_by="client"
        )
        request.status = status
        session.commit()
        assert request.id is not None
        return request.id


def _left_by_a_dead_process(settings: Settings, engine: Engine, warehouse: Warehouse) -> Path:
    """An upload file an earlier version received, its request's process dead since."""
    incoming = settings.data_dir / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    path = incoming / "tmpdead0.csv"
    path.write_bytes(CONTENT)
    request_id = _request(engine, "dead.csv", LOADING)
    hold_request(warehouse, request_id).close()
    return path


def test_a_repair_deletes_an_earlier_versions_upload_file(
    settings: Settings, catalog_engine: Engine, warehouse: Warehouse
) -> None:
    dead_path = _left_by_a_dead_process(settings, catalog_engine, warehouse)
    with Session(catalog_engine) as session:
        repair(session, warehouse)
    assert not dead_path.exists()


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


@pytest.fixture
def system_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system's temporary directory, for this test alone: where a spooled body would go."""
    directory = tmp_path / "system-temp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def _holding(directory: Path) -> list[str]:
    return [str(p) for p in directory.rglob("*") if p.is_file() and NEEDLE in p.read_bytes()]


@pytest.mark.parametrize("rejected", [False, True])
def test_an_upload_reaches_no_disk(
    rejected: bool,
    client: TestClient,
    headers: dict[str, Headers],
    settings: Settings,
    system_temp: Path,
    write_extract: ExtractWriter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Over 1 MiB (Starlette spooled such a body to a temporary file), with the pseudonym; the
    # rejected one holds an identity number too (01019000083), which the guard refuses.
    rows = [episode_row(Form.BASIS, n, f"P-{n}") for n in range(1, 14_000)]
    rows.append(episode_row(Form.BASIS, 14_000, NEEDLE.decode()))
    if rejected:
        rows.append(episode_row(Form.BASIS, 14_001, "P-X", unit_code="01019000083"))
    content = write_extract(Form.BASIS, rows).read_bytes()
    assert len(content) > 1024 * 1024
    seen: list[list[str]] = []
    load_file = etl.load.load_file

    def looking(*args: object, **kwargs: object) -> object:
        # While the job loads: nothing of the file in the data directory or the temporary one.
        seen.append(_holding(settings.data_dir) + _holding(system_temp))
        return load_file(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(etl.load, "load_file", looking)
    # A spooled body rolls over to an unnamed file (unlinked at once, so not seen in a folder).
    rollover = tempfile.SpooledTemporaryFile.rollover
    rolled: list[int] = []

    def counted(self: tempfile.SpooledTemporaryFile[bytes]) -> None:
        rolled.append(1)
        rollover(self)

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", counted)
    answer = client.post(
        f"{API}/uploads",
        files={"file": ("basis.csv", content, "text/csv")},
        data={"form": "basis"},
        headers=headers["registry"],
    )
    assert answer.status_code == 202, answer.text
    status = client.get(f"{API}/uploads/1", headers=headers["registry"]).json()["status"]
    assert status == ("rejected" if rejected else "loaded")
    assert (seen, rolled) == ([[]], [])
    assert _holding(settings.data_dir) == []
    assert list(system_temp.iterdir()) == []
