"""An erasure removes the patient's record ids from the stored quality reports, and only theirs."""

from functools import partial

from sqlmodel import Session, col, select

from etl.erasure import erase_patients
from etl.load import load_file
from etl.warehouse import Warehouse
from schemas.catalog import ValidationRun
from schemas.forms import Form
from tests.conftest import (
    LOAD_DAY,
    PROVIDER_A,
    PROVIDER_B,
    ExtractWriter,
    episode_row,
    load_ok,
)

ERASED = "P-ERASE-REPORTS-2718"


# Each load committed, as a CLI load is.
_load = partial(load_ok, commit=True)


def _named(session: Session) -> dict[int, list[str]]:
    """Per upload, every record id its report names (sorted, with repeats removed)."""
    named: dict[int, list[str]] = {}
    runs = session.exec(select(ValidationRun).order_by(col(ValidationRun.id))).all()
    for run in runs:
        assert run.upload_id is not None
        checks = run.report["checks"]
        assert isinstance(checks, list)
        ids = {i for check in checks for i in check["failing_record_ids"]}
        named[run.upload_id] = sorted(ids)
    return named


def test_an_erasure_removes_the_patients_record_ids_from_the_quality_reports(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    first = [
        episode_row(Form.BASIS, 1, "P-KEEP"),
        episode_row(Form.BASIS, 2, ERASED),
        episode_row(Form.BASIS, 5, ERASED, age="abc"),  # quarantined: age.type
    ]
    one = _load(write_extract(Form.BASIS, first), Form.BASIS, warehouse, session, key)
    # b2 re-sent: the version of upload one leaves the table, but its report still names it.
    resent = [episode_row(Form.BASIS, 2, ERASED, age="35")]
    two = _load(write_extract(Form.BASIS, resent), Form.BASIS, warehouse, session, key)
    # Another provider's record b2, of another patient.
    other = [episode_row(Form.BASIS, 2, "P-OTHER", provider_orgnr=PROVIDER_B)]
    three = _load(write_extract(Form.BASIS, other), Form.BASIS, warehouse, session, key)
    assert {one.providers, two.providers, three.providers} == {PROVIDER_A, PROVIDER_B}
    assert _named(session) == {one.id: ["b1", "b2", "b5"], two.id: ["b2"], three.id: ["b2"]}

    erase_patients([ERASED], warehouse=warehouse, session=session, key=key,
                   releases_dir=warehouse.releases_dir)  # fmt: skip

    with Session(session.get_bind()) as fresh:  # as committed
        assert _named(fresh) == {one.id: ["b1"], two.id: [], three.id: ["b2"]}
        run = fresh.exec(select(ValidationRun).where(ValidationRun.upload_id == one.id)).one()
        checks = run.report["checks"]
        assert isinstance(checks, list)
        age = next(c for c in checks if c["check_id"] == "age.type")
        # The counts stay: they describe the file as validated and name no one.
        assert (age["failing_count"], age["failing_record_ids"]) == (1, [])


def test_an_erasure_removes_the_patients_record_ids_from_the_reports_of_rejected_files(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    """Nothing of a rejected file is stored, so which of its rows were the patient's is not
    known: every id of an erased record goes from its report, whatever the row's provider."""
    stored = _load(write_extract(Form.BASIS, [episode_row(Form.BASIS, 2, ERASED)]), Form.BASIS,
                   warehouse, session, key)  # fmt: skip
    rows = [
        episode_row(Form.BASIS, 2, ERASED, provider_orgnr=PROVIDER_B, age="abc"),
        episode_row(Form.BASIS, 7, "P-X", provider_orgnr=PROVIDER_B),
        episode_row(Form.BASIS, 7, "P-X", provider_orgnr=PROVIDER_B),  # record_id.unique: fatal
    ]
    rejected = load_file(
        write_extract(Form.BASIS, rows), Form.BASIS, warehouse=warehouse, session=session,
        key=key, known_providers=frozenset({PROVIDER_A, PROVIDER_B}), today=LOAD_DAY,
    )  # fmt: skip
    session.commit()
    assert (rejected.status, rejected.providers) == ("rejected", PROVIDER_B)
    assert _named(session) == {stored.id: ["b2"], rejected.id: ["b2", "b7"]}

    erase_patients([ERASED], warehouse=warehouse, session=session, key=key,
                   releases_dir=warehouse.releases_dir)  # fmt: skip

    with Session(session.get_bind()) as fresh:
        assert _named(fresh) == {stored.id: [], rejected.id: ["b7"]}
