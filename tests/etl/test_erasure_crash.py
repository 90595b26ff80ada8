"""An erasure killed with SIGKILL at its critical points: after the next writer's repair, no
release in service lacks its files and, once the erasure was committed, it is complete (the
patient in no byte under the data dir, the erasure log has its row); killed before its commit,
the releases that held the patients are retired (no longer served), the log counts the rows it
deleted, and running it again and publishing a release completes it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from etl.erasure import INDICATORS_FILE, PENDING, RETIRED_BY_REPAIR, erase_patients
from etl.ledger import INTERRUPTED, OPTOUT_ERASED, OPTOUT_INTERRUPTED, repair
from etl.load import load_file
from etl.release import publish_release
from etl.warehouse import Warehouse
from schemas.catalog import Erasure, Release, Upload, ValidationRun
from schemas.forms import Form
from schemas.manifest import ReleaseManifest
from service.settings import Settings
from tests.conftest import PROVIDER_A, ExtractWriter, episode_row, load_ok
from tests.etl.test_erasure import ERASED, _assert_no_trace, _register

# Passes both check digits (tests/etl/test_privacy_forms.py).
VALID = "01019000083"

# The erasing process: `erase_patients` (mode `erase`, as `kvarus erase`) or an optout file's
# load (mode `load`). At `moment` it touches `signal_file` and sleeps, for the test to kill it
# there: `before_commit` is the replacement release's hook (after the Delta deletes, before the
# catalog commit); `after_first_delete` follows the first table's delete (and its marker),
# `before_first_mark` that delete before the marker says so;
# `before_purge` and `after_purge` wrap the first and the last table's purge of the erasure's
# files. A hook, not polling: the moment of the kill is deterministic.
CHILD = """
import sys, time
from datetime import date
from pathlib import Path
from sqlalchemy import create_engine
from sqlmodel import Session
import etl.erasure as erasure
from etl.load import load_file
from etl.warehouse import TABLES, Warehouse
from schemas.forms import Form
url, search_path, root, releases, key, signal_file, moment, mode, target = sys.argv[1:10]
args = {"options": f"-csearch_path={search_path}"} if search_path else {}
engine = create_engine(url, connect_args=args)
def pause(*_: object) -> None:
    Path(signal_file).touch()
    time.sleep(120)
purge = erasure._purge
def paused_purge(warehouse: Warehouse, table: str, keep: set[str]) -> None:
    if moment == "before_purge" and table == TABLES[0]:
        pause()
    purge(warehouse, table, keep)
    if moment == "after_purge" and table == TABLES[-1]:
        pause()
erasure._purge = paused_purge
mark = erasure._mark_pending
marks = []
def paused_mark(*args: object) -> None:
    mark(*args)
    marks.append(1)
    if moment == "after_first_delete" and len(marks) == 2:
        pause()
erasure._mark_pending = paused_mark
delete = Warehouse.delete_patients
def paused_delete(self: Warehouse, table: str, keys: object) -> int:
    deleted = delete(self, table, keys)
    if moment == "before_first_mark" and table == TABLES[0]:
        pause()
    return deleted
Warehouse.delete_patients = paused_delete
hook = pause if moment == "before_commit" else None
warehouse = Warehouse(Path(root), Path(releases))
with Session(engine, expire_on_commit=False) as session:
    if mode == "erase":
        erasure.erase_patients([target], warehouse=warehouse, session=session, key=key.encode(),
                               releases_dir=Path(releases), before_commit=hook)
    else:
        load_file(Path(target), Form.OPTOUT, warehouse=warehouse, session=session,
                  key=key.encode(), known_providers=frozenset({sys.argv[10]}),
                  today=date(2025, 11, 1), before_commit=hook)
    session.commit()
"""

ROWS_ERASED = 5  # `_register`: 2 basis + 1 measurement + 2 quarantine


def _kill_at(
    moment: str, mode: str, target: str, *, warehouse: Warehouse, engine: Engine, key: bytes,
    tmp_path: Path,
) -> None:  # fmt: skip
    search_path = ""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            search_path = str(connection.execute(text("SHOW search_path")).scalar())
    signal_file = tmp_path / f"paused-{moment}"
    url = engine.url.render_as_string(hide_password=False)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, search_path, str(warehouse.root),
         str(warehouse.releases_dir), key.decode(), str(signal_file), moment, mode, target,
         PROVIDER_A],
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not signal_file.exists():
            assert child.poll() is None, "the erasing process ended before it could be killed"
            assert time.monotonic() < deadline, "the erasure never reached the moment to kill it"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()


def _published(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> Path:
    """The register of `test_erasure` published as release 1, with (stand-in) results."""
    _register(write_extract, warehouse, session, key)
    publish_release(warehouse, warehouse.releases_dir, session, note="before")
    results = warehouse.releases_dir / "1" / INDICATORS_FILE
    pq.write_table(pa.table({"value": [0.5]}), results)
    return results


def _served(session: Session) -> dict[int, bool]:
    """Each release in service: whether every file its manifest lists exists."""
    session.expire_all()
    live = session.exec(select(Release).where(col(Release.retired).is_(False))).all()
    return {
        r.number: all(
            Path(f).exists()
            for snapshot in ReleaseManifest.read(Path(r.manifest_path)).tables.values()
            for f in snapshot.files
        )
        for r in live
    }


def _releases(session: Session) -> list[tuple[int, bool]]:
    return [
        (r.number, r.retired) for r in session.exec(select(Release).order_by(col(Release.number)))
    ]


@pytest.mark.parametrize("moment", ["before_purge", "after_purge"])
def test_an_erasure_killed_after_its_commit_is_completed_by_the_next_writer(
    moment: str,
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    catalog_engine: Engine,
    settings: Settings,
    key: bytes,
    tmp_path: Path,
) -> None:
    results = _published(write_extract, warehouse, session, key)
    session.commit()

    _kill_at(moment, "erase", ERASED, warehouse=warehouse, engine=catalog_engine, key=key,
             tmp_path=tmp_path)  # fmt: skip
    # Committed before the kill: release 1 is retired and its replacement served at once (the old
    # code served release 1 here, its files deleted after `after_purge`); files are left to delete.
    assert _served(session) == {2: True}
    assert (warehouse.root / PENDING).exists()

    assert repair(session, warehouse) == []  # no load was running
    assert _served(session) == {2: True}
    assert _releases(session) == [(1, True), (2, False)]
    erasure = session.exec(select(Erasure)).one()
    assert (erasure.releases_rebuilt, sum(erasure.rows_erased.values())) == ("1->2", ROWS_ERASED)
    assert not results.exists()
    assert not (warehouse.root / PENDING).exists()
    if catalog_engine.dialect.name == "sqlite":
        # Truncated by the repair that finished the erasure, as after an erasure that was not
        # killed: its frames held the catalog's pages as they were before it.
        wal = Path(str(catalog_engine.url.database) + "-wal")
        assert wal.exists()
        assert wal.stat().st_size == 0
    session.close()
    _assert_no_trace(settings.data_dir, key)


def test_an_optout_load_killed_after_its_erasure_was_committed_says_so_and_is_completed(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    catalog_engine: Engine,
    settings: Settings,
    key: bytes,
    tmp_path: Path,
) -> None:
    results = _published(write_extract, warehouse, session, key)
    session.commit()
    optout = write_extract(Form.OPTOUT, [episode_row(Form.OPTOUT, 1, ERASED)])

    _kill_at("before_purge", "load", str(optout), warehouse=warehouse, engine=catalog_engine,
             key=key, tmp_path=tmp_path)  # fmt: skip
    repaired = repair(session, warehouse)

    upload = session.exec(select(Upload).where(Upload.form == "optout")).one()
    assert repaired == [upload.id]
    assert (upload.status, upload.error, upload.rows_erased) == (
        "failed", OPTOUT_ERASED, ROWS_ERASED,
    )  # fmt: skip
    assert "undone" not in OPTOUT_ERASED
    assert _served(session) == {2: True}
    assert _releases(session) == [(1, True), (2, False)]
    assert session.exec(select(Erasure)).one().releases_rebuilt == "1->2"
    assert not results.exists()
    session.close()
    _assert_no_trace(settings.data_dir, key)


@pytest.mark.parametrize("mode", ["erase", "load"])
def test_an_erasure_killed_before_its_commit_retires_the_releases_that_held_the_patients(
    mode: str,
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    catalog_engine: Engine,
    settings: Settings,
    key: bytes,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    results = _published(write_extract, warehouse, session, key)
    session.commit()
    target = ERASED
    if mode == "load":
        target = str(write_extract(Form.OPTOUT, [episode_row(Form.OPTOUT, 1, ERASED)]))

    named = str([run.report for run in session.exec(select(ValidationRun)).all()])
    assert "'b5'" in named
    assert "'m9'" in named
    _kill_at("before_commit", mode, target, warehouse=warehouse, engine=catalog_engine, key=key,
             tmp_path=tmp_path)  # fmt: skip
    repair(session, warehouse)

    # The reports no longer name the erased rows (b5 age.type, m9 held for its intake): the
    # repair scrubbed them from the marker, as no rerun could (the rows are gone).
    reports = str([run.report for run in session.exec(select(ValidationRun)).all()])
    assert "'b5'" not in reports
    assert "'m9'" not in reports
    # Release 1 held the patient: the repair retires it (it used to stay served, the patient in
    # it, with nothing said) and deletes its results, and says so on stderr. The deletes stand
    # and are logged from the marker (the rerun below counts 0 rows).
    assert _served(session) == {}
    assert _releases(session) == [(1, True)]
    assert not results.exists()
    logged = session.exec(select(Erasure)).one()
    assert (logged.patients, sum(logged.rows_erased.values())) == (1, ROWS_ERASED)
    assert logged.rows_erased["quarantine"] == 2
    assert logged.releases_rebuilt == "1" + RETIRED_BY_REPAIR
    assert [r.getMessage() for r in caplog.records if r.name == "kvarus.erasure"] == [
        "Warning: an erasure was interrupted before it finished; its deleted rows stay deleted, "
        "and release(s) 1 that held its patients are no longer served. Run it again (kvarus "
        "erase, or send the opt-out file again), then publish a release (kvarus release)."
    ]
    assert not (warehouse.root / PENDING).exists()
    # The replacement release it had begun (its manifest written, never committed) is gone.
    assert sorted(p.name for p in warehouse.releases_dir.iterdir()) == ["1"]
    if mode == "load":
        upload = session.exec(select(Upload).where(Upload.form == "optout")).one()
        # Its deletes stand: counted as the erasure log counts them (0 before).
        assert (upload.status, upload.error, upload.rows_erased) == (
            "failed", OPTOUT_INTERRUPTED, ROWS_ERASED,
        )  # fmt: skip
        assert "send the file again" in OPTOUT_INTERRUPTED
        assert OPTOUT_INTERRUPTED != INTERRUPTED

    # Run again: no row is left to erase, no served release holds the patient; a release
    # published after (number 2: the dead replacement's directory was removed) is served.
    again = erase_patients([ERASED], warehouse=warehouse, session=session, key=key,
                           releases_dir=warehouse.releases_dir)  # fmt: skip
    assert (again.releases_rebuilt, sum(again.rows_erased.values())) == ("", 0)
    assert publish_release(warehouse, warehouse.releases_dir, session).release == 2
    assert _served(session) == {2: True}
    assert len(session.exec(select(Erasure)).all()) == 2
    session.close()
    _assert_no_trace(settings.data_dir, key)


@pytest.mark.parametrize("mode", ["erase", "load"])
@pytest.mark.parametrize("moment", ["after_first_delete", "before_first_mark"])
def test_an_erasure_killed_between_its_deletes_logs_what_it_deleted(
    mode: str,
    moment: str,
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    catalog_engine: Engine,
    settings: Settings,
    key: bytes,
    tmp_path: Path,
) -> None:
    _published(write_extract, warehouse, session, key)
    session.commit()
    target = ERASED
    if mode == "load":
        target = str(write_extract(Form.OPTOUT, [episode_row(Form.OPTOUT, 1, ERASED)]))

    _kill_at(moment, mode, target, warehouse=warehouse, engine=catalog_engine, key=key,
             tmp_path=tmp_path)  # fmt: skip
    repair(session, warehouse)
    if mode == "load":
        # The opt-out counts what the log counts, the repair's deletes too (it said 2).
        upload = session.exec(select(Upload).where(Upload.form == "optout")).one()
        assert (upload.status, upload.rows_erased) == ("failed", ROWS_ERASED)
    # Only the basis table's 2 rows were deleted when it was killed; the repair deletes the
    # measurement and quarantine rows the marker names, by record id. A release published before
    # the erasure was run again held them (a review found them in release 2 and its indicators).
    logged = session.exec(select(Erasure)).one()
    assert (logged.rows_erased, logged.releases_rebuilt) == (
        {"basis": 2, "measurement": 1, "quarantine": 2}, "1" + RETIRED_BY_REPAIR,
    )  # fmt: skip
    assert _releases(session) == [(1, True)]
    assert not (warehouse.root / PENDING).exists()
    assert publish_release(warehouse, warehouse.releases_dir, session).release == 2
    session.commit()
    session.close()
    _assert_no_trace(settings.data_dir, key)
    # The other patients' rows stay: b1, b4 and m1 (`_register`).
    assert [warehouse.count(t, warehouse.files(t)) for t in ("basis", "measurement")] == [2, 1]

    again = erase_patients([ERASED], warehouse=warehouse, session=session, key=key,
                           releases_dir=warehouse.releases_dir)  # fmt: skip
    assert (sum(again.rows_erased.values()), again.releases_rebuilt) == (0, "")


@pytest.mark.parametrize("answer", ["duplicate", "rejected"])
def test_a_load_answered_before_the_locks_repairs_an_erasure_killed_before_its_commit(
    answer: str,
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    catalog_engine: Engine,
    key: bytes,
    tmp_path: Path,
) -> None:
    # A duplicate or a rejected file returned before the repair: release 1 stayed served with
    # the erased patient's rows until another writer came (a review found it).
    _published(write_extract, warehouse, session, key)
    extra = write_extract(Form.BASIS, [episode_row(Form.BASIS, 7, "P-KEEP-3")])
    load_ok(extra, Form.BASIS, warehouse, session, key, commit=True)
    _kill_at("before_commit", "erase", ERASED, warehouse=warehouse, engine=catalog_engine,
             key=key, tmp_path=tmp_path)  # fmt: skip
    assert (warehouse.root / PENDING).exists()
    assert _releases(session) == [(1, False)]
    if answer == "rejected":
        extra = write_extract(Form.BASIS, [episode_row(Form.BASIS, 8, "P-8", unit_code=VALID)])
    upload = load_file(extra, Form.BASIS, warehouse=warehouse, session=session, key=key,
                       known_providers=frozenset({PROVIDER_A}))  # fmt: skip
    assert upload.status == answer
    session.expire_all()
    assert _releases(session) == [(1, True)]
    assert not (warehouse.root / PENDING).exists()
    assert len(session.exec(select(Erasure)).all()) == 1
