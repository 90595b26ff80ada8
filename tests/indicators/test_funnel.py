"""Funnel limits, significance labels and Spiegelhalter's over-dispersion adjustment."""

from __future__ import annotations

import math

import numpy as np
import pytest

from indicators.funnel import (
    Z_95,
    Z_99_8,
    binomial_funnel_limits,
    funnel_significance,
    normal_funnel_limits,
    overdispersed_funnel,
    wilson_funnel_limits,
)
from indicators.statistics import wilson_interval


def test_z_constants() -> None:
    assert pytest.approx(1.959964, abs=1e-6) == Z_95
    assert pytest.approx(3.090232, abs=1e-6) == Z_99_8


def test_normal_limits_by_hand() -> None:
    # θ = 0.8, n = 100: se = √(0.8 · 0.2 / 100) = 0.04.
    limits = normal_funnel_limits(0.8, [100])
    assert limits.lower_0_001[0] == pytest.approx(0.8 - 3.090232 * 0.04, abs=1e-6)
    assert limits.lower_0_025[0] == pytest.approx(0.8 - 1.959964 * 0.04, abs=1e-6)
    assert limits.upper_0_025[0] == pytest.approx(0.8 + 1.959964 * 0.04, abs=1e-6)
    assert limits.upper_0_001[0] == pytest.approx(0.8 + 3.090232 * 0.04, abs=1e-6)


def test_normal_limits_are_clipped_to_proportions() -> None:
    limits = normal_funnel_limits(0.5, [1])
    assert limits.lower_0_001[0] == 0.0
    assert limits.upper_0_001[0] == 1.0


def test_significance_labels() -> None:
    # Limits at n = 100 (θ = 0.8): 0.676391 / 0.721601 / 0.878399 / 0.923609.
    n = np.full(6, 100.0)
    labels = funnel_significance([65, 70, 80, 89, 95, 73], normal_funnel_limits(0.8, n))
    assert labels == [
        "low_0.001",
        "low_0.025",
        "not_significant",
        "high_0.025",
        "high_0.001",
        "not_significant",
    ]


def test_significance_rejects_bad_numerators() -> None:
    with pytest.raises(ValueError, match="between 0 and the denominator"):
        funnel_significance([101], normal_funnel_limits(0.8, [100]))


def test_wilson_funnel_touches_theta() -> None:
    # PHE's limit is the proportion whose Wilson interval has θ at its far end; inverting the
    # Wilson (score) interval gives back θ ± z√(θ(1−θ)/n) exactly.
    n = np.array([20.0, 100.0, 1000.0])
    limits = wilson_funnel_limits(0.8, n)
    lower_of_upper, _ = wilson_interval(limits.upper_0_025 * n, n, 0.95)
    _, upper_of_lower = wilson_interval(limits.lower_0_001 * n, n, 0.998)
    assert lower_of_upper == pytest.approx([0.8, 0.8, 0.8], abs=1e-9)
    assert upper_of_lower == pytest.approx([0.8, 0.8, 0.8], abs=1e-9)
    normal = normal_funnel_limits(0.8, n)
    assert limits.lower_0_025 == pytest.approx(normal.lower_0_025, abs=1e-9)


def test_binomial_limits_by_hand() -> None:
    # θ = 0.5, n = 10: F(7) = 968/1024, F(8) = 1013/1024, so r_0.975 = 8 and
    # α = (1013/1024 − 0.975) / (45/1024); limit = (8 − α) / 10 (Spiegelhalter 2005, A.1.1).
    def cdf(r: int) -> float:
        return sum(math.comb(10, k) for k in range(r + 1)) / 1024

    alpha = (cdf(8) - 0.975) / (cdf(8) - cdf(7))
    limits = binomial_funnel_limits(0.5, [10])
    assert limits.upper_0_025[0] == pytest.approx((8 - alpha) / 10, abs=1e-12)
    assert limits.upper_0_025[0] == pytest.approx(0.767556, abs=1e-6)
    # Symmetric for θ = 0.5: the lower 0.025 limit mirrors the upper one.
    assert limits.lower_0_025[0] == pytest.approx(1 - 0.767556 - 0.1, abs=1e-6)


# Ten hand-made providers around θ = 0.7.
NUMERATORS = [25, 60, 65, 90, 100, 150, 160, 225, 300, 320]
DENOMINATORS = [50, 80, 100, 120, 150, 200, 250, 300, 400, 500]


def quantile_type7(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    return ordered[below] + (position - below) * (ordered[below + 1] - ordered[below])


def spiegelhalter_by_hand(theta: float) -> tuple[list[float], float, float]:
    target = math.asin(math.sqrt(theta))
    s = [1 / (2 * math.sqrt(n)) for n in DENOMINATORS]
    z = [
        (math.asin(math.sqrt(x / n)) - target) / si
        for x, n, si in zip(NUMERATORS, DENOMINATORS, s, strict=True)
    ]
    low, high = quantile_type7(z, 0.1), quantile_type7(z, 0.9)
    z_w = [min(max(v, low), high) for v in z]
    count = len(z)
    phi = sum(v * v for v in z_w) / count
    w = [1 / si**2 for si in s]
    tau2 = 0.0
    if count * phi > count - 1:
        tau2 = (count * phi - (count - 1)) / (sum(w) - sum(wi * wi for wi in w) / sum(w))
    return z, phi, tau2


def test_overdispersion_matches_hand_computation() -> None:
    z, phi, tau2 = spiegelhalter_by_hand(0.7)
    result = overdispersed_funnel(NUMERATORS, DENOMINATORS, 0.7)
    assert list(result.z_scores) == pytest.approx(z, abs=1e-12)
    assert result.phi == pytest.approx(phi, rel=1e-12)
    assert result.tau2 == pytest.approx(tau2, rel=1e-12)
    assert tau2 > 0  # these providers are over-dispersed (φ ≈ 3.5)
    # Winsorising at 10 % moves exactly the lowest and highest z-score of ten.
    moved = np.flatnonzero(result.winsorised_z != result.z_scores)
    assert sorted(moved) == sorted([int(np.argmin(z)), int(np.argmax(z))])
    # Limits at n = 100: asin(√θ) ± z·√(1/400 + τ²), back through sin².
    target = math.asin(math.sqrt(0.7))
    spread = math.sqrt(1 / 400 + tau2)
    limits = result.limits_for([100])
    assert limits.upper_0_025[0] == pytest.approx(math.sin(target + Z_95 * spread) ** 2)
    assert limits.lower_0_001[0] == pytest.approx(math.sin(target - Z_99_8 * spread) ** 2)
    # Wider than the unadjusted funnel.
    plain = normal_funnel_limits(0.7, [100])
    assert limits.upper_0_025[0] > plain.upper_0_025[0]
    assert limits.lower_0_025[0] < plain.lower_0_025[0]


def test_no_overdispersion_gives_tau2_zero() -> None:
    # Every provider exactly at θ: φ = 0, so I·φ <= I − 1 and τ² = 0.
    n = [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    result = overdispersed_funnel([int(0.6 * v) for v in n], n, 0.6)
    assert result.phi == pytest.approx(0.0, abs=1e-20)
    assert result.tau2 == 0.0
    assert result.limits.upper_0_025[2] == pytest.approx(
        math.sin(math.asin(math.sqrt(0.6)) + Z_95 / (2 * math.sqrt(300))) ** 2
    )


def test_overdispersed_lower_limit_does_not_fold_back() -> None:
    # With θ small and n tiny the transformed lower limit is below 0: it must stay at 0.
    result = overdispersed_funnel([0, 1, 2], [5, 5, 5], 0.05)
    assert result.limits.lower_0_001 == pytest.approx([0.0, 0.0, 0.0])


def test_invalid_theta_and_denominators() -> None:
    with pytest.raises(ValueError, match="theta"):
        normal_funnel_limits(1.5, [10])
    with pytest.raises(ValueError, match="greater than zero"):
        normal_funnel_limits(0.5, [0])
