"""A load killed with SIGKILL leaves no trace once repaired; the same file then loads exactly."""

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from etl.ledger import repair
from etl.load import LoadFailed, load_file
from etl.warehouse import QUARANTINE, Warehouse
from schemas.catalog import Upload
from schemas.forms import FORMS, Form
from schemas.organisations import Hierarchy
from service.settings import Settings
from tests.conftest import PROVIDER_A, ExtractWriter, episode_row

KNOWN = frozenset(o.orgnr for o in Hierarchy.default().providers)
TODAY = date(2025, 11, 1)
ROWS = 200_000
INVALID_EVERY = 1000  # every 1000th row has age "x": 200 quarantined rows

# The loading process. `pause` names the progress step at which it stops (it touches
# `signal_file` and sleeps) for the test to kill it there: `written` comes after its Delta writes,
# before the ledger says `loaded`; `staged` comes after the ledger row is committed as `running`,
# before the first Delta write. A hook, not polling: the moment of the kill is deterministic.
CHILD = """
import sys, time
from datetime import date
from pathlib import Path
from sqlalchemy import create_engine
from sqlmodel import Session
from etl.load import LoadFailed, load_file
from etl.warehouse import Warehouse
from schemas.forms import Form
url, search_path, root, path, key, signal_file, pause = sys.argv[1:8]
args = {"options": f"-csearch_path={search_path}"} if search_path else {}
engine = create_engine(url, connect_args=args)
def progress(step: str, rows: int) -> None:
    if step == pause:
        Path(signal_file).touch()
        time.sleep(120)
with Session(engine, expire_on_commit=False) as session:
    load_file(Path(path), Form.BASIS, warehouse=Warehouse(Path(root)), session=session,
              key=key.encode(), known_providers=frozenset({sys.argv[8]}),
              today=date(2025, 11, 1), progress=progress)
    session.commit()
"""


def _big_basis(path: Path) -> None:
    columns = FORMS[Form.BASIS].column_names
    template = episode_row(Form.BASIS, 0, "P")
    with path.open("w", encoding="utf-8") as out:
        out.write(";".join(columns) + "\n")
        for n in range(ROWS):
            row = template | {
                "record_id": f"big{n}",
                "episode_id": f"bige{n}",
                "patient_pseudonym": f"BIG-{n % 50_000}",
                "age": "x" if n % INVALID_EVERY == 0 else str(20 + n % 60),
            }
            out.write(";".join(row.get(c, "") for c in columns) + "\n")


def _counts(warehouse: Warehouse) -> dict[str, int]:
    return {"basis": warehouse.count("basis"), QUARANTINE: warehouse.count(QUARANTINE)}


PAUSE_AT = {"after_writes": "written", "when_running": "staged"}


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["after_writes", "when_running"])
def test_killed_load_is_undone_and_the_file_then_loads_exactly(
    moment: str,
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    catalog_engine: Engine,
    settings: Settings,
    key: bytes,
    tmp_path: Path,
) -> None:
    small = [episode_row(Form.BASIS, 1, "P1"), episode_row(Form.BASIS, 2, "P2", age="x")]
    load_file(
        write_extract(Form.BASIS, small), Form.BASIS, warehouse=warehouse, session=session,
        key=key, known_providers=KNOWN, today=TODAY,
    )  # fmt: skip
    session.commit()
    before = _counts(warehouse)
    assert before == {"basis": 1, QUARANTINE: 1}
    versions_before = warehouse.versions()

    big = tmp_path / "big.csv"
    _big_basis(big)
    search_path = ""
    if catalog_engine.dialect.name == "postgresql":
        with catalog_engine.connect() as connection:
            search_path = str(connection.execute(text("SHOW search_path")).scalar())
    signal_file = tmp_path / "written"
    url = catalog_engine.url.render_as_string(hide_password=False)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, search_path, str(warehouse.root), str(big),
         key.decode(), str(signal_file), PAUSE_AT[moment], PROVIDER_A],
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if signal_file.exists():
                break
            assert child.poll() is None, "the loading process ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the load never reached the moment to kill it")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()

    session.expire_all()
    stuck = session.exec(select(Upload).where(Upload.status == "running")).all()
    assert len(stuck) == 1
    if moment == "after_writes":
        # The kill came after the Delta commits: the tables did change.
        assert warehouse.version("basis") > versions_before["basis"]
        assert warehouse.count("basis") == 1 + ROWS - ROWS // INVALID_EVERY
    else:
        # The kill came while the ledger row was `running`, before any Delta commit.
        assert warehouse.versions() == versions_before

    repaired = repair(session, warehouse)
    assert repaired == [stuck[0].id]
    session.expire_all()
    assert _counts(warehouse) == before
    statuses = [u.status for u in session.exec(select(Upload).order_by(col(Upload.id))).all()]
    assert statuses == ["loaded", "failed"]

    again = load_file(
        big, Form.BASIS, warehouse=warehouse, session=session, key=key, known_providers=KNOWN,
        today=TODAY,
    )  # fmt: skip
    session.commit()
    assert again.status == "loaded"
    assert again.rows_read == ROWS
    assert again.rows_accepted == ROWS - ROWS // INVALID_EVERY
    assert again.rows_quarantined == ROWS // INVALID_EVERY
    assert _counts(warehouse) == {
        "basis": 1 + ROWS - ROWS // INVALID_EVERY,
        QUARANTINE: 1 + ROWS // INVALID_EVERY,
    }
    assert not session.exec(select(Upload).where(Upload.status == "running")).all()


def test_a_load_that_fails_midway_undoes_its_own_commits(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = [episode_row(Form.BASIS, 1, "P1")]
    load_file(
        write_extract(Form.BASIS, first), Form.BASIS, warehouse=warehouse, session=session,
        key=key, known_providers=KNOWN, today=TODAY,
    )  # fmt: skip
    session.commit()

    def broken(self: Warehouse, rows: object, *, upload_id: int | None) -> None:
        raise OSError("disk full")

    # The basis rows are written (a Delta commit), then the quarantine write fails.
    monkeypatch.setattr(Warehouse, "append_quarantine", broken)
    second = [episode_row(Form.BASIS, 2, "P2"), episode_row(Form.BASIS, 3, "P3", age="x")]
    with pytest.raises(LoadFailed, match=r"failed while writing \(OSError\)") as raised:
        load_file(
            write_extract(Form.BASIS, second), Form.BASIS, warehouse=warehouse, session=session,
            key=key, known_providers=KNOWN, today=TODAY,
        )  # fmt: skip
    assert "disk full" not in raised.value.detail  # an engine's message may quote values
    assert raised.value.__cause__ is None
    assert warehouse.table(Form.BASIS).column("record_id").to_pylist() == ["b1"]
    uploads = session.exec(select(Upload).order_by(col(Upload.id))).all()
    assert [(u.status, u.rows_accepted) for u in uploads] == [("loaded", 1), ("failed", 0)]
    assert uploads[1].error == raised.value.detail
