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
The LPs of a cell are skipped once tables the attacker cannot rule out (the true table, earlier LP
solutions, a chosen hypercube's extreme tables, each checked) show it at values at least the
required width apart: its range contains them, so the verdict is the one its LPs would give
(`_Attacker`). On 1,680-cell tables this takes ~170 LPs instead of ~3,000.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.optimize import linprog
from scipy.sparse.csgraph import connected_components

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
    attacker = _Attacker(table)
    hidden = np.flatnonzero(suppressed.ravel())
    wanted = None if cells is None else {int(np.ravel_multi_index(c, table.shape)) for c in cells}
    ranges: dict[Cell, tuple[float, float]] = {}
    for flat_index in hidden:
        if wanted is not None and int(flat_index) not in wanted:
            continue
        cell = tuple(int(i) for i in np.unravel_index(flat_index, table.shape))
        ranges[cell] = attacker.bounds(suppressed, int(flat_index))
    return ranges


class _Attacker:
    """The attacker's LP over one table, solved cell by cell, with a pool of feasible points.

    Every LP solution is a table the attacker cannot rule out (published cells at their values,
    every margin equation holding, every value ≥ 0), and so is the true table. A cell's feasible
    range contains every value it takes in such a table, so once the tables seen so far show a
    cell at values at least the required width apart, its range is provably that wide and its
    own LPs are skipped: they could only widen it. A cell not shown safe gets both LPs, exactly
    as before, so the verdict on every cell is unchanged; only LPs whose answer is already known
    are saved. A table feasible under a mask stays feasible when more cells are suppressed (the
    newly hidden cells keep their values), so the pool serves the whole of `suppress_table`.

    `check`, when given, is called before every LP: it may raise (a deadline) to abandon the work.
    """

    def __init__(self, table: IntArray, check: Callable[[], None] | None = None) -> None:
        self.table = table
        self.values = table.ravel().astype(np.float64)
        self.equations = margin_equations(table.shape)
        self.check = check
        self.lowest = self.values.copy()
        self.highest = self.values.copy()
        self.solved = 0
        self._mask_key: bytes | None = None
        self._hidden: IntArray = np.zeros(0, dtype=np.int64)
        self._labels: IntArray = np.zeros(0, dtype=np.int64)
        self._a_eq: sparse.csr_array = sparse.csr_array((0, 0))
        self._b_eq: npt.NDArray[np.float64] = np.zeros(0)
        self._components: dict[int, tuple[IntArray, sparse.csr_array, npt.NDArray[np.float64]]]
        self._components = {}

    def _component(
        self, suppressed: BoolArray, flat_index: int
    ) -> tuple[IntArray, sparse.csr_array, npt.NDArray[np.float64]]:
        """The LP of one suppressed cell: the suppressed cells linked to it through margin
        equations (flat indices) and those equations, A x = b.

        The suppressed cells of other components share no equation with these, and their true
        values satisfy theirs, so the cell's range over its component is its range over the
        whole table; a solution, with every other cell at its true value, is a whole table the
        attacker cannot rule out.
        """
        key = np.packbits(suppressed.ravel()).tobytes()
        if key != self._mask_key:
            flat_mask = suppressed.ravel()
            hidden = np.flatnonzero(flat_mask)
            a_hidden = self.equations[:, hidden]
            known = np.where(flat_mask, 0.0, self.values)
            b = -(self.equations @ known)
            # Equations without a suppressed cell hold by construction (validated margins).
            involved = np.flatnonzero(np.asarray(abs(a_hidden).sum(axis=1)).ravel() > 0)
            self._a_eq = sparse.csr_array(a_hidden[involved])
            self._b_eq = np.asarray(b[involved], dtype=np.float64)
            incidence = sparse.csr_array(abs(self._a_eq))
            _, labels = connected_components(incidence.T @ incidence, directed=False)
            self._mask_key, self._hidden, self._labels = key, hidden, labels.astype(np.int64)
            self._components = {}
        label = int(self._labels[int(np.searchsorted(self._hidden, flat_index))])
        if label not in self._components:
            columns = np.flatnonzero(self._labels == label)
            a_columns = self._a_eq[:, columns]
            rows = np.flatnonzero(np.asarray(abs(a_columns).sum(axis=1)).ravel() > 0)
            self._components[label] = (
                self._hidden[columns],
                sparse.csr_array(a_columns[rows]),
                self._b_eq[rows],
            )
        return self._components[label]

    def add_table(self, candidate: IntArray, suppressed: BoolArray) -> bool:
        """Add a table to the pool if it is one the attacker cannot rule out: published cells
        at their values, every margin equation exact (integers), every value ≥ 0. Checked here,
        so the pool never holds a table an attacker could exclude."""
        values = candidate.ravel()
        feasible = (
            candidate.shape == self.table.shape
            and bool(np.all(values >= 0))
            and bool(np.all(values[~suppressed.ravel()] == self.values[~suppressed.ravel()]))
            and not np.any(self.equations @ values.astype(np.float64))
        )
        if feasible:
            np.minimum(self.lowest, values, out=self.lowest)
            np.maximum(self.highest, values, out=self.highest)
        return feasible

    def _seen_width(self, flat_index: int) -> float:
        # Rounded inwards as the LP bounds are (`bounds`).
        lower = math.ceil(self.lowest[flat_index] - _LP_TOLERANCE)
        upper = math.floor(self.highest[flat_index] + _LP_TOLERANCE)
        return float(upper - lower)

    def _solve(
        self, suppressed: BoolArray, flat_index: int, sense: float
    ) -> tuple[int, float | None, str]:
        if self.check is not None:
            self.check()
        hidden, a_eq, b_eq = self._component(suppressed, flat_index)
        objective = np.zeros(len(hidden))
        objective[int(np.searchsorted(hidden, flat_index))] = sense
        # Sparse A: HiGHS takes it as is (the stubs type A_eq as dense only).
        a_sparse: Any = a_eq
        result = linprog(
            objective,
            A_eq=a_sparse,
            b_eq=b_eq,
            bounds=(0, None),
            method="highs",
            # Small LPs solved by the hundred: presolve costs more than it saves (measured).
            options={"presolve": False},
        )
        self.solved += 1
        if result.status == 0 and result.x is not None:
            point = self.values.copy()
            point[hidden] = result.x
            np.minimum(self.lowest, point, out=self.lowest)
            np.maximum(self.highest, point, out=self.highest)
        fun = None if result.fun is None else float(result.fun)
        return int(result.status), fun, str(result.message)

    def bounds(self, suppressed: BoolArray, flat_index: int) -> tuple[float, float]:
        """The integer bounds (lower, upper) of a suppressed cell: both LPs, always."""
        low_status, low, low_message = self._solve(suppressed, flat_index, 1.0)
        high_status, high, high_message = self._solve(suppressed, flat_index, -1.0)
        # status 3 = unbounded: the cell can grow without limit (e.g. its grand total is hidden).
        if low_status != 0 or low is None or high_status not in (0, 3):
            raise RuntimeError(f"LP audit failed: {low_message} / {high_message}")
        lower = float(math.ceil(low - _LP_TOLERANCE))
        upper = math.inf
        if high_status == 0 and high is not None:
            upper = float(math.floor(-high + _LP_TOLERANCE))
        return lower, upper

    def at_least(
        self, suppressed: BoolArray, flat_index: int, width: float
    ) -> tuple[float, float] | None:
        """None when the cell's range is provably at least `width` wide; else its bounds."""
        if self._seen_width(flat_index) >= width:
            return None
        low_status, low, low_message = self._solve(suppressed, flat_index, 1.0)
        if low_status != 0 or low is None:
            raise RuntimeError(f"LP audit failed: {low_message}")
        if self._seen_width(flat_index) >= width:  # the minimum's table went far enough
            return None
        high_status, high, high_message = self._solve(suppressed, flat_index, -1.0)
        if high_status not in (0, 3):
            raise RuntimeError(f"LP audit failed: {low_message} / {high_message}")
        lower = float(math.ceil(low - _LP_TOLERANCE))
        upper = math.inf
        if high_status == 0 and high is not None:
            upper = float(math.floor(-high + _LP_TOLERANCE))
        if upper - lower >= width:
            return None
        return lower, upper

    def violations(
        self, suppressed: BoolArray, threshold: int, *, first_only: bool = False
    ) -> list[Violation]:
        """`audit_suppression` (the same violations, in the same order)."""
        table = self.table
        primary = _primary_mask(table, threshold)
        violations = [
            Violation(tuple(int(i) for i in cell), "published_small", float(v), float(v))
            for cell in np.argwhere(primary & ~suppressed)
            for v in [table[tuple(cell)]]
        ]
        if violations and first_only:
            return violations[:1]
        for flat_index in np.flatnonzero(suppressed.ravel()):
            cell = tuple(int(i) for i in np.unravel_index(flat_index, table.shape))
            # Secondary cells need a width > 0, i.e. at least 1 (integer bounds).
            needed = threshold if primary[cell] else 1
            found = self.at_least(suppressed, int(flat_index), needed)
            if found is None:
                continue
            lower, upper = found
            rule: Literal["exact", "narrow"] = "exact" if upper - lower <= 0 else "narrow"
            violations.append(Violation(cell, rule, lower, upper))
            if first_only:
                break
        return violations


def audit_suppression(
    table_with_margins: npt.ArrayLike,
    mask: npt.ArrayLike,
    threshold: int = DEFAULT_THRESHOLD,
    *,
    check: Callable[[], None] | None = None,
) -> list[Violation]:
    """Every way the published cells of `table_with_margins` (where `mask` is False) disclose.

    Empty list = the suppression pattern is safe by the rules in the module docstring. Primary
    cells are recognised by value (1..threshold−1), so any mask can be audited. `check` is called
    before every LP (it may raise to abandon the audit).
    """
    table = _validate(table_with_margins)
    suppressed = np.asarray(mask, dtype=bool)
    if suppressed.shape != table.shape:
        raise ValueError("mask must have the shape of the table with margins")
    return _Attacker(table, check).violations(suppressed, threshold)


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


@dataclass(frozen=True)
class _Cube:
    """A hypercube around a primary cell: its corners (cell, sign), the cells it would newly
    suppress, and how far t may move: table + t·sign on the corners keeps every margin equation
    and every value ≥ 0 for −down ≤ t ≤ up (up is inf with no − corner: the cell, its totals and
    the grand total all move together)."""

    corners: list[tuple[Cell, int]]
    new: list[Cell]
    down: float
    up: float


def _hypercube(table: IntArray, mask: BoolArray, primary: Cell, threshold: int) -> _Cube | None:
    """Cheapest hypercube protecting `primary` by at least `threshold`; None when none does.

    Every box is one choice of an alternative index per axis, in `itertools.product` order; the
    cheapest is the first with the least (new suppressions, new margins, suppressed total).
    Evaluated for all boxes at once (arrays over the choices).
    """
    shape = table.shape
    sigma = [-1 if margin else 1 for margin in _is_margin(primary, shape)]
    alternatives = [
        np.array([i for i in range(size) if i != primary[axis]], dtype=np.int64)
        for axis, size in enumerate(shape)
    ]
    grids = np.meshgrid(*alternatives, indexing="ij")
    choices = np.stack([grid.ravel() for grid in grids], axis=1)  # product order
    count = len(choices)
    down = np.full(count, math.inf)
    up = np.full(count, math.inf)
    new_cells = np.zeros(count, dtype=np.int64)
    new_margins = np.zeros(count, dtype=np.int64)
    new_total = np.zeros(count, dtype=np.int64)
    last = np.array(shape) - 1
    corners: list[tuple[IntArray, IntArray, BoolArray]] = []
    for moved in itertools.product((False, True), repeat=len(shape)):
        cells = np.where(np.array(moved), choices, np.array(primary))
        sign = np.ones(count, dtype=np.int64)
        for axis, move in enumerate(moved):
            if move:
                # Two cells of one line move oppositely if both are inner (or both totals),
                # together if one of them is the line's total.
                sign *= -sigma[axis] * np.where(choices[:, axis] == last[axis], -1, 1)
        index = tuple(cells.T)
        values = table[index]
        # t may go down by the smallest + corner and up by the smallest − corner.
        down = np.where(sign > 0, np.minimum(down, values), down)
        up = np.where(sign < 0, np.minimum(up, values), up)
        fresh = ~mask[index]
        new_cells += fresh
        new_margins += fresh & (cells == last).any(axis=1)
        new_total += np.where(fresh, values, 0)
        corners.append((cells, sign, fresh))
    candidates = np.flatnonzero(down + up >= threshold)
    if len(candidates) == 0:
        return None
    order = np.lexsort(
        (candidates, new_total[candidates], new_margins[candidates], new_cells[candidates])
    )
    best = int(candidates[order[0]])
    return _Cube(
        corners=[
            (tuple(int(i) for i in cells[best]), int(sign[best])) for cells, sign, _ in corners
        ],
        new=[tuple(int(i) for i in cells[best]) for cells, _, fresh in corners if fresh[best]],
        down=float(down[best]),
        up=float(up[best]),
    )


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
    table_with_margins: npt.ArrayLike,
    threshold: int = DEFAULT_THRESHOLD,
    *,
    check: Callable[[], None] | None = None,
) -> Suppression:
    """Primary and secondary suppression of a table with margins (see the module docstring).

    The returned mask always passes `audit_suppression(table, mask, threshold)`. `check` is called
    before every LP: it may raise (a deadline) to abandon the work.
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
    attacker = _Attacker(table, check)
    for cell in primaries:
        if attacker.at_least(mask, int(np.ravel_multi_index(cell, table.shape)), threshold) is None:
            continue
        cube = _hypercube(table, mask, cell, threshold)
        if cube is None:
            continue  # the audit below protects it
        for partner in cube.new:
            suppress(partner)
        # The cube's extreme tables are feasible now that its corners are hidden: they prove
        # `cell` (and more) safe without an LP (`_Attacker.add_table` checks them).
        for move in (-cube.down, min(cube.up, cube.down + threshold)):
            moved = table.copy()
            for corner, sign in cube.corners:
                moved[corner] += int(move) * sign
            attacker.add_table(moved, mask)

    while violations := attacker.violations(mask, threshold, first_only=True):
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
