"""`kvarus keys`: an id outside the catalog's range, a name holding an identity number and a
provider that does not fit the role are usage errors, not a stack trace or a stored value."""

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
        ("99999999999999999999999", "less than or equal to 2147483647"),
        ("9223372036854775808", "less than or equal to 2147483647"),
        ("2147483648", "less than or equal to 2147483647"),
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
    missing = runner.invoke(app, ["keys", "revoke", "2147483647"], env=env)
    assert missing.exit_code == 1
    assert "no API client with id 2147483647" in missing.output
    created = runner.invoke(app, ["keys", "create", "--role", "researcher"], env=env)
    assert created.exit_code == 0, created.output
    revoked = runner.invoke(app, ["keys", "revoke", "1"], env=env)
    assert revoked.exit_code == 0
    assert revoked.output == "API client 1 revoked\n"


def _said(output: str) -> str:
    """The output with the usage-error box's borders and line breaks taken out."""
    return " ".join(output.replace("│", " ").split())


@pytest.mark.parametrize(
    "name",
    [
        "01019000083",  # valid check digits (tests/service/test_uploads.py)
        "Ola 010190-00083",
        "key for 010190 00083",
        "０１０１９００００８３",  # full-width digits
    ],
)
def test_create_refuses_a_name_holding_an_identity_number_without_storing_or_echoing_it(
    env: dict[str, str], name: str
) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["keys", "create", "--role", "registry", "--name", name], env=env)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert (
        "Invalid value for '--name': it looks like it holds a national identity number: name "
        "the holder otherwise (a system, a unit, a role)"
    ) in _said(result.output)
    assert "00083" not in result.output
    assert "００８３" not in result.output
    listed = runner.invoke(app, ["keys", "list"], env=env)
    assert listed.exit_code == 0
    assert listed.output == ""  # nothing stored


def test_create_keeps_an_ordinary_name(env: dict[str, str]) -> None:
    runner = CliRunner()
    args = ["keys", "create", "--role", "researcher", "--name", "Studie 2024-0042"]
    assert runner.invoke(app, args, env=env).exit_code == 0
    listed = runner.invoke(app, ["keys", "list"], env=env)
    assert listed.output.rstrip("\n").split("\t")[2:] == ["researcher", "-", "active", args[-1]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--role", "trust"],
            "Invalid value for '--provider': a trust key needs --provider with its organisation "
            "number",
        ),
        (
            ["--role", "trust", "--provider", "983974881"],  # a wrong check digit
            "Invalid value for '--provider': a trust key needs --provider with a valid "
            "organisation number",
        ),
        (
            ["--role", "researcher", "--provider", "983974678"],
            "Invalid value for '--provider': only trust keys are scoped to a provider",
        ),
    ],
)
def test_create_with_a_missing_or_unfit_provider_is_a_usage_error(
    env: dict[str, str], args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["keys", "create", *args], env=env)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert message in _said(result.output)


def test_revoking_a_revoked_key_says_it_was_already_revoked(env: dict[str, str]) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["keys", "create", "--role", "researcher"], env=env).exit_code == 0
    first = runner.invoke(app, ["keys", "revoke", "1"], env=env)
    assert (first.exit_code, first.output) == (0, "API client 1 revoked\n")
    again = runner.invoke(app, ["keys", "revoke", "1"], env=env)
    assert (again.exit_code, again.output) == (
        0,
        "API client 1 was already revoked; nothing changed\n",
    )
