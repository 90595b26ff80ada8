"""Cross-record checks: each check fails on a tiny file that violates it and passes on one that
does not, with the exact failing rows."""

from datetime import date, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.forms import PATIENT_KEY_COLUMN, PSEUDONYM_COLUMN, Form, extract_schema
from validation.cross_record import EXISTING_COLUMNS, check
from validation.run import ROW_FAILURES_SCHEMA

ORG = "974631407"


def incoming(form: Form, rows: list[dict[str, Any]]) -> pa.Table:
    """A typed incoming table: the extract schema with `patient_key` for the pseudonym."""
    fields = [
        pa.field(PATIENT_KEY_COLUMN, pa.string()) if f.name == PSEUDONYM_COLUMN else f
        for f in extract_schema(form)
    ]
    schema = pa.schema([f.with_nullable(True) for f in fields])
    defaults = {"provider_orgnr": ORG, "patient_key": "k1", "unit_code": "u1"}
    return pa.Table.from_pylist([{**defaults, **row} for row in rows], schema=schema)


def stored(form: Form, rows: list[dict[str, Any]]) -> pa.Table:
    """A warehouse table with only the columns the checks read."""
    full = incoming(form, rows)
    return full.select(list(EXISTING_COLUMNS[form]))


BASIS = [
    {
        "record_id": "b1",
        "episode_id": "e1",
        "intake_date": date(2024, 2, 1),
        "age": 40,
        "sex": 1,
        "treatment_type": 2,
    },
]
DISCHARGE = [{"record_id": "d1", "episode_id": "e1", "discharge_date": date(2024, 3, 1)}]


def _existing() -> dict[Form, pa.Table]:
    return {
        Form.BASIS: stored(Form.BASIS, BASIS),
        Form.DISCHARGE: stored(Form.DISCHARGE, DISCHARGE),
    }


def _failures(table: pa.Table) -> list[tuple[int, str, str, str]]:
    assert table.schema == ROW_FAILURES_SCHEMA
    return [(r["row_index"], r["record_id"], r["check"], r["severity"]) for r in table.to_pylist()]


def test_measurement_before_intake_and_without_intake() -> None:
    rows = [
        {"record_id": "m1", "episode_id": "e1", "measure_date": date(2024, 2, 1)},  # on the day
        {"record_id": "m2", "episode_id": "e1", "measure_date": date(2024, 1, 31)},
        {"record_id": "m3", "episode_id": "e9", "measure_date": date(2024, 5, 1)},
        # Same episode id at another provider is another episode.
        {
            "record_id": "m4",
            "episode_id": "e1",
            "provider_orgnr": "983974899",
            "measure_date": date(2024, 5, 1),
        },
    ]
    result = check(incoming(Form.MEASUREMENT, rows), Form.MEASUREMENT, _existing())
    assert _failures(result) == [
        (1, "m2", "cross.before_intake", "error"),
        (2, "m3", "cross.no_intake", "error"),
        (3, "m4", "cross.no_intake", "error"),
    ]
    assert "measure_date before the intake_date" in result.column("reason")[0].as_py()


def test_a_record_before_a_later_basis_of_its_episode_is_not_before_its_intake() -> None:
    """The episode's intake is its first basis row: a measurement between its intake and a basis
    re-sent under a new record_id with a later date passes; one before the first does not."""
    existing = _existing()
    later = {**BASIS[0], "record_id": "b2", "intake_date": date(2024, 4, 1)}
    existing[Form.BASIS] = stored(Form.BASIS, [*BASIS, later])
    rows = [
        {"record_id": "m1", "episode_id": "e1", "measure_date": date(2024, 3, 1)},
        {"record_id": "m2", "episode_id": "e1", "measure_date": date(2024, 1, 31)},
    ]
    assert _failures(check(incoming(Form.MEASUREMENT, rows), Form.MEASUREMENT, existing)) == [
        (1, "m2", "cross.before_intake", "error")
    ]


def test_discharge_before_intake_and_duplicate_discharge() -> None:
    rows = [
        {"record_id": "d1", "episode_id": "e1", "discharge_date": date(2024, 3, 2)},  # re-sent
        {"record_id": "d2", "episode_id": "e2", "discharge_date": date(2024, 1, 1)},
        {"record_id": "d3", "episode_id": "e3", "discharge_date": date(2024, 6, 1)},
        {"record_id": "d4", "episode_id": "e3", "discharge_date": date(2024, 6, 2)},
    ]
    existing = _existing()
    existing[Form.BASIS] = stored(
        Form.BASIS,
        [
            *BASIS,
            {"record_id": "b2", "episode_id": "e2", "intake_date": date(2024, 2, 1)},
            {"record_id": "b3", "episode_id": "e3", "intake_date": date(2024, 2, 1)},
        ],
    )
    assert _failures(check(incoming(Form.DISCHARGE, rows), Form.DISCHARGE, existing)) == [
        (1, "d2", "cross.before_intake", "error"),
        (2, "d3", "cross.duplicate_discharge", "error"),
        (3, "d4", "cross.duplicate_discharge", "error"),
    ]


def test_a_second_discharge_against_the_warehouse_is_a_duplicate() -> None:
    rows = [{"record_id": "d9", "episode_id": "e1", "discharge_date": date(2024, 3, 5)}]
    assert _failures(check(incoming(Form.DISCHARGE, rows), Form.DISCHARGE, _existing())) == [
        (0, "d9", "cross.duplicate_discharge", "error")
    ]


def _two_discharged_episodes() -> dict[Form, pa.Table]:
    existing = _existing()
    existing[Form.BASIS] = stored(
        Form.BASIS,
        [*BASIS, {"record_id": "b2", "episode_id": "e2", "intake_date": date(2024, 2, 1)}],
    )
    existing[Form.DISCHARGE] = stored(
        Form.DISCHARGE,
        [*DISCHARGE, {"record_id": "d2", "episode_id": "e2", "discharge_date": date(2024, 3, 1)}],
    )
    return existing


def test_followup_before_discharge() -> None:
    rows = [
        {"record_id": "f1", "episode_id": "e1", "followup_date": date(2025, 3, 1)},
        {"record_id": "f2", "episode_id": "e2", "followup_date": date(2024, 2, 28)},
    ]
    existing = _two_discharged_episodes()
    assert _failures(check(incoming(Form.FOLLOWUP, rows), Form.FOLLOWUP, existing)) == [
        (1, "f2", "cross.followup_before_discharge", "error")
    ]


def test_duplicate_followup_in_the_file_and_against_the_warehouse() -> None:
    """One follow-up per episode: a second under another record_id is an error (both rows of a
    pair within the file, the new row against a stored one); a re-sent record_id is a
    correction, and the same episode id at another provider is another episode."""
    existing = _two_discharged_episodes()
    existing[Form.FOLLOWUP] = stored(
        Form.FOLLOWUP,
        [
            {"record_id": "f1", "episode_id": "e1", "followup_date": date(2025, 3, 1)},
            {"record_id": "f9", "episode_id": "e9", "followup_date": date(2025, 3, 1)},
        ],
    )
    rows = [
        {"record_id": "f1", "episode_id": "e1", "followup_date": date(2025, 3, 2)},  # re-sent
        {"record_id": "f2", "episode_id": "e2", "followup_date": date(2025, 3, 1)},
        {"record_id": "f3", "episode_id": "e2", "followup_date": date(2025, 3, 5)},
        {"record_id": "f4", "episode_id": "e9", "followup_date": date(2025, 3, 1)},
        {
            "record_id": "f5",
            "episode_id": "e1",
            "provider_orgnr": "983974899",
            "followup_date": date(2025, 3, 1),
        },
    ]
    assert _failures(check(incoming(Form.FOLLOWUP, rows), Form.FOLLOWUP, existing)) == [
        (1, "f2", "cross.duplicate_followup", "error"),
        (2, "f3", "cross.duplicate_followup", "error"),
        (3, "f4", "cross.duplicate_followup", "error"),
        (3, "f4", "cross.no_intake", "error"),
        (4, "f5", "cross.no_intake", "error"),
    ]


def test_inconsistent_demographics_against_the_warehouse_and_within_the_file() -> None:
    rows = [
        {
            "record_id": "b1",
            "episode_id": "e1",
            "intake_date": date(2024, 2, 1),
            "age": 41,
            "sex": 1,
            "treatment_type": 1,
        },  # re-sent b1 with a corrected age: supersedes, fine
        {
            "record_id": "b5",
            "episode_id": "e1",
            "intake_date": date(2024, 2, 1),
            "age": 41,
            "sex": 1,
            "treatment_type": 1,
        },  # agrees with the re-sent b1
        {
            "record_id": "b6",
            "episode_id": "e6",
            "intake_date": date(2024, 2, 1),
            "age": 30,
            "sex": 1,
            "treatment_type": 1,
        },
        {
            "record_id": "b7",
            "episode_id": "e6",
            "intake_date": date(2024, 2, 1),
            "age": 30,
            "sex": 2,
            "treatment_type": 1,
        },
    ]
    assert _failures(check(incoming(Form.BASIS, rows), Form.BASIS, _existing())) == [
        (2, "b6", "cross.inconsistent_demographics", "error"),
        (3, "b7", "cross.inconsistent_demographics", "error"),
    ]


def test_another_basis_record_with_another_sex_is_inconsistent() -> None:
    rows = [
        {
            "record_id": "b2",
            "episode_id": "e1",
            "intake_date": date(2024, 2, 1),
            "age": 40,
            "sex": 2,
            "treatment_type": 1,
        }
    ]
    assert _failures(check(incoming(Form.BASIS, rows), Form.BASIS, _existing())) == [
        (0, "b2", "cross.inconsistent_demographics", "error")
    ]


@pytest.mark.parametrize(
    ("intake", "treatment_type", "overlaps"),
    [
        (date(2024, 2, 15), 3, True),  # inside e1 (1 Feb – 1 Mar, inpatient)
        (date(2024, 3, 1), 3, False),  # the day e1 is discharged: a transfer, no overlap
        (date(2024, 2, 15), 1, False),  # outpatient alongside inpatient is normal
        (date(2024, 1, 1), 2, True),  # still ongoing (no discharge) when e1 starts
    ],
)
def test_overlapping_inpatient_episodes(intake: date, treatment_type: int, overlaps: bool) -> None:
    rows = [
        {
            "record_id": "b8",
            "episode_id": "e8",
            "intake_date": intake,
            "age": 40,
            "sex": 1,
            "treatment_type": treatment_type,
        }
    ]
    expected = [(0, "b8", "cross.overlapping_inpatient", "warning")] if overlaps else []
    assert _failures(check(incoming(Form.BASIS, rows), Form.BASIS, _existing())) == expected


def test_without_warnings_only_the_errors_are_checked() -> None:
    # b8 disagrees with the stored b1's sex (an error); b9 overlaps e1 (a warning).
    rows = [
        {
            "record_id": "b8",
            "episode_id": "e1",
            "intake_date": date(2024, 2, 15),
            "age": 40,
            "sex": 2,
            "treatment_type": 1,
        },
        {
            "record_id": "b9",
            "episode_id": "e9",
            "intake_date": date(2024, 2, 15),
            "age": 40,
            "sex": 2,
            "treatment_type": 3,
        },
    ]
    table = incoming(Form.BASIS, rows)
    assert _failures(check(table, Form.BASIS, _existing())) == [
        (0, "b8", "cross.inconsistent_demographics", "error"),
        (1, "b9", "cross.overlapping_inpatient", "warning"),
    ]
    assert _failures(check(table, Form.BASIS, _existing(), warnings=False)) == [
        (0, "b8", "cross.inconsistent_demographics", "error")
    ]
    # The loader checks before the keys exist: without warnings no patient_key is needed.
    keyless = table.drop_columns(["patient_key"])
    assert _failures(check(keyless, Form.BASIS, _existing(), warnings=False)) == [
        (0, "b8", "cross.inconsistent_demographics", "error")
    ]
    # Nor do the stored rows (the loader does not read the stored keys: NO_PATIENT_KEY).
    stored_keyless = {
        form: table.select([c for c in table.column_names if c != "patient_key"])
        for form, table in _existing().items()
    }
    assert _failures(check(keyless, Form.BASIS, stored_keyless, warnings=False)) == [
        (0, "b8", "cross.inconsistent_demographics", "error")
    ]


def test_another_patient_never_overlaps() -> None:
    rows = [
        {
            "record_id": "b8",
            "episode_id": "e8",
            "patient_key": "k2",
            "intake_date": date(2024, 2, 15),
            "age": 40,
            "sex": 1,
            "treatment_type": 3,
        }
    ]
    assert _failures(check(incoming(Form.BASIS, rows), Form.BASIS, _existing())) == []


def test_an_empty_warehouse_holds_every_follow_on_record() -> None:
    rows = [{"record_id": "m1", "episode_id": "e1", "measure_date": date(2024, 2, 1)}]
    assert _failures(check(incoming(Form.MEASUREMENT, rows), Form.MEASUREMENT, {})) == [
        (0, "m1", "cross.no_intake", "error")
    ]
    assert check(incoming(Form.BASIS, []), Form.BASIS, {}).num_rows == 0


@settings(max_examples=40, deadline=None)
@given(
    episodes=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=60),  # intake, days after 1 Jan 2024
            st.one_of(st.none(), st.integers(min_value=0, max_value=60)),  # length of stay
            st.sampled_from([1, 2, 3, 4, 5]),
        ),
        max_size=4,
    ),
    intake=st.integers(min_value=0, max_value=90),
)
def test_overlap_agrees_with_interval_arithmetic(
    episodes: list[tuple[int, int | None, int]], intake: int
) -> None:
    start = date(2024, 1, 1)
    stored_basis, stored_discharges = [], []
    for i, (day, stay, treatment_type) in enumerate(episodes):
        stored_basis.append(
            {"record_id": f"b{i}", "episode_id": f"e{i}", "age": 40, "sex": 1,
             "intake_date": start + timedelta(days=day), "treatment_type": treatment_type}
        )  # fmt: skip
        if stay is not None:
            stored_discharges.append(
                {"record_id": f"d{i}", "episode_id": f"e{i}",
                 "discharge_date": start + timedelta(days=day + stay)}
            )  # fmt: skip
    existing = {
        Form.BASIS: stored(Form.BASIS, stored_basis),
        Form.DISCHARGE: stored(Form.DISCHARGE, stored_discharges),
    }
    rows = [{"record_id": "new", "episode_id": "new", "age": 40, "sex": 1,
             "intake_date": start + timedelta(days=intake), "treatment_type": 2}]  # fmt: skip
    # The new episode has no discharge: it runs from its intake on. A stored inpatient episode
    # overlaps it unless it was discharged on or before the new intake.
    overlaps = any(
        treatment_type in (2, 3) and (stay is None or intake < day + stay)
        for day, stay, treatment_type in episodes
    )
    expected = [(0, "new", "cross.overlapping_inpatient", "warning")] if overlaps else []
    assert _failures(check(incoming(Form.BASIS, rows), Form.BASIS, existing)) == expected
