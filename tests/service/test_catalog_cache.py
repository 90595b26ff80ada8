"""The catalog cache: answers from memory while nothing changed, at once the news when it did.

Changes are made as another process makes them: from a connection of their own, in this process
(a second engine) and in a child process (plain sqlite3, as an erasure or `kvarus keys revoke`
running beside the API would).
"""

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from schemas.catalog import Release
from schemas.errors import NotFound, Unauthorised
from service import app as service_app
from service import auth, catalog_cache, published
from service.catalog_cache import CatalogCache
from service.database import make_engine
from service.settings import Settings
from tests.conftest import POSTGRES_URL
from tests.service.conftest import ReleaseWriter

RESULTS = "/api/v1/indicators/results"


@pytest.fixture
def cache(app: FastAPI) -> Iterator[CatalogCache]:
    made = CatalogCache.of(app.state.engine)
    assert made is not None
    yield made
    made.close()


def in_other_process(settings: Settings, sql: str) -> None:
    """Run `sql` against the catalog from a child process and commit."""
    database = str(settings.data_dir / "catalog.sqlite3")
    script = (
        "import sqlite3, sys\n"
        "connection = sqlite3.connect(sys.argv[1])\n"
        "connection.execute(sys.argv[2])\n"
        "connection.commit()"
    )
    subprocess.run([sys.executable, "-c", script, database, sql], check=True)


def retire_in_own_session(settings: Settings, number: int) -> None:
    """Retire release `number` from an engine of its own (another connection)."""
    engine = make_engine(settings)
    with Session(engine) as session:
        release = session.get(Release, number)
        assert release is not None
        release.retired = True
        session.add(release)
        session.commit()
    engine.dispose()


def counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Count calls of `module.name` (the catalog queries the cache makes)."""
    calls: list[int] = []
    original: Callable[..., Any] = getattr(module, name)

    def counted(*args: Any) -> Any:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(module, name, counted)
    return calls


class TestServedReleases:
    def test_unchanged_catalog_is_not_asked_again(
        self, cache: CatalogCache, publish: ReleaseWriter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        publish(1)
        publish(2)
        queries = counting(monkeypatch, published, "served_releases")
        assert [cache.served_release(None) for _ in range(3)] == [2, 2, 2]
        assert cache.served_release(1) == 1
        assert len(queries) == 1

    def test_retired_in_another_connection(
        self, cache: CatalogCache, publish: ReleaseWriter, settings: Settings
    ) -> None:
        publish(1)
        publish(2)
        assert cache.served_release(None) == 2
        assert cache.served_release(2) == 2
        retire_in_own_session(settings, 2)
        assert cache.served_release(None) == 1
        with pytest.raises(NotFound, match="no such release, or it is retired"):
            cache.served_release(2)

    def test_retired_in_another_process(
        self, cache: CatalogCache, publish: ReleaseWriter, settings: Settings
    ) -> None:
        publish(1)
        publish(2)
        assert cache.served_release(None) == 2
        in_other_process(settings, "UPDATE release SET retired = 1 WHERE number = 2")
        assert cache.served_release(None) == 1
        in_other_process(settings, "UPDATE release SET retired = 1 WHERE number = 1")
        with pytest.raises(NotFound, match="no release has been published yet"):
            cache.served_release(None)

    def test_published_in_another_process(
        self, cache: CatalogCache, publish: ReleaseWriter, settings: Settings
    ) -> None:
        publish(1)
        assert cache.served_release(None) == 1
        in_other_process(
            settings,
            "INSERT INTO release (number, created_at, manifest_path, published_by, "
            "retired) VALUES (2, '2026-01-01 00:00:00', 'm', 'cli', 0)",
        )
        assert cache.served_release(None) == 2

    def test_closed_cache_opens_again(self, cache: CatalogCache, publish: ReleaseWriter) -> None:
        publish(1)
        assert cache.served_release(None) == 1
        cache.close()
        publish(2)
        assert cache.served_release(None) == 2


class TestKeys:
    @pytest.fixture
    def key(self, app: FastAPI) -> str:
        with Session(app.state.engine) as session:
            _, key = auth.create_key(session, role="researcher")
            session.commit()
        return key

    def test_known_key_is_looked_up_once(
        self, cache: CatalogCache, key: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        lookups = counting(monkeypatch, catalog_cache, "principal_from_key")
        principals = [cache.principal(key) for _ in range(3)]
        assert principals == [auth.Principal(subject="key:1", role="researcher")] * 3
        assert len(lookups) == 1

    def test_wrong_keys_are_refused_every_time(self, cache: CatalogCache, key: str) -> None:
        for _ in range(2):
            with pytest.raises(Unauthorised, match="unknown or revoked API key"):
                cache.principal(key[:-1] + ("x" if key[-1] != "x" else "y"))
            with pytest.raises(Unauthorised, match="malformed API key"):
                cache.principal("kvk_short")

    def test_revoked_in_another_process(
        self, cache: CatalogCache, key: str, settings: Settings
    ) -> None:
        assert cache.principal(key).role == "researcher"
        in_other_process(settings, "UPDATE apiclient SET revoked_at = '2026-01-01 00:00:00'")
        with pytest.raises(Unauthorised, match="unknown or revoked API key"):
            cache.principal(key)

    def test_revoked_in_another_connection(
        self, cache: CatalogCache, key: str, settings: Settings
    ) -> None:
        assert cache.principal(key).role == "researcher"
        engine = make_engine(settings)
        with Session(engine) as session:
            auth.revoke_key(session, 1)
            session.commit()
        engine.dispose()
        with pytest.raises(Unauthorised, match="unknown or revoked API key"):
            cache.principal(key)


class TestBusyCatalog:
    """A catalog still locked after the cache's 1 s busy timeout: 503, and the next request
    asks again on a new connection."""

    # A record value in the failing statement's parameters: it must not reach the answer.
    PSEUDONYM = "P0001234"

    def assert_unavailable(self, answer: Any) -> None:
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json() == {
            "type": "https://kvarus.example/problems/unavailable",
            "title": "Service unavailable",
            "status": 503,
            "detail": "the catalog is busy; try again",
            "instance": RESULTS,
        }
        assert self.PSEUDONYM not in answer.text

    def test_locked_query(
        self, app: FastAPI, publish: ReleaseWriter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        publish(1)
        cache: CatalogCache = app.state.catalog_cache
        original = published.served_releases

        def locked(*_: Any) -> list[int]:
            raise OperationalError(
                "SELECT number FROM release WHERE pseudonym = ?",
                (self.PSEUDONYM,),
                sqlite3.OperationalError("database is locked"),
            )

        monkeypatch.setattr(published, "served_releases", locked)
        monkeypatch.setattr(service_app, "warm_aggregates", lambda *_: None)  # asks it too
        with TestClient(app, raise_server_exceptions=False) as client:
            self.assert_unavailable(client.get(RESULTS))
            assert cache._connection is None  # dropped: the next request connects again
            monkeypatch.setattr(published, "served_releases", original)
            answer = client.get(RESULTS, params={"indicator": "plan"})
            assert answer.status_code == 200
            assert answer.json()["release"] == 1

    def test_locked_version_check(self, app: FastAPI, publish: ReleaseWriter) -> None:
        publish(1)
        cache: CatalogCache = app.state.catalog_cache
        closed: list[bool] = []

        def locked_cursor() -> None:
            raise sqlite3.OperationalError("database is locked")

        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.get(RESULTS, params={"indicator": "plan"}).status_code == 200
            cache.close()
            # The cache's connection fails on `PRAGMA data_version` as a locked database would.
            cache._connection = SimpleNamespace(  # type: ignore[assignment]
                connection=SimpleNamespace(dbapi_connection=SimpleNamespace(cursor=locked_cursor)),
                close=lambda: closed.append(True),
            )
            self.assert_unavailable(client.get(RESULTS))
            assert closed == [True]
            assert cache._connection is None
            answer = client.get(RESULTS, params={"indicator": "plan"})
            assert answer.status_code == 200
            assert answer.json()["release"] == 1

    def test_locked_key_look_up(
        self, app: FastAPI, headers: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        cache: CatalogCache = app.state.catalog_cache

        def locked(*_: Any) -> auth.Principal:
            raise OperationalError(
                "SELECT id FROM apiclient WHERE key_prefix = ?",
                (self.PSEUDONYM,),
                sqlite3.OperationalError("database is locked"),
            )

        original = catalog_cache.principal_from_key
        monkeypatch.setattr(catalog_cache, "principal_from_key", locked)
        with TestClient(app, raise_server_exceptions=False) as client:
            self.assert_unavailable(client.get(RESULTS, headers=headers["registry"]))
            assert cache._connection is None
            monkeypatch.setattr(catalog_cache, "principal_from_key", original)
            # Asked again on a new connection: the key is known (no release yet: 404).
            answer = client.get(RESULTS, headers=headers["registry"])
            assert answer.status_code == 404
            assert answer.json()["detail"] == "no release has been published yet"


def test_other_databases_have_no_cache() -> None:
    assert CatalogCache.of(create_engine(POSTGRES_URL)) is None
    assert CatalogCache.of(create_engine("sqlite://")) is None


@pytest.mark.parametrize("cached", [True, False], ids=["cache", "catalog-threads"])
class TestApi:
    """The API's answers are the same with the cache and without (PostgreSQL's path)."""

    @pytest.fixture
    def served(self, app: FastAPI, cached: bool) -> FastAPI:
        if not cached:
            app.state.catalog_cache = None
        return app

    def test_retirement_and_revocation_take_effect_at_once(
        self,
        served: FastAPI,
        publish: ReleaseWriter,
        settings: Settings,
        headers: dict[str, dict[str, str]],
    ) -> None:
        publish(1)
        publish(2)
        params = {"indicator": "plan", "level": "nation", "context": "caregiver"}
        researcher = headers["researcher"]
        with TestClient(served, raise_server_exceptions=False) as client:
            assert client.get(RESULTS, params=params, headers=researcher).json()["release"] == 2
            in_other_process(settings, "UPDATE release SET retired = 1 WHERE number = 2")
            answer = client.get(RESULTS, params=params, headers=researcher)
            assert answer.json()["release"] == 1
            assert client.get(RESULTS, params={"release": 2}).status_code == 404
            in_other_process(settings, "UPDATE apiclient SET revoked_at = '2026-01-01 00:00:00'")
            refused = client.get(RESULTS, params=params, headers=researcher)
            assert refused.status_code == 401
            assert refused.json()["detail"] == "unknown or revoked API key"
