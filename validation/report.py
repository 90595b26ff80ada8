"""Quality reports of a validation: data (the `to_report()` dict), HTML and plain text.

A report names checks, columns, counts, percentages and record ids, and nothing else from the
file: no pseudonym, no date, no score, no code value. The HTML is our own template (autoescaped,
inline CSS, no JavaScript, no external assets); GX Data Docs are not used because they pull
scripts from CDNs and embed data values (ARCHITECTURE.md).
"""

from pathlib import Path
from typing import Any, Final

import jinja2

from validation.run import MAX_LISTED_RECORD_IDS, ValidationResult

_TEMPLATES: Final = Path(__file__).parent / "templates"
_ENVIRONMENT: Final = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def quality_report(result: ValidationResult) -> dict[str, Any]:
    """The report as JSON-able data (checks, roll-ups by category, suite version)."""
    return result.to_report()


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
    for category, rollup in report["categories"].items():
        lines.append(
            f"  {category}: {rollup['passed']} passed, {rollup['failed']} failed, "
            f"{rollup['failing_rows']} failing row(s)"
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
