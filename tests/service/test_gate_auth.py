"""Credentials are checked before the body is read: a wrong key is 401 whatever its body, a right
one with a bad body 422 under its own name in the audit log. And the start-up warm-up thread logs
an unexpected error by its class and frames, never its message."""

import logging
import threading
import time
from typing import Any

import duckdb
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service import app as service_app
from service import auth
from service.catalog_cache import CatalogCache
from service.database import session_scope
from service.errors import ServiceUnavailable
from service.settings import Settings
from tests.service.conftest import Headers
from tests.service.test_auth import AUDIENCE, ISSUER, LocalKeys, token
from tests.service.test_request_gate import key_subject, post_chunked

API = "/api/v1"
PROBLEM = "application/problem+json"
BAD_JSON = b'{"measures": ['
# In an error's message (a frame's source line shows the name, never the value).
IDENTITY = "01019000083"
# The secret parts of the wrong credentials below: never in an answer, a log line, an audit row.
SECRET = "nope0secret0part"
# Every route that takes a body, with the content type it reads.
BODY_ROUTES = {
    "uploads": ("/uploads", "multipart/form-data; boundary=kvarusboundary"),
    "releases": ("/releases", "application/json"),
    "aggregates": ("/aggregates", "application/json"),
}


def revoked_key(app: FastAPI) -> tuple[str, str]:
    """A revoked key and its client's audit subject."""
    with session_scope(app.state.engine) as session:
        client, key = auth.create_key(session, role="registry", name="revoked")
        assert client.id is not None
        auth.revoke_key(session, client.id)
    return key, f"key:{client.id}"


# What the dependency answered for each (on a GET route, which reads no body): the same now.
WRONG = {
    "unknown key": (f"Bearer kvk_12345678_{SECRET}", "unknown or revoked API key"),
    "malformed key": (f"Bearer kvk_{SECRET}", "malformed API key"),
    "not bearer": (f"Basic {SECRET}", "use Authorization: Bearer <API key or token>"),
    "a token without OIDC": (
        f"Bearer eyJ.{SECRET}",
        "bearer token is not an API key and OIDC is not configured",
    ),
}


def audit_rows(client: TestClient, headers: dict[str, Headers]) -> list[tuple[str, str, str, int]]:
    """(route, subject, role, status) of each audited request, oldest first."""
    items = client.get(f"{API}/audit", headers=headers["registry"]).json()["items"]
    return [(e["route"], e["subject"], e["role"], e["status"]) for e in reversed(items)]


class TestWrongCredentialsBeforeTheBody:
    @pytest.mark.parametrize("route", BODY_ROUTES)
    @pytest.mark.parametrize("wrong", [*WRONG, "revoked key"])
    def test_wrong_credentials_are_401_and_no_body_byte_is_read(
        self,
        app: FastAPI,
        client: TestClient,
        headers: dict[str, Headers],
        caplog: pytest.LogCaptureFixture,
        route: str,
        wrong: str,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        subject = "unauthenticated"
        if wrong == "revoked key":
            key, subject = revoked_key(app)
            authorization, detail = f"Bearer {key}", "unknown or revoked API key"
        else:
            authorization, detail = WRONG[wrong]
        path, content_type = BODY_ROUTES[route]
        status, pulled, answer = post_chunked(
            app,
            API + path,
            {"Authorization": authorization, "content-type": content_type},
            4 * 64 * 1024,
        )
        assert (status, pulled) == (401, 0)
        assert answer == {
            "type": "https://kvarus.example/problems/unauthorised",
            "title": "Not authenticated",
            "status": 401,
            "detail": detail,
            "instance": API + path,
        }
        # The same answer as a route without a body gives (the dependency's, as before).
        reading = client.get(f"{API}/uploads", headers={"Authorization": authorization})
        assert reading.status_code == 401
        assert reading.json() == answer | {"instance": f"{API}/uploads"}
        rows = audit_rows(client, headers)
        # A revoked key's use is traced to its client (it was "unauthenticated" before).
        assert rows[0] == (API + path, subject, "none", 401)
        assert rows[1] == (f"{API}/uploads", subject, "none", 401)
        assert SECRET not in caplog.text
        assert SECRET not in repr(rows)

    def test_reviewers_case_an_unknown_key_with_broken_json_is_401(
        self, client: TestClient, headers: dict[str, Headers]
    ) -> None:
        answer = client.post(
            f"{API}/aggregates",
            content=BAD_JSON,
            headers={
                "Authorization": "Bearer kvk_12345678_nope",
                "content-type": "application/json",
            },
        )
        assert answer.status_code == 401
        assert answer.headers["content-type"] == PROBLEM
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["detail"] == "unknown or revoked API key"
        assert "nope" not in answer.text
        assert audit_rows(client, headers) == [
            (f"{API}/aggregates", "unauthenticated", "none", 401)
        ]

    def test_a_busy_catalog_is_503_before_the_body(
        self,
        app: FastAPI,
        headers: dict[str, Headers],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        def busy(self: CatalogCache, key: str) -> auth.Principal:
            raise ServiceUnavailable("the catalog is busy; try again")

        monkeypatch.setattr(CatalogCache, "principal", busy)
        status, pulled, answer = post_chunked(
            app, f"{API}/aggregates", headers["researcher"], 4 * 64 * 1024
        )
        assert (status, pulled) == (503, 0)
        assert answer["title"] == "Service unavailable"
        assert answer["detail"] == "the catalog is busy; try again"
        assert "Service unavailable on POST /api/v1/aggregates" in caplog.text

    def test_routes_without_a_principal_do_not_check_the_header(self, client: TestClient) -> None:
        # As before: /health asks nobody who they are.
        answer = client.get("/health", headers={"Authorization": "Bearer kvk_12345678_nope"})
        assert answer.status_code == 200


# Every (role, body route) the role may not use.
REFUSED_ROLES = [
    ("trust", "aggregates"),
    ("trust", "uploads"),
    ("trust", "releases"),
    ("researcher", "uploads"),
    ("researcher", "releases"),
]


class TestRoleBeforeTheBody:
    @pytest.mark.parametrize(("role", "route"), REFUSED_ROLES)
    def test_a_role_the_route_refuses_is_403_and_no_body_byte_is_read(
        self, app: FastAPI, client: TestClient, headers: dict[str, Headers], role: str, route: str
    ) -> None:
        path, content_type = BODY_ROUTES[route]
        status, pulled, answer = post_chunked(
            app, API + path, {**headers[role], "content-type": content_type}, 4 * 64 * 1024
        )
        assert (status, pulled) == (403, 0)
        assert answer["detail"] == f"the {role} role may not use this route"
        assert audit_rows(client, headers) == [
            (API + path, key_subject(app, headers, role), role, 403)
        ]

    def test_reviewers_case_a_trust_key_with_broken_json_is_403(
        self, client: TestClient, headers: dict[str, Headers]
    ) -> None:
        answer = client.post(
            f"{API}/aggregates",
            content=BAD_JSON,
            headers={**headers["trust"], "content-type": "application/json"},
        )
        assert answer.status_code == 403
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["title"] == "Forbidden"

    def test_a_role_the_route_admits_passes_the_gate(
        self, client: TestClient, headers: dict[str, Headers]
    ) -> None:
        # The registry may use every route: its bad body is the route's 422, not a 403.
        answer = client.post(
            f"{API}/aggregates",
            content=BAD_JSON,
            headers={**headers["registry"], "content-type": "application/json"},
        )
        assert answer.status_code == 422


class TestValidCallerWithABadBody:
    @pytest.mark.parametrize("role", ["researcher", "registry"])
    def test_bad_json_is_422_and_the_audit_names_the_caller(
        self, app: FastAPI, client: TestClient, headers: dict[str, Headers], role: str
    ) -> None:
        answer = client.post(
            f"{API}/aggregates",
            content=BAD_JSON,
            headers={**headers[role], "content-type": "application/json"},
        )
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith("body.")
        assert audit_rows(client, headers) == [
            (f"{API}/aggregates", key_subject(app, headers, role), role, 422)
        ]

    def test_a_key_is_looked_up_once_per_request(
        self, client: TestClient, headers: dict[str, Headers], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        asked: list[str] = []
        original = CatalogCache.principal

        def counting(self: CatalogCache, key: str) -> auth.Principal:
            asked.append("key")
            return original(self, key)

        monkeypatch.setattr(CatalogCache, "principal", counting)
        assert client.get(f"{API}/uploads", headers=headers["trust"]).status_code == 200
        assert len(asked) == 1
        json_body = {**headers["researcher"], "content-type": "application/json"}
        assert client.post(f"{API}/aggregates", content=b"{}", headers=json_body).status_code == 422
        assert len(asked) == 2


@pytest.fixture
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def with_oidc(app: FastAPI, settings: Settings, private_key: rsa.RSAPrivateKey) -> FastAPI:
    configured = settings.model_copy(
        update={"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE, "oidc_jwks_url": "unused"}
    )
    app.state.oidc = auth.OidcVerifier(configured, keys=LocalKeys(private_key.public_key()))
    return app


class TestOidcTokens:
    def test_valid_token_with_a_bad_body_is_422_under_its_subject(
        self,
        with_oidc: FastAPI,
        client: TestClient,
        headers: dict[str, Headers],
        private_key: rsa.RSAPrivateKey,
    ) -> None:
        bearer = token(private_key, kvarus_role="researcher")
        answer = client.post(
            f"{API}/aggregates",
            content=BAD_JSON,
            headers={"Authorization": f"Bearer {bearer}", "content-type": "application/json"},
        )
        assert answer.status_code == 422
        assert audit_rows(client, headers) == [
            (f"{API}/aggregates", "oidc:user-1", "researcher", 422)
        ]

    @pytest.mark.parametrize(
        ("claims", "status", "detail"),
        [
            ({"aud": "someone-else"}, 401, "invalid bearer token (InvalidAudienceError)"),
            ({"exp": 1_000_000_000}, 401, "invalid bearer token (ExpiredSignatureError)"),
            ({"kvarus_role": "admin"}, 403, "the token grants no Kvarus role"),
        ],
    )
    def test_refused_token_reads_no_body(
        self,
        with_oidc: FastAPI,
        client: TestClient,
        headers: dict[str, Headers],
        private_key: rsa.RSAPrivateKey,
        claims: dict[str, Any],
        status: int,
        detail: str,
    ) -> None:
        bearer = token(private_key, **({"kvarus_role": "registry"} | claims))
        answer_status, pulled, answer = post_chunked(
            with_oidc, f"{API}/aggregates", {"Authorization": f"Bearer {bearer}"}, 4 * 64 * 1024
        )
        assert (answer_status, pulled) == (status, 0)
        assert answer["detail"] == detail
        assert audit_rows(client, headers) == [
            (f"{API}/aggregates", "unauthenticated", "none", status)
        ]


class TestWarmUpErrors:
    """`warm_aggregates` runs in its own thread: what escapes it, the thread's excepthook prints,
    message included."""

    def test_unexpected_error_is_logged_by_class_and_frames(
        self,
        app: FastAPI,
        settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        def broken(*_: object) -> None:
            raise RuntimeError(f"cannot read /data/patient-{IDENTITY}.parquet")

        monkeypatch.setattr(service_app.published, "get_release", broken)
        service_app.warm_aggregates(settings, app.state.engine)  # raises nothing
        assert "aggregate warm-up failed: unexpected RuntimeError" in caplog.text
        assert "in broken" in caplog.text
        assert IDENTITY not in caplog.text
        assert [r.levelno for r in caplog.records] == [logging.ERROR]

    def test_an_interrupt_at_shutdown_is_quiet(
        self,
        app: FastAPI,
        settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        # DuckDB interrupts a running query as the process exits.
        def interrupted(*_: object) -> None:
            raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")

        monkeypatch.setattr(service_app.published, "get_release", interrupted)
        caplog.set_level(logging.INFO)
        service_app.warm_aggregates(settings, app.state.engine)  # raises nothing
        assert not caplog.records


# A query that runs for minutes unless interrupted (no progress bar: it would print).
SLOW = "SELECT count(*) FROM range(10000000000) t(x) WHERE sha256(x::VARCHAR) < 'a'"


def slow_query() -> None:
    connection = duckdb.connect()
    connection.execute("SET enable_progress_bar = false")
    with service_app.aggregates._interruptible(connection):
        connection.execute(SLOW).fetchall()


class TestWarmUpStops:
    """A shutdown stops a running warm-up: left inside a DuckDB query at interpreter exit, the
    thread sometimes aborted the process ("FATAL: exception not rethrown")."""

    def test_interrupt_builds_stops_a_running_build(self) -> None:
        outcome: list[BaseException] = []

        def build() -> None:
            try:
                slow_query()
            except BaseException as error:  # recorded for the assertion
                outcome.append(error)

        thread = threading.Thread(target=build)
        thread.start()
        deadline = time.monotonic() + 10
        while not service_app.aggregates._building and time.monotonic() < deadline:
            time.sleep(0.01)
        service_app.aggregates.interrupt_builds()
        thread.join(10)
        assert not thread.is_alive()
        assert [type(e) for e in outcome] == [duckdb.InterruptException]
        assert not service_app.aggregates._building  # deregistered

    def test_stop_warming_ends_the_thread_quietly(
        self,
        app: FastAPI,
        settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        monkeypatch.setattr(service_app.published, "get_release", lambda *_: slow_query())
        caplog.set_level(logging.INFO)
        warming = threading.Thread(
            target=service_app.warm_aggregates, args=(settings, app.state.engine), daemon=True
        )
        warming.start()
        time.sleep(0.2)  # inside the query, or about to be: both are stopped
        started = time.monotonic()
        service_app.stop_warming(warming)
        assert not warming.is_alive()
        assert time.monotonic() - started < 5
        assert not caplog.records  # an interrupt at shutdown is not an error
