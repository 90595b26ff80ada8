"""A second one-year follow-up of an episode (another record_id) is quarantined at load, against
the warehouse and within a file: the indicators count follow-up rows as episodes."""

from datetime import date
from pathlib import Path

from sqlmodel import Session

from etl.load import load_file
from etl.warehouse import QUARANTINE, Warehouse
from schemas.catalog import Upload
from schemas.forms import Form
from schemas.organisations import Hierarchy
from tests.conftest import ExtractWriter, episode_row

KNOWN = frozenset(o.orgnr for o in Hierarchy.default().providers)


def _load(path: Path, form: Form, warehouse: Warehouse, session: Session, key: bytes) -> Upload:
    return load_file(
        path, form, warehouse=warehouse, session=session, key=key, known_providers=KNOWN,
        today=date(2025, 11, 1),
    )  # fmt: skip


def test_a_second_followup_of_an_episode_is_quarantined(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    for form in (Form.BASIS, Form.DISCHARGE):
        rows = [episode_row(form, n, f"P{n}") for n in (1, 2, 3)]
        _load(write_extract(form, rows), form, warehouse, session, key)
    first = _load(
        write_extract(Form.FOLLOWUP, [episode_row(Form.FOLLOWUP, n, f"P{n}") for n in (1, 3)]),
        Form.FOLLOWUP, warehouse, session, key,
    )  # fmt: skip
    assert (first.rows_accepted, first.rows_quarantined) == (2, 0)

    rows = [
        episode_row(Form.FOLLOWUP, 1, "P1", followup_status="2"),  # f1 re-sent: a correction
        episode_row(Form.FOLLOWUP, 3, "P3", record_id="f7"),  # a second follow-up of e3
        episode_row(Form.FOLLOWUP, 2, "P2"),
        episode_row(Form.FOLLOWUP, 2, "P2", record_id="f8"),  # two follow-ups of e2 in one file
    ]
    second = _load(write_extract(Form.FOLLOWUP, rows), Form.FOLLOWUP, warehouse, session, key)
    assert (second.rows_accepted, second.rows_quarantined, second.rows_superseded) == (1, 3, 1)
    stored = warehouse.table(Form.FOLLOWUP)
    stored = stored.sort_by("record_id")
    assert stored.column("record_id").to_pylist() == ["f1", "f3"]
    assert stored.column("followup_status").to_pylist() == [2, 1]
    quarantine = warehouse.read(QUARANTINE).sort_by("record_id")
    assert quarantine.column("record_id").to_pylist() == ["f2", "f7", "f8"]
    assert set(quarantine.column("check").to_pylist()) == {"cross.duplicate_followup"}
