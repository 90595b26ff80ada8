"""`validation.cross_record.check` against a plain-Python reference of its checks, on small
random incoming files and stored tables.

The reference is written from the module docstring, docs/interfaces.md's check table, DOMAIN.md
and EXTRACT_SPEC.md, not from the SQL. Its rules:

- An episode is `(provider_orgnr, episode_id)`.
- A record of the incoming file whose `record_id` equals that of a stored record of the *same
  form* supersedes it: the stored record is left out of every comparison (the spec keeps record
  ids unique within a form; a stored record of another form is never superseded).
- `cross.no_intake` (follow-on forms): no stored basis record of the episode. Only stored basis
  records count (the basis of the same upload arrives in its own file).
- `cross.before_intake` (measurement, discharge): the event date is before the episode's intake,
  its earliest stored basis `intake_date`; on the day passes.
- `cross.duplicate_discharge` / `cross.duplicate_followup`: another record of the form for the
  episode under another `record_id`, stored (not superseded) or in the file; every row of such a
  pair fails.
- `cross.followup_before_discharge`: the `followup_date` is before a stored discharge of the
  episode. With several stored discharges (themselves an error) it is before any of them, i.e.
  before the latest (taken from the code: the spec has only one discharge per episode).
- `cross.inconsistent_demographics` (basis): another basis record of the episode (stored, not
  superseded, or in the file) under another `record_id` whose age or sex differs.
- `cross.overlapping_inpatient` (basis, warning): the incoming row is inpatient (treatment type
  2 or 3) and another episode of the same patient has an inpatient basis record, and the two
  episodes' intervals overlap: each starts strictly before the other ends. An episode runs from
  its intake to its discharge; without a stored discharge it is open-ended. Per basis row (taken
  from the code's docstring and tests): the row's own `patient_key` and `treatment_type` say
  whose and whether inpatient, and a row's interval starts at its own `intake_date`; the end is
  the episode's earliest stored discharge (several discharges are an error of their own).

No column the checks read may be null in the typed incoming file (the loader checks only rows
that passed the suite, whose required columns are filled) or in the warehouse (`warehouse_schema`
makes them non-nullable), so the random tables hold no nulls there; they collide on purpose: two
providers, three episode ids, three patients, nine dates within five weeks, and record ids from a
pool shared by the file and the stored table of its form.

Ambiguous, taken from the code: the overlap interval of an incoming basis row starts at the row's
own intake_date, not at its episode's earliest one. A basis re-sent under a new record_id with a
later date (stored b0: e1 inpatient from 1 Feb; e2 inpatient 5-10 Feb; incoming b1: e1 from 20
Feb) is no overlap, though episode e1, from its intake on 1 Feb, overlaps e2.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.forms import PATIENT_KEY_COLUMN, PSEUDONYM_COLUMN, Form, extract_schema
from validation.cross_record import EXISTING_COLUMNS, check

PROVIDERS = ("974631407", "983974899")
EPISODES = ("e1", "e2", "e3")
PATIENTS = ("k1", "k2", "k3")
START = date(2024, 2, 1)
INPATIENT = frozenset({2, 3})
FOLLOW_ON = (Form.MEASUREMENT, Form.DISCHARGE, Form.FOLLOWUP)
DATE_COLUMN = {
    Form.BASIS: "intake_date",
    Form.MEASUREMENT: "measure_date",
    Form.DISCHARGE: "discharge_date",
    Form.FOLLOWUP: "followup_date",
}
PREFIX = {Form.BASIS: "b", Form.MEASUREMENT: "m", Form.DISCHARGE: "d", Form.FOLLOWUP: "f"}

Episode = tuple[str, str]
Failure = tuple[int, str, str]


@dataclass(frozen=True)
class Rec:
    """A record of any of the four forms: `day` is its form's date column; `age`, `sex` and
    `treatment_type` are read of basis records only."""

    record_id: str
    provider: str
    episode_id: str
    patient: str
    day: date
    age: int
    sex: int
    treatment_type: int

    @property
    def episode(self) -> Episode:
        return (self.provider, self.episode_id)


# --- Arrow tables -----------------------------------------------------------------------------


def _schema(form: Form) -> pa.Schema:
    fields = [
        pa.field(PATIENT_KEY_COLUMN, pa.string()) if f.name == PSEUDONYM_COLUMN else f
        for f in extract_schema(form)
    ]
    return pa.schema([f.with_nullable(True) for f in fields])


def _row(form: Form, rec: Rec) -> dict[str, Any]:
    row: dict[str, Any] = {
        "record_id": rec.record_id,
        "episode_id": rec.episode_id,
        "provider_orgnr": rec.provider,
        PATIENT_KEY_COLUMN: rec.patient,
        "unit_code": "u1",
        DATE_COLUMN[form]: rec.day,
    }
    if form is Form.BASIS:
        row |= {"age": rec.age, "sex": rec.sex, "treatment_type": rec.treatment_type}
    return row


def incoming_table(form: Form, recs: Sequence[Rec]) -> pa.Table:
    return pa.Table.from_pylist([_row(form, rec) for rec in recs], schema=_schema(form))


def stored_table(form: Form, recs: Sequence[Rec]) -> pa.Table:
    return incoming_table(form, recs).select(list(EXISTING_COLUMNS[form]))


def code_failures(
    form: Form, incoming: Sequence[Rec], existing: dict[Form, list[Rec]]
) -> set[tuple[int, str, str]]:
    tables = {stored: stored_table(stored, recs) for stored, recs in existing.items()}
    result = check(incoming_table(form, incoming), form, tables)
    return {(r["row_index"], r["check"], r["severity"]) for r in result.to_pylist()}


# --- The reference ----------------------------------------------------------------------------


def current(stored: Sequence[Rec], incoming: Sequence[Rec]) -> list[Rec]:
    """The stored records not superseded by the file, and the file's."""
    resent = {rec.record_id for rec in incoming}
    return [rec for rec in stored if rec.record_id not in resent] + list(incoming)


def intake(basis: Sequence[Rec], episode: Episode) -> date | None:
    """The episode's intake: its earliest basis intake_date."""
    return min((b.day for b in basis if b.episode == episode), default=None)


def discharge_end(discharges: Sequence[Rec], episode: Episode) -> date | None:
    """Where an episode ends for the overlap check: its (earliest) discharge; None: ongoing."""
    return min((d.day for d in discharges if d.episode == episode), default=None)


def followup_too_early(followup: Rec, discharges: Sequence[Rec]) -> bool:
    return any(d.episode == followup.episode and followup.day < d.day for d in discharges)


def overlaps(start_a: date, end_a: date | None, start_b: date, end_b: date | None) -> bool:
    """Each starts before the other ends; no end: open-ended. A start on the other's end day
    (a transfer) is no overlap."""
    return (end_b is None or start_a < end_b) and (end_a is None or start_b < end_a)


def demographics_differ(a: Rec, b: Rec) -> bool:
    return a.age != b.age or a.sex != b.sex


def reference_basis(
    incoming: Sequence[Rec], existing: dict[Form, list[Rec]]
) -> set[tuple[int, str, str]]:
    basis = current(existing.get(Form.BASIS, []), incoming)
    discharges = existing.get(Form.DISCHARGE, [])
    failures: set[Failure] = set()
    for index, rec in enumerate(incoming):
        if any(
            b.episode == rec.episode
            and b.record_id != rec.record_id
            and demographics_differ(b, rec)
            for b in basis
        ):
            failures.add((index, "cross.inconsistent_demographics", "error"))
        if rec.treatment_type in INPATIENT:
            end = discharge_end(discharges, rec.episode)
            if any(
                o.patient == rec.patient
                and o.episode != rec.episode
                and o.treatment_type in INPATIENT
                and overlaps(rec.day, end, o.day, discharge_end(discharges, o.episode))
                for o in basis
            ):
                failures.add((index, "cross.overlapping_inpatient", "warning"))
    return failures


def reference_follow_on(
    form: Form, incoming: Sequence[Rec], existing: dict[Form, list[Rec]]
) -> set[tuple[int, str, str]]:
    basis = existing.get(Form.BASIS, [])
    stored_discharges = existing.get(Form.DISCHARGE, [])
    same_form = current(existing.get(form, []), incoming)
    duplicate = {
        Form.DISCHARGE: "cross.duplicate_discharge",
        Form.FOLLOWUP: "cross.duplicate_followup",
    }
    failures: set[Failure] = set()
    for index, rec in enumerate(incoming):
        first = intake(basis, rec.episode)
        if first is None:
            failures.add((index, "cross.no_intake", "error"))
        elif form in (Form.MEASUREMENT, Form.DISCHARGE) and rec.day < first:
            failures.add((index, "cross.before_intake", "error"))
        if form in duplicate and any(
            o.episode == rec.episode and o.record_id != rec.record_id for o in same_form
        ):
            failures.add((index, duplicate[form], "error"))
        if form is Form.FOLLOWUP and followup_too_early(rec, stored_discharges):
            failures.add((index, "cross.followup_before_discharge", "error"))
    return failures


def reference(
    form: Form, incoming: Sequence[Rec], existing: dict[Form, list[Rec]]
) -> set[tuple[int, str, str]]:
    if form is Form.BASIS:
        return reference_basis(incoming, existing)
    return reference_follow_on(form, incoming, existing)


# --- Random files and warehouses --------------------------------------------------------------


def records(form: Form, *, max_size: int) -> st.SearchStrategy[list[Rec]]:
    """Records of a form with distinct record ids from a pool of eight per form (shared by the
    file and the stored table, so that some supersede)."""
    rec = st.builds(
        Rec,
        record_id=st.sampled_from([f"{PREFIX[form]}{i}" for i in range(8)]),
        provider=st.sampled_from(PROVIDERS),
        episode_id=st.sampled_from(EPISODES),
        patient=st.sampled_from([*PATIENTS[:2], *PATIENTS]),  # k3 the rarer
        # Nine dates four days apart: records collide on the same day often.
        day=st.integers(min_value=0, max_value=8).map(lambda n: START + timedelta(days=4 * n)),
        age=st.sampled_from([40, 41]),
        sex=st.sampled_from([1, 2]),
        treatment_type=st.sampled_from([1, 2, 3, 3, 5]),
    )
    return st.lists(rec, max_size=max_size, unique_by=lambda r: r.record_id)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Form, list[Rec], dict[Form, list[Rec]]]:
    # Basis and follow-up twice as often: their overlap and discharge checks need the most luck.
    form = draw(st.sampled_from([Form.BASIS, Form.BASIS, *FOLLOW_ON, Form.FOLLOWUP]))
    existing: dict[Form, list[Rec]] = {}
    for stored in (Form.BASIS, Form.DISCHARGE, Form.FOLLOWUP):
        # A missing table counts as an empty one.
        if draw(st.integers(min_value=0, max_value=9)) > 0:
            existing[stored] = draw(records(stored, max_size=6 if stored is Form.BASIS else 4))
    return form, draw(records(form, max_size=7)), existing


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=cases())
def test_check_agrees_with_the_reference(
    case: tuple[Form, list[Rec], dict[Form, list[Rec]]],
) -> None:
    form, incoming, existing = case
    expected = reference(form, incoming, existing)
    assert code_failures(form, incoming, existing) == expected, (
        form,
        [asdict(r) for r in incoming],
        {f.value: [asdict(r) for r in recs] for f, recs in existing.items()},
    )
