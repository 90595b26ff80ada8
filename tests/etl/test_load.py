"""load_file end to end: ledger, warehouse, quarantine, duplicates, supersession, rejection."""

import hashlib
import hmac
import json
import threading
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.compute as pc
import pytest
import typer
from sqlmodel import Session, select
from typer.testing import CliRunner

from etl.generate.register import generate_register
from etl.load import LoadFailed, load_file, patient_keys
from etl.privacy import is_identity_number
from etl.read import read_extract
from etl.warehouse import QUARANTINE, Warehouse
from schemas.catalog import Upload, ValidationRun
from schemas.forms import Form
from schemas.organisations import Hierarchy
from service.commands import etl as etl_commands
from tests.conftest import PROVIDER_A, PROVIDER_B, ExtractWriter, episode_row

KNOWN = frozenset(o.orgnr for o in Hierarchy.default().providers)
TODAY = date(2025, 11, 1)


def _load(path: Path, form: Form, warehouse: Warehouse, session: Session, key: bytes) -> Upload:
    return load_file(
        path, form, warehouse=warehouse, session=session, key=key, known_providers=KNOWN,
        today=TODAY,
    )  # fmt: skip


def _hmac(key: bytes, pseudonym: str) -> str:
    return hmac.new(key, pseudonym.encode(), hashlib.sha256).hexdigest()


def test_basis_is_stored_with_patient_key_year_and_ledger(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    rows = [
        episode_row(Form.BASIS, 1, "P-ANNA"),
        episode_row(Form.BASIS, 2, "P-ANNA", intake_date="2023-12-30", referral_date=""),
        episode_row(Form.BASIS, 3, "P-BO", provider_orgnr=PROVIDER_B),
    ]
    upload = _load(write_extract(Form.BASIS, rows), Form.BASIS, warehouse, session, key)

    assert (upload.status, upload.rows_read, upload.rows_accepted) == ("loaded", 3, 3)
    assert (upload.rows_quarantined, upload.rows_superseded) == (0, 0)
    assert upload.providers == f"{PROVIDER_A},{PROVIDER_B}"
    assert upload.finished_at is not None
    stored = warehouse.table(Form.BASIS).sort_by("record_id")
    assert "patient_pseudonym" not in stored.column_names
    assert stored.column("record_id").to_pylist() == ["b1", "b2", "b3"]
    assert stored.column("patient_key").to_pylist() == [
        _hmac(key, "P-ANNA"),
        _hmac(key, "P-ANNA"),
        _hmac(key, "P-BO"),
    ]
    assert stored.column("year").to_pylist() == [2024, 2023, 2024]
    assert stored.column("upload_id").to_pylist() == [upload.id] * 3
    assert stored.column("intake_date").to_pylist()[1] == date(2023, 12, 30)
    runs = session.exec(select(ValidationRun).where(ValidationRun.upload_id == upload.id)).all()
    assert len(runs) == 1
    assert runs[0].passed


def test_same_file_twice_is_a_duplicate_and_changes_nothing(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    path = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P1")])
    first = _load(path, Form.BASIS, warehouse, session, key)
    version = warehouse.version("basis")
    second = _load(path, Form.BASIS, warehouse, session, key)
    assert (first.status, second.status) == ("loaded", "duplicate")
    assert second.rows_accepted == 0
    assert warehouse.version("basis") == version
    assert warehouse.count("basis") == 1


def test_an_earlier_file_sent_again_after_a_correction_supersedes_it(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    # EXTRACT_SPEC.md: a re-sent record_id supersedes the earlier record. The old duplicate rule
    # (any earlier load of the same bytes) kept the correction's age 31 after v1 came again.
    v1 = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P1", age="30")])
    v2 = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P1", age="31")])
    other = write_extract(Form.BASIS, [episode_row(Form.BASIS, 9, "P9", provider_orgnr=PROVIDER_B)])
    statuses = [_load(path, Form.BASIS, warehouse, session, key).status for path in (v1, other, v1)]
    # Another provider's file in between does not make v1 new again.
    assert statuses == ["loaded", "loaded", "duplicate"]
    assert _load(v2, Form.BASIS, warehouse, session, key).rows_superseded == 1
    again = _load(v1, Form.BASIS, warehouse, session, key)
    assert (again.status, again.rows_accepted, again.rows_superseded) == ("loaded", 1, 1)
    stored = warehouse.table(Form.BASIS).sort_by("record_id")
    assert stored.column("age").to_pylist() == [30, 34]
    assert _load(v1, Form.BASIS, warehouse, session, key).status == "duplicate"


def test_resent_record_supersedes_and_identical_one_is_unchanged(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    first = [episode_row(Form.BASIS, n, f"P{n}") for n in (1, 2, 3)]
    _load(write_extract(Form.BASIS, first), Form.BASIS, warehouse, session, key)
    second = [
        episode_row(Form.BASIS, 1, "P1", age="35"),  # corrected: supersedes
        episode_row(Form.BASIS, 2, "P2"),  # identical: unchanged
        episode_row(Form.BASIS, 4, "P4"),  # new
    ]
    upload = _load(write_extract(Form.BASIS, second), Form.BASIS, warehouse, session, key)
    assert (upload.rows_accepted, upload.rows_superseded) == (3, 1)
    stored = warehouse.table(Form.BASIS).sort_by("record_id")
    assert stored.column("record_id").to_pylist() == ["b1", "b2", "b3", "b4"]
    assert stored.column("age").to_pylist() == [35, 34, 34, 34]
    # The corrected and the new row carry the second upload; the unchanged one keeps the first.
    ids = stored.column("upload_id").to_pylist()
    assert ids[0] == upload.id
    assert ids[3] == upload.id
    assert ids[1] == ids[2] != upload.id


def test_row_errors_go_to_quarantine_without_the_pseudonym(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    rows = [
        episode_row(Form.BASIS, 1, "P-OK"),
        episode_row(Form.BASIS, 2, "P-BAD", age="abc"),
    ]
    upload = _load(write_extract(Form.BASIS, rows), Form.BASIS, warehouse, session, key)
    assert (upload.status, upload.rows_accepted, upload.rows_quarantined) == ("loaded", 1, 1)
    assert warehouse.table(Form.BASIS).column("record_id").to_pylist() == ["b1"]
    quarantine = warehouse.read(QUARANTINE)
    assert quarantine.num_rows == 1
    row = quarantine.to_pylist()[0]
    assert (row["form"], row["record_id"], row["episode_id"]) == ("basis", "b2", "e2")
    assert row["check"] == "age.type"
    assert row["severity"] == "error"
    assert row["patient_key"] == _hmac(key, "P-BAD")
    values = json.loads(row["values"])
    assert values["patient_key"] == _hmac(key, "P-BAD")
    assert "patient_pseudonym" not in values
    assert "P-BAD" not in row["values"]
    assert values["age"] is None
    assert values["intake_date"] == "2024-01-10"


def test_row_held_for_missing_intake_is_released_when_the_intake_arrives(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    _load(
        write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P1")]),
        Form.BASIS, warehouse, session, key,
    )  # fmt: skip
    measurements = [episode_row(Form.MEASUREMENT, 1, "P1"), episode_row(Form.MEASUREMENT, 2, "P2")]
    held = _load(write_extract(Form.MEASUREMENT, measurements), Form.MEASUREMENT, warehouse,
                 session, key)  # fmt: skip
    assert (held.rows_accepted, held.rows_quarantined) == (1, 1)
    quarantine = warehouse.read(QUARANTINE)
    assert quarantine.column("check").to_pylist() == ["cross.no_intake"]
    assert quarantine.column("record_id").to_pylist() == ["m2"]

    _load(
        write_extract(Form.BASIS, [episode_row(Form.BASIS, 2, "P2")]),
        Form.BASIS, warehouse, session, key,
    )  # fmt: skip
    stored = warehouse.table(Form.MEASUREMENT).sort_by("record_id")
    assert stored.column("record_id").to_pylist() == ["m1", "m2"]
    assert stored.column("patient_key").to_pylist()[1] == _hmac(key, "P2")
    assert stored.column("year").to_pylist() == [2024, 2024]
    assert warehouse.read(QUARANTINE).num_rows == 0


def _held_then_intakes(
    steps: list[tuple[Form, list[dict[str, str]]]],
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
) -> tuple[list[tuple[str, str, str, int | None]], list[tuple[str, str]]]:
    """Load basis e1, then the steps; the stored measurements and discharges (record_id,
    provider, episode_id, use_days_30 or end_reason) and the quarantine (record_id, episode_id)."""
    steps = [(Form.BASIS, [episode_row(Form.BASIS, 1, "P1")]), *steps]
    for form, rows in steps:
        upload = _load(write_extract(form, rows), form, warehouse, session, key)
        assert upload.status == "loaded"
    records = warehouse.read(Form.MEASUREMENT.value).to_pylist()
    records += warehouse.read(Form.DISCHARGE.value).to_pylist()
    stored = [
        (
            r["record_id"],
            r["provider_orgnr"],
            r["episode_id"],
            r.get("use_days_30", r.get("end_reason")),
        )
        for r in records
    ]
    held = [(r["record_id"], r["episode_id"]) for r in warehouse.read(QUARANTINE).to_pylist()]
    return sorted(stored), sorted(held)


def test_a_record_held_twice_is_released_once_in_its_latest_version(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    m, b = Form.MEASUREMENT, Form.BASIS
    steps = [
        (m, [episode_row(m, 2, "P2", use_days_30=3)]),
        (m, [episode_row(m, 2, "P2", use_days_30=7)]),  # re-sent, intake still missing
        (b, [episode_row(b, 2, "P2")]),
    ]
    stored, held = _held_then_intakes(steps, write_extract, warehouse, session, key)
    assert stored == [("m2", PROVIDER_A, "e2", 7)]
    assert held == []


def test_an_older_held_version_never_replaces_the_latest(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    m, b = Form.MEASUREMENT, Form.BASIS
    steps = [
        (m, [episode_row(m, 7, "P7", use_days_30=1)]),  # m7 under e7: held
        (m, [episode_row(m, 7, "P7", episode_id="e8", use_days_30=2)]),  # re-sent under e8: held
        (b, [episode_row(b, 7, "P7")]),  # e7's intake: m7's latest version still waits for e8
    ]
    stored, held = _held_then_intakes(steps, write_extract, warehouse, session, key)
    assert stored == []
    # The re-sent version replaced the first in the quarantine (same record_id and provider).
    assert held == [("m7", "e8")]
    _load(write_extract(b, [episode_row(b, 8, "P7")]), b, warehouse, session, key)
    assert [
        (r["record_id"], r["episode_id"], r["use_days_30"])
        for r in warehouse.read(m.value).to_pylist()
    ] == [("m7", "e8", 2)]
    assert warehouse.read(QUARANTINE).num_rows == 0


def test_a_held_version_older_than_the_stored_record_is_dropped_not_released(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    m, b = Form.MEASUREMENT, Form.BASIS
    steps = [
        (m, [episode_row(m, 7, "P7", use_days_30=1)]),  # m7 under e7: held
        (m, [episode_row(m, 7, "P1", episode_id="e1", use_days_30=2)]),  # re-sent under e1: stored
        (b, [episode_row(b, 7, "P7")]),
    ]
    stored, held = _held_then_intakes(steps, write_extract, warehouse, session, key)
    assert stored == [("m7", PROVIDER_A, "e1", 2)]
    assert held == []


def test_releasing_one_providers_record_keeps_another_providers_held_record_of_that_id(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    m, b = Form.MEASUREMENT, Form.BASIS
    steps = [
        (m, [episode_row(m, 5, "P5")]),  # provider A's m5 under e5: held
        (m, [episode_row(m, 5, "Q5", provider_orgnr=PROVIDER_B, episode_id="e6")]),  # B's m5
        (b, [episode_row(b, 5, "P5")]),  # A's e5 arrives
    ]
    stored, held = _held_then_intakes(steps, write_extract, warehouse, session, key)
    assert stored == [("m5", PROVIDER_A, "e5", 3)]
    assert held == [("m5", "e6")]


def test_of_two_held_discharge_versions_the_latest_is_stored_when_both_intakes_arrive(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    d, b = Form.DISCHARGE, Form.BASIS
    steps = [
        (d, [episode_row(d, 3, "P3", end_reason=1)]),
        (d, [episode_row(d, 3, "P4", episode_id="e4", end_reason=2)]),
        (b, [episode_row(b, 3, "P3"), episode_row(b, 4, "P4")]),
    ]
    stored, held = _held_then_intakes(steps, write_extract, warehouse, session, key)
    assert stored == [("d3", PROVIDER_A, "e4", 2)]
    assert held == []


def test_fatal_check_rejects_the_file_and_writes_nothing_but_the_ledger(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    rows = [episode_row(Form.BASIS, 1, "P-SECRET"), episode_row(Form.BASIS, 1, "P-SECRET")]
    upload = _load(write_extract(Form.BASIS, rows), Form.BASIS, warehouse, session, key)
    assert upload.status == "rejected"
    assert upload.error is not None
    assert "record_id.unique" in upload.error
    assert "P-SECRET" not in upload.error
    assert upload.rows_accepted == 0
    assert not (warehouse.root / "basis").exists()
    statuses = session.exec(select(Upload.status)).all()
    assert list(statuses) == ["rejected"]


def test_a_rejected_file_is_answered_without_waiting_for_its_keys(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The re-keying thread is still at work when the suite rejects the file: the answer must
    # not wait for keys it will not use.
    release = threading.Event()
    finished: list[bool] = []

    def slow_keys(pseudonyms: Any, key: bytes) -> Any:
        release.wait(timeout=30)
        finished.append(True)
        return patient_keys(pseudonyms, key)

    monkeypatch.setattr("etl.load.patient_keys", slow_keys)
    rows = [episode_row(Form.BASIS, 1, "P-SECRET"), episode_row(Form.BASIS, 1, "P-SECRET")]
    try:
        upload = _load(write_extract(Form.BASIS, rows), Form.BASIS, warehouse, session, key)
        assert upload.status == "rejected"
        assert finished == []
    finally:
        release.set()


@pytest.mark.parametrize("column", ["unit_code", "provider_orgnr"])
def test_identity_number_rejects_the_file_without_echoing_it(
    column: str, write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    # The first 11-digit number from 01017000000 upward that passes both check digits.
    number = next(str(n) for n in range(1017000000, 1017100000) if is_identity_number(f"{n:011d}"))
    number = number.zfill(11)
    rows = [episode_row(Form.BASIS, 1, "P1", **{column: number})]
    upload = _load(write_extract(Form.BASIS, rows), Form.BASIS, warehouse, session, key)
    assert upload.status == "rejected"
    assert upload.error is not None
    assert column in upload.error
    assert number not in upload.error
    assert number not in upload.providers
    session.flush()
    assert number not in str([u.model_dump() for u in session.exec(select(Upload)).all()])
    assert not (warehouse.root / "basis").exists()


def test_npr_counts_merge_on_provider_and_year(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    first = [
        {"provider_orgnr": PROVIDER_A, "year": "2024", "episodes": "100"},
        {"provider_orgnr": PROVIDER_B, "year": "2024", "episodes": "50"},
    ]
    _load(write_extract(Form.NPR_COUNTS, first), Form.NPR_COUNTS, warehouse, session, key)
    second = [
        {"provider_orgnr": PROVIDER_A, "year": "2024", "episodes": "120"},
        {"provider_orgnr": PROVIDER_A, "year": "2025", "episodes": "10"},
    ]
    upload = _load(write_extract(Form.NPR_COUNTS, second), Form.NPR_COUNTS, warehouse, session,
                   key)  # fmt: skip
    assert (upload.rows_accepted, upload.rows_superseded) == (2, 1)
    stored = warehouse.table(Form.NPR_COUNTS).sort_by([("provider_orgnr", "ascending"),
                                                       ("year", "ascending")])  # fmt: skip
    assert stored.select(["provider_orgnr", "year", "episodes"]).to_pylist() == [
        {"provider_orgnr": PROVIDER_A, "year": 2024, "episodes": 120},
        {"provider_orgnr": PROVIDER_A, "year": 2025, "episodes": 10},
        {"provider_orgnr": PROVIDER_B, "year": 2024, "episodes": 50},
    ]
    assert pc.sum(stored.column("episodes")).as_py() == 180


def test_npr_counts_of_a_provider_outside_the_register_are_quarantined_not_the_file(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    # NPR counts every provider; EXTRACT_SPEC.md asks npr_counts only for 9 digits. One valid
    # orgnr outside the register's list rejected the whole file before.
    outside = "912345688"
    assert outside not in KNOWN
    rows = [
        {"provider_orgnr": PROVIDER_A, "year": "2024", "episodes": "100"},
        {"provider_orgnr": outside, "year": "2024", "episodes": "7"},
    ]
    upload = _load(write_extract(Form.NPR_COUNTS, rows), Form.NPR_COUNTS, warehouse, session, key)
    assert (upload.status, upload.rows_accepted, upload.rows_quarantined) == ("loaded", 1, 1)
    stored = warehouse.table(Form.NPR_COUNTS)
    assert stored.select(["provider_orgnr", "episodes"]).to_pylist() == [
        {"provider_orgnr": PROVIDER_A, "episodes": 100}
    ]
    quarantine = warehouse.read(QUARANTINE)
    assert quarantine.column("check").to_pylist() == ["provider_orgnr.known"]


def test_npr_counts_with_a_provider_and_year_twice_is_rejected(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    # Both rows would be stored under the table's key, and a correction would supersede both:
    # the coverage denominator doubled. Refused whole, as a record_id twice is.
    rows = [
        {"provider_orgnr": PROVIDER_A, "year": "2022", "episodes": "100"},
        {"provider_orgnr": PROVIDER_A, "year": "2022", "episodes": "100"},
        {"provider_orgnr": PROVIDER_B, "year": "2022", "episodes": "40"},
    ]
    upload = _load(write_extract(Form.NPR_COUNTS, rows), Form.NPR_COUNTS, warehouse, session, key)
    assert upload.status == "rejected"
    assert upload.error == "provider_year.unique: 2 of 3 rows failed (tolerated 0 %)"
    assert upload.rows_accepted == 0
    assert not (warehouse.root / "npr_counts").exists()
    correction = [{"provider_orgnr": PROVIDER_A, "year": "2022", "episodes": "120"}]
    loaded = _load(write_extract(Form.NPR_COUNTS, correction), Form.NPR_COUNTS, warehouse,
                   session, key)  # fmt: skip
    assert (loaded.status, loaded.rows_accepted, loaded.rows_superseded) == ("loaded", 1, 0)
    assert warehouse.table(Form.NPR_COUNTS).column("episodes").to_pylist() == [120]


def test_generated_register_quarantines_exactly_the_planted_errors(
    tmp_path: Path, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    summary = generate_register(tmp_path / "gen", episodes=300, seed=7, error_rate=0.05)
    planted: dict[str, dict[str, list[str]]] = json.loads(summary.planted_errors.read_text())
    today = summary.as_of
    for form in (Form.BASIS, Form.MEASUREMENT, Form.DISCHARGE, Form.FOLLOWUP, Form.NPR_COUNTS):
        upload = load_file(
            summary.paths[form], form, warehouse=warehouse, session=session, key=key,
            known_providers=KNOWN, today=today,
        )  # fmt: skip
        wrong = {rid for rids in planted.get(form.value, {}).values() for rid in rids}
        assert upload.status == "loaded"
        assert upload.rows_read == summary.rows[form]
        assert upload.rows_quarantined == len(wrong)
        assert upload.rows_accepted == summary.rows[form] - len(wrong)
    session.commit()

    quarantine = warehouse.read(QUARANTINE).to_pylist()
    found = {(row["form"], row["record_id"], row["check"]) for row in quarantine}
    for name, checks in planted.items():
        expected = {(name, rid, check) for check, rids in checks.items() for rid in rids}
        assert expected <= found  # every planted error is quarantined under its own check
        assert {r for f, r, _ in found if f == name} == {r for _, r, _ in expected}

    # The optout file erases its patients everywhere, quarantine included.
    optout = read_extract(summary.paths[Form.OPTOUT], Form.OPTOUT)
    keys = {_hmac(key, p) for p in optout.column("patient_pseudonym").to_pylist()}
    tables = ("basis", "measurement", "discharge", "followup", QUARANTINE)
    before = {t: warehouse.count(t) for t in tables}
    upload = load_file(
        summary.paths[Form.OPTOUT], Form.OPTOUT, warehouse=warehouse, session=session, key=key,
        known_providers=KNOWN, today=today,
    )  # fmt: skip
    session.commit()
    after = {t: warehouse.count(t) for t in before}
    assert upload.rows_erased == sum(before.values()) - sum(after.values())
    assert upload.rows_erased > 0
    for table in tables:
        stored = set(warehouse.read(table, columns=["patient_key"]).column(0).to_pylist())
        assert not stored & keys


def test_an_unexpected_error_is_reported_without_its_message(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("cannot parse 'P-SECRET'")

    monkeypatch.setattr("etl.load.validate_extract", broken)
    path = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-SECRET")])
    with pytest.raises(LoadFailed) as raised:
        _load(path, Form.BASIS, warehouse, session, key)
    assert raised.value.detail == (
        "The file could not be processed (ValueError); nothing was stored"
    )
    assert raised.value.__cause__ is None
    upload = session.exec(select(Upload)).one()
    assert (upload.status, upload.error) == ("failed", raised.value.detail)
    assert not (warehouse.root / "basis").exists()


def test_cli_load_release_erase_and_uploads(
    write_extract: ExtractWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KVARUS_DATA_DIR", str(tmp_path / "cli-var"))
    monkeypatch.setenv("KVARUS_PSEUDONYM_KEY", "cli-test-key-0123456789-0123456789")
    app = typer.Typer()
    etl_commands.register(app)
    runner = CliRunner()
    good = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-CLI-1"),
                                      episode_row(Form.BASIS, 2, "P-CLI-2", age="x")])  # fmt: skip
    result = runner.invoke(app, ["load", str(good), "--form", "basis"])
    assert result.exit_code == 0, result.output
    assert "upload 1: loaded; read 2, accepted 1, quarantined 1" in result.output

    twice = [episode_row(Form.BASIS, 3, "P-CLI-3"), episode_row(Form.BASIS, 3, "P-CLI-3")]
    result = runner.invoke(app, ["load", str(write_extract(Form.BASIS, twice)), "--form", "basis"])
    assert result.exit_code == 1
    assert "record_id.unique" in result.output
    assert "P-CLI-3" not in result.output

    result = runner.invoke(app, ["release", "--note", "cli"])
    assert result.exit_code == 0, result.output
    assert "release 1: basis 1, measurement 0" in result.output
    # Publishing computes the release's indicators (service.publishing.publish).
    results = Path(result.output.rsplit("indicators in ", 1)[1].split()[0])
    assert results.name == "indicators.parquet"
    assert results.is_file()
    result = runner.invoke(app, ["erase", "--pseudonym", "P-CLI-1"])
    assert result.exit_code == 0, result.output
    assert "erased 1 rows of 1 patient(s)" in result.output
    assert "1->2" in result.output
    result = runner.invoke(app, ["uploads"])
    assert result.exit_code == 0, result.output
    assert "rejected" in result.output
    assert "loaded" in result.output
    assert "P-CLI" not in result.output


def test_duckdb_never_spills_into_the_working_directory(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DuckDB's default temp_directory is `.tmp` in the working directory, created only when a
    # query spills: tiny data never spills, so each connection's setting is recorded as well.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    connect = duckdb.connect
    spill_dirs: list[str] = []

    def recording(*args: Any, **kwargs: Any) -> duckdb.DuckDBPyConnection:
        connection = connect(*args, **kwargs)
        rows = connection.sql("SELECT current_setting('temp_directory')").fetchall()
        spill_dirs.append(str(rows[0][0]))
        return connection

    monkeypatch.setattr(duckdb, "connect", recording)
    basis = [episode_row(Form.BASIS, n, f"P{n}") for n in (1, 2)]
    _load(write_extract(Form.BASIS, basis), Form.BASIS, warehouse, session, key)
    resent = [episode_row(Form.BASIS, 1, "P1", age="40"), episode_row(Form.BASIS, 3, "P3")]
    _load(write_extract(Form.BASIS, resent), Form.BASIS, warehouse, session, key)  # merge
    measurement = [episode_row(Form.MEASUREMENT, 1, "P1")]
    _load(write_extract(Form.MEASUREMENT, measurement), Form.MEASUREMENT, warehouse, session, key)
    assert warehouse.count("basis") == 3
    assert spill_dirs  # the loads did query through DuckDB
    for spill in spill_dirs:
        assert Path(spill).is_absolute()
        assert not Path(spill).resolve().is_relative_to(cwd.resolve())
        assert not Path(spill).exists()  # removed after the query
    assert list(cwd.iterdir()) == []


def test_a_record_id_of_another_provider_is_quarantined_not_superseded(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    first = [episode_row(Form.BASIS, n, f"P{n}") for n in (1, 2)]  # PROVIDER_A
    _load(write_extract(Form.BASIS, first), Form.BASIS, warehouse, session, key)
    other = [
        episode_row(Form.BASIS, 1, "Q1", provider_orgnr=PROVIDER_B, age="70"),  # A's b1
        episode_row(Form.BASIS, 3, "Q3", provider_orgnr=PROVIDER_B),
    ]
    upload = _load(write_extract(Form.BASIS, other), Form.BASIS, warehouse, session, key)
    assert upload.status == "loaded"
    assert (upload.rows_accepted, upload.rows_quarantined, upload.rows_superseded) == (1, 1, 0)
    stored = warehouse.table(Form.BASIS).sort_by("record_id")
    assert stored.column("record_id").to_pylist() == ["b1", "b2", "b3"]
    assert stored.column("provider_orgnr").to_pylist() == [PROVIDER_A, PROVIDER_A, PROVIDER_B]
    assert stored.column("age").to_pylist() == [34, 34, 34]
    quarantine = warehouse.read(QUARANTINE)
    assert quarantine.select(["record_id", "check", "severity"]).to_pylist() == [
        {"record_id": "b1", "check": "record_id.other_provider", "severity": "error"}
    ]
    # The owner still corrects its own record.
    own = [episode_row(Form.BASIS, 1, "P1", age="36")]
    upload = _load(write_extract(Form.BASIS, own), Form.BASIS, warehouse, session, key)
    assert (upload.rows_accepted, upload.rows_superseded) == (1, 1)


def _held_under_one_record_id(
    write: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes, *extra: dict[str, str]
) -> None:
    """Provider A's follow-up f1 (episode e1, and `extra` rows of A), then provider B's f1
    (episode e2), each held for its missing intake."""
    a = [episode_row(Form.FOLLOWUP, 1, "P1", record_id="f1"), *extra]
    b = [episode_row(Form.FOLLOWUP, 2, "P2", record_id="f1", provider_orgnr=PROVIDER_B)]
    for rows in (a, b):
        held = _load(write(Form.FOLLOWUP, rows), Form.FOLLOWUP, warehouse, session, key)
        assert (held.rows_accepted, held.rows_quarantined) == (0, len(rows))


def _followups(warehouse: Warehouse) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(record_id, provider) stored; (record_id, episode_id, check) quarantined, sorted."""
    stored = warehouse.table(Form.FOLLOWUP)
    quarantine = warehouse.read(QUARANTINE)
    return (
        sorted(zip(stored["record_id"].to_pylist(), stored["provider_orgnr"].to_pylist(),
                   strict=True)),
        sorted(zip(quarantine["record_id"].to_pylist(), quarantine["episode_id"].to_pylist(),
                   quarantine["check"].to_pylist(), strict=True)),
    )  # fmt: skip


def _intakes(write: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes,
             *episodes: int) -> None:  # fmt: skip
    rows = [
        episode_row(Form.BASIS, n, f"P{n}", provider_orgnr=PROVIDER_A if n == 1 else PROVIDER_B)
        for n in episodes
    ]
    _load(write(Form.BASIS, rows), Form.BASIS, warehouse, session, key)


def test_two_providers_held_records_of_one_record_id_are_not_both_stored(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    """Both intakes arrive: A's f1 (the earlier upload) is stored; B's is quarantined as another
    provider's record, as if the two had been loaded one after the other (the table's key is
    record_id), and stays so on later basis loads."""
    _held_under_one_record_id(write_extract, warehouse, session, key)
    _intakes(write_extract, warehouse, session, key, 1, 2)
    expected = ([("f1", PROVIDER_A)], [("f1", "e2", "record_id.other_provider")])
    assert _followups(warehouse) == expected
    _intakes(write_extract, warehouse, session, key, 3)
    assert _followups(warehouse) == expected


def test_a_held_record_does_not_wait_for_another_providers_that_cannot_be_stored(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    """Only B's intake arrives: B's f1 is stored, A's stays held for its own."""
    _held_under_one_record_id(write_extract, warehouse, session, key)
    _intakes(write_extract, warehouse, session, key, 2)
    assert _followups(warehouse) == ([("f1", PROVIDER_B)], [("f1", "e1", "cross.no_intake")])


def test_a_held_record_is_not_blocked_by_another_providers_quarantined_one(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    """A sends two follow-ups of e1 (f1 and fX) in one file, before its intake: each is held
    for the intake and quarantined as the other's duplicate. B holds f1 of e2. When both
    intakes arrive, A's pair stays quarantined (for the duplicate) and B's f1 is stored: A's
    quarantined f1 does not block B's."""
    extra = episode_row(Form.FOLLOWUP, 1, "P1", record_id="fX")
    _held_under_one_record_id(write_extract, warehouse, session, key, extra)
    _intakes(write_extract, warehouse, session, key, 1, 2)
    assert _followups(warehouse) == (
        [("f1", PROVIDER_B)],
        [
            ("f1", "e1", "cross.duplicate_followup"),
            ("f1", "e1", "cross.no_intake"),
            ("fX", "e1", "cross.duplicate_followup"),
            ("fX", "e1", "cross.no_intake"),
        ],
    )
