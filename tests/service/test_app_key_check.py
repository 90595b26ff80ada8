"""The API refuses to start under a pseudonym key other than the register's (`etl.keycheck`)."""

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from etl.keycheck import KEY_CHECK_FILE, WRONG_KEY, check_key, key_check_value
from schemas.errors import ConfigurationError
from service.app import create_app
from service.cli import app as cli
from service.settings import Settings
from tests.conftest import TEST_KEY

OTHER_KEY = "another-pseudonym-key-0123456789-xyz"


def test_the_first_start_up_writes_the_check_value(settings: Settings) -> None:
    create_app(settings)
    check = settings.warehouse_dir / KEY_CHECK_FILE
    assert check.read_text(encoding="ascii") == key_check_value(TEST_KEY.encode()) + "\n"
    create_app(settings)  # and the same key starts again


def test_another_key_is_refused_before_the_catalog_is_created(settings: Settings) -> None:
    # A register loaded under TEST_KEY (its check value is all the refusal reads).
    check_key(settings.warehouse_dir, TEST_KEY.encode())
    wrong = settings.model_copy(update={"pseudonym_key": SecretStr(OTHER_KEY)})
    with pytest.raises(ConfigurationError) as refused:
        create_app(wrong)
    assert refused.value.detail == WRONG_KEY
    assert not (settings.data_dir / "catalog.sqlite3").exists()
    assert [p.name for p in settings.warehouse_dir.iterdir()] == [KEY_CHECK_FILE]


def test_workers_refuse_another_key_before_starting(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    def started(*_: object, **__: object) -> None:
        raise AssertionError("uvicorn started")

    monkeypatch.setattr(uvicorn, "run", started)
    check_key(settings.warehouse_dir, TEST_KEY.encode())
    env = {
        "KVARUS_DATA_DIR": str(settings.data_dir),
        "KVARUS_PSEUDONYM_KEY": OTHER_KEY,
        "COLUMNS": "300",  # one line, unwrapped
    }
    result = CliRunner().invoke(cli, ["serve", "--workers", "2"], env=env)
    assert result.exit_code == 2  # a configuration error
    assert result.output == f"Configuration error: {WRONG_KEY}\n"
    assert not (settings.data_dir / "catalog.sqlite3").exists()


def test_a_start_up_refused_for_its_oidc_settings_adopts_no_key(settings: Settings) -> None:
    broken = settings.model_copy(
        update={"oidc_issuer": "https://login.example", "oidc_audience": "kvarus"}
    )
    with pytest.raises(ConfigurationError, match="KVARUS_OIDC_JWKS_URL"):
        create_app(broken)
    assert not settings.data_dir.exists()
