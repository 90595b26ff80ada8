"""Upload files left behind in `data_dir/incoming` are swept."""

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from etl.ledger import STALE_INCOMING, sweep_incoming

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _file(path: Path, age: timedelta) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("record_id;patient_pseudonym\nr1;P-SENTINEL\n", encoding="utf-8")
    moment = (NOW - age).timestamp()
    os.utime(path, (moment, moment))
    return path


def test_stale_upload_files_are_deleted_and_fresh_ones_kept(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    stale = _file(incoming / "tmpa.csv", STALE_INCOMING + timedelta(minutes=1))
    fresh = _file(incoming / "tmpb.csv", timedelta(minutes=5))
    outside = _file(tmp_path / "releases" / "old.csv", timedelta(days=3))
    assert sweep_incoming(tmp_path, now=NOW) == [stale]
    assert not stale.exists()
    assert fresh.exists()
    assert outside.exists()  # only the incoming folder is swept


def test_at_start_up_every_upload_file_is_deleted(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    files = [_file(incoming / f"tmp{n}.xlsx", timedelta(seconds=n)) for n in range(3)]
    assert sweep_incoming(tmp_path, older_than=None, now=NOW) == sorted(files)
    assert list(incoming.iterdir()) == []


def test_no_incoming_folder_is_nothing_to_do(tmp_path: Path) -> None:
    assert sweep_incoming(tmp_path) == []
