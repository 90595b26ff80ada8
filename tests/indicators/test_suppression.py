"""Complementary suppression: no suppressed result is its parent minus the published siblings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from indicators.levels import Organisations
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
from tests.indicators.test_engine import counts, pick, run

Factory = Callable[[], TinyRelease]
FORDE = "983974732"  # HELSE FØRDE HF, Helse Vest


def reason(row: dict[str, Any]) -> tuple[str | None, int | None, float | None]:
    return row["suppression_reason"], row["numerator"], row["value"]


Key = tuple[str, str, str, str | None]  # context, level, orgnr, unit_code
GAP: Key = ("resident", "gap", "", None)  # the rows without a usable home HF


def determined(
    rows: list[dict[str, Any]], indicator: str, year: int, reader: str | None
) -> set[Key]:
    """The rows hidden for disclosure that `reader` works out by linear algebra: the trust
    `reader` (None: the public) knows its own rows (provider, hf, unit rows of its orgnr, its
    resident hf row); each parent is the sum of its children (units → provider → RHF → nation,
    providers outside every RHF → nation, resident HF → RHF → nation), a caregiver hf row is its
    provider row, and the caregiver nation is the resident nation plus the rows without a home
    HF. A hidden row is determined when its unit vector lies in the equations' row space (over
    the rows the reader does not know). The reader's own rows and the RHF and nation rows (sums
    that name nobody; what counts is whether another trust's row follows) are left out of the
    answer, except for the public."""
    organisations = Organisations.of(Hierarchy.default())
    chosen = [r for r in rows if (r["indicator_id"], r["year"]) == (indicator, year)]
    by_key: dict[Key, dict[str, Any]] = {
        (r["context"], r["level"], r["orgnr"], r["unit_code"]): r for r in chosen
    }

    def parent(key: Key) -> Key | None:
        context, level, orgnr, _ = key
        if level == "unit":
            return (context, "provider", orgnr, None)
        if (context, level) in (("caregiver", "provider"), ("resident", "hf")):
            lookup = organisations.providers if context == "caregiver" else organisations.homes
            rhf = lookup.get(orgnr, (None, None))[1]
            return (context, "rhf", rhf, None) if rhf else (context, "nation", NATION, None)
        if level == "rhf":
            return (context, "nation", NATION, None)
        return None

    equations: list[dict[Key, int]] = []
    families: dict[Key, list[Key]] = {}
    for key in by_key:
        if key[:2] == ("caregiver", "hf"):
            equations.append({key: 1, ("caregiver", "provider", key[2], None): -1})
        elif (up := parent(key)) is not None and up in by_key:
            families.setdefault(up, []).append(key)
    for up, children in families.items():
        equations.append({up: 1} | dict.fromkeys(children, -1))
    equations.append(
        {
            ("caregiver", "nation", NATION, None): 1,
            ("resident", "nation", NATION, None): -1,
            GAP: -1,
        }
    )

    def owned(key: Key) -> bool:
        return key[1] in ("provider", "hf", "unit") and key[2] == reader

    unknown = [k for k, r in by_key.items() if r["suppressed"] and not owned(k)] + [GAP]
    column = {k: i for i, k in enumerate(unknown)}
    matrix = np.array(
        [[equation.get(k, 0) for k in unknown] for equation in equations], dtype=np.float64
    )
    rank = np.linalg.matrix_rank(matrix)
    found: set[Key] = set()
    resident = by_key.get(("resident", "nation", NATION, None))
    for key in unknown:
        if key == GAP:
            if resident is None or not resident["suppressed"]:
                continue  # a large gap: published as the difference of the nations
        else:
            if by_key[key]["suppression_reason"] not in ("min_denominator", "complementary"):
                continue
            if reader is not None and key[1] in ("rhf", "nation"):
                continue
        unit = np.zeros(len(unknown))
        unit[column[key]] = 1.0
        if np.linalg.matrix_rank(np.vstack([matrix, unit])) == rank:
            found.add(key)
    return found


def alike(
    rows: list[dict[str, Any]],
    truth: list[dict[str, Any]],
    indicator: str,
    year: int,
    reader: str | None,
) -> set[Key]:
    """The parents `reader` knows (published, or its own rows) below which it finds the hidden
    rows it does not know all 0 % or all 100 %. A hidden row it does not know is the sum of its
    children, so it counts as its hidden children (the published ones subtracted); the rows
    without a home HF, when the resident nation is hidden, are a hidden child of the caregiver
    nation beside the resident nation. `truth` is the same release with nothing suppressed:
    the reader's own numbers and the sums the subtraction gives."""
    organisations = Organisations.of(Hierarchy.default())
    chosen = {
        (r["context"], r["level"], r["orgnr"], r["unit_code"]): r
        for r in rows
        if (r["indicator_id"], r["year"]) == (indicator, year)
    }
    value = {
        (r["context"], r["level"], r["orgnr"], r["unit_code"]): (r["numerator"], r["denominator"])
        for r in truth
        if (r["indicator_id"], r["year"]) == (indicator, year)
    }
    caregiver, resident = (
        ("caregiver", "nation", NATION, None),
        ("resident", "nation", NATION, None),
    )
    below: dict[Key, list[Key]] = {}
    for key in chosen:
        context, level, orgnr, _ = key
        if level == "unit":
            up: Key | None = (context, "provider", orgnr, None)
        elif (context, level) in (("caregiver", "provider"), ("resident", "hf")):
            lookup = organisations.providers if context == "caregiver" else organisations.homes
            rhf = lookup.get(orgnr, (None, None))[1]
            up = (context, "rhf", rhf, None) if rhf else (context, "nation", NATION, None)
        elif level == "rhf":
            up = (context, "nation", NATION, None)
        else:
            up = None
        if up is not None and up in chosen:
            below.setdefault(up, []).append(key)
    families = list(below.items())
    if resident in chosen and chosen[resident]["suppressed"]:
        families.append((caregiver, [resident, GAP]))
        value[GAP] = (
            value[caregiver][0] - value[resident][0],
            value[caregiver][1] - value[resident][1],
        )

    def known(key: Key) -> bool:
        owned = key[1] in ("provider", "hf", "unit") and key[2] == reader
        return key != GAP and (not chosen[key]["suppressed"] or owned)

    found: set[Key] = set()
    for parent, children in families:
        if not known(parent):
            continue
        hidden: list[Key] = []
        count, total = value[parent]
        pending = list(children)
        while pending:
            key = pending.pop()
            if known(key):
                count, total = count - value[key][0], total - value[key][1]
            elif key in below:
                pending += below[key]
            else:
                hidden.append(key)
        protected = [
            k
            for k in hidden
            if k == GAP or chosen[k]["suppression_reason"] in ("min_denominator", "complementary")
        ]
        if protected and total > 0 and count in (0, total):
            found.add(parent)
    return found


def readers(rows: list[dict[str, Any]], indicator: str, year: int) -> list[str | None]:
    """The public and every trust that owns a hidden row."""
    owners = {
        r["orgnr"]
        for r in rows
        if (r["indicator_id"], r["year"]) == (indicator, year)
        and r["suppressed"]
        and r["level"] in ("provider", "hf", "unit")
    }
    return [None, *sorted(owners)]


def assert_nobody_recovers(rows: list[dict[str, Any]], indicator: str, year: int) -> None:
    for reader in readers(rows, indicator, year):
        assert determined(rows, indicator, year, reader) == set(), reader


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
    8 of Vestly and Stavanger together. But Stavanger knows its own 5/8 (its records, and the
    API shows a trust its own rows): 18 − 10 − 5 = 3 would name Vestly to it. So Bergen (12),
    the last published child, is hidden as well (the respondent rule: no trust owning one of
    two hidden children). Stavanger's and Bergen's hf rows and only units repeat them and are
    hidden with them. Resident: Førde 3, Stavanger 8, Bergen 12 under Helse Vest: the same.
    (Before this rule Bergen stayed shown.)"""
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
        hidden = row(level, BERGEN, unit_code=unit)
        assert (reason(hidden), hidden["denominator"]) == (("complementary", None, None), 12)
        assert hidden["funnel_signal"] is None
    assert counts(row("rhf", HELSE_VEST)) == (18, 23)
    assert counts(row("nation", NATION)) == (18, 23)
    # Resident Helse Vest: Førde 3 (under the minimum), Stavanger 8 and Bergen 12 hidden.
    assert reason(row("hf", FORDE, context="resident")) == ("min_denominator", None, None)
    assert reason(row("hf", STAVANGER, context="resident")) == ("complementary", None, None)
    assert reason(row("hf", BERGEN, context="resident")) == ("complementary", None, None)
    assert counts(row("rhf", HELSE_VEST, context="resident")) == (18, 23)
    assert_nobody_recovers(rows, "screening", 2022)


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

    def unit_row(orgnr: str, code: str) -> dict[str, Any]:
        return pick(rows, "screening", 2022, "unit", orgnr, unit_code=code)

    assert reason(unit_row(BERGEN, "U1")) == ("min_denominator", None, None)
    assert reason(unit_row(BERGEN, "U2")) == ("complementary", None, None)
    assert unit_row(BERGEN, "U2")["denominator"] == 6
    assert counts(unit_row(BERGEN, "U3")) == (4, 7)
    assert counts(pick(rows, "screening", 2022, "provider", BERGEN)) == (11, 16)
    assert reason(unit_row(STAVANGER, "U1")) == ("min_denominator", None, None)
    assert reason(unit_row(STAVANGER, "U2")) == ("min_denominator", None, None)
    assert counts(unit_row(STAVANGER, "U3")) == (4, 9)
    assert counts(pick(rows, "screening", 2022, "provider", STAVANGER)) == (9, 15)
    # No provider, RHF or nation result is hidden.
    assert not [r for r in rows if r["level"] != "unit" and r["suppressed"]]


def test_median_denominators_take_complementary_suppression(tiny: Factory) -> None:
    """The reviewer's case: waiting_days 2019, Helse Vest 112 intakes, its published providers
    37 + 18 + 32 + 11 + 13 = 111, so Haraldsplass (hidden) had 1. A median is not a sum, but the
    API shows each published median's denominator. waiting_days 2022, minimum 5, Helse Vest
    (homes: the providers' own HFs): Haraldsplass 1 intake, Bergen 6, Stavanger 9, Førde 12.

    Haraldsplass is under the minimum; Bergen (6, the smallest published) is hidden beside it,
    and Stavanger (9) under the respondent rule (Bergen would find 28 − 12 − 9 − 6 = 1). Førde
    stays shown: 28 − 12 = 16 for the three hidden. (Before, Bergen and Stavanger were shown.)
    Intakes on 1 March; referrals: Haraldsplass 1 February (28 days), Bergen 1-6 February
    (28 ... 23, median 25.5), Stavanger 1-9 January (59 ... 51, 55), Førde 10-21 February
    (19 ... 8, median 13.5). The RHF's 28: 8 ... 19, 23 ... 27, 28 twice, 51 ... 59; the 14th
    and 15th are 24 and 25: 24.5. The same in the resident context."""
    haraldsplass = "984027737"
    release = tiny()
    release.basis("h0", haraldsplass, referral="2022-02-01")
    for i in range(6):
        release.basis(f"b{i}", BERGEN, referral=f"2022-02-0{i + 1}")
    for i in range(9):
        release.basis(f"s{i}", STAVANGER, referral=f"2022-01-0{i + 1}")
    for i in range(12):
        release.basis(f"f{i}", FORDE, referral=f"2022-02-{i + 10}")
    rows = run(release, "waiting_days", min_denominator=5)

    def value(context: str, level: str, orgnr: str) -> tuple[str | None, float | None, int]:
        row = pick(rows, "waiting_days", 2022, level, orgnr, context=context)
        assert row["numerator"] is None
        return row["suppression_reason"], row["value"], row["denominator"]

    for context, level in (("caregiver", "provider"), ("resident", "hf")):
        assert value(context, level, haraldsplass) == ("min_denominator", None, 1)
        assert value(context, level, BERGEN) == ("complementary", None, 6)
        assert value(context, level, STAVANGER) == ("complementary", None, 9)
        assert value(context, level, FORDE) == (None, 13.5, 12)
        assert value(context, "rhf", HELSE_VEST) == (None, 24.5, 28)
        assert value(context, "nation", NATION) == (None, 24.5, 28)
    hidden = pick(rows, "waiting_days", 2022, "hf", BERGEN)
    assert (hidden["suppression_reason"], hidden["value"]) == ("complementary", None)
    assert_nobody_recovers(rows, "waiting_days", 2022)


def test_rows_without_a_home_hf_are_a_hidden_group_of_the_nation(tiny: Factory) -> None:
    """Screening 2022, minimum 5: Vestly 3/3 with no home HF, Bergen 10/12, Stavanger 5/8,
    OUS 7/9 (homes: their own HFs). The caregiver nation (25/32) minus the resident nation
    (22/29) would give the 3 rows without a home HF, 3 of 3. So the resident nation is hidden;
    then, as under any hidden parent, its smallest RHF (Helse Sør-Øst, 9 < 20) and that RHF's
    only HF (OUS). OUS knows its own resident row, so Helse Sør-Øst (its only HF), and with
    Helse Vest shown it would have the resident nation (9 + 20) and the 3 rows: Helse Vest is
    hidden too (there is no other HF under Helse Sør-Øst to hide), and under it Stavanger
    (8 < 12). Stavanger then knows Helse Vest, but the nation's group still has two unknowns to
    it (the nation, Helse Sør-Øst): Bergen stays shown. Caregiver: Vestly, and under the
    respondent rule Stavanger and Bergen, hidden (as in the first test). (Before: the resident
    Helse Vest and Stavanger were shown, caregiver Bergen too.)"""
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
    assert reason(row("provider", BERGEN, "caregiver")) == ("complementary", None, None)
    assert counts(row("provider", OUS, "caregiver")) == (7, 9)
    assert counts(row("rhf", HELSE_VEST, "caregiver")) == (18, 23)
    hidden = [
        ("nation", NATION),
        ("rhf", HELSE_SOR_OST),
        ("hf", OUS),
        ("rhf", HELSE_VEST),
        ("hf", STAVANGER),
    ]
    for level, orgnr in hidden:
        assert reason(row(level, orgnr, "resident")) == ("complementary", None, None)
    assert row("nation", NATION, "resident")["denominator"] == 29
    assert counts(row("hf", BERGEN, "resident")) == (10, 12)
    assert_nobody_recovers(rows, "screening", 2022)


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
    smaller provider (and its hf row). The unknown provider knows its own 2/2, so Helse Vest
    (17/22 − 2/2) and, with Bergen shown, Stavanger: Bergen is hidden too (before, it was
    shown). The resident context has every row (nation 17/22)."""
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
    for level in ("provider", "hf"):
        assert reason(row(level, BERGEN)) == ("complementary", None, None)
    resident = pick(rows, "screening", 2022, "nation", NATION, context="resident")
    assert counts(resident) == (17, 22)
    assert not [r for r in rows if r["context"] == "resident" and r["suppressed"]]
    assert_nobody_recovers(rows, "screening", 2022)


def test_a_small_provider_outside_every_rhf_beside_a_large_one(tiny: Factory) -> None:
    """Screening 2022, minimum 5: two providers outside the hierarchy, 2/2 and 8/10, beside
    Helse Vest (Bergen 10/12, Stavanger 5/8: 15/20). The nation (25/32) minus Helse Vest minus
    the large one would give the small one's 2 of 2: each is a child of the nation of its own,
    so with the small one hidden the smallest published child, the large one (10 < 20), is
    hidden too. The large one knows its own 8/10 and would find the small one as 25 − 15 − 8:
    Helse Vest is hidden as well (before, it was shown), and under it Stavanger (8 < 12).
    Stavanger then knows Helse Vest, but that leaves it the two outside providers unknown in
    the nation's group: Bergen stays shown."""
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
    assert reason(row("rhf", HELSE_VEST)) == ("complementary", None, None)
    assert row("rhf", HELSE_VEST)["denominator"] == 20
    assert reason(row("provider", STAVANGER)) == ("complementary", None, None)
    assert counts(row("provider", BERGEN)) == (10, 12)
    assert_nobody_recovers(rows, "screening", 2022)


def test_two_small_providers_of_an_rhf_hide_a_third(tiny: Factory) -> None:
    """The reviewer's pattern. Screening 2022, minimum 5, Helse Vest: Bergen 3/5, Stavanger 1/2,
    Førde 2/2 (homes: their own HFs); the RHF 6/9. Stavanger and Førde are under the minimum:
    two unknowns for the public, but Stavanger knows its own 1/2 and would find Førde as
    (6 − 3 − 1) / (9 − 5 − 2) = 2/2, and Førde Stavanger. So Bergen, the one published child,
    is hidden too (before, it was shown); the RHF and the nation (6/9) stay shown. The same in
    the resident context."""
    release = tiny()
    intakes(release, BERGEN, "U1", 3, 5)
    intakes(release, STAVANGER, "U1", 1, 2)
    intakes(release, FORDE, "U1", 2, 2)
    rows = run(release, "screening", min_denominator=5)

    def row(level: str, orgnr: str, **keys: Any) -> dict[str, Any]:
        return pick(rows, "screening", 2022, level, orgnr, **keys)

    for orgnr in (STAVANGER, FORDE):
        assert reason(row("provider", orgnr)) == ("min_denominator", None, None)
        assert reason(row("hf", orgnr, context="resident")) == ("min_denominator", None, None)
    for level, unit in (("provider", None), ("hf", None), ("unit", "U1")):
        assert reason(row(level, BERGEN, unit_code=unit)) == ("complementary", None, None)
    assert reason(row("hf", BERGEN, context="resident")) == ("complementary", None, None)
    for context in ("caregiver", "resident"):
        assert counts(row("rhf", HELSE_VEST, context=context)) == (6, 9)
        assert counts(row("nation", NATION, context=context)) == (6, 9)
    # With its own 1/2 known, Stavanger has Førde and Bergen as two unknowns in one sum:
    # neither is determined; nor Stavanger to Førde or Bergen, nor anything to the public.
    assert determined(rows, "screening", 2022, STAVANGER) == set()
    assert determined(rows, "screening", 2022, FORDE) == set()
    assert_nobody_recovers(rows, "screening", 2022)
    # The check itself: with Bergen shown (the old rule), Stavanger does find Førde's rows.
    shown = [
        r | {"suppressed": False, "suppression_reason": None} if r["orgnr"] == BERGEN else r
        for r in rows
    ]
    assert determined(shown, "screening", 2022, STAVANGER) == {
        ("caregiver", "provider", FORDE, None),
        ("caregiver", "hf", FORDE, None),
        ("caregiver", "unit", FORDE, "U1"),
        ("resident", "hf", FORDE, None),
    }


def test_a_hidden_rhf_with_one_hidden_provider_would_name_its_sibling(tiny: Factory) -> None:
    """Screening 2022, minimum 5: OUS 3/4, so Helse Sør-Øst 3/4, under the minimum; Helse Vest:
    Bergen 10/12, Stavanger 5/8 (20); the nation 18/24. Helse Vest is hidden (the nation minus
    it would be Helse Sør-Øst), and under it, as under any hidden parent, Stavanger (8 < 12).
    The parent hidden, one child hidden: Stavanger knows its own 5/8, so Helse Vest as
    Bergen + Stavanger, and so Helse Sør-Øst (OUS) as the nation minus Helse Vest: that exposes,
    so Bergen is hidden too (before, it was shown). The same in the resident context."""
    release = tiny()
    intakes(release, OUS, "U1", 3, 4)
    intakes(release, BERGEN, "U1", 10, 12)
    intakes(release, STAVANGER, "U1", 5, 8)
    rows = run(release, "screening", min_denominator=5)

    def row(level: str, orgnr: str, context: str) -> dict[str, Any]:
        return pick(rows, "screening", 2022, level, orgnr, context=context)

    assert reason(row("provider", OUS, "caregiver")) == ("min_denominator", None, None)
    for context in ("caregiver", "resident"):
        assert reason(row("rhf", HELSE_SOR_OST, context)) == ("min_denominator", None, None)
        assert reason(row("rhf", HELSE_VEST, context)) == ("complementary", None, None)
        assert counts(row("nation", NATION, context)) == (18, 24)
    for level, context in (("provider", "caregiver"), ("hf", "caregiver"), ("hf", "resident")):
        for orgnr in (STAVANGER, BERGEN):
            hidden = row(level, orgnr, context)
            assert reason(hidden) == ("complementary", None, None)
    assert determined(rows, "screening", 2022, STAVANGER) == set()
    assert_nobody_recovers(rows, "screening", 2022)


def test_an_rhf_whose_only_providers_are_small_is_hidden(tiny: Factory) -> None:
    """Screening 2022, minimum 5: Helse Vest has only Stavanger 1/3 and Bergen 2/4, both under the
    minimum, the RHF 3/7 over it; Helse Sør-Øst: OUS 10/12; the nation 13/19. Two unknowns for
    the public, but Stavanger would find Bergen as the RHF minus itself, and no published child
    is left to hide: Helse Vest is hidden (before, it was shown). Then, in the nation's group,
    Helse Sør-Øst (the public's rule) and under it OUS, its only provider; OUS knows Helse
    Sør-Øst and so Helse Vest (19 − 12), which leaves it Stavanger and Bergen, two unknowns.
    The nation stays shown. The same in the resident context."""
    release = tiny()
    intakes(release, STAVANGER, "U1", 1, 3)
    intakes(release, BERGEN, "U1", 2, 4)
    intakes(release, OUS, "U1", 10, 12)
    rows = run(release, "screening", min_denominator=5)

    def row(level: str, orgnr: str, context: str) -> dict[str, Any]:
        return pick(rows, "screening", 2022, level, orgnr, context=context)

    for context in ("caregiver", "resident"):
        child = "provider" if context == "caregiver" else "hf"
        for orgnr in (STAVANGER, BERGEN):
            assert reason(row(child, orgnr, context)) == ("min_denominator", None, None)
        assert reason(row("rhf", HELSE_VEST, context)) == ("complementary", None, None)
        assert row("rhf", HELSE_VEST, context)["denominator"] == 7
        assert reason(row("rhf", HELSE_SOR_OST, context)) == ("complementary", None, None)
        assert reason(row(child, OUS, context)) == ("complementary", None, None)
        assert counts(row("nation", NATION, context)) == (13, 19)
    assert determined(rows, "screening", 2022, STAVANGER) == set()
    assert determined(rows, "screening", 2022, BERGEN) == set()
    assert_nobody_recovers(rows, "screening", 2022)


def test_a_low_coverage_provider_beside_a_small_one_hides_a_third(tiny: Factory) -> None:
    """Screening 2022, minimum 5, Helse Vest: Vestly 3/3 (under the minimum), Stavanger 5/8 with
    coverage 8/20 (under 60 %: low_coverage), Bergen 10/12 (NPR 12). For the public two
    unknowns, as before; but Stavanger knows its own 5/8 (low coverage hides it for quality,
    not from Stavanger) and would find Vestly as 18 − 10 − 5: Bergen is hidden too (before, it
    was shown). A low_coverage row protects like any unknown and sets nothing off: it is the
    small Vestly that needs the third."""
    release = tiny()
    intakes(release, VESTLY, "U1", 3, 3, home_hf_orgnr=None)
    intakes(release, STAVANGER, "U1", 5, 8)
    intakes(release, BERGEN, "U1", 10, 12)
    release.npr(STAVANGER, 2022, 20).npr(BERGEN, 2022, 12)
    rows = run(release, "screening", "coverage", min_denominator=5)

    def row(level: str, orgnr: str) -> dict[str, Any]:
        return pick(rows, "screening", 2022, level, orgnr)

    assert reason(row("provider", VESTLY)) == ("min_denominator", None, None)
    assert reason(row("provider", STAVANGER)) == ("low_coverage", None, None)
    for level in ("provider", "hf"):
        assert reason(row(level, BERGEN)) == ("complementary", None, None)
    assert counts(row("rhf", HELSE_VEST)) == (18, 23)
    assert determined(rows, "screening", 2022, STAVANGER) == set()
    assert_nobody_recovers(rows, "screening", 2022)


def assert_nothing_alike(rows: list[dict[str, Any]], truth: list[dict[str, Any]]) -> None:
    for reader in readers(rows, "screening", 2022):
        assert alike(rows, truth, "screening", 2022, reader) == set(), reader


def test_hidden_units_all_100_or_all_0_percent_hide_a_unit_that_breaks_it(tiny: Factory) -> None:
    """The reviewer's pattern within a provider. Screening 2022, minimum 5.

    Bergen 22/28: U1 3/3, U2 6/6, U3 5/9, U4 8/10. U1 is under the minimum, U2 (6, the smallest
    published) hidden beside it: 22 − 5 − 8 = 9 of 6 + 3 = 9, every hidden intake screened, so
    U1's 3 are known to be 3/3. The smallest published unit under 100 %, U3 (9), is hidden too
    (hidden 14/18); U4 stays shown (before, U3 was shown).
    Stavanger 4/24: U1 0/2, U2 0/6, U3 0/7, U4 4/9. U1 and U2 hidden: 4 − 0 − 4 = 0 of 8. U3
    (7) would not help (0/7), so U4 (9), the smallest with a screened intake, is hidden
    (hidden 4/17); U3 stays shown (before, U4 was shown). The providers, the RHF (26/52) and
    the resident rows keep two unknowns nowhere: nothing else is hidden."""
    release = tiny()
    for unit, screened, total in (("U1", 3, 3), ("U2", 6, 6), ("U3", 5, 9), ("U4", 8, 10)):
        intakes(release, BERGEN, unit, screened, total)
    for unit, screened, total in (("U1", 0, 2), ("U2", 0, 6), ("U3", 0, 7), ("U4", 4, 9)):
        intakes(release, STAVANGER, unit, screened, total)
    rows = run(release, "screening", min_denominator=5)

    def unit_row(orgnr: str, code: str) -> dict[str, Any]:
        return pick(rows, "screening", 2022, "unit", orgnr, unit_code=code)

    assert reason(unit_row(BERGEN, "U1")) == ("min_denominator", None, None)
    assert reason(unit_row(BERGEN, "U2")) == ("complementary", None, None)
    assert (reason(unit_row(BERGEN, "U3")), unit_row(BERGEN, "U3")["denominator"]) == (
        ("complementary", None, None),
        9,
    )
    assert counts(unit_row(BERGEN, "U4")) == (8, 10)
    assert reason(unit_row(STAVANGER, "U1")) == ("min_denominator", None, None)
    assert reason(unit_row(STAVANGER, "U2")) == ("complementary", None, None)
    assert counts(unit_row(STAVANGER, "U3")) == (0, 7)
    assert (reason(unit_row(STAVANGER, "U4")), unit_row(STAVANGER, "U4")["denominator"]) == (
        ("complementary", None, None),
        9,
    )
    assert counts(pick(rows, "screening", 2022, "provider", BERGEN)) == (22, 28)
    assert counts(pick(rows, "screening", 2022, "provider", STAVANGER)) == (4, 24)
    assert counts(pick(rows, "screening", 2022, "rhf", HELSE_VEST)) == (26, 52)
    assert not [r for r in rows if r["level"] != "unit" and r["suppressed"]]
    assert_nobody_recovers(rows, "screening", 2022)
    assert_nothing_alike(rows, run(release, "screening"))


def test_hidden_rows_below_a_hidden_provider_all_100_percent_to_a_trust(tiny: Factory) -> None:
    """Screening 2022, minimum 5, Helse Vest (homes: the providers' own HFs): Fonna 3/3 (U1),
    Stavanger 11/13 (U1 6/6, U2 5/7), Førde 14/16 (U1), Bergen 20/25 (U1); the RHF 48/57.

    Fonna is under the minimum; Stavanger (13, the smallest published) is hidden beside it,
    and Førde (16) under the respondent rule (Stavanger would find Fonna as the RHF minus
    itself and Bergen); under Stavanger its smaller unit U1 (6 < 7), under Førde its only unit.
    Each hidden provider, as a group, is not all 100 %: Fonna and Stavanger are 14/16. But
    Stavanger's U2 is published: Førde, which knows its own 14/16, finds 48 − 20 − 14 − 5 = 9
    of 57 − 25 − 16 − 7 = 9 for Fonna and Stavanger's U1, 100 %: Fonna's 3 are known to be
    screened. Of the published rows below the RHF under 100 %, Stavanger's U2 (7) is the
    smallest (Bergen 25): it is hidden too (before, it was shown). Førde then has 14/16 hidden,
    and the other readers: the public 28/32, Stavanger 17/19, Fonna 25/29. The resident
    context has no units: Fonna, Stavanger and Førde are hidden there, Bergen is shown (20/25),
    and no reader finds the hidden HFs alike (Førde: Fonna and Stavanger, 14/16)."""
    fonna = "983974694"
    release = tiny()
    intakes(release, fonna, "U1", 3, 3)
    intakes(release, STAVANGER, "U1", 6, 6)
    intakes(release, STAVANGER, "U2", 5, 7)
    intakes(release, FORDE, "U1", 14, 16)
    intakes(release, BERGEN, "U1", 20, 25)
    rows = run(release, "screening", min_denominator=5)

    def row(level: str, orgnr: str, **keys: Any) -> dict[str, Any]:
        return pick(rows, "screening", 2022, level, orgnr, **keys)

    hidden = row("unit", STAVANGER, unit_code="U2")
    assert (reason(hidden), hidden["denominator"]) == (("complementary", None, None), 7)
    assert reason(row("unit", STAVANGER, unit_code="U1")) == ("complementary", None, None)
    assert reason(row("provider", fonna)) == ("min_denominator", None, None)
    for orgnr in (STAVANGER, FORDE):
        assert reason(row("provider", orgnr)) == ("complementary", None, None)
        assert reason(row("hf", orgnr, context="resident")) == ("complementary", None, None)
    assert reason(row("hf", fonna, context="resident")) == ("min_denominator", None, None)
    assert counts(row("provider", BERGEN)) == (20, 25)
    assert counts(row("hf", BERGEN, context="resident")) == (20, 25)
    for context in ("caregiver", "resident"):
        assert counts(row("rhf", HELSE_VEST, context=context)) == (48, 57)
    assert_nobody_recovers(rows, "screening", 2022)
    assert_nothing_alike(rows, run(release, "screening"))


def test_small_providers_all_100_percent_hide_a_large_one_then_the_rhf(tiny: Factory) -> None:
    """The reviewer's case (plan 2019: the RHF 26/34 minus a provider's 13/21 left 13/13 for
    the three hidden ones). Screening 2022, minimum 5, homes the providers' own HFs. Helse
    Vest: Fonna 2/2 and Førde 4/4 under the minimum, Stavanger 9/9, Bergen 13/21 (the RHF
    28/36); Helse Sør-Øst: OUS 10/12; the nation 38/48.

    Fonna and Førde are hidden, Stavanger (9) beside them under the respondent rule (Fonna
    would find Førde). Then the RHF minus Bergen is 15/15: all three 100 %. Bergen, the one
    published provider, is under 100 %: it is hidden (before, shown). Bergen knows its own
    13/21 and still finds the other three 15/15, and no published provider is left: the RHF
    is hidden (before, shown). The nation's group then has one hidden RHF: Helse Sør-Øst is
    hidden as the smallest (only) other, and OUS, its only provider, below it. OUS knows its
    own row and so Helse Sør-Øst and Helse Vest (38/48 − 10/12 = 28/36), which leaves it four
    hidden providers at 28/36. The same in the resident context. The nation stays shown."""
    fonna = "983974694"
    release = tiny()
    intakes(release, fonna, "U1", 2, 2)
    intakes(release, FORDE, "U1", 4, 4)
    intakes(release, STAVANGER, "U1", 9, 9)
    intakes(release, BERGEN, "U1", 13, 21)
    intakes(release, OUS, "U1", 10, 12)
    rows = run(release, "screening", min_denominator=5)

    def row(level: str, orgnr: str, context: str) -> dict[str, Any]:
        return pick(rows, "screening", 2022, level, orgnr, context=context)

    for context, child in (("caregiver", "provider"), ("resident", "hf")):
        for orgnr in (fonna, FORDE):
            assert reason(row(child, orgnr, context)) == ("min_denominator", None, None)
        for orgnr in (STAVANGER, BERGEN, OUS):
            assert reason(row(child, orgnr, context)) == ("complementary", None, None)
        for orgnr, denominator in ((HELSE_VEST, 36), (HELSE_SOR_OST, 12)):
            hidden = row("rhf", orgnr, context)
            assert (reason(hidden), hidden["denominator"]) == (
                ("complementary", None, None),
                denominator,
            )
        assert counts(row("nation", NATION, context)) == (38, 48)
    assert reason(row("hf", BERGEN, "caregiver")) == ("complementary", None, None)
    assert_nobody_recovers(rows, "screening", 2022)
    assert_nothing_alike(rows, run(release, "screening"))


def test_rows_without_a_home_hf_all_100_percent_with_the_hidden_hfs(tiny: Factory) -> None:
    """Screening 2022, minimum 5: Bergen U1 10/12 (homes Bergen) and U2 3/3 without a home HF,
    Stavanger 8/8, OUS 9/9. The caregiver nation (30/32) minus the resident nation (27/29)
    would be the 3 rows: the resident nation is hidden, then Helse Sør-Øst and OUS, Helse
    Vest and Stavanger (as in the test of 3/3 rows above). Left shown: Bergen's resident
    row, 10/12. The caregiver nation minus it is 20/20: the 3 rows, Stavanger's 8 and OUS's 9
    residents all screened. Bergen, under 100 %, is hidden as well (before, shown); the public
    then has 30/32 for the four. (Bergen itself, knowing its own 10/12, still has the 20/20:
    nothing below the nation is left to hide and the nation is never hidden; the 3 rows are
    Bergen's own patients here.) Caregiver: Bergen's U2 and, beside it, U1 hidden (13/15)."""
    release = tiny()
    intakes(release, BERGEN, "U1", 10, 12)
    intakes(release, BERGEN, "U2", 3, 3, home_hf_orgnr=None)
    intakes(release, STAVANGER, "U1", 8, 8)
    intakes(release, OUS, "U1", 9, 9)
    rows = run(release, "screening", min_denominator=5)

    def row(level: str, orgnr: str, context: str = "resident") -> dict[str, Any]:
        return pick(rows, "screening", 2022, level, orgnr, context=context)

    assert counts(row("nation", NATION, "caregiver")) == (30, 32)
    hidden = [
        ("nation", NATION),
        ("rhf", HELSE_SOR_OST),
        ("hf", OUS),
        ("rhf", HELSE_VEST),
        ("hf", STAVANGER),
        ("hf", BERGEN),
    ]
    for level, orgnr in hidden:
        assert reason(row(level, orgnr)) == ("complementary", None, None)
    assert row("hf", BERGEN)["denominator"] == 12
    for orgnr, shown in ((BERGEN, (13, 15)), (STAVANGER, (8, 8)), (OUS, (9, 9))):
        assert counts(row("provider", orgnr, "caregiver")) == shown
    assert_nobody_recovers(rows, "screening", 2022)
    truth = run(release, "screening")
    assert alike(rows, truth, "screening", 2022, None) == set()
    assert alike(rows, truth, "screening", 2022, BERGEN) == {("caregiver", "nation", NATION, None)}


def test_units_all_100_percent_below_a_low_coverage_provider_hide_its_sibling(
    tiny: Factory,
) -> None:
    """The reviewer's case (coverage and screening 2022, minimum 5): Stavanger U1 2/2 and U2
    3/3, both under the minimum, the provider 5/5 with coverage 5/15 (low_coverage); Førde
    4/31 (U1; NPR 31); Helse Vest 9/36; Helse Sør-Øst: OUS 10/12 (U1; no NPR count); the
    nation 19/48. Homes: the providers' own HFs.

    Stavanger is Helse Vest's one hidden child, low_coverage: every reader may work it out
    (9/36 − 4/31 = 5/5), which names both its units 100 %. Its units' group has no published
    row left to hide, and Stavanger is hidden already, so it is protected one level up as if
    hidden for disclosure: Førde, its one published sibling, is hidden (complementary), and
    under it its only unit. Førde then knows its own 4/31 and would find Stavanger again: no
    published sibling is left, so Helse Vest is hidden; in the nation's group, Helse Sør-Øst
    beside it, and OUS (and its unit) below that, as in the test of an RHF whose only
    providers are small. OUS, knowing Helse Sør-Øst and so Helse Vest, has Stavanger's units
    and Førde's 9/36 hidden. The nation stays shown. (Before, only Stavanger and its units
    were hidden.) The resident context has no small row and no low coverage: nothing is
    hidden there (a resident HF beside its caregiver provider is not guarded against)."""
    release = tiny()
    intakes(release, STAVANGER, "U1", 2, 2)
    intakes(release, STAVANGER, "U2", 3, 3)
    intakes(release, FORDE, "U1", 4, 31)
    intakes(release, OUS, "U1", 10, 12)
    release.npr(STAVANGER, 2022, 15).npr(FORDE, 2022, 31)
    rows = run(release, "coverage", "screening", min_denominator=5)
    screening = [r for r in rows if r["indicator_id"] == "screening"]

    def row(level: str, orgnr: str, **keys: Any) -> dict[str, Any]:
        return pick(rows, "screening", 2022, level, orgnr, **keys)

    hidden = {
        (r["context"], r["level"], r["orgnr"], r["unit_code"]): (
            r["suppression_reason"],
            r["denominator"],
        )
        for r in screening
        if r["suppressed"]
    }
    assert hidden == {
        ("caregiver", "provider", STAVANGER, None): ("low_coverage", 5),
        ("caregiver", "hf", STAVANGER, None): ("low_coverage", 5),
        ("caregiver", "unit", STAVANGER, "U1"): ("min_denominator", 2),
        ("caregiver", "unit", STAVANGER, "U2"): ("min_denominator", 3),
        ("caregiver", "provider", FORDE, None): ("complementary", 31),
        ("caregiver", "hf", FORDE, None): ("complementary", 31),
        ("caregiver", "unit", FORDE, "U1"): ("complementary", 31),
        ("caregiver", "rhf", HELSE_VEST, None): ("complementary", 36),
        ("caregiver", "rhf", HELSE_SOR_OST, None): ("complementary", 12),
        ("caregiver", "provider", OUS, None): ("complementary", 12),
        ("caregiver", "hf", OUS, None): ("complementary", 12),
        ("caregiver", "unit", OUS, "U1"): ("complementary", 12),
    }
    assert all(r["numerator"] is None and r["value"] is None for r in screening if r["suppressed"])
    assert counts(row("nation", NATION)) == (19, 48)
    for orgnr, shown in ((STAVANGER, (5, 5)), (FORDE, (4, 31)), (OUS, (10, 12))):
        assert counts(row("hf", orgnr, context="resident")) == shown
    assert_nobody_recovers(rows, "screening", 2022)
    assert_nothing_alike(rows, run(release, "screening"))


def test_counts_shared_by_definitions_are_hidden_alike(tiny: Factory) -> None:
    """Coverage's numerator is the intakes, screening's and research consent's denominator.
    Helse Vest 2022, minimum 5: Vestly 4 intakes (NPR 6), Stavanger 8 (NPR 9), Bergen 12 (NPR
    12); OUS 30 in Helse Sør-Øst. Screening hides Vestly (4) and, by the respondent rule,
    Stavanger and Bergen; coverage, whose minimum applies to NPR's 6, published Vestly's 4
    intakes (4/6) and its siblings' 8 and 12. Now coverage hides what the intakes' pattern
    hides."""
    release = tiny()
    for provider, screened, total in ((VESTLY, 3, 4), (STAVANGER, 5, 8), (BERGEN, 10, 12)):
        home = {"home_hf_orgnr": FORDE} if provider == VESTLY else {}
        for i in range(total):
            # Every second one consents: no provider's hidden rows are all 0 % or all 100 %.
            release.basis(
                f"{provider}-{i}", provider, audit=5 if i < screened else None,
                research_consent=i % 2, **home,
            )  # fmt: skip
    intakes(release, OUS, "U1", 25, 30, research_consent=1)
    release.npr(VESTLY, 2022, 6).npr(STAVANGER, 2022, 9).npr(BERGEN, 2022, 12)
    release.npr(OUS, 2022, 30)
    ids = ("screening", "research_consent", "coverage")
    rows = run(release, *ids, min_denominator=5)

    def row(indicator: str, level: str, orgnr: str) -> dict[str, Any]:
        return pick(rows, indicator, 2022, level, orgnr)

    for orgnr in (VESTLY, STAVANGER, BERGEN):
        assert row("screening", "provider", orgnr)["suppressed"]
        coverage = row("coverage", "provider", orgnr)
        assert reason(coverage) == ("complementary", None, None), orgnr
        assert coverage["denominator"] == {VESTLY: 6, STAVANGER: 9, BERGEN: 12}[orgnr]
    assert counts(row("coverage", "rhf", HELSE_VEST)) == (24, 27)
    assert counts(row("coverage", "provider", OUS)) == (30, 30)
    for indicator in ids:
        assert_nobody_recovers(rows, indicator, 2022)
    # Every caregiver row of the three is hidden in all or in none (coverage has no unit rows).
    hidden = {
        indicator: {
            (r["level"], r["orgnr"], r["unit_code"])
            for r in rows
            if r["indicator_id"] == indicator and r["context"] == "caregiver" and r["suppressed"]
        }
        for indicator in ids
    }
    assert hidden["screening"] == hidden["research_consent"]
    assert hidden["coverage"] == {key for key in hidden["screening"] if key[0] != "unit"}
    assert len(hidden["coverage"]) == 5  # three providers, the two hf rows of the HFs
