"""Quality reports: roll-ups by category, HTML and text, and never a value from the file."""

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from schemas.forms import Form
from tests.validation.conftest import KNOWN, TODAY, raw_table
from validation import validate_extract
from validation.report import (
    WAREHOUSE_CHECK_CATEGORIES,
    WAREHOUSE_CHECK_DEFAULT_CATEGORY,
    quality_report,
    render_html,
    render_text,
    with_warehouse_checks,
)

# Values that must never leave the file: a pseudonym, dates, scores, codes, free text.
SENTINELS = {
    "patient_pseudonym": "PSEUDONYM-SENTINEL-7Q",
    "unit_code": "UNIT-SENTINEL-3K",
    "intake_date": "17.09.2013",
    "referral_date": "2013-08-29",
    "audit": "+39",  # a valid score, written so that the string is unmistakable
    "age": "AGE-SENTINEL",  # not an integer: fails age.type
    "icd10": "F77.7",  # fails icd10.pattern
    "clinical_study_id": "STUDY-SENTINEL-9",
    "sex": "-813",  # fails sex.codes
}


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    rows: list[dict[str, Any]] = [
        {},
        {"record_id": "rX", **SENTINELS},
        {"dudit": None},
        {"dudit": None},
    ]
    result = validate_extract(
        raw_table(Form.BASIS, rows), Form.BASIS, known_providers=KNOWN, today=TODAY
    )
    return quality_report(result)


def test_roll_ups_by_category(report: dict[str, Any]) -> None:
    assert report["categories"] == {
        # 13 type, 7 codes, 3 pattern, unique, known provider, known home HF; age.type,
        # sex.codes, icd10.pattern fail on row rX
        "conformance": {
            "checks": 26,
            "passed": 23,
            "failed": 3,
            "not_applicable": 0,
            "error": 0,
            "failing_rows": 1,
        },
        # 15 required, 5 optional; dudit filled in 2 of 4 rows: 50 % missing is tolerated
        "completeness": {
            "checks": 20,
            "passed": 20,
            "failed": 0,
            "not_applicable": 0,
            "error": 0,
            "failing_rows": 2,
        },
        # 4 ranges, 2 future dates, referral after intake
        "plausibility": {
            "checks": 7,
            "passed": 7,
            "failed": 0,
            "not_applicable": 0,
            "error": 0,
            "failing_rows": 0,
        },
    }
    assert report["quarantined_rows"] == 1
    assert report["rejected"] is False
    # In text, the 2 rows without a dudit are findings of a passed check, not rows "failing".
    lines = render_text(report).splitlines()
    assert lines[0].endswith("accepted; 1 row(s) to quarantine")
    assert "  completeness: 20 passed, 0 failed, 2 row(s) with a finding" in lines


def test_report_is_json_and_names_record_ids_not_values(report: dict[str, Any]) -> None:
    text = json.dumps(report)
    html = render_html(report, failing_ids_url="/uploads/7/failing")
    plain = render_text(report)
    for value in SENTINELS.values():
        for output in (text, html, plain):
            assert value not in output
    assert '"rX"' in text
    assert "rX" in html
    assert "rX" in plain


def test_html_is_self_contained_without_scripts(report: dict[str, Any]) -> None:
    html = render_html(report)
    assert "<script" not in html.lower()
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "<link" not in html.lower()
    assert "icd10.pattern" in html
    assert report["suite_version"] in html


def test_failing_ids_link_only_when_the_list_is_capped() -> None:
    raw = raw_table(Form.BASIS, [{"severity": "7"}] * 101 + [{}])
    result = validate_extract(raw, Form.BASIS, known_providers=KNOWN, today=TODAY)
    html = render_html(quality_report(result), failing_ids_url="/uploads/7/failing")
    assert html.count('href="/uploads/7/failing?check=') == 1
    assert 'href="/uploads/7/failing?check=severity.range">all 101</a>' in html
    assert "(first 100 of 101)" in render_html(quality_report(result))
    with_query = render_html(quality_report(result), failing_ids_url="/failing?upload=7")
    assert 'href="/failing?upload=7&amp;check=severity.range"' in with_query


def test_html_escapes_what_it_shows() -> None:
    # A record id is shown, so it must be escaped.
    raw = raw_table(Form.BASIS, [{"record_id": "<b>x</b>", "age": "7"}])
    result = validate_extract(raw, Form.BASIS, known_providers=KNOWN, today=TODAY)
    html = render_html(quality_report(result))
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert "<b>x</b>" not in html


def test_text_report_lists_failed_checks() -> None:
    raw = raw_table(Form.BASIS, [{"age": "7"}, {}])
    text = render_text(
        quality_report(validate_extract(raw, Form.BASIS, known_providers=KNOWN, today=TODAY))
    )
    assert text.splitlines()[0].endswith("accepted; 1 row(s) to quarantine")
    assert "failed         error   age.range: 1 (50.00 %, tolerated 0 %) record ids: r1" in text


def test_an_empty_row_failures_table_reports_zero() -> None:
    raw = raw_table(Form.BASIS, [{}])
    result = validate_extract(raw, Form.BASIS, known_providers=KNOWN, today=TODAY)
    assert result.row_failures.schema.field("row_index").type == pa.int64()
    assert quality_report(result)["quarantined_rows"] == 0


def _failures(rows: list[tuple[int, str, str]]) -> pa.Table:
    """A loader's failures table: (row_index, record_id, check) of severity error."""
    return pa.table(
        {
            "row_index": pa.array([r[0] for r in rows], pa.int64()),
            "record_id": pa.array([r[1] for r in rows], pa.string()),
            "check": pa.array([r[2] for r in rows], pa.string()),
            "severity": pa.array(["error"] * len(rows), pa.string()),
        }
    )


def test_warehouse_checks_are_listed_after_the_suites_and_rendered() -> None:
    raw = raw_table(Form.BASIS, [{}, {}, {}, {"age": "7"}])
    suite = quality_report(validate_extract(raw, Form.BASIS, known_providers=KNOWN, today=TODAY))
    failures = _failures(
        [
            (2, "r3", "record_id.other_provider"),
            (1, "r2", "cross.inconsistent_demographics"),
            (0, "r1", "record_id.other_provider"),
        ]
    )
    report = with_warehouse_checks(suite, failures, quarantined_rows=4)
    assert report["quarantined_rows"] == 4
    assert report["categories"] == suite["categories"]
    assert report["checks"][: len(suite["checks"])] == suite["checks"]
    added = report["checks"][len(suite["checks"]) :]
    assert [(c["check_id"], c["category"], c["column"]) for c in added] == [
        ("cross.inconsistent_demographics", "plausibility", None),
        ("record_id.other_provider", "conformance", "record_id"),
    ]
    assert [(c["failing_count"], c["failing_percent"], c["failing_record_ids"]) for c in added] == [
        (1, 25.0, ["r2"]),
        (2, 50.0, ["r1", "r3"]),  # in file order
    ]
    html = render_html(report)
    assert "<code>record_id.other_provider</code>" in html
    assert "r1, r3" in html
    text = render_text(report)
    assert text.splitlines()[0].endswith("accepted; 4 row(s) to quarantine")
    assert (
        "failed         error   record_id.other_provider: 2 (50.00 %, tolerated 0 %) "
        "record ids: r1, r3"
    ) in text


def test_a_warehouse_checks_record_ids_are_capped_and_linked() -> None:
    raw = raw_table(Form.MEASUREMENT, [{}] * 101)
    suite = quality_report(
        validate_extract(raw, Form.MEASUREMENT, known_providers=KNOWN, today=TODAY)
    )
    failures = _failures([(n, f"r{n + 1}", "cross.no_intake") for n in range(101)])
    report = with_warehouse_checks(suite, failures, quarantined_rows=101)
    (check,) = [c for c in report["checks"] if c["check_id"] == "cross.no_intake"]
    assert check["failing_record_ids"] == [f"r{n}" for n in range(1, 101)]
    assert (check["failing_record_ids_total"], check["category"]) == (101, "completeness")
    html = render_html(report, failing_ids_url="/uploads/7/failing")
    assert 'href="/uploads/7/failing?check=cross.no_intake">all 101</a>' in html


def test_warehouse_check_categories_are_those_of_the_interface_doc() -> None:
    # docs/interfaces.md's table of check ids is the shared contract of categories.
    doc = (Path(__file__).parents[2] / "docs" / "interfaces.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `((?:cross\.\w+)|record_id\.other_provider)` \| (\w+) \|", doc, re.M)
    assert len(rows) == 8
    for check_id, category in rows:
        assert WAREHOUSE_CHECK_CATEGORIES.get(check_id, WAREHOUSE_CHECK_DEFAULT_CATEGORY) == (
            category
        ), check_id


def test_a_report_with_record_ids_withheld_says_so(report: dict[str, Any]) -> None:
    """A trust's view of an upload that holds other providers' rows (`counts_only`): the failing
    checks say the ids are withheld, not '(first 0 of 1)'."""
    from service.uploads import counts_only

    page = render_html(counts_only(report))
    # age.type, sex.codes, icd10.pattern (row rX) and dudit.completeness (2 rows, tolerated)
    failing = sum(1 for check in report["checks"] if check["failing_record_ids_total"])
    assert failing == 4
    assert page.count("record ids withheld") == failing
    assert "first 0 of" not in page
    assert "rX" not in page
