"""Free text a user stores and others are shown later (`kvarus load --uploaded-by`, `kvarus
release --note`, `POST /api/v1/releases`'s `note`) is refused, never stored nor echoed, when it
looks like it holds a national identity number; ordinary text with digits is kept.

01019000083 passes both check digits (`etl.privacy.is_identity_number`); 12345678901 fails them.
"""

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlmodel import select
from typer.testing import CliRunner, Result

from etl.privacy import is_identity_number
from schemas.catalog import Release, Upload
from schemas.forms import Form
from service.cli import app
from service.database import make_engine, session_scope
from service.settings import Settings
from tests.conftest import TEST_KEY, ExtractWriter, episode_row
from tests.service.conftest import Headers

API = "/api/v1"
# The shapes the privacy guard refuses a file for: inside text, "DDMMYY-NNNNN", "DDMMYY NNNNN",
# full-width digits.
HOLDING = [
    "Ola Nordmann 01019000083",
    "pasient 010190-00083",
    "010190 00083",
    "０１０１９００００８３",
]
# Digits that are no identity number: 12345678901 fails the check digits.
ORDINARY = "Q3 2024 release 12345678901"


def _said(output: str) -> str:
    """The output with the usage-error box's borders and line breaks taken out."""
    return " ".join(output.replace("│", " ").split())


def _assert_not_echoed(output: str) -> None:
    assert "00083" not in output
    assert "００８３" not in output
    assert "Nordmann" not in output
    assert "pasient" not in output


def _catalog(tmp_path: Path) -> Settings:
    """The settings of the CLI tests' environment (`env`: `tmp_path / "var"`)."""
    return Settings(data_dir=tmp_path / "var", pseudonym_key=SecretStr(TEST_KEY))


def test_the_examples_are_what_they_claim() -> None:
    assert is_identity_number("01019000083")
    assert not is_identity_number("12345678901")


def _load_as(uploader: str, env: dict[str, str], write_extract: ExtractWriter) -> Result:
    """`kvarus load` of a one-row basis file with `--uploaded-by uploader`."""
    extract = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-1")])
    args = ["load", str(extract), "--form", "basis", "--uploaded-by", uploader]
    return CliRunner().invoke(app, args, env=env)


def _uploaders(tmp_path: Path) -> list[str]:
    """The ledger's uploaders."""
    with session_scope(make_engine(_catalog(tmp_path))) as session:
        return [u.uploaded_by for u in session.exec(select(Upload))]


@pytest.mark.parametrize("uploader", HOLDING)
def test_load_refuses_an_uploader_holding_an_identity_number(
    env: dict[str, str], tmp_path: Path, write_extract: ExtractWriter, uploader: str
) -> None:
    result = _load_as(uploader, env, write_extract)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert (
        "Invalid value for '--uploaded-by': it looks like it holds a national identity number: "
        "name the uploader otherwise (a system, a unit, a role)"
    ) in _said(result.output)
    _assert_not_echoed(result.output)
    assert _uploaders(tmp_path) == []  # nothing in the ledger
    assert not _catalog(tmp_path).warehouse_dir.exists()


def test_load_keeps_an_ordinary_uploader(
    env: dict[str, str], tmp_path: Path, write_extract: ExtractWriter
) -> None:
    result = _load_as(ORDINARY, env, write_extract)
    assert result.exit_code == 0, result.output
    assert _uploaders(tmp_path) == [ORDINARY]


@pytest.mark.parametrize("note", HOLDING)
def test_release_refuses_a_note_holding_an_identity_number(
    env: dict[str, str], tmp_path: Path, note: str
) -> None:
    result = CliRunner().invoke(app, ["release", "--note", note], env=env)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert (
        "Invalid value for '--note': it looks like it holds a national identity number: write "
        "the note without it"
    ) in _said(result.output)
    _assert_not_echoed(result.output)
    settings = _catalog(tmp_path)
    with session_scope(make_engine(settings)) as session:
        assert session.exec(select(Release)).all() == []  # nothing published
    assert not settings.releases_dir.exists()


def test_release_keeps_an_ordinary_note(env: dict[str, str], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["release", "--note", ORDINARY], env=env)
    assert result.exit_code == 0, result.output
    with session_scope(make_engine(_catalog(tmp_path))) as session:
        assert [r.note for r in session.exec(select(Release))] == [ORDINARY]


@pytest.mark.parametrize("note", HOLDING)
def test_api_refuses_a_note_holding_an_identity_number(
    app: FastAPI,
    client: TestClient,
    headers: dict[str, Headers],
    settings: Settings,
    note: str,
) -> None:
    response = client.post(f"{API}/releases", json={"note": note}, headers=headers["registry"])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == (
        "note: it looks like it holds a national identity number: write the note without it; "
        "nothing was published"
    )
    _assert_not_echoed(response.text)
    assert client.get(f"{API}/releases").json() == []  # nothing published
    with session_scope(app.state.engine) as session:
        assert session.exec(select(Release)).all() == []
    assert not settings.releases_dir.exists() or not any(settings.releases_dir.iterdir())


def test_api_keeps_an_ordinary_note(client: TestClient, headers: dict[str, Headers]) -> None:
    response = client.post(f"{API}/releases", json={"note": ORDINARY}, headers=headers["registry"])
    assert response.status_code == 201, response.text
    assert response.json()["note"] == ORDINARY
    assert [r["note"] for r in client.get(f"{API}/releases").json()] == [ORDINARY]


def test_api_publishes_without_a_body(client: TestClient, headers: dict[str, Headers]) -> None:
    # The note is optional, and so is the body that carries it (it was a 422 "body: Field
    # required" without `{}`).
    response = client.post(f"{API}/releases", headers=headers["registry"])
    assert response.status_code == 201, response.text
    assert (response.json()["number"], response.json()["note"]) == (1, None)
    assert client.post(f"{API}/releases", json={}, headers=headers["registry"]).status_code == 201
    assert [r["number"] for r in client.get(f"{API}/releases").json()] == [2, 1]


@pytest.mark.parametrize("uploader", ["api:7", "key:1", "oidc:someone"])
def test_load_refuses_an_uploader_shaped_as_the_apis(
    env: dict[str, str], tmp_path: Path, write_extract: ExtractWriter, uploader: str
) -> None:
    # `api:N` would hide the upload from the API's list as an internal row, `key:N` and `oidc:`
    # would name a key holder or token subject who uploaded nothing.
    result = _load_as(uploader, env, write_extract)
    assert result.exit_code == 2, result.output
    assert (
        "Invalid value for '--uploaded-by': api:, key: and oidc: name the API's uploaders: name "
        "the uploader otherwise (a system, a unit, a role)"
    ) in _said(result.output)
    assert _uploaders(tmp_path) == []
