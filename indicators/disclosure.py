"""Disclosure control for researcher aggregates: cell suppression and the cell-key method.

Table layout ("table with margins"). An inner contingency table of shape (n_1, …, n_d) is
published together with all its marginal totals, sub-totals and grand total. We hold that as one
array of shape (n_1 + 1, …, n_d + 1): along every axis the last index is the total over the
others, so `t[i, -1]` is row i's total, `t[-1, j]` column j's total and `t[-1, -1]` the grand
total (`with_margins` builds it). Every "line" along an axis gives one additive equation
Σ_{i < n_k} t[…, i, …] = t[…, n_k, …], and those equations are all an attacker has besides the
published numbers.

Suppression (`suppress_table`, `suppress_cells`):
- primary: every cell, inner or margin, holding 1 … threshold−1 (default 5) is suppressed;
  zeros are shown;
- secondary: more cells are suppressed until the LP audit passes (below).

Audit (`audit_suppression`): for each suppressed cell, the attacker's feasible range of its
value is [min, max] of a linear programme over the suppressed cells (published cells fixed, all
margin equations, all values ≥ 0). We require
- every primary cell: max − min ≥ threshold (a protection interval as wide as the threshold;
  since min ≥ 0 this also means values ≥ threshold stay possible);
- every secondary cell: max − min > 0 (it cannot be recovered exactly);
- no published cell holds 1 … threshold−1.
The LP bounds are rounded inwards to integers (counts are integers). For 2-D tables the margin
equations are totally unimodular, so these are the exact integer bounds; for 3-D and more they
can be wider than the integer bounds, which is the usual LP audit of τ-ARGUS and sdcTable.

Secondary suppression heuristic: for each primary cell not yet protected, choose the cheapest
"hypercube" (Giessing & Repsilber's hypercube method: the primary cell and 2^d − 1 partner cells
at the corners of a box spanned by one alternative index per axis; margins may be corners).
Moving +t/−t around the corners keeps every equation, so the primary's range is at least the
hypercube's own range; we take the cube with the fewest new suppressions, then fewest new
margins, then the smallest suppressed total. The LP audit then checks the whole pattern, and any
remaining violation is fixed by suppressing the smallest published cell on a line through the
offending cell, until the audit passes (it always ends: a fully suppressed table passes).

Cell-key method (`cell_key`, `perturb`): the ABS TableBuilder / Statistics Sweden approach to
consistent perturbation: every record carries a fixed random key, a cell's key is the sum of its
records' keys modulo `CELL_KEY_MODULUS`, and the noise is looked up from a fixed perturbation
table by (count, cell key). The same set of records always gets the same noise, so repeating or
differencing queries does not average the noise away. (Thompson, Broadfoot & Elazar, "Methodology
for the automatic confidentialisation of statistical outputs from remote servers at the ABS",
UNECE work session on statistical data confidentiality, 2013.)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.optimize import linprog

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Cell = tuple[int, ...]
SuppressionReason = Literal["primary", "secondary"]

# Counts 1..4 are small: the register's own rule "fewer than 5 observations" (DOMAIN.md).
DEFAULT_THRESHOLD = 5

# Tolerance for reading LP optima as integers (HiGHS works in floating point).
_LP_TOLERANCE = 1e-6


def with_margins(table: npt.ArrayLike) -> IntArray:
    """Append the total along every axis: shape (n_1, …, n_d) → (n_1 + 1, …, n_d + 1)."""
    inner = np.asarray(table)
    if inner.ndim == 0 or inner.size == 0:
        raise ValueError("table must have at least one dimension and one cell")
    if not np.issubdtype(inner.dtype, np.integer) and not np.all(np.mod(inner, 1) == 0):
        raise ValueError("table must hold integer counts")
    counts = inner.astype(np.int64)
    if np.any(counts < 0):
        raise ValueError("table must hold non-negative counts")
    for axis in range(counts.ndim):
        counts = np.concatenate([counts, counts.sum(axis=axis, keepdims=True)], axis=axis)
    return counts


def _validate(table_with_margins: npt.ArrayLike) -> IntArray:
    table = np.asarray(table_with_margins)
    if table.ndim == 0 or min(table.shape) < 2:
        raise ValueError("table with margins needs at least 2 positions on every axis")
    inner = table[tuple(slice(0, size - 1) for size in table.shape)]
    rebuilt = with_margins(inner)
    if not np.array_equal(rebuilt, table):
        raise ValueError("table margins do not add up: pass with_margins(inner_table)")
    return rebuilt


def margin_equations(shape: Sequence[int]) -> sparse.csr_array:
    """The margin equations of a table with margins: sparse A with A @ table.ravel() == 0.

    One row per line along each axis: +1 on the inner cells of the line, −1 on its total. Columns
    follow `numpy.ravel` (C) order of the table.
    """
    positions = np.arange(math.prod(shape)).reshape(tuple(shape))
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    values: list[npt.NDArray[np.float64]] = []
    row_count = 0
    for axis, size in enumerate(shape):
        lines = np.moveaxis(positions, axis, -1).reshape(-1, size)
        sign = np.ones(size)
        sign[-1] = -1.0
        line_ids = np.arange(row_count, row_count + len(lines))
        rows.append(np.repeat(line_ids, size))
        cols.append(lines.ravel())
        values.append(np.tile(sign, len(lines)))
        row_count += len(lines)
    return sparse.csr_array(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=(row_count, math.prod(shape)),
    )


@dataclass(frozen=True)
class Violation:
    """A suppressed cell the published numbers expose (or a small cell left published).

    rule: `published_small` (1..threshold−1 shown), `exact` (range width 0: recoverable) or
    `narrow` (a primary cell whose range is narrower than the threshold). lower/upper are the
    attacker's integer bounds (upper may be inf).
    """

    cell: Cell
    rule: Literal["published_small", "exact", "narrow"]
    lower: float
    upper: float


def _primary_mask(table: IntArray, threshold: int) -> BoolArray:
    mask: BoolArray = (table >= 1) & (table < threshold)
    return mask


def feasible_ranges(
    table_with_margins: npt.ArrayLike, mask: npt.ArrayLike, cells: Iterable[Cell] | None = None
) -> dict[Cell, tuple[float, float]]:
    """Attacker's integer bounds (lower, upper) for suppressed cells, by linear programming.

    Variables are the suppressed cells (≥ 0); published cells are constants; constraints are all
    margin equations. upper is inf when the LP is unbounded. `cells` limits the answer to some
    suppressed cells (default: all of them).
    """
    table = _validate(table_with_margins)
    suppressed = np.asarray(mask, dtype=bool)
    if suppressed.shape != table.shape:
        raise ValueError("mask must have the shape of the table with margins")
    flat_mask = suppressed.ravel()
    hidden = np.flatnonzero(flat_mask)
    if len(hidden) == 0:
        return {}
    equations = margin_equations(table.shape)
    a_hidden = equations[:, hidden]
    known = np.where(flat_mask, 0, table.ravel()).astype(np.float64)
    b = -(equations @ known)
    # Equations without a suppressed cell hold by construction (validated margins): drop them.
    involved = np.flatnonzero(np.asarray(abs(a_hidden).sum(axis=1)).ravel() > 0)
    # Dense for linprog (its typed signature takes arrays); the reduced system is small: equations
    # touching a suppressed cell × suppressed cells.
    a_eq = a_hidden[involved].toarray()
    b_eq = np.asarray(b[involved], dtype=np.float64)
    wanted = None if cells is None else {int(np.ravel_multi_index(c, table.shape)) for c in cells}
    ranges: dict[Cell, tuple[float, float]] = {}
    for column, flat_index in enumerate(hidden):
        if wanted is not None and int(flat_index) not in wanted:
            continue
        objective = np.zeros(len(hidden))
        objective[column] = 1.0
        low = linprog(objective, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        high = linprog(-objective, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        # status 3 = unbounded: the cell can grow without limit (e.g. its grand total is hidden).
        if low.status != 0 or low.fun is None or high.status not in (0, 3):
            raise RuntimeError(f"LP audit failed: {low.message} / {high.message}")
        lower = float(math.ceil(low.fun - _LP_TOLERANCE))
        upper = math.inf
        if high.status == 0 and high.fun is not None:
            upper = float(math.floor(-high.fun + _LP_TOLERANCE))
        cell = tuple(int(i) for i in np.unravel_index(flat_index, table.shape))
        ranges[cell] = (lower, upper)
    return ranges


def audit_suppression(
    table_with_margins: npt.ArrayLike, mask: npt.ArrayLike, threshold: int = DEFAULT_THRESHOLD
) -> list[Violation]:
    """Every way the published cells of `table_with_margins` (where `mask` is False) disclose.

    Empty list = the suppression pattern is safe by the rules in the module docstring. Primary
    cells are recognised by value (1..threshold−1), so any mask can be audited.
    """
    table = _validate(table_with_margins)
    suppressed = np.asarray(mask, dtype=bool)
    primary = _primary_mask(table, threshold)
    violations = [
        Violation(tuple(int(i) for i in cell), "published_small", float(v), float(v))
        for cell in np.argwhere(primary & ~suppressed)
        for v in [table[tuple(cell)]]
    ]
    for cell, (lower, upper) in feasible_ranges(table, suppressed).items():
        width = upper - lower
        if width <= 0:
            violations.append(Violation(cell, "exact", lower, upper))
        elif primary[cell] and width < threshold:
            violations.append(Violation(cell, "narrow", lower, upper))
    return violations


@dataclass(frozen=True)
class Suppression:
    """Result of `suppress_table`: mask and reasons have the shape of the table with margins.

    reasons holds "primary", "secondary" or "" (published).
    """

    table: IntArray
    mask: BoolArray
    reasons: npt.NDArray[np.str_]
    threshold: int
    secondary_count: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "secondary_count", int(np.sum(self.reasons == "secondary")))

    def published(self) -> npt.NDArray[np.float64]:
        """The table as published: suppressed cells are NaN."""
        return np.where(self.mask, np.nan, self.table.astype(np.float64))


def _is_margin(cell: Cell, shape: tuple[int, ...]) -> list[bool]:
    return [index == size - 1 for index, size in zip(cell, shape, strict=True)]


def _cube_range(table: IntArray, corners: list[tuple[Cell, int]]) -> float:
    # t may go down by the smallest + corner and up by the smallest − corner (all cells >= 0).
    # With no − corner (the cell, its totals and the grand total all move together) t is
    # unbounded above.
    down = min(float(table[cell]) for cell, sign in corners if sign > 0)
    up = min((float(table[cell]) for cell, sign in corners if sign < 0), default=math.inf)
    return down + up


def _hypercube(table: IntArray, mask: BoolArray, primary: Cell, threshold: int) -> list[Cell]:
    """Cheapest hypercube protecting `primary` by at least `threshold`; [] when none does."""
    shape = table.shape
    sigma = [-1 if margin else 1 for margin in _is_margin(primary, shape)]
    alternatives = [
        [i for i in range(size) if i != primary[axis]] for axis, size in enumerate(shape)
    ]
    best: list[Cell] = []
    best_key: tuple[int, int, int] | None = None
    for choice in itertools.product(*alternatives):
        corners: list[tuple[Cell, int]] = []
        for moved in itertools.product((False, True), repeat=len(shape)):
            cell = tuple(
                q if move else p for p, q, move in zip(primary, choice, moved, strict=True)
            )
            sign = 1
            for axis, move in enumerate(moved):
                if move:
                    # Two cells of one line move oppositely if both are inner (or both totals),
                    # together if one of them is the line's total.
                    sign *= -sigma[axis] * (-1 if choice[axis] == shape[axis] - 1 else 1)
            corners.append((cell, sign))
        if _cube_range(table, corners) < threshold:
            continue
        new = [cell for cell, _ in corners if not mask[cell]]
        key = (
            len(new),
            sum(any(_is_margin(cell, shape)) for cell in new),
            sum(int(table[cell]) for cell in new),
        )
        if best_key is None or key < best_key:
            best_key, best = key, new
    return best


def _line_partner(table: IntArray, mask: BoolArray, cell: Cell) -> Cell | None:
    # Smallest published cell on a line through `cell`, preferring non-zero inner cells; else the
    # smallest published cell anywhere.
    shape = table.shape
    candidates: list[Cell] = []
    for axis, size in enumerate(shape):
        for i in range(size):
            other = (*cell[:axis], i, *cell[axis + 1 :])
            if not mask[other]:
                candidates.append(other)
    if not candidates:
        candidates = [tuple(int(i) for i in c) for c in np.argwhere(~mask)]
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda c: (int(table[c]) == 0, any(_is_margin(c, shape)), int(table[c]), c),
    )


def suppress_table(
    table_with_margins: npt.ArrayLike, threshold: int = DEFAULT_THRESHOLD
) -> Suppression:
    """Primary and secondary suppression of a table with margins (see the module docstring).

    The returned mask always passes `audit_suppression(table, mask, threshold)`.
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    table = _validate(table_with_margins)
    primary = _primary_mask(table, threshold)
    mask = primary.copy()
    reasons = np.where(primary, "primary", "").astype("<U9")

    def suppress(cell: Cell) -> None:
        mask[cell] = True
        if reasons[cell] == "":
            reasons[cell] = "secondary"

    primaries = sorted(
        (tuple(int(i) for i in c) for c in np.argwhere(primary)), key=lambda c: (table[c], c)
    )
    for cell in primaries:
        lower, upper = feasible_ranges(table, mask, [cell])[cell]
        if upper - lower >= threshold:
            continue
        for partner in _hypercube(table, mask, cell, threshold):
            suppress(partner)

    while violations := audit_suppression(table, mask, threshold):
        extra = _line_partner(table, mask, violations[0].cell)
        if extra is None:  # pragma: no cover - a fully suppressed table always passes
            raise RuntimeError("suppression did not converge")
        suppress(extra)
    return Suppression(table=table, mask=mask, reasons=reasons, threshold=threshold)


def suppress_cells(
    cells: Iterable[Mapping[str, Any]] | Any,
    dimensions: Sequence[str],
    count: str = "count",
    threshold: int = DEFAULT_THRESHOLD,
) -> list[dict[str, Any]]:
    """Suppress a flat aggregate given as rows (list of dicts or a pyarrow Table).

    Input: one row per cell, with a value for every column in `dimensions` (None not allowed:
    map unknowns to a category first) and a non-negative integer `count`. Repeated combinations
    are added up; combinations absent from the input count as 0. Categories are those present in
    the input, sorted.

    Output: the full table with margins, one dict per cell:
        {<dimension>: category, or None meaning "all categories" (a total), …,
         count: int, or None if suppressed,
         "suppression": None | "primary" | "secondary"}
    Rows come in the order of the table with margins (inner cells first along each axis, the
    total last); the grand total has None in every dimension.
    """
    if not dimensions:
        raise ValueError("at least one dimension is required")
    if "suppression" in dimensions or count in dimensions:
        raise ValueError("dimension names must differ from the count and 'suppression' columns")
    rows: list[Mapping[str, Any]] = (
        cells.to_pylist() if hasattr(cells, "to_pylist") else list(cells)
    )
    categories: list[list[Any]] = []
    for name in dimensions:
        values = {row[name] for row in rows}
        if None in values:
            raise ValueError(f"dimension {name} has missing values")
        try:
            categories.append(sorted(values))
        except TypeError:
            categories.append(sorted(values, key=repr))
    if not rows:
        return []
    positions = [{value: i for i, value in enumerate(values)} for values in categories]
    inner = np.zeros(tuple(len(values) for values in categories), dtype=np.int64)
    for row in rows:
        value = row[count]
        if value is None or int(value) != value or value < 0:
            raise ValueError(f"column {count} must hold non-negative integers")
        index = tuple(positions[axis][row[name]] for axis, name in enumerate(dimensions))
        inner[index] += int(value)
    result = suppress_table(with_margins(inner), threshold)
    output: list[dict[str, Any]] = []
    for cell in itertools.product(*(range(size) for size in result.table.shape)):
        record: dict[str, Any] = {
            name: categories[axis][cell[axis]] if cell[axis] < len(categories[axis]) else None
            for axis, name in enumerate(dimensions)
        }
        reason = str(result.reasons[cell])
        record[count] = None if result.mask[cell] else int(result.table[cell])
        record["suppression"] = reason or None
        output.append(record)
    return output


# Cell keys live in [0, 2**32): record keys must be drawn independently and uniformly from this
# range once per record, and kept with the record, so that a sum of them modulo 2**32 is again
# uniform (ABS cell-key method).
CELL_KEY_MODULUS = 2**32

PerturbationRow = tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class PerturbationTable:
    """Noise distribution per count: `rows[c]` for the listed counts, `default` for all others.

    Each row is ((noise, probability), …) in increasing noise; a cell key k picks the noise whose
    cumulative-probability interval holds k / CELL_KEY_MODULUS. Checked on construction: the
    probabilities add up to 1, every row has mean 0 (unbiased totals on average) and no row can
    make a count negative. Zero cells are never perturbed (they have no records and so no key).
    """

    rows: Mapping[int, PerturbationRow]
    default: PerturbationRow

    def __post_init__(self) -> None:
        above = max(self.rows, default=0) + 1
        for count, row in [*self.rows.items(), (above, self.default)]:
            if count < 1:
                raise ValueError("perturbation rows are for counts >= 1")
            if not math.isclose(sum(p for _, p in row), 1.0, abs_tol=1e-12):
                raise ValueError(f"probabilities for count {count} do not add up to 1")
            if not math.isclose(sum(d * p for d, p in row), 0.0, abs_tol=1e-12):
                raise ValueError(f"noise for count {count} does not have mean 0")
            if any(p < 0 for _, p in row) or any(count + d < 0 for d, p in row if p > 0):
                raise ValueError(f"noise for count {count} can make the count negative")
            if [d for d, _ in row] != sorted(d for d, _ in row):
                raise ValueError(f"noise for count {count} must be listed in increasing order")

    def row_for(self, count: int) -> PerturbationRow:
        """The noise distribution used for `count`."""
        return self.rows.get(count, self.default)


# A small table (maximum noise 2, variance 0.8 for counts >= 2, 0.5 for count 1). Count 1 gets
# its own row because −2 would make it negative; both rows are symmetric, hence mean 0.
DEFAULT_PTABLE = PerturbationTable(
    rows={1: ((-1, 0.25), (0, 0.5), (1, 0.25))},
    default=((-2, 0.05), (-1, 0.2), (0, 0.5), (1, 0.2), (2, 0.05)),
)


def cell_key(record_keys: Iterable[int] | npt.NDArray[np.int64]) -> int:
    """Cell key = (sum of the records' keys) mod CELL_KEY_MODULUS; order does not matter."""
    if isinstance(record_keys, np.ndarray):
        reduced = np.mod(record_keys.astype(np.int64), CELL_KEY_MODULUS).astype(np.uint64)
        # Each term is < 2**32, so uint64 cannot overflow below 2**32 records.
        return int(reduced.sum(dtype=np.uint64)) % CELL_KEY_MODULUS
    return sum(int(key) % CELL_KEY_MODULUS for key in record_keys) % CELL_KEY_MODULUS


def perturb(count: int, cell_key: int, ptable: PerturbationTable = DEFAULT_PTABLE) -> int:
    """count + noise, the noise chosen by the cell key from the perturbation table.

    Deterministic: the same (count, cell key) always gives the same result.
    """
    if count < 0:
        raise ValueError("count must be non-negative")
    if not 0 <= cell_key < CELL_KEY_MODULUS:
        raise ValueError("cell key must lie in [0, CELL_KEY_MODULUS)")
    if count == 0:
        return 0
    row = ptable.row_for(count)
    cumulative = 0.0
    for noise, probability in row:
        cumulative += probability
        # Integer comparison with the boundary key avoids float rounding on u = key / modulus.
        if cell_key < round(cumulative * CELL_KEY_MODULUS):
            return count + noise
    return count + row[-1][0]
