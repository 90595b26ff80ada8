"""Settings: the KVARUS_ environment, embedded defaults, and the pseudonym key rules."""

from pathlib import Path

import pytest

from schemas.errors import ConfigurationError
from service.settings import DEMO_PSEUDONYM_KEY, Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATA_DIR", "DATABASE_URL", "PSEUDONYM_KEY", "DEMO"):
        monkeypatch.delenv(f"KVARUS_{name}", raising=False)


def test_embedded_defaults() -> None:
    settings = Settings()
    assert settings.data_dir == Path("var")
    assert settings.catalog_url == f"sqlite:///{Path('var/catalog.sqlite3').resolve()}"
    assert settings.warehouse_dir == Path("var/warehouse")


def test_reads_the_kvarus_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KVARUS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KVARUS_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    settings = Settings()
    assert settings.data_dir == tmp_path
    assert settings.catalog_url == "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def test_missing_key_is_refused_outside_demo() -> None:
    with pytest.raises(ConfigurationError, match="KVARUS_PSEUDONYM_KEY is not set"):
        Settings().key_bytes()


def test_demo_mode_uses_the_demo_key() -> None:
    assert Settings(demo=True).key_bytes() == DEMO_PSEUDONYM_KEY.encode()


def test_demo_key_is_refused_outside_demo_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVARUS_PSEUDONYM_KEY", DEMO_PSEUDONYM_KEY)
    with pytest.raises(ConfigurationError, match="refused outside demo mode"):
        Settings().key_bytes()


@pytest.mark.parametrize("around", [(" ", ""), ("", " "), ("\t", "\n"), ("  ", "\r\n")])
def test_demo_key_with_spaces_around_it_is_refused_outside_demo_mode(
    monkeypatch: pytest.MonkeyPatch, around: tuple[str, str]
) -> None:
    # Spaces add no secret: the public key with a space pasted around it is the public key.
    before, after = around
    monkeypatch.setenv("KVARUS_PSEUDONYM_KEY", f"{before}{DEMO_PSEUDONYM_KEY}{after}")
    with pytest.raises(ConfigurationError) as refused:
        Settings().key_bytes()
    assert refused.value.detail == "the demo pseudonym key is refused outside demo mode"
    # In demo mode it is accepted, and used as given (the warehouse's key check holds it).
    monkeypatch.setenv("KVARUS_DEMO", "1")
    assert Settings().key_bytes() == f"{before}{DEMO_PSEUDONYM_KEY}{after}".encode()


def test_short_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVARUS_PSEUDONYM_KEY", "x" * 31)
    with pytest.raises(ConfigurationError, match="at least 32"):
        Settings().key_bytes()


def test_a_proper_key_is_used_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cret-" + "k" * 40
    monkeypatch.setenv("KVARUS_PSEUDONYM_KEY", secret)
    settings = Settings()
    assert settings.key_bytes() == secret.encode()
    assert secret not in repr(settings)
