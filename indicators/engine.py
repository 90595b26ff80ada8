"""The indicator engine: the catalogue over a release, as Ibis expressions (DuckDB or Spark).

The heavy lifting (joins, first rows per episode, group-bys, counts, medians) is one Ibis
expression per indicator, executed by DuckDB over the manifest's Parquet files or by Spark through
Ibis' PySpark backend; the same expressions on both. The final statistics (Wilson intervals,
funnel signals, target levels, suppression, previous year) run in numpy over the small aggregate.

Rules (DOMAIN.md, and choices documented here):
- An episode is (provider_orgnr, episode_id). Its intake columns (home HF, age, sex, treatment
  type) are those of its first basis row (intake_date, then record_id).
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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final, Literal, cast

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa

from indicators.catalogue import IndicatorDefinition, load_catalogue
from indicators.funnel import funnel_significance, normal_funnel_limits
from indicators.results import RESULT_SCHEMA
from indicators.statistics import proportion
from indicators.vocabulary import ANY_COLUMNS, EPISODE_COLUMNS, YEAR_DATES, Condition
from schemas.forms import Form, warehouse_schema
from schemas.manifest import ReleaseManifest
from schemas.organisations import NATION_ORGNR, Hierarchy

EngineName = Literal["duckdb", "spark"]

EPISODE_KEY: Final = ("provider_orgnr", "episode_id")
LOW_COVERAGE: Final = "low_coverage"
MIN_DENOMINATOR: Final = "min_denominator"

# (context, level) pairs in the order the results are sorted.
LEVELS: Final = (
    ("caregiver", "unit"),
    ("caregiver", "provider"),
    ("caregiver", "hf"),
    ("caregiver", "rhf"),
    ("caregiver", "nation"),
    ("resident", "hf"),
    ("resident", "rhf"),
    ("resident", "nation"),
)

# Columns of the small aggregate each indicator's expression returns.
_AGGREGATE_COLUMNS: Final = (
    "year",
    "context",
    "level",
    "orgnr",
    "unit_code",
    "numerator",
    "denominator",
    "measure",
)


def engine_name(value: str) -> EngineName:
    if value not in ("duckdb", "spark"):
        raise ValueError(f"engine must be duckdb or spark, not {value!r}")
    return cast(EngineName, value)


class _Release:
    """The release's tables as Ibis tables, with the derived tables built once per run."""

    def __init__(
        self, manifest: ReleaseManifest, backend: Any, engine: EngineName, spark_session: Any
    ) -> None:
        self.manifest = manifest
        self.backend = backend
        self.engine = engine
        self.spark_session = spark_session
        self._tables: dict[str, ir.Table] = {}
        self._cached: list[Any] = []
        self._scratch: list[str] = []

    def scratch(self, table: ir.Table) -> ir.Table:
        """Materialise a table that one indicator's expression reads at every level (DuckDB
        does not share the repeated subquery); dropped by `clear_scratch` after the indicator."""
        if self.engine != "duckdb":
            return table
        name = f"kvarus_scratch_{len(self._scratch)}"
        self.backend.create_table(name, obj=table, temp=True)
        self._scratch.append(name)
        return cast(ir.Table, self.backend.table(name))

    def clear_scratch(self) -> None:
        for name in self._scratch:
            self.backend.raw_sql(f"DROP TABLE IF EXISTS {name}")
        self._scratch.clear()

    def _cache(self, table: ir.Table) -> ir.Table:
        """Materialise an intermediate table used by several indicators (DuckDB: a temporary
        table; Spark plans it into each job, as its own optimiser prefers)."""
        if self.engine != "duckdb":
            return table
        name = f"kvarus_cached_{len(self._cached)}"
        # Not overwrite=True: with sqlglot 30 ibis renders that DROP without the table name.
        self.backend.create_table(name, obj=table, temp=True)
        self._cached.append(name)
        return cast(ir.Table, self.backend.table(name))

    def release(self) -> None:
        """Drop the materialised intermediate tables."""
        for name in self._cached:
            self.backend.raw_sql(f"DROP TABLE IF EXISTS {name}")
        self._cached.clear()

    def raw(self, name: str) -> ir.Table:
        if name in self._tables:
            return self._tables[name]
        form = Form(name)
        schema = warehouse_schema(form)
        # The stored partition column `year` lives in the directory names (hive layout), not in
        # the files; npr_counts keeps its own `year`. upload_id is not needed here.
        wanted = [
            f
            for f in schema
            if f.name != "upload_id" and (f.name != "year" or form is Form.NPR_COUNTS)
        ]
        snapshot = self.manifest.tables.get(name)
        files = [_local(f) for f in snapshot.files] if snapshot is not None else []
        if not files:
            empty = pa.schema([pa.field(f.name, f.type) for f in wanted]).empty_table()
            table = ibis.memtable(empty)
        elif self.engine == "duckdb":
            table = self.backend.read_parquet(files, hive_partitioning=True)
        else:
            reader = self.spark_session.read.option("basePath", _hive_root(files))
            view = f"kvarus_{name}_{self.manifest.release}"
            reader.parquet(*files).createOrReplaceTempView(view)
            table = self.backend.table(view)
        # Cast explicitly: hive partition columns arrive as int64 (DuckDB) or int32 (Spark).
        table = table.select(*[table[f.name].cast(ibis.dtype(f.type)).name(f.name) for f in wanted])
        self._tables[name] = table
        return table

    def first_per_episode(self, name: str, date_column: str) -> ir.Table:
        """The episode's first row of a table by a date column (ties: record_id). Cached."""
        key = f"first:{name}:{date_column}"
        if key not in self._tables:
            table = self.enriched(name)
            window = ibis.window(
                group_by=[table[c] for c in EPISODE_KEY],
                order_by=[table[date_column], table.record_id],
            )
            ranked = table.mutate(_rank=ibis.row_number().over(window))
            self._tables[key] = self._cache(ranked.filter(ranked._rank == 0).drop("_rank"))
        return self._tables[key]

    def episode_basis(self) -> ir.Table:
        """Per episode: the intake columns of its first basis row. Cached."""
        key = "episode_basis"
        if key not in self._tables:
            basis = self.raw("basis")
            window = ibis.window(
                group_by=[basis[c] for c in EPISODE_KEY],
                order_by=[basis.intake_date, basis.record_id],
            )
            ranked = basis.mutate(_rank=ibis.row_number().over(window))
            first = ranked.filter(ranked._rank == 0)
            self._tables[key] = self._cache(first.select(*EPISODE_KEY, *EPISODE_COLUMNS))
        return self._tables[key]

    def enriched(self, name: str) -> ir.Table:
        """A population table with its derived variables and the episode's intake columns."""
        key = f"enriched:{name}"
        if key in self._tables:
            return self._tables[key]
        if name == "basis":
            basis = self.raw("basis")
            table = basis.mutate(
                waiting_days=basis.intake_date.delta(basis.referral_date, unit="day").cast("int64")
            )
        elif name == "any":
            parts = []
            for form in ("basis", "measurement", "discharge", "followup"):
                raw = self.raw(form)
                study = (
                    raw.clinical_study_id
                    if "clinical_study_id" in raw.columns
                    else ibis.null().cast("string")
                )
                parts.append(
                    raw.select(
                        *[c for c in ANY_COLUMNS if c != "clinical_study_id"],
                        clinical_study_id=study,
                        record_date=raw[YEAR_DATES[form]],
                    )
                )
            table = self._with_episode(ibis.union(*parts, distinct=False))
        else:
            table = self._with_episode(self.raw(name))
            if name == "followup":
                first = self.first_per_episode("measurement", "measure_date")
                baseline = first.select(*EPISODE_KEY, baseline_use_days_30=first.use_days_30)
                table = table.left_join(baseline, list(EPISODE_KEY)).drop(
                    *[f"{c}_right" for c in EPISODE_KEY]
                )
                table = table.mutate(
                    use_days_change=(table.use_days_30 - table.baseline_use_days_30).cast("int64")
                )
        self._tables[key] = table
        return table

    def _with_episode(self, table: ir.Table) -> ir.Table:
        episode = self.episode_basis()
        joined = table.left_join(episode, list(EPISODE_KEY))
        return joined.drop(*[f"{c}_right" for c in EPISODE_KEY])


def _local(uri: str) -> str:
    return uri.removeprefix("file://")


def _hive_root(files: list[str]) -> str:
    """The table directory above the `year=YYYY/` partition directories (Spark's basePath)."""
    roots = []
    for name in files:
        parent = Path(name).parent
        while parent.name.startswith("year=") or "=" in parent.name:
            parent = parent.parent
        roots.append(str(parent))
    return os.path.commonpath(roots)


def _condition(table: ir.Table, condition: Condition) -> ir.BooleanValue:
    """A condition as a boolean expression that is false (never null) on missing values."""
    if condition.op == "any_of":
        assert condition.any_of is not None
        result = _condition(table, condition.any_of[0])
        for inner in condition.any_of[1:]:
            result = result | _condition(table, inner)
        return result
    assert condition.column is not None
    column = table[condition.column]
    value = condition.value
    expression: ir.BooleanValue
    match condition.op:
        case "is_null":
            return column.isnull()
        case "not_null":
            return column.notnull()
        case "eq":
            expression = column == value
        case "ne":
            expression = column != value
        case "lt":
            expression = column < value
        case "le":
            expression = column <= value
        case "gt":
            expression = column > value
        case "ge":
            expression = column >= value
        case "in":
            expression = column.isin(cast(list[Any], value))
        case "not_in":
            expression = column.notin(cast(list[Any], value))
        case _:  # pragma: no cover (the vocabulary refuses other ops)
            raise ValueError(condition.op)
    return column.notnull() & expression.fill_null(False)


def _all(table: ir.Table, conditions: list[Condition]) -> ir.BooleanValue | None:
    if not conditions:
        return None
    result = _condition(table, conditions[0])
    for condition in conditions[1:]:
        result = result & _condition(table, condition)
    return result


def _population(definition: IndicatorDefinition, release: _Release) -> ir.Table:
    """The population rows: year, provider_orgnr, unit_code, home_hf_orgnr, patient_key, num,
    measure."""
    population = definition.population
    if population.first_per_episode is not None:
        table = release.first_per_episode(population.table, population.first_per_episode)
    else:
        table = release.enriched(population.table)
    keep = _all(table, population.where)
    if keep is not None:
        table = table.filter(keep)
    numerator = (
        _all(table, definition.numerator.where) if definition.numerator is not None else None
    )
    return table.select(
        year=table[definition.year_column].year().cast("int32"),
        provider_orgnr=table.provider_orgnr,
        unit_code=table.unit_code,
        home_hf_orgnr=table.home_hf_orgnr,
        patient_key=table.patient_key,
        num=numerator.cast("int64") if numerator is not None else ibis.literal(0, "int64"),
        measure=(
            table[definition.measure].cast("int64")
            if definition.measure is not None
            else ibis.null().cast("int64")
        ),
    ).filter(lambda t: t.year.notnull())


def case_mix_rows(
    manifest: ReleaseManifest,
    definition: IndicatorDefinition,
    *,
    engine: EngineName = "duckdb",
    spark_session: Any = None,
) -> pa.Table:
    """One row per population unit of an (episode) indicator: year, provider_orgnr, age, sex,
    treatment_type (the episode's intake) and outcome (0/1), for indirect standardisation."""
    backend = _connect(engine, spark_session)
    release = _Release(manifest, backend, engine, spark_session)
    try:
        population = definition.population
        if population.first_per_episode is not None:
            table = release.first_per_episode(population.table, population.first_per_episode)
        else:
            table = release.enriched(population.table)
        keep = _all(table, population.where)
        if keep is not None:
            table = table.filter(keep)
        outcome = (
            _all(table, definition.numerator.where) if definition.numerator is not None else None
        )
        expression = table.select(
            year=table[definition.year_column].year().cast("int32"),
            provider_orgnr=table.provider_orgnr,
            age=table.age.cast("int64"),
            sex=table.sex.cast("int64"),
            treatment_type=table.treatment_type.cast("int64"),
            outcome=outcome.cast("int64") if outcome is not None else ibis.literal(0, "int64"),
        )
        if engine == "duckdb":
            return cast(pa.Table, backend.to_pyarrow(expression))
        backend._run_pre_execute_hooks(expression)
        return cast(pa.Table, backend._session.sql(backend.compile(expression)).toArrow())
    finally:
        release.release()
        if engine == "duckdb":
            backend.disconnect()


def _organisations(hierarchy: Hierarchy) -> tuple[ir.Table, ir.Table]:
    """Look-up tables: provider → (hf, rhf) and home HF → (hf, rhf)."""
    providers: list[tuple[str, str | None, str | None]] = []
    homes: list[tuple[str, str | None, str | None]] = []
    for organisation in hierarchy.providers:
        rhf = hierarchy.rhf_of(organisation.orgnr)
        rhf_orgnr = rhf.orgnr if rhf.level == "rhf" else None
        hf_orgnr = organisation.orgnr if organisation.level == "hf" else None
        providers.append((organisation.orgnr, hf_orgnr, rhf_orgnr))
        if organisation.level == "hf":
            homes.append((organisation.orgnr, organisation.orgnr, rhf_orgnr))
    string = pa.string()

    def table(rows: list[tuple[str, str | None, str | None]], prefix: str) -> ir.Table:
        return ibis.memtable(
            pa.table(
                {
                    f"{prefix}_key": pa.array([r[0] for r in rows], string),
                    f"{prefix}_hf": pa.array([r[1] for r in rows], string),
                    f"{prefix}_rhf": pa.array([r[2] for r in rows], string),
                }
            )
        )

    return table(providers, "provider"), table(homes, "home")


def _with_levels(finest: ir.Table, organisations: tuple[ir.Table, ir.Table]) -> ir.Table:
    """Add provider_hf, provider_rhf (caregiver) and home_hf, home_rhf (resident) to a table."""
    providers, homes = organisations
    table = finest.left_join(providers, finest.provider_orgnr == providers.provider_key).left_join(
        homes, finest.home_hf_orgnr == homes.home_key
    )
    return table.drop("provider_key", "home_key")


def _level_keys(table: ir.Table, context: str, level: str) -> tuple[ir.Value, ir.Value, Any]:
    """(orgnr, unit_code, filter) of a level; filter None when every row takes part."""
    no_unit = ibis.null().cast("string")
    nation = ibis.literal(NATION_ORGNR)
    if context == "caregiver":
        match level:
            case "unit":
                return table.provider_orgnr, table.unit_code, None
            case "provider":
                return table.provider_orgnr, no_unit, None
            case "hf":
                return table.provider_hf, no_unit, table.provider_hf.notnull()
            case "rhf":
                return table.provider_rhf, no_unit, table.provider_rhf.notnull()
            case _:
                return nation, no_unit, None
    match level:
        case "hf":
            return table.home_hf, no_unit, table.home_hf.notnull()
        case "rhf":
            return table.home_rhf, no_unit, table.home_rhf.notnull()
        case _:
            return nation, no_unit, table.home_hf.notnull()


def _levels_of(definition: IndicatorDefinition) -> list[tuple[str, str]]:
    levels = [pair for pair in LEVELS if pair[0] in definition.contexts]
    if definition.type == "coverage":
        # NPR counts are per provider: no unit level.
        levels = [pair for pair in levels if pair[1] != "unit"]
    return levels


def _aggregate(
    definition: IndicatorDefinition,
    release: _Release,
    organisations: tuple[ir.Table, ir.Table],
) -> ir.Table:
    """One expression: the indicator's numerator, denominator and measure at every level."""
    rows = _population(definition, release)
    cell = ["year", "provider_orgnr", "unit_code", "home_hf_orgnr"]
    if definition.type == "coverage":
        return _coverage(definition, rows, release, organisations)
    if definition.unit == "patient":
        finest = rows.group_by([*cell, "patient_key"]).agg(num=rows.num.max())
    elif definition.type == "median":
        finest = rows.group_by([*cell, "measure"]).agg(n=rows.count())
    else:
        finest = rows.group_by(cell).agg(
            n=rows.count(), num=rows.num.sum(), total=rows.measure.sum()
        )
    table = release.scratch(_with_levels(finest, organisations))
    parts = []
    for context, level in _levels_of(definition):
        _, _, keep = _level_keys(table, context, level)
        scoped = table if keep is None else table.filter(keep)
        orgnr, unit_code, _ = _level_keys(scoped, context, level)
        scoped = scoped.mutate(_orgnr=orgnr, _unit=unit_code)
        keys = ["year", "_orgnr", "_unit"]
        if definition.unit == "patient":
            patients = scoped.group_by([*keys, "patient_key"]).agg(num=scoped.num.max())
            grouped = patients.group_by(keys).agg(
                numerator=patients.num.sum().cast("int64"),
                denominator=patients.count().cast("int64"),
                measure=ibis.null().cast("float64"),
            )
        elif definition.type == "median":
            grouped = _median(scoped, keys)
        else:
            measure = (
                (scoped.total.sum() / scoped.n.sum()).cast("float64")
                if definition.type == "mean"
                else ibis.null().cast("float64")
            )
            grouped = scoped.group_by(keys).agg(
                numerator=scoped.num.sum().cast("int64"),
                denominator=scoped.n.sum().cast("int64"),
                measure=measure,
            )
        parts.append(_labelled(grouped, context, level))
    return ibis.union(*parts, distinct=False)


def _labelled(grouped: ir.Table, context: str, level: str) -> ir.Table:
    return grouped.select(
        year=grouped.year.cast("int32"),
        context=ibis.literal(context),
        level=ibis.literal(level),
        orgnr=grouped._orgnr.cast("string"),
        unit_code=grouped._unit.cast("string"),
        numerator=grouped.numerator.cast("int64"),
        denominator=grouped.denominator.cast("int64"),
        measure=grouped.measure.cast("float64"),
    )


def _median(scoped: ir.Table, keys: list[str]) -> ir.Table:
    """Exact median per group from counts per value: the middle value, or the mean of the two
    middle values (1-based positions ⌊(N−1)/2⌋+1 and ⌊N/2⌋+1 of the N sorted values)."""
    values = scoped.group_by([*keys, "measure"]).agg(n=scoped.n.sum())
    group = [values[k] for k in keys]
    cumulative = ibis.cumulative_window(group_by=group, order_by=[values.measure])
    whole = ibis.window(group_by=group)
    ranked = values.mutate(upto=values.n.sum().over(cumulative), total=values.n.sum().over(whole))
    ranked = ranked.mutate(
        low_position=(ranked.total - 1) // 2 + 1,
        high_position=ranked.total // 2 + 1,
        before=ranked.upto - ranked.n,
    )

    def holds(position: ir.IntegerValue) -> ir.BooleanValue:
        return (ranked.before < position) & (ranked.upto >= position)

    grouped = ranked.group_by(keys).agg(
        low=ranked.measure.max(where=holds(ranked.low_position)),
        high=ranked.measure.max(where=holds(ranked.high_position)),
        denominator=ranked.n.sum(),
    )
    return grouped.select(
        *keys,
        numerator=ibis.null().cast("int64"),
        denominator=grouped.denominator,
        measure=(grouped.low.cast("float64") + grouped.high.cast("float64")) / 2.0,
    )


def _coverage(
    definition: IndicatorDefinition,
    rows: ir.Table,
    release: _Release,
    organisations: tuple[ir.Table, ir.Table],
) -> ir.Table:
    registered = rows.group_by(["year", "provider_orgnr"]).agg(registered=rows.count())
    npr = release.raw("npr_counts")
    reference = npr.group_by(year=npr.year.cast("int32"), provider_orgnr=npr.provider_orgnr).agg(
        npr=npr.episodes.cast("int64").sum()
    )
    joined = reference.left_join(
        registered,
        [reference.year == registered.year, reference.provider_orgnr == registered.provider_orgnr],
    ).select(
        year=reference.year,
        provider_orgnr=reference.provider_orgnr,
        registered=ibis.coalesce(registered.registered, 0),
        npr=reference.npr,
    )
    providers, _ = organisations
    table = joined.left_join(providers, joined.provider_orgnr == providers.provider_key).drop(
        "provider_key"
    )
    parts = []
    for context, level in _levels_of(definition):
        _, _, keep = _level_keys(table, context, level)
        scoped = table if keep is None else table.filter(keep)
        orgnr, unit_code, _ = _level_keys(scoped, context, level)
        scoped = scoped.mutate(_orgnr=orgnr, _unit=unit_code)
        grouped = scoped.group_by(["year", "_orgnr", "_unit"]).agg(
            numerator=scoped.registered.sum(),
            denominator=scoped.npr.sum(),
            measure=ibis.null().cast("float64"),
        )
        parts.append(_labelled(grouped, context, level))
    return ibis.union(*parts, distinct=False)


AGGREGATE_SCHEMA: Final = pa.schema(
    [
        ("year", pa.int32()),
        ("context", pa.string()),
        ("level", pa.string()),
        ("orgnr", pa.string()),
        ("unit_code", pa.string()),
        ("numerator", pa.int64()),
        ("denominator", pa.int64()),
        ("measure", pa.float64()),
    ]
)


def _fetch(backend: Any, engine: EngineName, expression: ir.Table) -> pa.Table:
    """Execute an aggregate expression into Arrow.

    On Spark not through ibis' `to_pyarrow`, which goes through pandas (`toPandas`): with pandas 3
    that path fails on a deprecated `copy` keyword. Spark ≥ 4 converts to Arrow directly.
    """
    if engine == "duckdb":
        return cast(pa.Table, backend.to_pyarrow(expression))
    backend._run_pre_execute_hooks(expression)  # registers the in-memory look-up tables
    frame = backend._session.sql(backend.compile(expression))
    return cast(pa.Table, frame.toArrow())


def _connect(engine: EngineName, spark_session: Any) -> Any:
    if engine == "duckdb":
        return ibis.duckdb.connect()
    if spark_session is None:
        raise ValueError("engine spark needs a spark_session")
    return ibis.pyspark.connect(spark_session)


def aggregates(
    manifest: ReleaseManifest,
    *,
    hierarchy: Hierarchy,
    engine: EngineName = "duckdb",
    catalogue: list[IndicatorDefinition] | None = None,
    spark_session: Any = None,
) -> dict[str, pa.Table]:
    """Per indicator id, the raw aggregate (columns `_AGGREGATE_COLUMNS`), before statistics."""
    definitions = load_catalogue() if catalogue is None else catalogue
    backend = _connect(engine, spark_session)
    release = _Release(manifest, backend, engine, spark_session)
    organisations = _organisations(hierarchy)
    result: dict[str, pa.Table] = {}
    try:
        for definition in definitions:
            expression = _aggregate(definition, release, organisations)
            table = _fetch(backend, engine, expression)
            result[definition.id] = table.select(list(_AGGREGATE_COLUMNS)).cast(AGGREGATE_SCHEMA)
            release.clear_scratch()
    finally:
        release.clear_scratch()
        release.release()
        if engine == "duckdb":
            backend.disconnect()
    return result


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
    per_indicator: dict[str, list[dict[str, Any]]] = {}
    for definition in ordered:
        records = sorted(raw[definition.id].to_pylist(), key=_sort_key)
        _statistics(definition, records, low_coverage)
        per_indicator[definition.id] = records
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
) -> None:
    """Fill value, intervals, suppression, target level and funnel signal, in place."""
    if not records:
        return
    numerator = np.array([r["numerator"] or 0 for r in records], dtype=np.float64)
    denominator = np.array([r["denominator"] for r in records], dtype=np.float64)
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
            record.update(
                numerator=None,
                value=None,
                target_level=None,
                **dict.fromkeys(("ci95_low", "ci95_high", "ci998_low", "ci998_high")),
            )
        elif definition.type not in ("proportion", "count", "coverage"):
            record["numerator"] = None
    if definition.type == "proportion":
        _funnel(records)


def _funnel(records: list[dict[str, Any]]) -> None:
    """Funnel signals of the caregiver provider results against the national value of the year."""
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
