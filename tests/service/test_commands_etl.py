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
