"""Deliberate row-level errors for testing the validation: one per chosen row, every kind of the
check-id table of severity `error` (docs/interfaces.md) that the form can carry.

Each planted value fails exactly its own check: dates move only as far as the as-of date allows
(never into the future, which would be a fatal `{column}.future`), `provider_orgnr` is never touched
(an unknown provider rejects the whole file), and the identifiers stay present so that the row can
be named by its `record_id`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from etl.generate.columns import Rows
from schemas.forms import FORMS, Form

# Values no integer or date parser accepts (no ';' or ',': the delimiter must stay detectable).
NOT_INTEGERS: Final = ("abc", "x", "1/2", "ukjent")
NOT_DATES: Final = ("31.02.2021", "2021-13-01", "32.01.2020", "ukjent")
NOT_ICD10: Final = ("F20", "F09.1", "F10.22", "Z72")
# Identifier-like columns whose absence would make the row anonymous or the file rejected.
_KEEP: Final = frozenset({"record_id", "episode_id", "patient_pseudonym", "provider_orgnr"})
# Orphan episodes (cross.no_intake) are numbered from here: still 10 digits after the prefix.
ORPHAN_EPISODES_FROM: Final = 9_000_000_000


@dataclass(frozen=True)
class Kind:
    """One kind of planted error: `check` names the check id (with `{column}` for column checks)."""

    check: str
    columns: tuple[str, ...] = ()
    text_only: bool = False  # a value of the wrong type: only CSV and XLSX can carry it


def kinds(form: Form, *, typed_format: bool) -> list[Kind]:
    """The error kinds plantable in `form`. Parquet (`typed_format`) cannot carry type errors."""
    spec = FORMS[form]
    required = tuple(c.name for c in spec.columns if c.required and c.name not in _KEEP)
    typed = tuple(c.name for c in spec.columns if c.kind in ("integer", "date"))
    codes = tuple(c.name for c in spec.columns if c.codes is not None)
    ranges = tuple(
        c.name
        for c in spec.columns
        if c.codes is None and c.kind == "integer" and c.minimum is not None
    )
    patterns = tuple(c.name for c in spec.columns if c.pattern is not None and c.name not in _KEEP)
    found = [Kind("{column}.required", required), Kind("{column}.codes", codes)]
    if not typed_format:
        found.append(Kind("{column}.type", typed, text_only=True))
    if ranges:
        found.append(Kind("{column}.range", ranges))
    if patterns:
        found.append(Kind("{column}.pattern", patterns))
    if form is Form.BASIS:
        found.append(Kind("referral_date.after_intake"))
    if form in (Form.MEASUREMENT, Form.DISCHARGE):
        found += [Kind("cross.before_intake"), Kind("cross.no_intake")]
    if form is Form.DISCHARGE:
        found.append(Kind("cross.duplicate_discharge"))
    if form is Form.FOLLOWUP:
        found.append(Kind("cross.followup_before_discharge"))
    return found


@dataclass
class Context:
    """What the cross-record kinds need, per row of the form: the episode's intake day, the
    episode's discharge day (follow-up), the as-of day, and the next orphan episode number."""

    intake: np.ndarray
    discharge: np.ndarray | None
    as_of: int
    next_orphan: int = ORPHAN_EPISODES_FROM
    # Per row: whether the discharge it is compared with is clean (an erroneous discharge is
    # quarantined, so a follow-up could not be found to precede it).
    discharge_clean: np.ndarray | None = None


@dataclass
class Planted:
    """Row positions per check id; `duplicates`: positions whose row is written twice."""

    positions: dict[str, np.ndarray]
    duplicates: np.ndarray


def plant(
    rows: Rows,
    selected: np.ndarray,
    rng: np.random.Generator,
    context: Context,
    available: Sequence[Kind],
) -> Planted:
    """Plant one error in every selected row (mask), choosing uniformly among the kinds that the
    row can carry, then a column uniformly within the kind. Modifies `rows` in place."""
    chosen_rows = np.flatnonzero(selected)
    found: dict[str, list[np.ndarray]] = {}
    duplicates = np.zeros(0, dtype=np.int64)
    if chosen_rows.size == 0:
        return Planted({}, duplicates)
    applicable = np.ones((chosen_rows.size, len(available)), dtype=bool)
    for k, kind in enumerate(available):
        if kind.check == "referral_date.after_intake":
            applicable[:, k] = context.intake[chosen_rows] < context.as_of
        if kind.check == "cross.followup_before_discharge" and context.discharge_clean is not None:
            applicable[:, k] = context.discharge_clean[chosen_rows]
    cumulative = np.cumsum(applicable, axis=1) / applicable.sum(axis=1, keepdims=True)
    choice = (rng.random(chosen_rows.size)[:, None] >= cumulative).sum(axis=1)

    for k, kind in enumerate(available):
        at = chosen_rows[choice == k]
        if at.size == 0:
            continue
        if kind.columns:
            column_of = rng.integers(0, len(kind.columns), at.size)
            for c, column in enumerate(kind.columns):
                here = at[column_of == c]
                if here.size:
                    check = kind.check.format(column=column)
                    _plant_column(rows, kind.check, column, here, rng)
                    found.setdefault(check, []).append(here)
            continue
        _plant_cross(rows, kind.check, at, rng, context)
        if kind.check == "cross.duplicate_discharge":
            duplicates = at
        found.setdefault(kind.check, []).append(at)
    return Planted({check: np.sort(np.concatenate(p)) for check, p in found.items()}, duplicates)


def _plant_column(
    rows: Rows, check: str, column: str, at: np.ndarray, rng: np.random.Generator
) -> None:
    spec = FORMS[rows.form].column(column)
    values = rows.columns[column]
    nulls = rows.null(column)
    if check == "{column}.required":
        nulls[at] = True
        return
    if check == "{column}.type":
        garbage = NOT_DATES if spec.kind == "date" else NOT_INTEGERS
        picked = rng.integers(0, len(garbage), at.size)
        rows.raw[column] = (at, [garbage[int(i)] for i in picked])
        nulls[at] = True  # the typed value is absent: the raw text stands in its place
        return
    nulls[at] = False
    if check == "{column}.codes":
        assert spec.codes is not None
        values[at] = max(spec.codes.values) + 1
    elif check == "{column}.range":
        assert spec.minimum is not None
        above = rng.random(at.size) < 0.5 if spec.maximum is not None else np.zeros(at.size, bool)
        high = (spec.maximum or 0) + 1 + rng.integers(0, 5, at.size)
        low = spec.minimum - 1 - rng.integers(0, 3, at.size)
        values[at] = np.where(above, high, low)
    elif check == "{column}.pattern":
        vocabulary = rows.texts[column]
        bad = NOT_ICD10 if column == "icd10" else tuple(v[:8] for v in vocabulary[:4])
        first = len(vocabulary)
        vocabulary.extend(bad)
        values[at] = first + rng.integers(0, len(bad), at.size)


def _plant_cross(
    rows: Rows, check: str, at: np.ndarray, rng: np.random.Generator, context: Context
) -> None:
    n = at.size
    if check == "referral_date.after_intake":
        room = np.minimum(context.as_of - context.intake[at], 30)
        rows.columns["referral_date"][at] = context.intake[at] + 1 + rng.integers(0, room)
        rows.null("referral_date")[at] = False
    elif check == "cross.before_intake":
        column = "measure_date" if rows.form is Form.MEASUREMENT else "discharge_date"
        rows.columns[column][at] = context.intake[at] - 1 - rng.integers(0, 60, n)
    elif check == "cross.no_intake":
        rows.columns["episode_id"][at] = context.next_orphan + np.arange(n)
        context.next_orphan += n
    elif check == "cross.followup_before_discharge":
        assert context.discharge is not None
        rows.columns["followup_date"][at] = context.discharge[at] - 1 - rng.integers(0, 90, n)
    # cross.duplicate_discharge: the caller writes the row twice (with two record ids).
