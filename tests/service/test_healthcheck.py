"""The container health check module against a real local HTTP server."""

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from service import healthcheck


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_healthy_server_exits_zero(server: int) -> None:
    assert healthcheck.main(["x", f"http://127.0.0.1:{server}/health"]) == 0


def test_unhealthy_answer_exits_one(server: int) -> None:
    assert healthcheck.main(["x", f"http://127.0.0.1:{server}/other"]) == 1


def test_nothing_listening_exits_one() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert healthcheck.main(["x", f"http://127.0.0.1:{port}/health"]) == 1


def test_refuses_remote_urls() -> None:
    with pytest.raises(ValueError, match="local"):
        healthcheck.check("http://example.org/health")
