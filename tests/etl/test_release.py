"""Releases: numbered manifests with exact row counts, readable as plain Parquet, immutable."""

import shutil
from pathlib import Path

import duckdb
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from sqlmodel import Session, col, select

from etl.erasure import erase_patients
from etl.ledger import repair
from etl.release import latest_release, publish_release, read_manifest
from etl.warehouse import Warehouse
from schemas.catalog import Release
from schemas.errors import ConfigurationError, NotFound
from schemas.forms import Form
from tests.conftest import ExtractWriter, episode_row, load_ok


def _count(files: list[str]) -> int:
    if not files:
        return 0
    relation = duckdb.sql(
        "SELECT count(*) FROM read_parquet($f, hive_partitioning=true)", params={"f": files}
    )
    assert relation is not None
    rows = relation.fetchall()
    return int(rows[0][0])


def test_releases_are_numbered_immutable_snapshots(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    assert latest_release(session) is None
    basis = [episode_row(Form.BASIS, n, f"P{n}") for n in (1, 2, 3)]
    load_ok(write_extract(Form.BASIS, basis), Form.BASIS, warehouse, session, key)
    load_ok(
        write_extract(Form.MEASUREMENT, [episode_row(Form.MEASUREMENT, 1, "P1")]),
        Form.MEASUREMENT, warehouse, session, key,
    )  # fmt: skip
    first = publish_release(warehouse, warehouse.releases_dir, session, note="first")
    assert first.release == 1
    assert first.note == "first"
    counts = {name: snap.row_count for name, snap in first.tables.items()}
    assert counts == {"basis": 3, "measurement": 1, "discharge": 0, "followup": 0, "npr_counts": 0}
    assert _count(first.files("basis")) == 3
    assert all(Path(f).is_absolute() and Path(f).exists() for f in first.files("basis"))
    assert (warehouse.releases_dir / "1" / "manifest.json").exists()
    assert read_manifest(warehouse.releases_dir, 1) == first

    # A correction supersedes b1 and adds b4: release 2 sees 4 rows, release 1 still reads 3.
    second_file = [episode_row(Form.BASIS, 1, "P1", age="60"), episode_row(Form.BASIS, 4, "P4")]
    load_ok(write_extract(Form.BASIS, second_file), Form.BASIS, warehouse, session, key)
    second = publish_release(warehouse, warehouse.releases_dir, session)
    assert second.release == 2
    assert second.tables["basis"].row_count == 4
    assert second.tables["basis"].delta_version > first.tables["basis"].delta_version
    assert _count(read_manifest(warehouse.releases_dir, 1).files("basis")) == 3
    assert _count(second.files("basis")) == 4

    latest = latest_release(session)
    assert latest is not None
    assert latest.number == 2
    assert [r.number for r in session.exec(select(Release).order_by(col(Release.number)))] == [1, 2]
    with pytest.raises(NotFound):
        read_manifest(warehouse.releases_dir, 3)


def test_a_release_is_its_file_list_and_its_delta_version_is_informational(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    load_ok(write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-KEEP")]), Form.BASIS,
          warehouse, session, key)  # fmt: skip
    first = publish_release(warehouse, warehouse.releases_dir, session)
    version = first.tables["basis"].delta_version
    assert DeltaTable(str(warehouse.path("basis")), version=version).file_uris() == first.files(
        "basis"
    )
    load_ok(write_extract(Form.BASIS, [episode_row(Form.BASIS, 2, "P-GONE")]), Form.BASIS,
          warehouse, session, key)  # fmt: skip
    erasure = erase_patients(["P-GONE"], warehouse=warehouse, session=session, key=key,
                             releases_dir=warehouse.releases_dir)  # fmt: skip
    assert erasure.releases_rebuilt == ""  # release 1 never held the patient: still served
    # The erasure's log clean-up removed the log entries that version 1 resolved through; the
    # release's own file list still reads its rows.
    with pytest.raises(TableNotFoundError):
        DeltaTable(str(warehouse.path("basis")), version=version)
    assert _count(read_manifest(warehouse.releases_dir, 1).files("basis")) == 1


def test_an_interrupt_as_the_commit_returns_keeps_the_committed_release(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C right after the release row's commit: the release is published, so its
    directory stays (it used to be removed, leaving a served release without its manifest that
    failed every later writer); the next publish is release 2."""
    _load_two(write_extract, warehouse, session, key)
    commit = session.commit

    def commit_then_interrupt() -> None:
        commit()
        monkeypatch.setattr(session, "commit", commit)
        raise KeyboardInterrupt

    monkeypatch.setattr(session, "commit", commit_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        publish_release(warehouse, warehouse.releases_dir, session)
    assert read_manifest(warehouse.releases_dir, 1).release == 1
    assert [r.number for r in session.exec(select(Release)).all()] == [1]
    assert publish_release(warehouse, warehouse.releases_dir, session).release == 2


def test_a_failed_commit_removes_the_release_directory(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _load_two(write_extract, warehouse, session, key)

    def failing_commit() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(session, "commit", failing_commit)
    with pytest.raises(KeyboardInterrupt):
        publish_release(warehouse, warehouse.releases_dir, session)
    monkeypatch.undo()
    assert not (warehouse.releases_dir / "1").exists()
    assert session.exec(select(Release)).all() == []


def test_a_data_directory_copied_elsewhere_refuses_to_write(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes, tmp_path: Path
) -> None:
    """Its catalog's manifests name the original's files: an erasure there deleted the
    original's results and wrote into its warehouse. Every writer's repair refuses first."""
    _load_two(write_extract, warehouse, session, key)
    publish_release(warehouse, warehouse.releases_dir, session)
    copied = tmp_path / "copy"
    shutil.copytree(warehouse.releases_dir.parent, copied)
    elsewhere = Warehouse(copied / warehouse.root.name, copied / warehouse.releases_dir.name)
    with pytest.raises(ConfigurationError, match="copied or moved"):
        repair(session, elsewhere)
    with pytest.raises(ConfigurationError, match="copied or moved"):
        erase_patients(["P1"], warehouse=elsewhere, session=session, key=key,
                       releases_dir=elsewhere.releases_dir)  # fmt: skip
    assert read_manifest(warehouse.releases_dir, 1).tables["basis"].row_count == 2
    repair(session, warehouse)  # where it was made, it writes


def _load_two(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    """Two basis rows (patients P1, P2) loaded."""
    basis = [episode_row(Form.BASIS, n, f"P{n}") for n in (1, 2)]
    load_ok(write_extract(Form.BASIS, basis), Form.BASIS, warehouse, session, key)
