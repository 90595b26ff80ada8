"""Wilson limits stay in [0, 1] and are exact at the edges.

The formula alone gave ci95_high = 1.0000000000000002 for x = n at about half of n (and
0.9999999999999999 at others), z·sqrt(z²) not being exactly z² in floating point.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from indicators.statistics import CONFIDENCE_95, CONFIDENCE_99_8, proportion, wilson_interval

LEVELS = (CONFIDENCE_95, CONFIDENCE_99_8)


def wilson_by_hand(x: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson (1927) as centre ± half-width, z from the standard library (not scipy)."""
    z = NormalDist().inv_cdf(confidence + (1 - confidence) / 2)
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("confidence", LEVELS)
def test_every_n_up_to_5000_has_exact_edges(confidence: float) -> None:
    n = np.arange(1, 5001, dtype=np.float64)
    _, upper_all = wilson_interval(n, n, confidence)
    lower_none, _ = wilson_interval(np.zeros_like(n), n, confidence)
    assert np.count_nonzero(upper_all != 1.0) == 0
    assert np.count_nonzero(lower_none != 0.0) == 0


@given(n=st.integers(1, 5000), data=st.data())
def test_limits_lie_in_zero_one_with_exact_edges(n: int, data: st.DataObject) -> None:
    x = data.draw(st.integers(0, n), label="x")
    result = proportion([0, x, n], [n, n, n])
    for lower, upper in (
        (result.lower_95, result.upper_95),
        (result.lower_99_8, result.upper_99_8),
    ):
        assert lower[0] == 0.0
        assert upper[2] == 1.0
        assert np.all((lower >= 0.0) & (lower <= 1.0))
        assert np.all((upper >= 0.0) & (upper <= 1.0))
        assert lower[1] <= x / n <= upper[1]
    for confidence, (lower, upper) in zip(
        LEVELS,
        ((result.lower_95, result.upper_95), (result.lower_99_8, result.upper_99_8)),
        strict=True,
    ):
        # Away from the edges the clip moves nothing beyond a rounding error.
        hand_lower, hand_upper = wilson_by_hand(x, n, confidence)
        assert float(lower[1]) == pytest.approx(hand_lower, abs=1e-12)
        assert float(upper[1]) == pytest.approx(hand_upper, abs=1e-12)


def test_published_reference_unchanged() -> None:
    # PHEindicatormethods phe_proportion(65, 100), method "wilson": 0.552544 – 0.736358.
    lower, upper = wilson_interval(65, 100, CONFIDENCE_95)
    assert float(lower) == pytest.approx(0.552544, abs=1e-6)
    assert float(upper) == pytest.approx(0.736358, abs=1e-6)


def test_empty_denominator_stays_nan() -> None:
    lower, upper = wilson_interval([0], [0])
    assert np.isnan(lower[0])
    assert np.isnan(upper[0])
