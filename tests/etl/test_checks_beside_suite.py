"""The checks against the warehouse run beside the validation suite (`etl.load._against_warehouse`,
started before the locks are taken): their result stands only where it is the result of checking
under the locks, and is checked again otherwise."""

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

import etl.load
from etl.load import load_file
from etl.warehouse import QUARANTINE, Warehouse
from schemas.forms import Form
from tests.conftest import LOAD_DAY, PROVIDER_A, PROVIDER_B, ExtractWriter, episode_row, load_ok

KNOWN = frozenset({PROVIDER_A, PROVIDER_B})


def _quarantined(warehouse: Warehouse) -> list[tuple[str, str]]:
    rows = warehouse.read(QUARANTINE).select(["record_id", "check"]).to_pylist()
    return sorted((row["record_id"], row["check"]) for row in rows)


def _stored(warehouse: Warehouse) -> list[tuple[str, str, int]]:
    rows = warehouse.table(Form.BASIS).select(["record_id", "provider_orgnr", "age"]).to_pylist()
    return sorted((row["record_id"], row["provider_orgnr"], row["age"]) for row in rows)


def test_a_record_stored_after_the_checks_beside_the_suite_is_checked_under_the_locks(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    catalog_engine: Engine,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Provider B's file sends b1 while provider A's b1 is stored between B's checks beside the
    suite (which found an empty warehouse) and B's write: B's b1 is quarantined as another
    provider's record, as if A's had been stored first; it does not supersede A's."""
    checked = threading.Event()
    original = etl.load._against_warehouse
    calls: list[int] = []

    def against_warehouse(rows: Any, form: Form, store: Warehouse) -> Any:
        result = original(rows, form, store)
        calls.append(rows.num_rows)
        checked.set()
        return result

    monkeypatch.setattr(etl.load, "_against_warehouse", against_warehouse)
    a_file = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P1", age="40")])

    def progress(step: str, rows: int) -> None:
        if step == "validated":
            assert checked.wait(30)
            with Session(catalog_engine, expire_on_commit=False) as other:
                load_ok(a_file, Form.BASIS, warehouse, other, key, commit=True)

    b_rows = [
        episode_row(Form.BASIS, 1, "Q1", provider_orgnr=PROVIDER_B),
        episode_row(Form.BASIS, 2, "Q2", provider_orgnr=PROVIDER_B),
    ]
    upload = load_file(
        write_extract(Form.BASIS, b_rows), Form.BASIS, warehouse=warehouse, session=session,
        key=key, known_providers=KNOWN, today=LOAD_DAY, progress=progress,
    )  # fmt: skip

    assert (upload.status, upload.rows_accepted, upload.rows_quarantined) == ("loaded", 1, 1)
    assert _stored(warehouse) == [("b1", PROVIDER_A, 40), ("b2", PROVIDER_B, 34)]
    assert _quarantined(warehouse) == [("b1", "record_id.other_provider")]
    # B's two rows beside its suite, A's one row, B's two rows again under the locks.
    assert calls == [2, 1, 2]


def test_the_checks_against_the_warehouse_see_only_the_rows_that_passed_the_suite(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    """b2 fails the suite (age not a number): b1 is not compared with it. Checked beside the
    suite, with every row of the file, b1's age would differ from b2's (none) in the same
    episode."""
    rows = [
        episode_row(Form.BASIS, 1, "P1"),
        episode_row(Form.BASIS, 2, "P1", episode_id="e1", age="abc"),
    ]
    upload = load_ok(write_extract(Form.BASIS, rows), Form.BASIS, warehouse, session, key)

    assert (upload.rows_accepted, upload.rows_quarantined) == (1, 1)
    assert _stored(warehouse) == [("b1", PROVIDER_A, 34)]
    assert _quarantined(warehouse) == [("b2", "age.type")]


def test_checks_beside_the_suite_that_fail_are_run_again_under_the_locks(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A file vacuumed away while the checks beside the suite read it, say: the load does not
    fail, and checks again."""
    load_ok(write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P1")]), Form.BASIS,
            warehouse, session, key)  # fmt: skip
    original = etl.load._against_warehouse
    calls: list[int] = []

    def against_warehouse(rows: Any, form: Form, store: Warehouse) -> Any:
        calls.append(rows.num_rows)
        if len(calls) == 1:
            raise FileNotFoundError("gone")
        return original(rows, form, store)

    monkeypatch.setattr(etl.load, "_against_warehouse", against_warehouse)
    rows = [
        episode_row(Form.BASIS, 5, "P5", episode_id="e1", age="50"),  # A's episode e1, age 34
        episode_row(Form.BASIS, 6, "P6"),
    ]
    upload = load_ok(write_extract(Form.BASIS, rows), Form.BASIS, warehouse, session, key)

    assert calls == [2, 2]
    assert (upload.rows_accepted, upload.rows_quarantined) == (1, 1)
    assert _quarantined(warehouse) == [("b5", "cross.inconsistent_demographics")]
