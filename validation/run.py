"""`validate_extract`: run a form's suite over one raw extract and judge it.

GX judges distinct values, not rows. Every check but uniqueness decides a row by that row's own
values, so GX sees each distinct value (or combination, for a check that reads two columns) once
and a row fails where its value failed; uniqueness relates rows, so it sees every row. A 1M-row
basis file has about 1,500 distinct values in its widest typed column: GX's work per row and the
typing of every row (`normalise` types value by value, so the distinct values are typed instead)
go away, and what is left is GX's cost per expectation (about 5 ms each).
Measured on 1M basis rows: 3.2 s → 1.0 s, with identical results (`test_run.py` checks the
verdicts of a row against validating it on its own).

One GX ephemeral context per call (GX contexts are not thread-safe: a shared one can hand a thread
another thread's results, ARCHITECTURE.md). Each batch is validated with the cheap `BASIC` result
format for every expectation, and a second time with `COMPLETE` (indexes of failing values) only
for the expectations that found some: a clean file is validated in one pass (`COMPLETE` for every
expectation cost 0.36 s instead of 0.23 s on the basis suite).

Pass/fail is ours, not GX's: GX leaves missing values out of `unexpected_percent`, we divide the
failing rows by *all* rows and compare with the check's tolerance. Nothing from GX's results that
holds a value (`partial_unexpected_list`, `unexpected_list`, exception messages) is ever kept.
"""

import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from schemas.forms import FORMS, READ_NOTES, Form, extract_schema
from schemas.parsing import normalise
from validation.suites import (
    CODE_SUFFIX,
    INVALID_SUFFIX,
    PRESENT_SUFFIX,
    TYPED_KINDS,
    VALUE_SUFFIX,
    Category,
    Check,
    Severity,
    build_suite,
    great_expectations,
    suite_checks,
    suite_version,
)

# Per check id: the indexes of the failing rows.
Indexes = dict[str, "np.ndarray[Any, np.dtype[np.int64]]"]
Status = Literal["passed", "failed", "not_applicable", "error"]
STATUSES: Final[tuple[Status, ...]] = ("passed", "failed", "not_applicable", "error")
CATEGORIES: Final[tuple[Category, ...]] = ("conformance", "completeness", "plausibility")

# A report lists at most this many failing record ids per check (the full list is the quarantine).
MAX_LISTED_RECORD_IDS: Final = 100

# The file-level check that the columns are the form's: not in the generator's table because the
# reader refuses such files before validation; here for a raw table built by other means.
COLUMNS_CHECK_ID: Final = "table.columns"
# A column name is repeated in a message only when it is a column of some form: in a file without a
# header row the "names" are a record's values, and a letters-only pseudonym looks like any name.
_DICTIONARY_NAMES: Final = frozenset(name for spec in FORMS.values() for name in spec.column_names)

ROW_FAILURES_SCHEMA: Final = pa.schema(
    [
        pa.field("row_index", pa.int64(), nullable=False),
        pa.field("record_id", pa.string()),
        pa.field("check", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)

_BASIC: Final = {"result_format": "BASIC", "partial_unexpected_count": 0}
_COMPLETE: Final = {
    "result_format": "COMPLETE",
    "partial_unexpected_count": 0,
    # The query string would spell out every failing index; we read the index list instead.
    "return_unexpected_index_query": False,
}


@dataclass(frozen=True)
class CheckResult:
    check_id: str
    column: str | None
    category: Category
    severity: Severity
    status: Status
    failing_count: int
    # Failing rows over *all* rows of the file, in percent.
    failing_percent: float
    tolerated_percent: float
    failing_record_ids: list[str] = field(default_factory=list)
    failing_record_ids_total: int = 0


@dataclass
class ValidationResult:
    form: Form
    suite_version: str
    rows: int
    checks: list[CheckResult]
    rejected: bool
    rejection_reasons: list[str]
    row_failures: pa.Table
    # Distinct rows that fail at least one check, per Kahn category.
    failing_rows_by_category: dict[str, int] = field(default_factory=dict)
    # The file typed by `schemas.parsing.normalise` (the form's columns the file has), so that a
    # caller need not type it a second time; None when the file's columns were not the form's.
    typed: pa.Table | None = field(default=None, repr=False)
    # The reader's notes on the file (`schemas.forms.READ_NOTES`).
    notes: list[str] = field(default_factory=list)

    def to_report(self) -> dict[str, Any]:
        """The result as JSON-able data: check ids, counts and record ids, never a record value.

        `categories` rolls the checks up per Kahn category: checks by status and the distinct
        rows failing any of the category's checks.
        """
        quarantined = pc.count_distinct(self.row_failures.column("row_index")).as_py()
        categories: dict[str, dict[str, int]] = {}
        for category in CATEGORIES:
            statuses = [check.status for check in self.checks if check.category == category]
            categories[category] = {
                "checks": len(statuses),
                **{status: statuses.count(status) for status in STATUSES},
                "failing_rows": self.failing_rows_by_category.get(category, 0),
            }
        return {
            "form": self.form.value,
            "suite_version": self.suite_version,
            "rows": self.rows,
            "rejected": self.rejected,
            "rejection_reasons": list(self.rejection_reasons),
            "notes": list(self.notes),
            "quarantined_rows": int(quarantined),
            "categories": categories,
            "checks": [asdict(check) for check in self.checks],
        }


def validate_extract(
    raw: pa.Table,
    form: Form,
    *,
    known_providers: frozenset[str],
    today: date,
    on_typed: Callable[[pa.Table], None] | None = None,
) -> ValidationResult:
    """Validate a raw extract (all columns text, lower-case names, nulls for empty cells)."""
    checks = suite_checks(form, known_providers=known_providers, today=today)
    return run_checks(raw, form, checks, on_typed=on_typed)


def run_checks(
    raw: pa.Table,
    form: Form,
    checks: list[Check],
    *,
    on_typed: Callable[[pa.Table], None] | None = None,
) -> ValidationResult:
    """Run the given checks of a form over a raw table and judge each against its tolerance.

    `on_typed` is called with the typed table (`ValidationResult.typed`) as soon as it exists,
    before the suite runs: the loader starts its checks against the warehouse there, beside the
    suite, which holds the GIL while they run in DuckDB."""
    spec = FORMS[form]
    rows = raw.num_rows
    unknown = sorted(name for name in raw.column_names if name not in spec.column_names)
    missing = sorted(name for name in spec.required_columns if name not in raw.column_names)
    known = raw.select([name for name in raw.column_names if name in spec.column_names])
    known = known.cast(pa.schema([pa.field(name, pa.string()) for name in known.column_names]))
    record_ids = _record_ids(known)

    results: list[CheckResult] = []
    if unknown or missing:
        results.append(_columns_check_failed(rows, record_ids))
    runnable = [check for check in checks if not _needs_missing(check, missing)]
    values = _Values(known, form, runnable)
    typed = None if unknown or missing else values.typed()
    if typed is not None and on_typed is not None:
        on_typed(typed)
    results_by_id, indexes = _run_gx(form, _batches(runnable, values, rows), rows, record_ids)
    for check in checks:
        if check.check_id in results_by_id:
            results.append(results_by_id[check.check_id])
        else:
            results.append(_result(check, "not_applicable", 0, rows, np.empty(0, np.int64), None))

    reasons = [
        _rejection_reason(result, rows)
        for result in results
        if result.status == "error" or (result.severity == "fatal" and result.status == "failed")
    ]
    if unknown or missing:
        # A file without a header row has values for column names: name only dictionary ones.
        shown = [
            name
            if name in _DICTIONARY_NAMES
            else f"column {raw.column_names.index(name) + 1} (name not shown)"
            for name in unknown
        ]
        reasons[0] = (
            f"{COLUMNS_CHECK_ID}: {len(unknown)} column(s) not part of form '{form.value}'"
            f"{' (' + ', '.join(shown) + ')' if unknown else ''}, "
            f"{len(missing)} required column(s) missing"
            f"{' (' + ', '.join(missing) + ')' if missing else ''}"
        )
    return ValidationResult(
        form=form,
        suite_version=suite_version(form, checks),
        rows=rows,
        checks=results,
        rejected=bool(reasons),
        rejection_reasons=reasons,
        row_failures=_row_failures(results_by_id, indexes, checks, record_ids),
        failing_rows_by_category=_failing_rows_by_category(results, indexes, rows),
        typed=typed,
        notes=_read_notes(raw),
    )


def _read_notes(raw: pa.Table) -> list[str]:
    """The notes the reader left on the raw table (`schemas.forms.READ_NOTES`); none on one built
    otherwise."""
    metadata = raw.schema.metadata or {}
    if READ_NOTES not in metadata:
        return []
    notes = json.loads(metadata[READ_NOTES])
    return [str(note) for note in notes]


def _failing_rows_by_category(
    results: list[CheckResult], indexes: Indexes, rows: int
) -> dict[str, int]:
    failing: dict[str, int] = {}
    for category in CATEGORIES:
        hit = np.zeros(rows, dtype=bool)
        for result in results:
            if result.category != category:
                continue
            if result.check_id == COLUMNS_CHECK_ID:
                hit[:] = True
            elif result.check_id in indexes:
                hit[indexes[result.check_id]] = True
        failing[category] = int(hit.sum())
    return failing


def _needs_missing(check: Check, missing: list[str]) -> bool:
    """Whether a check reads a required column the file lacks (then it is not applicable)."""
    columns = {check.column, *(_split(name)[0] for name in _frame_columns(check))}
    return any(name in missing for name in columns)


def _frame_columns(check: Check) -> list[str]:
    return [
        str(check.arguments[name])
        for name in ("column", "column_A", "column_B")
        if name in check.arguments
    ] + [str(name) for name in check.arguments.get("column_list", ())]


def _record_ids(raw: pa.Table) -> pa.ChunkedArray:
    if "record_id" in raw.column_names:
        return raw.column("record_id")
    return pa.chunked_array([pa.nulls(raw.num_rows, pa.string())])


_SUFFIX: Final = re.compile(f"({VALUE_SUFFIX}|{INVALID_SUFFIX}|{PRESENT_SUFFIX}|{CODE_SUFFIX})$")


def _split(name: str) -> tuple[str, str]:
    """A frame column's data-dictionary column and suffix (`""` for the raw text)."""
    match = _SUFFIX.search(name)
    return (name[: match.start()], match.group(1)) if match else (name, "")


@dataclass(frozen=True)
class _Encoded:
    """A column as its distinct values (a null among them where a row has none) and, per row of
    the file, the position of the row's value among them."""

    values: pa.Array
    rows: np.ndarray[Any, np.dtype[np.integer[Any]]]


def _encode(values: pa.Array | pa.ChunkedArray) -> _Encoded:
    encoded = pc.dictionary_encode(values, null_encoding="encode")
    if isinstance(encoded, pa.ChunkedArray):
        # The chunks share one dictionary: combining them concatenates the indices only.
        encoded = encoded.combine_chunks()
    return _Encoded(encoded.dictionary, encoded.indices.to_numpy())


class _Values:
    """The file's columns as distinct values, typed by `normalise` value by value.

    `normalise` types each value on its own (a regex, a cast, a date check per cell), so typing
    the distinct values and spreading them over the rows gives the table that typing every row
    gives, for a fraction of the work: 1M basis rows have ~1,500 distinct dates and ~100 distinct
    integers per column (`normalise` of every row 0.87 s; encoding and typing the values 0.2 s).
    Text columns of the form are typed as themselves and are encoded only where a check reads
    their text (an identifier has as many values as rows).
    """

    def __init__(self, known: pa.Table, form: Form, checks: list[Check]) -> None:
        self.known = known
        self.form = form
        spec = FORMS[form]
        read = {
            base
            for check in checks
            for base, suffix in map(_split, _frame_columns(check))
            if suffix != PRESENT_SUFFIX
        }
        typed = [
            c.name
            for c in spec.columns
            if c.kind in TYPED_KINDS and (c.name in known.column_names or c.name in read)
        ]
        names = sorted({*read, *typed})
        # Arrow's kernels release the GIL: encode the columns on every core (0.36 s → 0.20 s for
        # the 17 encoded columns of 1M basis rows on 2 cores).
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            encoded = pool.map(lambda name: _encode(self.text(name)), names)
            self.encoded = dict(zip(names, encoded, strict=True))
        longest = max((len(self.encoded[name].values) for name in typed), default=0)
        # One `normalise` over every typed column's values, padded to one length.
        normalised = normalise(
            pa.table({name: _pad(self.encoded[name].values, longest) for name in typed}), form
        )
        # Per typed column: its values typed, and where a value is not parseable.
        self.typed_values: dict[str, tuple[pa.Array, pa.Array]] = {}
        for name in typed:
            count = len(self.encoded[name].values)
            self.typed_values[name] = (
                normalised.table.column(name).combine_chunks().slice(0, count),
                normalised.invalid[name].slice(0, count),
            )

    def text(self, name: str) -> pa.ChunkedArray:
        """A column's raw text; all null where the file lacks the column."""
        if name in self.known.column_names:
            return self.known.column(name)
        return pa.chunked_array([pa.nulls(self.known.num_rows, pa.string())])

    def column(self, name: str) -> _Encoded:
        """A validation frame column (see `validation.suites`) as its distinct values."""
        base, suffix = _split(name)
        if suffix == PRESENT_SUFFIX:
            text = self.text(base)
            if text.null_count == 0:
                return _Encoded(pa.array([1.0], pa.float32()), np.zeros(len(text), np.int8))
            absent = pc.is_null(text).combine_chunks()
            return _Encoded(
                pa.array([1.0, None], pa.float32()), absent.to_numpy(False).view(np.int8)
            )
        encoded = self.encoded[base]
        if suffix == VALUE_SUFFIX:
            typed = self.typed_values[base][0]
            if FORMS[self.form].column(base).kind == "date":
                typed = pc.cast(typed, pa.int32())
            return _Encoded(pc.cast(typed, pa.float64()), encoded.rows)
        if suffix == INVALID_SUFFIX:
            return _Encoded(self.typed_values[base][1], encoded.rows)
        if suffix == CODE_SUFFIX:
            codes = pa.array(np.arange(len(encoded.values), dtype=np.float64))
            return _Encoded(pc.if_else(pc.is_valid(encoded.values), codes, None), encoded.rows)
        return encoded

    def typed(self) -> pa.Table:
        """The file typed as `normalise` types it (`extract_schema`)."""
        columns: list[pa.Array | pa.ChunkedArray] = []
        for column in FORMS[self.form].columns:
            if column.name in self.typed_values:
                typed = self.typed_values[column.name][0]
                columns.append(pc.take(typed, self.encoded[column.name].rows))
            elif column.name in self.known.column_names:
                columns.append(self.known.column(column.name))  # text: typed as itself
            else:
                columns.append(pa.nulls(self.known.num_rows, column.arrow_type))
        return pa.Table.from_arrays(columns, schema=extract_schema(self.form))


# Expectations whose verdict on a row depends on that row's values alone: GX judges each distinct
# value (or combination of values) once. Any other expectation (uniqueness relates rows) sees
# every row.
_PER_VALUE: Final = frozenset(
    {
        "ExpectColumnValuesToNotBeNull",
        "ExpectColumnValuesToBeInSet",
        "ExpectColumnValuesToBeBetween",
        "ExpectColumnValuesToMatchRegex",
        "ExpectColumnPairValuesAToBeGreaterThanB",
    }
)


@dataclass(frozen=True)
class _Batch:
    """One GX batch: a frame and the checks run over it."""

    frame: pd.DataFrame
    checks: list[Check]
    # Per check id, per row of the file: the frame row holding the row's values; None where the
    # frame's rows are the file's rows.
    rows: Mapping[str, np.ndarray[Any, np.dtype[np.integer[Any]]] | None]


def _batches(checks: list[Check], values: _Values, rows: int) -> list[_Batch]:
    """The checks as GX batches over distinct values.

    - one frame for the checks that read one column: each frame column holds that column's
      distinct values (padded to the longest, see `_pad`);
    - one frame per set of columns read together (referral after intake): their distinct
      combinations;
    - one frame of every row for the other checks (uniqueness, of a column or of a key).
    """
    single: list[Check] = []
    together: dict[tuple[str, ...], list[Check]] = {}
    whole: list[Check] = []
    for check in checks:
        names = tuple(_frame_columns(check))
        if check.expectation not in _PER_VALUE:
            whole.append(check)
        elif len(names) == 1:
            single.append(check)
        else:
            together.setdefault(names, []).append(check)
    batches: list[_Batch] = []
    if single:
        columns = {name: values.column(name) for c in single for name in _frame_columns(c)}
        length = max(len(column.values) for column in columns.values())
        frame = _frame({name: _pad(c.values, length) for name, c in columns.items()}, length)
        by_check = {c.check_id: columns[_frame_columns(c)[0]].rows for c in single}
        batches.append(_Batch(frame, single, by_check))
    for names, group in together.items():
        frame, rows_of = _combinations({name: values.column(name) for name in names})
        batches.append(_Batch(frame, group, dict.fromkeys((c.check_id for c in group), rows_of)))
    if whole:
        columns = {name: values.column(name) for c in whole for name in _frame_columns(c)}
        frame = _frame({name: c.values.take(pa.array(c.rows)) for name, c in columns.items()}, rows)
        batches.append(_Batch(frame, whole, dict.fromkeys(c.check_id for c in whole)))
    return batches


def _combinations(
    columns: dict[str, _Encoded],
) -> tuple[pd.DataFrame, np.ndarray[Any, np.dtype[np.integer[Any]]]]:
    """The distinct combinations of the columns' values in one row, as a frame, and per row of
    the file its combination's frame row."""
    # Each row's combination as one number: mixed radix over the columns' numbers of values.
    combined = np.zeros(len(next(iter(columns.values())).rows), dtype=np.int64)
    for column in columns.values():
        combined = combined * len(column.values) + column.rows
    distinct = pc.dictionary_encode(pa.array(combined))
    number = distinct.dictionary.to_numpy()
    parts: dict[str, pa.Array] = {}
    for name, column in reversed(columns.items()):
        parts[name] = column.values.take(pa.array(number % len(column.values)))
        number = number // len(column.values)
    return _frame(parts, len(distinct.dictionary)), distinct.indices.to_numpy()


def _pad(values: pa.Array, length: int) -> pa.Array:
    """The values, then the first one repeated up to `length`: a padding row fails a check only
    where a row of the file fails it too, so it never costs a pass for the failing rows."""
    if len(values) == 0:
        return pa.nulls(length, values.type)
    return pa.concat_arrays(
        [values, values.take(pa.array(np.zeros(length - len(values), np.int64)))]
    )


def _frame(columns: dict[str, pa.Array], length: int) -> pd.DataFrame:
    """The validation frame (see `validation.suites`) of these columns' values."""
    data: dict[str, Any] = {}
    for name, values in sorted(columns.items()):
        suffix = _split(name)[1]
        if suffix == PRESENT_SUFFIX:
            data[name] = values.to_numpy(zero_copy_only=False).astype(np.float32)
        elif suffix in (VALUE_SUFFIX, CODE_SUFFIX):
            # float64, not float32: GX compares only int and float64 columns vectorised (a
            # float32 column goes through a Python function per value).
            data[name] = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
        elif suffix == INVALID_SUFFIX:
            invalid = pc.fill_null(values, False).to_numpy(zero_copy_only=False)
            data[name] = np.asarray(invalid, dtype=bool)
        else:
            data[name] = values.to_pandas()
    # copy=False: one block per column instead of copying same-typed columns into 2-D blocks.
    return pd.DataFrame(data, index=pd.RangeIndex(length), copy=False)


def _run_gx(
    form: Form, batches: list[_Batch], rows: int, record_ids: pa.ChunkedArray
) -> tuple[dict[str, CheckResult], Indexes]:
    """Run the batches with GX; the results by check id and the failing row indexes."""
    if not batches:
        return {}, {}
    gx = great_expectations()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # One context per job: GX contexts are not thread-safe.
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        ),
    )
    job = uuid.uuid4().hex
    source = context.data_sources.add_pandas(f"extract_{job}")
    results: dict[str, CheckResult] = {}
    indexes: Indexes = {}
    for number, batch in enumerate(batches):
        data = (
            source.add_dataframe_asset(f"{form.value}_{number}")
            .add_batch_definition_whole_dataframe("whole")
            .get_batch(batch_parameters={"dataframe": batch.frame})
        )
        by_id = {check.check_id: check for check in batch.checks}
        name = f"{form.value}_{job}_{number}"
        summary = data.validate(build_suite(form, batch.checks, name=name), result_format=_BASIC)
        counts: dict[str, int | None] = {}
        for outcome in summary.results:
            check_id = outcome.expectation_config.meta["check_id"]
            raised = bool(outcome.exception_info and outcome.exception_info.get("raised_exception"))
            count = outcome.result.get("unexpected_count")
            counts[check_id] = None if raised or count is None else int(count)

        failing = [by_id[check_id] for check_id, count in counts.items() if count]
        listed: Indexes = {}
        if failing:
            detail = data.validate(
                build_suite(form, failing, name=f"{name}_rows"), result_format=_COMPLETE
            )
            for outcome in detail.results:
                index_list = outcome.result.get("unexpected_index_list")
                if index_list is not None:
                    check_id = outcome.expectation_config.meta["check_id"]
                    listed[check_id] = np.asarray(index_list, dtype=np.int64)

        for check_id, count in counts.items():
            check = by_id[check_id]
            if count is None or (count and check_id not in listed):
                results[check_id] = _result(check, "error", 0, rows, np.empty(0, np.int64), None)
                continue
            found = _failing_rows(
                listed.get(check_id, np.empty(0, np.int64)), batch.rows[check_id], len(batch.frame)
            )
            indexes[check_id] = found
            percent = 100.0 * len(found) / rows if rows else 0.0
            passed = len(found) == 0 or percent <= check.tolerated_percent
            results[check_id] = _result(
                check, "passed" if passed else "failed", len(found), rows, found, record_ids
            )
    return results, indexes


def _failing_rows(
    failing: np.ndarray[Any, np.dtype[np.int64]],
    rows_of: np.ndarray[Any, np.dtype[np.integer[Any]]] | None,
    frame_rows: int,
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The file's rows whose frame row failed (ascending)."""
    if rows_of is None or len(failing) == 0:
        return failing
    hit = np.zeros(frame_rows, dtype=bool)
    hit[failing] = True
    return np.flatnonzero(hit[rows_of]).astype(np.int64)


def _result(
    check: Check,
    status: Status,
    count: int,
    rows: int,
    found: np.ndarray[Any, np.dtype[np.int64]],
    record_ids: pa.Array | None,
) -> CheckResult:
    listed: list[str] = []
    if record_ids is not None and len(found):
        shown = record_ids.take(pa.array(found[:MAX_LISTED_RECORD_IDS]))
        listed = [value for value in shown.to_pylist() if value is not None]
    return CheckResult(
        check_id=check.check_id,
        column=check.column,
        category=check.category,
        severity=check.severity,
        status=status,
        failing_count=count,
        failing_percent=100.0 * count / rows if rows else 0.0,
        tolerated_percent=check.tolerated_percent,
        failing_record_ids=listed,
        failing_record_ids_total=len(found),
    )


def _columns_check_failed(rows: int, record_ids: pa.Array) -> CheckResult:
    """The file's columns are not the form's: every row fails, the file is rejected."""
    listed = [value for value in record_ids[:MAX_LISTED_RECORD_IDS].to_pylist() if value]
    return CheckResult(
        check_id=COLUMNS_CHECK_ID,
        column=None,
        category="conformance",
        severity="fatal",
        status="failed",
        failing_count=rows,
        failing_percent=100.0 if rows else 0.0,
        tolerated_percent=0.0,
        failing_record_ids=listed,
        failing_record_ids_total=rows,
    )


def _rejection_reason(result: CheckResult, rows: int) -> str:
    if result.status == "error":
        return f"{result.check_id}: the check could not be evaluated"
    return (
        f"{result.check_id}: {result.failing_count} of {rows} rows failed "
        f"(tolerated {result.tolerated_percent:g} %)"
    )


def _row_failures(
    results: dict[str, CheckResult], indexes: Indexes, checks: list[Check], record_ids: pa.Array
) -> pa.Table:
    """One row per failing row × check of severity `error` (the rows to quarantine)."""
    parts: list[pa.Table] = []
    for check in checks:
        result = results.get(check.check_id)
        if check.severity != "error" or result is None or check.check_id not in indexes:
            continue
        found = indexes[check.check_id]
        if not len(found):
            continue
        size = len(found)
        parts.append(
            pa.table(
                {
                    "row_index": pa.array(found, pa.int64()),
                    "record_id": record_ids.take(pa.array(found)),
                    "check": pa.array([check.check_id] * size, pa.string()),
                    "severity": pa.array([check.severity] * size, pa.string()),
                    "reason": pa.array([check.reason] * size, pa.string()),
                },
                schema=ROW_FAILURES_SCHEMA,
            )
        )
    if not parts:
        return ROW_FAILURES_SCHEMA.empty_table()
    return pa.concat_tables(parts).sort_by([("row_index", "ascending"), ("check", "ascending")])
