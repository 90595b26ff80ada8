"""Confidence intervals, age bands and case-mix adjustment for the indicator engine.

Pure functions over numpy arrays and pandas frames; no I/O. Funnel limits live in
`indicators.funnel`, between-provider variation in `indicators.variation`.

The formulas follow UKHSA's PHEindicatormethods (R package; functions `wilson_lower`,
`wilson_upper`, `byars_lower`, `byars_upper`, `calculate_ISRatio`), because users compare our
numbers with the Fingertips/portal numbers produced by that package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import chi2, norm

FloatArray = npt.NDArray[np.float64]

# The two confidence levels the national portal shows (PHE Fingertips convention: 95 % and 99.8 %).
CONFIDENCE_95 = 0.95
CONFIDENCE_99_8 = 0.998

# PHEindicatormethods `calculate_ISRatio`: exact Poisson limits below 10 observed events, Byar's
# approximation from 10 upwards (Byar's is inaccurate for small counts).
EXACT_POISSON_BELOW = 10


def z_for_confidence(confidence: float) -> float:
    """Two-sided normal quantile for a confidence level, e.g. 0.95 -> 1.959964.

    Same as PHEindicatormethods `zscore()`: qnorm(confidence + (1 - confidence) / 2).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    return float(norm.ppf(confidence + (1.0 - confidence) / 2.0))


def _as_float_array(values: npt.ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if np.any(array < 0):
        raise ValueError(f"{name} must be greater than or equal to zero")
    return array


def wilson_interval(
    numerator: npt.ArrayLike, denominator: npt.ArrayLike, confidence: float = CONFIDENCE_95
) -> tuple[FloatArray, FloatArray]:
    """Wilson score interval for a proportion x/n, vectorised: returns (lower, upper).

    Formula exactly as PHEindicatormethods `wilson_lower`/`wilson_upper` (Wilson 1927; Newcombe &
    Altman, Statistics with confidence, 2nd edn, 2000):
        (2x + z² ∓ z·sqrt(z² + 4x(1 - x/n))) / 2 / (n + z²)
    x = 0 gives lower = 0 and x = n gives upper = 1, exactly; n = 0 gives NaN (PHE stops instead;
    the engine shows "fewer than 5 observations" for such cells anyway).

    In floating point z·sqrt(z²) is not always z², so the formula alone puts the upper limit at
    x = n a rounding error either side of 1 (1.0000000000000002 for about half of n): the limits
    are set exactly at the edges and clipped to [0, 1], which moves no other limit by more than
    that rounding error.
    """
    x = _as_float_array(numerator, "numerator")
    n = _as_float_array(denominator, "denominator")
    if np.any(x > n):
        raise ValueError("numerator must be less than or equal to denominator")
    z = z_for_confidence(confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = z * np.sqrt(z**2 + 4.0 * x * (1.0 - x / n))
        lower = (2.0 * x + z**2 - spread) / 2.0 / (n + z**2)
        upper = (2.0 * x + z**2 + spread) / 2.0 / (n + z**2)
    lower = np.where(x == 0, 0.0, np.clip(lower, 0.0, 1.0))
    upper = np.where(x == n, 1.0, np.clip(upper, 0.0, 1.0))
    empty = n == 0
    lower = np.where(empty, np.nan, lower)
    upper = np.where(empty, np.nan, upper)
    return lower.astype(np.float64), upper.astype(np.float64)


@dataclass(frozen=True)
class Proportion:
    """A proportion with its Wilson intervals at the portal's two levels (arrays, one per row)."""

    numerator: FloatArray
    denominator: FloatArray
    value: FloatArray
    lower_95: FloatArray
    upper_95: FloatArray
    lower_99_8: FloatArray
    upper_99_8: FloatArray


def proportion(numerator: npt.ArrayLike, denominator: npt.ArrayLike) -> Proportion:
    """x/n with Wilson 95 % and 99.8 % intervals (PHEindicatormethods `phe_proportion`, wilson)."""
    x = _as_float_array(numerator, "numerator")
    n = _as_float_array(denominator, "denominator")
    lower_95, upper_95 = wilson_interval(x, n, CONFIDENCE_95)
    lower_99_8, upper_99_8 = wilson_interval(x, n, CONFIDENCE_99_8)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(n == 0, np.nan, x / n).astype(np.float64)
    return Proportion(x, n, value, lower_95, upper_95, lower_99_8, upper_99_8)


def byars_interval(
    observed: npt.ArrayLike, confidence: float = CONFIDENCE_95
) -> tuple[FloatArray, FloatArray]:
    """Byar's approximation to the Poisson interval for an observed count (Breslow & Day 1987).

    As PHEindicatormethods `byars_lower`/`byars_upper`:
        lower = O(1 - 1/(9O) - z/(3√O))³, upper = (O+1)(1 - 1/(9(O+1)) + z/(3√(O+1)))³.
    """
    o = _as_float_array(observed, "observed")
    z = z_for_confidence(confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        lower = o * (1.0 - 1.0 / (9.0 * o) - z / (3.0 * np.sqrt(o))) ** 3
    upper = (o + 1.0) * (1.0 - 1.0 / (9.0 * (o + 1.0)) + z / (3.0 * np.sqrt(o + 1.0))) ** 3
    lower = np.where(o == 0, 0.0, lower)
    return lower.astype(np.float64), upper.astype(np.float64)


def exact_poisson_interval(
    observed: npt.ArrayLike, confidence: float = CONFIDENCE_95
) -> tuple[FloatArray, FloatArray]:
    """Exact Poisson interval via the chi-square relation (Armitage & Berry 2002).

    lower = χ²((1-c)/2; 2O)/2, upper = χ²(c + (1-c)/2; 2O+2)/2, with lower = 0 for O = 0 (R's
    qchisq(p, 0) is 0; scipy returns NaN for df = 0).
    """
    o = _as_float_array(observed, "observed")
    alpha = 1.0 - confidence
    safe_df = np.where(o == 0, 1.0, 2.0 * o)
    lower = np.where(o == 0, 0.0, chi2.ppf(alpha / 2.0, safe_df) / 2.0)
    upper = chi2.ppf(confidence + alpha / 2.0, 2.0 * o + 2.0) / 2.0
    return np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)


def observed_count_interval(
    observed: npt.ArrayLike, confidence: float = CONFIDENCE_95
) -> tuple[FloatArray, FloatArray]:
    """Interval for an observed count as PHEindicatormethods `calculate_ISRatio` chooses it.

    Exact Poisson for O < 10, Byar's approximation for O >= 10.
    """
    o = _as_float_array(observed, "observed")
    exact_lower, exact_upper = exact_poisson_interval(o, confidence)
    byars_lower, byars_upper = byars_interval(o, confidence)
    small = o < EXACT_POISSON_BELOW
    return (
        np.where(small, exact_lower, byars_lower).astype(np.float64),
        np.where(small, exact_upper, byars_upper).astype(np.float64),
    )


# Age bands used for case-mix adjustment and researcher aggregates. The register's population
# starts at 13 (patients 13-15 opt out through their guardians, DOMAIN.md); the bands above 18
# follow the ten-year bands of the national results portal.
AGE_BANDS: tuple[tuple[str, int, int | None], ...] = (
    ("13-17", 13, 17),
    ("18-24", 18, 24),
    ("25-34", 25, 34),
    ("35-44", 35, 44),
    ("45-54", 45, 54),
    ("55-64", 55, 64),
    ("65+", 65, None),
)
AGE_GROUP_LABELS: tuple[str, ...] = tuple(label for label, _, _ in AGE_BANDS)
_AGE_BAND_STARTS = np.array([start for _, start, _ in AGE_BANDS], dtype=np.float64)


def age_group(age: float | None) -> str | None:
    """Age band label for an age in completed years; None for missing or under 13."""
    if age is None or np.isnan(age) or age < AGE_BANDS[0][1]:
        return None
    position = int(np.searchsorted(_AGE_BAND_STARTS, age, side="right")) - 1
    return AGE_BANDS[position][0]


def age_groups(ages: npt.ArrayLike) -> npt.NDArray[np.object_]:
    """Vectorised `age_group`: an object array of labels (None for missing or under 13)."""
    values = np.asarray(ages, dtype=np.float64)
    positions = np.searchsorted(_AGE_BAND_STARTS, values, side="right") - 1
    labels = np.array([*AGE_GROUP_LABELS, None], dtype=object)
    outside = np.isnan(values) | (values < AGE_BANDS[0][1])
    result: npt.NDArray[np.object_] = labels[np.where(outside, len(AGE_BANDS), positions)]
    return result


def indirect_standardisation(
    rows: pd.DataFrame,
    *,
    provider: str,
    strata: Sequence[str],
    outcome: str,
    confidence: float = CONFIDENCE_95,
) -> pd.DataFrame:
    """Case-mix adjustment of a 0/1 outcome by indirect standardisation, one row per provider.

    `rows` holds one unit (episode or patient) per row: the provider column, the stratum columns
    (e.g. age_group, sex, treatment_type) and the outcome (0/1). The reference population is all
    rows (the nation):
        national stratum rate r_s = Σ outcome / n in stratum s,
        expected E_p = Σ_s n_ps · r_s, observed O_p = Σ outcome in provider p,
        ratio O/E, standardised rate = O/E × national crude rate.
    The interval for O/E treats O as Poisson with E fixed, as PHEindicatormethods
    `calculate_ISRatio`: exact Poisson limits for O < 10, Byar's approximation for O >= 10
    (column `method`). The standardised-rate limits are the ratio limits × national crude rate.

    Returns columns: provider, n, observed, expected, crude_rate, ratio, ratio_lower, ratio_upper,
    standardised_rate, standardised_lower, standardised_upper, method. E = 0 gives NaN ratios.
    """
    columns = [provider, *strata, outcome]
    missing_columns = [name for name in columns if name not in rows.columns]
    if missing_columns:
        raise ValueError(f"columns missing from rows: {missing_columns}")
    for name in columns:
        missing = int(rows[name].isna().sum())
        if missing:
            raise ValueError(f"column {name} has {missing} missing values; filter them first")
    values = pd.to_numeric(rows[outcome])
    if not values.isin([0, 1]).all():
        raise ValueError(f"column {outcome} must hold 0/1 only")
    frame = rows[[provider, *strata]].copy()
    frame["_outcome"] = values.astype(np.float64)
    strata_list = list(strata)

    national_crude = float(frame["_outcome"].mean()) if len(frame) else float("nan")
    if strata_list:
        stratum_rate = frame.groupby(strata_list, sort=False)["_outcome"].transform("mean")
    else:
        stratum_rate = pd.Series(national_crude, index=frame.index)
    # Each unit contributes its stratum's national rate, so Σ over a provider's units is
    # Σ_s n_ps · r_s without building the provider × stratum table.
    frame["_expected"] = stratum_rate.astype(np.float64)
    grouped = frame.groupby(provider, sort=True).agg(
        n=("_outcome", "size"), observed=("_outcome", "sum"), expected=("_expected", "sum")
    )
    observed = grouped["observed"].to_numpy(dtype=np.float64)
    expected = grouped["expected"].to_numpy(dtype=np.float64)
    n = grouped["n"].to_numpy(dtype=np.float64)
    lower, upper = observed_count_interval(observed, confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(expected > 0, observed / expected, np.nan)
        ratio_lower = np.where(expected > 0, lower / expected, np.nan)
        ratio_upper = np.where(expected > 0, upper / expected, np.nan)
    return pd.DataFrame(
        {
            provider: grouped.index.to_numpy(),
            "n": n.astype(np.int64),
            "observed": observed.astype(np.int64),
            "expected": expected,
            "crude_rate": observed / n,
            "ratio": ratio,
            "ratio_lower": ratio_lower,
            "ratio_upper": ratio_upper,
            "standardised_rate": ratio * national_crude,
            "standardised_lower": ratio_lower * national_crude,
            "standardised_upper": ratio_upper * national_crude,
            "method": np.where(observed < EXACT_POISSON_BELOW, "exact", "byars"),
        }
    )
