"""A load that fails or is killed leaves none of its Parquet files on disk once undone.

`DeltaTable.restore` only writes a commit that unlists the undone files; the files themselves
(health data, patient keys) must be deleted too, for every table the load wrote, and so must the
files of a write whose commit never happened; never a file that the restored version, a commit
on record or a release lists.
"""

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

import etl.load
import etl.warehouse
from etl.ledger import repair
from etl.load import LoadFailed, load_file
from etl.release import publish_release
from etl.warehouse import QUARANTINE, TABLES, Warehouse
from schemas.catalog import Upload
from schemas.forms import Form
from schemas.organisations import Hierarchy
from tests.conftest import PROVIDER_A, ExtractWriter, episode_row
from tests.etl.test_atomic import CHILD
from tests.etl.test_warehouse import _rows

KNOWN = frozenset(o.orgnr for o in Hierarchy.default().providers)
TODAY = date(2025, 11, 1)


def _on_disk(warehouse: Warehouse) -> dict[str, set[str]]:
    """Per table, the Parquet files under its directory (outside the Delta log)."""
    return {
        table: {
            str(p.resolve())
            for p in warehouse.path(table).rglob("*.parquet")
            if "_delta_log" not in p.parts
        }
        for table in TABLES
    }


def _referenced(warehouse: Warehouse) -> dict[str, set[str]]:
    return {table: {str(Path(f).resolve()) for f in warehouse.files(table)} for table in TABLES}


def _holding(warehouse: Warehouse, needle: str) -> list[str]:
    """Files anywhere under the warehouse whose bytes hold `needle`."""
    return sorted(
        str(p.relative_to(warehouse.root))
        for p in warehouse.root.rglob("*")
        if p.is_file() and needle.encode() in p.read_bytes()
    )


def _patient_key(key: bytes, pseudonym: str) -> str:
    return hmac.new(key, pseudonym.encode(), hashlib.sha256).hexdigest()


def _load(path: Path, warehouse: Warehouse, session: Session, key: bytes) -> Upload:
    return load_file(
        path, Form.BASIS, warehouse=warehouse, session=session, key=key, known_providers=KNOWN,
        today=TODAY,
    )  # fmt: skip


def test_a_load_failing_after_its_writes_leaves_no_file_of_them(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = [episode_row(Form.BASIS, 1, "P1"), episode_row(Form.BASIS, 4, "P4", age="x")]
    _load(write_extract(Form.BASIS, first), warehouse, session, key)
    session.commit()
    published = publish_release(warehouse, warehouse.releases_dir, session, note="before")
    session.commit()
    before = _on_disk(warehouse)
    assert {t: len(f) for t, f in before.items() if f} == {"basis": 1, QUARANTINE: 1}
    assert before == _referenced(warehouse)

    def broken(warehouse: Warehouse, upload_id: int) -> int:
        raise OSError("disk full")

    # Both the basis rows and the quarantined row are committed, then the load fails.
    monkeypatch.setattr(etl.load, "_release_held", broken)
    second = [episode_row(Form.BASIS, 2, "P2"), episode_row(Form.BASIS, 3, "P3", age="x")]
    with pytest.raises(LoadFailed, match=r"failed while writing \(OSError\)"):
        _load(write_extract(Form.BASIS, second), warehouse, session, key)
    session.commit()

    assert warehouse.table(Form.BASIS).column("record_id").to_pylist() == ["b1"]
    assert warehouse.read(QUARANTINE).column("record_id").to_pylist() == ["b4"]
    # The undone commits' files are gone from disk, in both tables; the earlier ones stay.
    assert _on_disk(warehouse) == before
    assert _on_disk(warehouse) == _referenced(warehouse)
    assert _holding(warehouse, _patient_key(key, "P2")) == []
    assert _holding(warehouse, _patient_key(key, "P3")) == []
    assert len(_holding(warehouse, _patient_key(key, "P1"))) == 1
    # The release published before still has every file it lists.
    listed = [f for snapshot in published.tables.values() for f in snapshot.files]
    assert len(listed) == 1
    assert all(Path(f).exists() for f in listed)


def test_restore_deletes_files_added_and_removed_again_by_the_undone_commits(
    tmp_path: Path,
) -> None:
    warehouse = Warehouse(tmp_path / "warehouse")
    warehouse.ensure()
    warehouse.write(Form.BASIS, _rows(["1"], [30], 1), upload_id=1)
    kept = _on_disk(warehouse)["basis"]
    # Upload 2 appends a file, then a merge rewrites it (and upload 1's) into a new one: the
    # appended file is in neither the current nor the restored version, but is still on disk.
    warehouse.write(Form.BASIS, _rows(["2"], [40], 2), upload_id=2)
    warehouse.write(Form.BASIS, _rows(["1", "2"], [31, 41], 2), upload_id=2)
    assert len(_on_disk(warehouse)["basis"]) == 3
    assert len(_referenced(warehouse)["basis"]) == 1

    assert warehouse.restore_before(2) == {"basis": 1}
    assert _on_disk(warehouse)["basis"] == kept
    assert _referenced(warehouse)["basis"] == kept
    assert warehouse.table(Form.BASIS).column("age").to_pylist() == [30]


def test_restore_keeps_an_undone_file_that_a_release_lists(tmp_path: Path) -> None:
    """Cannot happen through the locks (a release is never published over a dead load), but a
    file a manifest lists is never deleted."""
    warehouse = Warehouse(tmp_path / "warehouse", tmp_path / "releases")
    warehouse.ensure()
    warehouse.write(Form.BASIS, _rows(["1"], [30], 1), upload_id=1)
    first = _on_disk(warehouse)["basis"]
    warehouse.write(Form.BASIS, _rows(["2"], [40], 2), upload_id=2)
    warehouse.write(Form.BASIS, _rows(["3"], [50], 2), upload_id=2)
    added = sorted(_on_disk(warehouse)["basis"] - first)
    assert len(added) == 2
    manifest = {
        "release": 1,
        "created_at": "2026-01-01T00:00:00Z",
        "tables": {
            "basis": {"name": "basis", "delta_version": 2, "files": [added[0]], "row_count": 1}
        },
    }
    (tmp_path / "releases" / "1").mkdir(parents=True)
    (tmp_path / "releases" / "1" / "manifest.json").write_text(json.dumps(manifest), "utf-8")

    warehouse.restore_before(2)
    assert _on_disk(warehouse)["basis"] == first | {added[0]}
    assert _referenced(warehouse)["basis"] == first


@pytest.mark.slow
def test_a_killed_load_leaves_no_file_once_repaired(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    catalog_engine: Engine,
    key: bytes,
    tmp_path: Path,
) -> None:
    _load(write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P1")]), warehouse, session, key)
    session.commit()
    before = _on_disk(warehouse)

    rows = [episode_row(Form.BASIS, 2, "P2"), episode_row(Form.BASIS, 3, "P3", age="x")]
    path = write_extract(Form.BASIS, rows)
    search_path = ""
    if catalog_engine.dialect.name == "postgresql":
        with catalog_engine.connect() as connection:
            search_path = str(connection.execute(text("SHOW search_path")).scalar())
    signal_file = tmp_path / "written"
    url = catalog_engine.url.render_as_string(hide_password=False)
    # The child stops at `written` (after its basis and quarantine commits) and is killed there.
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, search_path, str(warehouse.root), str(path),
         key.decode(), str(signal_file), "written", PROVIDER_A],
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not signal_file.exists():
            assert time.monotonic() < deadline, "the load never reached the moment to kill it"
            assert child.poll() is None, "the loading process ended before it could be killed"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()

    on_disk = _on_disk(warehouse)
    assert len(on_disk["basis"] - before["basis"]) == 1
    assert len(on_disk[QUARANTINE] - before[QUARANTINE]) == 1
    assert _holding(warehouse, _patient_key(key, "P2")) != []

    session.expire_all()
    stuck = session.exec(select(Upload).where(Upload.status == "running")).all()
    assert repair(session, warehouse) == [stuck[0].id]
    assert _on_disk(warehouse) == before
    assert _on_disk(warehouse) == _referenced(warehouse)
    assert _holding(warehouse, _patient_key(key, "P2")) == []
    assert _holding(warehouse, _patient_key(key, "P3")) == []
    statuses = [u.status for u in session.exec(select(Upload).order_by(col(Upload.id))).all()]
    assert statuses == ["loaded", "failed"]


def _stray_write(warehouse: Warehouse, table: str, rows: pa.Table) -> Path:
    """What a Delta write leaves when its commit never happens: a data file in the table."""
    directory = warehouse.path(table) / ("year=2024" if table != QUARANTINE else "")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "part-00000-00000000-0000-0000-0000-000000000000-c000.parquet"
    pq.write_table(rows.drop_columns([n for n in rows.column_names if n == "year"]), path)
    return path


def test_a_write_that_never_committed_leaves_no_file(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _load(write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P1")]), warehouse, session, key)
    session.commit()
    before = _on_disk(warehouse)

    def failing(table: object, data: pa.Table, **kwargs: object) -> None:
        # The engine wrote its file, then the commit failed.
        _stray_write(warehouse, "basis", data)
        raise OSError("commit failed")

    monkeypatch.setattr(etl.warehouse, "write_deltalake", failing)
    rows = [episode_row(Form.BASIS, 2, "P2")]
    with pytest.raises(LoadFailed, match=r"failed while writing \(OSError\)"):
        _load(write_extract(Form.BASIS, rows), warehouse, session, key)
    session.commit()
    assert _on_disk(warehouse) == before
    assert _holding(warehouse, _patient_key(key, "P2")) == []
    assert warehouse.table(Form.BASIS).column("record_id").to_pylist() == ["b1"]


def _checkpoint(warehouse: Warehouse) -> list[int]:
    """An erasure's log clean-up: a checkpoint, then the log JSON files before it are deleted.
    Returns the versions whose JSON remains."""
    delta = warehouse.delta("basis")
    delta.create_checkpoint()
    delta.cleanup_metadata()
    return sorted(int(p.stem) for p in (warehouse.path("basis") / "_delta_log").glob("*.json"))


def test_files_on_record_or_in_a_release_are_kept(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "warehouse", tmp_path / "releases")
    warehouse.ensure()
    warehouse.write(Form.BASIS, _rows(["1"], [30], 1), upload_id=1)
    first = _on_disk(warehouse)["basis"]
    warehouse.write(Form.BASIS, _rows(["2"], [40], 2), upload_id=2)
    assert _checkpoint(warehouse) == [2]  # no JSON lists the first file's `add` any more
    # Upload 3 supersedes record 1: the first file leaves the current version; only the `remove`
    # of version 3 lists it now (time travel to version 2 still needs it).
    warehouse.write(Form.BASIS, _rows(["1"], [31], 3), upload_id=3)
    on_record = _on_disk(warehouse)["basis"]
    assert len(on_record) == 3
    assert first < on_record
    assert not first & _referenced(warehouse)["basis"]
    stray = _stray_write(warehouse, "basis", _rows(["3"], [50], 4))
    quarantine_stray = warehouse.path(QUARANTINE) / "part-stray.parquet"
    pq.write_table(pa.table({"values": ["{}"]}), quarantine_stray)

    assert warehouse.restore_before(4) == {}  # upload 4 never committed
    assert not stray.exists()
    assert not quarantine_stray.exists()
    assert _on_disk(warehouse)["basis"] == on_record
    assert warehouse.table(Form.BASIS).sort_by("record_id").column("age").to_pylist() == [31, 40]

    # After a later clean-up no log JSON lists the first file at all: a release still does.
    manifest = {
        "release": 1,
        "created_at": "2026-01-01T00:00:00Z",
        "tables": {
            "basis": {"name": "basis", "delta_version": 1, "files": sorted(first), "row_count": 1}
        },
    }
    (tmp_path / "releases" / "1").mkdir(parents=True)
    (tmp_path / "releases" / "1" / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    warehouse.write(Form.BASIS, _rows(["4"], [60], 5), upload_id=5)
    assert _checkpoint(warehouse) == [4]
    warehouse.restore_before(6)
    assert first < _on_disk(warehouse)["basis"]
    assert len(_on_disk(warehouse)["basis"]) == 4


# A loading process whose basis write is killed after writing its file, before the commit.
KILLED_WHILE_WRITING = """
import sys, time
from datetime import date
from pathlib import Path
from sqlmodel import Session, create_engine
import etl.warehouse
from etl.load import load_file
from etl.warehouse import Warehouse
from schemas.forms import Form
from tests.etl.test_failed_load_files import _stray_write
url, search_path, root, path, key, signal_file, provider = sys.argv[1:8]
args = {"options": f"-csearch_path={search_path}"} if search_path else {}
warehouse = Warehouse(Path(root))
def stalled(table, data, **kwargs):
    _stray_write(warehouse, "basis", data)
    Path(signal_file).touch()
    time.sleep(120)
etl.warehouse.write_deltalake = stalled
with Session(create_engine(url, connect_args=args), expire_on_commit=False) as session:
    load_file(Path(path), Form.BASIS, warehouse=warehouse, session=session, key=key.encode(),
              known_providers=frozenset({provider}), today=date(2025, 11, 1))
"""


@pytest.mark.slow
def test_a_load_killed_while_writing_leaves_no_file_once_repaired(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    catalog_engine: Engine,
    key: bytes,
    tmp_path: Path,
) -> None:
    _load(write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P1")]), warehouse, session, key)
    session.commit()
    before = _on_disk(warehouse)
    path = write_extract(Form.BASIS, [episode_row(Form.BASIS, 2, "P2")])
    search_path = ""
    if catalog_engine.dialect.name == "postgresql":
        with catalog_engine.connect() as connection:
            search_path = str(connection.execute(text("SHOW search_path")).scalar())
    signal_file = tmp_path / "writing"
    url = catalog_engine.url.render_as_string(hide_password=False)
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WHILE_WRITING, url, search_path, str(warehouse.root),
         str(path), key.decode(), str(signal_file), PROVIDER_A],
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not signal_file.exists():
            assert time.monotonic() < deadline, "the load never reached the moment to kill it"
            assert child.poll() is None, "the loading process ended before it could be killed"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()

    assert _holding(warehouse, _patient_key(key, "P2")) != []
    session.expire_all()
    stuck = session.exec(select(Upload).where(Upload.status == "running")).all()
    assert repair(session, warehouse) == [stuck[0].id]
    assert _on_disk(warehouse) == before
    assert _holding(warehouse, _patient_key(key, "P2")) == []


def test_an_unreadable_release_manifest_keeps_every_file_and_the_repair_goes_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    warehouse = Warehouse(tmp_path / "warehouse", tmp_path / "releases")
    warehouse.ensure()
    warehouse.write(Form.BASIS, _rows(["1"], [30], 1), upload_id=1)
    warehouse.write(Form.BASIS, _rows(["2"], [40], 2), upload_id=2)
    stray = _stray_write(warehouse, "basis", _rows(["3"], [50], 2))
    before = _on_disk(warehouse)["basis"]
    # A publish killed while writing its manifest: any file might be that release's.
    (tmp_path / "releases" / "7").mkdir(parents=True)
    (tmp_path / "releases" / "7" / "manifest.json").write_text('{"release": 7, "tab', "utf-8")

    assert warehouse.restore_before(2) == {"basis": 1}
    assert warehouse.table(Form.BASIS).column("record_id").to_pylist() == ["1"]
    assert _on_disk(warehouse)["basis"] == before
    assert stray.exists()
    assert "Release manifest 7 cannot be read" in caplog.text
