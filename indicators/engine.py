"""The indicator engine: the catalogue over a release, as Ibis expressions (DuckDB or Spark).

The heavy lifting runs in the backend, the same Ibis expressions on DuckDB (over the manifest's
Parquet files) and on Spark (Ibis' PySpark backend): the episode tables are built once per run
(`indicators.episodes`); the episode indicators that read the same rows share one query grouped
by the finest cell (year, provider, unit, home HF), and medians one query of counts per value;
the levels are rolled up from those small results in Arrow (`indicators.levels`). Distinct-patient
indicators are grouped per level in the backend, first in the run (their large temporary tables
are dropped before the episode indicators materialise theirs; on DuckDB one year at a time,
`_patients`, over integer codes of the cells), with patients identified on
DuckDB by two 64-bit hashes of patient_key (`patient_columns`), and their episodes by two of the
episode key (`episode_columns`). The final statistics (Wilson
intervals, funnel signals, target levels, suppression, previous year) run in numpy over the small
aggregate.

Rules (DOMAIN.md, and choices documented here):
- An episode is (provider_orgnr, episode_id). Its intake columns (home HF, age, sex, treatment
  type) are those of its first basis row (intake_date, then record_id). Intake-based
  indicators (population table basis) count each episode once, on that first basis row (its
  unit, home HF, intake year and values); a definition's own `first_per_episode` overrides the
  date.
- A row's year is the calendar year of the definition's year date (default: the table's own date:
  intake, first measurement, discharge, follow-up; `any` rows: their own form's date).
- Caregiver context: unit, provider, hf (providers that are HFs), rhf (a private provider rolls
  up to its RHF), nation. Resident context: the episode's home HF, its RHF, and the nation; rows
  whose home HF is missing or not an HF of the hierarchy are left out of the resident context.
- Patient-unit indicators count distinct patients at each level separately (a patient treated by
  two providers counts at both, once in their RHF and once in the nation).
- Median: the exact median, the mean of the two middle values when the count is even (as DuckDB's
  `median`), computed from counts per value with cumulative sums, so both engines agree exactly.
- Coverage: registered basis episodes / NPR episodes per provider and intake year; at the hf, rhf
  and nation levels both sums run over the providers that have an NPR count. A provider with
  coverage under 60 % in a year gets its caregiver results that year (levels unit, provider, hf)
  suppressed with reason `low_coverage`; its rows still count in the RHF and the nation.
- Complementary (secondary) suppression, per indicator × year × context (of medians too: a
  median is not a sum, but its denominator is, and the API shows it beside a published median):
  a parent's numerator and denominator are the sums over all its children, suppressed ones
  included, so a single suppressed child would be
  its parent minus the published siblings (DOMAIN.md asks this of researcher aggregates; the
  indicators follow it within each hierarchy). Parents and children: nation → RHFs (both
  contexts), RHF → providers (caregiver), provider → units (caregiver), RHF → HFs (resident);
  the providers outside every RHF are children of the caregiver nation too, and the rows without
  a usable home HF, published only as a difference (caregiver nation minus resident nation),
  count as a hidden child of the nation when small. A group (a parent and its children) must
  never leave a reader exactly one unknown that is hidden for disclosure. Readers: the public,
  which knows the published rows; and each trust, which also knows its own rows although they
  are suppressed (its records, and the API shows them: `service.published`): a trust key is
  scoped to one provider (`service.auth`), so it owns that provider's caregiver provider, hf
  and unit rows and, for an HF, its resident hf row. Top down, in each group, while some reader
  has a single unknown hidden for disclosure, the published child with the smallest
  denominator (ties: the first in result order) is suppressed too, with reason
  `complementary`; a child suppressed so becomes a suppressed parent for the level below (its
  units). For the public that is the older rule: a published parent with exactly one
  suppressed child, or a suppressed parent with none. For a trust it is the respondent rule of
  statistical disclosure control: under a published parent, two hidden children of which one
  is its own (providers under an RHF or outside every RHF, HFs under a resident RHF) get a
  third, so no owner of one is left able to subtract its way to the other. Units are their
  provider's alone (the provider knows all of them, another trust none), so that group keeps
  the public's rule. No trust owns an RHF or the nation (a trust is a provider; an RHF provides
  no care), so among the nation's RHFs only the public's rule acts, unless a trust works an RHF
  out: that happens when the RHF is suppressed and the trust's own row is its only suppressed
  child. The trust then knows the RHF, which was suppressed again in the nation's group to
  protect a sibling: that exposes something when the nation's group is left with a single
  unknown to the trust (the resident nation, hidden for the rows without a home HF, counts as
  exposed), and then one more child of the RHF is suppressed; otherwise the trust is let know
  the RHF, and the nation's group counts it as known to that trust. When no published child is
  left (every child hidden: an RHF with just two providers, both small), the parent itself is
  suppressed (never the nation) and its group above protects it. The groups are gone through
  again until nothing changes. A caregiver `hf` row repeats its provider's row (public HFs), so
  it takes the provider's complementary suppression. Only a disclosure suppression
  (`min_denominator`, `complementary`) needs protecting: `low_coverage` hides a result of
  enough observations for its quality, not for privacy, so a lone `low_coverage` child (or
  parent) sets nothing off (but see proportions below), though as an unknown in the sum it
  protects a sibling from the public like any suppressed child (not from its own trust: a
  `low_coverage` row and a small one under a published RHF get a third). Proportions: two
  unknowns are not enough when they are all 0 % or all 100 % together (a parent minus its
  published children, 13/13, tells every hidden child's value; a hidden child counts as its
  hidden children, the published ones subtracted), so for every reader a published row under
  100 % (or above 0 %) is hidden too, the smallest, or with none left the parent (never the
  nation). When that parent is hidden already but the reader has worked it out (not its own
  row: a lone `low_coverage` provider, which every reader may work out, over its small units
  all 100 %), the parent is protected one level up: in its own group it counts, for that
  reader, as hidden for disclosure, so a published sibling is hidden there, or failing that
  the grandparent (never the nation), and the groups are gone through again; see
  `_complementary`. The rule
  keeps at least two unknowns in every sum for every single reader, not all 0 % or all 100 %
  in a proportion, also across definitions that publish the same count (`_count_key`:
  coverage's registered episodes are screening's intakes), which are suppressed alike
  (`_link`); it is not a proof that a suppressed count cannot be narrowed down
  (researcher aggregates use `indicators.disclosure` for that), and it guards neither against
  trusts that pool their rows nor against a nation with too few children (with two providers
  in the country, each has the other as the nation minus itself). Across the two contexts the
  groups overlap without nesting (a provider's patients and an HF's residents): a resident HF
  minus the same HF as caregiver is its residents treated elsewhere minus its patients from
  elsewhere, which names a suppressed provider's result only to someone who also knows where
  that provider's patients live (for example, all in the HF's area). That is not guarded
  against.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, cast

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa

from indicators.catalogue import IndicatorDefinition, load_catalogue
from indicators.episodes import ANY_FORMS, EPISODE_KEY, EngineName, Release, all_of, timed
from indicators.funnel import funnel_significance, normal_funnel_limits
from indicators.levels import (
    AGGREGATE_SCHEMA,
    CELL,
    LEVELS,
    CellCodes,
    Organisations,
    coded_patient_levels,
    patient_levels,
    roll_up_coverage,
    roll_up_medians,
    roll_up_sums,
)
from indicators.results import RESULT_SCHEMA
from indicators.statistics import proportion
from indicators.vocabulary import EPISODE_COLUMNS, Condition
from schemas.manifest import ReleaseManifest
from schemas.organisations import NATION_ORGNR, Hierarchy

__all__ = ["AGGREGATE_SCHEMA", "LEVELS", "EngineName", "aggregates", "compute", "finish"]

LOW_COVERAGE: Final = "low_coverage"
MIN_DENOMINATOR: Final = "min_denominator"
COMPLEMENTARY: Final = "complementary"

# DuckDB settings for a run: the engine shares the machine with the service and other jobs, so
# it takes a bounded share (DuckDB's default is 80 % of RAM) and may spill beyond; insertion
# order is not needed (every result is sorted in `finish`) and keeping it costs memory. The
# 10M-episode bench spilled about 2.5 GB in the study indicator at 3GB (before patients were
# counted one year at a time, `_patients`); at 3.5GB its CPU time fell by about 3 % (109 ->
# 105.5 s) and the peak rose to 3.79 GB of the 4 GB allowed. Measured again with patients
# counted year by year over cell codes (nothing spilled there): 3.5GB ran 0.7-0.9 s faster
# (of about 32 s, two pairs of runs on a busy machine) with the peak at 3.45 GB instead of
# 3.20 GB; kept at 3GB.
DUCKDB_MEMORY_LIMIT: Final = "3GB"
DUCKDB_THREADS: Final = os.cpu_count() or 1


def engine_name(value: str) -> EngineName:
    if value not in ("duckdb", "spark"):
        raise ValueError(f"engine must be duckdb or spark, not {value!r}")
    return cast(EngineName, value)


def _source(definition: IndicatorDefinition, release: Release) -> ir.Table:
    population = definition.population
    if population.first_per_episode is not None:
        return release.first_per_episode(population.table, population.first_per_episode)
    if population.table == "basis":
        # An intake is the episode's: counted once, on its first basis row (a re-sent intake
        # under a new record_id is a second row of the same episode).
        return release.first_per_episode("basis", "intake_date")
    return release.enriched(population.table)


def _with_year(table: ir.Table, year_column: str, year: int | None = None) -> ir.Table:
    """The rows with a year date, with their year as `_year`; only those of `year` if given,
    filtered as a date range: on a form's own Parquet files (the record path of `any`
    indicators) DuckDB checks it against the row groups' statistics and skips the other years'
    files, where year(date) = year would read every row; on a materialised table it is an
    ordinary filter."""
    if year is not None:
        date = table[year_column]
        table = table.filter((date >= ibis.date(year, 1, 1)) & (date < ibis.date(year + 1, 1, 1)))
    table = table.mutate(_year=table[year_column].year().cast("int32"))
    return table.filter(table._year.notnull())


@dataclass
class _Group:
    """Episode indicators over the same rows (table, first row rule, year date): one query."""

    members: list[IndicatorDefinition] = field(default_factory=list)


def _cells(definitions: list[IndicatorDefinition], release: Release) -> ir.Table:
    """One query for several episode indicators over the same rows: per finest cell and
    indicator i, `n_i` population rows, `num_i` numerator rows and `total_i` the measure's sum
    (mean indicators: their population is the rows with a value, `_population`)."""
    first = definitions[0]
    table = _with_year(_source(first, release), first.year_column)
    metrics: dict[str, ir.Value] = {}
    for index, definition in enumerate(definitions):
        keep = _population(table, definition)
        numerator = (
            all_of(table, definition.numerator.where) if definition.numerator is not None else None
        )
        metrics[f"n_{index}"] = (table.count() if keep is None else keep.cast("int64").sum()).cast(
            "int64"
        )
        if numerator is not None:
            counted = numerator if keep is None else keep & numerator
            metrics[f"num_{index}"] = counted.cast("int64").sum().cast("int64")
        if definition.type == "mean":
            assert definition.measure is not None
            measure = table[definition.measure].cast("int64")
            values = measure if keep is None else keep.ifelse(measure, ibis.null().cast("int64"))
            metrics[f"total_{index}"] = values.sum().cast("int64")
    return table.group_by(
        year=table._year,
        provider_orgnr=table.provider_orgnr,
        unit_code=table.unit_code,
        home_hf_orgnr=table.home_hf_orgnr,
    ).agg(**metrics)


def _member_cells(cells: pa.Table, index: int) -> pa.Table:
    """Indicator i's columns of a group's cells, as (CELL, n, num, total)."""
    rows = cells.num_rows
    names = cells.column_names
    return pa.table(
        {
            **{c: cells[c] for c in CELL},
            "n": cells[f"n_{index}"],
            "num": (
                cells[f"num_{index}"]
                if f"num_{index}" in names
                else pa.array(np.zeros(rows, dtype=np.int64))
            ),
            "total": (
                cells[f"total_{index}"] if f"total_{index}" in names else pa.nulls(rows, pa.int64())
            ),
        }
    )


def _population_conditions(definition: IndicatorDefinition) -> list[Condition]:
    """The population's conditions; for a mean or median also a value of the measure: a row
    without one is no observation (it counted as 0 in a mean's sum over every row, and sorted
    last in a median, moving the middle)."""
    conditions = definition.population.where
    if definition.type in ("mean", "median"):
        assert definition.measure is not None
        valued = Condition(column=definition.measure, op="not_null")
        if valued not in conditions:  # waiting_days states it itself
            conditions = [*conditions, valued]
    return conditions


def _population(table: ir.Table, definition: IndicatorDefinition) -> ir.BooleanValue | None:
    return all_of(table, _population_conditions(definition))


def _median_cells(definition: IndicatorDefinition, release: Release) -> ir.Table:
    """Per finest cell and value of the measure: the number of population rows."""
    table = _with_year(_source(definition, release), definition.year_column)
    keep = _population(table, definition)
    if keep is not None:
        table = table.filter(keep)
    assert definition.measure is not None
    return table.group_by(
        year=table._year,
        provider_orgnr=table.provider_orgnr,
        unit_code=table.unit_code,
        home_hf_orgnr=table.home_hf_orgnr,
        measure=table[definition.measure].cast("int64"),
    ).agg(n=table.count().cast("int64"))


def _columns(conditions: list[Condition]) -> set[str]:
    """The columns a list of conditions names (inside any_of too)."""
    names: set[str] = set()
    for rule in conditions:
        if rule.column is not None:
            names.add(rule.column)
        if rule.any_of is not None:
            names |= _columns(rule.any_of)
    return names


def _named(definitions: list[IndicatorDefinition]) -> dict[str, frozenset[str]]:
    """Per population table, every column the definitions name: conditions, measure, year date,
    and the patient key of patient-unit indicators."""
    names: dict[str, set[str]] = {}
    for definition in definitions:
        named = names.setdefault(definition.population.table, set())
        named |= _columns(definition.population.where)
        if definition.numerator is not None:
            named |= _columns(definition.numerator.where)
        named.add(definition.year_column)
        if definition.measure is not None:
            named.add(definition.measure)
        if definition.unit == "patient":
            named.add("patient_key")
    return {table: frozenset(columns) for table, columns in names.items()}


@ibis.udf.scalar.builtin(  # type: ignore[untyped-decorator]
    name="hash", signature=((ibis.dtype("string"),), ibis.dtype("uint64"))
)
def _duckdb_hash(value: str) -> int:  # type: ignore[empty-body]
    """DuckDB's 64-bit `hash` (ibis' `.hash()` adds a cast through BIT per row)."""


@ibis.udf.scalar.builtin(  # type: ignore[untyped-decorator]
    name="hash", signature=((ibis.dtype("string"), ibis.dtype("string")), ibis.dtype("uint64"))
)
def _duckdb_hash_of_two(first: str, second: str) -> int:  # type: ignore[empty-body]
    """DuckDB's 64-bit `hash` of two values (their hashes combined)."""


def episode_columns(table: ir.Table) -> dict[str, ir.Value]:
    """DuckDB: the episode key (provider_orgnr, episode_id; never null, `warehouse_schema`) as
    two 64-bit hashes, so that the distinct-patient rows are reduced and joined to their episode
    on integers (`_patients`). Two hashes of two different strings, for the reason
    `patient_columns` gives: two episodes of a release with equal pairs (n²/2¹²⁹ ≈ 10⁻²⁵ for
    10⁷ episodes) would give the records of each the home HF of both."""
    provider, episode = table.provider_orgnr, table.episode_id
    return {
        "episode_h1": _duckdb_hash_of_two(provider, episode),
        "episode_h2": _duckdb_hash("~" + episode + "~" + provider),
    }


def patient_columns(table: ir.Table, engine: EngineName) -> dict[str, ir.Value]:
    """The columns that identify a row's patient in the distinct-patient group-bys.

    Spark: patient_key itself. DuckDB: two 64-bit hashes of it (of the key and of '~' + key),
    fixed-width keys instead of its 64 characters: on the 10M-episode bench the group-by of the
    41M records by episode and patient took 45.3 s CPU on the key and 18.3 s on one hash. Two
    hashes, not one: 128 bits make a merge of two patients (two keys with equal hashes) about
    as likely as two pseudonyms meeting in patient_key's own HMAC (n²/2¹²⁹ ≈ 10⁻²⁵ for 10⁷
    patients), where one 64-bit hash would be 10⁻⁶ per release."""
    if engine != "duckdb":
        return {"patient_key": table.patient_key}
    key = table.patient_key
    return {
        "patient_h1": _duckdb_hash(key),
        "patient_h2": _duckdb_hash(ibis.literal("~") + key),
    }


def _record_rows(
    definition: IndicatorDefinition, release: Release, year: int | None = None
) -> ir.Table | None:
    """For an `any` indicator whose conditions and year date name only the records' own
    columns: each record filtered and scored on its own form, as (year, provider_orgnr,
    episode_id, unit_code, patient columns, num), before the episode join. None for other
    indicators (they take the general path)."""
    population = definition.population
    named = _columns(population.where)
    if definition.numerator is not None:
        named |= _columns(definition.numerator.where)
    named.add(definition.year_column)
    if population.table != "any" or population.first_per_episode is not None:
        return None
    if named & set(EPISODE_COLUMNS):
        return None
    parts = []
    for form in ANY_FORMS:
        table = _with_year(release.records(form), definition.year_column, year)
        keep = all_of(table, population.where)
        if keep is not None:
            table = table.filter(keep)
        numerator = (
            all_of(table, definition.numerator.where) if definition.numerator is not None else None
        )
        parts.append(
            table.select(
                year=table._year,
                provider_orgnr=table.provider_orgnr,
                episode_id=table.episode_id,
                unit_code=table.unit_code,
                **patient_columns(table, release.engine),
                num=numerator.cast("int8") if numerator is not None else ibis.literal(0, "int8"),
            )
        )
    return ibis.union(*parts, distinct=False)


def _record_patient_rows(
    definition: IndicatorDefinition, release: Release, year: int | None = None
) -> ir.Table | None:
    """`_patient_rows` of an `any` indicator on the record path (`_record_rows`): the records
    reduced before the episode join to one row per (year, episode, unit, patient) (about half
    the rows: an episode's records mostly fall in one year), and only those rows look up the
    episode's home HF."""
    records = _record_rows(definition, release, year)
    if records is None:
        return None
    patient = [c for c in records.columns if c not in ("year", "num", *EPISODE_KEY, "unit_code")]
    reduced = records.group_by("year", *EPISODE_KEY, "unit_code", *patient).agg(
        num=records.num.max()
    )
    table = release.with_episode(reduced)
    return table.select(*CELL, *patient, "num")


def _patient_rows(
    definition: IndicatorDefinition, release: Release, year: int | None = None
) -> ir.Table:
    """Rows (CELL, patient columns, num), one or more per cell and patient (of one year if
    given)."""
    reduced = _record_patient_rows(definition, release, year)
    if reduced is not None:
        return reduced
    table = _with_year(_source(definition, release), definition.year_column, year)
    keep = all_of(table, definition.population.where)
    if keep is not None:
        table = table.filter(keep)
    numerator = (
        all_of(table, definition.numerator.where) if definition.numerator is not None else None
    )
    return table.select(
        year=table._year,
        provider_orgnr=table.provider_orgnr,
        unit_code=table.unit_code,
        home_hf_orgnr=table.home_hf_orgnr,
        **patient_columns(table, release.engine),
        num=numerator.cast("int8") if numerator is not None else ibis.literal(0, "int8"),
    )


def _patient_years(definition: IndicatorDefinition, release: Release) -> ir.Table:
    """The (year, provider_orgnr, unit_code) of a patient indicator's rows, before its
    conditions (a year of no population rows gives no result rows; the pairs are those
    `coded_patient_levels` codes)."""
    if _record_rows(definition, release) is not None:
        columns = ["_year", "provider_orgnr", "unit_code"]
        parts = [
            _with_year(release.records(form), definition.year_column).select(*columns)
            for form in ANY_FORMS
        ]
        table = ibis.union(*parts, distinct=False)
    else:
        table = _with_year(_source(definition, release), definition.year_column)
    return table.select(
        year=table._year, provider_orgnr=table.provider_orgnr, unit_code=table.unit_code
    ).distinct()


def _npr(release: Release) -> ir.Table:
    npr = release.raw("npr_counts")
    return npr.group_by(year=npr.year.cast("int32"), provider_orgnr=npr.provider_orgnr).agg(
        npr=npr.episodes.cast("int64").sum()
    )


def case_mix_rows(
    manifest: ReleaseManifest,
    definition: IndicatorDefinition,
    *,
    engine: EngineName = "duckdb",
    spark_session: Any = None,
) -> pa.Table:
    """One row per population unit of an (episode) indicator: year, provider_orgnr, age, sex,
    treatment_type (the episode's intake) and outcome (0/1), for indirect standardisation."""
    with _connected(engine, spark_session) as backend:
        release = Release(manifest, backend, engine, spark_session, _named([definition]))
        return _case_mix_rows(release, definition)


def _case_mix_rows(release: Release, definition: IndicatorDefinition) -> pa.Table:
    try:
        table = _source(definition, release)
        keep = all_of(table, definition.population.where)
        if keep is not None:
            table = table.filter(keep)
        outcome = (
            all_of(table, definition.numerator.where) if definition.numerator is not None else None
        )
        expression = table.select(
            year=table[definition.year_column].year().cast("int32"),
            provider_orgnr=table.provider_orgnr,
            age=table.age.cast("int64"),
            sex=table.sex.cast("int64"),
            treatment_type=table.treatment_type.cast("int64"),
            outcome=outcome.cast("int64") if outcome is not None else ibis.literal(0, "int64"),
        )
        return _fetch(release.backend, release.engine, expression)
    finally:
        release.release()


def _fetch(backend: Any, engine: EngineName, expression: ir.Table) -> pa.Table:
    """Execute an expression into Arrow.

    On Spark not through ibis' `to_pyarrow`, which goes through pandas (`toPandas`): with pandas 3
    that path fails on a deprecated `copy` keyword. Spark ≥ 4 converts to Arrow directly.
    """
    if engine == "duckdb":
        return cast(pa.Table, backend.to_pyarrow(expression))
    backend._run_pre_execute_hooks(expression)  # registers the in-memory look-up tables
    frame = backend._session.sql(backend.compile(expression))
    return cast(pa.Table, frame.toArrow())


@contextmanager
def _connected(engine: EngineName, spark_session: Any) -> Iterator[Any]:
    """An Ibis backend for one run. DuckDB spills to a temporary directory of its own, removed
    after the run (its default `.tmp/` would land in whatever the working directory is)."""
    if engine != "duckdb":
        if spark_session is None:
            raise ValueError("engine spark needs a spark_session")
        yield ibis.pyspark.connect(spark_session)
        return
    with tempfile.TemporaryDirectory(prefix="kvarus-duckdb-") as spill:
        backend = ibis.duckdb.connect()
        quoted = spill.replace("'", "''")
        try:
            backend.raw_sql(
                f"SET threads = {DUCKDB_THREADS}; SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'; "
                f"SET preserve_insertion_order = false; SET temp_directory = '{quoted}'"
            )
            yield backend
        finally:
            backend.disconnect()


def aggregates(
    manifest: ReleaseManifest,
    *,
    hierarchy: Hierarchy,
    engine: EngineName = "duckdb",
    catalogue: list[IndicatorDefinition] | None = None,
    spark_session: Any = None,
) -> dict[str, pa.Table]:
    """Per indicator id, the raw aggregate (columns of `AGGREGATE_SCHEMA`), before statistics.

    Episode indicators over the same rows share one query at the finest cell, rolled up to the
    levels in Arrow; medians come from counts per value; patient indicators are grouped per
    level in the backend."""
    definitions = load_catalogue() if catalogue is None else catalogue
    with _connected(engine, spark_session) as backend:
        return _aggregates(
            Release(manifest, backend, engine, spark_session, _named(definitions)),
            definitions,
            hierarchy,
        )


def _aggregates(
    release: Release, definitions: list[IndicatorDefinition], hierarchy: Hierarchy
) -> dict[str, pa.Table]:
    backend, engine = release.backend, release.engine
    organisations = Organisations.of(hierarchy)
    groups: dict[tuple[str, str | None, str], _Group] = {}
    for definition in definitions:
        if definition.unit == "episode" and definition.type != "median":
            population = definition.population
            key = (population.table, population.first_per_episode, definition.year_column)
            groups.setdefault(key, _Group()).members.append(definition)
    result: dict[str, pa.Table] = {}

    def fetch(expression: ir.Table, step: str) -> pa.Table:
        with timed(step):
            return _fetch(backend, engine, expression)

    try:
        # Patient indicators first, their tables dropped after: DuckDB keeps temporary tables
        # within its memory limit, and the first measurement rows (materialised for the
        # episode indicators) made the patients' group-bys spill more.
        for definition in definitions:
            if definition.unit == "patient":
                result[definition.id] = _patients(definition, release, organisations, fetch)
        for group in groups.values():
            expression = _cells(group.members, release)
            cells = fetch(expression, "cells " + ",".join(d.id for d in group.members))
            for index, definition in enumerate(group.members):
                rows = _member_cells(cells, index)
                if definition.type == "coverage":
                    npr = fetch(_npr(release), "npr")
                    table = roll_up_coverage(rows, npr, definition, organisations)
                else:
                    table = roll_up_sums(rows, definition, organisations)
                result[definition.id] = table
        for definition in definitions:
            if definition.type == "median":
                cells = fetch(_median_cells(definition, release), f"median cells {definition.id}")
                result[definition.id] = roll_up_medians(cells, definition, organisations)
    finally:
        release.release()
    return {d.id: result[d.id].select(AGGREGATE_SCHEMA.names) for d in definitions}


def _patients(
    definition: IndicatorDefinition,
    release: Release,
    organisations: Organisations,
    fetch: Any,
) -> pa.Table:
    """A patient indicator's levels. On DuckDB one year at a time (every key of
    `patient_levels` has the year, so the years' results are disjoint and concatenated): on the
    10M-episode bench the study indicator's 18.65M rows did not fit the memory limit at once and
    spilled 2.5 GB; year by year (the largest 6.2M rows) the run took 38.8 s instead of 59.6 s
    (the study steps about 21 s instead of 42 s). On DuckDB each year goes through
    `coded_patient_levels`, with the (provider, unit) pairs found by the years' query; Spark
    takes every year in one plan through `patient_levels`.

    Each year's query reads all 10M episodes for its join (about 0.45 s CPU even for a year of
    4K rows); taking consecutive small years together (batches no larger than the largest year:
    2021, 2022, 2023, 2024-2026) left the study steps' CPU time at 32.8 s (the batched run on a
    busy machine), so one year it is.

    On the record path (`_record_rows`) the records are reduced and joined to their episode's
    home on integers: the episode key as two hashes (`episode_columns`), the episodes' homes
    materialised once for every year (`CellCodes.episode_homes`, `CellCodes.coded_records`).
    On the 10M-episode bench the coded rows took 8.1 s wall over the years instead of 9.5 s
    with the join on the key's strings, plus 0.7 s for the homes (run 28.0 -> 26.3 s)."""
    steps = (release.materialise, release.drop, fetch)
    if release.engine != "duckdb":
        rows = _patient_rows(definition, release)
        return patient_levels(rows, definition, organisations, *steps)
    found = fetch(_patient_years(definition, release), f"years {definition.id}")
    pairs = (
        found.select(["provider_orgnr", "unit_code"])
        .group_by(["provider_orgnr", "unit_code"], use_threads=False)
        .aggregate([])
    )
    cells = CellCodes.of(pairs, organisations)
    homes = None
    if _record_rows(definition, release) is not None:
        episodes = release.episodes()
        homes = release.materialise(
            cells.episode_homes(episodes, episode_columns(episodes)), "episode homes"
        )
    parts = []
    for year in sorted(set(found["year"].to_pylist())):
        mark = release.materialised()
        records = _record_rows(definition, release, year) if homes is not None else None
        if records is not None and homes is not None:
            episode = episode_columns(records)
            patient = [c for c in records.columns if c not in (*CELL, *EPISODE_KEY, "num")]
            coded = cells.coded_records(records.mutate(**episode), patient, list(episode), homes)
        else:
            rows = _patient_rows(definition, release, year)
            coded = cells.coded(rows, [c for c in rows.columns if c not in (*CELL, "num")])
        parts.append(coded_patient_levels(coded, cells, definition, organisations, *steps))
        release.release(keep=mark)
    if homes is not None:
        release.drop(homes)
    return pa.concat_tables(parts) if parts else AGGREGATE_SCHEMA.empty_table()


def compute(
    manifest: ReleaseManifest,
    *,
    hierarchy: Hierarchy,
    engine: EngineName = "duckdb",
    catalogue: list[IndicatorDefinition] | None = None,
    spark_session: Any = None,
) -> pa.Table:
    """Every indicator of the catalogue over a release: the result table (`RESULT_SCHEMA`)."""
    definitions = load_catalogue() if catalogue is None else catalogue
    raw = aggregates(
        manifest,
        hierarchy=hierarchy,
        engine=engine,
        catalogue=definitions,
        spark_session=spark_session,
    )
    return finish(raw, definitions, release=manifest.release, hierarchy=hierarchy)


def _sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["year"],
        LEVELS.index((row["context"], row["level"])),
        row["orgnr"],
        row["unit_code"] or "",
    )


def finish(
    raw: dict[str, pa.Table],
    definitions: list[IndicatorDefinition],
    *,
    release: int,
    hierarchy: Hierarchy,
) -> pa.Table:
    """The statistics over the aggregates: values, Wilson intervals, suppression, target levels,
    funnel signals and previous-year values."""
    rows: list[dict[str, Any]] = []
    low_coverage: set[tuple[int, str]] = set()
    # Coverage first: its low values suppress other indicators' provider results.
    ordered = sorted(definitions, key=lambda d: d.type != "coverage")
    organisations = Organisations.of(hierarchy)
    per_indicator: dict[str, list[dict[str, Any]]] = {}
    numerators: dict[str, dict[int, int] | None] = {}
    for definition in ordered:
        records = sorted(raw[definition.id].to_pylist(), key=_sort_key)
        numerators[definition.id] = _statistics(definition, records, low_coverage, organisations)
        per_indicator[definition.id] = records
    _link(definitions, per_indicator, numerators, organisations)
    for definition in definitions:
        if definition.type == "proportion":
            _funnel(per_indicator[definition.id])
    for definition in definitions:
        records = per_indicator[definition.id]
        previous = {
            (r["context"], r["level"], r["orgnr"], r["unit_code"], r["year"]): r["value"]
            for r in records
        }
        for record in records:
            organisation = hierarchy.by_orgnr.get(record["orgnr"])
            key = (
                record["context"],
                record["level"],
                record["orgnr"],
                record["unit_code"],
                record["year"] - 1,
            )
            record.update(
                indicator_id=definition.id,
                release=release,
                name=organisation.name if organisation is not None else None,
                previous_value=previous.get(key),
            )
            del record["measure"]
            rows.append(record)
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


def _statistics(
    definition: IndicatorDefinition,
    records: list[dict[str, Any]],
    low_coverage: set[tuple[int, str]],
    organisations: Organisations,
) -> dict[int, int] | None:
    """Fill value, intervals, suppression and target level, in place; return a proportion's
    numerators from before suppression (by id of the record, for `_complementary`)."""
    if not records:
        return None
    numerator = np.array([r["numerator"] or 0 for r in records], dtype=np.float64)
    denominator = np.array([r["denominator"] for r in records], dtype=np.float64)
    # Kept before suppression empties them: hidden rows must not be all 0 % or all 100 %.
    numerators = (
        {id(r): int(r["numerator"] or 0) for r in records}
        if definition.type == "proportion"
        else None
    )
    is_proportion = definition.type in ("proportion", "coverage")
    # Coverage can exceed 100 % (more registered than NPR counted): no interval then.
    valid = (denominator > 0) & (numerator <= denominator)
    if is_proportion:
        stats = proportion(np.where(valid, numerator, 0.0), np.where(valid, denominator, 1.0))
    for index, record in enumerate(records):
        n = record["denominator"]
        value: float | None
        if definition.type == "proportion" or definition.type == "coverage":
            value = record["numerator"] / n if n > 0 else None
        elif definition.type == "count":
            value = float(n)
        else:
            value = record["measure"]
        intervals: dict[str, float | None] = dict.fromkeys(
            ("ci95_low", "ci95_high", "ci998_low", "ci998_high")
        )
        if is_proportion and valid[index]:
            intervals = {
                "ci95_low": float(stats.lower_95[index]),
                "ci95_high": float(stats.upper_95[index]),
                "ci998_low": float(stats.lower_99_8[index]),
                "ci998_high": float(stats.upper_99_8[index]),
            }
        reason: str | None = None
        if n < definition.min_denominator:
            reason = MIN_DENOMINATOR
        elif (
            definition.display_min_value is not None
            and value is not None
            and value < definition.display_min_value
        ) or (
            record["context"] == "caregiver"
            and record["level"] in ("unit", "provider", "hf")
            and (record["year"], record["orgnr"]) in low_coverage
        ):
            reason = LOW_COVERAGE
        if (
            definition.type == "coverage"
            and record["level"] == "provider"
            and definition.display_min_value is not None
            and value is not None
            and value < definition.display_min_value
        ):
            low_coverage.add((record["year"], record["orgnr"]))
        record.update(intervals)
        record.update(
            value=value,
            suppressed=reason is not None,
            suppression_reason=reason,
            target_level=(
                definition.target.level(value, definition.direction)
                if definition.target is not None and value is not None
                else None
            ),
            funnel_signal=None,
        )
        if reason is not None:
            _hide(record, reason)
        elif definition.type not in ("proportion", "count", "coverage"):
            record["numerator"] = None
    # Medians too: a median is not a sum, but its denominator (the number of intakes) is, and
    # the API shows it beside a published median: a lone hidden child's would be the parent's
    # minus the published siblings' (a reviewer found 1 intake so, 112 - 37 - 18 - 32 - 11 - 13).
    _complementary(
        records,
        organisations,
        min_denominator=definition.min_denominator,
        numerators=numerators,
    )
    return numerators


def _count_key(definition: IndicatorDefinition) -> tuple[str, ...]:
    """What a definition's published count counts: its denominator (a coverage's: its
    numerator, the registered episodes; its denominator is NPR's). Definitions with the same
    key show the same count in every row (screening, research_consent and coverage: the
    intakes; plan, crisis_plan and benefit: the active first measurement points)."""
    population = definition.population
    conditions = sorted(c.model_dump_json() for c in _population_conditions(definition))
    first = population.first_per_episode or ""
    return (definition.unit, population.table, first, definition.year_column, *conditions)


def _link(
    definitions: list[IndicatorDefinition],
    per_indicator: dict[str, list[dict[str, Any]]],
    numerators: dict[str, dict[int, int] | None],
    organisations: Organisations,
) -> None:
    """Suppress alike across definitions that publish the same counts (`_count_key`): a row
    hidden for disclosure in one is hidden in all (`complementary` where it was published).

    Each definition's complementary suppression protects its own hidden rows from subtraction,
    but with other choices than its twins' (the rule on 0 % and 100 % values differs), and
    coverage, whose minimum applies to NPR's count, published a provider's 4 intakes that
    screening hid as under 5: a reviewer recovered such hidden counts exactly from the twins'
    published ones. A twin's hidden rows then go through its own complementary suppression
    again (hiding more never exposes a count, but may leave a reader one unknown), until no
    definition of the group hides a row the others publish. Coverage only takes the others'
    pattern, which protects the counts it repeats: what it hides itself (for NPR's small
    counts) hides no count the others would not publish anyway."""
    groups: dict[tuple[str, ...], list[IndicatorDefinition]] = {}
    for definition in definitions:
        groups.setdefault(_count_key(definition), []).append(definition)
    for group in groups.values():
        if len(group) < 2:
            continue
        changed = True
        while changed:
            changed = False
            hidden = {
                _row_key(r)
                for d in group
                if d.type != "coverage"
                for r in per_indicator[d.id]
                if r["suppression_reason"] in _DISCLOSURE
            }
            for definition in group:
                records = per_indicator[definition.id]
                newly = [r for r in records if not r["suppressed"] and _row_key(r) in hidden]
                for record in newly:
                    _hide(record, COMPLEMENTARY)
                if newly and definition.type != "coverage":
                    _complementary(
                        records,
                        organisations,
                        min_denominator=definition.min_denominator,
                        numerators=numerators[definition.id],
                    )
                changed = changed or bool(newly)


def _row_key(record: dict[str, Any]) -> tuple[Any, ...]:
    return (
        record["year"],
        record["context"],
        record["level"],
        record["orgnr"],
        record["unit_code"],
    )


def _hide(record: dict[str, Any], reason: str) -> None:
    """Suppress a result: it keeps its denominator (the API shows it only to whoever may see the
    row's numbers, `service.published`), nothing else: numerator, value (a proportion, a median),
    intervals, target level, funnel signal."""
    record.update(
        suppressed=True,
        suppression_reason=reason,
        numerator=None,
        value=None,
        target_level=None,
        funnel_signal=None,
        **dict.fromkeys(("ci95_low", "ci95_high", "ci998_low", "ci998_high")),
    )


# Suppressions for privacy, which subtraction must not undo (low_coverage is for quality).
_DISCLOSURE: Final = frozenset({MIN_DENOMINATOR, COMPLEMENTARY})

# (context, child level, parent level), top down: a child suppressed here is a parent below.
_PARENTS: Final = (
    ("caregiver", "rhf", "nation"),
    ("caregiver", "provider", "rhf"),
    ("caregiver", "unit", "provider"),
    ("resident", "rhf", "nation"),
    ("resident", "hf", "rhf"),
)

# The levels whose rows a trust knows although suppressed: a trust key is scoped to one
# provider (`service.auth`) and sees the numbers of its own caregiver rows
# (`Principal.may_see_result`): its provider, caregiver hf and unit rows (a unit row carries its
# provider's orgnr). Its own records tell it the same numbers. An HF's resident hf row is counted
# as known too, although the API no longer shows it to the trust: assuming it known hides more,
# never less.
_OWNED_LEVELS: Final = frozenset({"provider", "hf", "unit"})

# Who knows a hidden row: trusts by orgnr, or everybody (None).
_Knowers = set[str | None]


def _complementary(
    records: list[dict[str, Any]],
    organisations: Organisations,
    *,
    min_denominator: int,
    numerators: dict[int, int] | None = None,
) -> None:
    """Complementary suppression within each parent group (the engine's docstring has the
    rule), in place on one indicator's sorted results.

    A group is its parent and its children, one equation (the parent is the sum of its
    children). Its unknowns, for a reader, are its hidden rows that reader does not know: for
    the public every hidden row, for a trust the hidden rows other than its own (and other than
    those it has worked out). Whenever some reader is left with exactly one unknown, and that
    row is hidden for disclosure (`min_denominator`, `complementary`), the published child with
    the smallest denominator (ties: result order) is hidden too, with its caregiver hf twin, and
    the group is looked at again. For the public this is the rule of the older engine (one
    hidden child under a published parent; a hidden parent over published children); for a
    trust it is the respondent rule: two hidden rows of which one is the trust's own. Three
    exceptions. A trust's one unknown is the hidden parent: if knowing it leaves the trust
    with one unknown hidden for disclosure in the group above (`exposes`), a child is hidden
    here as above; if not, the trust is let know the parent. No published child is left: the
    parent is hidden (unless it is the nation). The one unknown is only `low_coverage` (and
    not guarded, below), or nothing is left to hide: the reader does work the row out. A row
    worked out counts as known to that reader in the row's other group (an RHF so, in the
    nation's group), and the groups are gone through again, top down, until nothing
    changes. Units are their provider's: in that group the provider itself knows every row
    and another trust none, so only the public's rule acts there.

    The caregiver nation's children are its RHFs and the providers outside every RHF (their own
    rows: as one gap they would protect a small one only when alone). The rows without a
    usable home HF are published only as a difference (the caregiver nation minus the resident
    nation): with 1 ... min_denominator − 1 rows they count as a hidden child, so the resident
    nation is hidden, and the resident groups below then hide an RHF and an HF.

    `numerators` (a proportion's, by id of its record, from before suppression) adds the rule
    for the values: a reader that knows a parent knows the sum of the hidden rows below it
    that it does not know, and when that sum is all 0 % (numerator 0) or all 100 % (numerator
    = denominator) every one of them is known to be so. A hidden row that the reader does not
    know is itself the sum of its children, so it is replaced by its hidden ones (the
    published ones subtracted): the finest hidden rows are what subtraction tells most about
    (a hidden provider's published units make its hidden units' sum known). When those
    finest rows, one of them hidden for disclosure, are all 0 % or all 100 %, the published
    row below the parent with the smallest denominator (ties: result order) whose own value
    breaks that (a numerator above 0, or under its denominator) is hidden too (also one below
    a hidden row a trust knows only as worked out: hidden, it leaves that row unknown to the
    trust again, and what every reader worked out is worked out anew); with no such
    row the parent itself is (its own value then says the same: 0 % or 100 %), never the
    nation. A parent hidden already that the reader knows only as worked out (not its own
    row; a lone `low_coverage` child, which the rule of one unknown lets every reader work
    out) is guarded for that reader instead: in its own group it then counts as hidden for
    disclosure while that reader does not know it (`protected`), so a published sibling, or
    failing that the grandparent (never the nation), is hidden, and what any reader had
    worked out of it is forgotten and worked out again. Once guarded, a parent that nothing
    can protect is let be. The rule acts only when the rule of one unknown above has nothing
    left to do, so that every hidden parent has its hidden children."""
    by_key = {_row_key(r): r for r in records}

    def small(gap: int) -> bool:
        return 0 < gap < min_denominator

    # The caregiver nation with, as its children, the resident nation and the small group of
    # rows without a home HF (a row of its own, never published): for the rule on values.
    gaps: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for record in records:
        if (record["context"], record["level"]) != ("resident", "nation"):
            continue
        caregiver = by_key.get((record["year"], "caregiver", "nation", NATION_ORGNR, None))
        if (
            caregiver is not None
            and not caregiver["suppressed"]
            and not record["suppressed"]
            and small(caregiver["denominator"] - record["denominator"])
        ):
            _hide(record, COMPLEMENTARY)
            gap = {
                "year": record["year"],
                "context": "resident",
                "level": "gap",
                "orgnr": "",
                "unit_code": None,
                "suppressed": True,
                "suppression_reason": MIN_DENOMINATOR,
                "denominator": caregiver["denominator"] - record["denominator"],
            }
            if numerators is not None:
                numerators[id(gap)] = numerators[id(caregiver)] - numerators[id(record)]
            gaps.append((caregiver, [record, gap]))

    def parent_orgnr(record: dict[str, Any], level: str) -> str | None:
        if level == "nation":
            return NATION_ORGNR
        if level == "provider":
            return cast(str, record["orgnr"])
        lookup = (
            organisations.providers if record["context"] == "caregiver" else organisations.homes
        )
        return lookup.get(record["orgnr"], (None, None))[1]

    families: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for context, child_level, parent_level in _PARENTS:
        groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for record in records:
            if (record["context"], record["level"]) == (context, child_level):
                orgnr = parent_orgnr(record, parent_level)
            elif (context, child_level, record["context"], record["level"]) == (
                "caregiver",
                "rhf",
                "caregiver",
                "provider",
            ) and parent_orgnr(record, "rhf") is None:
                orgnr = NATION_ORGNR  # a provider outside every RHF: a child of the nation
            else:
                continue
            if orgnr is not None:
                groups.setdefault((record["year"], orgnr), []).append(record)
        for (year, orgnr), children in groups.items():
            parent = by_key.get((year, context, parent_level, orgnr, None))
            if parent is not None:
                families.append((parent, children))

    knowers: dict[int, _Knowers] = {}

    def owners(record: dict[str, Any]) -> _Knowers:
        owned = record["level"] in _OWNED_LEVELS
        return {cast(str, record["orgnr"])} if owned else set()

    def known_by(record: dict[str, Any]) -> _Knowers:
        if id(record) not in knowers:
            knowers[id(record)] = owners(record)
        return knowers[id(record)]

    # Hidden rows (by id) that some readers must not work out although they are not hidden for
    # disclosure (a `low_coverage` provider): knowing one, that reader would find the hidden rows
    # below it all 0 % or all 100 % with nothing left there to hide (`all_alike`).
    guards: dict[int, _Knowers] = {}

    def protected(row: dict[str, Any]) -> bool:
        """Whether `row`, a hidden row, must not be left a reader's one unknown in its group:
        hidden for disclosure, or guarded for a reader that does not know it."""
        return row["suppression_reason"] in _DISCLOSURE or any(
            not {None, reader} & known_by(row) for reader in guards.get(id(row), ())
        )

    above = {id(child): family for family in families for child in family[1]}

    def unknown_to(reader: str | None, hidden: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [row for row in hidden if not {None, reader} & known_by(row)]

    def exposes(reader: str, parent: dict[str, Any]) -> bool:
        """Whether `reader`, knowing the hidden `parent`, would find a row hidden for
        disclosure in the group above (the parent and its siblings): a nation has none above
        but the rows without a home HF, which it protects, so it counts as exposing."""
        if id(parent) not in above:
            return True
        grandparent, siblings = above[id(parent)]
        hidden = [r for r in (grandparent, *siblings) if r["suppressed"] and r is not parent]
        unknown = unknown_to(reader, hidden)
        return len(unknown) == 1 and protected(unknown[0])

    def lone_unknown(hidden: list[dict[str, Any]]) -> tuple[str | None, dict[str, Any]] | None:
        """A reader (None: the public) and the one hidden row it does not know, if any."""
        readers: list[str | None] = [None]
        readers += sorted({o for row in hidden for o in known_by(row) if o is not None})
        for reader in readers:
            unknown = unknown_to(reader, hidden)
            if len(unknown) == 1:
                return reader, unknown[0]
        return None

    def suppress(record: dict[str, Any]) -> None:
        _hide(record, COMPLEMENTARY)
        if (record["context"], record["level"]) == ("caregiver", "provider"):
            # The caregiver hf row of a public HF repeats its provider row.
            twin = by_key.get((record["year"], "caregiver", "hf", record["orgnr"], None))
            if twin is not None and not twin["suppressed"]:
                _hide(twin, COMPLEMENTARY)

    below = {id(parent): children for parent, children in families}
    position = {id(record): index for index, record in enumerate(records)}
    # (parent, reader, the finest hidden rows) that nothing can protect: let be.
    accepted: set[tuple[int, str | None, frozenset[int]]] = set()

    def finest(
        reader: str | None, children: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """Below a parent, for `reader`: the finest hidden rows it does not know, the rows it
        knows (published or not), and the hidden rows it does not know that it sees through."""
        hidden: list[dict[str, Any]] = []
        known: list[dict[str, Any]] = []
        through: list[dict[str, Any]] = []
        pending = list(children)
        while pending:
            row = pending.pop()
            if not row["suppressed"] or {None, reader} & known_by(row):
                known.append(row)
            elif id(row) in below:
                through.append(row)
                pending += below[id(row)]
            else:
                hidden.append(row)
        return hidden, known, through

    def all_alike(
        parent: dict[str, Any], children: list[dict[str, Any]]
    ) -> tuple[tuple[int, str | None, frozenset[int]], list[dict[str, Any]]] | None:
        """A reader that knows `parent` and finds the hidden rows below it all 0 % or all
        100 %: its key in `accepted`, and the published rows that would break that."""
        assert numerators is not None
        hidden, _, through = finest(None, children)
        readers: list[str | None] = [None]
        owners = known_by(parent).union(*(known_by(row) for row in hidden + through))
        readers += sorted(o for o in owners if o is not None)
        for reader in readers:
            if parent["suppressed"] and not {None, reader} & known_by(parent):
                continue
            hidden, known, _ = finest(reader, children)
            if not any(row["suppression_reason"] in _DISCLOSURE for row in hidden):
                continue
            # The hidden rows' own sums, and the parent minus the known rows: the same but for
            # distinct patients, each counted once in the parent, at each child it was at.
            count = sum(numerators[id(row)] for row in hidden)
            total = sum(cast(int, row["denominator"]) for row in hidden)
            found = numerators[id(parent)] - sum(numerators[id(row)] for row in known)
            of = parent["denominator"] - sum(cast(int, row["denominator"]) for row in known)
            zero = (total > 0 and count == 0) or (of > 0 and found == 0)
            full = (total > 0 and count == total) or (of > 0 and found == of)
            key = (id(parent), reader, frozenset(id(row) for row in hidden))
            if not (zero or full) or key in accepted:
                continue
            return key, [
                row
                for row in known + below_worked_out(reader, known)
                if not row["suppressed"]
                and reader not in known_by(row)
                and (not zero or numerators[id(row)] > 0)
                and (not full or numerators[id(row)] < row["denominator"])
            ]
        return None

    def below_worked_out(reader: str | None, known: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows below the hidden rows a trust knows only as worked out (not its own, not
        the public's): hiding a published one leaves that row unknown to it again (a trust
        that works out a hidden RHF from its own row finds the rest of the nation below it)."""
        if reader is None:
            return []
        found: list[dict[str, Any]] = []
        pending = [
            row
            for row in known
            if row["suppressed"] and None not in known_by(row) and reader not in owners(row)
        ]
        while pending:
            for child in below.get(id(pending.pop()), []):
                found.append(child)
                if child["suppressed"]:
                    pending.append(child)
        return found

    changed = True
    while changed:
        changed = False
        for parent, children in families:
            while (
                found := lone_unknown([r for r in (parent, *children) if r["suppressed"]])
            ) is not None:
                reader, row = found
                shown = [child for child in children if not child["suppressed"]]
                if row is parent and reader is not None and not exposes(reader, parent):
                    # The trust works its group's hidden parent out; nothing above is the
                    # worse for it (the groups above are looked at again if that changes).
                    known_by(row).add(reader)
                elif protected(row) and shown:
                    # min() keeps the first of equal denominators: the result order.
                    suppress(min(shown, key=lambda child: cast(int, child["denominator"])))
                elif protected(row) and not parent["suppressed"] and parent["level"] != "nation":
                    # Every child is hidden, and one trust knows all but one of them: the
                    # parent goes, and its group above protects it.
                    suppress(parent)
                else:
                    known_by(row).add(reader)
                changed = True
        if changed or numerators is None:
            continue
        # One row at a time in a year (the rule of one unknown first gives a newly hidden row
        # its own); the years are apart.
        acted: set[int] = set()
        for parent, children in families + gaps:
            if parent["year"] in acted or (alike := all_alike(parent, children)) is None:
                continue
            key, breakers = alike
            if breakers:
                # min() by denominator, then result order, as for the rule above.
                suppress(
                    min(
                        breakers, key=lambda row: (cast(int, row["denominator"]), position[id(row)])
                    )
                )
                # What readers worked out may rest on the row now hidden: worked out again.
                knowers.clear()
            elif not parent["suppressed"] and parent["level"] != "nation":
                suppress(parent)
            elif (
                parent["suppressed"]
                and id(parent) in above
                and key[1] not in owners(parent)
                and key[1] not in guards.get(id(parent), set())
            ):
                # The hidden parent is known to the reader only as worked out (a lone
                # low_coverage child): it is protected in its own group, as if hidden for
                # disclosure (a published sibling, or failing that the grandparent, is hidden),
                # and what anyone worked out of it is looked at again.
                guards.setdefault(id(parent), set()).add(key[1])
                knowers[id(parent)] = owners(parent)
            else:
                accepted.add(key)
            acted.add(parent["year"])
        changed = bool(acted)


def _funnel(records: list[dict[str, Any]]) -> None:
    """Funnel signals of the caregiver provider results against the national value of the year;
    a public HF's caregiver hf result (its own provider's patients, the same numbers) carries its
    provider result's signal."""
    twins = {
        (r["year"], r["orgnr"]): r
        for r in records
        if r["context"] == "caregiver" and r["level"] == "hf" and not r["suppressed"]
    }
    national = {
        r["year"]: r["value"]
        for r in records
        if r["context"] == "caregiver" and r["level"] == "nation" and r["value"] is not None
    }
    for year, theta in national.items():
        providers = [
            r
            for r in records
            if r["year"] == year
            and r["context"] == "caregiver"
            and r["level"] == "provider"
            and not r["suppressed"]
        ]
        if not providers:
            continue
        limits = normal_funnel_limits(theta, [r["denominator"] for r in providers])
        signals = funnel_significance([r["numerator"] for r in providers], limits)
        for record, signal in zip(providers, signals, strict=True):
            record["funnel_signal"] = signal
            twin = twins.get((year, record["orgnr"]))
            if twin is not None:
                twin["funnel_signal"] = signal
