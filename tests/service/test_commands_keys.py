"""`kvarus keys`: an id outside the catalog's range is a usage error, not a stack trace."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from tests.conftest import TEST_KEY


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "KVARUS_DATA_DIR": str(tmp_path / "var"),
        "KVARUS_PSEUDONYM_KEY": TEST_KEY,
        "COLUMNS": "200",
    }


@pytest.mark.parametrize(
    ("client_id", "message"),
    [
        ("99999999999999999999999", "less than or equal to 9223372036854775807"),
        ("9223372036854775808", "less than or equal to 9223372036854775807"),
        ("0", "greater than or equal to 1"),
    ],
)
def test_revoke_out_of_range_id_is_usage_error(
    env: dict[str, str], client_id: str, message: str
) -> None:
    result = CliRunner().invoke(app, ["keys", "revoke", client_id], env=env)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"Invalid value for 'client_id': Input should be {message}" in result.output


def test_revoke_unknown_and_known_ids(env: dict[str, str]) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["keys", "revoke", "9223372036854775807"], env=env)
    assert missing.exit_code == 1
    assert "no API client with id 9223372036854775807" in missing.output
    created = runner.invoke(app, ["keys", "create", "--role", "researcher"], env=env)
    assert created.exit_code == 0, created.output
    revoked = runner.invoke(app, ["keys", "revoke", "1"], env=env)
    assert revoked.exit_code == 0
    assert revoked.output == "API client 1 revoked\n"
