"""The one settings class: environment variables with the prefix `KVARUS_`.

Nothing else reads the environment. The defaults run embedded with no setup: a data directory
`./var` holding the warehouse (Delta tables), the releases and a SQLite catalog.
"""

from functools import cached_property
from pathlib import Path
from typing import Final

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import ConfigurationError

# Public and refused outside demo mode: it exists so that `make demo` runs with no setup.
DEMO_PSEUDONYM_KEY: Final = "kvarus-demo-key-not-for-production"
# A keyed HMAC needs a key at least as long as its output (RFC 2104 §3): 32 bytes for SHA-256.
MIN_KEY_LENGTH: Final = 32
ENV_PREFIX: Final = "KVARUS_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=None, extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="Warehouse, releases, catalog, logs")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the catalog; default a SQLite file in the data directory. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    pseudonym_key: SecretStr | None = Field(
        default=None, description="Key of the HMAC that re-keys source pseudonyms (≥ 32 chars)"
    )
    demo: bool = Field(default=False, description="Demo mode: allows the public demo key")
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_max_token_lifetime: int = Field(
        default=24 * 3600,
        ge=1,
        description="Seconds: an OIDC token that stays valid longer than this from now is refused",
    )

    @cached_property
    def catalog_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'catalog.sqlite3').resolve()}"

    @property
    def warehouse_dir(self) -> Path:
        return self.data_dir / "warehouse"

    @property
    def releases_dir(self) -> Path:
        return self.data_dir / "releases"

    def key_bytes(self) -> bytes:
        """The pseudonym key; refuses the demo key outside demo mode, and a missing or short key."""
        if self.pseudonym_key is None:
            if self.demo:
                return DEMO_PSEUDONYM_KEY.encode()
            raise ConfigurationError(
                "KVARUS_PSEUDONYM_KEY is not set: set a secret of at least "
                f"{MIN_KEY_LENGTH} characters (or KVARUS_DEMO=1 for the demo key)"
            )
        key = self.pseudonym_key.get_secret_value()
        # Spaces around a key add no secret (a paste error, most likely): the key is judged
        # without them, so the public demo key with a space or a newline around it is the demo
        # key still, and 35 spaces do not pass the length check. It is used as given, though:
        # the warehouse's key check value (`etl.keycheck`) holds the key a register was loaded
        # with, and the pseudonyms already stored were keyed with it.
        judged = key.strip()
        if judged == DEMO_PSEUDONYM_KEY and not self.demo:
            raise ConfigurationError("the demo pseudonym key is refused outside demo mode")
        if len(judged) < MIN_KEY_LENGTH and judged != DEMO_PSEUDONYM_KEY:
            raise ConfigurationError(
                f"KVARUS_PSEUDONYM_KEY must be at least {MIN_KEY_LENGTH} characters, not counting "
                "spaces around it"
            )
        return key.encode()
