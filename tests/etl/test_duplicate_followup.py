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


def test_two_held_followups_of_an_episode_are_quarantined_as_duplicates_when_the_intake_comes(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    """Held for their missing intake, neither was stored, so neither was a duplicate yet; once
    the intake is there each is the other's second follow-up: both stay out of the table, and
    the quarantine says why (not, any more, that the intake is missing)."""
    for record_id in ("fA", "fB"):
        row = episode_row(Form.FOLLOWUP, 1, "P1", record_id=record_id)
        held = _load(write_extract(Form.FOLLOWUP, [row]), Form.FOLLOWUP, warehouse, session, key)
        assert (held.rows_accepted, held.rows_quarantined) == (0, 1)
    assert held.id is not None
    first_upload = held.id - 1
    _load(
        write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P1")]),
        Form.BASIS, warehouse, session, key,
    )  # fmt: skip

    assert warehouse.table(Form.FOLLOWUP).num_rows == 0
    quarantine = warehouse.read(QUARANTINE).sort_by("record_id")
    columns = ("record_id", "check", "upload_id", "episode_id")
    rows = [tuple(r[c] for c in columns) for r in quarantine.to_pylist()]
    assert rows == [
        ("fA", "cross.duplicate_followup", first_upload, "e1"),
        ("fB", "cross.duplicate_followup", held.id, "e1"),
    ]
