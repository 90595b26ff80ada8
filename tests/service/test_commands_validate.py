"""`kvarus validate`: the privacy guard of `kvarus load` runs first, so that no report (which names
failing rows by record id) can print a value that looks like an identity number."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.forms import Form
from service.cli import app
from tests.conftest import ExtractWriter, episode_row

# 01019000083: valid check digits (tests/service/test_uploads.py).
IDENTITY_NUMBER = "01019000083"


@pytest.mark.parametrize("output_format", ["text", "json", "html"])
@pytest.mark.parametrize("to_file", [False, True])
def test_validate_rejects_an_identity_number_as_load_does_without_printing_it(
    env: dict[str, str],
    tmp_path: Path,
    write_extract: ExtractWriter,
    output_format: str,
    to_file: bool,
) -> None:
    # The number is the record_id of a row failing a check (an impossible intake date): without
    # the guard, the report would list it among the failing record ids.
    rows = [
        episode_row(Form.BASIS, 1, "P-1", record_id=IDENTITY_NUMBER, intake_date="99.99.2024"),
        episode_row(Form.BASIS, 2, "P-2"),
    ]
    extract = str(write_extract(Form.BASIS, rows))
    out = tmp_path / "reports" / f"report.{output_format}"
    args = ["validate", extract, "--form", "basis", "--format", output_format]
    result = CliRunner().invoke(app, args + (["--out", str(out)] if to_file else []), env=env)
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output == (
        "Input rejected: possible direct identifier: Values that look like national identity "
        "numbers (11 digits, or 6 and 5 with up to three spaces, dots, hyphens or dashes between "
        "them; valid check digits) in column 'record_id' (1); the file is rejected whole\n"
    )
    assert IDENTITY_NUMBER not in result.output
    assert not out.exists()
