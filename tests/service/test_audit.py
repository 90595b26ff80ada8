"""The audit writer: nothing queued is lost at shutdown, and the middleware's rows."""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from starlette.types import Message, Receive, Scope, Send
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from schemas.catalog import AuditEvent, utcnow
from service import auth
from service.app import AccessLogPaths
from service.audit import ANSWERED_QUERY, AuditRow, AuditWriter, body_part
from service.database import session_scope
from tests.service.conftest import Headers, ReleaseWriter
from tests.service.test_request_gate import key_subject

API = "/api/v1"


def stored(app: FastAPI) -> list[AuditEvent]:
    # Read without `flush()`: what is in the catalog, not what the writer is about to write.
    with Session(app.state.engine) as session:
        return list(session.exec(select(AuditEvent).order_by(AuditEvent.id)))  # type: ignore[arg-type]


def row(route: str) -> AuditRow:
    return {
        "at": utcnow(),
        "subject": "anonymous",
        "role": "anonymous",
        "method": "GET",
        "route": route,
        "query": "",
        "status": 200,
        "rows": None,
        "release": None,
    }


def held_writes(
    writer: AuditWriter, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """Make the writer's first batch wait until `release` is set; `started` says it is waiting."""
    started, release = threading.Event(), threading.Event()
    original: Callable[[list[AuditRow]], None] = writer._write

    def held(batch: list[AuditRow]) -> None:
        started.set()
        release.wait()
        original(batch)

    monkeypatch.setattr(writer, "_write", held)
    return started, release


class TestAuditWriter:
    def test_close_commits_every_queued_row(
        self, app: FastAPI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        writer = AuditWriter(app.state.engine)
        started, release = held_writes(writer, monkeypatch)
        writer.submit(row("/first"))
        assert started.wait(timeout=30)
        # The writer is stuck on the first row; these three wait in the queue.
        for n in range(3):
            writer.submit(row(f"/queued/{n}"))
        release.set()
        writer.close()
        assert [e.route for e in stored(app)] == ["/first", "/queued/0", "/queued/1", "/queued/2"]
        # After close a row is written at once, not queued for a thread that is gone.
        writer.submit(row("/late"))
        assert stored(app)[-1].route == "/late"
        writer.close()  # a second close is harmless

    def test_rows_arriving_together_are_one_transaction(
        self, app: FastAPI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A batch waits (here: a minute) for more rows; closing ends the wait at once.
        monkeypatch.setattr(AuditWriter, "LINGER", 60.0)
        writer = AuditWriter(app.state.engine)
        batches: list[int] = []
        original: Callable[[list[AuditRow]], None] = writer._write

        def counted(batch: list[AuditRow]) -> None:
            batches.append(len(batch))
            original(batch)

        monkeypatch.setattr(writer, "_write", counted)
        for n in range(3):
            writer.submit(row(f"/together/{n}"))
        writer.close()
        assert not writer.thread.is_alive()
        assert batches == [3]
        assert [e.route for e in stored(app)] == [f"/together/{n}" for n in range(3)]

    def test_flush_under_steady_load_returns_with_every_earlier_row(
        self, app: FastAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        # A linger of a minute: only flush() cutting it short can write the rows in time.
        monkeypatch.setattr(AuditWriter, "LINGER", 60.0)
        writer = AuditWriter(app.state.engine)
        submitted = 0
        stop = threading.Event()

        def feed() -> None:
            # The queue is never empty: waiting for an empty queue would wait until `stop`.
            nonlocal submitted
            while not stop.is_set():
                writer.submit(row(f"/steady/{submitted}"))
                submitted += 1
                time.sleep(0.0005)

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            while submitted < 50:
                time.sleep(0.001)
            before = submitted  # rows /steady/0 .. before-1 were submitted before the flush
            flusher = threading.Thread(target=writer.flush)
            flusher.start()
            flusher.join(timeout=20)  # a bound, not a speed: flush() itself gives up after 30 s
            assert not flusher.is_alive(), "flush() waited for an empty queue"
            routes = {e.route for e in stored(app)}
            assert {f"/steady/{n}" for n in range(before)} <= routes
        finally:
            stop.set()
            feeder.join()
            writer.close()
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
        assert len(stored(app)) == submitted  # and close() committed the rest

    def test_failed_write_is_retried_once(
        self, app: FastAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        monkeypatch.setattr(AuditWriter, "RETRY_AFTER", 0.0)
        writer = AuditWriter(app.state.engine)
        attempts: list[int] = []
        original: Callable[[list[AuditRow]], None] = writer._insert

        def fails_once(batch: list[AuditRow]) -> None:
            attempts.append(len(batch))
            if len(attempts) == 1:
                raise RuntimeError("database is locked")
            original(batch)

        monkeypatch.setattr(writer, "_insert", fails_once)
        writer.submit(row("/retried"))
        writer.flush()
        assert attempts == [1, 1]
        assert [e.route for e in stored(app)] == ["/retried"]
        assert [r.levelno for r in caplog.records if r.name == "kvarus.audit"] == [logging.WARNING]
        writer.close()

    def test_batch_failing_twice_is_dropped_and_flush_still_returns(
        self, app: FastAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        monkeypatch.setattr(AuditWriter, "RETRY_AFTER", 0.0)
        writer = AuditWriter(app.state.engine)
        attempts: list[int] = []

        def fails(batch: list[AuditRow]) -> None:
            attempts.append(len(batch))
            raise RuntimeError("disk I/O error")

        original = writer._insert
        monkeypatch.setattr(writer, "_insert", fails)
        writer.submit(row("/lost"))
        flusher = threading.Thread(target=writer.flush)
        flusher.start()
        flusher.join(timeout=20)
        assert not flusher.is_alive(), "a failed batch left flush() waiting"
        assert attempts == [1, 1]
        assert stored(app) == []
        alarms = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert alarms == ["1 audit rows could not be written (RuntimeError); dropped"]
        # The writer goes on: the next row is written.
        monkeypatch.setattr(writer, "_insert", original)
        writer.submit(row("/next"))
        writer.flush()
        assert [e.route for e in stored(app)] == ["/next"]
        writer.close()

    def test_flush_gives_up_on_a_hung_catalog(
        self, app: FastAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        monkeypatch.setattr(AuditWriter, "FLUSH_TIMEOUT", 0.1)
        writer = AuditWriter(app.state.engine)
        started, release = held_writes(writer, monkeypatch)
        writer.submit(row("/held"))
        writer.submit(row("/held"))
        assert started.wait(timeout=30)
        writer.flush()  # returns, though the batch is still held
        alarms = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert alarms == ["audit flush gave up after 0.1 s: 2 rows behind"]
        release.set()
        writer.close()
        assert [e.route for e in stored(app)] == ["/held", "/held"]

    def test_app_shutdown_flushes_the_log(
        self, app: FastAPI, publish: ReleaseWriter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        publish(1)
        started, release = held_writes(app.state.audit, monkeypatch)
        with TestClient(app) as client:
            first = client.get(f"{API}/indicators/results", params={"indicator": "plan"})
            assert first.status_code == 200
            assert started.wait(timeout=30)
            for _ in range(4):
                assert client.get(f"{API}/indicators/results").status_code == 200
            assert client.get(f"{API}/uploads").status_code == 401
            release.set()
        # Leaving the client ran the app's shutdown: all six rows are in the catalog.
        events = stored(app)
        assert [(e.route, e.status, e.release) for e in events] == [
            *[("/api/v1/indicators/results", 200, 1)] * 5,
            ("/api/v1/uploads", 401, None),
        ]
        assert events[0].query == "indicator=plan"
        # plan: 6 caregiver rows (nation, RHF, 2 providers, 2 HFs) × 2 years + 3 resident rows
        # in 2024; the unit row is hidden.
        assert events[0].rows == 15


def test_a_refused_method_or_route_names_the_key_that_asked(
    app: FastAPI, client: TestClient, headers: dict[str, Headers]
) -> None:
    # A valid key on a route and method the app does not serve was audited as
    # "unauthenticated"/"none": only served routes checked the credentials. The status stays.
    trust = headers["trust"]
    subject = key_subject(app, headers, "trust")
    with session_scope(app.state.engine) as session:
        revoked, key = auth.create_key(session, role="registry", name="revoked")
        assert revoked.id is not None
        auth.revoke_key(session, revoked.id)
    asked = [
        ("DELETE", f"{API}/uploads/7", trust, 405),
        ("PUT", f"{API}/releases/1", trust, 405),
        ("PATCH", f"{API}/audit", trust, 405),
        ("GET", f"{API}/secret", trust, 404),
        ("GET", f"{API}/secret", {"Authorization": "Bearer kvk_12345678_nope0secret"}, 404),
        ("DELETE", f"{API}/uploads/7", {"Authorization": f"Bearer {key}"}, 405),
    ]
    for method, path, sent, status in asked:
        answer = client.request(method, path, headers=sent)
        assert answer.status_code == status, (method, path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    app.state.audit.flush()
    assert [(e.method, e.route, e.status, e.subject, e.role) for e in stored(app)] == [
        ("DELETE", f"{API}/uploads/{{upload_id}}", 405, subject, "trust"),
        ("PUT", f"{API}/releases/{{number}}", 405, subject, "trust"),
        ("PATCH", f"{API}/audit", 405, subject, "trust"),
        ("GET", "(no route)", 404, subject, "trust"),
        # An unknown key, as on a served route: unauthenticated; a revoked one by its client.
        ("GET", "(no route)", 404, "unauthenticated", "none"),
        ("DELETE", f"{API}/uploads/{{upload_id}}", 405, f"key:{revoked.id}", "none"),
    ]
    assert "nope0secret" not in repr(stored(app))
    assert key not in repr(stored(app))


class UvicornAccessLog:
    """What uvicorn does for its access log: one line on `uvicorn.access` as the response starts,
    with the path and query as sent (`get_path_with_query_string`), in the request's task."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def logging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                logging.getLogger("uvicorn.access").info(
                    '%s - "%s %s HTTP/%s" %d',
                    get_client_addr(scope),
                    scope["method"],
                    get_path_with_query_string(scope),
                    scope["http_version"],
                    message["status"],
                )
            await send(message)

        await self.app(scope, receive, logging_send)


def test_the_access_log_line_carries_the_audit_rows_query(
    app: FastAPI,
    headers: dict[str, Headers],
    publish: ReleaseWriter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The line showed `safe_query` alone: no path parameter ({upload_id}=1, {orgnr}=...), no
    # created upload, though the README promised the audit's query.
    publish(1)
    registry = headers["registry"]
    asked: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"{API}/uploads/1", {}),
        ("GET", f"{API}/releases/1", {}),
        ("GET", f"{API}/providers/983974880/profile?release=1&x=01019000083", {}),
        ("GET", f"{API}/providers/01019000083/profile?release=1", {}),
        ("GET", f"{API}/indicators/results?indicator=plan&release=01019000083", {}),
        ("GET", f"{API}/uploads?status=P-01019000083&limit=2", {}),
        (
            "POST",
            f"{API}/uploads",
            {
                "files": {"file": ("basis.csv", b"x;y\n1;2\n", "text/csv")},
                "data": {"form": "basis"},
            },
        ),
        ("GET", f"{API}/no-such/01019000083?a=1", {}),
        ("GET", "/health?x=01019000083", {}),
    ]
    with (
        caplog.at_level(logging.INFO, logger="uvicorn.access"),
        TestClient(UvicornAccessLog(app), raise_server_exceptions=False) as client,
    ):
        for method, path, extra in asked:
            client.request(method, path, headers=registry, **extra)
        app.state.audit.flush()
        events = stored(app)
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(lines) == len(asked)
    # Every audited request's line shows its row's route and query, exactly.
    assert len(events) == len(asked) - 1  # /health is not audited
    for line, event in zip(lines[:-1], events, strict=True):
        shown = event.route + ("?" + event.query if event.query else "")
        assert f'"{event.method} {shown} HTTP/1.1" {event.status}' in line, (line, event)
    created = events[6]
    assert created.status == 202
    assert created.query.startswith("{upload_id}=")
    assert [e.query for e in events] == [
        "{upload_id}=1",
        "{number}=1",
        "{orgnr}=983974880&release=1&<unknown>=<withheld>",
        "{orgnr}=<withheld>&release=1",
        "indicator=plan&release=<withheld>",
        "status=<withheld>&limit=2",
        created.query,
        "<unknown>=<withheld>",
    ]
    assert lines[-1].endswith('"GET /health?<unknown>=<withheld> HTTP/1.1" 200')
    assert "01019000083" not in "\n".join(lines)


def test_a_quote_in_the_query_keeps_the_rows_query_on_the_line(app: FastAPI) -> None:
    # uvicorn writes a '"' of the query as %22 (`get_path_with_query_string`): the line lost the
    # created upload the request's audit row names, the query no longer being the one answered.
    answered = ANSWERED_QUERY.set(("POST", f"{API}/uploads", "{upload_id}=2&<unknown>=<withheld>"))
    try:
        args = ("127.0.0.1:5000", "POST", f"{API}/uploads?a=%221%22", "1.1", 202)
        record = logging.LogRecord(
            "uvicorn.access", logging.INFO, __file__, 0, '%s - "%s %s HTTP/%s" %d', args, None
        )
        assert AccessLogPaths(app).filter(record)
    finally:
        ANSWERED_QUERY.reset(answered)
    assert record.getMessage() == (
        f'127.0.0.1:5000 - "POST {API}/uploads?{{upload_id}}=2&<unknown>=<withheld> HTTP/1.1" 202'
    )


def test_a_body_value_is_kept_only_when_plain_and_short_of_an_identity_number() -> None:
    values = ["983974678", "18-24", "01019000083", "0101900008", "a b", "Ø"]
    assert body_part("filters.provider", values) == (
        "filters.provider=983974678,18-24,<withheld>,<withheld>,<withheld>,<withheld>"
    )
