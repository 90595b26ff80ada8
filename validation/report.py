"""Quality reports of a validation: data (the `to_report()` dict), HTML and plain text.

A report names checks, columns, counts, percentages and record ids, and nothing else from the
file: no pseudonym, no date, no score, no code value. The HTML is our own template (autoescaped,
inline CSS, no JavaScript, no external assets); GX Data Docs are not used because they pull
scripts from CDNs and embed data values (ARCHITECTURE.md).
"""

from pathlib import Path
from typing import Any, Final

import jinja2
import pyarrow as pa
import pyarrow.compute as pc

from validation.run import MAX_LISTED_RECORD_IDS, ValidationResult
from validation.suites import Category

_TEMPLATES: Final = Path(__file__).parent / "templates"
_ENVIRONMENT: Final = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


# The category of a check the loader runs against the warehouse (`validation.cross_record` and
# the loader's `record_id.other_provider`; docs/interfaces.md lists them): a check that relates a
# record to others is a plausibility check, but for these two.
WAREHOUSE_CHECK_CATEGORIES: Final[dict[str, Category]] = {
    "cross.no_intake": "completeness",
    "record_id.other_provider": "conformance",
}
WAREHOUSE_CHECK_DEFAULT_CATEGORY: Final[Category] = "plausibility"


def quality_report(result: ValidationResult) -> dict[str, Any]:
    """The report as JSON-able data (checks, roll-ups by category, suite version)."""
    return result.to_report()


def with_warehouse_checks(
    report: dict[str, Any], failures: pa.Table, *, quarantined_rows: int
) -> dict[str, Any]:
    """The suite's report with the checks the loader ran against the warehouse, as the loader
    stores it: the rows those checks quarantined are then named where the user reads the report.

    `failures`: one row per failing row x check (`row_index` into the file, `record_id`, `check`,
    `severity`), as `ValidationResult.row_failures`. Each failing check is listed after the
    suite's, in the suite's shape (record ids in file order, at most MAX_LISTED_RECORD_IDS;
    tolerated 0 %: each failing row is quarantined); a check that failed no row is not listed.
    `quarantined_rows` replaces the suite's own figure: the rows the load quarantined, the suite's
    and the warehouse checks' (the ledger's `rows_quarantined`).

    `categories` stays the suite's roll-up. Its `failing_rows` counts the rows that fail a
    category's warnings too (an optional column left empty fails `{column}.completeness`), and
    the suite's report does not say which rows those are, so the union with the warehouse
    checks' rows cannot be counted exactly: adding them would count most such rows twice (778 of
    the 780 rows of a generated measurement file, seed 1, leave an optional column empty).
    """
    rows = int(report["rows"])
    checks: list[dict[str, Any]] = list(report["checks"])
    for check_id in sorted(set(failures.column("check").to_pylist())):
        failing = failures.filter(pc.equal(failures.column("check"), check_id))
        failing = failing.sort_by("row_index")
        listed = failing.column("record_id").drop_null().slice(0, MAX_LISTED_RECORD_IDS)
        checks.append(
            {
                "check_id": check_id,
                "column": "record_id" if check_id.startswith("record_id.") else None,
                "category": WAREHOUSE_CHECK_CATEGORIES.get(
                    check_id, WAREHOUSE_CHECK_DEFAULT_CATEGORY
                ),
                "severity": failing.column("severity")[0].as_py(),
                "status": "failed",
                "failing_count": failing.num_rows,
                "failing_percent": 100.0 * failing.num_rows / rows if rows else 0.0,
                "tolerated_percent": 0.0,
                "failing_record_ids": listed.to_pylist(),
                "failing_record_ids_total": failing.num_rows,
            }
        )
    return {**report, "quarantined_rows": quarantined_rows, "checks": checks}


def render_html(report: dict[str, Any], *, failing_ids_url: str | None = None) -> str:
    """The report as one self-contained HTML page."""
    template = _ENVIRONMENT.get_template("report.html")
    # A capped list links to `{failing_ids_url}?check={check_id}` (or `&check=` after a query).
    separator = "&" if failing_ids_url and "?" in failing_ids_url else "?"
    return template.render(
        report=report,
        failing_ids_url=failing_ids_url,
        separator=separator,
        max_listed=MAX_LISTED_RECORD_IDS,
    )


def render_text(report: dict[str, Any]) -> str:
    """The report as plain text for a terminal."""
    verdict = "REJECTED" if report["rejected"] else "accepted"
    lines = [
        f"Form {report['form']}, {report['rows']} rows, suite {report['suite_version']}: "
        f"{verdict}; {report['quarantined_rows']} row(s) to quarantine",
    ]
    lines += [f"  rejected: {reason}" for reason in report["rejection_reasons"]]
    # Absent from the reports stored before the reader left notes.
    lines += [f"  note: {note}" for note in report.get("notes", [])]
    if report.get("released_rows"):
        lines.append(
            f"  released: {report['released_rows']} row(s) held for their intake were stored "
            "when it arrived"
        )
    for released in report.get("released", []):
        lines.append(
            f"  released: {released['rows']} held {released['form']} row(s) of upload "
            f"{released['upload_id']}, their intake now stored"
        )
    for category, rollup in report["categories"].items():
        lines.append(
            f"  {category}: {rollup['passed']} passed, {rollup['failed']} failed, "
            # Rows that fail any of the category's checks, tolerated ones and warnings included
            # (an optional cell left empty): not the rows quarantined, which the first line says.
            f"{rollup['failing_rows']} row(s) with a finding"
        )
    for check in report["checks"]:
        if check["status"] == "passed":
            continue
        shown = ", ".join(check["failing_record_ids"][:10])
        more = check["failing_record_ids_total"] - min(len(check["failing_record_ids"]), 10)
        lines.append(
            f"  {check['status']:<14} {check['severity']:<7} {check['check_id']}: "
            f"{check['failing_count']} ({check['failing_percent']:.2f} %, tolerated "
            f"{check['tolerated_percent']:g} %)"
            + (f" record ids: {shown}" if shown else "")
            + (f" and {more} more" if more > 0 else "")
        )
    return "\n".join(lines) + "\n"
