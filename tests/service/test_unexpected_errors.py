"""What the server logs under uvicorn (in a child process): no exception message, no typed
value from a path or a query."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import TEST_KEY

SECRET = "01019000083"

# Serves the app on a free port with uvicorn's own logging (as `kvarus serve` does), makes the
# indicator catalogue raise an error quoting a value, asks for it, and prints the answer.
SERVER = textwrap.dedent(
    f"""
    import socket, threading, time

    import httpx
    import uvicorn

    from service.app import create_app
    from service.routers import indicators

    def broken():
        raise RuntimeError("cannot read /data/patient-{SECRET}.csv")

    indicators.load_catalogue = broken
    app = create_app()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    answer = httpx.get(f"http://127.0.0.1:{{port}}/api/v1/indicators")
    print("ANSWER", answer.status_code, answer.headers["content-type"], answer.text, flush=True)
    typed = httpx.get(f"http://127.0.0.1:{{port}}/api/v1/providers/{SECRET}/profile?release=2&x={SECRET}")
    print("TYPED", typed.status_code, flush=True)
    server.should_exit = True
    thread.join(timeout=30)
    """
)


def test_uvicorn_logs_no_message_and_no_typed_value(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KVARUS_DATA_DIR": str(tmp_path / "var"),
        "KVARUS_PSEUDONYM_KEY": TEST_KEY,
    }
    done = subprocess.run(
        [sys.executable, "-c", SERVER],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert (
        'ANSWER 500 application/problem+json {"type":"https://kvarus.example/problems/internal",'
        '"title":"Internal error","status":500,"detail":null,"instance":"/api/v1/indicators"}'
    ) in done.stdout
    # The class and the frames are logged (the bug can be found), the message is not.
    assert "unexpected RuntimeError on GET /api/v1/indicators" in done.stderr
    assert "in broken" in done.stderr
    # The access log names the route template and the query as the audit stores it.
    assert "TYPED 422" in done.stdout
    assert (
        '"GET /api/v1/providers/{orgnr}/profile?{orgnr}=<withheld>&release=2&<unknown>=<withheld> '
        'HTTP/1.1" 422' in output
    )
    assert '"GET /api/v1/indicators HTTP/1.1" 500' in output
    assert SECRET not in output
    assert "Exception in ASGI application" not in output
