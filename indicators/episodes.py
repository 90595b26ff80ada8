"""A release's tables as Ibis tables, and the episode tables every indicator reads, built once.

An episode is (provider_orgnr, episode_id). Its intake columns (home HF, age, sex, treatment
type) are those of its first basis row (intake_date, then record_id). The engine reads:
- `episodes`: one row per episode with its intake columns, taken from the first basis rows
  (`first_per_episode("basis", "intake_date")`), which are also the rows of the intake
  indicators (a re-sent intake under a new record_id is not a second episode);
- `first_per_episode(table, date)`: the episode's first row of a table (ties: record_id) with the
  intake columns (measurement: the first measurement point, also the follow-up's baseline);
- `enriched(table)`: every row of a table with its derived variables and the intake columns;
- `any`: every record of the four episode forms (patient-level indicators).

On DuckDB `episodes` and the first rows are temporary tables, materialised once per run: every
measurement, discharge, follow-up and `any` indicator joins them, and DuckDB does not share a
repeated subquery. Spark plans them into each job, as its optimiser prefers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal, cast

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from indicators.vocabulary import ANY_COLUMNS, EPISODE_COLUMNS, YEAR_DATES, Condition
from schemas.forms import Form, warehouse_schema
from schemas.manifest import ReleaseManifest

EngineName = Literal["duckdb", "spark"]

EPISODE_KEY: Final = ("provider_orgnr", "episode_id")

# The form columns each derived variable (vocabulary.DERIVED) is computed from.
DERIVED_FROM: Final[dict[str, tuple[str, ...]]] = {
    "waiting_days": ("intake_date", "referral_date"),
    "baseline_use_days_30": ("use_days_30",),
    "use_days_change": ("use_days_30",),
}

# The episode forms whose records make up the `any` table.
ANY_FORMS: Final = ("basis", "measurement", "discharge", "followup")

# Per-step timing at DEBUG level (bench/indicators.py --steps shows it).
log = logging.getLogger("indicators")


@contextmanager
def timed(step: str) -> Iterator[None]:
    """Log a step's wall time and the process's CPU time (all threads) at DEBUG level: on a
    shared machine the CPU time is the steadier figure."""
    started, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        wall, used = time.perf_counter() - started, time.process_time() - cpu
        log.debug("%-40s %6.1f s wall %6.1f s cpu", step, wall, used)


class Release:
    """The release's tables as Ibis tables, with the derived tables built once per run."""

    def __init__(
        self,
        manifest: ReleaseManifest,
        backend: Any,
        engine: EngineName,
        spark_session: Any,
        columns: dict[str, frozenset[str]] | None = None,
    ) -> None:
        """`columns`: per population table, the columns the run's definitions name (None: all);
        the materialised first rows keep only those (and the episode key, the unit, the date
        and what derived variables and the follow-up's baseline need)."""
        self.manifest = manifest
        self.columns = columns
        self.backend = backend
        self.engine = engine
        self.spark_session = spark_session
        self._tables: dict[str, ir.Table] = {}
        self._materialised: list[str] = []
        self._created = 0

    def materialise(self, table: ir.Table, step: str = "table") -> ir.Table:
        """A table several queries read, computed once (DuckDB: a temporary table; Spark plans
        it into each job). Dropped by `drop` (early, its memory wanted by later queries) or
        else by `release`."""
        if self.engine != "duckdb":
            return table
        name = f"kvarus_table_{self._created}"
        self._created += 1
        # Not overwrite=True: with sqlglot 30 ibis renders that DROP without the table name.
        with timed(f"materialise {step}"):
            self.backend.create_table(name, obj=table, temp=True)
        self._materialised.append(name)
        return cast(ir.Table, self.backend.table(name))

    def drop(self, table: ir.Table) -> None:
        """Drop a materialised table before `release`: its memory is for the next queries."""
        if self.engine != "duckdb":
            return
        name = table.get_name()
        self.backend.raw_sql(f"DROP TABLE IF EXISTS {name}")
        self._materialised.remove(name)

    def materialised(self) -> int:
        """The number of tables materialised so far (a mark for `release`)."""
        return len(self._materialised)

    def release(self, keep: int = 0) -> None:
        """Drop the materialised tables, all but the first `keep` (a mark from
        `materialised`: the tables a step materialised for itself alone)."""
        for name in self._materialised[keep:]:
            self.backend.raw_sql(f"DROP TABLE IF EXISTS {name}")
        del self._materialised[keep:]

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

    def episodes(self) -> ir.Table:
        """Per episode: the intake columns of its first basis row (of the materialised
        `first_per_episode("basis", "intake_date")`)."""
        key = "episodes"
        if key not in self._tables:
            # The first basis rows, ranked once: the intake indicators count them too.
            first = self.first_per_episode("basis", "intake_date")
            self._tables[key] = first.select(*EPISODE_KEY, *EPISODE_COLUMNS)
        return self._tables[key]

    def first_per_episode(self, name: str, date_column: str) -> ir.Table:
        """The episode's first row of a table by a date column (ties: record_id), enriched.
        Materialised.

        The first row is taken from the form's own rows and the episode's columns joined after:
        the join adds columns one to one, so this is the first row of the enriched table, at
        the cost of ranking the narrow table.
        """
        key = f"first:{name}:{date_column}"
        if key not in self._tables:
            if name == "basis":
                enriched = self.enriched(name)
                kept = None
                if self.columns is not None:
                    # The episode's intake columns (`episodes` is read from these rows).
                    wanted = {*EPISODE_KEY, *EPISODE_COLUMNS, "unit_code", date_column}
                    wanted |= self.columns.get(name, frozenset())
                    kept = [c for c in enriched.columns if c in wanted]
                table = _first(enriched, date_column, kept)
            elif name == "any":
                table = _first(self.enriched(name), date_column)
            else:
                raw = self.raw(name)
                kept = None
                if self.columns is not None:
                    # The follow-up's baseline reads the first measurement's use_days_30.
                    wanted = {*EPISODE_KEY, "unit_code", date_column, "use_days_30"}
                    for column in self.columns.get(name, frozenset()):
                        wanted |= {column, *DERIVED_FROM.get(column, ())}
                    kept = [c for c in raw.columns if c in wanted]
                table = self._enrich(name, _first(raw, date_column, kept))
            self._tables[key] = self.materialise(table, f"first {name}")
        return self._tables[key]

    def enriched(self, name: str) -> ir.Table:
        """A population table with its derived variables and the episode's intake columns."""
        key = f"enriched:{name}"
        if key not in self._tables:
            if name == "basis":
                basis = self.raw("basis")
                days = basis.intake_date.delta(basis.referral_date, unit="day")
                table = basis.mutate(waiting_days=days.cast("int64"))
            elif name == "any":
                parts = [self.records(form) for form in ANY_FORMS]
                table = self.with_episode(ibis.union(*parts, distinct=False))
            else:
                table = self._enrich(name, self.raw(name))
            self._tables[key] = table
        return self._tables[key]

    def records(self, form: str) -> ir.Table:
        """A form's rows as rows of the `any` table, without the episode's columns:
        ANY_COLUMNS (clinical_study_id null on forms without it) and record_date."""
        raw = self.raw(form)
        study = (
            raw.clinical_study_id
            if "clinical_study_id" in raw.columns
            else ibis.null().cast("string")
        )
        return raw.select(
            *[c for c in ANY_COLUMNS if c != "clinical_study_id"],
            clinical_study_id=study,
            record_date=raw[YEAR_DATES[form]],
        )

    def _enrich(self, name: str, rows: ir.Table) -> ir.Table:
        """Rows of a form with the episode's intake columns and the form's derived variables."""
        table = self.with_episode(rows)
        if name == "followup":
            first = self.first_per_episode("measurement", "measure_date")
            baseline = first.select(*EPISODE_KEY, baseline_use_days_30=first.use_days_30)
            table = table.left_join(baseline, list(EPISODE_KEY)).drop(
                *[f"{c}_right" for c in EPISODE_KEY]
            )
            table = table.mutate(
                use_days_change=(table.use_days_30 - table.baseline_use_days_30).cast("int64")
            )
        return table

    def with_episode(self, table: ir.Table) -> ir.Table:
        """Rows keyed by (provider_orgnr, episode_id) with the episode's intake columns (null
        where the episode has no basis row)."""
        joined = table.left_join(self.episodes(), list(EPISODE_KEY))
        return joined.drop(*[f"{c}_right" for c in EPISODE_KEY])


def _first(table: ir.Table, date_column: str, columns: list[str] | None = None) -> ir.Table:
    """The first row per episode by a date column, ties broken by record_id (the columns named,
    default all; projected before ranking).

    A window ranking, measured against a group-by taking the minimum of a (date, record_id, ...)
    struct (exact too: record_id is unique within a form, so (date, record_id) is unique within
    an episode): on the 10M-episode bench's 20M measurements the struct minimum took 24.9 s CPU
    (18.9 s with only the indicators' columns) and the ranking 17.6 s; at 2M the struct minimum
    was 25 % cheaper, but its per-group state of whole rows does not scale as well as the sort.
    Measured again in plain DuckDB SQL on the 20M measurements (wall time, 2 threads): this
    ranking 5.7 s; ranking only (episode key, date, record_id) and selecting the first rows by
    record_id 5.5 s; min(date || record_id) per episode, then the rows by record_id 5.4 s; the
    minimum date per episode semi-joined back, then the smallest record_id of those rows
    (exact on ties) 6.0 s, or ranked by record_id 7.6 s; arg_min of the row by a (date,
    record_id) struct 9.4 s; DISTINCT ON (episode key) ordered by date and record_id 40 s. The
    minimum date alone (3.4 s) is not exact when an episode has two rows on its first date. On
    the 10M basis rows (one per episode) the ranking took 3.1 s and finding the episodes of a
    single row alone, by a window count or a group-by and semi-join, 2.8 s and 3.0 s.
    """
    if columns is not None:
        table = table.select(*columns, *[c for c in (date_column, "record_id") if c not in columns])
    # episode_id before provider_orgnr: DuckDB sorts the window's rows by its partition columns,
    # comparing them in order, and the few providers tie on nearly every comparison. Measured in
    # plain DuckDB SQL on the 10M-episode bench (wall time, 2 threads, twice each): the 20M
    # measurements 4.6 s -> 3.7 s, the 10M basis rows 2.1 s -> 1.5 s. (Group-bys and joins on
    # the episode key hash it: no difference there.)
    window = ibis.window(
        group_by=[table[c] for c in ("episode_id", "provider_orgnr")],
        order_by=[table[date_column], table.record_id],
    )
    ranked = table.mutate(_rank=ibis.row_number().over(window))
    first = ranked.filter(ranked._rank == 0).drop("_rank")
    return first if columns is None else first.select(*columns)


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


def condition(table: ir.Table, rule: Condition) -> ir.BooleanValue:
    """A condition as a boolean expression that is false (never null) on missing values."""
    if rule.op == "any_of":
        assert rule.any_of is not None
        result = condition(table, rule.any_of[0])
        for inner in rule.any_of[1:]:
            result = result | condition(table, inner)
        return result
    assert rule.column is not None
    column = table[rule.column]
    value = rule.value
    expression: ir.BooleanValue
    match rule.op:
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
            raise ValueError(rule.op)
    return column.notnull() & expression.fill_null(False)


def all_of(table: ir.Table, conditions: list[Condition]) -> ir.BooleanValue | None:
    """All conditions (None when there are none)."""
    if not conditions:
        return None
    result = condition(table, conditions[0])
    for inner in conditions[1:]:
        result = result & condition(table, inner)
    return result
