"""The standardised variation figures a release's results carry, against a plain-Python reference.

`reference` recomputes, from the episodes a test generated (provider, unit, intake rows with age,
sex and treatment type, measurement points, follow-ups, discharges, NPR counts), the entries that
`indicators.results.attach_variation` stores in a results file
(`indicators.variation_report.standardised_variation`, read back with
`indicators.results.stored_variation` after `results.write` / `results.read`): per case-mix
adjusted outcome indicator and year, the national stratum rates (stratum = age group × sex ×
treatment type), each provider's observed and expected count, its indirectly standardised rate,
and over the providers EQ1-3, the coefficient of variation and McPherson's systematic component
of variation. It works in exact fractions, with loops and dictionaries, one indicator at a time;
it shares no code with the engine (nor with tests/indicators/test_reference.py, whose style it
follows). It is written from DOMAIN.md ("Indicators", "Statistics that users expect"), the
definitions reduced_use.toml and stable_housing.toml (the only outcome indicators with case-mix
variables: age_group, sex, treatment_type; unit episode; population every follow-up row) and the
literature the code cites (McPherson et al. 1982: SCV = 100 × [(1/k) Σ ((O − E)/E)² −
(1/k) Σ 1/E]; indirect standardisation: E_p = Σ_s n_ps · r_s, standardised rate = O/E × the
reference population's crude rate).

The hypothesis test compares every figure of every stored entry (pytest.approx, rel 1e-9; abs
1e-9 for figures that are 0 in exact arithmetic) and the set of (indicator, year, context,
method) entries, on random tiny releases: 3-8 providers over Helse Vest, Helse Sør-Øst and
outside the hierarchy, 1-10 episodes each (episode ids shared between providers), 0-2 intake
rows (none: no stratum; two: a re-sent intake with other values), 0-2 measurement points, 0-2
follow-ups in 2023-2024, ages at the age groups' edges, NPR counts that put providers under
60 % coverage, a random minimum denominator (so complementary suppression happens too), and a
provider hidden by hand (suppressed in the results table before the figures are computed). The
engine's caregiver provider rows of the outcome indicators are cross-checked too (denominator,
numerator, suppression reason), since they decide which providers take part. Three hand-worked
examples pin the numbers, of the reference and of the code.

Rules taken from DOMAIN.md and the definitions:
- An episode is (provider, episode_id); its age, sex and treatment type are its first intake's
  (earliest intake date). Population of both indicators: every follow-up row with status
  reached (1), counted in its follow-up date's year, at its episode's provider. stable_housing:
  housing own (1) or rented (2), a missing housing is not stable. reduced_use: also the
  follow-up's use_days_30 and the baseline (the first measurement point's use_days_30) known;
  outcome: follow-up days < baseline.
- A provider with coverage (registered episodes by first intake year / NPR episodes that year)
  under 60 % has its provider results that year suppressed; results with a denominator under the
  indicator's minimum are suppressed.

Rules taken from the code's docstrings (DOMAIN.md does not state them):
- Age groups 13-17, 18-24, 25-34, 35-44, 45-54, 55-64, 65+ (`indicators.statistics.AGE_BANDS`);
  sex 9 (unknown) is a stratum of its own.
- The reference population is every unit of the indicator and year with a known stratum (an
  episode without an intake row has none: it is left out of the stratum rates, of the national
  crude rate used to rescale O/E, and of its provider's O and E), suppressed providers' units
  included; the national stratum rates are per year.
- The figures are over the caregiver providers shown in the results (not suppressed, for any
  reason, including complementary suppression, which the reference takes from the results
  table); a shown provider with no unit of known stratum, or with E = 0 (standardised rate
  undefined), takes no part; `providers` counts those that do.
- EQk = k-th highest / k-th lowest rate, None with fewer than 2k providers or a k-th lowest rate
  of 0. CV = sample standard deviation (n − 1) / mean, None with fewer than 2 rates or mean 0.
  SCV over the providers with E > 0, None with fewer than 2.
- An entry exists for every case-mix adjusted indicator and year with at least one shown
  caregiver provider (even if none of them takes part: then every figure is None); context
  "caregiver", method "indirectly_standardised", case_mix the definition's variables.

Not observable here: EQk and the CV are scale-free and the SCV uses O and E only, so the crude
rate that rescales O/E into a standardised rate (and whether it counts the units without a
stratum) moves no stored figure; the rule is stated above but no test can tell it.
"""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indicators import results
from indicators.catalogue import IndicatorDefinition, load_catalogue
from indicators.engine import compute
from schemas.organisations import Hierarchy
from tests.indicators.conftest import BERGEN, OUS, STAVANGER, VESTLY, TinyRelease

HIERARCHY: Final = Hierarchy.default()
FORDE: Final = "983974732"  # HELSE FØRDE HF, Helse Vest
HARALDSPLASS: Final = "984027737"  # an HF of Helse Vest with private ownership
FJELLRO: Final = "991500006"  # a private provider of Helse Sør-Øst
UNKNOWN: Final = "999999999"  # a valid-looking orgnr outside the hierarchy
PROVIDERS: Final = (BERGEN, STAVANGER, VESTLY, FORDE, HARALDSPLASS, OUS, FJELLRO, UNKNOWN)

OUTCOMES: Final = ("reduced_use", "stable_housing")  # outcome = true with case_mix (the TOML)
CASE_MIX: Final = ["age_group", "sex", "treatment_type"]
# Lower bound of each age group (DOMAIN.md: the register starts at 13; groups from the code).
AGE_GROUPS: Final = (
    (13, "13-17"),
    (18, "18-24"),
    (25, "25-34"),
    (35, "35-44"),
    (45, "45-54"),
    (55, "55-64"),
    (65, "65+"),
)
LOW_COVERAGE_BELOW: Final = Fraction(60, 100)
FIGURES: Final = ("eq1", "eq2", "eq3", "cv", "scv")
CATALOGUE: Final = {d.id: d for d in load_catalogue()}


# --- What a test generates -----------------------------------------------------------------


@dataclass(frozen=True)
class Intake:
    day: date
    age: int
    sex: int
    treatment_type: int


@dataclass(frozen=True)
class Measurement:
    day: date
    use_days_30: int | None


@dataclass(frozen=True)
class FollowUp:
    day: date
    status: int = 1
    use_days_30: int | None = None
    housing: int | None = None


@dataclass(frozen=True)
class Episode:
    provider: str
    episode_id: str
    intakes: tuple[Intake, ...] = ()
    measurements: tuple[Measurement, ...] = ()
    followups: tuple[FollowUp, ...] = ()
    discharges: tuple[int, ...] = ()  # end reasons
    unit: str = "U1"


@dataclass(frozen=True)
class Scenario:
    episodes: tuple[Episode, ...]
    npr: tuple[tuple[str, int, int], ...] = ()  # (provider, year, NPR episodes)
    min_denominator: int = 1
    hidden: frozenset[str] = field(default_factory=frozenset)  # suppressed by hand


# --- The reference -------------------------------------------------------------------------

Stratum = tuple[str, int, int]
# (indicator, year, provider)
Key = tuple[str, int, str]


@dataclass(frozen=True)
class Unit:
    """One unit of an outcome indicator's population."""

    year: int
    provider: str
    stratum: Stratum | None
    outcome: bool


def age_group(age: int) -> str | None:
    label = None
    for lower, name in AGE_GROUPS:
        if age >= lower:
            label = name
    return label


def stratum_of(episode: Episode) -> Stratum | None:
    """Age group, sex and treatment type of the episode's first intake (None without one)."""
    if not episode.intakes:
        return None
    first = min(episode.intakes, key=lambda intake: intake.day)
    group = age_group(first.age)
    if group is None:
        return None
    return (group, first.sex, first.treatment_type)


def units(scenario: Scenario, indicator: str) -> list[Unit]:
    """The population of `indicator`: every reached follow-up (with a baseline and days of use
    for reduced_use), in its follow-up year, with its outcome."""
    found: list[Unit] = []
    for episode in scenario.episodes:
        stratum = stratum_of(episode)
        baseline = None
        if episode.measurements:
            baseline = min(episode.measurements, key=lambda m: m.day).use_days_30
        for followup in episode.followups:
            if followup.status != 1:
                continue
            if indicator == "stable_housing":
                outcome = followup.housing in (1, 2)
            elif indicator == "reduced_use":
                if followup.use_days_30 is None or baseline is None:
                    continue
                outcome = followup.use_days_30 < baseline
            else:
                raise ValueError(indicator)
            found.append(Unit(followup.day.year, episode.provider, stratum, outcome))
    return found


def low_coverage(scenario: Scenario) -> set[tuple[int, str]]:
    """(year, provider) whose registered episodes (by first intake year) are under 60 % of NPR's."""
    registered: dict[tuple[int, str], int] = defaultdict(int)
    for episode in scenario.episodes:
        if episode.intakes:
            first = min(episode.intakes, key=lambda intake: intake.day)
            registered[(first.day.year, episode.provider)] += 1
    npr: dict[tuple[int, str], int] = defaultdict(int)
    for provider, year, count in scenario.npr:
        npr[(year, provider)] += count
    return {
        key
        for key, count in npr.items()
        if count > 0 and Fraction(registered[key], count) < LOW_COVERAGE_BELOW
    }


def provider_results(scenario: Scenario) -> dict[Key, tuple[int, int, str | None]]:
    """Per outcome indicator, year and provider: (numerator, denominator, suppression reason by
    the minimum denominator or low coverage; None when neither applies)."""
    low = low_coverage(scenario)
    counted: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    for indicator in OUTCOMES:
        for unit in units(scenario, indicator):
            counts = counted[(indicator, unit.year, unit.provider)]
            counts[0] += int(unit.outcome)
            counts[1] += 1
    found: dict[Key, tuple[int, int, str | None]] = {}
    for key, (numerator, denominator) in counted.items():
        reason = None
        if denominator < scenario.min_denominator:
            reason = "min_denominator"
        elif (key[1], key[2]) in low:
            reason = "low_coverage"
        found[key] = (numerator, denominator, reason)
    return found


def extremal_quotient(ordered: list[Fraction], k: int) -> Fraction | None:
    if len(ordered) < 2 * k or ordered[k - 1] == 0:
        return None
    return ordered[-k] / ordered[k - 1]


def coefficient_of_variation(rates: list[Fraction]) -> float | None:
    if len(rates) < 2:
        return None
    mean = sum(rates, Fraction(0)) / len(rates)
    if mean == 0:
        return None
    variance = sum(((r - mean) ** 2 for r in rates), Fraction(0)) / (len(rates) - 1)
    return math.sqrt(variance) / float(mean)


def mcpherson_scv(observed: list[Fraction], expected: list[Fraction]) -> Fraction | None:
    pairs = [(o, e) for o, e in zip(observed, expected, strict=True) if e > 0]
    if len(pairs) < 2:
        return None
    k = len(pairs)
    systematic = sum(((o - e) ** 2 / e**2 for o, e in pairs), Fraction(0)) / k
    poisson = sum((1 / e for _, e in pairs), Fraction(0)) / k
    return 100 * (systematic - poisson)


def as_float(value: Fraction | float | None) -> float | None:
    return None if value is None else float(value)


def standardised(
    population: list[Unit], year: int, shown: list[str]
) -> tuple[dict[str, Fraction], dict[str, Fraction], dict[str, Fraction]]:
    """(O, E, standardised rate) of the shown providers with a unit of known stratum in `year`
    (the rate only where E > 0)."""
    known = [u for u in population if u.year == year and u.stratum is not None]
    stratum_units: dict[Stratum, list[bool]] = defaultdict(list)
    for unit in known:
        assert unit.stratum is not None
        stratum_units[unit.stratum].append(unit.outcome)
    stratum_rate = {s: Fraction(sum(v), len(v)) for s, v in stratum_units.items()}
    crude = Fraction(sum(u.outcome for u in known), len(known)) if known else Fraction(0)
    observed: dict[str, Fraction] = {}
    expected: dict[str, Fraction] = {}
    for unit in known:
        if unit.provider not in shown:
            continue
        assert unit.stratum is not None
        observed[unit.provider] = observed.get(unit.provider, Fraction(0)) + int(unit.outcome)
        expected[unit.provider] = (
            expected.get(unit.provider, Fraction(0)) + stratum_rate[unit.stratum]
        )
    rates = {p: observed[p] / expected[p] * crude for p in observed if expected[p] > 0}
    return observed, expected, rates


def reference(scenario: Scenario, complementary: set[Key]) -> list[dict[str, Any]]:
    """The stored entries, by the rules of the module docstring. `complementary`: the provider
    results the engine suppressed to protect others (the only rule not recomputed here)."""
    rows = provider_results(scenario)
    entries: list[dict[str, Any]] = []
    for indicator in OUTCOMES:
        population = units(scenario, indicator)
        shown: dict[int, list[str]] = defaultdict(list)
        for (name, year, provider), (_, _, reason) in rows.items():
            if (
                name == indicator
                and reason is None
                and (name, year, provider) not in complementary
                and provider not in scenario.hidden
            ):
                shown[year].append(provider)
        for year in sorted(shown):
            observed, expected, rates = standardised(population, year, shown[year])
            ordered = sorted(rates.values())
            # Every shown provider with a unit of known stratum: the SCV leaves out E = 0 itself.
            counted = list(observed)
            entries.append(
                {
                    "indicator_id": indicator,
                    "year": year,
                    "context": "caregiver",
                    "method": "indirectly_standardised",
                    "case_mix": CASE_MIX,
                    "providers": len(ordered),
                    "eq1": as_float(extremal_quotient(ordered, 1)),
                    "eq2": as_float(extremal_quotient(ordered, 2)),
                    "eq3": as_float(extremal_quotient(ordered, 3)),
                    "cv": coefficient_of_variation(ordered),
                    "scv": as_float(
                        mcpherson_scv(
                            [observed[p] for p in counted], [expected[p] for p in counted]
                        )
                    ),
                }
            )
    return entries


# --- The code's side and the comparison ----------------------------------------------------


def build(root: Path, scenario: Scenario) -> TinyRelease:
    release = TinyRelease(root)
    for episode in scenario.episodes:
        who = (episode.episode_id, episode.provider)
        unit = episode.unit
        for intake in episode.intakes:
            release.basis(
                *who,
                intake=intake.day.isoformat(),
                unit=unit,
                age=intake.age,
                sex=intake.sex,
                treatment_type=intake.treatment_type,
            )
        for measurement in episode.measurements:
            release.measurement(
                *who, on=measurement.day.isoformat(), unit=unit, use_days_30=measurement.use_days_30
            )
        for reason in episode.discharges:
            release.discharge(*who, on="2023-03-01", unit=unit, end_reason=reason)
        for followup in episode.followups:
            release.followup(
                *who,
                on=followup.day.isoformat(),
                unit=unit,
                followup_status=followup.status,
                use_days_30=followup.use_days_30,
                housing=followup.housing,
            )
    for provider, year, count in scenario.npr:
        release.npr(provider, year, count)
    return release


def catalogue(min_denominator: int) -> list[IndicatorDefinition]:
    """Coverage (for low-coverage suppression), the outcome indicators at `min_denominator`, and
    mutual_end (no case mix: it must have no standardised entry)."""
    return [
        CATALOGUE["coverage"],
        *(CATALOGUE[i].model_copy(update={"min_denominator": min_denominator}) for i in OUTCOMES),
        CATALOGUE["mutual_end"],
    ]


def hide(table: pa.Table, providers: frozenset[str]) -> pa.Table:
    """Suppress every caregiver provider row of `providers` (as an editor might)."""
    if not providers:
        return table
    mask = pc.and_(
        pc.and_(
            pc.is_in(table["orgnr"], pa.array(sorted(providers), pa.string())),
            pc.equal(table["level"], "provider"),
        ),
        pc.equal(table["context"], "caregiver"),
    )
    index = table.schema.get_field_index("suppressed")
    return table.set_column(index, "suppressed", pc.or_(table["suppressed"], mask))


def computed(scenario: Scenario) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The results rows and the stored variation entries of the scenario's release (computed on
    DuckDB, written to a results file and read back)."""
    definitions = catalogue(scenario.min_denominator)
    with tempfile.TemporaryDirectory(prefix="kvarus-variation-reference-") as directory:
        release = build(Path(directory), scenario)
        manifest = release.manifest()
        table = compute(manifest, hierarchy=HIERARCHY, catalogue=definitions)
        rows: list[dict[str, Any]] = table.to_pylist()
        table = results.attach_variation(
            manifest, hide(table, scenario.hidden), catalogue=definitions
        )
        path = Path(directory) / "releases" / results.RESULTS_FILE
        results.write(table, path)
        stored = results.stored_variation(results.read(path).schema)
    assert stored is not None
    return rows, stored


def entry_key(entry: dict[str, Any]) -> tuple[str, int, str, str]:
    return (entry["indicator_id"], entry["year"], entry["context"], entry["method"])


def close(value: Any, wanted: Any) -> bool:
    if value is None or wanted is None:
        return value is None and wanted is None
    return bool(value == pytest.approx(wanted, rel=1e-9, abs=1e-9))


def describe(scenario: Scenario) -> str:
    lines = [f"min_denominator={scenario.min_denominator} hidden={sorted(scenario.hidden)}"]
    lines += [f"npr {n}" for n in scenario.npr]
    lines += [repr(e) for e in scenario.episodes]
    return "\n".join(lines)


def check(scenario: Scenario) -> list[dict[str, Any]]:
    """Compare the stored entries with the reference (every figure, and the set of entries) and
    the engine's outcome provider rows with the reference's counts; the stored entries."""
    rows, stored = computed(scenario)
    problems: list[str] = []
    # The provider rows that decide who takes part.
    mine = provider_results(scenario)
    engine: dict[Key, dict[str, Any]] = {}
    for row in rows:
        if row["indicator_id"] in OUTCOMES and (row["context"], row["level"]) == (
            "caregiver",
            "provider",
        ):
            engine[(row["indicator_id"], row["year"], row["orgnr"])] = row
    if set(engine) != set(mine):
        problems.append(f"provider rows: engine {sorted(engine)}, reference {sorted(mine)}")
    complementary: set[Key] = set()
    for key in sorted(set(engine) & set(mine)):
        row, (numerator, denominator, reason) = engine[key], mine[key]
        if row["suppression_reason"] == "complementary" and reason is None:
            complementary.add(key)
        elif row["suppression_reason"] != reason:
            problems.append(f"{key}: reason {row['suppression_reason']}, reference {reason}")
        if row["denominator"] != denominator or (
            not row["suppressed"] and row["numerator"] != numerator
        ):
            problems.append(
                f"{key}: {row['numerator']}/{row['denominator']}, reference {mine[key]}"
            )
    # The stored figures.
    wanted = reference(scenario, complementary)
    got = {entry_key(e): e for e in stored}
    want = {entry_key(e): e for e in wanted}
    assert len(got) == len(stored), "duplicate entries"
    if set(got) != set(want):
        problems.append(f"entries: stored {sorted(got)}, reference {sorted(want)}")
    for entry_id in sorted(set(got) & set(want)):
        entry, expected = got[entry_id], want[entry_id]
        if set(entry) != set(expected):
            problems.append(f"{entry_id}: fields {sorted(entry)}, reference {sorted(expected)}")
        for name in ("case_mix", "providers"):
            if entry.get(name) != expected[name]:
                problems.append(
                    f"{entry_id} {name}: stored {entry.get(name)}, reference {expected[name]}"
                )
        for name in FIGURES:
            if not close(entry.get(name), expected[name]):
                problems.append(
                    f"{entry_id} {name}: stored {entry.get(name)}, reference {expected[name]}"
                )
    assert not problems, "\n".join([*problems, "scenario:", describe(scenario)])
    return stored


# --- Random releases -----------------------------------------------------------------------

# Ages at the edges of the age groups.
AGES: Final = (13, 17, 18, 24, 25, 34, 35, 44, 45, 54, 55, 64, 65, 90)
EARLY_DAYS: Final = tuple(
    date(year, month, day) for year in (2022, 2023) for month, day in ((1, 1), (6, 15), (12, 31))
)
# Mostly in 2023, so that a year holds enough follow-ups for EQ2 and EQ3.
FOLLOWUP_DAYS: Final = (
    date(2023, 1, 1),
    date(2023, 6, 15),
    date(2023, 9, 1),
    date(2023, 12, 31),
    date(2024, 1, 1),
)
USE_DAYS: Final = (None, 0, 5, 10, 30)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    providers = draw(st.lists(st.sampled_from(PROVIDERS), min_size=3, max_size=8, unique=True))
    # A few values per example, so that strata hold several units at several providers.
    ages = draw(st.lists(st.sampled_from(AGES), min_size=1, max_size=3, unique=True))
    sexes = draw(st.lists(st.sampled_from((1, 2, 9)), min_size=1, max_size=2, unique=True))
    types = draw(st.lists(st.integers(1, 5), min_size=1, max_size=2, unique=True))
    # Episodes e1, e2, ... at each provider: the same episode_id at two providers is two episodes.
    keys = [
        (provider, number)
        for provider in providers
        for number in range(1, draw(st.integers(1, 10)) + 1)
    ]
    episodes = []
    for provider, number in keys:
        # Mostly one intake; sometimes none (no stratum) or a re-sent one with other values.
        count = draw(st.sampled_from((0, 1, 1, 1, 1, 2)))
        intakes = tuple(
            Intake(
                day,
                draw(st.sampled_from(ages)),
                draw(st.sampled_from(sexes)),
                draw(st.sampled_from(types)),
            )
            for day in draw(
                st.lists(st.sampled_from(EARLY_DAYS), min_size=count, max_size=count, unique=True)
            )
        )
        measurements = tuple(
            Measurement(day, draw(st.sampled_from((None, 5, 10, 10, 30, 30))))
            for day in draw(st.lists(st.sampled_from(EARLY_DAYS), max_size=2, unique=True))
        )
        followups = tuple(
            FollowUp(
                draw(st.sampled_from(FOLLOWUP_DAYS)),
                draw(st.sampled_from((1, 1, 1, 1, 2))),
                draw(st.sampled_from(USE_DAYS)),
                draw(st.sampled_from((None, 1, 2, 2, 3, 4))),
            )
            for _ in range(draw(st.sampled_from((0, 1, 1, 1, 2))))
        )
        discharges = tuple(draw(st.lists(st.sampled_from((1, 2)), max_size=1)))
        unit = draw(st.sampled_from(("U1", "U2")))
        episodes.append(
            Episode(provider, f"e{number}", intakes, measurements, followups, discharges, unit)
        )
    npr = draw(
        st.lists(
            st.tuples(
                st.sampled_from(providers), st.sampled_from((2022, 2023, 2024)), st.integers(0, 8)
            ),
            max_size=3,
        )
    )
    return Scenario(
        episodes=tuple(episodes),
        npr=tuple(npr),
        min_denominator=draw(st.sampled_from((1, 1, 2, 5))),
        hidden=frozenset(draw(st.lists(st.sampled_from(providers), max_size=1))),
    )


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(scenarios())
def test_stored_variation_agrees_with_the_reference(scenario: Scenario) -> None:
    check(scenario)


# --- Hand-worked examples ------------------------------------------------------------------


def followed_up(
    provider: str,
    episode_id: str,
    stable: bool,
    *,
    stratum: tuple[int, int, int] = (40, 1, 1),
    basis: bool = True,
    status: int = 1,
) -> Episode:
    """An episode with (or without) an intake on 2022-03-01 (age, sex, treatment type) and one
    follow-up on 2023-09-01."""
    intakes = (Intake(date(2022, 3, 1), *stratum),) if basis else ()
    followup = FollowUp(date(2023, 9, 1), status=status, housing=1 if stable else 4)
    return Episode(provider, episode_id, intakes, followups=(followup,))


def six_providers() -> list[Episode]:
    """The first example's 20 follow-ups in 2023 (intakes in 2022): per provider and stratum
    (A men outpatient, B women outpatient, C men long-term inpatient, all aged 40) stable/total."""
    blocks = [
        (BERGEN, "a", 1, 2, 1, 1),
        (BERGEN, "b", 0, 2, 2, 1),
        (STAVANGER, "a", 2, 2, 1, 1),
        (VESTLY, "b", 1, 2, 2, 1),
        (VESTLY, "c", 2, 2, 1, 3),
        (OUS, "a", 1, 2, 1, 1),
        (OUS, "c", 1, 2, 1, 3),
        (FORDE, "b", 1, 2, 2, 1),
        (FJELLRO, "a", 0, 2, 1, 1),
        (FJELLRO, "c", 1, 2, 1, 3),
    ]
    return [
        followed_up(provider, f"{prefix}{i}", i < stable, stratum=(40, sex, kind))
        for provider, prefix, stable, total, sex, kind in blocks
        for i in range(total)
    ]


def only(stored: list[dict[str, Any]], indicator: str, year: int) -> dict[str, Any]:
    [entry] = [e for e in stored if (e["indicator_id"], e["year"]) == (indicator, year)]
    return entry


def test_six_providers_strata_by_sex_and_treatment_type() -> None:
    """Stable housing in 2023, all aged 40; strata A (men, outpatient), B (women, outpatient),
    C (men, long-term inpatient). Units (stable/total) per provider:
      Bergen A 1/2, B 0/2; Stavanger A 2/2; Vestly B 1/2, C 2/2; OUS A 1/2, C 1/2;
      Førde B 1/2; Fjellro A 0/2, C 1/2.
    r_A = 4/8 = 1/2, r_B = 2/6 = 1/3, r_C = 4/6 = 2/3; national crude 10/20 = 1/2.
    E: Bergen 1 + 2/3 = 5/3, Stavanger 1, Vestly 2/3 + 4/3 = 2, OUS 1 + 4/3 = 7/3, Førde 2/3,
    Fjellro 7/3; O: 1, 2, 3, 2, 1, 1. Standardised rates O/E · 1/2: 3/10, 1, 3/4, 3/7, 3/4, 3/14.
    Sorted 3/14, 3/10, 3/7 | 3/4, 3/4, 1: EQ1 = 14/3, EQ2 = 5/2, EQ3 = 7/4 (crude rates 1/4 ...
    1 would give EQ1 4; standardising by age alone merges A, B, C, by sex alone A and C).
    Mean 241/420; in 420ths the deviations are −151, −115, −61, 74, 74, 179, squares summing to
    82740: CV = √(82740/5)/420 / (241/420) = √16548/241.
    SCV = 100/6 · [Σ (O/E − 1)² − Σ 1/E]
    = 100/6 · [(4/25 + 1 + 1/4 + 1/49 + 1/4 + 16/49) − (3/5 + 1 + 1/2 + 3/7 + 3/2 + 3/7)]
    = 100/6 · (4917/2450 − 156/35) = −6003/147."""
    episodes = six_providers()
    scenario = Scenario(tuple(episodes))
    rates = [Fraction(n, d) for n, d in ((3, 14), (3, 10), (3, 7), (3, 4), (3, 4), (1, 1))]
    mean = Fraction(241, 420)
    assert sum(rates, Fraction(0)) / 6 == mean
    assert sum((r - mean) ** 2 for r in rates) == Fraction(82740, 420**2)
    cv = math.sqrt(16548) / 241
    hand = {"eq1": 14 / 3, "eq2": 5 / 2, "eq3": 7 / 4, "cv": cv, "scv": -6003 / 147}
    [wanted] = reference(scenario, set())
    assert wanted["providers"] == 6
    for name, value in hand.items():
        assert wanted[name] == pytest.approx(value, rel=1e-12), name
    entry = only(check(scenario), "stable_housing", 2023)
    assert entry["providers"] == 6
    for name, value in hand.items():
        assert entry[name] == pytest.approx(value, rel=1e-9), name


def test_who_takes_part_and_who_sets_the_reference() -> None:
    """Stable housing in 2023; strata Y (17: 13-17, men, outpatient), Z (18: 18-24, men,
    outpatient), W (60, women, LAR):
      Bergen Y 2/2, Z 0/1, and a stable follow-up of an episode without an intake row (published
      3/4; no stratum: out of the standardisation); Stavanger Y 0/1, Z 2/2 and a follow-up not
      reached (out of the population); Vestly W 0/3; OUS Y 1/1, Z 0/1, suppressed in the results
      (hidden by hand: its rate leaves the figures, its units still set the stratum rates).
    r_Y = 3/4, r_Z = 2/4, r_W = 0; national crude over the 11 units of known stratum 5/11.
    Bergen O = 2, E = 2 · 3/4 + 1/2 = 2, rate 5/11; Stavanger O = 2, E = 3/4 + 1 = 7/4, rate
    8/7 · 5/11 = 40/77; Vestly E = 0: shown, but no standardised rate, so it takes no part.
    Two providers: EQ1 = 8/7, no EQ2/EQ3; CV = (5/77)/√2 / (75/154) = √2/15; SCV =
    100 · [(0 + 1/49)/2 − (1/2 + 4/7)/2] = −2575/49. (Leaving out OUS's units would make
    r_Y = r_Z = 2/3 and both ratios 1, EQ1 1; putting 17 in 18-24 would merge Y and Z.)"""
    y, z, w = (17, 1, 1), (18, 1, 1), (60, 2, 5)
    episodes = [
        followed_up(BERGEN, "y1", True, stratum=y),
        followed_up(BERGEN, "y2", True, stratum=y),
        followed_up(BERGEN, "z1", False, stratum=z),
        followed_up(BERGEN, "n1", True, basis=False),
        followed_up(STAVANGER, "y1", False, stratum=y),
        followed_up(STAVANGER, "z1", True, stratum=z),
        followed_up(STAVANGER, "z2", True, stratum=z),
        followed_up(STAVANGER, "x1", True, status=2, stratum=z),
        followed_up(VESTLY, "w1", False, stratum=w),
        followed_up(VESTLY, "w2", False, stratum=w),
        followed_up(VESTLY, "w3", False, stratum=w),
        followed_up(OUS, "y1", True, stratum=y),
        followed_up(OUS, "z1", False, stratum=z),
    ]
    scenario = Scenario(tuple(episodes), hidden=frozenset({OUS}))
    hand = {
        "providers": 2,
        "eq1": 8 / 7,
        "eq2": None,
        "eq3": None,
        "cv": math.sqrt(2) / 15,
        "scv": -2575 / 49,
    }
    rows = provider_results(scenario)
    assert rows[("stable_housing", 2023, BERGEN)] == (3, 4, None)
    assert rows[("stable_housing", 2023, VESTLY)] == (0, 3, None)
    [wanted] = reference(scenario, set())
    entry = only(check(scenario), "stable_housing", 2023)
    for figures in (wanted, entry):
        for name, value in hand.items():
            if value is None:
                assert figures[name] is None, name
            else:
                assert figures[name] == pytest.approx(value, rel=1e-9), name


def test_low_coverage_and_hidden_providers_leave_the_figures() -> None:
    """The six providers of the first example (all intakes in 2022): an NPR count of 7 episodes
    for Stavanger in 2023 (coverage 0 %: its 2023 results suppressed as low coverage), 5 for
    Vestly with 3 intakes in 2023 (coverage 60 %, not under: shown), and Fjellro hidden by hand.
    Four providers take part: Bergen 3/10, Vestly 3/4, OUS 3/7, Førde 3/4 (the reference
    population still holds all 20 follow-ups): EQ1 = (3/4)/(3/10) = 5/2, EQ2 = (3/4)/(3/7) =
    7/4, no EQ3."""
    episodes = six_providers()
    # Vestly: 3 intakes in 2023 (no follow-up) against NPR's 5, coverage exactly 60 %: shown.
    episodes += [Episode(VESTLY, f"n{i}", (Intake(date(2023, 5, 1), 40, 1, 1),)) for i in range(3)]
    scenario = Scenario(
        tuple(episodes), npr=((STAVANGER, 2023, 7), (VESTLY, 2023, 5)), hidden=frozenset({FJELLRO})
    )
    assert provider_results(scenario)[("stable_housing", 2023, STAVANGER)] == (
        2,
        2,
        "low_coverage",
    )
    assert provider_results(scenario)[("stable_housing", 2023, VESTLY)] == (3, 4, None)
    entry = only(check(scenario), "stable_housing", 2023)
    assert entry["providers"] == 4
    assert entry["eq1"] == pytest.approx(5 / 2, rel=1e-9)
    assert entry["eq2"] == pytest.approx(7 / 4, rel=1e-9)
    assert entry["eq3"] is None
