"""Variation between providers per indicator and year: what the API serves, and a full report.

Over the caregiver provider-level results that are shown (not suppressed): extremal quotients and
the coefficient of variation on the providers' rates, McPherson's SCV on observed and expected
counts (`indicators.variation`). For outcome indicators (case-mix adjusted) the rates are
indirectly standardised by the definition's case-mix variables (`indicators.statistics`), with
expected counts from the national stratum rates; otherwise the rates are crude and the expected
count is n·θ (θ the national value). Funnel points are the providers' crude proportions with
their signals; limits are θ ± z·√(θ(1−θ)/n) over n = 1 … the largest denominator.

Three entry points:
- `crude_variation`: the crude figures from published numerators and denominators alone; the API
  computes them per request from the result rows (`service.indicator_views`).
- `standardised_variation`: the standardised figures, which need the release's records (the
  national stratum rates and each provider's case mix, `indicators.engine.case_mix_rows`), so
  they are computed with the results when a release's indicators are computed, and stored in the
  results file (`indicators.results.with_variation`) for the API to serve.
- `variation_report`: both, with funnel points and limits, per proportion indicator and year.

The reference population of the standardisation is every unit of the year with a known stratum,
suppressed providers' included (national stratum rates); the figures are taken over the shown
providers only, so a suppressed provider's rate never enters them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from indicators.catalogue import IndicatorDefinition, load_catalogue
from indicators.funnel import normal_funnel_limits
from indicators.statistics import age_groups, indirect_standardisation
from indicators.variation import Variation, variation
from schemas.manifest import ReleaseManifest

if TYPE_CHECKING:  # the engine (Ibis) loads on first use: the API imports this module
    from indicators.engine import EngineName

CRUDE: Final = "crude"
STANDARDISED: Final = "indirectly_standardised"
# Standardisation is over the providers of the caregiver context: the case-mix rows carry the
# treating provider, not the patient's home HF (the resident context's unit of comparison).
STANDARDISED_CONTEXT: Final = "caregiver"

Row = Mapping[str, Any]


def case_mix_adjusted(definition: IndicatorDefinition) -> bool:
    """Whether `definition`'s variation figures are to be on indirectly standardised rates: an
    outcome indicator with case-mix variables (crude figures would be the wrong answer)."""
    return definition.outcome and bool(definition.case_mix)


def _standardisable(definition: IndicatorDefinition) -> bool:
    # `case_mix_rows` has one row per episode with its intake's age, sex and treatment type.
    return (
        case_mix_adjusted(definition)
        and definition.type == "proportion"
        and definition.unit == "episode"
    )


def shown(row: Row) -> bool:
    """A provider result that enters the figures: published (not suppressed), with a numerator
    and a positive denominator."""
    denominator = row.get("denominator")
    return (
        not row["suppressed"]
        and row.get("numerator") is not None
        and denominator is not None
        and denominator > 0
    )


def national_proportion(row: Row | None) -> float | None:
    """θ of a nation row: numerator / denominator (None without them)."""
    if row is None or row.get("numerator") is None or not row.get("denominator"):
        return None
    return float(row["numerator"]) / float(row["denominator"])


def crude_variation(
    numerators: npt.ArrayLike, denominators: npt.ArrayLike, theta: float | None
) -> Variation:
    """EQ1–3 and CV on the crude rates x/n, SCV on O = x and E = n·θ (None without θ)."""
    observed = np.asarray(numerators, dtype=np.float64)
    n = np.asarray(denominators, dtype=np.float64)
    expected = n * theta if theta is not None else np.full_like(n, np.nan)
    return variation(observed / n, observed, expected)


def figures(result: Variation) -> dict[str, Any]:
    """A `Variation` as the flat figures the API serves (eq1, eq2, eq3, cv, scv, providers)."""
    quotients = result.extremal_quotients
    return {
        "providers": result.providers,
        "eq1": quotients.eq1,
        "eq2": quotients.eq2,
        "eq3": quotients.eq3,
        "cv": result.coefficient_of_variation,
        "scv": result.systematic_component,
    }


def standardised_variation(
    manifest: ReleaseManifest,
    results: pa.Table,
    *,
    catalogue: Sequence[IndicatorDefinition] | None = None,
    engine: EngineName = "duckdb",
    spark_session: Any = None,
) -> list[dict[str, Any]]:
    """The standardised figures of every case-mix adjusted indicator × year with a shown
    caregiver provider: `indicator_id, year, context, method, case_mix` and `figures(...)`.

    JSON-ready (None for a figure that does not exist, e.g. EQ3 with fewer than 6 providers).
    """
    definitions = [
        d for d in (load_catalogue() if catalogue is None else catalogue) if _standardisable(d)
    ]
    entries: list[dict[str, Any]] = []
    for definition in definitions:
        providers = _shown_providers(results, definition.id)
        if not providers:
            continue
        table = _standardised(manifest, definition, engine, spark_session)
        for year in sorted(providers):
            rates, observed, expected = _standardised_columns(table, year, providers[year])
            entries.append(
                {
                    "indicator_id": definition.id,
                    "year": year,
                    "context": STANDARDISED_CONTEXT,
                    "method": STANDARDISED,
                    "case_mix": list(definition.case_mix),
                    **figures(variation(rates, observed, expected)),
                }
            )
    return entries


def variation_report(
    manifest: ReleaseManifest,
    results: pa.Table,
    *,
    catalogue: list[IndicatorDefinition] | None = None,
    engine: EngineName = "duckdb",
    spark_session: Any = None,
) -> list[dict[str, Any]]:
    """One entry per proportion indicator × year with at least one shown provider result (caregiver
    context), with its funnel points and limits."""
    definitions = load_catalogue() if catalogue is None else catalogue
    rows = _caregiver_rows(results, [d.id for d in definitions]).to_pylist()
    report: list[dict[str, Any]] = []
    for definition in definitions:
        if definition.type != "proportion":
            continue
        mine = [r for r in rows if r["indicator_id"] == definition.id]
        standardised: pd.DataFrame | None = None
        if _standardisable(definition):
            standardised = _standardised(manifest, definition, engine, spark_session)
        for year in sorted({r["year"] for r in mine}):
            nation = [r for r in mine if r["year"] == year and r["level"] == "nation"]
            providers = [
                r for r in mine if r["year"] == year and r["level"] == "provider" and shown(r)
            ]
            theta = national_proportion(nation[0]) if nation else None
            if not providers or theta is None:
                continue
            n = np.array([r["denominator"] for r in providers], dtype=np.float64)
            result = crude_variation([r["numerator"] for r in providers], n, theta)
            method = CRUDE
            if standardised is not None:
                orgnrs = [r["orgnr"] for r in providers]
                result = variation(*_standardised_columns(standardised, year, orgnrs))
                method = STANDARDISED
            limits = normal_funnel_limits(theta, np.arange(1, int(n.max()) + 1))
            report.append(
                {
                    "indicator_id": definition.id,
                    "year": year,
                    "method": method,
                    "national_value": theta,
                    "variation": asdict(result),
                    "funnel_points": [
                        {
                            "orgnr": r["orgnr"],
                            "numerator": r["numerator"],
                            "denominator": r["denominator"],
                            "value": r["value"],
                            "signal": r["funnel_signal"],
                        }
                        for r in providers
                    ],
                    "funnel_limits": {
                        "denominator": limits.denominator.tolist(),
                        "lower_0_001": limits.lower_0_001.tolist(),
                        "lower_0_025": limits.lower_0_025.tolist(),
                        "upper_0_025": limits.upper_0_025.tolist(),
                        "upper_0_001": limits.upper_0_001.tolist(),
                    },
                }
            )
    return report


def _caregiver_rows(results: pa.Table, indicators: Sequence[str]) -> pa.Table:
    """The caregiver provider and nation rows of `indicators` (a small part of the results)."""
    mask = pc.and_(
        pc.and_(
            pc.is_in(results["indicator_id"], pa.array(list(indicators), pa.string())),
            pc.equal(results["context"], STANDARDISED_CONTEXT),
        ),
        pc.is_in(results["level"], pa.array(["provider", "nation"])),
    )
    return results.filter(mask)


def _shown_providers(results: pa.Table, indicator: str) -> dict[int, list[str]]:
    """Per year, the orgnrs of `indicator`'s shown caregiver providers (in result order)."""
    providers: dict[int, list[str]] = {}
    for row in _caregiver_rows(results, [indicator]).to_pylist():
        if row["level"] == "provider" and shown(row):
            providers.setdefault(int(row["year"]), []).append(row["orgnr"])
    return providers


def _standardised_columns(
    table: pd.DataFrame, year: int, orgnrs: Sequence[str]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Standardised rates, observed and expected of `orgnrs` in `year` (NaN for a provider
    without a unit of known stratum: it takes no part in the figures)."""
    rows = table[table["year"] == year].set_index("provider_orgnr").reindex(list(orgnrs))
    return (
        rows["standardised_rate"].to_numpy(dtype=np.float64),
        rows["observed"].to_numpy(dtype=np.float64),
        rows["expected"].to_numpy(dtype=np.float64),
    )


def _standardised(
    manifest: ReleaseManifest,
    definition: IndicatorDefinition,
    engine: EngineName,
    spark_session: Any,
) -> pd.DataFrame:
    from indicators.engine import case_mix_rows

    units = case_mix_rows(manifest, definition, engine=engine, spark_session=spark_session)
    frame = units.to_pandas()
    frame["age_group"] = age_groups(frame["age"].to_numpy(dtype=np.float64))
    strata = list(definition.case_mix)
    # Units without a known intake (no basis row) cannot be placed in a stratum.
    frame = frame.dropna(subset=strata)
    parts = []
    for year, rows in frame.groupby("year"):
        result = indirect_standardisation(
            rows, provider="provider_orgnr", strata=strata, outcome="outcome"
        )
        result["year"] = year
        parts.append(result)
    if not parts:
        return pd.DataFrame(
            columns=["year", "provider_orgnr", "observed", "expected", "standardised_rate"]
        )
    return pd.concat(parts, ignore_index=True)
