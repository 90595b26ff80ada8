"""`kvarus serve`: several worker processes, every request still audited."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import Session, col, func, select
from typer.testing import CliRunner

from schemas.catalog import AuditEvent
from service.cli import app as cli
from service.settings import Settings
from tests.conftest import TEST_KEY
from tests.service.conftest import ReleaseWriter

REQUESTS = 40


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_workers_refuse_a_missing_key_before_starting(settings: Settings) -> None:
    result = CliRunner().invoke(
        cli, ["serve", "--workers", "2"], env={"KVARUS_DATA_DIR": str(settings.data_dir)}
    )
    assert result.exit_code == 2  # a configuration error
    assert "KVARUS_PSEUDONYM_KEY is not set" in result.output
    assert not (settings.data_dir / "catalog.sqlite3").exists()  # refused before anything


def test_workers_refuse_bad_oidc_settings_before_starting(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Had a worker found it, uvicorn's supervisor would restart the failing worker forever.
    import uvicorn

    def started(*_: object, **__: object) -> None:
        raise AssertionError("uvicorn started")

    monkeypatch.setattr(uvicorn, "run", started)
    env: dict[str, str | None] = {
        "KVARUS_DATA_DIR": str(settings.data_dir),
        "KVARUS_PSEUDONYM_KEY": TEST_KEY,
        "KVARUS_OIDC_ISSUER": "https://login.example",
        "KVARUS_OIDC_AUDIENCE": "kvarus",
        "KVARUS_OIDC_JWKS_URL": None,  # unset
    }
    result = CliRunner().invoke(cli, ["serve", "--workers", "2"], env=env)
    assert result.exit_code == 2  # a configuration error
    assert result.output == (
        "Configuration error: KVARUS_OIDC_JWKS_URL is required with an OIDC issuer\n"
    )
    assert not (settings.data_dir / "catalog.sqlite3").exists()  # refused before the catalog


@pytest.mark.slow
def test_two_workers_audit_every_request(
    app: FastAPI, publish: ReleaseWriter, settings: Settings, tmp_path: Path
) -> None:
    """Two worker processes start and build the app; every request is audited once.

    Which worker takes a connection is the kernel's choice: the test does not claim that both
    served requests, only that two were running (each logs its start-up) while all were audited.
    """
    publish(1)
    port = free_port()
    env = os.environ | {"KVARUS_DATA_DIR": str(settings.data_dir), "KVARUS_PSEUDONYM_KEY": TEST_KEY}
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=output,
            stderr=output,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        # A connection each: either worker may take it.
        for _ in range(REQUESTS):
            answer = httpx.get(f"{base}/api/v1/indicators/results", params={"indicator": "plan"})
            assert answer.status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)  # each worker's shutdown commits its queued rows
        server.wait(timeout=60)
    printed = log.read_text()
    # uvicorn: the supervisor logs "Started parent process [pid]", each worker "Started server
    # process [pid]" and, once its app's lifespan ran, "Application startup complete."
    workers = set(re.findall(r"Started server process \[(\d+)\]", printed))
    assert len(workers) == 2, printed
    assert str(server.pid) not in workers
    assert printed.count("Application startup complete.") == 2, printed
    with Session(app.state.engine) as session:
        audited = session.exec(
            select(func.count()).where(col(AuditEvent.route) == "/api/v1/indicators/results")
        ).one()
    assert audited == REQUESTS
