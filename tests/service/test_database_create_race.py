"""Processes that start together on an empty PostgreSQL catalog all create it, none fails.

Each found no table (another's was not committed yet) and created it: all but one failed with a
duplicate key of the table's row type in `pg_type`. Several `kvarus` commands, or `kvarus serve
--workers N`, on a new database.
"""

import multiprocessing
import uuid
from pathlib import Path
from threading import Barrier

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

from service.database import make_engine
from service.settings import Settings
from tests.conftest import POSTGRES_URL, _postgres_reachable

PROCESSES = 4
ROUNDS = 3  # each round failed 2 or 3 of its 4 processes before
SERVER = POSTGRES_URL.rsplit("/", 1)[0]


def _make_engine_after(barrier: Barrier, url: str, data_dir: str) -> str:
    """`make_engine` on `url` once every process is ready; "ok" or the error's first line."""
    settings = Settings(data_dir=Path(data_dir), database_url=url)
    barrier.wait()
    try:
        make_engine(settings).dispose()
    except Exception as error:  # reported to the test, which names it
        return f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return "ok"


@pytest.mark.postgres
def test_processes_creating_an_empty_catalog_together_all_succeed(tmp_path: Path) -> None:
    if not _postgres_reachable():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    context = multiprocessing.get_context("spawn")  # no inherited engine or connection
    try:
        with context.Manager() as manager, context.Pool(PROCESSES) as pool:
            for _ in range(ROUNDS):
                name = f"kvarus_create_race_{uuid.uuid4().hex[:12]}"
                with admin.connect() as connection:
                    connection.execute(text(f'CREATE DATABASE "{name}"'))
                try:
                    url = f"{SERVER}/{name}"
                    barrier = manager.Barrier(PROCESSES)
                    args = (barrier, url, str(tmp_path / "var"))
                    results = pool.starmap(_make_engine_after, [args] * PROCESSES)
                    assert results == ["ok"] * PROCESSES
                    catalog = create_engine(url)
                    try:
                        tables = set(inspect(catalog).get_table_names())
                    finally:
                        catalog.dispose()
                    assert tables == set(SQLModel.metadata.tables)
                finally:
                    with admin.connect() as connection:
                        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
