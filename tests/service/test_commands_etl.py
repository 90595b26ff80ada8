"""`kvarus load`, `release`, `erase` from the command line."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.forms import Form
from service.cli import app
from tests.conftest import TEST_KEY, ExtractWriter, episode_row

ERASED = "P-ERASE-CLI-4711"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "KVARUS_DATA_DIR": str(tmp_path / "var"),
        "KVARUS_PSEUDONYM_KEY": TEST_KEY,
        "KVARUS_DATABASE_URL": "",
    }


def _invoke(args: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    result = CliRunner().invoke(app, args, env=env, input=stdin)
    assert result.exit_code == 0, result.output
    return result.output


def _load_and_release(write_extract: ExtractWriter, env: dict[str, str]) -> Path:
    rows = [episode_row(Form.BASIS, n, p) for n, p in enumerate(("P-KEEP-1", ERASED), start=1)]
    _invoke(["load", str(write_extract(Form.BASIS, rows)), "--form", "basis"], env)
    _invoke(["release"], env)
    return Path(env["KVARUS_DATA_DIR"]) / "releases"


def test_the_release_rebuilt_after_an_erasure_has_indicators(
    write_extract: ExtractWriter, env: dict[str, str]
) -> None:
    releases = _load_and_release(write_extract, env)
    output = _invoke(["erase", "--pseudonym", ERASED], env)
    assert "releases retired and rebuilt: 1->2" in output
    assert (releases / "2" / "indicators.parquet").exists()
    assert not (releases / "1" / "indicators.parquet").exists()  # retired with its results
    assert ERASED not in output


def test_erase_reads_pseudonyms_from_a_file_or_stdin(
    write_extract: ExtractWriter, env: dict[str, str], tmp_path: Path
) -> None:
    rows = [episode_row(Form.BASIS, n, f"P-CLI-{n}") for n in (1, 2, 3)]
    _invoke(["load", str(write_extract(Form.BASIS, rows)), "--form", "basis"], env)
    listing = tmp_path / "optouts.txt"
    listing.write_text("P-CLI-1\n\n  P-CLI-2  \n", encoding="utf-8")
    output = _invoke(["erase", "--pseudonyms-file", str(listing)], env)
    assert "erased 2 rows of 2 patient(s)" in output
    output = _invoke(["erase", "--stdin"], env, stdin="P-CLI-3\n")
    assert "erased 1 rows of 1 patient(s)" in output
    # The option's value is stripped too: " P-CLI-4 " erased nobody, and said so in passing.
    rows = [episode_row(Form.BASIS, 4, "P-CLI-4")]
    _invoke(["load", str(write_extract(Form.BASIS, rows)), "--form", "basis"], env)
    output = _invoke(["erase", "--pseudonym", " P-CLI-4 "], env)
    assert "erased 1 rows of 1 patient(s)" in output
    assert "P-CLI" not in output
    result = CliRunner().invoke(app, ["erase"], env=env)
    assert result.exit_code == 2  # a usage error: no pseudonym option given


def test_erase_help_says_the_file_and_stdin_forms_keep_pseudonyms_out_of_history() -> None:
    result = CliRunner().invoke(app, ["erase", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--pseudonyms-file" in result.output
    assert "--stdin" in result.output
    assert "shell history" in " ".join(result.output.split())
