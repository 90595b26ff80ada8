"""The control plane: SQLModel tables of the catalog (SQLite by default, PostgreSQL in production).

No table here ever holds a pseudonym, a patient key or a record value: uploads, releases and
erasures are described by counts, hashes of files, organisation numbers and times.
"""

from datetime import UTC, datetime

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Organisation(SQLModel, table=True):
    """A provider, HF, RHF or the nation; private providers are registered by the registry."""

    orgnr: str = Field(primary_key=True, max_length=9)
    name: str
    short_name: str
    level: str = Field(index=True)  # nation | rhf | hf | provider
    parent_orgnr: str | None = Field(default=None, index=True)
    ownership: str = "public"  # public | private_nonprofit | private
    registered_at: datetime = Field(default_factory=utcnow)


class Upload(SQLModel, table=True):
    """The ledger: one row per uploaded file.

    Statuses: `pending` (an API request not yet picked up by its background job), `loading` (an
    API request whose job runs: it reads and validates without the write locks, so a repair of
    interrupted loads ignores it), `running` (a load holding the write locks; a repair that finds
    one takes its load for dead), `loaded`, `rejected`, `duplicate`, `failed`. See `etl.ledger`.
    """

    id: int | None = Field(default=None, primary_key=True)
    file_sha256: str = Field(index=True, max_length=64)
    form: str = Field(index=True)
    filename: str
    # Providers found in the file, comma-separated organisation numbers.
    providers: str = ""
    status: str = Field(
        default="pending", index=True
    )  # pending|loading|running|loaded|rejected|duplicate|failed
    rows_read: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    rows_superseded: int = 0
    rows_erased: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    uploaded_by: str = "cli"
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    # An API upload's request row points at the ledger row its background load created.
    loaded_as: int | None = Field(default=None, index=True)


class ValidationRun(SQLModel, table=True):
    """The quality report of validating one file (stored as JSON: no record values in it)."""

    id: int | None = Field(default=None, primary_key=True)
    upload_id: int | None = Field(default=None, foreign_key="upload.id", index=True)
    form: str
    suite_version: str
    passed: bool
    report: dict[str, object] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class Release(SQLModel, table=True):
    """A numbered, immutable release of every warehouse table."""

    number: int = Field(primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)
    note: str | None = None
    manifest_path: str
    published_by: str = "cli"
    # Retired releases are no longer served (after an erasure that could not rebuild them).
    retired: bool = False


class IndicatorRun(SQLModel, table=True):
    """The index of precomputed indicator results of a release."""

    id: int | None = Field(default=None, primary_key=True)
    release: int = Field(foreign_key="release.number", index=True)
    engine: str = "duckdb"
    results_path: str
    rows: int = 0
    computed_at: datetime = Field(default_factory=utcnow)


class Erasure(SQLModel, table=True):
    """The erasure log: date, provider and counts; never the pseudonym or its key."""

    id: int | None = Field(default=None, primary_key=True)
    performed_at: datetime = Field(default_factory=utcnow)
    optout_date: datetime | None = None
    provider_orgnr: str | None = None
    patients: int = 0
    rows_erased: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON))
    releases_rebuilt: str = ""
    performed_by: str = "cli"


class ApiClient(SQLModel, table=True):
    """An API key holder. The key itself is never stored: only its hash and a short prefix."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = ""
    key_prefix: str = Field(index=True, max_length=16)
    key_hash: str = Field(max_length=128)
    role: str  # registry | trust | researcher
    provider_orgnr: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class AuditEvent(SQLModel, table=True):
    """Who asked for what: one row per data request."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    subject: str = Field(index=True)  # api client id, OIDC subject, or "anonymous"
    role: str
    method: str
    route: str
    query: str = ""
    status: int
    rows: int | None = None
    release: int | None = None
