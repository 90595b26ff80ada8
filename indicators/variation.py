"""Variation between providers for one indicator and year.

Extremal quotients and the coefficient of variation are computed on the providers' rates
(usually indirectly standardised rates, `indicators.statistics.indirect_standardisation`); the
systematic component of variation on observed and expected counts (McPherson K, Wennberg JE,
Hovind OB, Clifford P. Small-area variations in the use of common surgical procedures: an
international comparison of New England, England, and Norway. N Engl J Med 1982;307:1310-4;
as used by the Atlas of Variations in Medical Practice, Ibáñez B et al. BMC Health Serv Res
2009;9:60).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ExtremalQuotients:
    """EQ1 = max/min, EQ2 = 2nd highest/2nd lowest, EQ3 = 3rd highest/3rd lowest.

    None where there are too few providers (EQk needs at least 2k, so that the k-th highest and
    k-th lowest are different providers) or the denominator is 0.
    """

    eq1: float | None
    eq2: float | None
    eq3: float | None


def _finite(values: npt.ArrayLike) -> FloatArray:
    # Providers without a rate (NaN: no denominator, result suppressed) take no part.
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def extremal_quotients(rates: npt.ArrayLike) -> ExtremalQuotients:
    """Extremal quotients of the providers' rates (NaN rates are left out)."""
    ordered = np.sort(_finite(rates))

    def quotient(k: int) -> float | None:
        if len(ordered) < 2 * k or ordered[k - 1] == 0:
            return None
        return float(ordered[-k] / ordered[k - 1])

    return ExtremalQuotients(eq1=quotient(1), eq2=quotient(2), eq3=quotient(3))


def coefficient_of_variation(rates: npt.ArrayLike) -> float | None:
    """Sample standard deviation (n − 1) divided by the mean; None for < 2 rates or mean 0."""
    values = _finite(rates)
    if len(values) < 2:
        return None
    mean = float(values.mean())
    if mean == 0:
        return None
    return float(values.std(ddof=1)) / mean


def systematic_component_of_variation(
    observed: npt.ArrayLike, expected: npt.ArrayLike
) -> float | None:
    """McPherson's SCV = 100 × [ (1/k) Σ ((O_i − E_i)² / E_i²) − (1/k) Σ (1/E_i) ].

    The second term removes the random (Poisson) part of the variation, so the SCV can be
    negative when providers vary less than chance alone would make them. Providers with E = 0
    carry no information and are left out; None when fewer than two remain (a variation between
    providers, as the coefficient of variation).
    """
    o = np.asarray(observed, dtype=np.float64).ravel()
    e = np.asarray(expected, dtype=np.float64).ravel()
    if o.shape != e.shape:
        raise ValueError("observed and expected must have the same length")
    if np.any(o < 0) or np.any(e < 0):
        raise ValueError("observed and expected must be non-negative")
    keep = e > 0
    o, e = o[keep], e[keep]
    if len(e) < 2:
        return None
    return float(100.0 * (np.mean((o - e) ** 2 / e**2) - np.mean(1.0 / e)))


@dataclass(frozen=True)
class Variation:
    """All variation statistics for one indicator and year."""

    providers: int
    extremal_quotients: ExtremalQuotients
    coefficient_of_variation: float | None
    systematic_component: float | None


def variation(rates: npt.ArrayLike, observed: npt.ArrayLike, expected: npt.ArrayLike) -> Variation:
    """EQ1–3 and CV on `rates`, SCV on `observed`/`expected` (one entry per provider)."""
    return Variation(
        providers=len(_finite(rates)),
        extremal_quotients=extremal_quotients(rates),
        coefficient_of_variation=coefficient_of_variation(rates),
        systematic_component=systematic_component_of_variation(observed, expected),
    )
