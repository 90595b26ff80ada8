"""`kvarus erase` and `kvarus load` around an erasure: exit codes and the indicator step."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.forms import Form
from schemas.manifest import ReleaseManifest
from service.cli import app
from tests.conftest import TEST_KEY, ExtractWriter, episode_row


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "KVARUS_DATA_DIR": str(tmp_path / "var"),
        "KVARUS_PSEUDONYM_KEY": TEST_KEY,
        "KVARUS_DATABASE_URL": "",
        "COLUMNS": "200",
    }


def test_erase_without_any_pseudonym_option_is_a_usage_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, ["erase"], env=env)
    assert result.exit_code == 2  # README: 2 usage error
    assert "--pseudonyms-file" in result.output
    # A source that was given but holds no pseudonym is rejected input, as before.
    empty = tmp_path / "optouts.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    result = CliRunner().invoke(app, ["erase", "--pseudonyms-file", str(empty)], env=env)
    assert result.exit_code == 1
    assert "No pseudonym given to erase" in result.output


def test_a_loaded_file_exits_0_with_a_warning_when_the_indicators_fail(
    write_extract: ExtractWriter, env: dict[str, str]
) -> None:
    runner = CliRunner()
    first = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-CLI-1")])
    # A correction of b1 rewrites its file: release 1's file is no longer the table's.
    fixed = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-CLI-1", age="60")])
    for args in (
        ["load", str(first), "--form", "basis"],
        ["release"],
        ["load", str(fixed), "--form", "basis"],
    ):
        assert runner.invoke(app, args, env=env).exit_code == 0
    # Release 1 in service without its results or its files (what an erasure killed while
    # deleting left behind before the fix): computing its indicators fails.
    release = Path(env["KVARUS_DATA_DIR"]) / "releases" / "1"
    (release / "indicators.parquet").unlink()
    for name in ReleaseManifest.read(release / "manifest.json").files("basis"):
        Path(name).unlink()

    second = write_extract(Form.BASIS, [episode_row(Form.BASIS, 2, "P-CLI-2")])
    result = runner.invoke(app, ["load", str(second), "--form", "basis"], env=env)

    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert "upload 3: loaded; read 1, accepted 1" in result.output
    assert "Warning: indicators not computed (IOException)" in result.output
    assert "Traceback" not in result.output
