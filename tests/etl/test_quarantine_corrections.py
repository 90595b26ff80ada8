"""A record sent again (same record_id and provider) replaces its earlier quarantine rows, in the
same atomic load: a correction clears the quarantine, a file loaded again does not double it."""

from functools import partial

import pytest
from sqlmodel import Session, col, select

from etl.load import LoadFailed, load_file
from etl.warehouse import QUARANTINE, Warehouse
from schemas.catalog import Upload
from schemas.forms import Form
from schemas.organisations import Hierarchy
from tests.conftest import LOAD_DAY, PROVIDER_A, PROVIDER_B, ExtractWriter, episode_row, load_ok

KNOWN = frozenset(o.orgnr for o in Hierarchy.default().providers)


# Each load committed, as a CLI load is.
_load = partial(load_ok, commit=True)


def _quarantine(warehouse: Warehouse) -> list[tuple[str, str, int, str]]:
    """(form, record_id, upload_id, check) of every quarantine row, sorted."""
    rows = warehouse.read(QUARANTINE, columns=["form", "record_id", "upload_id", "check"])
    return sorted(tuple(row.values()) for row in rows.to_pylist())  # type: ignore[misc]


def _basis(*rows: dict[str, str]) -> list[dict[str, str]]:
    return [episode_row(Form.BASIS, 1, "P1"), *rows]


def test_a_corrected_record_leaves_the_quarantine(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    b = Form.BASIS
    first = _load(write_extract(b, _basis(episode_row(b, 2, "P2", age="abc"))), b, warehouse,
                  session, key)  # fmt: skip
    assert _quarantine(warehouse) == [("basis", "b2", first.id, "age.type")]
    fixed = _load(write_extract(b, [episode_row(b, 2, "P2")]), b, warehouse, session, key)
    assert (fixed.rows_accepted, fixed.rows_quarantined) == (1, 0)
    assert sorted(warehouse.table(b).column("record_id").to_pylist()) == ["b1", "b2"]
    assert _quarantine(warehouse) == []
    # The first file's ledger row still says what became of its rows when it was loaded.
    session.expire_all()
    row = session.get(Upload, first.id)
    assert row is not None
    assert (row.rows_read, row.rows_accepted, row.rows_quarantined) == (2, 1, 1)


def test_a_record_quarantined_again_keeps_only_its_latest_failure(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    b = Form.BASIS
    _load(write_extract(b, _basis(episode_row(b, 2, "P2", age="abc"))), b, warehouse, session,
          key)  # fmt: skip
    again = _load(write_extract(b, [episode_row(b, 2, "P2", sex="7")]), b, warehouse, session,
                  key)  # fmt: skip
    assert _quarantine(warehouse) == [("basis", "b2", again.id, "sex.codes")]


def test_the_same_file_with_other_line_endings_does_not_double_the_quarantine(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    b = Form.BASIS
    wrong = [episode_row(b, 2, "P2", age="abc"), episode_row(b, 3, "P3", sex="7")]
    path = write_extract(b, _basis(*wrong))
    first = _load(path, b, warehouse, session, key)
    crlf = path.with_name("crlf.csv")
    crlf.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    second = _load(crlf, b, warehouse, session, key)  # another hash: not a duplicate
    assert (first.rows_quarantined, second.rows_quarantined) == (2, 2)
    assert _quarantine(warehouse) == [
        ("basis", "b2", second.id, "age.type"),
        ("basis", "b3", second.id, "sex.codes"),
    ]
    assert warehouse.count(b.value) == 1


def test_another_providers_record_of_that_record_id_leaves_the_quarantine_alone(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    b = Form.BASIS
    first = _load(write_extract(b, _basis(episode_row(b, 2, "P2", age="abc"))), b, warehouse,
                  session, key)  # fmt: skip
    other = [episode_row(b, 2, "Q2", provider_orgnr=PROVIDER_B)]  # B's own b2
    _load(write_extract(b, other), b, warehouse, session, key)
    stored = warehouse.table(b).sort_by("record_id")
    assert stored.column("provider_orgnr").to_pylist() == [PROVIDER_A, PROVIDER_B]
    assert _quarantine(warehouse) == [("basis", "b2", first.id, "age.type")]


def test_a_held_record_sent_again_is_held_once(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    m = Form.MEASUREMENT
    _load(write_extract(m, [episode_row(m, 2, "P2", use_days_30=3)]), m, warehouse, session, key)
    again = _load(write_extract(m, [episode_row(m, 2, "P2", use_days_30=7)]), m, warehouse,
                  session, key)  # fmt: skip
    assert _quarantine(warehouse) == [("measurement", "m2", again.id, "cross.no_intake")]


def test_a_failed_load_puts_the_cleared_rows_back(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = Form.BASIS
    first = _load(write_extract(b, _basis(episode_row(b, 2, "P2", age="abc"))), b, warehouse,
                  session, key)  # fmt: skip

    def broken(self: Warehouse, rows: object, *, upload_id: int | None) -> None:
        raise OSError("disk full")

    # b2 is stored and its quarantine row cleared (two Delta commits), then the new quarantine
    # rows (b3's) fail to be written: the load is undone whole.
    monkeypatch.setattr(Warehouse, "append_quarantine", broken)
    resent = [episode_row(b, 2, "P2"), episode_row(b, 3, "P3", age="abc")]
    with pytest.raises(LoadFailed):
        load_file(
            write_extract(b, resent), b, warehouse=warehouse, session=session, key=key,
            known_providers=KNOWN, today=LOAD_DAY,
        )  # fmt: skip
    assert _quarantine(warehouse) == [("basis", "b2", first.id, "age.type")]
    assert warehouse.table(b).column("record_id").to_pylist() == ["b1"]
    statuses = session.exec(select(Upload.status).order_by(col(Upload.id))).all()
    assert list(statuses) == ["loaded", "failed"]
