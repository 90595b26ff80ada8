"""The validation suite of every form, built from the data dictionary (`schemas.forms.FORMS`).

A suite is a list of `Check`s. Each check is one Great Expectations (GX Core 1.x) expectation over
the *validation frame* (see `validation.run`), plus what the register needs around it: the check id
shared with the generator and the reports (docs/interfaces.md), the Kahn category (conformance,
completeness, plausibility; Kahn et al., eGEMs 2016), the severity and the tolerated failure
percentage. GX decides which values fail; we decide pass/fail from counts over *all* rows.

Validation frame columns (pandas DataFrames built per job over the distinct values of what the
checks read, see `validation.run`; only the columns the checks read: GX copies the whole frame
for every column expectation that skips missing values, so the frame is kept narrow and numeric;
the pseudonym never enters it):
- `{column}`: the raw text as received, only where text is checked (pattern, uniqueness, known
  provider);
- `{column}__present`: float32, 1 where a value was sent, NaN where the cell was empty (required,
  completeness);
- `{column}__value`: integers and dates as float64 (dates as days since 1970-01-01), NaN where
  missing or unparseable (codes, ranges, future dates, referral before intake);
- `{column}__invalid`: True where a value is present but not parseable (type);
- `{column}__code`: the text's dictionary code as float64 (uniqueness: the same equality as the
  text, without pandas hashing a million strings: 0.45 s → 0.07 s); NaN where missing.

Uniqueness: `record_id.unique` where a form has record_id; a form keyed otherwise (`FILE_KEYS`:
npr_counts by provider_orgnr and year) has one check over its key's columns together.
"""

import hashlib
import json
import os
import re
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from types import ModuleType
from typing import Any, Final, Literal

from schemas.forms import FORMS, ICD10_PATTERN, SPEC_VERSION, ColumnSpec, Form
from schemas.organisations import Hierarchy

Category = Literal["conformance", "completeness", "plausibility"]
Severity = Literal["fatal", "error", "warning"]

EPOCH: Final = date(1970, 1, 1)

# Share of rows an optional column may leave empty before the completeness warning fires. 50 %:
# the register's screening indicator expects AUDIT/DUDIT at most intakes (target >= 90 %,
# DOMAIN.md), so a column less than half filled points at an export problem rather than at
# clinical practice.
OPTIONAL_TOLERATED_MISSING_PERCENT: Final = 50.0
# Optional columns whose emptiness is the normal case, not a quality problem: a clinical-study id is
# only set for the few patients enrolled in a study (1 % of TSB patients in 2021, DOMAIN.md).
NO_COMPLETENESS_CHECK: Final = frozenset({"clinical_study_id"})

# Forms whose rows have a key other than record_id: its columns, together unique within a file
# (the warehouse merges on them, `etl.warehouse.MERGE_KEYS`: two rows of one key in a file would
# both be stored, and a later correction would supersede both). The check id names the key.
FILE_KEYS: Final[dict[Form, tuple[str, tuple[str, ...]]]] = {
    Form.NPR_COUNTS: ("provider_year.unique", ("provider_orgnr", "year")),
}

# The frame column names that hold parsed values and parse failures.
VALUE_SUFFIX: Final = "__value"
PRESENT_SUFFIX: Final = "__present"
INVALID_SUFFIX: Final = "__invalid"
CODE_SUFFIX: Final = "__code"


@dataclass(frozen=True)
class Check:
    """One check of a form's suite: a GX expectation plus the register's judgement around it."""

    check_id: str
    column: str | None
    category: Category
    severity: Severity
    tolerated_percent: float
    # The GX expectation class (in `great_expectations.expectations`) and its arguments over the
    # validation frame.
    expectation: str
    arguments: Mapping[str, Any]
    # Why a row fails, in words without any value (goes into row_failures and reports).
    reason: str
    # Argument names whose values change per job (today, the known providers): left out of the
    # suite version.
    per_job: frozenset[str] = field(default_factory=frozenset)

    @property
    def meta(self) -> dict[str, Any]:
        return {
            "check_id": self.check_id,
            "category": self.category,
            "severity": self.severity,
            "tolerated_percent": self.tolerated_percent,
        }

    def definition(self) -> dict[str, Any]:
        """The check as plain data, without its per-job arguments (for the suite version)."""
        arguments = {
            name: (f"<{name}>" if name in self.per_job else value)
            for name, value in sorted(self.arguments.items())
        }
        return {**self.meta, "column": self.column, "expectation": self.expectation, **arguments}


def _column_checks(
    column: ColumnSpec,
    *,
    known_providers: frozenset[str] | None,
    today: date,
    future: Severity = "fatal",
) -> list[Check]:
    """The checks of one column; `known_providers` None: no `provider_orgnr.known` check;
    `future` the severity of a date after `today`."""
    name = column.name
    value = name + VALUE_SUFFIX
    checks: list[Check] = []
    if column.required:
        checks.append(
            Check(
                f"{name}.required",
                name,
                "completeness",
                "error",
                0.0,
                "ExpectColumnValuesToNotBeNull",
                {"column": name + PRESENT_SUFFIX},
                f"required value missing in {name}",
            )
        )
    elif name not in NO_COMPLETENESS_CHECK:
        checks.append(
            Check(
                f"{name}.completeness",
                name,
                "completeness",
                "warning",
                OPTIONAL_TOLERATED_MISSING_PERCENT,
                "ExpectColumnValuesToNotBeNull",
                {"column": name + PRESENT_SUFFIX},
                f"optional value missing in {name}",
            )
        )
    if column.kind in ("integer", "date"):
        kind = "an integer" if column.kind == "integer" else "a date (dd.mm.yyyy or yyyy-mm-dd)"
        checks.append(
            Check(
                f"{name}.type",
                name,
                "conformance",
                "error",
                0.0,
                "ExpectColumnValuesToBeInSet",
                {"column": name + INVALID_SUFFIX, "value_set": [False]},
                f"value in {name} is not {kind}",
            )
        )
    if column.codes is not None:
        checks.append(
            Check(
                f"{name}.codes",
                name,
                "conformance",
                "error",
                0.0,
                "ExpectColumnValuesToBeInSet",
                {"column": value, "value_set": sorted(float(v) for v in column.codes.values)},
                f"value in {name} is not in the code list {column.codes.name}",
            )
        )
    if column.minimum is not None or column.maximum is not None:
        bounds = f"{column.minimum}–{column.maximum}" if column.maximum is not None else ""
        checks.append(
            Check(
                f"{name}.range",
                name,
                "plausibility",
                "error",
                0.0,
                "ExpectColumnValuesToBeBetween",
                {"column": value, "min_value": column.minimum, "max_value": column.maximum},
                f"value in {name} outside {bounds or f'>= {column.minimum}'}",
            )
        )
    if column.pattern is not None:
        what = "the ICD-10 pattern F10–F19" if column.pattern == ICD10_PATTERN else "9 digits"
        checks.append(
            Check(
                f"{name}.pattern",
                name,
                "conformance",
                "error",
                0.0,
                "ExpectColumnValuesToMatchRegex",
                {"column": name, "regex": _without_capture_groups(column.pattern)},
                f"value in {name} does not match {what}",
            )
        )
    if column.kind == "date":
        checks.append(
            Check(
                f"{name}.future",
                name,
                "plausibility",
                future,
                0.0,
                "ExpectColumnValuesToBeBetween",
                {"column": value, "max_value": float((today - EPOCH).days)},
                f"date in {name} after the day of validation",
                per_job=frozenset({"max_value"}),
            )
        )
    if name == "record_id":
        checks.append(
            Check(
                "record_id.unique",
                name,
                "conformance",
                "fatal",
                0.0,
                "ExpectColumnValuesToBeUnique",
                {"column": name + CODE_SUFFIX},
                "record_id occurs more than once in the file",
            )
        )
    if name == "provider_orgnr" and known_providers is not None:
        checks.append(
            Check(
                "provider_orgnr.known",
                name,
                "conformance",
                "fatal",
                0.0,
                "ExpectColumnValuesToBeInSet",
                {"column": name, "value_set": sorted(known_providers)},
                "provider_orgnr is not a provider known to the register",
                per_job=frozenset({"value_set"}),
            )
        )
    if name == "home_hf_orgnr":
        # A warning: the row is kept (its caregiver indicators stand); the indicators leave it out
        # of the resident context, which only an HF of the list has.
        checks.append(
            Check(
                "home_hf_orgnr.known",
                name,
                "conformance",
                "warning",
                0.0,
                "ExpectColumnValuesToBeInSet",
                {"column": name, "value_set": sorted(o.orgnr for o in Hierarchy.default().hfs)},
                "home_hf_orgnr is not a health trust (HF) of the register's list",
            )
        )
    return checks


# The column kinds the validation frame holds as values (`{column}__value`), not as text.
TYPED_KINDS: Final = ("date", "integer")


def _without_capture_groups(pattern: str) -> str:
    """The same regex with non-capturing groups: pandas warns on `str.contains` with groups."""
    return re.sub(r"(?<!\\)\((?!\?)", "(?:", pattern)


def suite_checks(form: Form, *, known_providers: frozenset[str], today: date) -> list[Check]:
    """Every check of a form's suite, in the order of the data dictionary's columns.

    An `optout` file has no `provider_orgnr.known` check (its 9-digit pattern is checked): an
    opt-out is the patient's right to be erased, which a provider missing from the register's list
    must not block (the erasure is of every record of the patient, whoever sent it). For the same
    reason its `optout_date.future` fails the row (the patient is erased, the row counted as
    quarantined, as for an impossible date), not the file: a typo in one row must not keep every
    patient of the file in the register. Nor has it `record_id.unique`: EXTRACT_SPEC.md asks
    record_id to be unique within the form only of the episode forms (an optout row is no record
    that a later one supersedes), and a repeated one erased no patient of the file.

    In an `npr_counts` file a provider outside the register's list fails its row (quarantined,
    reported), not the file: NPR counts the episodes of every provider, also of those that do not
    report to the register (EXTRACT_SPEC.md asks only for 9 digits), and coverage is computed for
    the providers of the list."""
    spec = FORMS[form]
    optout = form is Form.OPTOUT
    providers = None if optout else known_providers
    future: Severity = "error" if optout else "fatal"
    checks: list[Check] = []
    for column in spec.columns:
        checks.extend(_column_checks(column, known_providers=providers, today=today, future=future))
    if optout:
        checks = [check for check in checks if check.check_id != "record_id.unique"]
    if form is Form.NPR_COUNTS:
        checks = [
            replace(check, severity="error") if check.check_id == "provider_orgnr.known" else check
            for check in checks
        ]
    if form in FILE_KEYS:
        check_id, key = FILE_KEYS[form]
        checks.append(
            Check(
                check_id,
                key[-1],
                "conformance",
                "fatal",
                0.0,
                "ExpectCompoundColumnsToBeUnique",
                {
                    # The text of a text column; the value of a typed one ("2021" = "+2021").
                    "column_list": [
                        name
                        + (VALUE_SUFFIX if spec.column(name).kind in TYPED_KINDS else CODE_SUFFIX)
                        for name in key
                    ],
                    # A row without one of them fails its required/type check instead.
                    "ignore_row_if": "any_value_is_missing",
                },
                f"{' and '.join(key)} occur together more than once in the file",
            )
        )
    if "referral_date" in spec.column_names and "intake_date" in spec.column_names:
        checks.append(
            Check(
                "referral_date.after_intake",
                "referral_date",
                "plausibility",
                "error",
                0.0,
                "ExpectColumnPairValuesAToBeGreaterThanB",
                {
                    "column_A": "intake_date" + VALUE_SUFFIX,
                    "column_B": "referral_date" + VALUE_SUFFIX,
                    "or_equal": True,
                    "ignore_row_if": "either_value_is_missing",
                },
                "referral_date after intake_date",
            )
        )
    return checks


def suite_version(form: Form, checks: list[Check]) -> str:
    """A short hash of the suite's definition and the extract specification version."""
    definition = {
        "spec_version": SPEC_VERSION,
        "form": form.value,
        "checks": [check.definition() for check in checks],
    }
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
    return f"v{SPEC_VERSION}-{digest[:12]}"


_IMPORT_LOCK: Final = threading.Lock()
_gx: ModuleType | None = None


def great_expectations() -> ModuleType:
    """Import GX once, lazily (it takes seconds and imports pyspark), with its analytics off."""
    global _gx
    with _IMPORT_LOCK:
        if _gx is None:
            # Read by GX at import time; set before the import so no usage event is ever sent.
            os.environ["GX_ANALYTICS_ENABLED"] = "False"
            with warnings.catch_warnings():
                # GX imports pyspark, which warns that it does not fully support pandas 3
                # (ARCHITECTURE.md); validation does not use Spark, so not on every CLI run.
                warnings.filterwarnings(
                    "ignore",
                    message="PySpark does not yet fully support pandas",
                    category=FutureWarning,
                )
                import great_expectations as gx
                import great_expectations.expectations
                from great_expectations.execution_engine import pandas_execution_engine

            # GX fingerprints every pandas batch under 1 GB by hashing all of it (md5 over
            # `hash_pandas_object`) on every `validate` call: over a third of the time of a
            # 1M-row suite. The fingerprint is only a batch marker, never read back, so a
            # threshold of 0 turns it off.
            pandas_execution_engine.HASH_THRESHOLD = 0

            _gx = gx
        return _gx


def expectation(check: Check) -> Any:
    """The GX expectation object of a check (a new one each time: GX objects are not shared)."""
    gx = great_expectations()
    cls = getattr(gx.expectations, check.expectation)
    return cls(**check.arguments, meta=check.meta)


def build_suite(form: Form, checks: list[Check], *, name: str | None = None) -> Any:
    """The GX `ExpectationSuite` of a form's checks."""
    gx = great_expectations()
    # Passed to the constructor, not `add_expectation`d one by one: that compares each new
    # expectation with every earlier one (quadratic, about 0.4 s for the basis suite); the check
    # ids are unique by construction.
    return gx.ExpectationSuite(
        name=name or f"kvarus_{form.value}_{suite_version(form, checks)}",
        expectations=[expectation(check) for check in checks],
    )
