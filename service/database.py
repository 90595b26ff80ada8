"""The catalog database: engine and sessions, opened and closed at the edge."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from sqlalchemy import Engine, event, text
from sqlmodel import Session, SQLModel, create_engine

import schemas.catalog  # noqa: F401  (registers the catalog tables on SQLModel.metadata)
from schemas.errors import ConfigurationError
from service.settings import ENV_PREFIX, Settings

# The largest catalog id (upload, API client, release number): the tables' ids are SQL `integer`,
# 32-bit on PostgreSQL (64-bit on SQLite). An id from a user is bounded by it where it is read (a
# 422 or a usage error naming the range), so a larger one never reaches a query: PostgreSQL
# refuses it as a DataError where SQLite finds no row.
MAX_CATALOG_ID: Final = 2**31 - 1
# The key of the PostgreSQL advisory lock under which the catalog's tables are created (any
# constant no other lock of the database uses: b"kvarusdb" as a signed 64-bit integer).
CREATE_LOCK_KEY: Final = int.from_bytes(b"kvarusdb", "big", signed=True)


def make_engine(settings: Settings) -> Engine:
    """The catalog's engine, its tables created if missing.

    A URL whose driver is not installed (`mysql://`, `postgresql+asyncpg://`) is a configuration
    error (exit 2 in the CLI) that names the variable, never the URL: it may hold a password.
    """
    try:
        return _make_engine(settings)
    except ImportError as error:  # SQLAlchemy imports the URL's driver module when it is created
        raise ConfigurationError(
            f"{ENV_PREFIX}DATABASE_URL names a database driver that is not installed "
            f"({type(error).__name__}): expected a SQLite URL (sqlite:///PATH) or "
            f"postgresql+psycopg://user@host/db"
        ) from None


def _make_engine(settings: Settings) -> Engine:
    url = settings.catalog_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # WAL lets readers go on while a load writes; foreign keys are off by default in SQLite.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            # Deleted or overwritten content is zeroed, not left in free space: an erasure
            # withholds file names that held a patient's pseudonym (`etl.erasure`).
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.close()

    else:
        engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "postgresql":
        # Processes starting together on an empty database (`kvarus serve --workers N`, commands
        # run at once) each found no table (another's was not committed yet) and created it: all
        # but one failed with a duplicate key of the table's row type in `pg_type`. One at a
        # time, in the lock's transaction: the next finds the tables committed and creates
        # nothing. The lock ends with the transaction (also when a process dies holding it).
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CREATE_LOCK_KEY})
            SQLModel.metadata.create_all(connection)
    else:
        SQLModel.metadata.create_all(engine)
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A unit of work: commits on success, rolls back on error. Inner code never commits."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
