"""The engine on DuckDB, indicator by indicator, on tiny releases counted by hand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from indicators import results
from indicators.catalogue import IndicatorDefinition, Target, load_catalogue
from indicators.engine import _connected, compute
from indicators.vocabulary import Condition
from schemas.organisations import Hierarchy
from tests.indicators.conftest import (
    BERGEN,
    HELSE_SOR_OST,
    HELSE_VEST,
    NATION,
    OUS,
    STAVANGER,
    VESTLY,
    TinyRelease,
)

Factory = Callable[[], TinyRelease]
CATALOGUE = {d.id: d for d in load_catalogue()}


def run(release: TinyRelease, *ids: str, min_denominator: int | None = 1) -> list[dict[str, Any]]:
    """Compute the named indicators (minimum denominator 1 unless told) and return rows."""
    catalogue = [
        CATALOGUE[i]
        if min_denominator is None
        else CATALOGUE[i].model_copy(update={"min_denominator": min_denominator})
        for i in ids
    ]
    table = compute(release.manifest(), hierarchy=Hierarchy.default(), catalogue=catalogue)
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def pick(
    rows: list[dict[str, Any]],
    indicator: str,
    year: int,
    level: str,
    orgnr: str,
    *,
    context: str = "caregiver",
    unit_code: str | None = None,
) -> dict[str, Any]:
    found = [
        r
        for r in rows
        if (r["indicator_id"], r["year"], r["context"], r["level"], r["orgnr"], r["unit_code"])
        == (indicator, year, context, level, orgnr, unit_code)
    ]
    assert len(found) == 1, (indicator, year, context, level, orgnr, unit_code, len(found))
    return found[0]


def counts(row: dict[str, Any]) -> tuple[int | None, int]:
    return row["numerator"], row["denominator"]


def early_course(release: TinyRelease) -> TinyRelease:
    """Measurement episodes for plan, crisis_plan and benefit (first measurement, status active).

    Bergen: e1 first 2022-02-01 active plan yes crisis yes benefit 5 (a later point says plan no);
            e2 first 2022-03-01 active plan no crisis yes benefit 3 (later plan yes: ignored);
            e3 first 2022-04-01 dropped out → not in the population (a later active point too);
            e4 first 2022-01-15 active plan yes crisis no benefit 4, lives in Stavanger's area;
            e5 first 2021-12-20 active plan yes → year 2021 (its 2022 point is not the first).
    Stavanger: e6 first 2022-05-01 active plan yes crisis unknown benefit missing.
    """
    for episode in ("e1", "e2", "e3", "e5"):
        release.basis(episode, intake="2021-12-01")
    release.basis("e4", intake="2021-12-01", home_hf_orgnr=STAVANGER)
    release.basis("e6", STAVANGER, intake="2022-01-01")
    m = release.measurement
    m("e1", on="2022-05-01", status=1, treatment_plan=1)
    m("e1", on="2022-02-01", status=1, treatment_plan=2, crisis_plan=2, benefit=5)
    m("e2", on="2022-03-01", status=1, treatment_plan=1, crisis_plan=2, benefit=3)
    m("e2", on="2022-06-01", status=1, treatment_plan=2)
    m("e3", on="2022-04-01", status=3, treatment_plan=2)
    m("e3", on="2022-07-01", status=1, treatment_plan=2)
    m("e4", on="2022-01-15", status=1, treatment_plan=2, crisis_plan=1, benefit=4)
    m("e5", on="2021-12-20", status=1, treatment_plan=2)
    m("e5", on="2022-03-01", status=1, treatment_plan=2)
    m("e6", STAVANGER, on="2022-05-01", status=1, treatment_plan=2, crisis_plan=3)
    return release


def test_plan_crisis_plan_and_benefit(tiny: Factory) -> None:
    rows = run(early_course(tiny()), "plan", "crisis_plan", "benefit")
    # Bergen 2022: population e1, e2, e4 (3). plan: e1, e4; crisis: e1, e2; benefit: e1 (5), e4 (4).
    assert counts(pick(rows, "plan", 2022, "provider", BERGEN)) == (2, 3)
    assert counts(pick(rows, "crisis_plan", 2022, "provider", BERGEN)) == (2, 3)
    assert counts(pick(rows, "benefit", 2022, "provider", BERGEN)) == (2, 3)
    # Stavanger 2022: e6 only: plan yes, crisis unknown (no), benefit missing (no).
    assert counts(pick(rows, "plan", 2022, "provider", STAVANGER)) == (1, 1)
    assert counts(pick(rows, "crisis_plan", 2022, "provider", STAVANGER)) == (0, 1)
    assert counts(pick(rows, "benefit", 2022, "provider", STAVANGER)) == (0, 1)
    # Nation and Helse Vest 2022: 4 episodes, plan 3, crisis 2, benefit 2.
    for level, orgnr in (("nation", NATION), ("rhf", HELSE_VEST)):
        assert counts(pick(rows, "plan", 2022, level, orgnr)) == (3, 4)
        assert counts(pick(rows, "crisis_plan", 2022, level, orgnr)) == (2, 4)
        assert counts(pick(rows, "benefit", 2022, level, orgnr)) == (2, 4)
    # Public HFs appear at level hf as themselves; the unit level carries the unit code.
    assert counts(pick(rows, "plan", 2022, "hf", BERGEN)) == (2, 3)
    assert counts(pick(rows, "plan", 2022, "unit", BERGEN, unit_code="U1")) == (2, 3)
    plan = pick(rows, "plan", 2022, "provider", BERGEN)
    assert plan["value"] == pytest.approx(2 / 3, abs=1e-12)
    # Wilson by hand, x = 2, n = 3, z = 1.959964: (4 + z² ∓ z·√(z² + 8/3)) / 2 / (3 + z²).
    assert plan["ci95_low"] == pytest.approx(0.207660, abs=1e-6)
    assert plan["ci95_high"] == pytest.approx(0.938508, abs=1e-6)
    assert plan["ci998_low"] == pytest.approx(0.109512, abs=1e-6)
    assert plan["ci998_high"] == pytest.approx(0.970172, abs=1e-6)
    assert plan["name"] == "HELSE BERGEN HF"
    # Targets 80 / 60 %: 2/3 moderate, 1/1 high, nation 3/4 moderate; crisis 60/40: 1/2... 2/3 high.
    assert plan["target_level"] == "moderate"
    assert pick(rows, "plan", 2022, "provider", STAVANGER)["target_level"] == "high"
    assert pick(rows, "plan", 2022, "nation", NATION)["target_level"] == "moderate"
    assert pick(rows, "crisis_plan", 2022, "provider", BERGEN)["target_level"] == "high"
    assert pick(rows, "crisis_plan", 2022, "provider", STAVANGER)["target_level"] == "low"


def test_year_by_first_measurement_and_previous_value(tiny: Factory) -> None:
    rows = run(early_course(tiny()), "plan")
    # e5's first measurement is 2021-12-20: it counts in 2021 only.
    assert counts(pick(rows, "plan", 2021, "provider", BERGEN)) == (1, 1)
    assert pick(rows, "plan", 2022, "provider", BERGEN)["previous_value"] == 1.0
    assert pick(rows, "plan", 2022, "nation", NATION)["previous_value"] == 1.0
    assert pick(rows, "plan", 2022, "provider", STAVANGER)["previous_value"] is None
    assert pick(rows, "plan", 2021, "provider", BERGEN)["previous_value"] is None


def test_resident_context_by_home_hf(tiny: Factory) -> None:
    rows = run(early_course(tiny()), "plan")
    # Resident Bergen 2022: e1, e2 (e4 lives in Stavanger's area) → plan e1: 1/2.
    assert counts(pick(rows, "plan", 2022, "hf", BERGEN, context="resident")) == (1, 2)
    # Resident Stavanger 2022: e4 (treated in Bergen) and e6 → both plan yes: 2/2.
    assert counts(pick(rows, "plan", 2022, "hf", STAVANGER, context="resident")) == (2, 2)
    assert counts(pick(rows, "plan", 2022, "nation", NATION, context="resident")) == (3, 4)
    levels = {(r["context"], r["level"]) for r in rows}
    assert ("resident", "provider") not in levels
    assert ("resident", "unit") not in levels


def test_mutual_end_and_followup_arranged(tiny: Factory) -> None:
    release = tiny()
    d = release.discharge
    d("d1", end_reason=1, followup_arranged=1)
    d("d2", end_reason=2, followup_arranged=0)
    d("d3", end_reason=3, followup_arranged=1)  # transferred: not in mutual_end's population
    d("d4", end_reason=4, followup_arranged=0)  # died: not in followup_arranged's population
    d("d5", end_reason=1, followup_arranged=0)
    d("d6", on="2023-01-05", end_reason=9, followup_arranged=1)  # year 2023 by discharge date
    rows = run(release, "mutual_end", "followup_arranged")
    # mutual_end 2022: population d1, d2, d5 → mutual d1, d5.
    assert counts(pick(rows, "mutual_end", 2022, "provider", BERGEN)) == (2, 3)
    # followup_arranged 2022: population d1, d2, d3, d5 → arranged d1, d3.
    assert counts(pick(rows, "followup_arranged", 2022, "provider", BERGEN)) == (2, 4)
    assert counts(pick(rows, "followup_arranged", 2023, "provider", BERGEN)) == (1, 1)
    assert not [r for r in rows if r["indicator_id"] == "mutual_end" and r["year"] == 2023]


def test_screening_consent_and_waiting_days(tiny: Factory) -> None:
    release = tiny()
    b = release.basis
    b("b1", referral="2022-02-19", audit=10, research_consent=1)  # waits 10 days
    b("b2", referral="2022-02-01", dudit=5)  # 28 days
    b("b3", research_consent=1)  # no referral date: no waiting time
    b("b4", referral="2022-03-01", audit=0, unit="U2")  # 0 days; AUDIT 0 is recorded
    b("b5", intake="2022-01-02", referral="2021-12-31", unit="U2")  # 2 days, year of intake
    b("s1", STAVANGER, referral="2022-02-22")  # 7 days
    b("s2", STAVANGER, referral="2022-02-26")  # 3 days
    b("s3", STAVANGER, referral="2021-11-21")  # 100 days
    rows = run(release, "screening", "research_consent", "waiting_days")
    # Bergen: 5 intakes; AUDIT or DUDIT in b1, b2, b4; consent b1, b3.
    assert counts(pick(rows, "screening", 2022, "provider", BERGEN)) == (3, 5)
    assert counts(pick(rows, "research_consent", 2022, "provider", BERGEN)) == (2, 5)
    # Waiting: Bergen 0, 2, 10, 28 → (2 + 10) / 2 = 6; Stavanger 3, 7, 100 → 7;
    # nation 0, 2, 3, 7, 10, 28, 100 → 7; Bergen U1: 10, 28 → 19; U2: 0, 2 → 1.
    waiting = pick(rows, "waiting_days", 2022, "provider", BERGEN)
    assert (waiting["value"], waiting["denominator"], waiting["numerator"]) == (6.0, 4, None)
    assert waiting["ci95_low"] is None
    assert waiting["target_level"] is None  # lower is better, no target levels in DOMAIN.md
    assert pick(rows, "waiting_days", 2022, "provider", STAVANGER)["value"] == 7.0
    assert pick(rows, "waiting_days", 2022, "nation", NATION)["value"] == 7.0
    assert pick(rows, "waiting_days", 2022, "unit", BERGEN, unit_code="U1")["value"] == 19.0
    assert pick(rows, "waiting_days", 2022, "unit", BERGEN, unit_code="U2")["value"] == 1.0
    assert not [r for r in rows if r["year"] == 2021]


def test_mean_and_median_are_over_the_rows_with_a_value(tiny: Factory) -> None:
    """A definition may leave out waiting_days' `not_null` condition: an intake without a
    referral date is still no observation. The mean was 14 / 3 (the missing value summed as 0)
    and the median of 4, 10 and the missing value (sorted last) was 10, each over 3."""
    release = tiny()
    release.basis("b1", referral="2022-02-19")  # waits 10 days
    release.basis("b2")  # no referral date
    release.basis("b3", referral="2022-02-25")  # 4 days
    median = CATALOGUE["waiting_days"]
    population = median.population.model_copy(update={"where": []})
    catalogue = [
        median.model_copy(update={"id": "median_wait", "population": population}),
        median.model_copy(update={"id": "mean_wait", "type": "mean", "population": population}),
    ]
    for definition in catalogue:
        table = compute(
            release.manifest(),
            hierarchy=Hierarchy.default(),
            catalogue=[definition.model_copy(update={"min_denominator": 1})],
        )
        row = pick(table.to_pylist(), definition.id, 2022, "provider", BERGEN)
        assert (row["value"], row["denominator"]) == (7.0, 2)  # (4 + 10) / 2 either way


def test_an_episode_with_two_basis_rows_counts_once(tiny: Factory) -> None:
    """A re-sent intake under a new record_id is a second basis row of the same episode: the
    intake indicators count the episode once, on its first row (intake_date, then record_id)."""
    release = tiny()
    b = release.basis
    b("e1", referral="2022-02-19", audit=4, research_consent=0)  # r1: first of e1, 10 days
    b("e1", referral="2022-02-01", research_consent=1)  # r2: same intake date, a later record
    b("e2", referral="2022-02-27")  # 2 days, not screened
    b("s1", STAVANGER, intake="2022-04-01", referral="2022-03-01")  # r4: not the first of s1
    b("s1", STAVANGER, intake="2022-03-15", referral="2022-03-05", dudit=3)  # r5: first, 10 days
    release.npr(BERGEN, 2022, 2).npr(STAVANGER, 2022, 1)
    rows = run(release, "screening", "research_consent", "waiting_days", "coverage")
    # Bergen: episodes e1 (screened, no consent: its first row) and e2 → screening 1/2, consent
    # 0/2; waiting 10 and 2 → 6; coverage 2 registered / 2 NPR. Stavanger: s1 once, screened.
    assert counts(pick(rows, "screening", 2022, "provider", BERGEN)) == (1, 2)
    assert counts(pick(rows, "research_consent", 2022, "provider", BERGEN)) == (0, 2)
    waiting = pick(rows, "waiting_days", 2022, "provider", BERGEN)
    assert (waiting["value"], waiting["denominator"]) == (6.0, 2)
    assert counts(pick(rows, "coverage", 2022, "provider", BERGEN)) == (2, 2)
    assert counts(pick(rows, "screening", 2022, "provider", STAVANGER)) == (1, 1)
    assert pick(rows, "waiting_days", 2022, "provider", STAVANGER)["value"] == 10.0
    assert counts(pick(rows, "coverage", 2022, "provider", STAVANGER)) == (1, 1)
    # Nation: 3 episodes, 2 screened; Bergen's resident HF counts e1 once too.
    assert counts(pick(rows, "screening", 2022, "nation", NATION)) == (2, 3)
    assert counts(pick(rows, "screening", 2022, "hf", BERGEN, context="resident")) == (1, 2)
    assert counts(pick(rows, "coverage", 2022, "nation", NATION)) == (3, 3)


def test_reduced_use_and_stable_housing(tiny: Factory) -> None:
    release = tiny()
    m, f = release.measurement, release.followup
    m("f1", on="2022-01-10", use_days_30=20)
    m("f1", on="2022-04-10", use_days_30=5)
    f("f1", use_days_30=10, housing=1)  # 10 < 20 (first point, not the later 5): reduced; own
    m("f2", use_days_30=5)
    f("f2", use_days_30=5, housing=3)  # equal: not reduced; temporary: not stable
    m("f3", use_days_30=None)
    f("f3", use_days_30=0, housing=2)  # no baseline: not compared; rented: stable
    m("f4", use_days_30=10)
    f("f4", followup_status=2, use_days_30=0, housing=1)  # not reached: in neither population
    m("f5", use_days_30=10)
    f("f5", use_days_30=30, housing=None)  # more use; housing missing: not stable
    m("f6", on="2022-05-01", use_days_30=0)
    m("f6", on="2022-02-01", use_days_30=12)  # the first point, though written second
    f("f6", use_days_30=6, housing=2)  # 6 < 12: reduced; rented: stable
    rows = run(release, "reduced_use", "stable_housing")
    # Year by follow-up date (2023). reduced_use: f1, f2, f5, f6 → f1, f6.
    assert counts(pick(rows, "reduced_use", 2023, "provider", BERGEN)) == (2, 4)
    # stable_housing: f1, f2, f3, f5, f6 → f1, f3, f6.
    assert counts(pick(rows, "stable_housing", 2023, "provider", BERGEN)) == (3, 5)
    # No basis rows: the home HF is unknown, so no resident results.
    assert not [r for r in rows if r["context"] == "resident"]


def test_study_counts_distinct_patients_per_year(tiny: Factory) -> None:
    release = tiny()
    release.basis("a1", intake="2022-02-01", patient="A", clinical_study_id="S1")
    release.basis("a2", STAVANGER, intake="2021-06-01", patient="A")
    release.measurement("a2", STAVANGER, on="2022-05-01", patient="A")
    release.basis("b1", patient="B")
    release.measurement("b1", patient="B", clinical_study_id="S2")
    release.basis("c1", patient="C")
    release.discharge("c1", patient="C")
    release.basis("d1", STAVANGER, intake="2021-03-01", patient="D", clinical_study_id="S3")
    release.measurement("d1", STAVANGER, on="2022-04-01", patient="D")
    rows = run(release, "study")
    # Bergen 2022: A (S1 at intake), B (S2 at a measurement), C (none) → 2/3.
    assert counts(pick(rows, "study", 2022, "provider", BERGEN)) == (2, 3)
    # Stavanger 2022: A and D have records there; A is in a study in 2022 (S1, recorded at
    # Bergen: enrolment is the patient's, DOMAIN.md), D only in 2021 → 1/2.
    assert counts(pick(rows, "study", 2022, "provider", STAVANGER)) == (1, 2)
    # Stavanger 2021: A (a2 intake) and D (intake with S3) → 1/2.
    assert counts(pick(rows, "study", 2021, "provider", STAVANGER)) == (1, 2)
    # Nation and Helse Vest 2022: A, B, C, D once each (A at two providers) → A, B: 2/4.
    assert counts(pick(rows, "study", 2022, "nation", NATION)) == (2, 4)
    assert counts(pick(rows, "study", 2022, "rhf", HELSE_VEST)) == (2, 4)
    # Resident Stavanger 2022: A (through a2) and D → 1/2.
    assert counts(pick(rows, "study", 2022, "hf", STAVANGER, context="resident")) == (1, 2)
    # Targets 5 % / 2.5 %: 2/4 high.
    assert pick(rows, "study", 2022, "nation", NATION)["target_level"] == "high"


def test_coverage_and_low_coverage_suppression(tiny: Factory) -> None:
    release = tiny()
    for i in range(4):
        release.basis(f"b{i}", research_consent=1)
    for i in range(2):
        release.basis(f"s{i}", STAVANGER)
    for i in range(3):
        release.basis(f"v{i}", VESTLY, home_hf_orgnr=BERGEN)
    release.npr(BERGEN, 2022, 5).npr(STAVANGER, 2022, 4)  # no NPR count for Vestly
    rows = run(release, "coverage", "research_consent")
    # Bergen 4/5 = 80 %; Stavanger 2/4 = 50 % (< 60 %: not shown); Vestly has no NPR count.
    bergen = pick(rows, "coverage", 2022, "provider", BERGEN)
    assert (counts(bergen), bergen["value"], bergen["suppressed"]) == ((4, 5), 0.8, False)
    stavanger = pick(rows, "coverage", 2022, "provider", STAVANGER)
    assert (stavanger["value"], stavanger["numerator"], stavanger["denominator"]) == (None, None, 4)
    assert stavanger["suppression_reason"] == "low_coverage"
    assert not [r for r in rows if r["indicator_id"] == "coverage" and r["orgnr"] == VESTLY]
    # Nation and Helse Vest: over providers with an NPR count, (4 + 2) / (5 + 4).
    assert counts(pick(rows, "coverage", 2022, "nation", NATION)) == (6, 9)
    assert counts(pick(rows, "coverage", 2022, "rhf", HELSE_VEST)) == (6, 9)
    # Stavanger's other results in 2022 are suppressed as low coverage, caregiver unit/provider/hf.
    for level, unit in (("unit", "U1"), ("provider", None), ("hf", None)):
        row = pick(rows, "research_consent", 2022, level, STAVANGER, unit_code=unit)
        assert (row["suppressed"], row["suppression_reason"]) == (True, "low_coverage")
        assert (row["numerator"], row["value"], row["ci95_low"]) == (None, None, None)
    # ... but Bergen's, the RHF's, the nation's and the resident ones are shown.
    assert counts(pick(rows, "research_consent", 2022, "provider", BERGEN)) == (4, 4)
    # Helse Vest: 4 Bergen + 2 Stavanger + 3 Vestly (private, rolls up to its RHF) = 9.
    assert counts(pick(rows, "research_consent", 2022, "rhf", HELSE_VEST)) == (4, 9)
    assert counts(pick(rows, "research_consent", 2022, "provider", VESTLY)) == (0, 3)
    assert not [r for r in rows if r["level"] == "hf" and r["orgnr"] == VESTLY]
    resident = pick(rows, "research_consent", 2022, "hf", STAVANGER, context="resident")
    assert (counts(resident), resident["suppressed"]) == ((0, 2), False)


def test_minimum_denominator_suppression(tiny: Factory) -> None:
    release = tiny()
    for i in range(5):
        release.basis(f"b{i}", audit=1 if i < 4 else None)
    for i in range(4):
        release.basis(f"o{i}", OUS, audit=1)
    rows = run(release, "screening", min_denominator=None)  # the catalogue's 5
    # Bergen (4/5) is hidden too: the nation 8/9 minus Bergen would be OUS (4/4); see
    # test_suppression.py for the complementary rule.
    bergen = pick(rows, "screening", 2022, "provider", BERGEN)
    assert (bergen["suppression_reason"], counts(bergen)) == ("complementary", (None, 5))
    ous = pick(rows, "screening", 2022, "provider", OUS)
    assert (ous["suppressed"], ous["suppression_reason"], ous["denominator"]) == (
        True,
        "min_denominator",
        4,
    )
    assert [ous[k] for k in ("numerator", "value", "ci95_low", "ci998_high", "target_level")] == [
        None
    ] * 5
    assert ous["funnel_signal"] is None
    assert pick(rows, "screening", 2022, "rhf", HELSE_SOR_OST)["suppressed"] is True
    assert counts(pick(rows, "screening", 2022, "nation", NATION)) == (8, 9)


def test_funnel_signals_against_national_value(tiny: Factory) -> None:
    release = tiny()
    for i in range(10):
        release.discharge(f"b{i}", BERGEN, end_reason=1)
        release.discharge(f"s{i}", STAVANGER, end_reason=2)
        release.discharge(f"v{i}", VESTLY, end_reason=1 if i < 8 else 2)
    rows = run(release, "mutual_end", min_denominator=None)
    # θ = 18/30 = 0.6, n = 10: se = √(0.24/10) = 0.154919; 95 %: 0.6 ± 0.303641 = [0.296, 0.904];
    # 99.8 %: 0.6 ± 0.478735 = [0.121, 1.079]. Bergen 1.0 above 0.904 only; Stavanger 0 below
    # 0.121; Vestly 0.8 inside.
    assert pick(rows, "mutual_end", 2022, "provider", BERGEN)["funnel_signal"] == "high_0.025"
    assert pick(rows, "mutual_end", 2022, "provider", STAVANGER)["funnel_signal"] == "low_0.001"
    assert pick(rows, "mutual_end", 2022, "provider", VESTLY)["funnel_signal"] == "not_significant"
    assert pick(rows, "mutual_end", 2022, "nation", NATION)["funnel_signal"] is None
    assert counts(pick(rows, "mutual_end", 2022, "rhf", HELSE_VEST)) == (18, 30)
    # The public HFs' caregiver hf results are their provider results, signal included.
    assert pick(rows, "mutual_end", 2022, "hf", BERGEN)["funnel_signal"] == "high_0.025"
    assert pick(rows, "mutual_end", 2022, "hf", STAVANGER)["funnel_signal"] == "low_0.001"


def test_target_levels_with_direction() -> None:
    higher = Target(green=0.8, yellow=0.6)
    assert [higher.level(v, "higher") for v in (0.8, 0.79, 0.6, 0.59)] == [
        "high",
        "moderate",
        "moderate",
        "low",
    ]
    lower = Target(green=30, yellow=60)
    assert [lower.level(v, "lower") for v in (30, 31, 60, 61)] == [
        "high",
        "moderate",
        "moderate",
        "low",
    ]


def test_lower_is_better_target_in_engine(tiny: Factory) -> None:
    release = tiny()
    release.basis("b1", referral="2022-02-27").basis("b2", referral="2022-02-25")  # 2, 4 days
    release.basis("s1", STAVANGER, referral="2022-02-21")  # 8 days
    definition: IndicatorDefinition = CATALOGUE["waiting_days"].model_copy(
        update={"target": Target(green=3, yellow=6), "min_denominator": 1}
    )
    table = compute(release.manifest(), hierarchy=Hierarchy.default(), catalogue=[definition])
    rows = table.to_pylist()
    # Bergen median 3 ≤ 3 → high; Stavanger 8 > 6 → low; nation 2, 4, 8 → 4: moderate.
    assert pick(rows, "waiting_days", 2022, "provider", BERGEN)["target_level"] == "high"
    assert pick(rows, "waiting_days", 2022, "provider", STAVANGER)["target_level"] == "low"
    assert pick(rows, "waiting_days", 2022, "nation", NATION)["target_level"] == "moderate"


def test_whole_catalogue_writes_and_reads(tiny: Factory, tmp_path: Path) -> None:
    release = early_course(tiny())
    release.discharge("e1").npr(BERGEN, 2022, 3)
    table = compute(release.manifest(), hierarchy=Hierarchy.default())
    assert table.schema == results.RESULT_SCHEMA
    assert {r["indicator_id"] for r in table.to_pylist()} >= {"plan", "coverage", "study"}
    path = tmp_path / "out" / "indicators.parquet"
    results.write(table, path)
    assert results.read(path).equals(table)


def test_cli_computes_latest_release_and_records_the_run(
    tiny: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlmodel import Session, select
    from typer.testing import CliRunner

    from schemas.catalog import IndicatorRun, Release
    from service.cli import app
    from service.database import make_engine
    from service.settings import Settings

    data_dir = tmp_path / "var"
    monkeypatch.setenv("KVARUS_DATA_DIR", str(data_dir))
    release = tiny()
    for i in range(5):
        release.basis(f"b{i}", research_consent=1 if i < 3 else 0)
    for number in (1, 2):
        manifest_path = data_dir / "releases" / str(number) / "manifest.json"
        manifest_path.parent.mkdir(parents=True)
        release.manifest(number).write(manifest_path)
    engine = make_engine(Settings(data_dir=data_dir))
    with Session(engine) as session:
        for number in (1, 2):
            path = data_dir / "releases" / str(number) / "manifest.json"
            session.add(Release(number=number, manifest_path=str(path)))
        session.commit()
    out = tmp_path / "results.json"
    result = CliRunner().invoke(app, ["indicators", "--format", "json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    stored = results.read(data_dir / "releases" / "2" / "indicators.parquet")
    assert set(stored.column("release").to_pylist()) == {2}
    rows = stored.to_pylist()
    # 5 intakes in Bergen 2022, consent in 3.
    assert counts(pick(rows, "research_consent", 2022, "provider", BERGEN)) == (3, 5)
    import json

    written = json.loads(out.read_text(encoding="utf-8"))
    assert len(written) == stored.num_rows
    with Session(engine) as session:
        runs = session.exec(select(IndicatorRun)).all()
    assert [(r.release, r.engine, r.rows) for r in runs] == [(2, "duckdb", stored.num_rows)]
    missing = CliRunner().invoke(app, ["indicators", "--release", "7"])
    assert missing.exit_code == 1


def test_variation_report_crude_and_standardised(tiny: Factory) -> None:
    from indicators.variation_report import variation_report

    release = tiny()
    for i in range(10):
        release.discharge(f"b{i}", BERGEN, end_reason=1)
        release.discharge(f"s{i}", STAVANGER, end_reason=1 if i < 2 else 2)
        release.discharge(f"v{i}", VESTLY, end_reason=1 if i < 8 else 2)
    manifest = release.manifest()
    catalogue = [CATALOGUE["mutual_end"]]
    table = compute(manifest, hierarchy=Hierarchy.default(), catalogue=catalogue)
    [entry] = variation_report(manifest, table, catalogue=catalogue)
    # Rates 1.0, 0.2, 0.8: EQ1 = 1.0 / 0.2 = 5; mean 2/3, sample sd √(0.346667/2) = 0.416333,
    # CV = 0.624500. θ = 20/30; expected 10θ each; SCV = 100·(mean((O−E)²/E²) − mean(1/E))
    # = 100·((0.25 + 0.49 + 0.04)/3 − 0.15) = 11.0.
    assert entry["method"] == "crude"
    assert entry["variation"]["extremal_quotients"]["eq1"] == pytest.approx(5.0)
    assert entry["variation"]["coefficient_of_variation"] == pytest.approx(0.624500, abs=1e-6)
    assert entry["variation"]["systematic_component"] == pytest.approx(11.0)
    assert [p["orgnr"] for p in entry["funnel_points"]] == [STAVANGER, BERGEN, VESTLY]
    assert entry["funnel_limits"]["denominator"][-1] == 10.0


def test_variation_report_standardises_outcomes(tiny: Factory) -> None:
    from indicators.variation_report import variation_report

    release = tiny()
    # Stable housing; Bergen: 4 young (18-24) patients, 3 stable; Stavanger: 4 older (45-54), 1.
    # Strata rates: 18-24 3/4, 45-54 1/4 (each stratum at one provider only), so O = E at both
    # providers: ratio 1, standardised rate = national crude 4/8 = 0.5 for both.
    for i in range(4):
        release.basis(f"b{i}", age=20).followup(f"b{i}", housing=1 if i < 3 else 4)
        release.basis(f"s{i}", STAVANGER, age=50)
        release.followup(f"s{i}", STAVANGER, housing=2 if i < 1 else 4)
    manifest = release.manifest()
    catalogue = [CATALOGUE["stable_housing"].model_copy(update={"min_denominator": 1})]
    table = compute(manifest, hierarchy=Hierarchy.default(), catalogue=catalogue)
    [entry] = variation_report(manifest, table, catalogue=catalogue)
    assert entry["method"] == "indirectly_standardised"
    assert entry["variation"]["extremal_quotients"]["eq1"] == pytest.approx(1.0)
    assert entry["variation"]["coefficient_of_variation"] == pytest.approx(0.0)
    # Crude rates differ (0.75 vs 0.25): the funnel points stay crude.
    assert [p["value"] for p in entry["funnel_points"]] == [0.25, 0.75]


def test_median_rolled_up_from_cells_to_every_level(tiny: Factory) -> None:
    """Medians at the levels above the unit come from counts per value summed over cells."""
    release = tiny()
    b = release.basis
    b("b1", referral="2022-02-19", home_hf_orgnr=STAVANGER)  # Bergen, waits 10, lives Stavanger
    b("v1", VESTLY, referral="2022-02-25")  # private, 4 days; home not an HF: caregiver only
    b("s1", STAVANGER, referral="2022-02-09", home_hf_orgnr=BERGEN)  # 20 days, lives Bergen
    b("s2", STAVANGER, referral="2022-01-30", unit="U2")  # 30 days, lives Stavanger
    rows = run(release, "waiting_days")

    def median(level: str, orgnr: str, context: str = "caregiver") -> tuple[float, int]:
        row = pick(rows, "waiting_days", 2022, level, orgnr, context=context)
        return row["value"], row["denominator"]

    # Caregiver: Helse Vest and the nation 4, 10, 20, 30 → (10 + 20) / 2; Stavanger 20, 30.
    assert median("rhf", HELSE_VEST) == (15.0, 4)
    assert median("nation", NATION) == (15.0, 4)
    assert median("hf", STAVANGER) == (25.0, 2)
    assert median("provider", VESTLY) == (4.0, 1)
    assert not [r for r in rows if r["level"] == "hf" and r["orgnr"] == VESTLY]
    # Resident: Stavanger 10, 30 → 20; Bergen 20; Helse Vest and nation 10, 20, 30 → 20.
    assert median("hf", STAVANGER, "resident") == (20.0, 2)
    assert median("hf", BERGEN, "resident") == (20.0, 1)
    assert median("rhf", HELSE_VEST, "resident") == (20.0, 3)
    assert median("nation", NATION, "resident") == (20.0, 3)


def study_release(release: TinyRelease) -> TinyRelease:
    """Patients with one cell in 2023 and patients with several (units, providers, home HFs).

    E: Bergen U1 (study S1 at a measurement) and Bergen U2 (none), home Bergen;
    F: Bergen U1 only, two episodes, no study; G: Bergen U1 (home Stavanger) and Stavanger U1
    (study at intake); H: Stavanger U1, one episode, study at discharge, with no basis row (no
    home HF: caregiver context only); J: Vestly U1, no study.
    """
    release.basis("e1", intake="2023-01-10", patient="E", unit="U1")
    release.measurement("e1", on="2023-02-10", patient="E", unit="U1", clinical_study_id="S1")
    release.basis("e2", intake="2023-05-10", patient="E", unit="U2")
    release.basis("f1", intake="2023-01-10", patient="F")
    release.basis("f2", intake="2023-08-10", patient="F")
    release.basis("g1", intake="2023-03-01", patient="G", home_hf_orgnr=STAVANGER)
    release.basis("g2", STAVANGER, intake="2023-04-01", patient="G", clinical_study_id="S2")
    release.measurement("h1", STAVANGER, on="2023-06-01", patient="H", clinical_study_id="S3")
    release.basis("j1", VESTLY, intake="2023-02-01", patient="J", home_hf_orgnr=BERGEN)
    return release


def test_study_with_one_and_several_cells_per_patient(tiny: Factory) -> None:
    rows = run(study_release(tiny()), "study")
    # In a study in 2023: E (S1), G (S2 at Stavanger), H (S3); not F, J. A patient in a study
    # counts in the numerator wherever they are counted (DOMAIN.md: a patient-year).
    # Bergen 2023: E, F, G → 2/3; its units: U1 E, F, G → 2/3; U2 E → 1/1.
    assert counts(pick(rows, "study", 2023, "provider", BERGEN)) == (2, 3)
    assert counts(pick(rows, "study", 2023, "unit", BERGEN, unit_code="U1")) == (2, 3)
    assert counts(pick(rows, "study", 2023, "unit", BERGEN, unit_code="U2")) == (1, 1)
    # Stavanger 2023: G (S2), H (S3, no basis row: still treated there) → 2/2.
    assert counts(pick(rows, "study", 2023, "provider", STAVANGER)) == (2, 2)
    # Helse Vest and the nation: E, F, G, H, J once each; E, G, H in a study → 3/5.
    assert counts(pick(rows, "study", 2023, "rhf", HELSE_VEST)) == (3, 5)
    assert counts(pick(rows, "study", 2023, "nation", NATION)) == (3, 5)
    # Caregiver hf rows repeat the provider rows of public HFs; Vestly is private: none.
    assert counts(pick(rows, "study", 2023, "hf", BERGEN)) == (2, 3)
    assert counts(pick(rows, "study", 2023, "hf", STAVANGER)) == (2, 2)
    levels = {(r["context"], r["level"], r["orgnr"]) for r in rows}
    assert ("caregiver", "provider", VESTLY) in levels
    assert ("caregiver", "hf", VESTLY) not in levels
    # Resident Bergen: E, F, J (G's Bergen episode lives in Stavanger's area) → 1/3; resident
    # Stavanger: G (both episodes: g1 by home, g2 by its provider) → 1/1; H has no home HF.
    assert counts(pick(rows, "study", 2023, "hf", BERGEN, context="resident")) == (1, 3)
    assert counts(pick(rows, "study", 2023, "hf", STAVANGER, context="resident")) == (1, 1)
    assert counts(pick(rows, "study", 2023, "nation", NATION, context="resident")) == (2, 4)


def run_adults_study(release: TinyRelease) -> list[dict[str, Any]]:
    """The study indicator of patients aged 18 or more (a condition on an intake column, so the
    engine takes the general path), every result shown."""
    adults = CATALOGUE["study"].model_copy(
        update={
            "min_denominator": 1,
            "population": CATALOGUE["study"].population.model_copy(
                update={"where": [Condition(column="age", op="ge", value=18)]}
            ),
        }
    )
    table = compute(release.manifest(), hierarchy=Hierarchy.default(), catalogue=[adults])
    return cast(list[dict[str, Any]], table.to_pylist())


def test_study_with_an_episode_condition_takes_the_general_path(tiny: Factory) -> None:
    """A condition on an intake column needs the episode join before the records are reduced:
    the engine takes the general path, with the same counts where the condition keeps all."""
    release = study_release(tiny())
    rows = run_adults_study(release)
    # H has no basis row, so no age: left out. Otherwise as above.
    assert counts(pick(rows, "study", 2023, "provider", BERGEN)) == (2, 3)
    assert counts(pick(rows, "study", 2023, "unit", BERGEN, unit_code="U2")) == (1, 1)
    assert counts(pick(rows, "study", 2023, "provider", STAVANGER)) == (1, 1)
    assert counts(pick(rows, "study", 2023, "nation", NATION)) == (2, 4)
    assert counts(pick(rows, "study", 2023, "hf", BERGEN, context="resident")) == (1, 3)
    assert counts(pick(rows, "study", 2023, "nation", NATION, context="resident")) == (2, 4)


def test_duckdb_spills_to_a_temporary_directory_removed_after_the_run() -> None:
    with _connected("duckdb", None) as backend:
        setting = backend.con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
        spill = Path(setting)
        assert spill.is_dir()
        assert not spill.resolve().is_relative_to(Path.cwd().resolve())
    assert not spill.exists()


def test_study_year_by_year_at_the_turn_of_the_year(tiny: Factory) -> None:
    """DuckDB counts patients one year at a time, selected by a date range: the records of 31
    December and 1 January fall in their own years, each counted once."""
    release = tiny()
    release.basis("k1", intake="2022-12-31", patient="K", clinical_study_id="S1")
    release.measurement("k1", on="2023-01-01", patient="K")
    release.discharge("k1", on="2023-12-31", patient="K")
    release.basis("l1", intake="2023-01-01", patient="L")
    rows = run(release, "study")
    assert counts(pick(rows, "study", 2022, "provider", BERGEN)) == (1, 1)
    assert counts(pick(rows, "study", 2023, "provider", BERGEN)) == (0, 2)
    assert counts(pick(rows, "study", 2023, "nation", NATION)) == (0, 2)
    assert {r["year"] for r in rows if r["indicator_id"] == "study"} == {2022, 2023}


def test_study_with_several_home_hfs_in_one_unit(tiny: Factory) -> None:
    """Cells differ by home HF too: K's two Bergen U1 episodes (homes Bergen and Stavanger)
    count once for the caregiver and once in each home HF; L's homes (not an HF, missing) put
    no row in the resident context, and L counts once for the caregiver."""
    release = tiny()
    release.basis("k1", intake="2024-02-01", patient="K", clinical_study_id="S1")
    release.basis("k2", intake="2024-06-01", patient="K", home_hf_orgnr=STAVANGER)
    release.basis("l1", intake="2024-02-01", patient="L", home_hf_orgnr="999999999")
    release.basis("l2", intake="2024-03-01", patient="L", home_hf_orgnr=None)
    release.measurement("l2", on="2024-04-01", patient="L", clinical_study_id="S2")
    rows = run(release, "study")
    assert counts(pick(rows, "study", 2024, "unit", BERGEN, unit_code="U1")) == (2, 2)
    assert counts(pick(rows, "study", 2024, "provider", BERGEN)) == (2, 2)
    assert counts(pick(rows, "study", 2024, "rhf", HELSE_VEST)) == (2, 2)
    assert counts(pick(rows, "study", 2024, "nation", NATION)) == (2, 2)
    assert counts(pick(rows, "study", 2024, "hf", BERGEN, context="resident")) == (1, 1)
    assert counts(pick(rows, "study", 2024, "hf", STAVANGER, context="resident")) == (1, 1)
    assert counts(pick(rows, "study", 2024, "rhf", HELSE_VEST, context="resident")) == (1, 1)
    assert counts(pick(rows, "study", 2024, "nation", NATION, context="resident")) == (1, 1)
    resident = {r["orgnr"] for r in rows if r["context"] == "resident"}
    assert resident == {BERGEN, STAVANGER, HELSE_VEST, NATION}


def test_study_with_three_rows_per_patient(tiny: Factory) -> None:
    """Patients with three rows: M in three cells (study recorded only at Stavanger), N in two
    (two Bergen U1 episodes, study recorded at the first, and OUS). Both are in a study in 2024,
    so in the numerator of every result they count in."""
    release = tiny()
    release.basis("m1", intake="2024-02-01", patient="M")
    release.basis("m2", intake="2024-03-01", patient="M", unit="U2")
    release.basis("m3", STAVANGER, intake="2024-04-01", patient="M", clinical_study_id="S1")
    release.basis("n1", intake="2024-02-01", patient="N", clinical_study_id="S2")
    release.basis("n2", intake="2024-05-01", patient="N")
    release.basis("n3", OUS, intake="2024-06-01", patient="N")
    rows = run(release, "study")
    assert counts(pick(rows, "study", 2024, "unit", BERGEN, unit_code="U1")) == (2, 2)
    assert counts(pick(rows, "study", 2024, "unit", BERGEN, unit_code="U2")) == (1, 1)
    assert counts(pick(rows, "study", 2024, "provider", BERGEN)) == (2, 2)
    assert counts(pick(rows, "study", 2024, "hf", BERGEN)) == (2, 2)
    assert counts(pick(rows, "study", 2024, "provider", STAVANGER)) == (1, 1)
    assert counts(pick(rows, "study", 2024, "provider", OUS)) == (1, 1)
    assert counts(pick(rows, "study", 2024, "rhf", HELSE_VEST)) == (2, 2)
    assert counts(pick(rows, "study", 2024, "rhf", HELSE_SOR_OST)) == (1, 1)
    assert counts(pick(rows, "study", 2024, "nation", NATION)) == (2, 2)
    assert counts(pick(rows, "study", 2024, "hf", BERGEN, context="resident")) == (2, 2)
    assert counts(pick(rows, "study", 2024, "hf", STAVANGER, context="resident")) == (1, 1)
    assert counts(pick(rows, "study", 2024, "hf", OUS, context="resident")) == (1, 1)
    assert counts(pick(rows, "study", 2024, "rhf", HELSE_VEST, context="resident")) == (2, 2)
    assert counts(pick(rows, "study", 2024, "rhf", HELSE_SOR_OST, context="resident")) == (1, 1)
    assert counts(pick(rows, "study", 2024, "nation", NATION, context="resident")) == (2, 2)


def test_study_patient_in_two_cells_one_without_a_home_hf(tiny: Factory) -> None:
    """K's two Bergen U1 episodes: k1 without a home HF (the lower cell code), k2 at home in
    Bergen. The caregiver levels count K once; the resident levels count K through k2 alone
    (a row without a home HF is left out of the resident context)."""
    release = tiny()
    release.basis("k1", intake="2024-02-01", patient="K", home_hf_orgnr=None)
    release.basis("k2", intake="2024-06-01", patient="K", clinical_study_id="S1")
    rows = run(release, "study")
    assert counts(pick(rows, "study", 2024, "unit", BERGEN, unit_code="U1")) == (1, 1)
    assert counts(pick(rows, "study", 2024, "nation", NATION)) == (1, 1)
    for level, orgnr in (("hf", BERGEN), ("rhf", HELSE_VEST), ("nation", NATION)):
        assert counts(pick(rows, "study", 2024, level, orgnr, context="resident")) == (1, 1)


def test_study_patient_at_an_unknown_provider_and_bergen(tiny: Factory) -> None:
    """An unknown provider has no RHF: K, treated there and at Bergen, counts once in Helse Vest
    and the nation, and once at each provider."""
    release = tiny()
    release.basis("k1", "999999999", intake="2024-02-01", patient="K", home_hf_orgnr=BERGEN)
    release.basis("k2", intake="2024-06-01", patient="K", clinical_study_id="S1")
    rows = run(release, "study")
    assert counts(pick(rows, "study", 2024, "provider", "999999999")) == (1, 1)
    assert counts(pick(rows, "study", 2024, "provider", BERGEN)) == (1, 1)
    assert counts(pick(rows, "study", 2024, "rhf", HELSE_VEST)) == (1, 1)
    assert counts(pick(rows, "study", 2024, "nation", NATION)) == (1, 1)
    assert counts(pick(rows, "study", 2024, "hf", BERGEN, context="resident")) == (1, 1)


def test_study_on_the_general_path_year_by_year(tiny: Factory) -> None:
    """The general path (a condition on an intake column) is counted one year at a time too:
    31 December and 1 January in their own years, each result once."""
    release = tiny()
    release.basis("k1", intake="2022-12-31", patient="K", clinical_study_id="S1")
    release.measurement("k1", on="2023-01-01", patient="K")
    release.discharge("k1", on="2023-12-31", patient="K")
    release.basis("l1", intake="2023-01-01", patient="L")
    rows = run_adults_study(release)
    assert counts(pick(rows, "study", 2022, "provider", BERGEN)) == (1, 1)
    assert counts(pick(rows, "study", 2023, "provider", BERGEN)) == (0, 2)
    assert counts(pick(rows, "study", 2023, "nation", NATION, context="resident")) == (0, 2)
    keys = [(r["year"], r["context"], r["level"], r["orgnr"], r["unit_code"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert {r["year"] for r in rows} == {2022, 2023}


def test_study_with_a_hierarchy_without_hfs(tiny: Factory) -> None:
    """No HF in the hierarchy: every home is outside it, so there is no resident result, and
    the caregiver results are those of the patients' providers (here one private provider)."""
    without_hfs = Hierarchy([o for o in Hierarchy.default().by_orgnr.values() if o.level != "hf"])
    release = tiny()
    release.basis("a", VESTLY, intake="2022-03-01", patient="A")
    release.basis("b", VESTLY, intake="2022-03-01", patient="B", unit="U2")
    release.basis("b2", VESTLY, intake="2022-04-01", patient="B", clinical_study_id="S1")
    study = CATALOGUE["study"].model_copy(update={"min_denominator": 1})
    table = compute(release.manifest(), hierarchy=without_hfs, catalogue=[study])
    rows: list[dict[str, Any]] = table.to_pylist()
    assert counts(pick(rows, "study", 2022, "provider", VESTLY)) == (1, 2)
    assert counts(pick(rows, "study", 2022, "unit", VESTLY, unit_code="U1")) == (1, 2)
    assert counts(pick(rows, "study", 2022, "unit", VESTLY, unit_code="U2")) == (1, 1)
    assert counts(pick(rows, "study", 2022, "nation", NATION)) == (1, 2)
    assert not [r for r in rows if r["context"] == "resident"]


def test_study_episode_ids_are_the_providers_own(tiny: Factory) -> None:
    """An episode is (provider_orgnr, episode_id): Bergen's x1 (P, at home in Bergen) and
    Stavanger's x1 (Q, at home in Stavanger) are two episodes. P's 2024 measurement at Bergen
    takes the home of Bergen's x1 alone (the engine joins records to episodes on hashes of
    both columns)."""
    release = tiny()
    release.basis("x1", intake="2023-03-01", patient="P")
    release.basis("x1", STAVANGER, intake="2023-03-01", patient="Q")
    release.measurement("x1", on="2024-02-01", patient="P", clinical_study_id="S1")
    rows = run(release, "study")
    assert counts(pick(rows, "study", 2024, "hf", BERGEN, context="resident")) == (1, 1)
    assert counts(pick(rows, "study", 2024, "nation", NATION, context="resident")) == (1, 1)
    resident = {r["orgnr"] for r in rows if r["year"] == 2024 and r["context"] == "resident"}
    assert resident == {BERGEN, HELSE_VEST, NATION}
