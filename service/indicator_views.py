"""Views over a release's indicator results: provider profile, variation, research participation.

Pure functions from result rows (already scoped to the principal by `service.published`) to the
API's models. Proportions are recomputed from numerator / denominator so that the funnel does
not depend on how `value` is scaled.
"""

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from indicators.funnel import funnel_significance, normal_funnel_limits, overdispersed_funnel
from indicators.variation_report import (
    crude_variation,
    figures,
    national_proportion,
    shown,
)
from schemas.api import (
    FunnelPoint,
    IndicatorResultPublic,
    ParticipationPoint,
    ParticipationProvider,
    ProfileIndicator,
    ProviderProfile,
    VariationPublic,
)
from schemas.errors import NotFound
from schemas.organisations import Hierarchy

# The level a context compares providers at (`indicators.levels.LEVELS`): in the caregiver
# context the provider that treated the patient (the engine also writes an `hf` row for each
# HF, which sums the providers under it: taking both counted an HF twice); in the resident
# context the HF of the patient's home (the only provider-like level there).
PROVIDER_LEVEL: Final[dict[str, str]] = {"caregiver": "provider", "resident": "hf"}
# The national action plan for clinical trials: 5 % of specialist-care patients in clinical
# studies by 2025 (DOMAIN.md).
STUDY_TARGET: Final = 0.05
STUDY_INDICATOR: Final = "study"
# The variation statistics of `VariationPublic` (named as `indicators.variation_report.figures`).
STATISTICS: Final = ("eq1", "eq2", "eq3", "cv", "scv")

Row = dict[str, Any]


def _by_year(rows: Sequence[Row]) -> list[IndicatorResultPublic]:
    return [IndicatorResultPublic(**r) for r in sorted(rows, key=lambda r: int(r["year"]))]


def provider_profile(
    rows: Sequence[Row], *, release: int, orgnr: str, hierarchy: Hierarchy
) -> ProviderProfile:
    """Every indicator of one provider beside its RHF and the nation, year by year."""
    if orgnr not in hierarchy or not hierarchy[orgnr].is_provider:
        raise NotFound(f"no provider with organisation number {orgnr}")
    rhf = hierarchy.rhf_of(orgnr)
    grouped: dict[str, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["orgnr"] == orgnr and row["level"] == PROVIDER_LEVEL.get(row["context"]):
            grouped[row["indicator_id"]]["provider"].append(row)
        elif row["level"] == "rhf" and row["orgnr"] == rhf.orgnr:
            grouped[row["indicator_id"]]["rhf"].append(row)
        elif row["level"] == "nation":
            grouped[row["indicator_id"]]["nation"].append(row)
    return ProviderProfile(
        release=release,
        orgnr=orgnr,
        name=hierarchy[orgnr].name,
        rhf_orgnr=rhf.orgnr if rhf.level == "rhf" else None,
        indicators=[
            ProfileIndicator(
                indicator_id=indicator,
                provider=_by_year(parts["provider"]),
                rhf=_by_year(parts["rhf"]),
                nation=_by_year(parts["nation"]),
            )
            for indicator, parts in sorted(grouped.items())
            if parts["provider"]
        ],
    )


def _proportion(row: Row) -> float | None:
    numerator, denominator = row.get("numerator"), row.get("denominator")
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return float(numerator) / float(denominator)


def variation(
    rows: Sequence[Row],
    *,
    release: int,
    indicator: str,
    year: int,
    context: str,
    overdispersion: bool = False,
    case_mix_adjusted: bool = False,
    stored: Mapping[str, Any] | None = None,
) -> VariationPublic:
    """Variation between providers, with funnel points and 95 % / 99.8 % limits: normal limits
    (the engine's signals), or with `overdispersion` Spiegelhalter's additive random-effects
    limits and the signals against them.

    The statistics eq1-scv: for a `case_mix_adjusted` (outcome) indicator the `stored`
    standardised figures (computed with the release's results, `indicators.variation_report`),
    or none; for another indicator the crude ones, from the shown providers' numerators and
    denominators. The funnel, `extremal_quotient` and `coefficient_of_variation` stay on the
    crude proportions.
    """
    selected = [
        r
        for r in rows
        if r["indicator_id"] == indicator and int(r["year"]) == year and r["context"] == context
    ]
    if not selected:
        raise NotFound(f"no results of {indicator} in {year} ({context})")
    nation = next((r for r in selected if r["level"] == "nation"), None)
    theta = national_proportion(nation)
    # Suppressed providers never enter the figures, whoever asks (a trust sees its own
    # suppressed rows' numbers): every principal gets the same statistics.
    providers = [r for r in selected if r["level"] == PROVIDER_LEVEL[context] and shown(r)]
    numerators = np.array([float(r["numerator"]) for r in providers], dtype=np.float64)
    denominators = np.array([float(r["denominator"]) for r in providers], dtype=np.float64)
    crude = crude_variation(numerators, denominators, theta) if providers else None
    points: list[FunnelPoint] = []
    phi = tau2 = None
    if theta is not None and providers:
        if overdispersion:
            funnel = overdispersed_funnel(list(numerators), denominators, theta)
            limits, phi, tau2 = funnel.limits, funnel.phi, funnel.tau2
        else:
            limits = normal_funnel_limits(theta, denominators)
        # The engine's labels (high_0.001 ... not_significant), by the engine's own function.
        signals = funnel_significance(list(numerators), limits)
        for i, row in enumerate(providers):
            points.append(
                FunnelPoint(
                    orgnr=row["orgnr"],
                    name=row["name"] or row["orgnr"],
                    numerator=float(numerators[i]),
                    denominator=float(denominators[i]),
                    value=float(numerators[i] / denominators[i]),
                    lower95=float(limits.lower_0_025[i]),
                    upper95=float(limits.upper_0_025[i]),
                    lower998=float(limits.lower_0_001[i]),
                    upper998=float(limits.upper_0_001[i]),
                    signal=signals[i],
                )
            )
    # An outcome indicator's figures are the standardised ones or none: its crude ones would
    # answer another question (they stay in extremal_quotient and coefficient_of_variation).
    source: Mapping[str, Any] | None = stored if case_mix_adjusted else None
    if not case_mix_adjusted and crude is not None:
        source = figures(crude)
    statistics = {name: source.get(name) for name in STATISTICS} if source is not None else {}
    return VariationPublic(
        release=release,
        indicator_id=indicator,
        year=year,
        context=context,
        providers=len(providers),
        national_value=theta,
        extremal_quotient=crude.extremal_quotients.eq1 if crude is not None else None,
        coefficient_of_variation=crude.coefficient_of_variation if crude is not None else None,
        **statistics,
        standardised=case_mix_adjusted and stored is not None,
        funnel="overdispersed" if overdispersion else "normal",
        phi=phi,
        tau2=tau2,
        points=points,
    )


def research_participation(rows: Sequence[Row], *, release: int) -> list[ParticipationProvider]:
    """The study indicator of every provider (and the nation) against the 5 % target."""
    grouped: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for row in rows:
        if row["indicator_id"] == STUDY_INDICATOR and (
            row["level"] == PROVIDER_LEVEL.get(row["context"]) or row["level"] == "nation"
        ):
            grouped[(row["orgnr"], row["name"] or row["orgnr"], row["level"])].append(row)
    items: list[ParticipationProvider] = []
    for (orgnr, name, level), series in sorted(grouped.items(), key=lambda kv: kv[0][0]):
        trend = [
            ParticipationPoint(
                year=int(r["year"]),
                value=_proportion(r),
                numerator=r["numerator"],
                denominator=r["denominator"],
            )
            for r in sorted(series, key=lambda r: int(r["year"]))
        ]
        latest = trend[-1].value
        items.append(
            ParticipationProvider(
                orgnr=orgnr,
                name=name,
                level=level,
                target=STUDY_TARGET,
                latest_value=latest,
                reaches_target=None if latest is None else latest >= STUDY_TARGET,
                trend=trend,
            )
        )
    return items
