"""The engine's raw aggregates against a plain-Python reference, on small random releases.

`reference` recomputes `indicators.engine.aggregates` (per indicator: year, context, level,
orgnr, unit_code, numerator, denominator, measure) from the rows a `TinyRelease` writes, in the
plainest way: loops, dictionaries and sets, one indicator at a time, every level counted
directly (no cells rolled up, no codes, no hashes, no years apart). It is written from
DOMAIN.md ("Indicators" and after), the definitions (`indicators/definitions/*.toml`, each
indicator's population and numerator hand-coded here, not read from the catalogue), the
vocabulary's semantics and the docstrings of `indicators.episodes` and `indicators.levels`.
The hypothesis test compares every row of both on random releases (episodes over three to
five providers, shared patients, several basis rows and measurements per episode tying on
their dates, records of other patients, episodes without a basis row, homes outside the
hierarchy, years turning, NPR counts); a second one runs indicators outside the catalogue
(`EXTRA`): two patient indicators through the engine's general distinct-patient path, which
the catalogue's study indicator (on the record path) does not take, and a median and a mean
of waiting days over every intake (one without a referral date is no observation). Three
plain tests pin the nastiest structures found, each with a hand count of the reference.

Rules the reference encodes:
- An episode is (provider_orgnr, episode_id): the same episode_id at two providers is two
  episodes. Its first basis row is the smallest (intake_date, record_id), its first
  measurement the smallest (measure_date, record_id), record_ids compared as strings ("r10"
  before "r2").
- The episode's intake columns (home_hf_orgnr, age, sex, treatment_type) are those of its first
  basis row, null without one; measurement, discharge, follow-up and study rows take them from
  their episode.
- Populations: intake indicators (screening, research_consent, waiting_days, coverage) the
  episode's first basis row; plan, crisis_plan and benefit the episode's first measurement,
  then status active; mutual_end and followup_arranged every discharge row; reduced_use and
  stable_housing every follow-up row; study every record of the four forms.
- A row's year is the calendar year of its table's date (intake, the first measurement's date,
  discharge, follow-up; a study record its own form's date).
- A condition on a missing value is false (not-null checks aside): a missing benefit or
  housing is not in the numerator, an episode whose first measurement has no use_days_30 has
  no baseline and is not in reduced_use's population.
- waiting_days = intake_date - referral_date in days; intakes without a referral date are left
  out. baseline_use_days_30 = the first measurement's use_days_30; use_days_change = follow-up
  use_days_30 - baseline (reduced: below 0).
- Levels: caregiver unit (provider_orgnr, unit_code of the row), provider, hf (the provider
  itself when it is an HF of the hierarchy, level "hf", whatever its ownership), rhf (the
  provider's RHF; none for a provider outside the hierarchy), nation "1"; resident hf (the
  episode's home HF when it is an HF of the hierarchy), its RHF, nation (only rows whose home
  HF is an HF of the hierarchy).
- Study (unit patient): per year and level, the distinct patient_keys of the records there
  (each record's own patient_key, whatever its episode's basis row says); a patient is in the
  numerator of every result they count in when any of their records that year, of any form
  and at any provider, has a clinical_study_id.

Decisions taken from the engine's docstrings and tests rather than from DOMAIN.md:
- Which rows exist: a proportion or study row exists only where its denominator is above 0 (a
  level with population rows none of which pass the population's conditions has no row); a
  median row only where some population row has a waiting time.
- Proportions have measure null; medians numerator null, denominator the number of values and
  measure the exact median, the mean of the two middle values on an even count
  (`roll_up_medians`, and tests/indicators/test_engine.py's waiting-time tests).
- A re-sent intake (a second basis row of an episode) is not a second episode: the intake
  indicators count the episode once, on its first basis row (test_engine.py).
- Coverage: caregiver context only, no unit level; per NPR count's (year, provider), the
  numerator the provider's registered episodes (first basis rows) of that intake year and the
  denominator the NPR episodes (several NPR rows of one provider and year summed); the hf, rhf
  and nation rows sum over the providers that have an NPR count (`roll_up_coverage`), so a
  provider without one counts nowhere, and an NPR count of 0 episodes gives a row with
  denominator 0 (the only rows with denominator 0).
- Study rows exist for the years with records (no separate rule needed: denominator above 0).
- A patient indicator with a population condition (`EXTRA`; none in the catalogue): the
  patient counts where their population rows are, and is in the numerator when one of their
  population rows that year meets the numerator (rows outside the population, e.g. records of
  an episode without a basis row under `age ge 18`, enrol no one): the vocabulary's "a
  numerator: conditions on those rows", as test_engine.py's general-path study test counts.
"""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indicators.catalogue import IndicatorDefinition, load_catalogue
from indicators.engine import aggregates
from indicators.vocabulary import Condition
from schemas.organisations import Hierarchy
from tests.indicators.conftest import BERGEN, OUS, STAVANGER, VESTLY, TinyRelease

HIERARCHY: Final = Hierarchy.default()
NATION: Final = "1"
UNKNOWN: Final = "999999999"  # a valid-looking orgnr outside the hierarchy
HARALDSPLASS: Final = "984027737"  # an HF of Helse Vest with private ownership
FJELLRO: Final = "991500006"  # a private provider of Helse Sør-Øst
FORDE: Final = "983974732"  # HELSE FØRDE HF, Helse Vest

# The date that places a record of a form in a year.
YEAR_DATES: Final = {
    "basis": "intake_date",
    "measurement": "measure_date",
    "discharge": "discharge_date",
    "followup": "followup_date",
}
# (context, level, orgnr, unit_code)
Level = tuple[str, str, str, str | None]
# (year, context, level, orgnr, unit_code)
Key = tuple[int, str, str, str, str | None]
# (numerator, denominator, measure)
Counts = tuple[int | None, int, float | None]
Row = dict[str, Any]
# A TinyRelease call: method name, positional and keyword arguments.
Call = tuple[str, tuple[Any, ...], dict[str, Any]]


# --- The reference -------------------------------------------------------------------------


def caregiver_levels(provider: str, unit: str | None) -> list[Level]:
    """The caregiver levels a row of `provider` counts in (no unit level when unit is None)."""
    levels: list[Level] = []
    if unit is not None:
        levels.append(("caregiver", "unit", provider, unit))
    levels.append(("caregiver", "provider", provider, None))
    organisation = HIERARCHY.by_orgnr.get(provider)
    if organisation is not None and organisation.is_provider:
        if organisation.level == "hf":
            levels.append(("caregiver", "hf", provider, None))
        rhf = HIERARCHY.rhf_of(provider)
        if rhf.level == "rhf":
            levels.append(("caregiver", "rhf", rhf.orgnr, None))
    levels.append(("caregiver", "nation", NATION, None))
    return levels


def resident_levels(home: str | None) -> list[Level]:
    """The resident levels of a row whose episode lives in `home` (none unless an HF)."""
    organisation = HIERARCHY.by_orgnr.get(home) if home is not None else None
    if organisation is None or organisation.level != "hf":
        return []
    assert home is not None
    levels: list[Level] = [("resident", "hf", home, None)]
    rhf = HIERARCHY.rhf_of(home)
    if rhf.level == "rhf":
        levels.append(("resident", "rhf", rhf.orgnr, None))
    levels.append(("resident", "nation", NATION, None))
    return levels


def levels_of(provider: str, unit: str, home: str | None) -> list[Level]:
    return caregiver_levels(provider, unit) + resident_levels(home)


def eq(value: Any, expected: Any) -> bool:
    return value is not None and value == expected


def ne(value: Any, other: Any) -> bool:
    return value is not None and value != other


def ge(value: Any, bound: int) -> bool:
    return value is not None and value >= bound


def one_of(value: Any, allowed: tuple[Any, ...]) -> bool:
    return value is not None and value in allowed


def first_rows(rows: list[Row], date_column: str) -> dict[tuple[str, str], Row]:
    """Per episode (provider_orgnr, episode_id): its row with the smallest (date, record_id)."""
    first: dict[tuple[str, str], Row] = {}
    for row in rows:
        episode = (row["provider_orgnr"], row["episode_id"])
        best = first.get(episode)
        if best is None or (row[date_column], row["record_id"]) < (
            best[date_column],
            best["record_id"],
        ):
            first[episode] = row
    return first


def proportion(
    rows: list[tuple[Row, bool, bool]], year_column: str, home: Callable[[Row], str | None]
) -> dict[Key, Counts]:
    """Rows (row, in population, in numerator) counted at every level of the row."""
    numerator: dict[Key, int] = defaultdict(int)
    denominator: dict[Key, int] = defaultdict(int)
    for row, population, hit in rows:
        if not population:
            continue
        year = row[year_column].year
        for level in levels_of(row["provider_orgnr"], row["unit_code"], home(row)):
            key = (year, *level)
            denominator[key] += 1
            numerator[key] += int(hit)
    return {key: (numerator[key], n, None) for key, n in denominator.items()}


def median(values: list[int]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def reference(rows: dict[str, list[Row]]) -> dict[str, dict[Key, Counts]]:
    """Per indicator id, per key: (numerator, denominator, measure), by DOMAIN.md's rules."""
    basis, measurement = rows.get("basis", []), rows.get("measurement", [])
    discharge, followup = rows.get("discharge", []), rows.get("followup", [])
    first_basis = first_rows(basis, "intake_date")
    first_measurement = first_rows(measurement, "measure_date")

    def intake(row: Row, column: str) -> Any:
        """An intake column of the row's episode (its first basis row's), None without one."""
        first = first_basis.get((row["provider_orgnr"], row["episode_id"]))
        return None if first is None else first[column]

    def home(row: Row) -> str | None:
        found: str | None = intake(row, "home_hf_orgnr")
        return found

    def baseline(row: Row) -> int | None:
        first = first_measurement.get((row["provider_orgnr"], row["episode_id"]))
        return None if first is None else first["use_days_30"]

    intakes = list(first_basis.values())
    early = list(first_measurement.values())
    result: dict[str, dict[Key, Counts]] = {}

    # Intake indicators: the episode's first basis row, year of intake.
    result["screening"] = proportion(
        [(r, True, r["audit"] is not None or r["dudit"] is not None) for r in intakes],
        "intake_date",
        home,
    )
    result["research_consent"] = proportion(
        [(r, True, eq(r["research_consent"], 1)) for r in intakes], "intake_date", home
    )
    # Early in the course: the episode's first measurement point, if active.
    result["plan"] = proportion(
        [(r, eq(r["status"], 1), eq(r["treatment_plan"], 2)) for r in early], "measure_date", home
    )
    result["crisis_plan"] = proportion(
        [(r, eq(r["status"], 1), eq(r["crisis_plan"], 2)) for r in early], "measure_date", home
    )
    result["benefit"] = proportion(
        [(r, eq(r["status"], 1), one_of(r["benefit"], (4, 5))) for r in early],
        "measure_date",
        home,
    )
    # Discharges: every discharge row.
    result["mutual_end"] = proportion(
        [(r, one_of(r["end_reason"], (1, 2)), eq(r["end_reason"], 1)) for r in discharge],
        "discharge_date",
        home,
    )
    result["followup_arranged"] = proportion(
        [(r, ne(r["end_reason"], 4), eq(r["followup_arranged"], 1)) for r in discharge],
        "discharge_date",
        home,
    )
    # Follow-ups: every follow-up row; the baseline is the first measurement's use_days_30.
    reduced = []
    for r in followup:
        before = baseline(r)
        population = (
            eq(r["followup_status"], 1) and r["use_days_30"] is not None and before is not None
        )
        reduced.append((r, population, population and r["use_days_30"] - before < 0))
    result["reduced_use"] = proportion(reduced, "followup_date", home)
    result["stable_housing"] = proportion(
        [(r, eq(r["followup_status"], 1), one_of(r["housing"], (1, 2))) for r in followup],
        "followup_date",
        home,
    )
    # Waiting time: the median over the first basis rows with a referral date.
    waits: dict[Key, list[int]] = defaultdict(list)
    for r in intakes:
        if r["referral_date"] is None:
            continue
        days = (r["intake_date"] - r["referral_date"]).days
        for level in levels_of(r["provider_orgnr"], r["unit_code"], home(r)):
            waits[(r["intake_date"].year, *level)].append(days)
    result["waiting_days"] = {key: (None, len(v), median(v)) for key, v in waits.items()}
    result["waiting_median"] = result["waiting_days"]  # `EXTRA`
    result["waiting_mean"] = {key: (0, len(v), sum(v) / len(v)) for key, v in waits.items()}
    # Coverage: registered episodes / NPR episodes, per provider with an NPR count and above.
    registered: dict[tuple[int, str], int] = defaultdict(int)
    for r in intakes:
        registered[(r["intake_date"].year, r["provider_orgnr"])] += 1
    npr: dict[tuple[int, str], int] = defaultdict(int)
    for r in rows.get("npr_counts", []):
        npr[(r["year"], r["provider_orgnr"])] += r["episodes"]
    covered: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    for (year, provider), episodes in npr.items():
        for level in caregiver_levels(provider, None):
            covered[(year, *level)][0] += registered.get((year, provider), 0)
            covered[(year, *level)][1] += episodes
    result["coverage"] = {key: (c[0], c[1], None) for key, c in covered.items()}
    # Study: every record of the four forms, each in its own form's year.
    records = [
        (r[column].year, r) for form, column in YEAR_DATES.items() for r in rows.get(form, [])
    ]
    result["study"] = patients(
        [(year, r, r.get("clinical_study_id") is not None) for year, r in records], home
    )
    # Indicators outside the catalogue (`EXTRA`): two patient indicators for the engine's
    # general path.
    result["study_adults"] = patients(
        [
            (year, r, r.get("clinical_study_id") is not None)
            for year, r in records
            if ge(intake(r, "age"), 18)
        ],
        home,
    )
    result["consent_patients"] = patients(
        [(r["intake_date"].year, r, eq(r["research_consent"], 1)) for r in intakes], home
    )
    return result


def patients(
    rows: list[tuple[int, Row, bool]], home: Callable[[Row], str | None]
) -> dict[Key, Counts]:
    """Distinct patient_keys per year and level of population rows (year, row, meets the
    numerator); a patient is in the numerator of every result they count in when any of their
    population rows that year meets it."""
    found: dict[Key, set[str]] = defaultdict(set)
    enrolled: set[tuple[int, str]] = set()
    for year, r, hit in rows:
        if hit:
            enrolled.add((year, r["patient_key"]))
        for level in levels_of(r["provider_orgnr"], r["unit_code"], home(r)):
            found[(year, *level)].add(r["patient_key"])
    return {
        key: (sum((key[0], p) in enrolled for p in keys), len(keys), None)
        for key, keys in found.items()
    }


# --- The engine's side and the comparison --------------------------------------------------


def engine_counts(table: pa.Table) -> dict[Key, Counts]:
    counts: dict[Key, Counts] = {}
    for r in table.to_pylist():
        key: Key = (r["year"], r["context"], r["level"], r["orgnr"], r["unit_code"])
        assert key not in counts, f"duplicate key {key}"
        counts[key] = (r["numerator"], r["denominator"], r["measure"])
    return counts


def same(engine: Counts, expected: Counts) -> bool:
    if engine[:2] != expected[:2]:
        return False
    measure, wanted = engine[2], expected[2]
    if measure is None or wanted is None:
        return measure is None and wanted is None
    return math.isclose(measure, wanted, rel_tol=1e-12, abs_tol=1e-12)


def render(calls: list[Call]) -> str:
    """The calls as TinyRelease code, to reproduce a failing release by hand."""
    lines = []
    for name, args, kwargs in calls:
        arguments = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
        lines.append(f"release.{name}({', '.join(arguments)})")
    return "\n".join(lines)


def build(root: Path, calls: list[Call]) -> TinyRelease:
    release = TinyRelease(root)
    for name, args, kwargs in calls:
        method: Callable[..., TinyRelease] = getattr(release, name)
        method(*args, **kwargs)
    return release


CATALOGUE: Final = load_catalogue()


CATALOGUE_BY_ID: Final = {d.id: d for d in CATALOGUE}
# Patient indicators on the engine's general path (the catalogue's study takes the record
# path): study of episodes whose patient was 18 or older at intake (a condition on an intake
# column), and patients consenting to research contact at an intake (population table basis);
# and a median and a mean whose population may lack the measure.
EXTRA: Final = [
    CATALOGUE_BY_ID["study"].model_copy(
        update={
            "id": "study_adults",
            "population": CATALOGUE_BY_ID["study"].population.model_copy(
                update={"where": [Condition(column="age", op="ge", value=18)]}
            ),
        }
    ),
    CATALOGUE_BY_ID["research_consent"].model_copy(
        update={"id": "consent_patients", "unit": "patient"}
    ),
    # The waiting time's median and mean without its not_null condition: an intake without a
    # referral date is still no observation.
    *(
        CATALOGUE_BY_ID["waiting_days"].model_copy(
            update={
                "id": f"waiting_{kind}",
                "type": kind,
                "population": CATALOGUE_BY_ID["waiting_days"].population.model_copy(
                    update={"where": []}
                ),
            }
        )
        for kind in ("median", "mean")
    ),
]


def check(
    calls: list[Call], catalogue: list[IndicatorDefinition] | None = None
) -> dict[str, dict[Key, Counts]]:
    """Build the release, run the engine (DuckDB) on the catalogue (default the packaged one)
    and the reference, compare every row; the reference's counts (for a hand count)."""
    definitions = CATALOGUE if catalogue is None else catalogue
    with tempfile.TemporaryDirectory(prefix="kvarus-reference-") as directory:
        release = build(Path(directory), calls)
        computed = aggregates(release.manifest(), hierarchy=HIERARCHY, catalogue=definitions)
        expected = reference(release.rows)
    ids = {d.id for d in definitions}
    assert set(computed) == ids
    assert ids <= set(expected), f"no reference for {sorted(ids - set(expected))}"
    problems = []
    for indicator in sorted(ids):
        got, want = engine_counts(computed[indicator]), expected[indicator]
        for key in sorted(set(got) | set(want), key=repr):
            engine, wanted = got.get(key), want.get(key)
            if engine is None or wanted is None or not same(engine, wanted):
                problems.append(f"{indicator} {key}: engine {engine}, reference {wanted}")
    assert not problems, "\n".join([*problems, "release:", render(calls)])
    return expected


# --- Random releases -----------------------------------------------------------------------

PATIENTS: Final = ("A", "B", "C", "D")
EPISODE_IDS: Final = ("e1", "e2", "e3", "e4", "e5", "e6")
HOMES: Final = (BERGEN, STAVANGER, OUS, FORDE, HARALDSPLASS, UNKNOWN, None)
# Days of the year, near New Year and not, so that dates tie and straddle years.
DAYS: Final = ((1, 1), (1, 2), (3, 1), (6, 15), (12, 30), (12, 31))


@st.composite
def releases(draw: st.DrawFn) -> list[Call]:
    """A handful of episodes over 3-5 providers, as TinyRelease calls (NPR counts last)."""
    extra = draw(
        st.lists(st.sampled_from((OUS, HARALDSPLASS, FJELLRO, UNKNOWN)), unique=True, max_size=2)
    )
    providers = [BERGEN, STAVANGER, VESTLY, *extra]
    units = draw(st.lists(st.sampled_from(("U1", "U2", "U3")), min_size=1, max_size=3, unique=True))
    first_year = draw(st.sampled_from((2021, 2022)))
    span = draw(st.integers(2, 3))

    def day() -> date:
        month, dom = draw(st.sampled_from(DAYS))
        return date(first_year + draw(st.integers(0, span - 1)), month, dom)

    def iso(value: date) -> str:
        return value.isoformat()

    episodes = draw(
        st.lists(
            st.tuples(st.sampled_from(providers), st.sampled_from(EPISODE_IDS)),
            min_size=1,
            max_size=12,
            unique=True,
        )
    )
    calls: list[Call] = []
    for provider, episode in episodes:
        patient = draw(st.sampled_from(PATIENTS))

        def who(patient: str = patient) -> str:
            # Mostly the episode's patient, sometimes another one (a record's own patient_key).
            return draw(st.sampled_from((patient, patient, patient, *PATIENTS)))

        home = draw(st.sampled_from(HOMES))
        # The episode's own date: most of its records fall on it, so that they tie.
        usual = day()

        def when(usual: date = usual) -> date:
            return usual if draw(st.booleans()) else day()

        for _ in range(draw(st.sampled_from((0, 1, 1, 1, 2, 3)))):
            intake = when()
            wait = draw(st.sampled_from((None, 0, 1, 2, 3, 10, 400)))
            calls.append(
                (
                    "basis",
                    (episode, provider),
                    {
                        "intake": iso(intake),
                        "referral": None if wait is None else iso(intake - timedelta(days=wait)),
                        "patient": who(),
                        "unit": draw(st.sampled_from(units)),
                        "home_hf_orgnr": draw(st.sampled_from((home, home, *HOMES))),
                        "age": draw(st.sampled_from((40, 40, 15, 17, 18))),
                        "audit": draw(st.sampled_from((None, None, 0, 12))),
                        "dudit": draw(st.sampled_from((None, None, 5))),
                        "research_consent": draw(st.sampled_from((0, 1))),
                        "clinical_study_id": draw(st.sampled_from((None, None, None, "S1"))),
                    },
                )
            )
        for _ in range(draw(st.sampled_from((0, 1, 1, 2, 3)))):
            calls.append(
                (
                    "measurement",
                    (episode, provider),
                    {
                        "on": iso(when()),
                        "patient": who(),
                        "unit": draw(st.sampled_from(units)),
                        "status": draw(st.sampled_from((1, 1, 1, 2, 3, 4))),
                        "treatment_plan": draw(st.sampled_from((1, 2, 2, 3))),
                        "crisis_plan": draw(st.sampled_from((1, 2, 3))),
                        "benefit": draw(st.sampled_from((None, 1, 3, 4, 5))),
                        "use_days_30": draw(st.sampled_from((None, 0, 5, 10, 30))),
                        "clinical_study_id": draw(st.sampled_from((None, None, None, "S2"))),
                    },
                )
            )
        for _ in range(draw(st.sampled_from((0, 0, 1, 2)))):
            calls.append(
                (
                    "discharge",
                    (episode, provider),
                    {
                        "on": iso(when()),
                        "patient": who(),
                        "unit": draw(st.sampled_from(units)),
                        "end_reason": draw(st.sampled_from((1, 2, 3, 4, 9))),
                        "followup_arranged": draw(st.sampled_from((0, 1))),
                    },
                )
            )
        for _ in range(draw(st.sampled_from((0, 0, 1, 2)))):
            calls.append(
                (
                    "followup",
                    (episode, provider),
                    {
                        "on": iso(when()),
                        "patient": who(),
                        "unit": draw(st.sampled_from(units)),
                        "followup_status": draw(st.sampled_from((1, 1, 2, 3))),
                        "use_days_30": draw(st.sampled_from((None, 0, 5, 10, 30))),
                        "housing": draw(st.sampled_from((None, 1, 2, 3, 4, 5, 9))),
                    },
                )
            )
    # The order of the calls numbers the record_ids ("r1", "r2", ... "r10": compared as text).
    calls = draw(st.permutations(calls))
    years = range(first_year, first_year + span)
    npr = draw(
        st.lists(
            st.tuples(st.sampled_from(providers), st.sampled_from(years), st.integers(0, 6)),
            max_size=6,
        )
    )
    calls += [("npr", (provider, year, episodes), {}) for provider, year, episodes in npr]
    return calls


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(releases())
def test_engine_agrees_with_the_reference(calls: list[Call]) -> None:
    check(calls)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(releases())
def test_engine_general_patient_path_agrees_with_the_reference(calls: list[Call]) -> None:
    """Fewer examples: each patient indicator costs the engine a pass per year."""
    check(calls, EXTRA)


def test_first_rows_tie_on_date_and_compare_record_ids_as_text() -> None:
    """Ties on the date are broken by record_id as text: "r10" comes before "r9" and "r2".
    e1's first basis row is r10 (home Stavanger, unit U2), not r2; its first measurement r11
    (dropped out: not in plan's population), not r9; the follow-up's baseline is r11's 30."""
    calls: list[Call] = [
        ("basis", ("x1", OUS), {"intake": "2022-01-01", "patient": "A"}),
        (
            "basis",
            ("e1", BERGEN),
            {"intake": "2022-12-31", "patient": "B", "referral": "2022-12-01"},
        ),
    ]
    calls += [("discharge", (f"x{i}", OUS), {"on": "2023-01-01"}) for i in range(2, 8)]
    calls += [
        ("measurement", ("e1", BERGEN), {"on": "2023-01-01", "status": 1, "use_days_30": 0}),
        (
            "basis",
            ("e1", BERGEN),
            {
                "intake": "2022-12-31",
                "patient": "B",
                "unit": "U2",
                "home_hf_orgnr": STAVANGER,
                "referral": "2022-12-30",
                "audit": 3,
            },
        ),
        (
            "measurement",
            ("e1", BERGEN),
            {"on": "2023-01-01", "status": 3, "use_days_30": 30, "clinical_study_id": "S1"},
        ),
        ("followup", ("e1", BERGEN), {"on": "2024-01-01", "use_days_30": 10, "housing": 2}),
    ]
    expected = check(calls)
    # e1 counts at its first basis row's unit U2 and home Stavanger, waiting 1 day, screened.
    assert expected["screening"][(2022, "caregiver", "unit", BERGEN, "U2")] == (1, 1, None)
    assert (2022, "caregiver", "unit", BERGEN, "U1") not in expected["screening"]
    assert expected["screening"][(2022, "resident", "hf", STAVANGER, None)] == (1, 1, None)
    assert expected["waiting_days"][(2022, "caregiver", "provider", BERGEN, None)][2] == 1.0
    # Its first measurement is dropped out: no plan result at Bergen; 10 < 30: reduced.
    assert (2023, "caregiver", "provider", BERGEN, None) not in expected["plan"]
    assert expected["reduced_use"][(2024, "caregiver", "provider", BERGEN, None)] == (1, 1, None)


def test_study_patients_in_several_cells_providers_and_homes() -> None:
    """A in four cells in 2023 (Bergen U1 at home in Bergen, Bergen U2 at home in Stavanger, a
    provider outside the hierarchy, Vestly without a basis row) and enrolled only through a
    measurement of B's episode at Stavanger; B in two cells, its study id in 2022 only; C in
    one cell with two episodes at the turn of the year."""
    calls: list[Call] = [
        ("basis", ("a1", BERGEN), {"intake": "2023-01-01", "patient": "A"}),
        (
            "basis",
            ("a2", BERGEN),
            {"intake": "2023-03-01", "patient": "A", "unit": "U2", "home_hf_orgnr": STAVANGER},
        ),
        ("basis", ("a3", UNKNOWN), {"intake": "2023-06-15", "patient": "A"}),
        ("discharge", ("a4", VESTLY), {"on": "2023-12-31", "patient": "A"}),
        ("basis", ("b1", STAVANGER), {"intake": "2022-12-31", "patient": "B"}),
        (
            "measurement",
            ("b1", STAVANGER),
            {"on": "2023-01-02", "patient": "A", "clinical_study_id": "S1"},
        ),
        ("measurement", ("b1", STAVANGER), {"on": "2023-06-15", "patient": "B"}),
        (
            "basis",
            ("b2", OUS),
            {"intake": "2022-03-01", "patient": "B", "clinical_study_id": "S2"},
        ),
        ("followup", ("b2", OUS), {"on": "2023-03-01", "patient": "B", "unit": "U3"}),
        ("basis", ("c1", VESTLY), {"intake": "2022-12-31", "patient": "C", "home_hf_orgnr": None}),
        ("basis", ("c2", VESTLY), {"intake": "2023-01-01", "patient": "C"}),
        ("basis", ("a1", STAVANGER), {"intake": "2023-01-01", "patient": "C"}),
    ]
    expected = check(calls)["study"]
    # 2023: A (enrolled through b1's measurement), B, C; only A enrolled. Caregiver Helse Vest:
    # A, B, C; the nation A, B, C; resident Stavanger: A (a2, and b1's measurement), B (b1's
    # measurement) and C (Stavanger's a1).
    assert expected[(2023, "caregiver", "nation", NATION, None)] == (1, 3, None)
    assert expected[(2023, "caregiver", "rhf", "983658725", None)] == (1, 3, None)
    assert expected[(2023, "caregiver", "provider", UNKNOWN, None)] == (1, 1, None)
    assert expected[(2023, "resident", "hf", STAVANGER, None)] == (1, 3, None)
    assert expected[(2022, "caregiver", "provider", OUS, None)] == (1, 1, None)


def test_coverage_with_summed_zero_and_unknown_npr_counts() -> None:
    """NPR counts: Bergen's two rows of 2022 summed, Stavanger 0 episodes (denominator 0), a
    provider outside the hierarchy, Vestly none (its episodes count nowhere), an NPR year with
    no registered episode; e1's re-sent intake counts once."""
    calls: list[Call] = [
        ("basis", ("e1", BERGEN), {"intake": "2022-05-01"}),
        ("basis", ("e1", BERGEN), {"intake": "2022-05-01", "unit": "U2"}),
        ("basis", ("e2", BERGEN), {"intake": "2022-12-31"}),
        ("basis", ("e1", STAVANGER), {"intake": "2023-01-01"}),
        ("basis", ("e1", UNKNOWN), {"intake": "2022-02-01", "home_hf_orgnr": UNKNOWN}),
        ("basis", ("e1", VESTLY), {"intake": "2022-02-01"}),
        ("npr", (BERGEN, 2022, 2), {}),
        ("npr", (BERGEN, 2022, 1), {}),
        ("npr", (STAVANGER, 2022, 0), {}),
        ("npr", (STAVANGER, 2023, 4), {}),
        ("npr", (UNKNOWN, 2022, 3), {}),
        ("npr", (OUS, 2021, 5), {}),
    ]
    expected = check(calls)["coverage"]
    assert expected[(2022, "caregiver", "provider", BERGEN, None)] == (2, 3, None)
    assert expected[(2022, "caregiver", "provider", STAVANGER, None)] == (0, 0, None)
    assert expected[(2022, "caregiver", "nation", NATION, None)] == (3, 6, None)
    assert expected[(2022, "caregiver", "rhf", "983658725", None)] == (2, 3, None)
    assert expected[(2021, "caregiver", "provider", OUS, None)] == (0, 5, None)
    assert (2022, "caregiver", "provider", VESTLY, None) not in expected
