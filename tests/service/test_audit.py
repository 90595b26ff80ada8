"""The audit writer: nothing queued is lost at shutdown, and the middleware's rows."""

import threading
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from schemas.catalog import AuditEvent, utcnow
from service.audit import AuditRow, AuditWriter
from tests.service.conftest import ReleaseWriter

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
