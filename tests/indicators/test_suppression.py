"""Complementary suppression: no suppressed result is its parent minus the published siblings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
from tests.indicators.test_engine import counts, pick, run

Factory = Callable[[], TinyRelease]
FORDE = "983974732"  # HELSE FØRDE HF, Helse Vest


def reason(row: dict[str, Any]) -> tuple[str | None, int | None, float | None]:
    return row["suppression_reason"], row["numerator"], row["value"]


def intakes(
    release: TinyRelease, provider: str, unit: str, screened: int, total: int, **values: Any
) -> None:
    """`total` screening intakes at a provider's unit, the first `screened` with an AUDIT score."""
    for i in range(total):
        episode = f"{provider}-{unit}-{i}"
        release.basis(episode, provider, unit=unit, audit=5 if i < screened else None, **values)


def test_provider_hidden_beside_a_small_provider_of_the_same_rhf(tiny: Factory) -> None:
    """Helse Vest 2022, screening, minimum 5: Vestly 3/3 (its patients live in Førde's area),
    Stavanger 5/8, Bergen 10/12; the RHF 18/23.

    Vestly (3) is under the minimum. Published alone, it would be 18 − 5 − 10 = 3 of 3, so
    Stavanger, the smallest published sibling (8), is hidden too: the RHF minus Bergen leaves
    8 of Vestly and Stavanger together. Stavanger's hf row and its only unit repeat it and are
    hidden with it. Resident: Førde 3, Stavanger 8, Bergen 12 under Helse Vest: the same."""
    release = tiny()
    intakes(release, VESTLY, "U1", 3, 3, home_hf_orgnr=FORDE)
    intakes(release, STAVANGER, "U1", 5, 8)
    intakes(release, BERGEN, "U1", 10, 12)
    rows = run(release, "screening", min_denominator=5)

    def row(level: str, orgnr: str, **keys: Any) -> dict[str, Any]:
        return pick(rows, "screening", 2022, level, orgnr, **keys)

    assert reason(row("provider", VESTLY)) == ("min_denominator", None, None)
    assert reason(row("unit", VESTLY, unit_code="U1")) == ("min_denominator", None, None)
    for level, unit in (("provider", None), ("hf", None), ("unit", "U1")):
        hidden = row(level, STAVANGER, unit_code=unit)
        assert (hidden["suppressed"], reason(hidden)) == (True, ("complementary", None, None))
        assert hidden["denominator"] == 8
        assert [hidden[k] for k in ("ci95_low", "ci998_high", "target_level")] == [None] * 3
        assert hidden["funnel_signal"] is None
    for level, unit in (("provider", None), ("hf", None), ("unit", "U1")):
        shown = row(level, BERGEN, unit_code=unit)
        assert (shown["suppressed"], counts(shown)) == (False, (10, 12))
    assert row("provider", BERGEN)["funnel_signal"] is not None
    assert counts(row("rhf", HELSE_VEST)) == (18, 23)
    assert counts(row("nation", NATION)) == (18, 23)
    # Resident Helse Vest: Førde 3 (under the minimum), Stavanger 8 hidden, Bergen 12 shown.
    assert reason(row("hf", FORDE, context="resident")) == ("min_denominator", None, None)
    assert reason(row("hf", STAVANGER, context="resident")) == ("complementary", None, None)
    assert counts(row("hf", BERGEN, context="resident")) == (10, 12)
    assert counts(row("rhf", HELSE_VEST, context="resident")) == (18, 23)


def test_unit_hidden_beside_a_small_unit_of_the_same_provider(tiny: Factory) -> None:
    """Screening 2022, minimum 5. Bergen 11/16: U1 3/3, U2 4/6, U3 4/7. U1 alone hidden would be
    11 − 4 − 4 = 3, so U2 (6 < 7) is hidden too. Stavanger 9/15: U1 2/2 and U2 3/4 are both
    under the minimum; two unknowns in the sum: U3 7/9 stays shown."""
    release = tiny()
    intakes(release, BERGEN, "U1", 3, 3)
    intakes(release, BERGEN, "U2", 4, 6)
    intakes(release, BERGEN, "U3", 4, 7)
    intakes(release, STAVANGER, "U1", 2, 2)
    intakes(release, STAVANGER, "U2", 3, 4)
    intakes(release, STAVANGER, "U3", 4, 9)
    rows = run(release, "screening", min_denominator=5)

    def unit(orgnr: str, code: str) -> dict[str, Any]:
        return pick(rows, "screening", 2022, "unit", orgnr, unit_code=code)

    assert reason(unit(BERGEN, "U1")) == ("min_denominator", None, None)
    assert reason(unit(BERGEN, "U2")) == ("complementary", None, None)
    assert unit(BERGEN, "U2")["denominator"] == 6
    assert counts(unit(BERGEN, "U3")) == (4, 7)
    assert counts(pick(rows, "screening", 2022, "provider", BERGEN)) == (11, 16)
    assert reason(unit(STAVANGER, "U1")) == ("min_denominator", None, None)
    assert reason(unit(STAVANGER, "U2")) == ("min_denominator", None, None)
    assert counts(unit(STAVANGER, "U3")) == (4, 9)
    assert counts(pick(rows, "screening", 2022, "provider", STAVANGER)) == (9, 15)
    # No provider, RHF or nation result is hidden.
    assert not [r for r in rows if r["level"] != "unit" and r["suppressed"]]


def test_medians_take_no_complementary_suppression(tiny: Factory) -> None:
    """waiting_days 2022, minimum 5, Helse Vest: Vestly 3 intakes (hidden), Bergen 6, Stavanger
    9. A median is not a sum: no subtraction gives Vestly's back, so Bergen, the smallest
    sibling, stays shown. Intakes on 1 March; Bergen's referrals on 1-6 February wait
    28, 27, 26, 25, 24, 23 days (median 25.5), Stavanger's on 1-9 January 59 ... 51 (55)."""
    release = tiny()
    for i in range(3):
        release.basis(f"v{i}", VESTLY, referral="2022-02-01")
    for i in range(6):
        release.basis(f"b{i}", BERGEN, referral=f"2022-02-0{i + 1}")
    for i in range(9):
        release.basis(f"s{i}", STAVANGER, referral=f"2022-01-0{i + 1}")
    rows = run(release, "waiting_days", min_denominator=5)

    def value(level: str, orgnr: str) -> tuple[str | None, float | None, int]:
        row = pick(rows, "waiting_days", 2022, level, orgnr)
        return row["suppression_reason"], row["value"], row["denominator"]

    assert value("provider", VESTLY) == ("min_denominator", None, 3)
    assert value("provider", BERGEN) == (None, 25.5, 6)
    assert value("provider", STAVANGER) == (None, 55.0, 9)
    # The RHF's 18: 23 ... 27, then 28 four times (Bergen's and Vestly's), then 51 ... 59: the
    # 9th and 10th are 28 and 51.
    assert value("rhf", HELSE_VEST) == (None, 39.5, 18)


def test_rows_without_a_home_hf_are_a_hidden_group_of_the_nation(tiny: Factory) -> None:
    """Screening 2022, minimum 5: Vestly 3/3 with no home HF, Bergen 10/12, Stavanger 5/8,
    OUS 7/9 (homes: their own HFs). The caregiver nation (25/32) minus the resident nation
    (22/29) would give the 3 rows without a home HF, 3 of 3. So the resident nation is hidden;
    then, as under any hidden parent, its smallest RHF (Helse Sør-Øst, 9 < 20) and that RHF's
    only HF (OUS). The caregiver side is as before: Vestly and Stavanger hidden."""
    release = tiny()
    intakes(release, VESTLY, "U1", 3, 3, home_hf_orgnr=None)
    intakes(release, BERGEN, "U1", 10, 12)
    intakes(release, STAVANGER, "U1", 5, 8)
    intakes(release, OUS, "U1", 7, 9)
    rows = run(release, "screening", min_denominator=5)

    def row(level: str, orgnr: str, context: str) -> dict[str, Any]:
        return pick(rows, "screening", 2022, level, orgnr, context=context)

    assert counts(row("nation", NATION, "caregiver")) == (25, 32)
    assert reason(row("provider", VESTLY, "caregiver")) == ("min_denominator", None, None)
    assert reason(row("provider", STAVANGER, "caregiver")) == ("complementary", None, None)
    for level, orgnr in (("nation", NATION), ("rhf", HELSE_SOR_OST), ("hf", OUS)):
        hidden = row(level, orgnr, "resident")
        assert reason(hidden) == ("complementary", None, None)
    assert row("nation", NATION, "resident")["denominator"] == 29
    assert counts(row("rhf", HELSE_VEST, "resident")) == (15, 20)
    assert counts(row("hf", BERGEN, "resident")) == (10, 12)
    assert counts(row("hf", STAVANGER, "resident")) == (5, 8)


def test_five_rows_without_a_home_hf_hide_nothing(tiny: Factory) -> None:
    """The same with Vestly 5/5: a group of 5 may be published, so the resident nation (22/29)
    stays shown beside the caregiver nation (27/34)."""
    release = tiny()
    intakes(release, VESTLY, "U1", 5, 5, home_hf_orgnr=None)
    intakes(release, BERGEN, "U1", 10, 12)
    intakes(release, STAVANGER, "U1", 5, 8)
    intakes(release, OUS, "U1", 7, 9)
    rows = run(release, "screening", min_denominator=5)
    assert counts(pick(rows, "screening", 2022, "nation", NATION)) == (27, 34)
    resident = pick(rows, "screening", 2022, "nation", NATION, context="resident")
    assert counts(resident) == (22, 29)
    assert not [r for r in rows if r["context"] == "resident" and r["suppressed"]]


def test_providers_outside_every_rhf_are_a_hidden_child_of_the_nation(tiny: Factory) -> None:
    """Screening 2022, minimum 5: a provider outside the hierarchy 2/2 (home Bergen), Bergen
    10/12, Stavanger 5/8. The caregiver nation (17/22) minus Helse Vest (15/20) would give the
    unknown provider's 2 of 2: Helse Vest, the only RHF, is hidden, and under it Stavanger, the
    smaller provider (and its hf row). The resident context has every row (nation 17/22)."""
    release = tiny()
    outside = "999999999"
    intakes(release, outside, "U1", 2, 2, home_hf_orgnr=BERGEN)
    intakes(release, BERGEN, "U1", 10, 12)
    intakes(release, STAVANGER, "U1", 5, 8)
    rows = run(release, "screening", min_denominator=5)

    def row(level: str, orgnr: str) -> dict[str, Any]:
        return pick(rows, "screening", 2022, level, orgnr)

    assert counts(row("nation", NATION)) == (17, 22)
    assert reason(row("provider", outside)) == ("min_denominator", None, None)
    assert reason(row("rhf", HELSE_VEST)) == ("complementary", None, None)
    assert row("rhf", HELSE_VEST)["denominator"] == 20
    assert reason(row("provider", STAVANGER)) == ("complementary", None, None)
    assert reason(row("hf", STAVANGER)) == ("complementary", None, None)
    assert counts(row("provider", BERGEN)) == (10, 12)
    resident = pick(rows, "screening", 2022, "nation", NATION, context="resident")
    assert counts(resident) == (17, 22)


def test_a_small_provider_outside_every_rhf_beside_a_large_one(tiny: Factory) -> None:
    """Screening 2022, minimum 5: two providers outside the hierarchy, 2/2 and 8/10, beside
    Helse Vest (Bergen 10/12, Stavanger 5/8: 15/20). The nation (25/32) minus Helse Vest minus
    the large one would give the small one's 2 of 2: each is a child of the nation of its own,
    so with the small one hidden the smallest published child, the large one (10 < 20), is
    hidden too; Helse Vest stays shown."""
    release = tiny()
    small, large = "999999999", "999999998"
    intakes(release, small, "U1", 2, 2, home_hf_orgnr=BERGEN)
    intakes(release, large, "U1", 8, 10, home_hf_orgnr=BERGEN)
    intakes(release, BERGEN, "U1", 10, 12)
    intakes(release, STAVANGER, "U1", 5, 8)
    rows = run(release, "screening", min_denominator=5)

    def row(level: str, orgnr: str) -> dict[str, Any]:
        return pick(rows, "screening", 2022, level, orgnr)

    assert counts(row("nation", NATION)) == (25, 32)
    assert reason(row("provider", small)) == ("min_denominator", None, None)
    assert reason(row("provider", large)) == ("complementary", None, None)
    unit = pick(rows, "screening", 2022, "unit", large, unit_code="U1")
    assert reason(unit) == ("complementary", None, None)
    assert counts(row("rhf", HELSE_VEST)) == (15, 20)
    assert counts(row("provider", BERGEN)) == (10, 12)
    assert counts(row("provider", STAVANGER)) == (5, 8)
