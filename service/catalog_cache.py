"""What every request asks of the catalog, answered from memory while the catalog is unchanged.

Every data request asks which releases are served (an erasure, in another process, may retire
one at any moment) and, with an API key, whose key it is (`kvarus keys revoke` may revoke it at
any moment). Asked through SQLAlchemy on a catalog thread, the two questions cost a thread hop
and a query each, a third of a cached indicator answer's time.

On SQLite, "has the catalog changed?" is `PRAGMA data_version` on a connection of our own: its
value changes whenever any other connection, of this process or another, commits
(https://www.sqlite.org/pragma.html#pragma_data_version). The check reads the WAL index in
shared memory (microseconds, on the event loop); any change drops everything remembered, and the
next question is asked again. The audit writers' commits count as changes too: each worker's
writer commits a batch at most once per 50 ms while requests come (more often only while a
`flush()` from the audit route cuts its wait short), so with N workers under load the answers are
read again up to N times per 50 ms, plus once after any other commit (a load, a release, a key),
still a small fraction of the requests. The version is read before the answers, so an answer is
never older than the version it is kept under. Other databases (PostgreSQL) have no such check:
there the questions stay per request, on the catalog threads (`service.deps`).

A catalog still busy or locked after `BUSY_TIMEOUT_SECONDS` is a 503 (`ServiceUnavailable`): the
connection and everything remembered are dropped, and the next request asks again.
"""

import logging
import sqlite3
import threading
from typing import Final

import sqlalchemy.exc
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.pool import StaticPool

from service import published
from service.auth import Principal, hash_key, principal_from_key
from service.errors import ServiceUnavailable

logger = logging.getLogger("kvarus.api")

# A WAL reader waits on a lock only in rare moments (recovery after a crash, the last
# connection's checkpoint at close), each a few milliseconds: a second bounds how long the
# event loop can wait. Still locked after it, the request is answered 503 (`ServiceUnavailable`).
BUSY_TIMEOUT_SECONDS: Final = 1.0
# The errors of a busy or locked catalog: the driver's own (the version check runs on the
# driver's cursor) and SQLAlchemy's wrapper of it (the queries).
_BUSY: Final = (sqlite3.OperationalError, sqlalchemy.exc.OperationalError)


class CatalogCache:
    """Served releases and API-key principals, valid while `PRAGMA data_version` is unchanged.

    Thread-safe (one lock): the event loop asks, and so may a test's second client.
    """

    def __init__(self, engine: Engine) -> None:
        # A connection of its own, never pooled and never writing: its data_version sees every
        # commit, the audit writer's included.
        self._engine = create_engine(
            engine.url,
            poolclass=StaticPool,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_SECONDS},
        )
        self._connection: Connection | None = None
        self._lock = threading.Lock()
        self._version: object = None
        self._served: list[int] | None = None
        self._principals: dict[str, Principal] = {}

    @classmethod
    def of(cls, engine: Engine) -> "CatalogCache | None":
        """A cache over a SQLite catalog file; None for other databases (no cheap change check)."""
        if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
            return None
        return cls(engine)

    def served_release(self, number: int | None) -> int:
        """`published.served_release`, from memory while the catalog is unchanged."""
        with self._lock:
            try:
                connection = self._checked()
                if self._served is None:
                    self._served = published.served_releases(connection)
                    connection.rollback()  # the next read sees the latest commit
            except _BUSY as error:
                raise self._unavailable(error) from None
            served = self._served
        return published.pick_release(served, number)

    def principal(self, key: str) -> Principal:
        """`auth.principal_from_key`, from memory while the catalog is unchanged.

        Unknown and revoked keys are not remembered: a flood of wrong keys cannot fill memory.
        """
        digest = hash_key(key)  # the form the catalog stores: no plain key in memory
        with self._lock:
            try:
                connection = self._checked()
                principal = self._principals.get(digest)
                if principal is None:
                    try:
                        principal = principal_from_key(connection, key)
                    finally:
                        connection.rollback()
                    self._principals[digest] = principal
            except _BUSY as error:
                raise self._unavailable(error) from None
        return principal

    def close(self) -> None:
        """Close the connection (reopened if asked again: a test may start the app twice)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._engine.dispose()
        self._version = None

    def _unavailable(self, error: Exception) -> ServiceUnavailable:
        """Forget the connection and everything remembered: the next request asks again on a
        new connection. The error's class is logged, not its message (it may quote a key)."""
        logger.warning("catalog cache: %s; connection reset", type(error).__name__)
        try:
            self._close()
        except Exception as closing:  # a broken connection may fail to close as well
            logger.warning("catalog cache: closing failed (%s)", type(closing).__name__)
            self._connection = None
            self._version = None
        self._served = None
        self._principals.clear()
        return ServiceUnavailable("the catalog is busy; try again")

    def _checked(self) -> Connection:
        """The connection, after forgetting everything if another connection has committed."""
        if self._connection is None:
            self._connection = self._engine.connect()
        driver = self._connection.connection.dbapi_connection
        assert driver is not None
        cursor = driver.cursor()
        cursor.execute("PRAGMA data_version")
        row = cursor.fetchone()
        cursor.close()
        assert row is not None  # the pragma always answers one row
        version = row[0]
        if version != self._version:
            self._version = version
            self._served = None
            self._principals.clear()
        return self._connection
