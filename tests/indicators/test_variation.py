"""Extremal quotients, coefficient of variation and McPherson's SCV against hand-worked numbers."""

from __future__ import annotations

import math

import pytest

from indicators.variation import (
    coefficient_of_variation,
    extremal_quotients,
    systematic_component_of_variation,
    variation,
)


def test_extremal_quotients_by_hand() -> None:
    # Sorted: 0.1 0.2 0.3 | 0.4 0.5 0.8 → EQ1 = 0.8/0.1, EQ2 = 0.5/0.2, EQ3 = 0.4/0.3.
    result = extremal_quotients([0.2, 0.5, 0.4, 0.1, 0.8, 0.3])
    assert result.eq1 == pytest.approx(8.0)
    assert result.eq2 == pytest.approx(2.5)
    assert result.eq3 == pytest.approx(4 / 3)


def test_extremal_quotients_too_few_providers_or_zero() -> None:
    result = extremal_quotients([0.1, 0.2, 0.4, 0.6, float("nan")])
    assert result.eq1 == pytest.approx(6.0)
    assert result.eq2 == pytest.approx(2.0)
    assert result.eq3 is None  # 4 providers: the 3rd highest would be the 2nd lowest
    zero = extremal_quotients([0.0, 0.2, 0.4, 0.6])
    assert zero.eq1 is None
    assert zero.eq2 == pytest.approx(0.4 / 0.2)
    assert extremal_quotients([0.5]).eq1 is None


def test_coefficient_of_variation_by_hand() -> None:
    # Mean 5, squared deviations 9+1+1+1+0+0+4+16 = 32, sample variance 32/7.
    assert coefficient_of_variation([2, 4, 4, 4, 5, 5, 7, 9]) == pytest.approx(
        math.sqrt(32 / 7) / 5
    )
    assert coefficient_of_variation([3]) is None
    assert coefficient_of_variation([0, 0]) is None


def test_scv_by_hand() -> None:
    # ((20−10)/10)² = 1, ((5−10)/10)² = 0.25, ((30−25)/25)² = 0.04 → mean 0.43;
    # 1/E: 0.1, 0.1, 0.04 → mean 0.08; SCV = 100 × (0.43 − 0.08) = 35.
    assert systematic_component_of_variation([20, 5, 30], [10, 10, 25]) == pytest.approx(35.0)
    # Less variation than chance: mean 0.04 − 0.08 → −4.
    assert systematic_component_of_variation([12, 8, 30], [10, 10, 25]) == pytest.approx(-4.0)


def test_scv_leaves_out_zero_expected() -> None:
    assert systematic_component_of_variation([20, 5, 30, 0], [10, 10, 25, 0]) == pytest.approx(35.0)
    assert systematic_component_of_variation([1], [0]) is None
    # One provider left is no variation between providers (it was 100 × (0.25 − 0.5) = −25).
    assert systematic_component_of_variation([15, 0], [10, 0]) is None
    with pytest.raises(ValueError, match="same length"):
        systematic_component_of_variation([1, 2], [1])


def test_variation_summary() -> None:
    result = variation([0.2, 0.5, 0.4, 0.1, 0.8, 0.3], [20, 5, 30], [10, 10, 25])
    assert result.providers == 6
    assert result.extremal_quotients.eq1 == pytest.approx(8.0)
    assert result.systematic_component == pytest.approx(35.0)
    assert result.coefficient_of_variation is not None
