"""`kvarus report UPLOAD_ID`: the stored quality report of an upload, or why it has none."""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select
from typer.testing import CliRunner, Result

from etl.privacy import is_identity_number
from schemas.catalog import ValidationRun
from schemas.forms import Form
from service.cli import app
from service.database import make_engine
from service.settings import Settings
from tests.conftest import ExtractWriter, episode_row
from tests.service.conftest import Headers
from validation.report import render_text

# Valid check digits, worked by hand in tests/etl/test_privacy.py.
IDENTITY_NUMBER = "01010750160"
# The ledger keeps the file's name as given: Rich would read the brackets as a style.
NAME = "basis[1].csv"
HEADING = (
    f"upload 1: form basis, status loaded, file {NAME}; read 2, accepted 1, quarantined 1, "
    "superseded 0"
)
# b2's age is no number: an `error` check, so the row is quarantined and the file accepted.
AGE_TYPE = "failed         error   age.type: 1 (50.00 %, tolerated 0 %) record ids: b2"


def _kvarus(args: list[str], env: dict[str, str]) -> Result:
    result = CliRunner().invoke(app, args, env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def _load(path: Path, env: dict[str, str]) -> str:
    return _kvarus(["load", str(path), "--form", "basis"], env).output


@pytest.fixture
def quarantined(write_extract: ExtractWriter, env: dict[str, str]) -> Path:
    """Upload 1: two rows, b2 quarantined."""
    rows = [
        episode_row(Form.BASIS, 1, "P-REPORT-1"),
        episode_row(Form.BASIS, 2, "P-REPORT-2", age="x"),
    ]
    path = write_extract(Form.BASIS, rows, name=NAME)
    assert "upload 1: loaded; read 2, accepted 1, quarantined 1" in _load(path, env)
    return path


def _stored_report(settings: Settings, upload_id: int) -> dict[str, object]:
    engine = make_engine(settings)
    try:
        with Session(engine) as session:
            runs = session.exec(
                select(ValidationRun).where(col(ValidationRun.upload_id) == upload_id)
            ).all()
            assert len(runs) == 1
            return runs[0].report
    finally:
        engine.dispose()


def test_the_text_report_names_the_upload_the_failing_check_and_the_record(
    quarantined: Path, env: dict[str, str], settings: Settings
) -> None:
    result = _kvarus(["report", "1"], env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == HEADING
    assert lines[1].startswith("Form basis, 2 rows, suite v1-")
    assert lines[1].endswith(": accepted; 1 row(s) to quarantine")
    assert f"  {AGE_TYPE}" in lines
    # The heading, then the renderer's text of the stored report, and nothing else.
    assert result.output == f"{HEADING}\n{render_text(_stored_report(settings, 1))}"
    assert "P-REPORT" not in result.output  # pseudonyms are never in a report


def test_the_json_report_is_the_stored_report(
    quarantined: Path, env: dict[str, str], settings: Settings
) -> None:
    result = _kvarus(["report", "1", "--format", "json"], env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report == _stored_report(settings, 1)
    assert report["quarantined_rows"] == 1
    (age_type,) = [c for c in report["checks"] if c["check_id"] == "age.type"]
    assert age_type["failing_record_ids"] == ["b2"]
    assert "upload 1:" not in result.output  # the heading is the text format's only


def test_the_html_report_is_written_to_out(
    quarantined: Path, env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "reports[1]" / "report.html"  # created, and printed as it is
    result = _kvarus(["report", "1", "--format", "html", "--out", str(out)], env)
    assert result.exit_code == 0, result.output
    assert result.output == f"Report written to {out}\n"
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "age.type" in html
    assert "b2" in html
    assert "P-REPORT" not in html


def test_the_text_report_written_to_out_keeps_its_heading(
    quarantined: Path, env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "report.txt"
    result = _kvarus(["report", "1", "--out", str(out)], env)
    assert result.exit_code == 0, result.output
    assert result.output == f"Report written to {out}\n"
    text = out.read_text(encoding="utf-8")
    assert text.splitlines()[0] == HEADING
    assert f"  {AGE_TYPE}\n" in text


@pytest.mark.parametrize("upload_id", ["2", "0", "99999999999999999999999"])
def test_an_unknown_upload_is_not_found_in_one_line(
    quarantined: Path, env: dict[str, str], upload_id: str
) -> None:
    result = _kvarus(["report", upload_id], env)
    assert result.exit_code == 1
    # The id is not echoed: an identity number without its leading zero fits an int.
    assert result.output == "Not found: no upload with this id\n"


def test_an_empty_catalog_has_no_upload(env: dict[str, str]) -> None:
    result = _kvarus(["report", "1"], env)
    assert result.exit_code == 1
    assert result.output == "Not found: no upload with this id\n"


def test_a_duplicate_has_no_report_and_names_the_upload_that_loaded_the_file(
    quarantined: Path, env: dict[str, str], tmp_path: Path
) -> None:
    assert "upload 2: duplicate" in _load(quarantined, env)
    out = tmp_path / "report.txt"
    result = _kvarus(["report", "2", "--out", str(out)], env)
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"upload 2: form basis, status duplicate, file {NAME}; read 0, accepted 0, "
        "quarantined 0, superseded 0\n"
        "No quality report: a duplicate is not validated again; the same file was loaded as "
        "upload 1\n"
        f"Nothing written to {out}\n"
    )
    assert not out.exists()


def test_as_json_an_upload_without_a_report_is_json_naming_why(
    quarantined: Path, env: dict[str, str], tmp_path: Path
) -> None:
    # A script that asks for JSON got the text lines (and, with --out, no file).
    _load(quarantined, env)
    expected = {
        "upload_id": 2,
        "form": "basis",
        "status": "duplicate",
        "error": None,
        "report": None,
        "reason": "No quality report: a duplicate is not validated again; the same file was "
        "loaded as upload 1",
    }
    result = _kvarus(["report", "2", "--format", "json"], env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == expected
    out = tmp_path / "report.json"
    written = _kvarus(["report", "2", "--format", "json", "--out", str(out)], env)
    assert written.exit_code == 0, written.output
    assert written.output == f"Report written to {out}\n"
    assert json.loads(out.read_text(encoding="utf-8")) == expected


def test_a_file_the_guard_rejected_has_its_error_and_no_report(
    write_extract: ExtractWriter, env: dict[str, str]
) -> None:
    assert is_identity_number(IDENTITY_NUMBER)
    rows = [episode_row(Form.BASIS, 1, "P-1", record_id=IDENTITY_NUMBER)]
    path = write_extract(Form.BASIS, rows, name="basis.csv")
    assert "Rejected:" in _load(path, env)
    result = _kvarus(["report", "1"], env)
    assert result.exit_code == 0, result.output
    assert result.output == (
        "upload 1: form basis, status rejected, file basis.csv; read 1, accepted 0, "
        "quarantined 0, superseded 0\n"
        "Error: Values that look like national identity numbers (11 digits, or 6 and 5 with up "
        "to three spaces, dots, hyphens or dashes between them; valid check digits) in column "
        "'record_id' (1); the file is rejected whole\n"
        "No quality report: the upload was rejected before a report was stored\n"
    )
    assert IDENTITY_NUMBER not in result.output


def test_a_file_with_a_column_not_in_the_form_has_its_error_and_no_report(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # The reader refuses it before validation: the column's cells are never read into a report.
    row = episode_row(Form.BASIS, 1, "P-1")
    path = tmp_path / "extra.csv"
    path.write_text(
        ";".join([*row, "extra"]) + "\n" + ";".join([*row.values(), "1"]) + "\n",
        encoding="utf-8",
    )
    assert "Rejected:" in _load(path, env)
    result = _kvarus(["report", "1"], env)
    assert result.exit_code == 0, result.output
    assert result.output == (
        "upload 1: form basis, status rejected, file extra.csv; read 0, accepted 0, "
        "quarantined 0, superseded 0\n"
        "Error: Column(s) not part of form 'basis': 'extra'; an unexpected column may carry "
        "identifying data, so the file is rejected whole\n"
        "No quality report: the upload was rejected before a report was stored\n"
    )


def test_a_file_a_fatal_check_rejected_has_its_report(
    write_extract: ExtractWriter, env: dict[str, str]
) -> None:
    # Two rows with one record_id: `record_id.unique` is fatal, so the whole file is rejected.
    rows = [episode_row(Form.BASIS, 1, "P-1"), episode_row(Form.BASIS, 2, "P-2", record_id="b1")]
    path = write_extract(Form.BASIS, rows, name="basis.csv")
    assert "Rejected:" in _load(path, env)
    result = _kvarus(["report", "1"], env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "upload 1: form basis, status rejected, file basis.csv; read 2, accepted 0, "
        "quarantined 0, superseded 0"
    )
    assert lines[1].endswith(": REJECTED; 0 row(s) to quarantine")
    assert "  rejected: record_id.unique: 2 of 2 rows failed (tolerated 0 %)" in lines
    assert "No quality report" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["report", "1", "--format", "xml"],
        ["report", "one"],
        ["report"],
    ],
)
def test_usage_errors_exit_2(quarantined: Path, env: dict[str, str], args: list[str]) -> None:
    result = _kvarus(args, env)
    assert result.exit_code == 2


def test_an_unwritable_out_is_a_usage_error_before_anything_is_read(
    quarantined: Path, env: dict[str, str]
) -> None:
    # Its directory is a file: the output path is checked before the catalog is opened.
    out = quarantined / "report.txt"
    result = _kvarus(["report", "1", "--out", str(out)], env)
    assert result.exit_code == 2
    assert "is not a directory" in result.output
    assert not out.exists()


def test_the_ledger_row_of_an_api_upload_is_reported_and_names_its_request(
    client: TestClient,
    headers: dict[str, Headers],
    write_extract: ExtractWriter,
    env: dict[str, str],
) -> None:
    # The API serves only the request row (upload 1); the CLI, which lists the whole ledger
    # (`kvarus uploads`), reports the ledger row its job created (upload 2) and names the request.
    path = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-API-1")], name="basis.csv")
    answer = client.post(
        "/api/v1/uploads",
        files={"file": ("basis.csv", path.read_bytes(), "text/csv")},
        data={"form": "basis"},
        headers=headers["registry"],
    )
    assert answer.status_code == 202
    assert answer.json()["id"] == 1
    assert client.get("/api/v1/uploads/2", headers=headers["registry"]).status_code == 404
    result = _kvarus(["report", "2"], env)
    assert result.exit_code == 0, result.output
    heading, note = result.output.splitlines()[:2]
    assert heading.startswith("upload 2: form basis, status loaded, file upload.csv;")
    assert note == "loaded for API upload 1 (the row the API serves)"
    request = _kvarus(["report", "1"], env)
    assert request.exit_code == 0, request.output
    assert request.output.startswith("upload 1: form basis, status loaded, file basis.csv;")
