"""Wilson intervals, Poisson intervals, age bands and indirect standardisation."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from indicators.statistics import (
    AGE_GROUP_LABELS,
    age_group,
    age_groups,
    byars_interval,
    exact_poisson_interval,
    indirect_standardisation,
    observed_count_interval,
    proportion,
    wilson_interval,
    z_for_confidence,
)

# z from the standard library, independent of scipy.
Z_95 = NormalDist().inv_cdf(0.975)
Z_99_8 = NormalDist().inv_cdf(0.999)


def wilson_by_hand(x: float, n: float, z: float) -> tuple[float, float]:
    """Wilson (1927) in its centre ± half-width form, a different algebraic route."""
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_z_for_confidence() -> None:
    assert z_for_confidence(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert z_for_confidence(0.998) == pytest.approx(3.090232, abs=1e-6)
    with pytest.raises(ValueError, match="confidence"):
        z_for_confidence(95)


def test_wilson_95_matches_phe_reference() -> None:
    # PHEindicatormethods phe_proportion(65, 100), method "wilson": 0.552544 – 0.736358.
    lower, upper = wilson_interval(65, 100, 0.95)
    assert float(lower) == pytest.approx(0.552544, abs=1e-6)
    assert float(upper) == pytest.approx(0.736358, abs=1e-6)


def test_wilson_99_8_matches_closed_form() -> None:
    lower, upper = wilson_interval(65, 100, 0.998)
    hand_lower, hand_upper = wilson_by_hand(65, 100, Z_99_8)
    assert float(lower) == pytest.approx(hand_lower, abs=1e-9)
    assert float(upper) == pytest.approx(hand_upper, abs=1e-9)
    assert float(lower) == pytest.approx(0.495495, abs=1e-6)
    assert float(upper) == pytest.approx(0.778354, abs=1e-6)


def test_wilson_vectorised_with_edges() -> None:
    x = np.array([0, 10, 3, 0])
    n = np.array([10, 10, 7, 0])
    lower, upper = wilson_interval(x, n)
    assert lower.shape == upper.shape == (4,)
    # x = 0: lower 0, upper z²/(n + z²); x = n: upper 1, lower n/(n + z²).
    assert lower[0] == 0.0
    assert upper[0] == pytest.approx(Z_95**2 / (10 + Z_95**2), abs=1e-12)
    assert upper[1] == 1.0
    assert lower[1] == pytest.approx(10 / (10 + Z_95**2), abs=1e-12)
    assert (lower[2], upper[2]) == pytest.approx(wilson_by_hand(3, 7, Z_95), abs=1e-12)
    assert np.isnan(lower[3])
    assert np.isnan(upper[3])


@pytest.mark.parametrize(("x", "n"), [(11, 10), (-1, 10), (1, -2)])
def test_wilson_rejects_impossible_counts(x: int, n: int) -> None:
    with pytest.raises(ValueError, match=r"numerator|denominator"):
        wilson_interval(x, n)


def test_proportion_gives_both_levels() -> None:
    result = proportion([65, 0], [100, 0])
    assert result.value[0] == pytest.approx(0.65)
    assert np.isnan(result.value[1])
    assert result.lower_95[0] == pytest.approx(0.552544, abs=1e-6)
    assert result.upper_99_8[0] == pytest.approx(wilson_by_hand(65, 100, Z_99_8)[1], abs=1e-9)


def poisson_cdf(k: int, mu: float) -> float:
    return sum(math.exp(-mu) * mu**i / math.factorial(i) for i in range(k + 1))


def bisect(function: object, low: float, high: float) -> float:
    assert callable(function)
    for _ in range(200):
        middle = (low + high) / 2
        if function(middle) > 0:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def test_exact_poisson_interval_by_definition() -> None:
    # Exact limits for O: P(X >= O | μ_L) = 0.025 and P(X <= O | μ_U) = 0.025.
    lower, upper = exact_poisson_interval([0, 1, 5])
    assert lower[0] == 0.0
    assert upper[0] == pytest.approx(-math.log(0.025), abs=1e-9)
    assert lower[1] == pytest.approx(-math.log(0.975), abs=1e-9)
    mu_lower = bisect(lambda mu: 0.025 - (1 - poisson_cdf(4, mu)), 0.0, 5.0)
    mu_upper = bisect(lambda mu: poisson_cdf(5, mu) - 0.025, 5.0, 30.0)
    assert lower[2] == pytest.approx(mu_lower, abs=1e-6)
    assert upper[2] == pytest.approx(mu_upper, abs=1e-6)
    assert (lower[2], upper[2]) == pytest.approx((1.623486, 11.668332), abs=1e-6)


def test_byars_interval_by_hand() -> None:
    lower, upper = byars_interval([65])
    assert lower[0] == pytest.approx(65 * (1 - 1 / (9 * 65) - Z_95 / (3 * math.sqrt(65))) ** 3)
    assert upper[0] == pytest.approx(66 * (1 - 1 / (9 * 66) + Z_95 / (3 * math.sqrt(66))) ** 3)


def test_observed_count_interval_switches_at_ten() -> None:
    lower, _ = observed_count_interval([9, 10])
    assert lower[0] == pytest.approx(exact_poisson_interval([9])[0][0])
    assert lower[1] == pytest.approx(byars_interval([10])[0][0])


@pytest.mark.parametrize(
    ("age", "label"),
    [
        (12, None),
        (13, "13-17"),
        (17, "13-17"),
        (18, "18-24"),
        (24, "18-24"),
        (25, "25-34"),
        (44, "35-44"),
        (45, "45-54"),
        (55, "55-64"),
        (64, "55-64"),
        (65, "65+"),
        (101, "65+"),
        (None, None),
    ],
)
def test_age_group_bands(age: int | None, label: str | None) -> None:
    assert age_group(age) == label


def test_age_groups_vectorised() -> None:
    ages = [12, 13, 17.5, 34, 35, 70, float("nan")]
    assert list(age_groups(ages)) == [None, "13-17", "13-17", "25-34", "35-44", "65+", None]
    assert AGE_GROUP_LABELS == ("13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")


def episodes(
    provider: str, counts: dict[tuple[str, str], tuple[int, int]]
) -> list[dict[str, object]]:
    """One row per episode: counts maps (age_group, sex) to (episodes, with outcome 1)."""
    rows: list[dict[str, object]] = []
    for (band, sex), (n, events) in counts.items():
        rows += [
            {"provider": provider, "age_group": band, "sex": sex, "reduced_use": int(i < events)}
            for i in range(n)
        ]
    return rows


def test_indirect_standardisation_two_providers_four_strata() -> None:
    # Strata S1 (18-24, M), S2 (18-24, F), S3 (25-34, M), S4 (25-34, F).
    # A: n = 4, 2, 2, 2 with 2, 1, 0, 2 events (O = 5); B: n = 2, 2, 4, 2 with 1, 1, 2, 0 (O = 4).
    # National stratum rates: S1 3/6 = 0.5, S2 2/4 = 0.5, S3 2/6 = 1/3, S4 2/4 = 0.5; crude 9/20.
    # E_A = 4(.5) + 2(.5) + 2(1/3) + 2(.5) = 14/3;  E_B = 2(.5) + 2(.5) + 4(1/3) + 2(.5) = 13/3.
    rows = pd.DataFrame(
        episodes("A", {("18-24", "M"): (4, 2), ("18-24", "F"): (2, 1), ("25-34", "M"): (2, 0)})
        + episodes("A", {("25-34", "F"): (2, 2)})
        + episodes("B", {("18-24", "M"): (2, 1), ("18-24", "F"): (2, 1), ("25-34", "M"): (4, 2)})
        + episodes("B", {("25-34", "F"): (2, 0)})
    )
    result = indirect_standardisation(
        rows, provider="provider", strata=["age_group", "sex"], outcome="reduced_use"
    ).set_index("provider")
    a, b = result.loc["A"], result.loc["B"]
    assert (a["n"], a["observed"], b["n"], b["observed"]) == (10, 5, 10, 4)
    assert a["expected"] == pytest.approx(14 / 3)
    assert b["expected"] == pytest.approx(13 / 3)
    assert a["ratio"] == pytest.approx(15 / 14)
    assert b["ratio"] == pytest.approx(12 / 13)
    assert a["standardised_rate"] == pytest.approx(15 / 14 * 0.45)
    assert b["standardised_rate"] == pytest.approx(12 / 13 * 0.45)
    assert a["crude_rate"] == pytest.approx(0.5)
    # O = 5 < 10: exact Poisson limits (1.623486, 11.668332) divided by E, as PHE calculate_ISRatio.
    assert a["method"] == "exact"
    assert a["ratio_lower"] == pytest.approx(1.623486 / (14 / 3), abs=1e-6)
    assert a["ratio_upper"] == pytest.approx(11.668332 / (14 / 3), abs=1e-6)
    assert a["standardised_upper"] == pytest.approx(11.668332 / (14 / 3) * 0.45, abs=1e-6)


def test_indirect_standardisation_rejects_missing_and_non_binary() -> None:
    rows = pd.DataFrame({"provider": ["A", "B"], "sex": ["M", None], "y": [0, 1]})
    with pytest.raises(ValueError, match="sex has 1 missing"):
        indirect_standardisation(rows, provider="provider", strata=["sex"], outcome="y")
    rows = pd.DataFrame({"provider": ["A", "B"], "sex": ["M", "F"], "y": [0, 2]})
    with pytest.raises(ValueError, match="0/1"):
        indirect_standardisation(rows, provider="provider", strata=["sex"], outcome="y")
