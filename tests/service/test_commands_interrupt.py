"""Ctrl-C: a load stopped says that nothing was stored (exit 130); an erasure is never stopped
halfway: SIGINT waits until it is done (its releases retired and replaced), then exits 130."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import Session, col, select
from typer.testing import CliRunner

import etl.load
from etl.erasure import PENDING
from etl.warehouse import Warehouse
from schemas.catalog import Erasure, Release, Upload
from schemas.forms import Form
from service.cli import app
from service.commands import etl as etl_command
from service.database import make_engine
from service.settings import Settings
from tests.conftest import TEST_KEY, ExtractWriter, episode_row

ERASED = "P-SIGINT-ERASED-31"

# `kvarus erase --stdin`, paused after its first table's delete (before its catalog commit) until
# the test has sent SIGINT and touched `go`: a hook, not a sleep, so the moment is deterministic.
CHILD = """
import sys, time
from pathlib import Path
from etl.warehouse import Warehouse
paused, go = Path(sys.argv[1]), Path(sys.argv[2])
delete = Warehouse.delete_patients
def pausing(self, table, keys):
    erased = delete(self, table, keys)
    if not paused.exists():
        paused.touch()
        while not go.exists():
            time.sleep(0.02)
    return erased
Warehouse.delete_patients = pausing
from service.cli import app
app(["erase", "--stdin"], prog_name="kvarus")
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "KVARUS_DATA_DIR": str(tmp_path / "var"),
        "KVARUS_PSEUDONYM_KEY": TEST_KEY,
        "KVARUS_DATABASE_URL": "",
        "COLUMNS": "200",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)  # for the test's own Settings() too
    return values


def _load(write_extract: ExtractWriter, env: dict[str, str]) -> str:
    rows = [episode_row(Form.BASIS, 1, "P-SIGINT-KEEP"), episode_row(Form.BASIS, 2, ERASED)]
    result = CliRunner().invoke(
        app, ["load", str(write_extract(Form.BASIS, rows)), "--form", "basis"], env=env
    )
    assert "Traceback" not in result.output
    output = result.output.lstrip("\n")  # the spinner's line, cleared
    return output if result.exit_code == 0 else f"exit {result.exit_code}: {output}"


def _basis_rows() -> int:
    config = Settings()
    warehouse = Warehouse(config.warehouse_dir, config.releases_dir)
    if not warehouse.path(Form.BASIS.value).exists():  # never written to
        return 0
    return warehouse.table(Form.BASIS).num_rows


@pytest.mark.parametrize("stage", ["validating", "writing"])
def test_a_load_stopped_by_ctrl_c_says_nothing_was_stored(
    env: dict[str, str],
    write_extract: ExtractWriter,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
) -> None:
    def interrupt(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    if stage == "validating":
        monkeypatch.setattr(etl.load, "validate_extract", interrupt)
    else:
        monkeypatch.setattr(Warehouse, "append_quarantine", interrupt)  # after the rows' write
    assert _load(write_extract, env) == "exit 130: Interrupted: nothing was stored\n"
    assert _basis_rows() == 0
    with Session(make_engine(Settings())) as session:
        statuses = [u.status for u in session.exec(select(Upload))]
    assert statuses == ([] if stage == "validating" else ["failed"])


@pytest.mark.parametrize(
    ("status", "said", "stored"),
    [
        # Ctrl-C as the final commit returns: the load stands and is said to (it was "nothing
        # was stored").
        ("loaded", "exit 130: Interrupted: upload 1 was loaded\n", (2, "loaded")),
        # As the `running` row's commit returns: undone at once (the row used to stay `running`
        # until the next writer's repair).
        ("running", "exit 130: Interrupted: nothing was stored\n", (0, "failed")),
    ],
)
def test_a_load_stopped_as_a_commit_returns_says_what_stands(
    env: dict[str, str],
    write_extract: ExtractWriter,
    monkeypatch: pytest.MonkeyPatch,
    status: str,
    said: str,
    stored: tuple[int, str],
) -> None:
    commit = Session.commit
    interrupted: list[bool] = []

    def commit_then_interrupt(self: Session) -> None:
        held = [*self.new, *self.identity_map.values()]
        uploads = [o for o in held if isinstance(o, Upload)]
        commit(self)
        if not interrupted and any(u.status == status for u in uploads):
            interrupted.append(True)
            raise KeyboardInterrupt

    monkeypatch.setattr(Session, "commit", commit_then_interrupt)
    assert _load(write_extract, env) == said
    monkeypatch.setattr(Session, "commit", commit)
    with Session(make_engine(Settings())) as session:
        statuses = [u.status for u in session.exec(select(Upload))]
    assert (_basis_rows(), statuses) == (stored[0], [stored[1]])


def test_a_load_stopped_while_computing_indicators_says_the_file_was_loaded(
    env: dict[str, str], write_extract: ExtractWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*_: object, **__: object) -> list[int]:
        raise KeyboardInterrupt

    monkeypatch.setattr(etl_command, "ensure_indicators", interrupt)
    assert _load(write_extract, env) == (
        "exit 130: upload 1: loaded; read 2, accepted 2, quarantined 0, superseded 0, erased 0\n"
        "Interrupted: indicators not computed; the next load, erase or release computes them\n"
    )
    assert _basis_rows() == 2


def test_erase_stopped_while_reading_its_pseudonyms_erased_nothing(
    env: dict[str, str], write_extract: ExtractWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    _load(write_extract, env)

    def interrupt(*_: object) -> list[str]:
        raise KeyboardInterrupt

    monkeypatch.setattr(etl_command, "_lines", interrupt)  # Ctrl-C while typing them
    result = CliRunner().invoke(app, ["erase", "--stdin"], env=env, input=f"{ERASED}\n")
    assert result.exit_code == 130
    assert result.output == "Interrupted: nothing was erased\n"
    assert _basis_rows() == 2


def test_sigint_during_an_erasure_waits_until_it_is_done(
    env: dict[str, str], write_extract: ExtractWriter, tmp_path: Path
) -> None:
    _load(write_extract, env)
    published = CliRunner().invoke(app, ["release"], env=env)
    assert published.exit_code == 0, published.output
    paused, go = tmp_path / "paused", tmp_path / "go"
    listing = tmp_path / "optouts.txt"
    listing.write_text(f"{ERASED}\n", encoding="utf-8")
    with listing.open("rb") as stdin:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(paused), str(go)],
            env=os.environ | env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
    try:
        deadline = time.monotonic() + 120
        while not paused.exists():
            assert child.poll() is None, child.communicate()[1].decode()
            assert time.monotonic() < deadline, "the erasure never began deleting"
            time.sleep(0.02)
        child.send_signal(signal.SIGINT)  # between its deletes and its catalog commit
        time.sleep(0.2)  # the signal is handled at once (the child is polling for `go`)
        go.touch()
        stdout, stderr = child.communicate(timeout=120)
    finally:
        child.kill()
        child.wait()

    assert child.returncode == 130, stderr.decode()
    assert stdout.decode() == "erased 1 rows of 1 patient(s)\nreleases retired and rebuilt: 1->2\n"
    assert stderr.decode() == (
        "Finishing the erasure first: it cannot be left half done\n"
        "Interrupted after the erasure finished: the patients are erased from the tables and the "
        "releases served; the next load, erase or release computes any indicators missing\n"
    )
    with Session(make_engine(Settings())) as session:
        releases = session.exec(select(Release).order_by(col(Release.number))).all()
        assert [(r.number, r.retired) for r in releases] == [(1, True), (2, False)]
        assert sum(session.exec(select(Erasure)).one().rows_erased.values()) == 1
    config = Settings()
    assert not (config.warehouse_dir / PENDING).exists()  # its files purged too
    basis = Warehouse(config.warehouse_dir, config.releases_dir).table(Form.BASIS)
    assert basis.num_rows == 1
    assert ERASED not in stdout.decode() + stderr.decode()
