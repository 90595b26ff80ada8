"""Bodies are refused before they are read: anonymous requests to body routes, oversized bodies."""

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import starlette.formparsers
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from starlette.types import Message

from schemas.catalog import ApiClient
from service.app import MAX_BODY_BYTES, MULTIPART_OVERHEAD_BYTES
from service.settings import Settings
from tests.service.conftest import Headers

API = "/api/v1"
PROBLEM = "application/problem+json"
CHUNK = 64 * 1024


def chunks(total: int) -> Iterator[bytes]:
    """A body sent chunked (no Content-Length)."""
    for _ in range(total // CHUNK):
        yield b"x" * CHUNK


def post_chunked(
    app: FastAPI, path: str, headers: Headers, total: int, *, head: bytes = b""
) -> tuple[int, int, dict[str, Any]]:
    """POST `head` and then `total` bytes in 64 KiB messages, without Content-Length, straight
    to the ASGI app (the test client hands a body over in one message). The status, the body
    bytes the app pulled, and the JSON answer."""
    content_type = headers.get("content-type", "application/json")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"transfer-encoding", b"chunked"),
            (b"content-type", content_type.encode()),
            *[
                (k.lower().encode(), v.encode())
                for k, v in headers.items()
                if k.lower() != "content-type"
            ],
        ],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "state": {},
        "app": app,
    }
    messages = [head, *chunks(total)] if head else list(chunks(total))
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        if not messages:
            return {"type": "http.disconnect"}
        body = messages.pop(0)
        pulled += len(body)
        return {"type": "http.request", "body": body, "more_body": bool(messages)}

    async def send(message: Message) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, pulled, json.loads(body)


@pytest.fixture
def spooled(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Bytes Starlette's multipart parser wrote into upload files."""
    seen = {"bytes": 0}
    original = starlette.formparsers.MultiPartParser.on_part_data

    def counting(self: Any, data: bytes, start: int, end: int) -> None:
        seen["bytes"] += end - start
        original(self, data, start, end)

    monkeypatch.setattr(starlette.formparsers.MultiPartParser, "on_part_data", counting)
    return seen


def audit(client: TestClient, headers: dict[str, Headers]) -> list[tuple[str, str, int]]:
    items = client.get(f"{API}/audit", headers=headers["registry"]).json()["items"]
    return [(e["route"], e["subject"], e["status"]) for e in reversed(items)]


def key_subject(app: FastAPI, headers: dict[str, Headers], role: str) -> str:
    """The audit subject of the fixture's key of `role`: `key:<its client id>`."""
    prefix = headers[role]["Authorization"].removeprefix("Bearer kvk_").split("_")[0]
    with Session(app.state.engine) as session:
        client = session.exec(select(ApiClient).where(ApiClient.key_prefix == prefix)).one()
    return f"key:{client.id}"


class TestAnonymousBodies:
    def test_upload_without_credentials_is_401_unread(
        self, client: TestClient, headers: dict[str, Headers], spooled: dict[str, int]
    ) -> None:
        answer = client.post(
            f"{API}/uploads",
            files={"file": ("x.csv", b"a;b\n" * 300_000, "text/csv")},
            data={"form": "basis"},
        )
        assert answer.status_code == 401
        assert answer.headers["content-type"] == PROBLEM
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["title"] == "Not authenticated"
        assert spooled["bytes"] == 0
        assert audit(client, headers) == [(f"{API}/uploads", "unauthenticated", 401)]

    def test_aggregate_without_credentials_reads_no_chunk(
        self, app: FastAPI, client: TestClient, headers: dict[str, Headers]
    ) -> None:
        status, pulled, answer = post_chunked(app, f"{API}/aggregates", {}, 8 * MAX_BODY_BYTES)
        assert status == 401
        assert answer["title"] == "Not authenticated"
        assert pulled == 0
        assert audit(client, headers) == [(f"{API}/aggregates", "unauthenticated", 401)]

    def test_reading_routes_stay_open(self, client: TestClient) -> None:
        # GET routes take no body: anonymous reads are still answered (here: 404, no release).
        assert client.get(f"{API}/indicators/results").status_code == 404
        assert client.get(f"{API}/indicators").status_code == 200


class TestSizeLimits:
    def test_declared_length_over_the_limit_is_413_at_once(
        self, app: FastAPI, client: TestClient, headers: dict[str, Headers]
    ) -> None:
        answer = client.post(
            f"{API}/aggregates",
            content=b"{" + b" " * MAX_BODY_BYTES + b"}",
            headers={**headers["researcher"], "content-type": "application/json"},
        )
        assert answer.status_code == 413
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json() == {
            "type": "https://kvarus.example/problems/payload-too-large",
            "title": "Payload too large",
            "status": 413,
            "detail": f"the request body exceeds {MAX_BODY_BYTES} bytes",
            "instance": f"{API}/aggregates",
        }
        # The key was checked first (before any body byte): the row names the researcher.
        assert audit(client, headers) == [
            (f"{API}/aggregates", key_subject(app, headers, "researcher"), 413)
        ]

    def test_chunked_body_is_stopped_past_the_limit(
        self, app: FastAPI, client: TestClient, headers: dict[str, Headers]
    ) -> None:
        status, pulled, answer = post_chunked(
            app, f"{API}/aggregates", headers["researcher"], 16 * MAX_BODY_BYTES
        )
        assert status == 413
        assert answer["title"] == "Payload too large"
        assert pulled == MAX_BODY_BYTES + CHUNK  # stopped at the first chunk past the limit
        # Refused while the body was read, after the key was checked: the row names the caller.
        assert audit(client, headers) == [
            (f"{API}/aggregates", key_subject(app, headers, "researcher"), 413)
        ]

    def test_upload_limit_follows_the_settings(
        self,
        app: FastAPI,
        settings: Settings,
        headers: dict[str, Headers],
        spooled: dict[str, int],
    ) -> None:
        app.state.settings = settings.model_copy(update={"max_upload_bytes": 1000})
        limit = 1000 + MULTIPART_OVERHEAD_BYTES
        with TestClient(app, raise_server_exceptions=False) as client:
            declared = client.post(
                f"{API}/uploads",
                files={"file": ("x.csv", b"a;b\n" * 1_000_000, "text/csv")},
                data={"form": "basis"},
                headers=headers["registry"],
            )
            assert declared.status_code == 413
            # The limit the user set (KVARUS_MAX_UPLOAD_BYTES), not the body's allowance.
            assert declared.json()["detail"] == "the file exceeds the limit of 1000 bytes"
            assert spooled["bytes"] == 0
            boundary = "kvarusboundary"
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="x.csv"\r\nContent-Type: text/csv\r\n\r\n'
            ).encode()
            status, pulled, answer = post_chunked(
                app,
                f"{API}/uploads",
                {
                    **headers["registry"],
                    "content-type": f"multipart/form-data; boundary={boundary}",
                },
                4 * 1024 * 1024,
                head=head,
            )
            assert status == 413
            assert answer["title"] == "Payload too large"
            assert answer["detail"] == "the file exceeds the limit of 1000 bytes"
            assert pulled <= limit + CHUNK
            assert spooled["bytes"] <= limit
            # Under the gate's limit the upload's own check still answers (the file is > 1000).
            small = client.post(
                f"{API}/uploads",
                files={"file": ("x.csv", b"x" * 2000, "text/csv")},
                data={"form": "basis"},
                headers=headers["registry"],
            )
            assert small.status_code == 413
            assert small.json()["detail"] == "the file exceeds the limit of 1000 bytes"
            assert not (settings.data_dir / "incoming").exists()
