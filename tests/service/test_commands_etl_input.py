"""`kvarus load` and `kvarus erase` on bad input: usage errors (exit 2) with a clear message, and
what the ledger keeps of a file name that hides an identity number."""

from pathlib import Path

import openpyxl
import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from schemas.catalog import Erasure, Upload
from schemas.forms import Form
from service.cli import app
from service.database import make_engine
from service.settings import Settings
from service.uploads import NAME_WITHHELD
from tests.conftest import TEST_KEY, ExtractWriter, episode_row


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "KVARUS_DATA_DIR": str(tmp_path / "var"),
        "KVARUS_PSEUDONYM_KEY": TEST_KEY,
        "KVARUS_DATABASE_URL": "",
        "COLUMNS": "200",  # one line per message
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def _ledger() -> list[tuple[str, str, int]]:
    with Session(make_engine(Settings())) as session:
        rows = session.exec(select(Upload).order_by(Upload.id)).all()  # type: ignore[arg-type]
        return [(u.filename, u.status, u.rows_accepted) for u in rows]


def test_erase_with_an_impossible_date_is_a_usage_error(env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app, ["erase", "--pseudonym", "P-1", "--optout-date", "2024-13-01"], env=env
    )
    assert result.exit_code == 2
    assert "Invalid value for '--optout-date'" in result.output
    assert "'2024-13-01' does not match the formats '%Y-%m-%d', '%d.%m.%Y'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("written", ["2024-02-29", "29.02.2024"])
def test_erase_with_a_valid_date_records_it(
    env: dict[str, str], write_extract: ExtractWriter, written: str
) -> None:
    """In either of the extracts' date formats."""
    rows = [episode_row(Form.BASIS, 1, "P-1")]
    loaded = CliRunner().invoke(
        app, ["load", str(write_extract(Form.BASIS, rows)), "--form", "basis"], env=env
    )
    assert loaded.exit_code == 0, loaded.output
    result = CliRunner().invoke(
        app, ["erase", "--pseudonym", "P-1", "--optout-date", written], env=env
    )
    assert result.exit_code == 0, result.output
    assert "erased 1 rows of 1 patient(s)" in result.output
    with Session(make_engine(Settings())) as session:
        [erasure] = session.exec(select(Erasure)).all()
    assert erasure.optout_date is not None
    assert erasure.optout_date.isoformat()[:10] == "2024-02-29"


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_load_of_a_missing_file_or_a_directory_is_a_usage_error(
    env: dict[str, str], tmp_path: Path, kind: str
) -> None:
    target = tmp_path / "nonexistent.csv" if kind == "missing" else tmp_path
    result = CliRunner().invoke(app, ["load", str(target), "--form", "basis"], env=env)
    assert result.exit_code == 2
    expected = "does not exist" if kind == "missing" else "is a directory"
    assert f"Invalid value for 'file': file '{target}' {expected}" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    "name",
    [
        "010190_00083.csv",  # 01019000083: valid check digits (tests/service/test_uploads.py)
        "010190\u200b00083.csv",
        "01.01.90 00083.csv",
    ],
)
def test_load_withholds_a_name_hiding_an_identity_number(
    env: dict[str, str], write_extract: ExtractWriter, name: str
) -> None:
    path = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-1")], name=name)
    result = CliRunner().invoke(app, ["load", str(path), "--form", "basis"], env=env)
    assert result.exit_code == 0, result.output
    assert "upload 1: loaded; read 1, accepted 1" in result.output
    assert _ledger() == [(f"{NAME_WITHHELD}.csv", "loaded", 1)]
    assert path.exists()  # the extract itself is left alone


def test_load_keeps_an_ordinary_name(env: dict[str, str], write_extract: ExtractWriter) -> None:
    path = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-1")], name="basis_2024.csv")
    result = CliRunner().invoke(app, ["load", str(path), "--form", "basis"], env=env)
    assert result.exit_code == 0, result.output
    assert _ledger() == [("basis_2024.csv", "loaded", 1)]


def test_load_of_a_workbook_says_which_other_sheet_was_not_read(
    env: dict[str, str], tmp_path: Path
) -> None:
    # EXTRACT_SPEC: "XLSX: first sheet". Its rows are loaded; a value on another sheet is named
    # by the sheet's position (never its title or values) beside the verdict.
    row = episode_row(Form.BASIS, 1, "P-1")
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(list(row))
    sheet.append(list(row.values()))
    workbook.create_sheet("Ola Nordmann")["B2"] = "Eksportert 2024-03-02"
    workbook.save(tmp_path / "basis.xlsx")
    result = CliRunner().invoke(
        app, ["load", str(tmp_path / "basis.xlsx"), "--form", "basis"], env=env
    )
    assert result.exit_code == 0, result.output
    assert (
        "Note: Sheet 2 of the workbook holds data and was not read: an extract is read from the "
        "first sheet only"
    ) in result.output
    assert "Nordmann" not in result.output
    assert "Eksportert" not in result.output
    assert _ledger() == [("basis.xlsx", "loaded", 1)]
