"""Completeness over time: how well each provider fills each variable, per form and year.

`completeness(tables, quarantine)` returns one row per provider × year × form × variable with
`records` (stored records), `filled` (non-null values), `share_filled`, and per provider × form ×
year the records held in quarantine (`quarantined`, distinct record ids) and their share of all
records received (`share_quarantined` = quarantined / (records + quarantined)).

Inputs:
- `tables[form]`: warehouse tables of the episode forms (`warehouse_schema(form)`: needs
  `provider_orgnr`, `year` and the form's variables);
- `quarantine`: the warehouse's quarantine (`form`, `record_id`, and either `provider_orgnr` and
  `year` columns or the row's typed values as a JSON text column `values`, from which the provider
  and the form's year date are read). Only counts leave this function, never a value.
"""

from collections.abc import Mapping
from typing import Final

import pyarrow as pa

from schemas.forms import COMMON_COLUMNS, EPISODE_FORMS, FORMS, Form
from schemas.scratch import duckdb_connection

# ruff: noqa: S608  (SQL text from the data dictionary's column names only, never from data)

COMPLETENESS_SCHEMA: Final = pa.schema(
    [
        pa.field("provider_orgnr", pa.string()),
        pa.field("year", pa.int32()),
        pa.field("form", pa.string(), nullable=False),
        pa.field("variable", pa.string(), nullable=False),
        pa.field("records", pa.int64(), nullable=False),
        pa.field("filled", pa.int64(), nullable=False),
        pa.field("share_filled", pa.float64()),
        pa.field("quarantined", pa.int64(), nullable=False),
        pa.field("share_quarantined", pa.float64()),
    ]
)

# Identifiers are required and not clinical variables: their completeness says nothing.
_IDENTIFIERS: Final = frozenset(column.name for column in COMMON_COLUMNS)


def variables(form: Form) -> list[str]:
    """The variables of a form whose completeness is reported."""
    return [name for name in FORMS[form].column_names if name not in _IDENTIFIERS]


def _quarantine_counts(quarantine: pa.Table | None) -> str:
    """SQL for quarantined records per form, provider and year (view `quarantine`)."""
    if quarantine is None:
        return (
            "SELECT NULL::VARCHAR AS form, NULL::VARCHAR AS provider_orgnr, NULL::INTEGER AS year,"
            " 0::BIGINT AS quarantined WHERE false"
        )
    if {"provider_orgnr", "year"} <= set(quarantine.column_names):
        provider, year = "provider_orgnr", "CAST(year AS INTEGER)"
    else:
        provider = "json_extract_string(\"values\", '$.provider_orgnr')"
        dates = {form.value: FORMS[form].year_column for form in EPISODE_FORMS}
        cases = " ".join(
            f"WHEN '{form}' THEN json_extract_string(\"values\", '$.{column}')"
            for form, column in dates.items()
        )
        year = f"TRY_CAST(substr(CASE form {cases} END, 1, 4) AS INTEGER)"
    return f"""
        SELECT form, {provider} AS provider_orgnr, {year} AS year,
               count(DISTINCT record_id) AS quarantined
        FROM quarantine GROUP BY ALL"""


def completeness(tables: Mapping[Form, pa.Table], quarantine: pa.Table | None = None) -> pa.Table:
    """Filled share per provider, year, form and variable, with the quarantined share."""
    parts: list[str] = []
    with duckdb_connection() as connection:
        for form in EPISODE_FORMS:
            table = tables.get(form)
            if table is None:
                continue
            name = f"stored_{form.value}"
            connection.register(name, table)
            for variable in variables(form):
                if variable not in table.column_names:
                    continue
                parts.append(
                    f"""SELECT provider_orgnr, CAST(year AS INTEGER) AS year,
                           '{form.value}' AS form, '{variable}' AS variable,
                           count(*) AS records, count("{variable}") AS filled
                    FROM {name} GROUP BY provider_orgnr, year"""
                )
        if quarantine is not None:
            connection.register("quarantine", quarantine)
        if not parts:
            return COMPLETENESS_SCHEMA.empty_table()
        sql = f"""
            WITH filled AS ({" UNION ALL ".join(parts)}),
                 held AS ({_quarantine_counts(quarantine)})
            SELECT f.provider_orgnr, f.year, f.form, f.variable, f.records, f.filled,
                   f.filled / f.records AS share_filled,
                   coalesce(h.quarantined, 0) AS quarantined,
                   coalesce(h.quarantined, 0) / (f.records + coalesce(h.quarantined, 0))
                       AS share_quarantined
            FROM filled AS f
            LEFT JOIN held AS h
              ON h.form = f.form AND h.provider_orgnr IS NOT DISTINCT FROM f.provider_orgnr
             AND h.year IS NOT DISTINCT FROM f.year
            ORDER BY f.provider_orgnr, f.year, f.form, f.variable"""
        result = connection.sql(sql).to_arrow_table()
    return result.cast(COMPLETENESS_SCHEMA)
