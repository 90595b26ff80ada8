"""Variation between providers and funnel points, per indicator and year, for the API.

Over the caregiver provider-level results that are shown (not suppressed): extremal quotients and
the coefficient of variation on the providers' rates, McPherson's SCV on observed and expected
counts (`indicators.variation`). For outcome indicators (case-mix adjusted) the rates are
indirectly standardised by the definition's case-mix variables (`indicators.statistics`), with
expected counts from the national stratum rates; otherwise the rates are crude and the expected
count is n·θ (θ the national value). Funnel points are the providers' crude proportions with
their signals; limits are θ ± z·√(θ(1−θ)/n) over n = 1 … the largest denominator.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from indicators.catalogue import IndicatorDefinition, load_catalogue
from indicators.engine import EngineName, case_mix_rows
from indicators.funnel import normal_funnel_limits
from indicators.statistics import age_groups, indirect_standardisation
from indicators.variation import variation
from schemas.manifest import ReleaseManifest


def variation_report(
    manifest: ReleaseManifest,
    results: pa.Table,
    *,
    catalogue: list[IndicatorDefinition] | None = None,
    engine: EngineName = "duckdb",
    spark_session: Any = None,
) -> list[dict[str, Any]]:
    """One entry per proportion indicator × year with at least one shown provider result."""
    definitions = load_catalogue() if catalogue is None else catalogue
    rows = results.to_pylist()
    report: list[dict[str, Any]] = []
    for definition in definitions:
        if definition.type != "proportion":
            continue
        mine = [r for r in rows if r["indicator_id"] == definition.id]
        standardised: pd.DataFrame | None = None
        if definition.outcome and definition.case_mix and definition.unit == "episode":
            standardised = _standardised(manifest, definition, engine, spark_session)
        for year in sorted({r["year"] for r in mine}):
            nation = [
                r
                for r in mine
                if r["year"] == year and r["context"] == "caregiver" and r["level"] == "nation"
            ]
            providers = [
                r
                for r in mine
                if r["year"] == year
                and r["context"] == "caregiver"
                and r["level"] == "provider"
                and not r["suppressed"]
            ]
            if not providers or not nation or nation[0]["value"] is None:
                continue
            theta = float(nation[0]["value"])
            orgnrs = [r["orgnr"] for r in providers]
            observed = np.array([r["numerator"] for r in providers], dtype=np.float64)
            n = np.array([r["denominator"] for r in providers], dtype=np.float64)
            rates = observed / n
            expected = n * theta
            method = "crude"
            if standardised is not None:
                table = standardised[standardised["year"] == year].set_index("provider_orgnr")
                table = table.reindex(orgnrs)
                rates = table["standardised_rate"].to_numpy(dtype=np.float64)
                observed = table["observed"].to_numpy(dtype=np.float64)
                expected = table["expected"].to_numpy(dtype=np.float64)
                method = "indirectly_standardised"
            limits = normal_funnel_limits(theta, np.arange(1, int(n.max()) + 1))
            report.append(
                {
                    "indicator_id": definition.id,
                    "year": year,
                    "method": method,
                    "national_value": theta,
                    "variation": asdict(variation(rates, observed, expected)),
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


def _standardised(
    manifest: ReleaseManifest,
    definition: IndicatorDefinition,
    engine: EngineName,
    spark_session: Any,
) -> pd.DataFrame:
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
        return pd.DataFrame(columns=["year", "provider_orgnr", "observed", "expected"])
    return pd.concat(parts, ignore_index=True)
