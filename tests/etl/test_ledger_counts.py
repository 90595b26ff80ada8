"""The ledger and the stored report agree on what a load quarantined and stored: the checks
against the warehouse are named in the report, and rows released from quarantine when their
intake arrives count as accepted by the upload that sent them."""

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from etl.erasure import erase_patients
from etl.load import LoadFailed, load_file
from etl.read import read_extract
from etl.warehouse import QUARANTINE, Warehouse
from schemas.catalog import Upload, ValidationRun
from schemas.forms import Form
from schemas.organisations import Hierarchy
from tests.conftest import LOAD_DAY, PROVIDER_A, PROVIDER_B, ExtractWriter, episode_row, load_ok
from validation import validate_extract
from validation.report import render_text

KNOWN = frozenset(o.orgnr for o in Hierarchy.default().providers)


def _report(session: Session, upload_id: int | None) -> dict[str, Any]:
    run = session.exec(select(ValidationRun).where(ValidationRun.upload_id == upload_id)).one()
    return dict(run.report)


def _check(report: dict[str, Any], check_id: str) -> dict[str, Any]:
    (check,) = [c for c in report["checks"] if c["check_id"] == check_id]
    return dict(check)


def test_report_names_the_rows_the_cross_record_checks_quarantined(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    d = Form.DISCHARGE
    basis = [episode_row(Form.BASIS, n, f"P{n}") for n in (1, 2, 7)]  # intake 10.01.2024
    load_ok(write_extract(Form.BASIS, basis), Form.BASIS, warehouse, session, key)
    rows = [
        episode_row(d, 1, "P1", discharge_date="01.01.2024"),  # before the intake
        episode_row(d, 2, "P2"),  # d2 and d5: two discharges of e2
        episode_row(d, 5, "P2", episode_id="e2"),
        episode_row(d, 3, "P3"),  # e3, e4: no intake
        episode_row(d, 4, "P4"),
        episode_row(d, 6, "P6", end_reason="x"),  # the suite's own error (end_reason.type)
        episode_row(d, 7, "P7"),  # stored
    ]
    path = write_extract(d, rows)
    upload = load_ok(path, d, warehouse, session, key)
    assert (upload.rows_read, upload.rows_accepted, upload.rows_quarantined) == (7, 1, 6)

    report = _report(session, upload.id)
    suite = validate_extract(read_extract(path, d), d, known_providers=KNOWN, today=LOAD_DAY)
    assert suite.to_report()["quarantined_rows"] == 1  # the suite alone knows d6 only
    assert report["quarantined_rows"] == 6
    suite_checks = suite.to_report()["checks"]
    assert report["checks"][: len(suite_checks)] == suite_checks
    assert report["checks"][len(suite_checks) :] == [
        {
            "check_id": "cross.before_intake",
            "column": None,
            "category": "plausibility",
            "severity": "error",
            "status": "failed",
            "failing_count": 1,
            "failing_percent": 100 / 7,
            "tolerated_percent": 0.0,
            "failing_record_ids": ["d1"],
            "failing_record_ids_total": 1,
        },
        {
            "check_id": "cross.duplicate_discharge",
            "column": None,
            "category": "plausibility",
            "severity": "error",
            "status": "failed",
            "failing_count": 2,
            "failing_percent": 200 / 7,
            "tolerated_percent": 0.0,
            "failing_record_ids": ["d2", "d5"],
            "failing_record_ids_total": 2,
        },
        {
            "check_id": "cross.no_intake",
            "column": None,
            "category": "completeness",
            "severity": "error",
            "status": "failed",
            "failing_count": 2,
            "failing_percent": 200 / 7,
            "tolerated_percent": 0.0,
            "failing_record_ids": ["d3", "d4"],
            "failing_record_ids_total": 2,
        },
    ]
    # The roll-up stays the suite's (see `with_warehouse_checks`).
    assert report["categories"] == suite.to_report()["categories"]
    text = render_text(report)
    assert text.splitlines()[0].endswith("accepted; 6 row(s) to quarantine")
    assert (
        "failed         error   cross.duplicate_discharge: 2 (28.57 %, tolerated 0 %) "
        "record ids: d2, d5" in text
    )


def test_report_names_a_record_id_stored_under_another_provider(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    load_ok(write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P1")]), Form.BASIS, warehouse,
          session, key)  # fmt: skip
    correction = [episode_row(Form.BASIS, 1, "Q1", provider_orgnr=PROVIDER_B, age="70")]
    upload = load_ok(write_extract(Form.BASIS, correction), Form.BASIS, warehouse, session, key)
    assert (upload.rows_accepted, upload.rows_quarantined) == (0, 1)
    report = _report(session, upload.id)
    assert report["quarantined_rows"] == 1
    check = _check(report, "record_id.other_provider")
    assert (check["category"], check["column"], check["severity"]) == (
        "conformance",
        "record_id",
        "error",
    )
    assert (check["failing_count"], check["failing_record_ids"]) == (1, ["b1"])


def test_report_lists_at_most_100_record_ids_of_a_warehouse_check(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    rows = [episode_row(Form.MEASUREMENT, n, f"P{n}") for n in range(101)]  # no intake at all
    upload = load_ok(write_extract(Form.MEASUREMENT, rows), Form.MEASUREMENT, warehouse, session,
                   key)  # fmt: skip
    check = _check(_report(session, upload.id), "cross.no_intake")
    assert check["failing_record_ids"] == [f"m{n}" for n in range(100)]
    assert (check["failing_count"], check["failing_record_ids_total"]) == (101, 101)


def _measurements_then_intake(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> tuple[Upload, Path]:
    """Basis e1; measurements m1 (e1), m2 and m3 (no intake yet); the intake of e2 to load."""
    load_ok(write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P1")]), Form.BASIS, warehouse,
          session, key)  # fmt: skip
    rows = [episode_row(Form.MEASUREMENT, n, f"P{n}") for n in (1, 2, 3)]
    measured = load_ok(write_extract(Form.MEASUREMENT, rows), Form.MEASUREMENT, warehouse, session,
                     key)  # fmt: skip
    session.commit()
    assert (measured.rows_read, measured.rows_accepted, measured.rows_quarantined) == (3, 1, 2)
    return measured, write_extract(Form.BASIS, [episode_row(Form.BASIS, 2, "P2")])


def test_released_rows_count_as_accepted_by_the_upload_that_sent_them(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    measured, intake = _measurements_then_intake(write_extract, warehouse, session, key)
    # An API request shows the outcome of the ledger row its job loaded (etl.ledger.mirror).
    request = Upload(
        file_sha256="-", form="measurement", filename="m.csv", status="loaded", rows_read=3,
        rows_accepted=1, rows_quarantined=2, loaded_as=measured.id,
    )  # fmt: skip
    session.add(request)
    session.commit()

    basis = load_ok(intake, Form.BASIS, warehouse, session, key)
    session.commit()
    session.expire_all()

    assert warehouse.count(Form.MEASUREMENT.value) == 2  # m1, and m2 released
    for row in (session.get(Upload, measured.id), session.get(Upload, request.id)):
        assert row is not None
        assert (row.rows_read, row.rows_accepted, row.rows_quarantined) == (3, 2, 1)
    # The basis upload's own counts are its file's.
    assert (basis.rows_read, basis.rows_accepted, basis.rows_quarantined) == (1, 1, 0)
    sent = _report(session, measured.id)
    assert (sent["quarantined_rows"], sent["released_rows"]) == (1, 1)
    assert _check(sent, "cross.no_intake")["failing_record_ids"] == ["m2", "m3"]  # as validated
    releasing = _report(session, basis.id)
    assert releasing["released"] == [{"form": "measurement", "upload_id": measured.id, "rows": 1}]
    assert "released: 1 held measurement row(s) of upload" in render_text(releasing)
    assert "released: 1 row(s) held for their intake" in render_text(sent)

    # m3's intake later: the same upload's counts move again.
    load_ok(write_extract(Form.BASIS, [episode_row(Form.BASIS, 3, "P3")]), Form.BASIS, warehouse,
          session, key)  # fmt: skip
    session.commit()
    session.expire_all()
    row = session.get(Upload, measured.id)
    assert row is not None
    assert (row.rows_accepted, row.rows_quarantined) == (3, 0)
    assert (_report(session, measured.id)["quarantined_rows"],
            _report(session, measured.id)["released_rows"]) == (0, 2)  # fmt: skip
    assert warehouse.count(QUARANTINE) == 0


def test_counts_of_a_release_are_undone_with_a_failedload_ok(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    measured, intake = _measurements_then_intake(write_extract, warehouse, session, key)

    def broken(*args: object, **kwargs: object) -> int:
        raise OSError("disk full")

    # The held row is written to the measurement table, then the quarantine update fails.
    monkeypatch.setattr(Warehouse, "release_quarantined", broken)
    with pytest.raises(LoadFailed):
        load_file(
            intake, Form.BASIS, warehouse=warehouse, session=session, key=key,
            known_providers=KNOWN, today=LOAD_DAY,
        )  # fmt: skip
    session.expire_all()
    uploads = session.exec(select(Upload).order_by(col(Upload.id))).all()
    assert [(u.status, u.rows_accepted, u.rows_quarantined) for u in uploads] == [
        ("loaded", 1, 0),
        ("loaded", 1, 2),
        ("failed", 0, 0),
    ]
    assert _report(session, measured.id)["quarantined_rows"] == 2
    assert "released_rows" not in _report(session, measured.id)
    assert warehouse.count(Form.MEASUREMENT.value) == 1
    assert warehouse.count(QUARANTINE) == 2


def test_a_held_record_of_another_provider_keeps_counting_as_quarantined(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    """A's f1 and B's f1, both held; both intakes arrive: A's is stored, B's stays quarantined
    (another provider's record_id): only A's upload counts a row accepted."""
    f = Form.FOLLOWUP
    a = load_ok(write_extract(f, [episode_row(f, 1, "P1")]), f, warehouse, session, key)
    b_row = episode_row(f, 2, "P2", record_id="f1", provider_orgnr=PROVIDER_B)
    b = load_ok(write_extract(f, [b_row]), f, warehouse, session, key)
    intakes = [
        episode_row(Form.BASIS, 1, "P1", provider_orgnr=PROVIDER_A),
        episode_row(Form.BASIS, 2, "P2", provider_orgnr=PROVIDER_B),
    ]
    basis = load_ok(write_extract(Form.BASIS, intakes), Form.BASIS, warehouse, session, key)
    session.commit()
    session.expire_all()
    counts = {
        u.id: (u.rows_accepted, u.rows_quarantined) for u in session.exec(select(Upload)).all()
    }
    assert counts == {a.id: (1, 0), b.id: (0, 1), basis.id: (2, 0)}
    assert _report(session, basis.id)["released"] == [
        {"form": "followup", "upload_id": a.id, "rows": 1}
    ]


def test_an_erasure_scrubs_the_record_ids_of_the_warehouse_checks(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    d = Form.DISCHARGE
    load_ok(write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P1")]), Form.BASIS, warehouse,
          session, key)  # fmt: skip
    rows = [episode_row(d, 1, "P1"), episode_row(d, 3, "P-ERASED"), episode_row(d, 4, "P4")]
    upload = load_ok(write_extract(d, rows), d, warehouse, session, key)
    session.commit()
    assert _check(_report(session, upload.id), "cross.no_intake")["failing_record_ids"] == [
        "d3",
        "d4",
    ]

    erase_patients(["P-ERASED"], warehouse=warehouse, session=session, key=key,
                   releases_dir=warehouse.releases_dir)  # fmt: skip

    with Session(session.get_bind()) as fresh:  # as committed
        check = _check(_report(fresh, upload.id), "cross.no_intake")
        # The counts stay: they describe the file as validated and name no one.
        assert (check["failing_count"], check["failing_record_ids"]) == (2, ["d4"])
