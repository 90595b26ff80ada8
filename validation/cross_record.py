"""Cross-record checks: an incoming, typed file against the warehouse (and against itself).

`check(incoming, form, existing)` returns failing rows with the columns of
`ValidationResult.row_failures` (`row_index` into `incoming`, `record_id`, `check`, `severity`,
`reason`); the check ids are those of docs/interfaces.md. An episode is identified by
`(provider_orgnr, episode_id)`: episode ids come from each provider's own system. A record with the
same `record_id` as a stored one supersedes it (EXTRACT_SPEC.md), so it is never compared with its
own earlier version.

Columns read from the warehouse tables in `existing` (the loader passes only these; a missing form
counts as an empty table):
- `existing[Form.BASIS]`: record_id, episode_id, provider_orgnr, patient_key, intake_date, age,
  sex, treatment_type;
- `existing[Form.DISCHARGE]`: record_id, episode_id, provider_orgnr, discharge_date;
- `existing[Form.FOLLOWUP]`: record_id, episode_id, provider_orgnr.

An episode has one discharge and one one-year follow-up (DOMAIN.md): a second one under another
record_id is an error (a correction re-sends the same record_id). The indicators count follow-up
rows as episodes, so a second follow-up would count its episode twice.

Overlapping inpatient episodes are checked when a basis record arrives: an episode without a
discharge counts as ongoing (open-ended), so a later discharge can only end an overlap, never start
one. Two intervals overlap when each starts before the other ends (a transfer on the day of
discharge is not an overlap).

Everything runs as DuckDB SQL over the Arrow tables, in one in-memory connection per call. The SQL
text is assembled from this module's constants only (never from data), hence the `noqa: S608`.
"""

# ruff: noqa: S608

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import pyarrow as pa

from schemas.codes import INPATIENT_TREATMENT_TYPES
from schemas.forms import Form, warehouse_schema
from schemas.scratch import duckdb_connection
from validation.run import ROW_FAILURES_SCHEMA

EXISTING_COLUMNS: Final[dict[Form, tuple[str, ...]]] = {
    Form.BASIS: (
        "record_id",
        "episode_id",
        "provider_orgnr",
        "patient_key",
        "intake_date",
        "age",
        "sex",
        "treatment_type",
    ),
    Form.DISCHARGE: ("record_id", "episode_id", "provider_orgnr", "discharge_date"),
    Form.FOLLOWUP: ("record_id", "episode_id", "provider_orgnr"),
}

# `EXISTING_COLUMNS` without `patient_key`: what `check(..., warnings=False)` reads.
NO_PATIENT_KEY: Final[dict[Form, tuple[str, ...]]] = {
    form: tuple(name for name in columns if name != "patient_key")
    for form, columns in EXISTING_COLUMNS.items()
}

# The date column of each follow-on form that must not precede the episode's intake.
_EVENT_DATE: Final = {Form.MEASUREMENT: "measure_date", Form.DISCHARGE: "discharge_date"}
# The forms an episode has one record of: (check id, what it is called, the view of the stored and
# incoming records, see `check`).
_ONE_PER_EPISODE: Final = {
    Form.DISCHARGE: ("cross.duplicate_discharge", "discharge", "discharges"),
    Form.FOLLOWUP: ("cross.duplicate_followup", "follow-up", "followups"),
}
_INPATIENT: Final = ", ".join(str(code) for code in sorted(INPATIENT_TREATMENT_TYPES))


@dataclass(frozen=True)
class _Query:
    severity: str
    sql: str


def _failure(check_id: str, severity: str, reason: str, where: str) -> _Query:
    """A SELECT of the incoming rows (alias `i`) that fail a check, in row_failures columns."""
    return _Query(
        severity,
        f"""
        SELECT i.row_index, i.record_id, '{check_id}' AS "check", '{severity}' AS severity,
               '{reason}' AS reason
        FROM incoming AS i
        WHERE {where}""",
    )


def _same_episode(alias: str) -> str:
    return f"{alias}.provider_orgnr = i.provider_orgnr AND {alias}.episode_id = i.episode_id"


def _basis_checks() -> list[_Query]:
    # All basis records: the stored ones not superseded by this file, and this file's.
    return [
        _failure(
            "cross.inconsistent_demographics",
            "error",
            "age or sex differs from another basis record of the episode",
            # A join in an uncorrelated IN, not a correlated EXISTS: DuckDB decorrelates EXISTS by
            # grouping the incoming rows on every column it compares (0.53 s of the 0.7 s this
            # check took on 1M rows; the join takes 0.15 s).
            """i.row_index IN (
                SELECT n.row_index FROM incoming AS n JOIN all_basis AS b
                  ON b.provider_orgnr = n.provider_orgnr AND b.episode_id = n.episode_id
                WHERE b.record_id IS DISTINCT FROM n.record_id
                  AND (b.age IS DISTINCT FROM n.age OR b.sex IS DISTINCT FROM n.sex))""",
        ),
        _failure(
            "cross.overlapping_inpatient",
            "warning",
            "inpatient episode overlaps another inpatient episode of the patient",
            f"""i.treatment_type IN ({_INPATIENT}) AND i.intake_date IS NOT NULL AND EXISTS (
                SELECT 1 FROM inpatient AS o
                WHERE o.patient_key = i.patient_key
                  AND NOT (o.provider_orgnr = i.provider_orgnr AND o.episode_id = i.episode_id)
                  -- An episode without a discharge is still ongoing: open-ended.
                  AND o.intake_date < coalesce(
                        (SELECT min(d.discharge_date) FROM discharges AS d
                         WHERE d.provider_orgnr = i.provider_orgnr
                           AND d.episode_id = i.episode_id),
                        DATE '9999-12-31')
                  AND i.intake_date < coalesce(o.discharge_date, DATE '9999-12-31'))""",
        ),
    ]


def _follow_on_checks(form: Form) -> list[_Query]:
    checks = [
        _failure(
            "cross.no_intake",
            "error",
            "no intake (basis) registered for the episode",
            f"NOT EXISTS (SELECT 1 FROM stored_basis AS b WHERE {_same_episode('b')})",
        )
    ]
    if form in _EVENT_DATE:
        event = _EVENT_DATE[form]
        checks.append(
            _failure(
                "cross.before_intake",
                "error",
                f"{event} before the intake_date of the episode",
                # The episode's intake is its first basis row (a basis re-sent under a new
                # record_id with a later date is not the intake): a record on or after the
                # earliest intake_date passes.
                f"""i.{event} < (SELECT min(b.intake_date) FROM stored_basis AS b
                    WHERE {_same_episode("b")})""",
            )
        )
    if form in _ONE_PER_EPISODE:
        check_id, noun, view = _ONE_PER_EPISODE[form]
        checks.append(
            _failure(
                check_id,
                "error",
                f"more than one {noun} for the episode",
                f"""EXISTS (SELECT 1 FROM {view} AS o
                    WHERE {_same_episode("o")} AND o.record_id IS DISTINCT FROM i.record_id)""",
            )
        )
    if form is Form.FOLLOWUP:
        checks.append(
            _failure(
                "cross.followup_before_discharge",
                "error",
                "followup_date before the discharge_date of the episode",
                f"""EXISTS (SELECT 1 FROM discharges AS d
                    WHERE {_same_episode("d")} AND i.followup_date < d.discharge_date)""",
            )
        )
    return checks


def _stored(existing: Mapping[Form, pa.Table], form: Form) -> pa.Table:
    """The stored rows of a form, in `EXISTING_COLUMNS` (`patient_key` only where given)."""
    columns = EXISTING_COLUMNS[form]
    table = existing.get(form)
    if table is None:
        schema = warehouse_schema(form)
        return pa.schema([schema.field(name) for name in columns]).empty_table()
    return table.select([name for name in columns if name in table.column_names])


def check(
    incoming: pa.Table, form: Form, existing: Mapping[Form, pa.Table], *, warnings: bool = True
) -> pa.Table:
    """Failing rows of `incoming` (typed; with `patient_key` unless `warnings=False`) against the
    `existing` tables (their `patient_key` too unless `warnings=False`: `NO_PATIENT_KEY`).

    `warnings=False` leaves out the checks of severity `warning`: the loader quarantines errors
    only, and `cross.overlapping_inpatient` took 1.1 s of a 1M-row basis load for nothing. Only
    that warning reads `patient_key`, so without warnings `incoming` need not have it (the
    loader checks while it still computes the keys).
    """
    if form is Form.BASIS:
        queries = _basis_checks()
    elif form in (Form.MEASUREMENT, Form.DISCHARGE, Form.FOLLOWUP):
        queries = _follow_on_checks(form)
    else:
        queries = []
    queries = [query for query in queries if warnings or query.severity != "warning"]
    if not queries:
        return ROW_FAILURES_SCHEMA.empty_table()

    row_index = pa.array(np.arange(incoming.num_rows, dtype=np.int64))
    numbered = incoming.append_column("row_index", row_index)
    with duckdb_connection() as connection:
        connection.register("incoming", numbered)
        connection.register("stored_basis_all", _stored(existing, Form.BASIS))
        connection.register("stored_discharge_all", _stored(existing, Form.DISCHARGE))
        # Stored records that this file re-sends are superseded: leave them out.
        superseded = "record_id NOT IN (SELECT record_id FROM incoming WHERE record_id IS NOT NULL)"
        if form is Form.BASIS:
            connection.execute(
                "CREATE TEMP VIEW stored_basis AS SELECT * FROM stored_basis_all WHERE "
                + superseded
            )
            columns = ", ".join(
                name for name in EXISTING_COLUMNS[Form.BASIS] if warnings or name != "patient_key"
            )
            connection.execute(
                f"""CREATE TEMP VIEW all_basis AS
                SELECT {columns} FROM stored_basis UNION ALL SELECT {columns} FROM incoming"""
            )
        else:
            connection.execute("CREATE TEMP VIEW stored_basis AS SELECT * FROM stored_basis_all")
        if form is Form.DISCHARGE:
            connection.execute(
                f"""CREATE TEMP VIEW discharges AS
                SELECT record_id, episode_id, provider_orgnr, discharge_date
                FROM stored_discharge_all WHERE {superseded}
                UNION ALL
                SELECT record_id, episode_id, provider_orgnr, discharge_date FROM incoming"""
            )
        else:
            connection.execute("CREATE TEMP VIEW discharges AS SELECT * FROM stored_discharge_all")
        if form is Form.FOLLOWUP:
            connection.register("stored_followup_all", _stored(existing, Form.FOLLOWUP))
            connection.execute(
                f"""CREATE TEMP VIEW followups AS
                SELECT record_id, episode_id, provider_orgnr
                FROM stored_followup_all WHERE {superseded}
                UNION ALL
                SELECT record_id, episode_id, provider_orgnr FROM incoming"""
            )
        if form is Form.BASIS and warnings:
            connection.execute(
                f"""CREATE TEMP VIEW inpatient AS
                SELECT b.patient_key, b.provider_orgnr, b.episode_id, b.intake_date,
                       (SELECT min(d.discharge_date) FROM discharges AS d
                        WHERE d.provider_orgnr = b.provider_orgnr
                          AND d.episode_id = b.episode_id) AS discharge_date
                FROM all_basis AS b
                WHERE b.treatment_type IN ({_INPATIENT}) AND b.intake_date IS NOT NULL"""
            )
        sql = " UNION ALL ".join(query.sql for query in queries) + ' ORDER BY row_index, "check"'
        result = connection.sql(sql).to_arrow_table()
    return result.cast(ROW_FAILURES_SCHEMA)
