"""The API's background load job (`service.uploads.run_load`) beside other writers, and after an
opt-out file: its request row is never taken for a dead load while its process lives (however long
it waits), and a replacement release gets its indicators."""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

import etl.load
from etl.ledger import INTERRUPTED, LOADING, api_uploader, hold_request, let_go, mirror, repair
from etl.read import Received
from etl.warehouse import Warehouse
from indicators.results import RESULTS_FILE
from schemas.catalog import IndicatorRun, Upload
from schemas.forms import Form
from service import app as app_module
from service import published, uploads
from service.publishing import publish
from service.settings import Settings
from service.uploads import create_request, run_load
from tests.conftest import ExtractWriter, episode_row


def _request(engine: Engine, form: Form, name: str = "extract.csv") -> int:
    with Session(engine) as session:
        request = create_request(
            session, form=form, filename=name, sha256="0" * 64, uploaded_by="registry-client"
        )
        session.commit()
        assert request.id is not None
        return request.id


def _held(settings: Settings, request_id: int) -> IO[bytes]:
    return hold_request(Warehouse(settings.warehouse_dir), request_id)


def _upload(engine: Engine, settings: Settings, source: Path, form: Form) -> Upload:
    """As `POST /uploads` does: the file in memory, a request row, the background job."""
    request_id = _request(engine, form, source.name)
    extract = Received(source.name, source.read_bytes())
    run_load(engine, settings, request_id, extract, form, _held(settings, request_id))
    with Session(engine) as session:
        request = session.get(Upload, request_id)
        assert request is not None
        return request


def test_another_writers_repair_leaves_a_running_upload_job_alone(
    write_extract: ExtractWriter,
    settings: Settings,
    catalog_engine: Engine,
    warehouse: Warehouse,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, str | None]] = []
    real_load = etl.load.load_file

    def load_file(*args: Any, **kwargs: Any) -> Upload:
        # Another writer (a load, a publish, an erasure) takes the locks and repairs meanwhile.
        with Session(catalog_engine) as other:
            repair(other, warehouse)
        with Session(catalog_engine) as poller:
            request = poller.get(Upload, request_id)
            assert request is not None
            seen.append((request.status, request.error))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(etl.load, "load_file", load_file)
    source = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-1")])
    request_id = _request(catalog_engine, Form.BASIS)
    extract = Received(source.name, source.read_bytes())

    run_load(catalog_engine, settings, request_id, extract, Form.BASIS, _held(settings, request_id))

    assert seen == [(LOADING, None)]
    with Session(catalog_engine) as session:
        request = session.get(Upload, request_id)
        assert request is not None
        assert (request.status, request.error, request.rows_accepted) == ("loaded", None, 1)


def test_a_repair_fails_the_request_of_a_dead_api_load_and_of_an_abandoned_one(
    settings: Settings, catalog_engine: Engine, warehouse: Warehouse
) -> None:
    """Dead: its load's ledger row left `running`. Abandoned: nobody holds its lock (its process
    died before the load reached the write locks), even a minute old. Live: its lock is held,
    even after two hours behind other loads (the repair failed it before, and the job then
    flipped it to loaded)."""
    dead = _request(catalog_engine, Form.BASIS, "dead.csv")
    abandoned = _request(catalog_engine, Form.BASIS, "abandoned.csv")
    live = _request(catalog_engine, Form.BASIS, "live.csv")
    waiting = _request(catalog_engine, Form.BASIS, "waiting.csv")
    held = [_held(settings, live), _held(settings, waiting)]
    # A process that died leaves its lock file behind, unheld.
    _held(settings, abandoned).close()
    now = datetime.now(UTC)
    with Session(catalog_engine) as session:
        for number, status, started in (
            (dead, LOADING, now),
            (abandoned, LOADING, now - timedelta(minutes=1)),
            (live, LOADING, now - timedelta(hours=2)),
            (waiting, "pending", now - timedelta(hours=2)),
        ):
            request = session.get(Upload, number)
            assert request is not None
            request.status, request.started_at = status, started
            session.add(request)
        # The ledger row of `dead`'s load, left `running` by its killed process.
        ledger = Upload(file_sha256="1" * 64, form="basis", filename="dead.csv")
        ledger.uploaded_by, ledger.status = api_uploader(dead), "running"
        session.add(ledger)
        session.commit()

    with Session(catalog_engine) as session:
        repaired = repair(session, warehouse)

    assert len(repaired) == 1  # the ledger row
    with Session(catalog_engine) as session:
        statuses = {}
        for number in (dead, abandoned, live, waiting, repaired[0]):
            row = session.get(Upload, number)
            assert row is not None
            statuses[number] = (row.status, row.error)
    assert statuses == {
        dead: ("failed", INTERRUPTED),
        abandoned: ("failed", INTERRUPTED),
        live: (LOADING, None),
        waiting: ("pending", None),
        repaired[0]: ("failed", INTERRUPTED),
    }
    # The dead process's lock file is gone; the live ones stay until their jobs end.
    locks = sorted(p.name for p in (warehouse.root / "requests").iterdir())
    assert locks == sorted(f"{n}.lock" for n in (live, waiting))
    for handle in held:
        let_go(handle)
    assert list((warehouse.root / "requests").iterdir()) == []


def test_an_optout_uploaded_through_the_api_leaves_the_replacement_release_served(
    write_extract: ExtractWriter, settings: Settings, catalog_engine: Engine
) -> None:
    rows = [episode_row(Form.BASIS, 1, "P-1"), episode_row(Form.BASIS, 2, "P-2")]
    basis = _upload(catalog_engine, settings, write_extract(Form.BASIS, rows), Form.BASIS)
    assert basis.status == "loaded"
    with Session(catalog_engine, expire_on_commit=False) as session:
        manifest, _ = publish(settings, session, note="q1")
        session.commit()
    assert manifest.release == 1

    optout = write_extract(Form.OPTOUT, [episode_row(Form.OPTOUT, 1, "P-2")])
    request = _upload(catalog_engine, settings, optout, Form.OPTOUT)

    assert (request.status, request.rows_erased) == ("loaded", 1)
    with catalog_engine.connect() as connection:
        assert published.served_release(connection, None) == 2
    path, _ = published.results_path(settings, 2)
    assert path == str(settings.releases_dir / "2" / RESULTS_FILE)
    assert not (settings.releases_dir / "1" / RESULTS_FILE).exists()


def test_an_optout_upload_computes_the_replacement_results_before_it_is_served(
    write_extract: ExtractWriter,
    settings: Settings,
    catalog_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the job's later `ensure_indicators` step, the replacement release still has its
    results and their index row: they were computed under the load's locks (`before_commit`)."""
    rows = [episode_row(Form.BASIS, 1, "P-1"), episode_row(Form.BASIS, 2, "P-2")]
    _upload(catalog_engine, settings, write_extract(Form.BASIS, rows), Form.BASIS)
    with Session(catalog_engine, expire_on_commit=False) as session:
        publish(settings, session, note="q1")
        session.commit()
    monkeypatch.setattr(uploads, "_ensure_indicators", lambda *args: None)

    optout = write_extract(Form.OPTOUT, [episode_row(Form.OPTOUT, 1, "P-2")])
    request = _upload(catalog_engine, settings, optout, Form.OPTOUT)

    assert request.status == "loaded"
    assert (settings.releases_dir / "2" / RESULTS_FILE).exists()
    with Session(catalog_engine) as session:
        runs = [run.release for run in session.exec(select(IndicatorRun)).all()]
    assert sorted(runs) == [1, 2]


def test_a_repair_gives_an_abandoned_request_the_outcome_of_its_finished_load(
    settings: Settings, catalog_engine: Engine, warehouse: Warehouse
) -> None:
    """A job that died after its load was committed, before it told its request: nobody holds
    its lock, but its ledger row says loaded, so it is loaded (not failed and 'undone')."""
    request_id = _request(catalog_engine, Form.BASIS)
    with Session(catalog_engine) as session:
        request = session.get(Upload, request_id)
        assert request is not None
        request.status = LOADING
        request.started_at = datetime.now(UTC) - timedelta(hours=2)
        session.add(request)
        ledger = Upload(file_sha256="2" * 64, form="basis", filename="tmp1.csv", status="loaded")
        ledger.uploaded_by, ledger.rows_read, ledger.rows_accepted = api_uploader(request_id), 3, 2
        ledger.rows_quarantined = 1
        session.add(ledger)
        session.commit()
        ledger_id = ledger.id

    with Session(catalog_engine) as session:
        repair(session, warehouse)
    with Session(catalog_engine) as session:
        request = session.get(Upload, request_id)
        assert request is not None
        assert (request.status, request.error, request.loaded_as) == ("loaded", None, ledger_id)
        assert (request.rows_read, request.rows_accepted, request.rows_quarantined) == (3, 2, 1)


def test_a_job_failing_after_its_load_keeps_the_loads_outcome(
    write_extract: ExtractWriter,
    settings: Settings,
    catalog_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error after `load_file` committed (here: telling the request) does not mark a stored
    load failed."""

    def broken(request: Upload, loaded: Upload) -> None:
        monkeypatch.setattr(uploads, "mirror", real)  # only the first call fails
        raise RuntimeError("catalog hiccup")

    real = mirror
    monkeypatch.setattr(uploads, "mirror", broken)
    source = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-1")])
    request = _upload(catalog_engine, settings, source, Form.BASIS)
    assert (request.status, request.error, request.rows_accepted) == ("loaded", None, 1)
    assert request.loaded_as is not None


def test_a_server_starting_fails_the_requests_of_one_that_died(
    settings: Settings, catalog_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request left `loading` by a server killed mid-upload used to stay so until another
    writer ran; the next server's start-up repairs it in the
    background. A live request (its lock held) is left alone, and nothing is repaired (no write
    lock taken) when no request is abandoned."""
    abandoned = _request(catalog_engine, Form.BASIS, "abandoned.csv")
    live = _request(catalog_engine, Form.BASIS, "live.csv")
    held = _held(settings, live)
    _held(settings, abandoned).close()
    with Session(catalog_engine) as session:
        for number in (abandoned, live):
            request = session.get(Upload, number)
            assert request is not None
            request.status = LOADING
            session.add(request)
        session.commit()
    repairs: list[int] = []
    monkeypatch.setattr(app_module, "repair", lambda *a: repairs.append(1) or repair(*a))

    app_module.repair_abandoned(settings, catalog_engine)
    app_module.repair_abandoned(settings, catalog_engine)  # nothing abandoned now

    assert repairs == [1]
    with Session(catalog_engine) as session:
        statuses = {n: cast(Upload, session.get(Upload, n)).status for n in (abandoned, live)}
    assert statuses == {abandoned: "failed", live: LOADING}
    held.close()


def test_the_start_up_repair_runs_when_the_app_starts(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Settings] = []
    monkeypatch.setattr(app_module, "repair_abandoned", lambda s, _: started.append(s))
    with TestClient(app_module.create_app(settings)):
        deadline = time.monotonic() + 10
        while not started and time.monotonic() < deadline:  # a background thread
            time.sleep(0.01)
    assert started == [settings]
