"""validate_extract: every check of a form's suite fails on a row that violates it, and passes on
clean rows; tolerances are judged over all rows; results are per job, also across threads."""

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.forms import FORMS, Form
from schemas.parsing import normalise
from tests.validation.conftest import CLEAN, KNOWN, OTHER_PROVIDER, TODAY, raw_table
from validation import CheckResult, ValidationResult, validate_extract
from validation.run import run_checks
from validation.suites import Check, suite_checks

# A value that violates each kind of check (hand-chosen; see EXTRACT_SPEC.md for the rules).
BAD_VALUE: dict[str, str | None] = {
    "required": None,
    "completeness": None,
    "codes": "7",  # in none of the code lists
    "known": "123456785",  # 9 digits, not a provider of the register
}
BAD_TYPE = {"integer": "4x", "date": "31.02.2024"}  # 31 February does not exist
BAD_PATTERN = {"icd10": "F20.1", "provider_orgnr": "97463140", "home_hf_orgnr": "HF1"}
BAD_RANGE = {
    "age": "111",
    "audit": "41",
    "dudit": "45",
    "severity": "0",
    "benefit": "6",
    "use_days_30": "31",
    "satisfaction": "6",
    "year": "1999",
    "episodes": "-1",
}
# Checks that a row breaking another check necessarily fails too.
ALSO_FAILS = {
    "provider_orgnr.pattern": {"provider_orgnr.known"},
    "home_hf_orgnr.pattern": {"home_hf_orgnr.known"},
    "referral_date.future": {"referral_date.after_intake"},  # the future is after any intake
}


def _check_ids(form: Form) -> list[str]:
    return [c.check_id for c in suite_checks(form, known_providers=KNOWN, today=TODAY)]


def _violation(form: Form, check_id: str) -> list[dict[str, Any]]:
    """Rows of which exactly the last one(s), with record id `bad*`, violate the check."""
    column, kind = check_id.rsplit(".", 1)
    clean: dict[str, Any] = {}
    if kind == "unique":
        # record_id.unique; npr_counts: two rows of one provider and year (the provider of all).
        twice = {"year": "2010"} if form is Form.NPR_COUNTS else {}
        return [{}, {"record_id": "bad", **twice}, {"record_id": "bad", **twice}]
    if kind == "completeness":
        # Tolerated 50 % missing: 2 of 3 rows empty fails.
        return [{}, {"record_id": "bad1", column: None}, {"record_id": "bad2", column: None}]
    bad: dict[str, str | None]
    if kind == "after_intake":
        bad = {"referral_date": "02.02.2024"}  # the day after intake
    elif kind == "future":
        bad = {column: "2025-01-02"}  # the day after TODAY
    elif kind == "type":
        kind_of = "date" if column.endswith("_date") else "integer"
        bad = {column: BAD_TYPE[kind_of]}
    elif kind == "pattern":
        bad = {column: BAD_PATTERN[column]}
    elif kind == "range":
        bad = {column: BAD_RANGE[column]}
    else:
        bad = {column: BAD_VALUE[kind]}
    return [clean, {"record_id": "bad", **bad}, {}]


def _validate(form: Form, rows: list[dict[str, Any]]) -> ValidationResult:
    return validate_extract(raw_table(form, rows), form, known_providers=KNOWN, today=TODAY)


def _by_id(result: ValidationResult) -> dict[str, CheckResult]:
    return {check.check_id: check for check in result.checks}


CASES = [(form, check_id) for form in Form for check_id in _check_ids(form)]


@pytest.mark.parametrize(("form", "check_id"), CASES, ids=[f"{f}:{c}" for f, c in CASES])
def test_a_violating_row_fails_exactly_its_check(form: Form, check_id: str) -> None:
    rows = _violation(form, check_id)
    result = _validate(form, rows)
    checks = _by_id(result)
    bad_rows = [i for i, row in enumerate(rows) if "record_id" in row]
    # A row without a record_id (record_id.required; npr_counts has none) is known by its index.
    has_ids = "record_id" in FORMS[form].column_names
    expected_ids = sorted(
        rows[i]["record_id"] for i in bad_rows if rows[i]["record_id"] and has_ids
    )
    failing = checks[check_id]
    assert failing.status == "failed"
    assert sorted(failing.failing_record_ids) == expected_ids
    assert failing.failing_count == len(bad_rows)
    assert failing.failing_percent == pytest.approx(100.0 * len(bad_rows) / 3)
    others = {c.check_id for c in result.checks if c.status != "passed"} - {check_id}
    assert others == ALSO_FAILS.get(check_id, set()) & set(_check_ids(form))
    # fatal → the file is rejected; error → its rows are quarantined; warning → reported only
    fatal = {c.check_id for c in result.checks if c.severity == "fatal"}
    assert result.rejected == bool(({check_id} | others) & fatal)
    quarantined = [r for r in result.row_failures.to_pylist() if r["check"] == check_id]
    if failing.severity == "error":
        assert quarantined == [
            {
                "row_index": 1,
                "record_id": rows[1]["record_id"] if has_ids else None,
                "check": check_id,
                "severity": "error",
                "reason": quarantined[0]["reason"],
            }
        ]
        assert check_id.split(".")[0] in quarantined[0]["reason"]
    else:
        assert quarantined == []
    assert set(result.row_failures.column("check").to_pylist()) <= {check_id} | others


@pytest.mark.parametrize("form", list(Form))
def test_clean_rows_pass_every_check(form: Form) -> None:
    result = _validate(form, [{}, {}, {}])
    assert {c.check_id: c.status for c in result.checks} == dict.fromkeys(
        _check_ids(form), "passed"
    )
    assert not result.rejected
    assert result.rejection_reasons == []
    assert result.row_failures.num_rows == 0
    assert result.typed is not None
    assert result.typed.num_rows == 3
    assert result.typed.schema.names == list(FORMS[form].column_names)
    assert all(c.failing_count == 0 and c.failing_record_ids == [] for c in result.checks)


def test_boundaries_of_ranges_and_dates_pass() -> None:
    rows: list[dict[str, Any]] = [
        {"age": "13", "referral_date": "01.02.2024", "audit": "0", "dudit": "44"},
        {"age": "110", "intake_date": "2025-01-01", "referral_date": None, "severity": "5"},
    ]
    result = _validate(Form.BASIS, rows)
    assert [c.check_id for c in result.checks if c.status != "passed"] == []


def test_a_value_that_is_not_an_integer_fails_type_only() -> None:
    # Unparseable → type; not also required (it is present) nor range (it has no value).
    result = _validate(Form.BASIS, [{}, {"age": "forty"}])
    assert {c.check_id: c.failing_record_ids for c in result.checks if c.status != "passed"} == {
        "age.type": ["r2"]
    }


def test_rejection_reasons_name_checks_and_counts_never_values() -> None:
    rows = [{"provider_orgnr": "123456785"}, {"provider_orgnr": "123456785"}, {}]
    result = _validate(Form.BASIS, rows)
    assert result.rejected
    assert result.rejection_reasons == ["provider_orgnr.known: 2 of 3 rows failed (tolerated 0 %)"]


def test_an_optout_is_not_refused_for_a_provider_outside_the_register_list() -> None:
    # An opt-out is the patient's right: the provider list must not block it (EXTRACT_SPEC.md:
    # provider_orgnr "9 digits, required" only); the 9-digit rule still holds.
    assert "provider_orgnr.known" not in _check_ids(Form.OPTOUT)
    assert "provider_orgnr.pattern" in _check_ids(Form.OPTOUT)
    result = _validate(Form.OPTOUT, [{"provider_orgnr": "990010005"}, {}])
    assert not result.rejected
    assert [c.check_id for c in result.checks if c.status != "passed"] == []
    malformed = _validate(Form.OPTOUT, [{"provider_orgnr": "99001000"}, {}])
    assert [c.check_id for c in malformed.checks if c.status != "passed"] == [
        "provider_orgnr.pattern"
    ]
    for form in (Form.BASIS, Form.NPR_COUNTS):
        assert "provider_orgnr.known" in _check_ids(form)

    def severity(form: Form) -> str:
        checks = suite_checks(form, known_providers=KNOWN, today=TODAY)
        return next(c.severity for c in checks if c.check_id == "provider_orgnr.known")

    # NPR counts every provider: one outside the list fails its row, not the file.
    assert (severity(Form.BASIS), severity(Form.NPR_COUNTS)) == ("fatal", "error")


def test_a_provider_and_year_twice_in_an_npr_counts_file_rejects_it() -> None:
    # The table's key (etl.warehouse.MERGE_KEYS): two rows would both be stored and a later
    # correction would supersede both, doubling the coverage denominator.
    rows = [
        {"year": "2021", "episodes": "10"},
        {"year": "2021", "episodes": "12"},
        {"year": "+2021", "provider_orgnr": OTHER_PROVIDER},  # another provider's 2021
        {"year": "2022"},
        {"year": "+2022"},  # the same year, written otherwise
        {"year": None},
        {"year": None},  # no year: year.required, not a repeat
    ]
    result = _validate(Form.NPR_COUNTS, rows)
    assert result.rejected
    assert "provider_year.unique: 4 of 7 rows failed (tolerated 0 %)" in result.rejection_reasons
    check = _by_id(result)["provider_year.unique"]
    assert (check.status, check.severity, check.failing_count) == ("failed", "fatal", 4)
    assert not _validate(Form.NPR_COUNTS, [rows[0], rows[2], rows[3]]).rejected


def test_the_npr_counts_file_key_is_the_warehouse_merge_key() -> None:
    from etl.warehouse import MERGE_KEYS
    from validation.suites import FILE_KEYS

    assert FILE_KEYS[Form.NPR_COUNTS][1] == MERGE_KEYS[Form.NPR_COUNTS]
    assert all(MERGE_KEYS[form] == ("record_id",) for form in MERGE_KEYS if form not in FILE_KEYS)


def test_unknown_and_missing_columns_reject_the_file() -> None:
    raw = raw_table(Form.BASIS, [{}, {}]).drop_columns(["age"])
    raw = raw.append_column("name", pa.array(["x", "y"], pa.string()))
    result = validate_extract(raw, Form.BASIS, known_providers=KNOWN, today=TODAY)
    assert result.rejected
    assert result.rejection_reasons[0] == (
        "table.columns: 1 column(s) not part of form 'basis' (column 21 (name not shown)), "
        "1 required column(s) missing (age)"
    )
    statuses = _by_id(result)
    assert result.typed is None
    assert statuses["table.columns"].status == "failed"
    assert statuses["age.range"].status == "not_applicable"
    assert statuses["age.required"].status == "not_applicable"
    assert statuses["sex.codes"].status == "passed"


def test_column_names_that_may_be_values_are_not_repeated() -> None:
    # A file without a header row: its first row's values became the column names.
    raw = raw_table(Form.BASIS, [{}]).append_column("01.02.1990 P-77", pa.array(["x"]))
    result = validate_extract(raw, Form.BASIS, known_providers=KNOWN, today=TODAY)
    assert result.rejection_reasons == [
        "table.columns: 1 column(s) not part of form 'basis' (column 22 (name not shown)), "
        "0 required column(s) missing"
    ]


def test_a_letters_only_column_name_outside_the_dictionary_is_not_repeated() -> None:
    # A file without a header row whose first record holds a letters-only pseudonym.
    raw = raw_table(Form.BASIS, [{}]).append_column("olanordmann", pa.array(["x"]))
    raw = raw.append_column("discharge_date", pa.array(["x"]))
    result = validate_extract(raw, Form.BASIS, known_providers=KNOWN, today=TODAY)
    assert result.rejection_reasons == [
        "table.columns: 2 column(s) not part of form 'basis' "
        "(discharge_date, column 22 (name not shown)), 0 required column(s) missing"
    ]


def test_an_absent_optional_column_counts_as_empty() -> None:
    raw = raw_table(Form.BASIS, [{}, {}]).drop_columns(["dudit"])
    result = validate_extract(raw, Form.BASIS, known_providers=KNOWN, today=TODAY)
    checks = _by_id(result)
    assert checks["dudit.completeness"].status == "failed"
    assert checks["dudit.completeness"].failing_record_ids == ["r1", "r2"]
    assert checks["dudit.range"].status == "passed"
    assert not result.rejected


def _audit_range_warning() -> list[Check]:
    return [
        Check(
            "audit.range",
            "audit",
            "plausibility",
            "warning",
            10.0,
            "ExpectColumnValuesToBeBetween",
            {"column": "audit__value", "min_value": 0, "max_value": 40},
            "audit outside 0–40",
        )
    ]


@pytest.mark.parametrize(
    ("out_of_range", "status"), [(9, "passed"), (10, "passed"), (11, "failed")]
)
def test_tolerance_is_judged_over_all_rows_including_nulls(out_of_range: int, status: str) -> None:
    # 100 rows, 50 without audit: GX's own unexpected_percent would be 9/50 = 18 %.
    audits = ["41"] * out_of_range + [None] * 50 + ["20"] * (50 - out_of_range)
    raw = raw_table(Form.BASIS, [{"audit": a} for a in audits])
    result = run_checks(raw, Form.BASIS, _audit_range_warning())
    (check,) = result.checks
    assert check.status == status
    assert check.failing_count == out_of_range
    assert check.failing_percent == pytest.approx(out_of_range)
    assert check.failing_record_ids == [f"r{i}" for i in range(1, out_of_range + 1)]
    assert not result.rejected


def test_failing_record_ids_are_capped_at_100() -> None:
    raw = raw_table(Form.BASIS, [{"severity": "9"}] * 130)
    check = _by_id(validate_extract(raw, Form.BASIS, known_providers=KNOWN, today=TODAY))[
        "severity.range"
    ]
    assert check.failing_count == 130
    assert check.failing_record_ids_total == 130
    assert check.failing_record_ids == [f"r{i}" for i in range(1, 101)]


def test_the_suite_version_depends_on_the_definition_not_on_the_day() -> None:
    one = _validate(Form.BASIS, [{}])
    other_day = validate_extract(
        raw_table(Form.BASIS, [{}]), Form.BASIS, known_providers=KNOWN, today=date(2025, 6, 1)
    )
    measurement = _validate(Form.MEASUREMENT, [{}])
    assert one.suite_version == other_day.suite_version
    assert one.suite_version != measurement.suite_version
    assert one.suite_version.startswith("v1-")


def test_concurrent_jobs_each_get_their_own_result() -> None:
    # Four frames, each with a different failing row count and column.
    jobs = [
        [{"age": "5"}] * 2 + [{}] * 8,
        [{"sex": "4"}] * 3 + [{}] * 7,
        [{"icd10": "X1"}] * 4 + [{}] * 6,
        [{"severity": "8"}] * 5 + [{}] * 5,
    ]
    expected = [
        {"age.range": 2},
        {"sex.codes": 3},
        {"icd10.pattern": 4},
        {"severity.range": 5},
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda rows: _validate(Form.BASIS, rows), jobs * 2))
    for result, wanted in zip(results, expected * 2, strict=True):
        assert {c.check_id: c.failing_count for c in result.checks if c.failing_count} == wanted


def test_clean_basis_row_is_as_the_spec_says() -> None:
    # Guard for the fixtures: the clean row fills every column of the form but the study id.
    assert set(CLEAN[Form.BASIS]) | {"record_id"} == set(raw_table(Form.BASIS, [{}]).column_names)


def test_a_check_that_cannot_be_evaluated_rejects_the_file() -> None:
    # An invalid regex makes GX raise inside the metric; the result says so, without a message.
    broken = Check(
        "icd10.pattern",
        "icd10",
        "conformance",
        "error",
        0.0,
        "ExpectColumnValuesToMatchRegex",
        {"column": "icd10", "regex": "F1[0-9"},
        "icd10 does not match",
    )
    result = run_checks(raw_table(Form.BASIS, [{}, {}]), Form.BASIS, [broken])
    (check,) = result.checks
    assert check.status == "error"
    assert check.failing_count == 0
    assert result.rejected
    assert result.rejection_reasons == ["icd10.pattern: the check could not be evaluated"]
    assert result.row_failures.num_rows == 0


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ages=st.lists(
        st.one_of(
            st.none(),
            st.integers(min_value=-5, max_value=130).map(str),
            st.sampled_from(["x", "4.5", "1e2", "+40", "040", " 40"]),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_age_checks_agree_with_a_plain_reading_of_the_spec(ages: list[str | None]) -> None:
    raw = raw_table(Form.BASIS, [{"age": age} for age in ages])
    checks = _by_id(validate_extract(raw, Form.BASIS, known_providers=KNOWN, today=TODAY))

    def parsed(age: str) -> int | None:
        # EXTRACT_SPEC: an integer is an optional sign and digits, nothing else.
        return int(age) if re.fullmatch(r"[+-]?[0-9]+", age) else None

    ids = [f"r{i}" for i in range(1, len(ages) + 1)]
    missing = [i for i, age in zip(ids, ages, strict=True) if age is None]
    not_integer = [i for i, a in zip(ids, ages, strict=True) if a is not None and parsed(a) is None]
    out_of_range = [
        i
        for i, a in zip(ids, ages, strict=True)
        if a is not None and (v := parsed(a)) is not None and not 13 <= v <= 110
    ]
    assert checks["age.required"].failing_record_ids == missing
    assert checks["age.type"].failing_record_ids == not_integer
    assert checks["age.range"].failing_record_ids == out_of_range
    assert checks["age.range"].failing_percent == pytest.approx(100 * len(out_of_range) / len(ages))


# Rows that each break something (or nothing), several sharing a value, as one file.
MIXED_ROWS: list[dict[str, Any]] = [
    {},
    {"age": "111", "sex": "7", "intake_date": "31.02.2024"},
    {"age": "+40", "audit": "0041", "referral_date": "2024-02-02"},
    {"age": "111", "icd10": "F20", "dudit": None},
    {"provider_orgnr": "97463140", "age": "forty", "housing": "4"},
    {"intake_date": "2024-02-01", "referral_date": "01.02.2024", "severity": "00000000000003"},
    {"referral_date": "2024-02-02", "home_hf_orgnr": None, "severity": "6"},
    {"sex": None, "treatment_type": "1.0", "injecting_6m": "1"},
    {"record_id": "r1", "age": "111"},
]


def test_a_rows_verdicts_do_not_depend_on_the_other_rows() -> None:
    # GX judges each distinct value once and the verdict is spread over the rows that hold it:
    # the same failing rows as validating each row on its own (uniqueness aside, which relates
    # rows), and the same typed table as `normalise` over every row.
    raw = raw_table(Form.BASIS, MIXED_ROWS)
    whole = _validate(Form.BASIS, MIXED_ROWS)
    alone: dict[str, list[str]] = {}
    for index, row in enumerate(MIXED_ROWS):
        for check in _validate(Form.BASIS, [row]).checks:
            if check.failing_count:
                alone.setdefault(check.check_id, []).append(row.get("record_id", f"r{index + 1}"))
    failing = {c.check_id: c.failing_record_ids for c in whole.checks if c.failing_count}
    assert failing.pop("record_id.unique") == ["r1", "r1"]
    assert failing == alone
    assert failing["age.range"] == ["r2", "r4", "r1"]
    assert whole.typed is not None
    assert whole.typed.equals(normalise(raw, Form.BASIS).table)


def test_a_home_hf_not_on_the_hf_list_is_a_warning_and_the_row_is_kept() -> None:
    # A private provider (a provider, not a catchment area), an RHF, and a well-formed number
    # of no organisation: each reported, none quarantined, the file accepted. An HF passes.
    rows = [
        {"record_id": "private", "home_hf_orgnr": "991500006"},  # Fjellro (private_providers.csv)
        {"record_id": "rhf", "home_hf_orgnr": "983658725"},  # Helse Vest RHF
        {"record_id": "nobody", "home_hf_orgnr": "123456785"},
        {"record_id": "hf", "home_hf_orgnr": OTHER_PROVIDER},  # UNN HF
        {"record_id": "missing", "home_hf_orgnr": None},
    ]
    result = _validate(Form.BASIS, rows)
    known = _by_id(result)["home_hf_orgnr.known"]
    assert (known.status, known.severity) == ("failed", "warning")
    assert sorted(known.failing_record_ids) == ["nobody", "private", "rhf"]
    assert not result.rejected
    assert result.row_failures.num_rows == 0
