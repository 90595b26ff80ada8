"""The standardised variation figures computed with a release's results and stored in its file."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from indicators import results
from indicators.catalogue import load_catalogue
from indicators.engine import compute
from indicators.variation_report import crude_variation, figures, standardised_variation
from schemas.organisations import Hierarchy
from tests.indicators.conftest import BERGEN, OUS, STAVANGER, VESTLY, TinyRelease

Factory = Callable[[], TinyRelease]
CATALOGUE = {d.id: d for d in load_catalogue()}
YOUNG, OLD = 20, 50  # age groups 18-24 and 45-54; sex and treatment type alike for all
# (provider, age, stable housing at follow-up) per followed-up episode, follow-ups in 2023.
UNITS: list[tuple[str, int, bool]] = [
    *[(BERGEN, YOUNG, i < 5) for i in range(6)],
    *[(STAVANGER, OLD, i < 1) for i in range(6)],
    *[(VESTLY, YOUNG, i < 2) for i in range(3)],
    *[(VESTLY, OLD, i < 1) for i in range(3)],
    *[(OUS, YOUNG, i < 1) for i in range(2)],
    *[(OUS, OLD, i < 2) for i in range(4)],
]


def housing_release(release: TinyRelease, units: list[tuple[str, int, bool]]) -> TinyRelease:
    for i, (provider, age, stable) in enumerate(units):
        episode = f"e{i}"
        release.basis(episode, provider, age=age)
        release.followup(episode, provider, housing=1 if stable else 4)
    return release


def independent(units: list[tuple[str, int, bool]]) -> dict[str, float | None]:
    """Indirect standardisation and the statistics from their definitions, in exact fractions:
    r_s = stable / units in stratum s; E_p = Σ r_s over p's units; O_p = p's stable; rate_p =
    O_p / E_p × national crude; EQk = k-th highest / k-th lowest rate; CV = sample sd / mean;
    SCV = 100 × (mean((O − E)² / E²) − mean(1 / E))."""
    stratum: dict[int, list[bool]] = defaultdict(list)
    for _, age, stable in units:
        stratum[age].append(stable)
    rate = {age: Fraction(sum(s), len(s)) for age, s in stratum.items()}
    national = Fraction(sum(s for *_, s in units), len(units))
    observed: dict[str, Fraction] = defaultdict(Fraction)
    expected: dict[str, Fraction] = defaultdict(Fraction)
    for provider, age, stable in units:
        observed[provider] += int(stable)
        expected[provider] += rate[age]
    rates = sorted(observed[p] / expected[p] * national for p in observed)
    k = len(rates)
    scv = 100 * (
        sum((observed[p] - expected[p]) ** 2 / expected[p] ** 2 for p in observed) / k
        - sum(1 / expected[p] for p in observed) / k
    )
    return {
        "eq1": float(rates[-1] / rates[0]),
        "eq2": float(rates[-2] / rates[1]) if k >= 4 else None,
        "eq3": float(rates[-3] / rates[2]) if k >= 6 else None,
        "cv": statistics.stdev(float(r) for r in rates) / statistics.mean(float(r) for r in rates),
        "scv": float(scv),
    }


def test_standardised_figures_by_hand_and_independently(tiny: Factory) -> None:
    """Strata: 18-24 has 11 units, 8 stable (r = 8/11); 45-54 has 13, 4 stable (r = 4/13);
    national crude 12/24. E: Bergen 6·8/11, Stavanger 6·4/13, Vestly 3·8/11 + 3·4/13, OUS
    2·8/11 + 4·4/13; standardised rates O/E · 1/2: 55/96, 13/48, 143/296, 143/256. EQ1 =
    (55/96)/(13/48) = 55/26, EQ2 = (143/256)/(143/296) = 37/32, no EQ3 with 4 providers. The
    crude rates 5/6, 1/6, 1/2, 1/2 give EQ1 5 instead."""
    release = housing_release(tiny(), UNITS)
    manifest = release.manifest()
    catalogue = [CATALOGUE["stable_housing"]]
    table = compute(manifest, hierarchy=Hierarchy.default(), catalogue=catalogue)
    [entry] = standardised_variation(manifest, table, catalogue=catalogue)
    assert {k: entry[k] for k in ("indicator_id", "year", "context", "method", "providers")} == {
        "indicator_id": "stable_housing",
        "year": 2023,
        "context": "caregiver",
        "method": "indirectly_standardised",
        "providers": 4,
    }
    assert entry["case_mix"] == ["age_group", "sex", "treatment_type"]
    assert entry["eq1"] == pytest.approx(55 / 26, rel=1e-12)
    assert entry["eq2"] == pytest.approx(37 / 32, rel=1e-12)
    assert entry["eq3"] is None
    want = independent(UNITS)
    for name in ("eq1", "eq2", "cv", "scv"):
        assert entry[name] == pytest.approx(want[name], rel=1e-12), name
    assert entry["scv"] == pytest.approx(-30.477254, abs=1e-6)
    # Crude, from the published rows: EQ1 = (5/6)/(1/6) = 5.
    assert figures(crude_variation([5, 1, 3, 3], [6, 6, 6, 6], 0.5))["eq1"] == pytest.approx(5.0)


def test_suppressed_providers_stay_in_the_reference_but_not_in_the_figures(tiny: Factory) -> None:
    """Stavanger suppressed: its units still set the national stratum rates (the reference
    population is the nation), but its rate leaves the figures: EQ1 = (55/96)/(143/296)."""
    release = housing_release(tiny(), UNITS)
    manifest = release.manifest()
    catalogue = [CATALOGUE["stable_housing"]]
    table = compute(manifest, hierarchy=Hierarchy.default(), catalogue=catalogue)
    hidden = pc.and_(pc.equal(table["orgnr"], STAVANGER), pc.equal(table["level"], "provider"))
    table = table.set_column(
        table.schema.get_field_index("suppressed"),
        "suppressed",
        pc.or_(table["suppressed"], hidden),
    )
    [entry] = standardised_variation(manifest, table, catalogue=catalogue)
    assert entry["providers"] == 3
    assert entry["eq1"] == pytest.approx((55 / 96) / (143 / 296), rel=1e-12)
    assert entry["eq2"] is None


def test_only_case_mix_adjusted_indicators_are_stored(tiny: Factory) -> None:
    release = housing_release(tiny(), UNITS)
    for i in range(6):
        release.discharge(f"e{i}", BERGEN)
    manifest = release.manifest()
    catalogue = [CATALOGUE["stable_housing"], CATALOGUE["mutual_end"]]
    table = compute(manifest, hierarchy=Hierarchy.default(), catalogue=catalogue)
    entries = standardised_variation(manifest, table, catalogue=catalogue)
    assert [(e["indicator_id"], e["context"]) for e in entries] == [("stable_housing", "caregiver")]


def test_figures_travel_with_the_results_file(tiny: Factory, tmp_path: Path) -> None:
    """`compute_and_store` writes the figures into the results file's metadata; `read` and a
    column selection keep them; a file without them (or of another version) has none."""
    release = housing_release(tiny(), UNITS)
    manifest = release.manifest()
    path = results.compute_and_store(manifest, tmp_path / "releases")
    assert path == tmp_path / "releases" / "1" / results.RESULTS_FILE
    stored = results.stored_variation(results.read(path).schema)
    assert stored is not None
    [entry] = [e for e in stored if e["indicator_id"] == "stable_housing" and e["year"] == 2023]
    assert entry["eq1"] == pytest.approx(55 / 26, rel=1e-12)
    assert sorted(p.name for p in path.parent.iterdir()) == [results.RESULTS_FILE]
    plain = tmp_path / "plain.parquet"
    results.write(results.read(path).replace_schema_metadata(None), plain)
    assert results.stored_variation(results.read(plain).schema) is None
    future = results.read(path).replace_schema_metadata(
        {results.VARIATION_KEY: b'{"version": 2, "entries": []}'}
    )
    assert results.stored_variation(future.schema) is None
    empty = results.with_variation(pa.table({"a": [1]}), [])
    assert results.stored_variation(empty.schema) == []
