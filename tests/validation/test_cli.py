"""`kvarus validate FILE --form F`: the report in each format, exit 0 accepted / 1 rejected."""

import json
from pathlib import Path

from typer.testing import CliRunner

from schemas.forms import FORMS, Form
from service.cli import app
from tests.validation.conftest import CLEAN


def _write_basis(path: Path, rows: list[dict[str, str | None]]) -> Path:
    names = FORMS[Form.BASIS].column_names
    lines = [";".join(names)]
    for i, row in enumerate(rows, start=1):
        values = {"record_id": f"r{i}", **CLEAN[Form.BASIS], **row}
        lines.append(";".join(values[name] or "" for name in names))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_html_report_to_a_file_and_exit_0(tmp_path: Path) -> None:
    # A clean row and one with an age out of range (a row for quarantine, not a rejection).
    source = _write_basis(tmp_path / "basis.csv", [{}, {"age": "111"}])
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        app, ["validate", str(source), "--form", "basis", "--format", "html", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "age.range" in html
    assert "111" not in html


def test_text_report_on_stdout(tmp_path: Path) -> None:
    source = _write_basis(tmp_path / "basis.csv", [{}, {"sex": "4"}])
    result = CliRunner().invoke(app, ["validate", str(source), "--form", "basis"])
    assert result.exit_code == 0, result.output
    assert "accepted; 1 row(s) to quarantine" in result.output
    assert "sex.codes: 1 (50.00 %, tolerated 0 %) record ids: r2" in result.output


def test_a_fatal_check_exits_1_with_the_reason(tmp_path: Path) -> None:
    source = _write_basis(tmp_path / "basis.csv", [{}, {"record_id": "r1"}])
    result = CliRunner().invoke(
        app, ["validate", str(source), "--form", "basis", "--format", "json"]
    )
    assert result.exit_code == 1
    assert "Rejected: record_id.unique: 2 of 2 rows failed (tolerated 0 %)" in result.output
    report = json.loads(result.output[: result.output.rindex("}") + 1])
    assert report["rejected"] is True


def test_an_unreadable_file_exits_1(tmp_path: Path) -> None:
    empty = tmp_path / "basis.csv"
    empty.write_text("", encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(empty), "--form", "basis"])
    assert result.exit_code == 1
    assert "Input rejected" in result.output
