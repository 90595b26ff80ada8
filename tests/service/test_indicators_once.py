"""Two processes filling in a release's missing indicator results compute them both, but write
and index them once: the second finds the file the first wrote under the write locks."""

from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

import indicators.engine
from etl.release import publish_release
from etl.warehouse import Warehouse
from indicators.results import RESULTS_FILE
from schemas.catalog import IndicatorRun
from schemas.forms import Form
from service.publishing import ensure_indicators
from service.settings import Settings
from tests.conftest import ExtractWriter, episode_row, load_ok


def test_results_missing_in_two_processes_are_written_and_indexed_once(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
    catalog_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-1")])
    load_ok(path, Form.BASIS, warehouse, session, key, commit=True)
    publish_release(warehouse, warehouse.releases_dir, session, note="no results")
    session.commit()
    real_compute = indicators.engine.compute
    others: list[list[int]] = []

    def compute(*args: Any, **kwargs: Any) -> pa.Table:
        table = real_compute(*args, **kwargs)
        if not others:  # another process, meanwhile, finds the results missing too
            others.append([])
            with Session(catalog_engine, expire_on_commit=False) as other:
                others[0] = ensure_indicators(settings, other)
                other.commit()
        return table

    monkeypatch.setattr(indicators.engine, "compute", compute)

    with Session(catalog_engine, expire_on_commit=False) as first:
        computed = ensure_indicators(settings, first)
        first.commit()

    assert others == [[1]]
    assert computed == []  # the other wrote them first
    assert (settings.releases_dir / "1" / RESULTS_FILE).exists()
    with Session(catalog_engine) as fresh:
        runs = fresh.exec(select(IndicatorRun)).all()
        assert [r.release for r in runs] == [1]
