"""Opt-out erasure: not one byte of the patient's pseudonym or key stays under the data dir."""

import hashlib
import hmac
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlmodel import Session, col, select

from etl.erasure import INDICATORS_FILE, NAME_ERASED, REBUILT_NOTE, erase_patients
from etl.ledger import NOT_KEPT
from etl.release import latest_release, publish_release, read_manifest
from etl.warehouse import QUARANTINE, Warehouse
from indicators.results import RESULTS_FILE
from schemas.catalog import ApiClient, Erasure, Release, Upload, ValidationRun
from schemas.forms import Form
from schemas.organisations import Hierarchy
from service.settings import Settings
from tests.conftest import PROVIDER_A, ExtractWriter, episode_row, load_ok

KNOWN = frozenset(o.orgnr for o in Hierarchy.default().providers)
ERASED = "P-ERASE-ME-4711"


def _register(write: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes) -> None:
    """Three patients; the erased one has two episodes, a measurement and a quarantined row."""
    basis = [
        episode_row(Form.BASIS, 1, "P-KEEP-1"),
        episode_row(Form.BASIS, 2, ERASED),
        episode_row(Form.BASIS, 3, ERASED, intake_date="05.05.2023", referral_date=""),
        episode_row(Form.BASIS, 4, "P-KEEP-2"),
        episode_row(Form.BASIS, 5, ERASED, age="abc"),  # quarantined: age.type
    ]
    load_ok(write(Form.BASIS, basis), Form.BASIS, warehouse, session, key)
    measurements = [
        episode_row(Form.MEASUREMENT, 1, "P-KEEP-1"),
        episode_row(Form.MEASUREMENT, 2, ERASED),
        episode_row(Form.MEASUREMENT, 9, ERASED),  # held: cross.no_intake
    ]
    load_ok(write(Form.MEASUREMENT, measurements), Form.MEASUREMENT, warehouse, session, key)
    session.commit()


def _needles(key: bytes) -> list[bytes]:
    patient_key = hmac.new(key, ERASED.encode(), hashlib.sha256).hexdigest()
    texts = [ERASED, patient_key]
    return [t.encode(encoding) for t in texts for encoding in ("utf-8", "utf-16-le")]


def _assert_no_trace(data_dir: Path, key: bytes) -> int:
    """Every byte of every file, and every value of every Parquet file; returns files scanned."""
    needles = _needles(key)
    texts = [ERASED, hmac.new(key, ERASED.encode(), hashlib.sha256).hexdigest()]
    scanned = 0
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        scanned += 1
        for needle in needles:
            assert needle not in data, f"erased patient found in {path.relative_to(data_dir)}"
        if path.suffix == ".parquet":
            values = str(pq.read_table(path).to_pylist())
            for text in texts:
                assert text not in values, f"erased patient in values of {path.name}"
    return scanned


def test_erasure_leaves_no_byte_of_the_patient(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
) -> None:
    _register(write_extract, warehouse, session, key)
    assert warehouse.count("basis") == 4
    assert warehouse.count("measurement") == 2
    assert warehouse.count(QUARANTINE) == 2
    publish_release(warehouse, warehouse.releases_dir, session, note="before")
    session.commit()
    # The pseudonym key is really there before (the search below would find it).
    key_hex = _needles(key)[2]
    assert any(key_hex in p.read_bytes() for p in settings.data_dir.rglob("*.parquet"))

    erasure = erase_patients(
        [ERASED],
        warehouse=warehouse,
        session=session,
        key=key,
        releases_dir=warehouse.releases_dir,
        provider_orgnr=PROVIDER_A,
        optout_date=date(2025, 3, 1),
    )
    session.commit()

    assert erasure.patients == 1
    assert erasure.provider_orgnr == PROVIDER_A
    assert erasure.rows_erased == {
        "basis": 2,
        "measurement": 1,
        "discharge": 0,
        "followup": 0,
        "npr_counts": 0,
        QUARANTINE: 2,
    }
    assert erasure.releases_rebuilt == "1->2"
    logged = session.exec(select(Erasure)).one()
    assert ERASED not in str(logged.model_dump())

    # Other patients are all still there, in the tables and in the rebuilt release.
    assert sorted(warehouse.table(Form.BASIS).column("record_id").to_pylist()) == ["b1", "b4"]
    assert warehouse.table(Form.MEASUREMENT).column("record_id").to_pylist() == ["m1"]
    assert warehouse.count(QUARANTINE) == 0
    releases = session.exec(select(Release).order_by(col(Release.number))).all()
    assert [(r.number, r.retired, r.note) for r in releases] == [
        (1, True, "before"),
        (2, False, REBUILT_NOTE),
    ]
    latest = latest_release(session)
    assert latest is not None
    assert latest.number == 2
    rebuilt = read_manifest(warehouse.releases_dir, 2)
    assert rebuilt.tables["basis"].row_count == 2
    assert rebuilt.tables["measurement"].row_count == 1
    assert all(Path(f).exists() for f in rebuilt.files("basis"))

    session.close()
    scanned = _assert_no_trace(settings.data_dir, key)
    assert scanned >= 10  # Parquet files, logs, checkpoints, manifests, the catalog


def test_loading_an_optout_file_erases_its_patients(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
) -> None:
    _register(write_extract, warehouse, session, key)
    optout = [episode_row(Form.OPTOUT, 1, ERASED)]
    upload = load_ok(write_extract(Form.OPTOUT, optout), Form.OPTOUT, warehouse, session, key)
    session.commit()
    assert upload.rows_erased == 5  # 2 basis + 1 measurement + 2 quarantine (b5, m9)
    assert upload.rows_accepted == 1
    assert sorted(warehouse.table(Form.BASIS).column("record_id").to_pylist()) == ["b1", "b4"]
    assert warehouse.table(Form.MEASUREMENT).column("record_id").to_pylist() == ["m1"]
    erasure = session.exec(select(Erasure)).one()
    assert erasure.optout_date is not None
    assert erasure.optout_date.date() == date(2025, 3, 1)
    assert erasure.releases_rebuilt == ""
    session.close()
    # The optout file itself lies outside the data directory; nothing inside may hold the patient.
    _assert_no_trace(settings.data_dir, key)


def test_an_optout_sent_by_a_provider_outside_the_register_list_still_erases(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
) -> None:
    # EXTRACT_SPEC: an optout's provider_orgnr is "9 digits, required", not a known provider, and
    # the file erases every record of its patients, whichever provider stored them.
    _register(write_extract, warehouse, session, key)
    unknown = "990010005"
    assert unknown not in KNOWN
    optout = [episode_row(Form.OPTOUT, 1, ERASED, provider_orgnr=unknown)]
    upload = load_ok(write_extract(Form.OPTOUT, optout), Form.OPTOUT, warehouse, session, key)
    session.commit()
    assert upload.rows_erased == 5
    assert upload.rows_accepted == 1
    assert sorted(warehouse.table(Form.BASIS).column("record_id").to_pylist()) == ["b1", "b4"]
    assert session.exec(select(Erasure)).one().provider_orgnr == unknown
    session.close()
    _assert_no_trace(settings.data_dir, key)


def test_free_text_naming_the_patient_is_withheld_by_the_erasure(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
) -> None:
    # Typed by people, stored and shown (`GET /releases` shows notes to anyone): a release note,
    # an uploader, a key's name kept the erased pseudonym (any case).
    _register(write_extract, warehouse, session, key)
    upload = session.exec(select(Upload)).first()
    assert upload is not None
    upload.uploaded_by = f"desk for {ERASED.lower()}"
    session.add(upload)
    session.add(ApiClient(name=f"key of {ERASED}", key_prefix="k", key_hash="h", role="registry"))
    session.commit()
    publish_release(warehouse, warehouse.releases_dir, session, note=f"corrected {ERASED}")
    publish_release(warehouse, warehouse.releases_dir, session, note="Q3", published_by=ERASED)
    erase_patients(
        [ERASED], warehouse=warehouse, session=session, key=key,
        releases_dir=warehouse.releases_dir,
    )  # fmt: skip
    session.commit()
    withheld = "(withheld: it held an erased patient's pseudonym)"
    assert [u.uploaded_by for u in session.exec(select(Upload).order_by(col(Upload.id)))] == [
        withheld,
        "cli",
    ]
    assert session.exec(select(ApiClient)).one().name == withheld
    releases = session.exec(select(Release).order_by(col(Release.number))).all()
    assert [(r.note, r.published_by) for r in releases[:2]] == [
        (withheld, "cli"),
        ("Q3", withheld),
    ]
    assert read_manifest(warehouse.releases_dir, 1).note == withheld
    session.close()
    _assert_no_trace(settings.data_dir, key)


def test_an_optout_file_repeating_a_record_id_erases_every_patient_of_it(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
) -> None:
    # EXTRACT_SPEC asks record_id to be unique within the form of the episode forms alone; an
    # optout file sending "o1" twice was rejected whole (record_id.unique), erasing no one.
    _register(write_extract, warehouse, session, key)
    optout = [episode_row(Form.OPTOUT, 1, ERASED), episode_row(Form.OPTOUT, 1, "P-KEEP-1")]
    upload = load_ok(write_extract(Form.OPTOUT, optout), Form.OPTOUT, warehouse, session, key)
    session.commit()
    assert upload.rows_accepted == 2
    assert upload.rows_erased == 7  # ERASED 5, P-KEEP-1 2 (b1, m1)
    assert warehouse.table(Form.BASIS).column("record_id").to_pylist() == ["b4"]
    assert session.exec(select(Erasure)).one().patients == 2
    session.close()
    _assert_no_trace(settings.data_dir, key)


def test_optout_rows_failing_a_check_still_erase_and_are_counted_as_quarantined(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
) -> None:
    # An opt-out is the patient's right: a missing, impossible or future optout_date does not
    # keep the records (a future one rejected the whole file, erasing no one), but the row is not
    # counted as accepted; it is reported as the load's row failures are, by record_id and
    # check, never by pseudonym.
    _register(write_extract, warehouse, session, key)
    optout = [
        episode_row(Form.OPTOUT, 1, ERASED, optout_date=""),
        episode_row(Form.OPTOUT, 2, "P-KEEP-1", optout_date="31.02.2025"),
        episode_row(Form.OPTOUT, 3, "P-KEEP-2", optout_date="02.11.2025"),  # the day after LOAD_DAY
        episode_row(Form.OPTOUT, 4, "", optout_date="01.02.2025"),  # nobody to erase
        episode_row(Form.OPTOUT, 5, "P-NOT-IN-REGISTER", optout_date="01.03.2025"),
    ]
    upload = load_ok(write_extract(Form.OPTOUT, optout), Form.OPTOUT, warehouse, session, key)
    session.commit()
    assert upload.rows_read == 5
    assert upload.rows_accepted == 1
    assert upload.rows_quarantined == 4
    assert upload.rows_erased == 8  # ERASED 5, P-KEEP-1 2 (b1, m1), P-KEEP-2 1 (b4)
    assert warehouse.count("basis") == 0
    assert warehouse.count(QUARANTINE) == 0  # nothing of an optout file is stored
    erasure = session.exec(select(Erasure)).one()
    assert erasure.patients == 4
    assert erasure.optout_date is not None
    assert erasure.optout_date.date() == date(2025, 3, 1)  # the latest valid one, not o3's
    run = session.exec(select(ValidationRun).where(ValidationRun.upload_id == upload.id)).one()
    failing = {
        check["check_id"]: check["failing_record_ids"]
        for check in run.report["checks"]
        if check["failing_count"]
    }
    assert failing == {
        "optout_date.required": ["o1"],
        "optout_date.type": ["o2"],
        "optout_date.future": ["o3"],
        "patient_pseudonym.required": ["o4"],
    }
    assert run.report["quarantined_rows"] == 4
    for text in (ERASED, "P-KEEP-1", "P-KEEP-2", "P-NOT-IN-REGISTER"):
        assert text not in str(run.report)
        assert text not in str(upload.model_dump())
    session.close()
    _assert_no_trace(settings.data_dir, key)


def test_releases_without_the_patient_survive_and_a_second_erasure_also_leaves_no_trace(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
) -> None:
    load_ok(write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-KEEP-1")]), Form.BASIS,
          warehouse, session, key)  # fmt: skip
    publish_release(warehouse, warehouse.releases_dir, session, note="one patient")
    load_ok(write_extract(Form.BASIS, [episode_row(Form.BASIS, 2, ERASED)]), Form.BASIS,
          warehouse, session, key)  # fmt: skip
    publish_release(warehouse, warehouse.releases_dir, session, note="both")
    session.commit()

    first = erase_patients([ERASED], warehouse=warehouse, session=session, key=key,
                           releases_dir=warehouse.releases_dir)  # fmt: skip
    session.commit()
    assert first.releases_rebuilt == "2->3"
    kept = read_manifest(warehouse.releases_dir, 1)
    assert kept.tables["basis"].row_count == 1
    assert all(Path(f).exists() for f in kept.files("basis"))  # release 1 is still served
    releases = session.exec(select(Release).order_by(col(Release.number))).all()
    assert [(r.number, r.retired) for r in releases] == [(1, False), (2, True), (3, False)]
    assert read_manifest(warehouse.releases_dir, 3).tables["basis"].row_count == 1
    _assert_no_trace(settings.data_dir, key)

    # The second erasure runs on tables that already have a checkpoint.
    second = erase_patients(["P-KEEP-1"], warehouse=warehouse, session=session, key=key,
                            releases_dir=warehouse.releases_dir)  # fmt: skip
    session.commit()
    assert second.rows_erased["basis"] == 1
    assert second.releases_rebuilt == "1,3->4"
    assert warehouse.count("basis") == 0
    assert read_manifest(warehouse.releases_dir, 4).tables["basis"].row_count == 0
    session.close()
    _assert_no_trace(settings.data_dir, key)
    keep_key = hmac.new(key, b"P-KEEP-1", hashlib.sha256).hexdigest().encode()
    for path in (p for p in settings.data_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert b"P-KEEP-1" not in data
        assert keep_key not in data


def test_an_erasure_interrupted_after_its_deletes_is_completed_by_running_it_again(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
) -> None:
    _register(write_extract, warehouse, session, key)
    publish_release(warehouse, warehouse.releases_dir, session, note="before")
    session.commit()
    # As if a first erasure died right after its deletes: the rows are gone from the current
    # tables, but release 1 still lists files that hold the patient, and nothing was vacuumed.
    erased_key = hmac.new(key, ERASED.encode(), hashlib.sha256).hexdigest()
    for table in ("basis", "measurement", QUARANTINE):
        warehouse.delete_patients(table, pa.array([erased_key]))

    again = erase_patients([ERASED], warehouse=warehouse, session=session, key=key,
                           releases_dir=warehouse.releases_dir)  # fmt: skip
    session.commit()
    assert sum(again.rows_erased.values()) == 0  # nothing left in the current tables
    assert again.releases_rebuilt == "1->2"  # but release 1 held the patient: retired
    session.close()
    _assert_no_trace(settings.data_dir, key)


def test_a_retired_release_loses_its_indicator_results(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    assert INDICATORS_FILE == RESULTS_FILE  # etl/ cannot import indicators/: one name, twice
    load_ok(write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-KEEP-1")]), Form.BASIS,
          warehouse, session, key)  # fmt: skip
    publish_release(warehouse, warehouse.releases_dir, session, note="one patient")
    load_ok(write_extract(Form.BASIS, [episode_row(Form.BASIS, 2, ERASED)]), Form.BASIS,
          warehouse, session, key)  # fmt: skip
    publish_release(warehouse, warehouse.releases_dir, session, note="both")
    session.commit()
    results = {n: warehouse.releases_dir / str(n) / INDICATORS_FILE for n in (1, 2)}
    for path in results.values():
        path.write_bytes(b"results computed from the release's records")

    erasure = erase_patients([ERASED], warehouse=warehouse, session=session, key=key,
                             releases_dir=warehouse.releases_dir)  # fmt: skip
    session.commit()
    assert erasure.releases_rebuilt == "2->3"
    assert results[1].exists()  # release 1 never held the patient: still served
    assert not results[2].exists()
    assert (warehouse.releases_dir / "2" / "manifest.json").exists()  # the record of what was


def test_the_ledger_keeps_no_name_or_hash_of_an_optout_file_and_never_skips_one(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
) -> None:
    """Reviewer's case: an opt-out file named after its patient left the pseudonym in the ledger,
    and its hash made the same file, sent again after the patient's records came back, a
    duplicate that erased nothing. A file of any form named after an erased patient loses its
    name too."""
    _register(write_extract, warehouse, session, key)
    named = write_extract(Form.BASIS, [episode_row(Form.BASIS, 6, ERASED)], f"intake_{ERASED}.csv")
    load_ok(named, Form.BASIS, warehouse, session, key)
    optout = write_extract(
        Form.OPTOUT, [episode_row(Form.OPTOUT, 1, ERASED)], f"optout_{ERASED.lower()}.csv"
    )
    first = load_ok(optout, Form.OPTOUT, warehouse, session, key)
    assert (first.filename, first.file_sha256) == (NOT_KEPT, NOT_KEPT)
    assert first.rows_erased == 6  # 3 basis + 1 measurement + 2 quarantine (b5, m9)
    again = write_extract(Form.BASIS, [episode_row(Form.BASIS, 7, ERASED)])
    load_ok(again, Form.BASIS, warehouse, session, key)
    second = load_ok(optout, Form.OPTOUT, warehouse, session, key)
    assert (second.status, second.rows_erased) == ("loaded", 1)
    session.commit()
    names = [u.filename for u in session.exec(select(Upload).order_by(col(Upload.id))).all()]
    assert names[2:] == [NAME_ERASED, NOT_KEPT, "basis-2.csv", NOT_KEPT]
    session.close()
    _assert_no_trace(settings.data_dir, key)


def _basis(release: int, warehouse: Warehouse) -> list[tuple[str, int]]:
    """A release's basis rows as (record_id, age), read from the files its manifest lists."""
    files = read_manifest(warehouse.releases_dir, release).files("basis")
    # Per file: a file a merge rewrote holds its text as string_view, a copy as string.
    rows = [row for f in files for row in pq.ParquetFile(f).read().to_pylist()]
    return sorted((row["record_id"], row["age"]) for row in rows)


def test_the_replacement_is_the_release_in_service_without_the_patient_not_unpublished_loads(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
) -> None:
    _register(write_extract, warehouse, session, key)
    publish_release(warehouse, warehouse.releases_dir, session, note="before")
    session.commit()
    # Loaded after release 1, not published: staff have not released it (the old replacement,
    # the current tables, published it with the erasure).
    later = [
        episode_row(Form.BASIS, 6, "P-LATER"),
        episode_row(Form.BASIS, 1, "P-KEEP-1", age="50"),
    ]
    load_ok(write_extract(Form.BASIS, later), Form.BASIS, warehouse, session, key)
    session.commit()

    erasure = erase_patients([ERASED], warehouse=warehouse, session=session, key=key,
                             releases_dir=warehouse.releases_dir)  # fmt: skip
    session.commit()
    assert erasure.releases_rebuilt == "1->2"
    # Release 1's b1 (not the later correction, age 50) and b4, without b2 and b3.
    assert _basis(2, warehouse) == [("b1", 34), ("b4", 34)]
    rebuilt = read_manifest(warehouse.releases_dir, 2)
    files = rebuilt.files("basis")
    assert (rebuilt.tables["basis"].row_count, rebuilt.tables["measurement"].row_count) == (2, 1)
    # The current tables keep the unpublished load, for the next release.
    assert sorted(warehouse.table(Form.BASIS).column("record_id").to_pylist()) == ["b1", "b4", "b6"]
    # A copy holds no statistics of the patient key (nor does any file: the scan below).
    for path in files:
        metadata = pq.ParquetFile(path).metadata
        column = metadata.schema.names.index("patient_key")
        for group in range(metadata.num_row_groups):
            assert not metadata.row_group(group).column(column).is_stats_set
    session.close()
    _assert_no_trace(settings.data_dir, key)


def test_a_release_in_service_without_the_patient_stays_and_older_ones_are_retired(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    load_ok(write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, ERASED)]), Form.BASIS,
            warehouse, session, key)  # fmt: skip
    publish_release(warehouse, warehouse.releases_dir, session, note="first")
    # The record was the wrong patient's: corrected, the patient is in release 2 no more.
    load_ok(write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-RIGHT")]), Form.BASIS,
            warehouse, session, key)  # fmt: skip
    publish_release(warehouse, warehouse.releases_dir, session, note="second")
    session.commit()

    erasure = erase_patients([ERASED], warehouse=warehouse, session=session, key=key,
                             releases_dir=warehouse.releases_dir)  # fmt: skip
    session.commit()
    assert erasure.releases_rebuilt == "1"  # retired; release 2 needs no replacement
    releases = session.exec(select(Release).order_by(col(Release.number))).all()
    assert [(r.number, r.retired) for r in releases] == [(1, True), (2, False)]
    assert [record_id for record_id, _ in _basis(2, warehouse)] == ["b1"]


def test_a_release_whose_files_a_correction_rewrote_is_replaced_without_the_patient(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    settings: Settings,
) -> None:
    """A correction merges into the file that holds the patient too; delta-rs writes the file it
    rewrites with `string_view` text columns, which Arrow's `is_in` does not take. The erasure
    failed there, after its deletes, and every retry failed the same way: the release in service
    kept the patient."""
    _register(write_extract, warehouse, session, key)
    correction = [episode_row(Form.BASIS, 1, "P-KEEP-1", age="50")]  # b2 shares b1's file
    load_ok(write_extract(Form.BASIS, correction), Form.BASIS, warehouse, session, key)
    publish_release(warehouse, warehouse.releases_dir, session, note="corrected")
    session.commit()

    erasure = erase_patients([ERASED], warehouse=warehouse, session=session, key=key,
                             releases_dir=warehouse.releases_dir)  # fmt: skip
    session.commit()
    assert erasure.releases_rebuilt == "1->2"
    assert _basis(2, warehouse) == [("b1", 50), ("b4", 34)]
    session.close()
    _assert_no_trace(settings.data_dir, key)
