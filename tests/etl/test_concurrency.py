"""Two loads at once (threads, two files of one form) both succeed with exact counts."""

from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from etl.load import load_file
from etl.warehouse import QUARANTINE, Warehouse
from schemas.catalog import Upload
from schemas.forms import Form
from schemas.organisations import Hierarchy
from tests.conftest import ExtractWriter, episode_row

KNOWN = frozenset(o.orgnr for o in Hierarchy.default().providers)
PER_FILE = 300


def test_two_concurrent_loads_of_one_form_both_land(
    write_extract: ExtractWriter, warehouse: Warehouse, catalog_engine: Engine, key: bytes
) -> None:
    files: list[Path] = []
    for part in (0, 1):
        rows = [
            episode_row(Form.BASIS, part * 10_000 + n, f"P{part}-{n}",
                        age="x" if n == 7 else str(20 + n % 50))
            for n in range(PER_FILE)
        ]  # fmt: skip
        files.append(write_extract(Form.BASIS, rows))

    def load(path: Path) -> tuple[str, int, int]:
        with Session(catalog_engine, expire_on_commit=False) as session:
            upload = load_file(
                path, Form.BASIS, warehouse=warehouse, session=session, key=key,
                known_providers=KNOWN, today=date(2025, 11, 1),
            )  # fmt: skip
            session.commit()
            return upload.status, upload.rows_accepted, upload.rows_quarantined

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(load, files))

    assert results == [("loaded", PER_FILE - 1, 1), ("loaded", PER_FILE - 1, 1)]
    assert warehouse.count("basis") == 2 * (PER_FILE - 1)
    assert warehouse.count(QUARANTINE) == 2
    stored = warehouse.table(Form.BASIS)
    assert len(set(stored.column("record_id").to_pylist())) == 2 * (PER_FILE - 1)
    with Session(catalog_engine) as session:
        uploads = session.exec(select(Upload).order_by(col(Upload.id))).all()
        assert [u.status for u in uploads] == ["loaded", "loaded"]
        assert sorted(u.rows_accepted for u in uploads) == [PER_FILE - 1, PER_FILE - 1]
    # Every Delta commit of the basis table is one append of one upload: no lost commit.
    history = warehouse.delta("basis").history()
    appends = [h for h in history if h.get("operation") == "WRITE"]
    assert sorted(int(h["kvarus.upload_id"]) for h in appends) == sorted(
        u.id for u in uploads if u.id is not None
    )


def test_the_same_file_twice_at_once_loads_once(
    write_extract: ExtractWriter, warehouse: Warehouse, catalog_engine: Engine, key: bytes
) -> None:
    path = write_extract(Form.BASIS, [episode_row(Form.BASIS, n, f"P{n}") for n in range(50)])

    def load(_: int) -> str:
        with Session(catalog_engine, expire_on_commit=False) as session:
            upload = load_file(
                path, Form.BASIS, warehouse=warehouse, session=session, key=key,
                known_providers=KNOWN, today=date(2025, 11, 1),
            )  # fmt: skip
            session.commit()
            return upload.status

    with ThreadPoolExecutor(max_workers=2) as pool:
        statuses = sorted(pool.map(load, range(2)))
    assert statuses == ["duplicate", "loaded"]
    assert warehouse.count("basis") == 50
    writes = [h for h in warehouse.delta("basis").history() if h.get("operation") == "WRITE"]
    assert len(writes) == 1
