"""Publishing beside erasures: a release being published is never missed by an erasure, and
indicators computed while an erasure retires their release are not written back into it."""

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

import indicators.engine
from etl.erasure import erase_patients
from etl.load import load_file
from etl.release import publish_release, read_manifest
from etl.warehouse import TABLES, Warehouse
from indicators.results import RESULTS_FILE
from schemas.catalog import Erasure, IndicatorRun, Release
from schemas.forms import Form
from schemas.organisations import Hierarchy
from service.publishing import ensure_indicators, publish, store_indicators
from service.settings import Settings
from tests.conftest import ExtractWriter, episode_row

KNOWN = frozenset(o.orgnr for o in Hierarchy.default().providers)
ERASED = "P-ERASE-PUBLISH-1312"
# How long the publish's indicator computation waits for the concurrent erasure to get the locks.
WAIT_FOR_LOCKS = 3.0


class _Signalling(Warehouse):
    """A warehouse that says when a writer holds its write locks."""

    def __init__(self, root: Path, releases_dir: Path) -> None:
        super().__init__(root, releases_dir)
        self.locked = threading.Event()

    @contextmanager
    def writing(self, tables: Sequence[str] = TABLES) -> Iterator[None]:
        with super().writing(tables):
            self.locked.set()
            yield


def _load_two_patients(
    write: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    rows = [episode_row(Form.BASIS, 1, "P-KEEP"), episode_row(Form.BASIS, 2, ERASED)]
    upload = load_file(
        write(Form.BASIS, rows), Form.BASIS, warehouse=warehouse, session=session, key=key,
        known_providers=KNOWN, today=date(2025, 11, 1),
    )  # fmt: skip
    assert upload.status == "loaded"
    session.commit()


def _nation_denominators(path: Path, indicator: str = "screening") -> list[int]:
    results = pq.read_table(path)
    mask = pc.and_(
        pc.equal(results["level"], "nation"), pc.equal(results["indicator_id"], indicator)
    )
    return [int(d) for d in results.filter(mask).column("denominator").to_pylist()]


def test_an_erasure_during_a_publish_retires_the_new_release(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
    catalog_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _load_two_patients(write_extract, warehouse, session, key)
    eraser_warehouse = _Signalling(warehouse.root, warehouse.releases_dir)
    erased: list[Erasure] = []

    def erase() -> None:
        with Session(catalog_engine, expire_on_commit=False) as other:
            erasure = erase_patients(
                [ERASED], warehouse=eraser_warehouse, session=other, key=key,
                releases_dir=warehouse.releases_dir,
            )  # fmt: skip
            other.commit()
            erased.append(erasure)

    eraser = threading.Thread(target=erase)
    real_compute = indicators.engine.compute

    def compute(*args: Any, **kwargs: Any) -> pa.Table:
        table = real_compute(*args, **kwargs)  # the release's files are read
        eraser.start()
        # The erasure runs now if it can get the locks (it then deletes and purges meanwhile).
        if eraser_warehouse.locked.wait(WAIT_FOR_LOCKS):
            eraser.join()
        return table

    monkeypatch.setattr(indicators.engine, "compute", compute)

    manifest, results = publish(settings, session, note="q1")
    session.commit()
    eraser.join()

    assert manifest.release == 1
    assert [e.releases_rebuilt for e in erased] == ["1->2"]
    with Session(catalog_engine) as fresh:
        releases = fresh.exec(select(Release).order_by(col(Release.number))).all()
        assert [(r.number, r.retired) for r in releases] == [(1, True), (2, False)]
    assert not results.exists()  # release 1's results counted the erased patient
    rebuilt = read_manifest(settings.releases_dir, 2)
    assert rebuilt.tables["basis"].row_count == 1
    assert all(Path(f).exists() for f in rebuilt.files("basis"))

    monkeypatch.setattr(indicators.engine, "compute", real_compute)
    with Session(catalog_engine, expire_on_commit=False) as other:
        assert ensure_indicators(settings, other) == [2]
        other.commit()
    assert _nation_denominators(settings.releases_dir / "2" / RESULTS_FILE) == [1]


def test_indicators_computed_while_an_erasure_retires_their_release_are_not_written(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
    catalog_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _load_two_patients(write_extract, warehouse, session, key)
    manifest = publish_release(warehouse, warehouse.releases_dir, session, note="no results")
    session.commit()
    real_compute = indicators.engine.compute

    def compute(*args: Any, **kwargs: Any) -> pa.Table:
        table = real_compute(*args, **kwargs)
        with Session(catalog_engine) as other:  # another process's erasure, meanwhile
            erase_patients(
                [ERASED], warehouse=warehouse, session=other, key=key,
                releases_dir=warehouse.releases_dir,
            )  # fmt: skip
            other.commit()
        return table

    monkeypatch.setattr(indicators.engine, "compute", compute)

    assert store_indicators(manifest, settings, session) is None

    assert not (settings.releases_dir / "1" / RESULTS_FILE).exists()
    session.commit()
    assert session.exec(select(IndicatorRun)).all() == []
    with Session(catalog_engine) as fresh:
        releases = fresh.exec(select(Release).order_by(col(Release.number))).all()
        assert [(r.number, r.retired) for r in releases] == [(1, True), (2, False)]


def test_a_publish_computes_the_results_a_replacement_release_was_left_without(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
) -> None:
    _load_two_patients(write_extract, warehouse, session, key)
    # As an erasure's replacement is left when its process dies before computing the indicators.
    publish_release(warehouse, warehouse.releases_dir, session, note="rebuilt after erasure")
    session.commit()
    assert not (settings.releases_dir / "1" / RESULTS_FILE).exists()

    manifest, results = publish(settings, session, note="q1")
    session.commit()

    assert manifest.release == 2
    assert results == settings.releases_dir / "2" / RESULTS_FILE
    for number in (1, 2):
        assert _nation_denominators(settings.releases_dir / str(number) / RESULTS_FILE) == [2]
    runs = session.exec(select(IndicatorRun).order_by(col(IndicatorRun.release))).all()
    assert [r.release for r in runs] == [1, 2]


def test_a_publish_stopped_as_its_commit_returns_leaves_its_results_indexed(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
    catalog_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The results' index row is committed with the release's row: a process stopped just after
    that commit (Ctrl-C, a kill) leaves release and index together. Before, the index was a
    second commit, and the served release's results were then never indexed (`ensure_indicators`
    skips a release whose results file exists)."""
    _load_two_patients(write_extract, warehouse, session, key)
    commit = Session.commit

    def commit_then_stop(self: Session) -> None:
        commit(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(Session, "commit", commit_then_stop)
    with pytest.raises(KeyboardInterrupt):
        publish(settings, session, note="q1")
    monkeypatch.undo()

    with Session(catalog_engine) as fresh:
        assert [r.number for r in fresh.exec(select(Release)).all()] == [1]
        runs = fresh.exec(select(IndicatorRun)).all()
        path = settings.releases_dir / "1" / RESULTS_FILE
        assert [(r.release, r.results_path, r.rows) for r in runs] == [
            (1, str(path), pq.read_metadata(path).num_rows)
        ]
