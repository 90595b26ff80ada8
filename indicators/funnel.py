"""Funnel-plot control limits and significance labels for proportions against a national value θ.

Three ways to draw the funnel, all returning the same `FunnelLimits`:
- `normal_funnel_limits`: θ ± z·√(θ(1−θ)/n), the method the brief and DOMAIN.md require;
- `wilson_funnel_limits`: PHEindicatormethods `sigma_adjustment` (the limit is the proportion whose
  Wilson interval just touches θ), as used by `phe_funnels` / `phe_funnel_significance`;
- `binomial_funnel_limits`: exact binomial quantiles with Spiegelhalter's interpolation
  (Spiegelhalter 2005, "Funnel plots for comparing institutional performance", Stat Med 24:1185,
  appendix A.1.1).
`overdispersed_funnel` adds Spiegelhalter's additive random-effects adjustment (Spiegelhalter 2005,
"Handling over-dispersion of performance indicators", Qual Saf Health Care 14:347).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import binom, norm

FloatArray = npt.NDArray[np.float64]

# Two-sided 95 % and 99.8 % limits: z = Φ⁻¹(0.975) = 1.959964 and Φ⁻¹(0.999) = 3.090232
# ("2 sigma" and "3 sigma" limits in the PHE Fingertips technical guidance).
Z_95 = float(norm.ppf(0.975))
Z_99_8 = float(norm.ppf(0.999))

FunnelSignificance = Literal[
    "high_0.001", "high_0.025", "low_0.001", "low_0.025", "not_significant"
]

# Spiegelhalter (2005, over-dispersion paper): Winsorise 10 % of the z-scores at each end.
WINSORISE_FRACTION = 0.1


@dataclass(frozen=True)
class FunnelLimits:
    """Control limits per denominator, on the proportion scale (0..1), clipped to [0, 1]."""

    denominator: FloatArray
    lower_0_001: FloatArray
    lower_0_025: FloatArray
    upper_0_025: FloatArray
    upper_0_001: FloatArray


def _theta(theta: float) -> float:
    if not 0.0 <= theta <= 1.0:
        raise ValueError(f"national value theta must lie in [0, 1], got {theta}")
    return float(theta)


def _denominators(denominator: npt.ArrayLike) -> FloatArray:
    n = np.asarray(denominator, dtype=np.float64)
    if np.any(~(n > 0)):
        raise ValueError("denominators must all be greater than zero")
    return n


def _clip(values: FloatArray) -> FloatArray:
    # A proportion cannot leave [0, 1]; clipping never changes a significance label, because an
    # observed proportion can only fall below a limit that is above 0 (and likewise above 1).
    return np.clip(values, 0.0, 1.0).astype(np.float64)


def normal_funnel_limits(theta: float, denominator: npt.ArrayLike) -> FunnelLimits:
    """θ ± z·√(θ(1−θ)/n) with z = 1.959964 (95 %) and 3.090232 (99.8 %)."""
    t = _theta(theta)
    n = _denominators(denominator)
    se = np.sqrt(t * (1.0 - t) / n)
    return FunnelLimits(
        denominator=n,
        lower_0_001=_clip(t - Z_99_8 * se),
        lower_0_025=_clip(t - Z_95 * se),
        upper_0_025=_clip(t + Z_95 * se),
        upper_0_001=_clip(t + Z_99_8 * se),
    )


def _wilson_limit(
    theta: float, n: FloatArray, p: float, side: Literal["low", "high"]
) -> FloatArray:
    # PHEindicatormethods `sigma_adjustment` (Funnels.R): solves the Wilson score equation for the
    # proportion whose Wilson interval has θ as its far end; the same algebra, term by term.
    z2 = float(norm.ppf(p)) ** 2
    first = theta * (n / z2 + 1.0)
    adj = np.sqrt(
        (-8.0 * theta * (n / z2 + 1.0)) ** 2
        - 64.0
        * (1.0 / z2 + 1.0 / n)
        * theta
        * (n * (theta * (n / z2 + 2.0) - 1.0) + z2 * (theta - 1.0))
    )
    last = 1.0 / z2 + 1.0 / n
    limit = (first - adj / 8.0) / last if side == "low" else (first + adj / 8.0) / last
    return _clip(limit / n)


def wilson_funnel_limits(theta: float, denominator: npt.ArrayLike) -> FunnelLimits:
    """Wilson-score funnel as PHEindicatormethods `phe_funnels` (probabilities 0.975 and 0.999)."""
    t = _theta(theta)
    n = _denominators(denominator)
    return FunnelLimits(
        denominator=n,
        lower_0_001=_wilson_limit(t, n, 0.999, "low"),
        lower_0_025=_wilson_limit(t, n, 0.975, "low"),
        upper_0_025=_wilson_limit(t, n, 0.975, "high"),
        upper_0_001=_wilson_limit(t, n, 0.999, "high"),
    )


def _binomial_limit(theta: float, n: FloatArray, p: float) -> FloatArray:
    # Spiegelhalter (2005, Stat Med) appendix A.1.1: r_p is the smallest r with P(R <= r) >= p;
    # interpolate α = (P(R <= r_p) − p) / (P(R <= r_p) − P(R <= r_p − 1)); limit = (r_p − α)/n.
    r_p = binom.ppf(p, n, theta)
    at = binom.cdf(r_p, n, theta)
    below = binom.cdf(r_p - 1.0, n, theta)
    step = at - below
    alpha = np.divide(at - p, step, out=np.zeros_like(n), where=step > 0)
    return _clip((r_p - alpha) / n)


def binomial_funnel_limits(theta: float, denominator: npt.ArrayLike) -> FunnelLimits:
    """Exact binomial funnel with Spiegelhalter's interpolation between integer quantiles."""
    t = _theta(theta)
    n = _denominators(denominator)
    return FunnelLimits(
        denominator=n,
        lower_0_001=_binomial_limit(t, n, 0.001),
        lower_0_025=_binomial_limit(t, n, 0.025),
        upper_0_025=_binomial_limit(t, n, 0.975),
        upper_0_001=_binomial_limit(t, n, 0.999),
    )


def funnel_significance(numerator: npt.ArrayLike, limits: FunnelLimits) -> list[FunnelSignificance]:
    """Label each provider's proportion x/n against limits computed for the same denominators.

    Outside the 99.8 % limits → `_0.001`; outside the 95 % limits only → `_0.025`. Strict
    inequalities, as PHEindicatormethods `phe_funnel_significance` (on a limit = not significant).
    """
    x = np.asarray(numerator, dtype=np.float64)
    if x.shape != limits.denominator.shape:
        raise ValueError("numerator and limits must have the same shape")
    if np.any(x < 0) or np.any(x > limits.denominator):
        raise ValueError("numerators must lie between 0 and the denominator")
    p = x / limits.denominator
    labels: list[FunnelSignificance] = []
    for i, value in enumerate(p.ravel()):
        label: FunnelSignificance = "not_significant"
        if value < limits.lower_0_001.ravel()[i]:
            label = "low_0.001"
        elif value < limits.lower_0_025.ravel()[i]:
            label = "low_0.025"
        elif value > limits.upper_0_001.ravel()[i]:
            label = "high_0.001"
        elif value > limits.upper_0_025.ravel()[i]:
            label = "high_0.025"
        labels.append(label)
    return labels


@dataclass(frozen=True)
class OverdispersedFunnel:
    """Spiegelhalter's additive random-effects funnel for a set of providers.

    z_scores are the unadjusted z-scores on the arcsine-square-root scale, winsorised_z the ones
    that enter φ, phi the over-dispersion ratio and tau2 the between-provider variance added to
    each provider's s² (0 when φ shows no over-dispersion). `limits` are for the providers' own
    denominators; `limits_for` gives them for any denominators (to draw the funnel).
    """

    theta: float
    z_scores: FloatArray
    winsorised_z: FloatArray
    phi: float
    tau2: float
    limits: FunnelLimits

    def limits_for(self, denominator: npt.ArrayLike) -> FunnelLimits:
        """Over-dispersed limits at arbitrary denominators (same θ, τ²)."""
        return _overdispersed_limits(self.theta, _denominators(denominator), self.tau2)


def _overdispersed_limits(theta: float, n: FloatArray, tau2: float) -> FunnelLimits:
    target = math.asin(math.sqrt(theta))
    spread = np.sqrt(1.0 / (4.0 * n) + tau2)

    def back(y: FloatArray) -> FloatArray:
        # asin(√p) lives in [0, π/2]; clip before sin² so a limit below 0 does not fold back up.
        return (np.sin(np.clip(y, 0.0, math.pi / 2.0)) ** 2).astype(np.float64)

    return FunnelLimits(
        denominator=n,
        lower_0_001=back(target - Z_99_8 * spread),
        lower_0_025=back(target - Z_95 * spread),
        upper_0_025=back(target + Z_95 * spread),
        upper_0_001=back(target + Z_99_8 * spread),
    )


def overdispersed_funnel(
    numerator: npt.ArrayLike,
    denominator: npt.ArrayLike,
    theta: float,
    winsorise: float = WINSORISE_FRACTION,
) -> OverdispersedFunnel:
    """Spiegelhalter (2005) additive random-effects over-dispersion on the arcsine scale.

    y_i = asin(√p_i), s_i = 1/(2√n_i), z_i = (y_i − asin(√θ))/s_i; Winsorise z at `winsorise` in
    each tail (values beyond the 10th/90th percentiles set to those percentiles; percentiles by
    linear interpolation, R's default type 7, as NHS-R FunnelPlotR); φ = mean(z_w²).
    If I·φ > I − 1: τ² = (Iφ − (I − 1)) / (Σw − Σw²/Σw) with w = 1/s², else τ² = 0.
    Limits: asin(√θ) ± z·√(s² + τ²), back-transformed with sin².
    """
    t = _theta(theta)
    x = np.asarray(numerator, dtype=np.float64)
    n = _denominators(denominator)
    if x.shape != n.shape or x.ndim != 1:
        raise ValueError("numerator and denominator must be 1-D arrays of the same length")
    if np.any(x < 0) or np.any(x > n):
        raise ValueError("numerators must lie between 0 and the denominator")
    if not 0.0 <= winsorise < 0.5:
        raise ValueError("winsorise must lie in [0, 0.5)")
    count = len(x)
    y = np.arcsin(np.sqrt(x / n))
    s = 1.0 / (2.0 * np.sqrt(n))
    z = (y - math.asin(math.sqrt(t))) / s
    low, high = np.quantile(z, [winsorise, 1.0 - winsorise])
    z_w = np.clip(z, low, high).astype(np.float64)
    phi = float(np.mean(z_w**2))
    w = 1.0 / s**2
    tau2 = 0.0
    weight_spread = float(w.sum() - (w**2).sum() / w.sum())
    # weight_spread is 0 for a single provider: no between-provider variance can be estimated.
    if count * phi > count - 1 and weight_spread > 0:
        tau2 = (count * phi - (count - 1)) / weight_spread
    return OverdispersedFunnel(
        theta=t,
        z_scores=z.astype(np.float64),
        winsorised_z=z_w,
        phi=phi,
        tau2=tau2,
        limits=_overdispersed_limits(t, n, tau2),
    )
