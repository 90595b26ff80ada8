"""Benchmark: the `basis` suite over N synthetic raw rows (default 1,000,000).

Prints the time of `validate_extract` (GX over the distinct values of each column, see
`validation.run`) and of the same checks written directly in pyarrow.compute, and their ratio (each
the best of 3 runs).
Usage: `.venv/bin/python bench/validate.py [ROWS]`.
"""

import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.forms import FORMS, Form
from schemas.parsing import normalise
from validation import validate_extract
from validation.suites import EPOCH, suite_checks

T = TypeVar("T")
REPEAT = 3
PROVIDERS = frozenset({"974631407", "974703300", "983974899"})
TODAY = date(2026, 11, 1)


def raw_basis(rows: int, seed: int = 1) -> pa.Table:
    """A raw basis extract of `rows` rows, about 1 % of them with one error."""
    rng = np.random.default_rng(seed)

    def numbers(low: int, high: int) -> pa.Array:
        return pc.cast(pa.array(rng.integers(low, high + 1, rows)), pa.string())

    def pick(values: Sequence[str | None]) -> pa.Array:
        return pa.array(np.asarray(values, dtype=object)[rng.integers(0, len(values), rows)])

    ids = pc.cast(pa.array(np.arange(rows)), pa.string())
    days = rng.integers(19000, 20000, rows)
    intake = pc.strftime(pa.array(days.astype("datetime64[D]")), format="%d.%m.%Y")
    referral = pc.strftime(pa.array((days - 30).astype("datetime64[D]")), format="%Y-%m-%d")
    columns: dict[str, pa.Array] = {
        "record_id": pc.binary_join_element_wise("r", ids, ""),
        "episode_id": pc.binary_join_element_wise("e", ids, ""),
        "patient_pseudonym": pc.binary_join_element_wise("p", ids, ""),
        "provider_orgnr": pick(sorted(PROVIDERS)),
        "unit_code": pick(["u1", "u2"]),
        "intake_date": intake,
        "referral_date": referral,
        "age": numbers(13, 111),  # 111: about 1 % out of range
        "sex": pick(["1", "2", "9"]),
        "home_hf_orgnr": pick(["974631407", None]),
        "treatment_type": numbers(1, 5),
        "primary_substance": pick(["1", "2", "3", "4", "5", "6", "9"]),
        "icd10": pick(["F10", "F10.2", "F11", "F19.1"]),
        "audit": numbers(0, 40),
        "dudit": numbers(0, 44),
        "housing": pick(["1", "2", "3", "4", "5", "9"]),
        "employment": pick(["1", "2", "3", "4", "9"]),
        "injecting_6m": pick(["0", "1", None]),
        "severity": numbers(1, 5),
        "research_consent": pick(["0", "1"]),
        "clinical_study_id": pick([None] * 20 + ["S1"]),
    }
    return pa.table(columns)


def pyarrow_baseline(raw: pa.Table) -> dict[str, int]:
    """The same checks in pyarrow.compute: failing counts per check id."""
    form = Form.BASIS
    typed = normalise(raw, form)
    counts: dict[str, int] = {}
    today = (TODAY - EPOCH).days
    for check in suite_checks(form, known_providers=PROVIDERS, today=TODAY):
        name = check.column or ""
        spec = FORMS[form].column(name)
        values = typed.table.column(name)
        kind = check.check_id.rsplit(".", 1)[1]
        if kind in ("required", "completeness"):
            failing = pc.is_null(raw.column(name))
        elif kind == "type":
            failing = typed.invalid[name]
        elif kind == "codes":
            assert spec.codes is not None
            codes = pa.array(sorted(spec.codes.values), pa.int32())
            failing = pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, codes)))
        elif kind == "range":
            failing = pc.or_(
                pc.less(values, spec.minimum or 0),
                pc.greater(values, spec.maximum if spec.maximum is not None else 2**31 - 1),
            )
        elif kind == "pattern":
            failing = pc.invert(pc.match_substring_regex(raw.column(name), spec.pattern or ""))
        elif kind == "future":
            failing = pc.greater(pc.cast(pc.cast(values, pa.int32()), pa.int64()), today)
        elif kind == "unique":
            duplicated = pc.value_counts(raw.column(name))
            many = pc.filter(duplicated.field("values"), pc.greater(duplicated.field("counts"), 1))
            failing = pc.is_in(raw.column(name), many)
        elif kind == "known":
            known = pc.is_in(raw.column(name), pa.array(sorted(PROVIDERS)))
            failing = pc.and_(pc.is_valid(raw.column(name)), pc.invert(known))
        elif kind == "after_intake":
            failing = pc.greater(values, typed.table.column("intake_date"))
        else:
            raise ValueError(check.check_id)
        counts[check.check_id] = int(pc.sum(pc.fill_null(failing, False)).as_py() or 0)
    return counts


def best_of(run: Callable[[], T], repeat: int = REPEAT) -> tuple[float, T]:
    """The fastest of `repeat` runs (the machine is shared: the minimum is the least disturbed)."""
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = run()
        best = min(best, time.perf_counter() - start)
    assert value is not None
    return best, value


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    raw = raw_basis(rows)
    validate_extract(
        raw.slice(0, 100), Form.BASIS, known_providers=PROVIDERS, today=TODAY
    )  # import GX
    normalise_seconds, _ = best_of(lambda: normalise(raw, Form.BASIS))
    gx_seconds, result = best_of(
        lambda: validate_extract(raw, Form.BASIS, known_providers=PROVIDERS, today=TODAY)
    )
    arrow_seconds, baseline = best_of(lambda: pyarrow_baseline(raw))
    ours = {check.check_id: check.failing_count for check in result.checks}
    same = all(ours[check_id] == count for check_id, count in baseline.items())
    failures = result.row_failures.num_rows
    print(f"rows: {rows:,}  checks: {len(result.checks)}  row failures: {failures:,}")
    # Both type the raw text: the baseline with schemas.parsing.normalise over every row (also
    # measured alone), validate_extract over the distinct values.
    print(f"normalise alone: {normalise_seconds:.2f} s")
    print(f"validate_extract (GX): {gx_seconds:.2f} s")
    print(f"pyarrow.compute baseline: {arrow_seconds:.2f} s")
    print(f"ratio GX / pyarrow: {gx_seconds / arrow_seconds:.1f}x  same counts: {same}")


if __name__ == "__main__":
    main()
