"""Cell suppression (checked by an independently written LP attack) and the cell-key method."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from indicators.disclosure import (
    CELL_KEY_MODULUS,
    DEFAULT_PTABLE,
    PerturbationTable,
    audit_suppression,
    cell_key,
    perturb,
    suppress_cells,
    suppress_table,
    with_margins,
)

THRESHOLD = 5


def attack(
    table: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_]
) -> dict[tuple[int, ...], tuple[float, float]]:
    """The attacker's range for every suppressed cell, formulated separately from the module.

    One LP variable per cell of the whole table with margins; published cells are pinned by their
    bounds; for every total cell and every axis on which it is a total, the total equals the sum
    of the cells it covers along that axis. No rounding: 2-D tables give integral vertices.
    """
    shape = table.shape
    cells = list(itertools.product(*(range(size) for size in shape)))
    column = {cell: i for i, cell in enumerate(cells)}
    rows: list[list[float]] = []
    for cell in cells:
        for axis, size in enumerate(shape):
            if cell[axis] != size - 1:
                continue
            row = [0.0] * len(cells)
            row[column[cell]] = -1.0
            for i in range(size - 1):
                row[column[(*cell[:axis], i, *cell[axis + 1 :])]] = 1.0
            rows.append(row)
    bounds = [
        (0.0, None) if mask[cell] else (float(table[cell]), float(table[cell])) for cell in cells
    ]
    ranges = {}
    for cell in cells:
        if not mask[cell]:
            continue
        objective = [0.0] * len(cells)
        objective[column[cell]] = 1.0
        low = linprog(objective, A_eq=rows, b_eq=[0.0] * len(rows), bounds=bounds)
        high = linprog([-c for c in objective], A_eq=rows, b_eq=[0.0] * len(rows), bounds=bounds)
        assert low.status == 0
        assert low.fun is not None
        upper = float("inf")
        if high.status != 3:  # 3 = unbounded
            assert high.fun is not None
            upper = -float(high.fun)
        ranges[cell] = (float(low.fun), upper)
    return ranges


def assert_protected(table: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_]) -> None:
    small = (table >= 1) & (table < THRESHOLD)
    assert not np.any(small & ~mask), "a small count is published"
    for cell, (lower, upper) in attack(table, mask).items():
        if small[cell]:
            assert upper - lower >= THRESHOLD - 1e-6, (cell, lower, upper)
        else:
            assert upper - lower > 1e-6, (cell, lower, upper)


def test_with_margins() -> None:
    table = with_margins([[1, 2], [3, 4]])
    assert table.tolist() == [[1, 2, 3], [3, 4, 7], [4, 6, 10]]
    with pytest.raises(ValueError, match="non-negative"):
        with_margins([[1, -1]])


def test_margins_that_do_not_add_up_are_rejected() -> None:
    table = with_margins([[1, 2], [3, 4]])
    table[2, 2] = 11
    with pytest.raises(ValueError, match="do not add up"):
        suppress_table(table)


# 2 is small; its row and column totals would give it away if only it were hidden.
SMALL_IN_3X3 = [[2, 8, 10], [7, 9, 12], [6, 11, 15]]


def test_3x3_primary_alone_is_exposed() -> None:
    table = with_margins(SMALL_IN_3X3)
    mask = np.zeros(table.shape, dtype=bool)
    mask[0, 0] = True
    violations = audit_suppression(table, mask)
    assert [(v.cell, v.rule, v.lower, v.upper) for v in violations] == [((0, 0), "exact", 2, 2)]


def test_3x3_gets_cheapest_rectangle() -> None:
    # Candidate rectangles through (0,0) (each adds 3 cells): with (1,1) they hide 8+7+9 = 24,
    # the least; (2,1): 25, (1,2): 29, (2,2): 31; margins cost more. The range of (0,0) is then
    # x00 = a, x01 = 10 − a, x10 = 9 − a, x11 = 7 + a, 0 <= a <= 9: width 9 >= 5.
    table = with_margins(SMALL_IN_3X3)
    result = suppress_table(table)
    assert {tuple(int(i) for i in c) for c in np.argwhere(result.mask)} == {
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    }
    assert result.reasons[0, 0] == "primary"
    assert result.reasons[1, 1] == "secondary"
    assert result.secondary_count == 3
    assert attack(table, result.mask)[(0, 0)] == pytest.approx((0.0, 9.0))
    assert audit_suppression(table, result.mask) == []
    assert_protected(table, result.mask)


def test_audit_flags_a_narrow_interval() -> None:
    # Hiding the rectangle with a published 0 at (0,1): x00 + x01 = 2, so x00 ∈ [0, 2].
    table = with_margins([[2, 0, 10], [7, 9, 12], [6, 11, 15]])
    mask = np.zeros(table.shape, dtype=bool)
    mask[0:2, 0:2] = True
    violations = audit_suppression(table, mask)
    assert [(v.cell, v.rule, v.lower, v.upper) for v in violations] == [((0, 0), "narrow", 0, 2)]
    assert_protected(table, suppress_table(table).mask)


def test_audit_flags_published_small_cells() -> None:
    table = with_margins(SMALL_IN_3X3)
    violations = audit_suppression(table, np.zeros(table.shape, dtype=bool))
    assert [(v.cell, v.rule) for v in violations] == [((0, 0), "published_small")]


def test_small_margin_is_primary_too() -> None:
    # Row 0 adds up to 3: the total itself is a small count.
    table = with_margins([[1, 2, 0], [5, 9, 7], [8, 6, 10]])
    result = suppress_table(table)
    assert result.reasons[0, 3] == "primary"
    assert result.reasons[0, 2] == ""  # zero may be shown
    assert audit_suppression(table, result.mask) == []
    assert_protected(table, result.mask)


def test_everything_small_suppresses_everything() -> None:
    table = with_margins([[1, 1], [1, 1]])
    result = suppress_table(table)
    assert result.mask.all()
    assert np.isnan(result.published()).all()


def test_three_dimensional_table() -> None:
    inner = np.array([[[3, 12, 9], [8, 7, 10]], [[11, 6, 14], [9, 2, 13]]])
    table = with_margins(inner)
    result = suppress_table(table)
    assert result.mask[0, 0, 0]
    assert result.mask[1, 1, 1]
    assert audit_suppression(table, result.mask) == []
    # The LP relaxation is what the independent attack checks in 3-D as well.
    assert_protected(table, result.mask)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(2, 5).flatmap(
        lambda rows: st.integers(2, 5).flatmap(
            lambda cols: st.lists(
                st.lists(st.integers(0, 30), min_size=cols, max_size=cols),
                min_size=rows,
                max_size=rows,
            )
        )
    )
)
def test_random_tables_are_protected(inner: list[list[int]]) -> None:
    table = with_margins(inner)
    result = suppress_table(table, THRESHOLD)
    assert_protected(table, result.mask)
    assert np.array_equal(result.reasons == "primary", (table >= 1) & (table < THRESHOLD))
    assert audit_suppression(table, result.mask, THRESHOLD) == []


def test_suppress_cells_from_rows() -> None:
    rows = [
        {"hf": "Bergen", "sex": "F", "count": 2},
        {"hf": "Bergen", "sex": "M", "count": 8},
        {"hf": "Oslo", "sex": "F", "count": 7},
        {"hf": "Oslo", "sex": "M", "count": 9},
        {"hf": "Oslo", "sex": "M", "count": 1},  # repeated combination: added up
    ]
    out = suppress_cells(rows, ["hf", "sex"])
    by_key = {(r["hf"], r["sex"]): r for r in out}
    assert len(out) == 9  # 2 × 2 cells, 2 + 2 sub-totals, 1 grand total
    assert by_key[("Bergen", "F")] == {
        "hf": "Bergen",
        "sex": "F",
        "count": None,
        "suppression": "primary",
    }
    assert by_key[(None, None)] == {"hf": None, "sex": None, "count": 27, "suppression": None}
    assert by_key[("Oslo", "M")]["count"] in (None, 10)
    # Whatever is hidden, the published part passes the audit of the same table.
    table = with_margins([[2, 8], [7, 10]])
    mask = np.array(
        [
            [by_key[(h, s)]["count"] is None for s in ("F", "M", None)]
            for h in ("Bergen", "Oslo", None)
        ]
    )
    assert audit_suppression(table, mask) == []
    assert suppress_cells(pa.Table.from_pylist(rows), ["hf", "sex"]) == out


def test_suppress_cells_rejects_missing_dimension_values() -> None:
    with pytest.raises(ValueError, match="dimension sex"):
        suppress_cells([{"sex": None, "count": 3}], ["sex"])


def test_cell_key_is_an_order_free_sum_modulo() -> None:
    keys = [5, CELL_KEY_MODULUS - 1, 7]
    assert cell_key(keys) == (5 + 7 - 1) % CELL_KEY_MODULUS == 11
    assert cell_key(reversed(keys)) == 11
    assert cell_key(np.array(keys, dtype=np.int64)) == 11
    assert cell_key([]) == 0


def test_perturbation_is_deterministic_and_follows_the_table() -> None:
    quarter = CELL_KEY_MODULUS // 4
    # Count 1 row: −1 for u < 0.25, 0 for u < 0.75, +1 above.
    assert [perturb(1, k) for k in (0, quarter - 1, quarter, 3 * quarter - 1, 3 * quarter)] == [
        0,
        0,
        1,
        1,
        2,
    ]
    assert perturb(10, 123_456) == perturb(10, 123_456)
    assert perturb(0, 999) == 0
    # Evenly spread keys reproduce the default row's probabilities.
    keys = (np.arange(2000) * (CELL_KEY_MODULUS // 2000)).tolist()
    noise = [perturb(10, k) - 10 for k in keys]
    for value, probability in DEFAULT_PTABLE.default:
        assert noise.count(value) / len(noise) == pytest.approx(probability, abs=1e-3)
    assert min(perturb(c, k) for c in range(0, 8) for k in keys) >= 0


def test_perturbation_table_is_validated() -> None:
    with pytest.raises(ValueError, match="mean 0"):
        PerturbationTable(rows={}, default=((0, 0.5), (1, 0.5)))
    with pytest.raises(ValueError, match="negative"):
        PerturbationTable(rows={}, default=((-2, 0.5), (2, 0.5)))
    with pytest.raises(ValueError, match="add up"):
        PerturbationTable(rows={}, default=((0, 0.9),))


class Abandoned(Exception):
    pass


def test_check_runs_before_every_lp_and_can_abandon_the_work() -> None:
    table = with_margins(SMALL_IN_3X3)
    calls: list[int] = []

    def give_up() -> None:
        calls.append(1)
        raise Abandoned

    with pytest.raises(Abandoned):
        suppress_table(table, check=give_up)
    with pytest.raises(Abandoned):
        audit_suppression(table, np.ones(table.shape, dtype=bool), check=give_up)
    assert calls == [1, 1]


def test_feasible_tables_already_seen_spare_lps() -> None:
    # Every LP solution (and the true table) is a table the attacker cannot rule out: a cell
    # seen at values 5 apart needs no LP of its own. Before, every primary cell took 2 LPs and
    # every suppressed cell 2 more in the audit.
    inner = np.random.default_rng(7).integers(0, 12, size=(8, 9))
    table = with_margins(inner)
    lps: list[int] = []
    result = suppress_table(table, check=lambda: lps.append(1))
    primaries = int(np.sum((table >= 1) & (table < THRESHOLD)))
    assert primaries >= 15
    assert len(lps) < primaries
    assert_protected(table, result.mask)
    assert audit_suppression(table, result.mask) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(2, 4), min_size=2, max_size=3).flatmap(
        lambda shape: st.tuples(
            st.lists(
                st.integers(0, 12), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))
            ),
            st.lists(
                st.booleans(),
                min_size=int(np.prod([n + 1 for n in shape])),
                max_size=int(np.prod([n + 1 for n in shape])),
            ),
            st.just(shape),
        )
    )
)
def test_audit_finds_every_exposed_cell_the_independent_attack_finds(
    drawn: tuple[list[int], list[bool], list[int]],
) -> None:
    # Skipping LPs must never skip a violation: on any mask, the cells the audit flags are
    # exactly those the attack's bounds (rounded inwards) show too narrow.
    values, flags, shape = drawn
    table = with_margins(np.array(values).reshape(shape))
    mask = np.array(flags).reshape(table.shape) | ((table >= 1) & (table < THRESHOLD))
    expected = set()
    for cell, (lower, upper) in attack(table, mask).items():
        width = np.floor(upper + 1e-6) - np.ceil(lower - 1e-6)
        needed = THRESHOLD if 1 <= table[cell] < THRESHOLD else 1
        if width < needed:
            expected.add(cell)
    assert {v.cell for v in audit_suppression(table, mask)} == expected
