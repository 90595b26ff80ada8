"""Researcher aggregates' true tables against a plain-Python reference (differential test).

`service.aggregates.compute_tables` returns the true counts and cell keys of every requested
measure over every cell and margin, before perturbation and suppression (`protect`). This module
recomputes them from the release's rows, one cell at a time, the slow and obvious way, and
compares every cell and every margin on small random releases written with the indicators'
`TinyRelease` factory.

The rules the reference encodes (module docstring of `service.aggregates`, README's researcher
aggregates section, `schemas.api.AggregateCreate`, `/work/shared/brief/DOMAIN.md`):

- An episode is (provider_orgnr, episode_id). The same episode id at another provider is another
  episode. An episode is counted once, with the columns of its first basis row by
  (intake_date, record_id), record ids compared as strings ("r10" < "r2"): its patient, sex,
  age, treatment type, primary substance and provider.
- Its year is the year of that first row's intake date (a re-sent intake in the next year moves
  nothing). The year categories are the years of the release's episodes, sorted.
- Its discharge is the discharge row with the same provider and episode id; a discharge without
  a basis row counts nowhere.
- Measures: `episodes` counts episodes; `patients` counts distinct patient keys; `mutual_end`
  counts episodes whose discharge has end reason 1; `followup_arranged` episodes whose
  discharge has follow-up arranged = 1 (an episode without discharge counts in neither);
  `study` counts distinct patients having, in the cell, an episode with a clinical-study id.
- Every margin is a cell of its own over its own records: a margin counts every episode whose
  other coordinates match, so distinct patients are counted once per margin, not summed over
  the cells (a patient of two providers is 1 in the total, 1 in each provider).
- Categories are fixed (code lists, hierarchy, release years), not taken from the data:
  rhf = the hierarchy's RHFs, provider = its HFs and private providers, sex / treatment type /
  primary substance = the code lists, age group = 13-17, 18-24, 25-34, 35-44, 45-54, 55-64,
  65+ (bounds inclusive, completed years), end reason = the code list and "none".
- Cell keys (checked as well as counts): a patient's record key is the first 4 bytes of
  sha256(salt ‖ patient_key); an episode measure's cell key sums the key once per counted
  episode, a patient measure's once per distinct counted patient, mod 2^32.
- Filters select cells, never records: the true table is the same with or without them.

Rules taken from the code's docstrings and hand-worked tests (`tests/service/test_aggregates.py`)
where the spec is silent or ambiguous:

- `study` looks at all of the episode's records, not only its first basis row: an episode is in
  a study when any of its basis or measurement rows (the forms with a study id) carries one
  (DOMAIN.md's study indicator: "any of the patient's records"; `_fill_episode_view`,
  `test_an_episode_with_two_basis_records_counts_once_with_its_first`). A measurement of an
  episode without a basis row counts nowhere.
- An episode without discharge is in the end-reason category "none" (`NO_DISCHARGE`).
- Age groups: the labels and inclusive bounds of `indicators.statistics.AGE_BANDS` (the spec
  names no bands), written out here rather than imported; ages are 13..110 (`schemas.forms`).
- The year of an episode is the first row's intake year (the warehouse's `year=` partition of
  the basis table). `study` is counted in that year, not (as DOMAIN.md's study *indicator*)
  in every year in which a record carries a study id.
- Two discharges of one episode (a validation error): the latest by discharge date counts
  (`_fill_episode_view`'s comment). Generated only with distinct dates: a tie has no "latest".
- A provider outside the hierarchy (e.g. "999999999") is in no provider category and in no RHF
  category: it counts only in the margins over those dimensions (`compute_tables`' comment
  "an unknown provider: counted only in the margins"), and its episodes' years are years.
- `compute_tables` returns `mutual_end` itself even when end_reason is a dimension (the
  published answer then shows the episodes table's end-reason-1 slice instead, which has the
  same true counts in those cells); the reference checks the true mutual_end table, and that
  slice (`_mutual_end_slice`) of the service's true episodes table against it.

Two patients whose 32-bit record keys collide each add their key to a patient cell
(`test_patients_with_colliding_record_keys_each_add_their_key`, a pair found by search); the
random releases' patients p0..p4 have no colliding keys (checked in
`test_the_patient_pool_has_no_record_key_collision`).
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, get_args

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.api import AggregateCreate, Dimension, Measure
from schemas.codes import END_REASON, PRIMARY_SUBSTANCE, SEX, TREATMENT_TYPE
from schemas.organisations import Hierarchy
from service.aggregates import MeasureTable, _mutual_end_slice, cell_key_salt, compute_tables
from tests.indicators.conftest import BERGEN, OUS, STAVANGER, VESTLY, TinyRelease

OUTSIDE: Final = "999999999"  # an orgnr in no hierarchy
HELSE_VEST: Final = "983658725"
HELSE_SOR_OST: Final = "991324968"
PSEUDONYM_KEY: Final = b"aggregates-reference-key"
SALT: Final = cell_key_salt(PSEUDONYM_KEY)
MODULUS: Final = 2**32
DIMENSIONS: Final[tuple[str, ...]] = get_args(Dimension)
MEASURES: Final[tuple[str, ...]] = get_args(Measure)
AGE_BANDS: Final = (
    ("13-17", 13, 17),
    ("18-24", 18, 24),
    ("25-34", 25, 34),
    ("35-44", 35, 44),
    ("45-54", 45, 54),
    ("55-64", 55, 64),
    ("65+", 65, 200),
)
MARGIN: Final = None  # a coordinate rolled up into a margin

# Every example writes a release of its own number: the service caches episode views by release
# and file paths, and a fresh number keeps a reused temporary path from meeting an old view.
_release_numbers = itertools.count(1000)

Rows = dict[str, list[dict[str, Any]]]
Cell = tuple[str | None, ...]


# ---------------------------------------------------------------- the reference


@dataclass(frozen=True)
class Episode:
    provider: str
    patient: str
    year: int
    sex: int
    age: int
    treatment_type: int
    primary_substance: int
    study: bool
    end_reason: int | None
    followup_arranged: int | None


def episode_key(row: dict[str, Any]) -> tuple[str, str]:
    return (row["provider_orgnr"], row["episode_id"])


def first_basis_rows(basis: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each episode's first basis row by (intake_date, record_id)."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for row in basis:
        key = episode_key(row)
        if key not in first or (row["intake_date"], row["record_id"]) < (
            first[key]["intake_date"],
            first[key]["record_id"],
        ):
            first[key] = row
    return first


def in_study(records: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """The episodes any of whose records carries a clinical-study id."""
    return {episode_key(row) for row in records if row["clinical_study_id"] is not None}


def discharges(discharge: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each episode's discharge: the latest by discharge date."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in discharge:
        key = episode_key(row)
        if key not in latest or row["discharge_date"] > latest[key]["discharge_date"]:
            latest[key] = row
    return latest


def reference_episodes(rows: Rows) -> list[Episode]:
    first = first_basis_rows(rows["basis"])
    study = in_study(rows["basis"] + rows.get("measurement", []))
    discharged = discharges(rows["discharge"])
    result = []
    for key, row in first.items():
        ended = discharged.get(key)
        result.append(
            Episode(
                provider=row["provider_orgnr"],
                patient=row["patient_key"],
                year=row["intake_date"].year,
                sex=row["sex"],
                age=row["age"],
                treatment_type=row["treatment_type"],
                primary_substance=row["primary_substance"],
                study=key in study,
                end_reason=None if ended is None else ended["end_reason"],
                followup_arranged=None if ended is None else ended["followup_arranged"],
            )
        )
    return result


def reference_categories(dimension: str, hierarchy: Hierarchy, years: Iterable[int]) -> list[str]:
    if dimension == "year":
        return [str(y) for y in sorted(set(years))]
    if dimension == "rhf":
        return sorted(o.orgnr for o in hierarchy.rhfs)
    if dimension == "provider":
        return sorted(o.orgnr for o in hierarchy.providers)
    if dimension == "age_group":
        return [label for label, _, _ in AGE_BANDS]
    if dimension == "end_reason":
        return [*(str(v) for v in sorted(END_REASON.values)), "none"]
    code_list = {
        "sex": SEX,
        "treatment_type": TREATMENT_TYPE,
        "primary_substance": PRIMARY_SUBSTANCE,
    }
    return [str(v) for v in sorted(code_list[dimension].values)]


def category_of(episode: Episode, dimension: str, hierarchy: Hierarchy) -> str | None:
    """The episode's category of a dimension; None when it is in none (counted in margins)."""
    known = episode.provider in hierarchy and hierarchy[episode.provider].is_provider
    if dimension == "year":
        return str(episode.year)
    if dimension == "rhf":
        return hierarchy.rhf_of(episode.provider).orgnr if known else None
    if dimension == "provider":
        return episode.provider if known else None
    if dimension == "sex":
        return str(episode.sex)
    if dimension == "age_group":
        return next((label for label, lo, hi in AGE_BANDS if lo <= episode.age <= hi), None)
    if dimension == "treatment_type":
        return str(episode.treatment_type)
    if dimension == "primary_substance":
        return str(episode.primary_substance)
    assert dimension == "end_reason"
    return "none" if episode.end_reason is None else str(episode.end_reason)


def patient_key(patient: str) -> int:
    """A patient's record key: the first 4 bytes of sha256(salt ‖ patient_key)."""
    return int.from_bytes(hashlib.sha256((SALT + patient).encode()).digest()[:4], "big")


def count_episodes(episodes: Sequence[Episode]) -> tuple[int, int]:
    return len(episodes), sum(patient_key(e.patient) for e in episodes) % MODULUS


def count_patients(episodes: Sequence[Episode]) -> tuple[int, int]:
    patients = {e.patient for e in episodes}
    return len(patients), sum(patient_key(p) for p in patients) % MODULUS


MEASURE_COUNTS: dict[str, Callable[[Sequence[Episode]], tuple[int, int]]] = {
    "episodes": count_episodes,
    "patients": count_patients,
    "mutual_end": lambda es: count_episodes([e for e in es if e.end_reason == 1]),
    "followup_arranged": lambda es: count_episodes([e for e in es if e.followup_arranged == 1]),
    "study": lambda es: count_patients([e for e in es if e.study]),
}


def in_cell(episode: Episode, dimensions: Sequence[str], cell: Cell, hierarchy: Hierarchy) -> bool:
    return all(
        wanted is MARGIN or category_of(episode, dimension, hierarchy) == wanted
        for dimension, wanted in zip(dimensions, cell, strict=True)
    )


def reference_tables(
    rows: Rows, dimensions: Sequence[str], measures: Sequence[str], hierarchy: Hierarchy
) -> tuple[list[list[str]], dict[str, dict[Cell, tuple[int, int]]]]:
    """Categories per dimension and, per measure, (count, cell key) of every cell and margin
    (None for a margin coordinate), each over the episodes in it."""
    episodes = reference_episodes(rows)
    axes = [reference_categories(d, hierarchy, (e.year for e in episodes)) for d in dimensions]
    tables: dict[str, dict[Cell, tuple[int, int]]] = {m: {} for m in measures}
    for cell in itertools.product(*([*axis, MARGIN] for axis in axes)):
        members = [e for e in episodes if in_cell(e, dimensions, cell, hierarchy)]
        for measure in measures:
            tables[measure][cell] = MEASURE_COUNTS[measure](members)
    return axes, tables


# ---------------------------------------------------------------- the service's side


def canonical(dimensions: Iterable[str]) -> list[str]:
    """The order the service computes a table in: the API's list of dimensions."""
    return sorted(dimensions, key=DIMENSIONS.index)


def service_tables(
    release: TinyRelease, request: AggregateCreate, hierarchy: Hierarchy
) -> tuple[list[list[str]], dict[str, MeasureTable]]:
    manifest = release.manifest(next(_release_numbers))
    return compute_tables(manifest, request, salt=SALT, hierarchy=hierarchy)


def as_cells(axes: list[list[str]], table: MeasureTable) -> dict[Cell, tuple[int, int]]:
    """A service table as (count, key) by cell, a margin coordinate as None."""
    labels = [[*axis, MARGIN] for axis in axes]
    assert table.counts.shape == tuple(len(a) for a in labels)
    return {
        tuple(labels[axis][i] for axis, i in enumerate(index)): (
            int(table.counts[index]),
            int(table.keys[index]),
        )
        for index in np.ndindex(table.counts.shape)
    }


def assert_same_tables(
    release: TinyRelease,
    dimensions: list[str],
    measures: list[str],
    filters: dict[str, list[str]] | None = None,
) -> dict[str, dict[Cell, tuple[int, int]]]:
    """The service's true tables equal the reference's, cell by cell (canonical order)."""
    hierarchy = Hierarchy.default()
    request = AggregateCreate.model_validate(
        {"measures": measures, "dimensions": dimensions, "filters": filters or {}}
    )
    axes, tables = service_tables(release, request, hierarchy)
    order = canonical(dimensions)
    expected_axes, expected = reference_tables(release.rows, order, measures, hierarchy)
    assert axes == expected_axes
    for measure in measures:
        got = as_cells(axes, tables[measure])
        wrong = {
            cell: (got[cell], value)
            for cell, value in expected[measure].items()
            if got[cell] != value
        }
        assert not wrong, f"{measure} by {order}: cell: ((service), (reference)) {wrong}"
    if "mutual_end" in measures and "end_reason" in order:
        # Published, mutual_end by end_reason is the episodes table's slice: its true values
        # are the true mutual_end table.
        counts = tables["episodes"].counts
        sliced, _ = _mutual_end_slice((counts, np.zeros(counts.shape, dtype=bool)), order)
        got = as_cells(axes, MeasureTable(sliced, np.zeros_like(sliced)))
        assert {c: n for c, (n, _) in got.items()} == {
            c: n for c, (n, _) in expected["mutual_end"].items()
        }
    return expected


# ---------------------------------------------------------------- random releases

PROVIDER_POOL: Final = (BERGEN, STAVANGER, VESTLY, OUS, OUTSIDE)
EPISODE_IDS: Final = ("e1", "e2", "e3", "e4")
INTAKES: Final = ("2021-12-31", "2022-01-01", "2022-06-30", "2023-01-01")
DISCHARGE_DATES: Final = ("2022-02-01", "2022-12-31", "2023-06-01")
AGES: Final = (13, 17, 18, 24, 25, 34, 35, 44, 45, 54, 55, 64, 65, 110)

Call = tuple[str, dict[str, Any]]


def codes(code_list: Any) -> st.SearchStrategy[int]:
    return st.sampled_from(sorted(code_list.values))


@st.composite
def releases(draw: st.DrawFn) -> list[Call]:
    """Factory calls (basis and discharge rows), in a random order: the factory numbers
    record ids by call order, so the first row by record id is not the first one written."""
    providers = draw(st.lists(st.sampled_from(PROVIDER_POOL), min_size=3, max_size=5, unique=True))
    patients = [f"p{i}" for i in range(draw(st.integers(1, 5)))]
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(providers), st.sampled_from(EPISODE_IDS)),
            min_size=1,
            max_size=12,
            unique=True,
        )
    )
    calls: list[Call] = []
    for provider, episode in keys:
        patient = draw(st.sampled_from(patients))
        for _ in range(draw(st.integers(1, 3))):
            calls.append(
                (
                    "basis",
                    {
                        "episode": episode,
                        "provider": provider,
                        "intake": draw(st.sampled_from(INTAKES)),
                        # Now and then a basis row of another patient (a data error).
                        "patient": draw(
                            st.sampled_from(patients)
                            if draw(st.integers(0, 5)) == 0
                            else st.just(patient)
                        ),
                        "sex": draw(codes(SEX)),
                        "age": draw(st.sampled_from(AGES)),
                        "treatment_type": draw(codes(TREATMENT_TYPE)),
                        "primary_substance": draw(codes(PRIMARY_SUBSTANCE)),
                        "clinical_study_id": draw(st.sampled_from((None, None, "S1", "S2"))),
                    },
                )
            )
        count = draw(st.integers(0, 2))
        dates = draw(
            st.lists(st.sampled_from(DISCHARGE_DATES), min_size=count, max_size=count, unique=True)
        )
        calls.extend(discharge_call(draw, provider, episode, patient, on) for on in dates)
        for _ in range(draw(st.integers(0, 2))):
            calls.append(measurement_call(draw, provider, episode, patient))
    # Discharges of episodes without a basis row (any provider, any id).
    orphans = draw(
        st.lists(
            st.tuples(st.sampled_from(PROVIDER_POOL), st.sampled_from((*EPISODE_IDS, "e5"))),
            max_size=2,
            unique=True,
        )
    )
    for provider, episode in orphans:
        if (provider, episode) not in keys:
            calls.append(discharge_call(draw, provider, episode, patients[0], DISCHARGE_DATES[0]))
            calls.append(measurement_call(draw, provider, episode, patients[0]))
    return draw(st.permutations(calls))


def discharge_call(draw: st.DrawFn, provider: str, episode: str, patient: str, on: str) -> Call:
    return (
        "discharge",
        {
            "episode": episode,
            "provider": provider,
            "patient": patient,
            "on": on,
            "end_reason": draw(codes(END_REASON)),
            "followup_arranged": draw(st.sampled_from((0, 1))),
        },
    )


def measurement_call(draw: st.DrawFn, provider: str, episode: str, patient: str) -> Call:
    return (
        "measurement",
        {
            "episode": episode,
            "provider": provider,
            "patient": patient,
            "clinical_study_id": draw(st.sampled_from((None, None, "S3"))),
        },
    )


def write(root: Path, calls: list[Call]) -> TinyRelease:
    release = TinyRelease(root)
    for form, values in calls:
        getattr(release, form)(**values)
    return release


class TestAgainstReference:
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        calls=releases(),
        dimensions=st.lists(st.sampled_from(DIMENSIONS), min_size=1, max_size=3, unique=True),
        measures=st.lists(st.sampled_from(MEASURES), min_size=1, max_size=5, unique=True),
        data=st.data(),
    )
    def test_every_cell_and_margin(
        self,
        calls: list[Call],
        dimensions: list[str],
        measures: list[str],
        data: st.DataObject,
    ) -> None:
        filters: dict[str, list[str]] = {}
        if data.draw(st.booleans(), label="filtered"):
            # A filter selects cells afterwards: the true table must not change.
            dimension = data.draw(st.sampled_from(dimensions), label="filter on")
            options = reference_categories(dimension, Hierarchy.default(), [2021, 2022, 2023])
            filters[dimension] = data.draw(
                st.lists(st.sampled_from(options), min_size=1, max_size=2, unique=True),
                label="filter",
            )
        with tempfile.TemporaryDirectory() as root:
            assert_same_tables(write(Path(root), calls), dimensions, measures, filters)


class TestHandCounts:
    """The nastiest structures, counted by hand: the reference and the service must both agree."""

    def test_first_basis_row_discharge_and_orphans(self, tmp_path: Path) -> None:
        release = TinyRelease(tmp_path)
        # Record ids follow the call order: r1, r2, ...
        release.basis("x", STAVANGER, intake="2022-12-31", patient="p1", treatment_type=1)  # r1
        release.basis(
            "x", BERGEN, intake="2022-05-01", patient="p1", treatment_type=2, clinical_study_id="S1"
        )  # r2
        release.basis("x", STAVANGER, intake="2023-01-02", patient="p1", treatment_type=4)  # r3
        release.discharge("x", BERGEN, on="2022-06-01", end_reason=2, followup_arranged=0)  # r4
        release.discharge("x", BERGEN, on="2022-08-01", end_reason=1, followup_arranged=1)  # r5
        release.discharge("x", VESTLY, on="2022-08-01", end_reason=1, followup_arranged=1)  # r6
        release.discharge("y", STAVANGER, on="2022-08-01", end_reason=1)  # r7
        release.basis("z", OUS, intake="2023-03-01", patient="p2", treatment_type=5)  # r8
        release.discharge("z", OUS, on="2023-04-01", end_reason=3, followup_arranged=1)  # r9
        release.basis("x", BERGEN, intake="2022-05-01", patient="p1", treatment_type=3)  # r10
        # Three episodes. (BERGEN, x): r2 and r10 on the same day, "r10" < "r2": type 3, in a
        # study through r2, discharged by r5 (the later of r4, r5): mutual end, follow-up.
        # (STAVANGER, x): r1 (2022, type 1), r3 re-sent in 2023; never discharged (r7 is "y").
        # (OUS, z): 2023, type 5, end reason 3, follow-up. VESTLY's r6 has no basis row.
        measures = ["episodes", "patients", "mutual_end", "followup_arranged", "study"]
        table = assert_same_tables(release, ["treatment_type", "year"], measures)
        expected: dict[str, dict[Cell, int]] = {
            "episodes": {
                ("2022", "1"): 1,
                ("2022", "2"): 0,
                ("2022", "3"): 1,
                ("2023", "4"): 0,
                ("2023", "5"): 1,
                ("2022", None): 2,
                ("2023", None): 1,
                (None, None): 3,
            },
            # p1 twice in 2022: once in the year's margin.
            "patients": {("2022", "1"): 1, ("2022", "3"): 1, ("2022", None): 1, (None, None): 2},
            "mutual_end": {("2022", "3"): 1, ("2022", None): 1, (None, "1"): 0, (None, None): 1},
            "followup_arranged": {("2022", "3"): 1, ("2023", "5"): 1, (None, None): 2},
            "study": {("2022", "3"): 1, ("2022", "1"): 0, (None, None): 1},
        }
        for measure, cells in expected.items():
            assert {cell: table[measure][cell][0] for cell in cells} == cells, measure
        by_end = assert_same_tables(release, ["end_reason"], ["episodes", "mutual_end"])
        assert {c: n for c, (n, _) in by_end["episodes"].items()} == {
            ("1",): 1,
            ("2",): 0,
            ("3",): 1,
            ("4",): 0,
            ("9",): 0,
            ("none",): 1,
            (None,): 3,
        }

    def test_a_study_id_at_a_measurement_point_enrols(self, tmp_path: Path) -> None:
        """The study measure read the basis rows alone: a patient enrolled at a measurement
        point was in the study indicator's numerator but not in this one."""
        release = TinyRelease(tmp_path)
        release.basis("e1", BERGEN, patient="p1").basis("e2", BERGEN, patient="p2")
        release.measurement("e1", BERGEN, patient="p1", clinical_study_id="S1")
        release.measurement("e3", BERGEN, patient="p3", clinical_study_id="S1")  # no basis row
        table = assert_same_tables(release, ["provider"], ["patients", "study"])
        assert (table["patients"][(BERGEN,)][0], table["study"][(BERGEN,)][0]) == (2, 1)

    def test_patients_margins_and_a_provider_outside_the_hierarchy(self, tmp_path: Path) -> None:
        release = TinyRelease(tmp_path)
        for provider in (BERGEN, STAVANGER, OUTSIDE):
            release.basis("e1", provider, patient="p1")
        release.basis("e1", VESTLY, patient="p2").basis("e1", OUS, patient="p2")
        table = assert_same_tables(release, ["provider", "rhf"], ["episodes", "patients"])
        episodes = {c: n for c, (n, _) in table["episodes"].items() if n}
        patients = {c: n for c, (n, _) in table["patients"].items() if n}
        # Cells are (rhf, provider), the canonical order. 999999999's episode is in no provider
        # and no RHF: only in the grand total.
        assert episodes == {
            (HELSE_VEST, BERGEN): 1,
            (HELSE_VEST, STAVANGER): 1,
            (HELSE_VEST, VESTLY): 1,
            (HELSE_SOR_OST, OUS): 1,
            (None, BERGEN): 1,
            (None, STAVANGER): 1,
            (None, VESTLY): 1,
            (None, OUS): 1,
            (HELSE_VEST, None): 3,
            (HELSE_SOR_OST, None): 1,
            (None, None): 5,
        }
        # Distinct patients per cell: p1 and p2 in Helse Vest, 2 in all (not 4, not 5).
        assert patients == dict.fromkeys(episodes, 1) | {
            (HELSE_VEST, None): 2,
            (None, None): 2,
        }


def test_the_patient_pool_has_no_record_key_collision() -> None:
    assert len({patient_key(f"p{i}") for i in range(5)}) == 5


# Two patient keys whose record keys collide under SALT (found by a birthday search).
COLLIDING: Final = ("collide-5533", "collide-19768")


def test_patients_with_colliding_record_keys_each_add_their_key(tmp_path: Path) -> None:
    """Two patients with equal 32-bit record keys add the key twice to a patient cell (the
    service's sum(DISTINCT rkey) added it once)."""
    first, second = COLLIDING
    if patient_key(first) != patient_key(second):
        pytest.fail("the two patient keys no longer collide under SALT")
    release = TinyRelease(tmp_path)
    release.basis("e1", BERGEN, patient=first).basis("e2", BERGEN, patient=second)
    assert_same_tables(release, ["provider"], ["patients"])
