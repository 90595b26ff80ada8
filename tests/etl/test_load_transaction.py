"""A load holds no catalog transaction open while it reads and validates its file: on PostgreSQL
an open one sits `idle in transaction` all that time (and `idle_in_transaction_session_timeout`
ends the session, failing the load with no ledger row)."""

import time
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlmodel import Session, select

import etl.load
from etl.warehouse import Warehouse
from schemas.catalog import Upload
from schemas.forms import Form
from tests.conftest import POSTGRES_URL, ExtractWriter, episode_row, load_ok

# The catalog session's idle-in-transaction limit, and how long validation takes here.
IDLE_LIMIT_MS = 500
VALIDATION_SECONDS = 1.5


def test_no_catalog_transaction_is_open_while_the_file_is_validated(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bool] = []
    real_validate = etl.load.validate_extract

    def validate_extract(*args: Any, **kwargs: Any) -> Any:
        seen.append(session.in_transaction())
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(etl.load, "validate_extract", validate_extract)
    path = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-1")])
    load_ok(path, Form.BASIS, warehouse, session, key, commit=True)
    assert seen == [False]


@pytest.mark.postgres
@pytest.mark.parametrize("catalog_engine", ["postgresql"], indirect=True)  # PostgreSQL's timeout
def test_a_load_outlasting_the_idle_in_transaction_limit_loads(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    catalog_engine: Engine,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with catalog_engine.connect() as connection:
        schema = connection.execute(text("SELECT current_schema()")).scalar_one()
    limited = create_engine(
        POSTGRES_URL,
        connect_args={
            "options": f"-csearch_path={schema} "
            f"-cidle_in_transaction_session_timeout={IDLE_LIMIT_MS}"
        },
    )
    real_validate = etl.load.validate_extract

    def validate_extract(*args: Any, **kwargs: Any) -> Any:
        time.sleep(VALIDATION_SECONDS)
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(etl.load, "validate_extract", validate_extract)
    path = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-1")])
    try:
        with Session(limited, expire_on_commit=False) as session:
            upload = load_ok(path, Form.BASIS, warehouse, session, key, commit=True)
        with Session(catalog_engine) as fresh:
            (row,) = fresh.exec(select(Upload)).all()
            assert (row.id, row.status) == (upload.id, "loaded")
    finally:
        limited.dispose()
