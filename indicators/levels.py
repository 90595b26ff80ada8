"""From the finest cells to every reporting level: unit, provider, HF, RHF and nation.

The engine aggregates each indicator once at the finest cell (year, provider, unit, home HF)
and rolls the small result up here: counts and sums add up exactly, so the caregiver and resident
levels are sums over cells (medians from counts per value). Distinct patients do not add up (a
patient treated by two providers of one HF counts once there): the patients whose rows lie in one
cell are counted per cell and rolled up as sums, the other patients' levels are grouped in the
backend (`coded_patient_levels` on DuckDB, over integer cell codes; `patient_levels` on Spark,
splitting by the patient's number of rows in the year).

Levels (engine.py documents the rules): caregiver unit, provider, hf (providers that are HFs), rhf
(a private provider rolls up to its RHF), nation; resident: the episode's home HF, its RHF and the
nation, over the rows whose home HF is an HF of the hierarchy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from indicators.catalogue import IndicatorDefinition
from schemas.organisations import NATION_ORGNR, Hierarchy

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

# The finest cell every episode aggregate is grouped by.
CELL: Final = ("year", "provider_orgnr", "unit_code", "home_hf_orgnr")

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


def levels_of(definition: IndicatorDefinition) -> list[tuple[str, str]]:
    levels = [pair for pair in LEVELS if pair[0] in definition.contexts]
    if definition.type == "coverage":
        # NPR counts are per provider: no unit level.
        levels = [pair for pair in levels if pair[1] != "unit"]
    return levels


@dataclass(frozen=True)
class Organisations:
    """Look-ups: provider → (its HF or none, its RHF) and home HF → (the HF, its RHF)."""

    providers: dict[str, tuple[str | None, str | None]]
    homes: dict[str, tuple[str | None, str | None]]

    @classmethod
    def of(cls, hierarchy: Hierarchy) -> Organisations:
        providers: dict[str, tuple[str | None, str | None]] = {}
        homes: dict[str, tuple[str | None, str | None]] = {}
        for organisation in hierarchy.providers:
            rhf = hierarchy.rhf_of(organisation.orgnr)
            rhf_orgnr = rhf.orgnr if rhf.level == "rhf" else None
            hf_orgnr = organisation.orgnr if organisation.level == "hf" else None
            providers[organisation.orgnr] = (hf_orgnr, rhf_orgnr)
            if organisation.level == "hf":
                homes[organisation.orgnr] = (organisation.orgnr, rhf_orgnr)
        return cls(providers, homes)

    def tables(self) -> tuple[ir.Table, ir.Table]:
        """The look-ups as in-memory Ibis tables (provider_key, provider_hf, provider_rhf) and
        (home_key, home_hf, home_rhf)."""

        def table(rows: dict[str, tuple[str | None, str | None]], prefix: str) -> ir.Table:
            return ibis.memtable(
                pa.table(
                    {
                        f"{prefix}_key": pa.array(list(rows), pa.string()),
                        f"{prefix}_hf": pa.array([v[0] for v in rows.values()], pa.string()),
                        f"{prefix}_rhf": pa.array([v[1] for v in rows.values()], pa.string()),
                    }
                )
            )

        return table(self.providers, "provider"), table(self.homes, "home")

    def with_levels(self, cells: pa.Table) -> pa.Table:
        """Add provider_hf, provider_rhf (caregiver) and home_hf, home_rhf (resident)."""
        for prefix, column, rows in (
            ("provider", "provider_orgnr", self.providers),
            ("home", "home_hf_orgnr", self.homes),
        ):
            keys = pa.array(list(rows), pa.string())
            index = pc.index_in(cells[column], value_set=keys)
            for position, suffix in enumerate(("hf", "rhf")):
                values = pa.array([v[position] for v in rows.values()], pa.string())
                cells = cells.append_column(f"{prefix}_{suffix}", values.take(index))
        return cells


def _level_keys(cells: pa.Table, context: str, level: str) -> tuple[pa.Table, Any, Any]:
    """(the cells of a level, orgnr, unit_code) of a level: the key columns as arrays."""
    no_unit = pa.nulls(cells.num_rows, pa.string())
    nation = pa.array([NATION_ORGNR] * cells.num_rows, pa.string())

    def kept(column: str) -> pa.Table:
        return cells.filter(pc.is_valid(cells[column]))

    if context == "caregiver":
        if level == "unit":
            return cells, cells["provider_orgnr"], cells["unit_code"]
        if level == "provider":
            return cells, cells["provider_orgnr"], no_unit
        if level in ("hf", "rhf"):
            scoped = kept(f"provider_{level}")
            return scoped, scoped[f"provider_{level}"], no_unit[: scoped.num_rows]
        return cells, nation, no_unit
    scoped = kept(f"home_{level}" if level in ("hf", "rhf") else "home_hf")
    orgnr = scoped[f"home_{level}"] if level in ("hf", "rhf") else nation[: scoped.num_rows]
    return scoped, orgnr, no_unit[: scoped.num_rows]


def _labelled(grouped: pa.Table, context: str, level: str) -> pa.Table:
    n = grouped.num_rows
    return pa.table(
        {
            "year": grouped["year"],
            "context": pa.array([context] * n, pa.string()),
            "level": pa.array([level] * n, pa.string()),
            "orgnr": grouped["orgnr"],
            "unit_code": grouped["unit_code"],
            "numerator": grouped["numerator"],
            "denominator": grouped["denominator"],
            "measure": grouped["measure"],
        }
    ).cast(AGGREGATE_SCHEMA)


def _keyed(cells: pa.Table, context: str, level: str, columns: list[str]) -> pa.Table:
    scoped, orgnr, unit_code = _level_keys(cells, context, level)
    table = pa.table({"year": scoped["year"], "orgnr": orgnr, "unit_code": unit_code})
    for column in columns:
        table = table.append_column(column, scoped[column])
    return table


KEYS: Final = ["year", "orgnr", "unit_code"]


def roll_up_sums(
    cells: pa.Table, definition: IndicatorDefinition, organisations: Organisations
) -> pa.Table:
    """Episode proportions, counts and means: cells (CELL, n, num, total) summed per level.

    The mean is sum(total) / sum(n) over the level, as the backend's `sum(total) / sum(n)`."""
    cells = organisations.with_levels(cells.filter(pc.greater(cells["n"], 0)))
    parts = []
    for context, level in levels_of(definition):
        keyed = _keyed(cells, context, level, ["n", "num", "total"])
        grouped = keyed.group_by(KEYS, use_threads=False).aggregate(
            [("n", "sum"), ("num", "sum"), ("total", "sum")]
        )
        n = grouped["n_sum"]
        measure = (
            pc.divide(pc.cast(grouped["total_sum"], pa.float64()), pc.cast(n, pa.float64()))
            if definition.type == "mean"
            else pa.nulls(grouped.num_rows, pa.float64())
        )
        parts.append(
            _labelled(
                grouped.select(KEYS)
                .append_column("numerator", grouped["num_sum"])
                .append_column("denominator", n)
                .append_column("measure", measure),
                context,
                level,
            )
        )
    return _concat(parts)


def roll_up_medians(
    cells: pa.Table, definition: IndicatorDefinition, organisations: Organisations
) -> pa.Table:
    """Medians: cells (CELL, measure, n: rows with that value) to the exact median per level:
    the middle value, or the mean of the two middle values (1-based positions ⌊(N−1)/2⌋+1 and
    ⌊N/2⌋+1 of the N sorted values; the engine's cells hold no missing value: a row without
    one is no observation, `engine._population`)."""
    cells = organisations.with_levels(cells)
    parts = []
    for context, level in levels_of(definition):
        keyed = _keyed(cells, context, level, ["measure", "n"])
        values = keyed.group_by([*KEYS, "measure"], use_threads=False).aggregate([("n", "sum")])
        values = values.sort_by([(k, "ascending") for k in [*KEYS, "measure"]])
        parts.append(_labelled(_medians(values), context, level))
    return _concat(parts)


def _medians(values: pa.Table) -> pa.Table:
    """Per group of KEYS (rows sorted by KEYS, then measure with nulls last): the median."""
    count = len(values)
    n = values["n_sum"].to_numpy(zero_copy_only=False).astype(np.int64)
    if count == 0:
        starts = np.zeros(0, dtype=np.int64)
    else:
        new = np.zeros(count, dtype=bool)
        new[0] = True
        for key in KEYS:
            column = values[key].combine_chunks()
            codes = (
                column.dictionary_encode().indices.fill_null(-1)
                if pa.types.is_string(column.type)
                else column.fill_null(-1)
            )
            array = codes.to_numpy(zero_copy_only=False)
            new[1:] |= array[1:] != array[:-1]
        starts = np.flatnonzero(new)
    cumulative = np.cumsum(n)
    before = np.concatenate([[0], cumulative])[starts]
    ends = np.concatenate([starts[1:], [count]])
    total = cumulative[ends - 1] - before if count else np.zeros(0, dtype=np.int64)
    measure = values["measure"]

    def at(position: np.ndarray[Any, Any]) -> pa.Array:
        # The row whose cumulative count first reaches the position holds that value.
        index = np.searchsorted(cumulative, before + position, side="left")
        return pc.cast(measure.take(pa.array(index)), pa.float64())

    low = at((total - 1) // 2 + 1)
    high = at(total // 2 + 1)
    firsts = values.take(pa.array(starts)).select(KEYS)
    return (
        firsts.append_column("numerator", pa.nulls(len(starts), pa.int64()))
        .append_column("denominator", pa.array(total, pa.int64()))
        .append_column("measure", pc.divide(pc.add(low, high), 2.0))
    )


def roll_up_coverage(
    registered: pa.Table,
    npr: pa.Table,
    definition: IndicatorDefinition,
    organisations: Organisations,
) -> pa.Table:
    """Coverage: registered episodes (cells CELL, n) over NPR episodes (year, provider_orgnr,
    npr) per provider, and at the hf, rhf and nation levels summed over the providers that
    have an NPR count."""
    counted: dict[tuple[int, str], int] = {}
    for row in (
        registered.group_by(["year", "provider_orgnr"], use_threads=False)
        .aggregate([("n", "sum")])
        .to_pylist()
    ):
        counted[(row["year"], row["provider_orgnr"])] = row["n_sum"]
    reference = npr.to_pylist()
    cells = pa.table(
        {
            "year": pa.array([r["year"] for r in reference], pa.int32()),
            "provider_orgnr": pa.array([r["provider_orgnr"] for r in reference], pa.string()),
            "unit_code": pa.nulls(len(reference), pa.string()),
            "home_hf_orgnr": pa.nulls(len(reference), pa.string()),
            "n": pa.array(
                [counted.get((r["year"], r["provider_orgnr"]), 0) for r in reference], pa.int64()
            ),
            "npr": pa.array([r["npr"] for r in reference], pa.int64()),
        }
    )
    cells = organisations.with_levels(cells)
    parts = []
    for context, level in levels_of(definition):
        keyed = _keyed(cells, context, level, ["n", "npr"])
        grouped = keyed.group_by(KEYS, use_threads=False).aggregate([("n", "sum"), ("npr", "sum")])
        parts.append(
            _labelled(
                grouped.select(KEYS)
                .append_column("numerator", grouped["n_sum"])
                .append_column("denominator", grouped["npr_sum"])
                .append_column("measure", pa.nulls(grouped.num_rows, pa.float64())),
                context,
                level,
            )
        )
    return _concat(parts)


def patient_levels(
    rows: ir.Table,
    definition: IndicatorDefinition,
    organisations: Organisations,
    materialise: Any,
    drop: Any,
    fetch: Any,
) -> pa.Table:
    """Distinct patients per level (the Spark path; DuckDB takes `coded_patient_levels`): rows
    (CELL, the patient's columns, num), one or more per cell and patient (a patient's two
    episodes in one cell are two rows), split by the patient's rows in the year.

    Each row is first given its patient's number of rows in the year (`rows`) and largest `num`
    (`patient_num`), in the backend (a window), and the result materialised.

    A patient with a single row in a year counts once at each level above that row's cell, so
    those patients are counted per cell in the backend and rolled up in Arrow as sums (exact).
    The patients with several rows in a year (a second provider, unit, home HF or episode):
    - caregiver nation: the backend counts their rows per (year, rows, patient_num); in Arrow a
      year's patients are the sum of count / rows, its numerator that of the counts with
      patient_num above 0 (`_nation_of_several`);
    - caregiver hf: in Arrow, the caregiver provider rows of the providers that are themselves
      HFs (`_public_hfs`: an HF's caregiver patients are its own provider's);
    - every other level: joined to the organisations, materialised (the first materialised table
      dropped), then the distinct count per level grouped by level and patient in the backend.
    The two parts are disjoint sets of (year, patient): their counts are summed per (year,
    context, level, orgnr, unit_code) in Arrow."""
    patient = [c for c in rows.columns if c not in (*CELL, "num")]
    # Each row with its patient's number of rows in the year: a window count, measured against
    # grouping per (year, patient) and semi-joining the rows back (10.8 s CPU against 14.2 +
    # 5.8 s on the 10M-episode bench's 18.6M rows).
    in_year = ibis.window(group_by=[rows.year, *[rows[c] for c in patient]])
    rows = rows.mutate(
        rows=rows.count().over(in_year).cast("int32"), patient_num=rows.num.max().over(in_year)
    )
    # A patient is in the numerator of every level they are counted at if any of their records in
    # the year meets the condition, wherever it was recorded (DOMAIN.md: a patient-year).
    rows = materialise(rows.mutate(num=rows.patient_num), "patients")
    single = rows.filter(rows.rows == 1)
    single = single.group_by(*CELL).agg(
        n=single.count().cast("int64"), num=single.num.sum().cast("int64")
    )
    single_cells = fetch(single, "patient cells (single row)")
    single_cells = single_cells.append_column("total", pa.nulls(single_cells.num_rows, pa.int64()))
    counted = roll_up_sums(single_cells, definition, organisations)
    multi = rows.filter(rows.rows > 1)
    levels = levels_of(definition)
    parts = []
    if ("caregiver", "nation") in levels:
        # Every row of a several-row patient is here, so a patient-year is `rows` rows with the
        # same `rows` and `patient_num`: the nation's count is the sum of count / rows (exact in
        # integers), from counts per year, `rows` and `patient_num` instead of a distinct.
        counts = fetch(
            multi.group_by("year", "rows", "patient_num").agg(n=multi.count().cast("int64")),
            "patient nation (several rows)",
        )
        parts.append(_nation_of_several(counts))
    providers, homes = organisations.tables()
    joined = multi.left_join(providers, multi.provider_orgnr == providers.provider_key)
    joined = joined.left_join(homes, joined.home_hf_orgnr == homes.home_key)
    table: ir.Table = materialise(
        joined.drop("provider_key", "home_key", "rows", "patient_num"), "patients (several)"
    )
    drop(rows)  # its memory is the levels' (DuckDB keeps temporary tables within its limit)
    grouped_levels = []
    for context, level in levels:
        if context == "caregiver" and level in ("hf", "nation"):
            continue  # hf: the provider rows of public HFs (below); nation: above
        orgnr, unit_code, keep = _backend_keys(table, context, level)
        scoped = table if keep is None else table.filter(keep)
        orgnr, unit_code, _ = _backend_keys(scoped, context, level)
        scoped = scoped.mutate(_orgnr=orgnr, _unit=unit_code)
        keys = ["year", "_orgnr", "_unit"]
        distinct = scoped.group_by([*keys, *patient]).agg(num=scoped.num.max())
        grouped = distinct.group_by(keys).agg(
            numerator=distinct.num.sum().cast("int64"),
            denominator=distinct.count().cast("int64"),
        )
        grouped_levels.append(
            grouped.select(
                year=grouped.year.cast("int32"),
                context=ibis.literal(context),
                level=ibis.literal(level),
                orgnr=grouped._orgnr.cast("string"),
                unit_code=grouped._unit.cast("string"),
                numerator=grouped.numerator,
                denominator=grouped.denominator,
                measure=ibis.null().cast("float64"),
            )
        )
    if grouped_levels:
        union = ibis.union(*grouped_levels, distinct=False)
        parts.append(fetch(union, "patient levels (several rows)").cast(AGGREGATE_SCHEMA))
        if ("caregiver", "hf") in levels:
            parts.append(_public_hfs(parts[-1], organisations))
    return _summed(counted, _concat(parts))


def _summed(counted: pa.Table, several_levels: pa.Table) -> pa.Table:
    """The counts of one-cell (or one-row) patients and those of the others, summed per (year,
    context, level, orgnr, unit_code): disjoint sets of patients."""
    both = pa.concat_tables([counted, several_levels])
    keys = ["year", "context", "level", "orgnr", "unit_code"]
    summed = both.group_by(keys, use_threads=False).aggregate(
        [("numerator", "sum"), ("denominator", "sum")]
    )
    return pa.table(
        {
            **{k: summed[k] for k in keys},
            "numerator": summed["numerator_sum"],
            "denominator": summed["denominator_sum"],
            "measure": pa.nulls(summed.num_rows, pa.float64()),
        }
    ).cast(AGGREGATE_SCHEMA)


def _nation_of_several(counts: pa.Table) -> pa.Table:
    """The caregiver nation's distinct patients from counts (year, rows, patient_num, n) of
    several-row patients' rows: per year, sum(n / rows) patients, of them those with
    patient_num 1 in the numerator."""
    year = counts["year"].to_numpy(zero_copy_only=False)
    rows = counts["rows"].to_numpy(zero_copy_only=False).astype(np.int64)
    n = counts["n"].to_numpy(zero_copy_only=False).astype(np.int64)
    num = counts["patient_num"].to_numpy(zero_copy_only=False).astype(np.int64)
    patients = n // rows  # n is a multiple of rows: each patient-year brings `rows` rows
    years = np.unique(year)
    count = len(years)
    return pa.table(
        {
            "year": pa.array(years, pa.int32()),
            "context": pa.array(["caregiver"] * count, pa.string()),
            "level": pa.array(["nation"] * count, pa.string()),
            "orgnr": pa.array([NATION_ORGNR] * count, pa.string()),
            "unit_code": pa.nulls(count, pa.string()),
            "numerator": pa.array(
                [int(patients[(year == y) & (num > 0)].sum()) for y in years], pa.int64()
            ),
            "denominator": pa.array([int(patients[year == y].sum()) for y in years], pa.int64()),
            "measure": pa.nulls(count, pa.float64()),
        }
    ).cast(AGGREGATE_SCHEMA)


def _public_hfs(grouped: pa.Table, organisations: Organisations) -> pa.Table:
    """The caregiver hf rows: the provider rows of providers that are HFs (the same patients)."""
    hfs = pa.array([p for p, (hf, _) in organisations.providers.items() if hf == p], pa.string())
    keep = pc.and_(
        pc.and_(pc.equal(grouped["context"], "caregiver"), pc.equal(grouped["level"], "provider")),
        pc.is_in(grouped["orgnr"], value_set=hfs),
    )
    rows = grouped.filter(keep)
    return rows.set_column(
        rows.schema.get_field_index("level"), "level", pa.array(["hf"] * rows.num_rows, pa.string())
    )


def _backend_keys(table: ir.Table, context: str, level: str) -> tuple[ir.Value, ir.Value, Any]:
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


def _concat(parts: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(parts) if parts else AGGREGATE_SCHEMA.empty_table()


@dataclass(frozen=True)
class CellCodes:
    """Integer codes of the finest cells of distinct-patient rows: cell = pair × (H + 1) +
    home + 1, where pair is the index of (provider_orgnr, unit_code) in `pairs` and home the
    index of the home HF among the hierarchy's HFs (H of them), or -1 for a missing home HF or
    one that is not an HF of the hierarchy (such rows are in no resident level, so one code for
    all of them counts exactly). `orgnrs` are the organisations the level keys index."""

    pairs: pa.Table
    homes: list[str]
    orgnrs: list[str]

    @classmethod
    def of(cls, pairs: pa.Table, organisations: Organisations) -> CellCodes:
        homes = list(organisations.homes)
        orgnrs: set[str] = {NATION_ORGNR, *homes}
        for provider in pairs["provider_orgnr"].to_pylist():
            if provider is not None:
                orgnrs.add(provider)
                orgnrs.update(o for o in organisations.providers.get(provider, ()) if o)
        for hf, rhf in organisations.homes.values():
            orgnrs.update(o for o in (hf, rhf) if o)
        return cls(pairs, homes, sorted(orgnrs))

    @property
    def width(self) -> int:
        return len(self.homes) + 1

    def _home_table(self) -> ir.Table:
        return ibis.memtable(
            pa.table(
                {
                    "home_key": pa.array(self.homes, pa.string()),
                    "home": pa.array(range(len(self.homes)), pa.int64()),
                }
            )
        )

    def _paired(self, rows: ir.Table) -> ir.Table:
        """Rows with their pair index (every pair of the rows is in `pairs`)."""
        pairs = ibis.memtable(
            pa.table(
                {
                    "pair_provider": self.pairs["provider_orgnr"],
                    "pair_unit": self.pairs["unit_code"],
                    "pair": pa.array(range(self.pairs.num_rows), pa.int64()),
                }
            )
        )
        return rows.inner_join(
            pairs,
            [
                rows.provider_orgnr.identical_to(pairs.pair_provider),
                rows.unit_code.identical_to(pairs.pair_unit),
            ],
        )

    def coded(self, rows: ir.Table, patient: list[str]) -> ir.Table:
        """Rows (CELL, patient, num) as (year, patient, cell, num): joined to two small look-ups
        (every pair of the rows is in `pairs`)."""
        joined = self._paired(rows)
        homes = self._home_table()
        joined = joined.left_join(homes, joined.home_hf_orgnr == homes.home_key)
        cell = joined.pair * self.width + joined.home.fill_null(-1) + 1
        return joined.select("year", *patient, cell=cell, num=joined.num)

    def episode_homes(self, episodes: ir.Table, key: dict[str, ir.Value]) -> ir.Table:
        """Per episode whose home HF is one of `homes`: its key (`key`, columns over
        `episodes`' own) and the home's index (`home`)."""
        table = episodes.select(**key, home_hf_orgnr=episodes.home_hf_orgnr)
        homes = self._home_table()
        joined = table.inner_join(homes, table.home_hf_orgnr == homes.home_key)
        return joined.select(*key, home=joined.home)

    def coded_records(
        self, records: ir.Table, patient: list[str], key: list[str], episodes: ir.Table
    ) -> ir.Table:
        """Records (year, provider_orgnr, unit_code, the episode's `key` columns, patient, num)
        as (year, patient, cell, num): reduced to one row per (year, pair, episode, patient)
        and given the episode's home from `episodes` (`episode_homes`; an episode not there
        has none). Every column the reduction and the join read is an integer."""
        paired = self._paired(records)
        reduced = paired.group_by("year", "pair", *key, *patient).agg(num=paired.num.max())
        joined = reduced.left_join(episodes, [reduced[name] == episodes[name] for name in key])
        cell = joined.pair * self.width + joined.home.fill_null(-1) + 1
        return joined.select("year", *patient, cell=cell, num=joined.num)

    def decoded(self, cells: pa.Table) -> pa.Table:
        """Cells (year, cell, n, num) as (CELL, n, num, total)."""
        cell = cells["cell"].to_numpy(zero_copy_only=False).astype(np.int64)
        pair = pa.array(cell // self.width)
        home = cell % self.width - 1
        # A missing home (-1) takes the null after the homes (also when there are none).
        homes = pa.array([*self.homes, None], pa.string()).take(
            pa.array(np.where(home >= 0, home, len(self.homes)))
        )
        return pa.table(
            {
                "year": cells["year"],
                "provider_orgnr": self.pairs["provider_orgnr"].take(pair),
                "unit_code": self.pairs["unit_code"].take(pair),
                "home_hf_orgnr": homes,
                "n": cells["n"],
                "num": cells["num"],
                "total": pa.nulls(cells.num_rows, pa.int64()),
            }
        )

    def level_keys(self, levels: list[tuple[str, str]], organisations: Organisations) -> pa.Table:
        """Per cell code, its key at each level (`_LEVEL_KEY`; null where the cell is not in the
        level): the pair index at the caregiver unit level, else the index in `orgnrs`."""
        index = {orgnr: position for position, orgnr in enumerate(self.orgnrs)}
        providers = self.pairs["provider_orgnr"].to_pylist()
        cells = np.arange(self.pairs.num_rows * self.width, dtype=np.int64)
        pair = cells // self.width
        home = cells % self.width - 1
        caregiver = [
            organisations.providers.get(p, (None, None)) if p else (None, None) for p in providers
        ]
        resident = [organisations.homes[h] for h in self.homes]

        def keys(context: str, level: str) -> list[int | None]:
            if context == "caregiver":
                if level == "unit":
                    return [int(p) for p in pair]
                if level == "provider":
                    return [index.get(providers[p]) if providers[p] else None for p in pair]
                if level == "rhf":
                    return [index.get(caregiver[p][1] or "") for p in pair]
                raise ValueError(level)
            if level == "hf":
                return [index[resident[h][0] or ""] if h >= 0 else None for h in home]
            if level == "rhf":
                return [index.get(resident[h][1] or "") if h >= 0 else None for h in home]
            return [index[NATION_ORGNR] if h >= 0 else None for h in home]

        columns = {"key_cell": pa.array(cells)}
        for context, level in levels:
            columns[_LEVEL_KEY[(context, level)]] = pa.array(keys(context, level), pa.int64())
        return pa.table(columns)

    def level_rows(self, grouped: pa.Table, levels: list[tuple[str, str]]) -> pa.Table:
        """Grouped level keys (level, year, key, numerator, denominator) as aggregate rows."""
        parts = []
        orgnrs = pa.array(self.orgnrs, pa.string())
        for position, (context, level) in enumerate(levels):
            rows = grouped.filter(pc.equal(grouped["level"], position))
            key = rows["key"]
            if (context, level) == ("caregiver", "unit"):
                orgnr = self.pairs["provider_orgnr"].take(key)
                unit_code = self.pairs["unit_code"].take(key)
            else:
                orgnr = orgnrs.take(key)
                unit_code = pa.nulls(rows.num_rows, pa.string())
            counts = _counts(rows["year"], orgnr, unit_code, rows["numerator"], rows["denominator"])
            parts.append(_labelled(counts, context, level))
        return _concat(parts)


def _counts(
    year: pa.ChunkedArray,
    orgnr: pa.Array | pa.ChunkedArray,
    unit_code: pa.Array | pa.ChunkedArray,
    numerator: pa.ChunkedArray,
    denominator: pa.ChunkedArray,
) -> pa.Table:
    """Distinct-patient counts as the columns `_labelled` takes (no measure)."""
    return pa.table(
        {
            "year": year,
            "orgnr": orgnr,
            "unit_code": unit_code,
            "numerator": numerator,
            "denominator": denominator,
            "measure": pa.nulls(len(year), pa.float64()),
        }
    )


def _two_cells(two: ir.Table, keys: ir.Table, levels: list[tuple[str, str]]) -> list[ir.Table]:
    """The level counts (year, key, numerator, denominator, level) of the patients with two
    rows in two cells, from their per-patient row alone: the first cell's key counts them, and
    the last cell's key when it is another, each with the patient-year's num; no group-by per
    patient and key."""
    first = keys.select(
        key_first=keys.key_cell, **{f"first_{column}": keys[column] for column in keys.columns}
    )
    last = keys.select(
        key_last=keys.key_cell, **{f"last_{column}": keys[column] for column in keys.columns}
    )
    table = two.inner_join(first, two.first == first.key_first)
    table = table.inner_join(last, table["last"] == last.key_last)
    union = []
    for position, pair in enumerate(levels):
        column = _LEVEL_KEY[pair]
        one, other = table[f"first_{column}"], table[f"last_{column}"]
        counted = [
            table.filter(one.notnull()).select("year", key=one, num=table.patient_num),
            table.filter(other.notnull() & (one.isnull() | (one != other))).select(
                "year", key=other, num=table.patient_num
            ),
        ]
        union.append(_level_counts(ibis.union(*counted, distinct=False), position))
    return union


def _level_counts(rows: ir.Table, position: int) -> ir.Table:
    """Rows (year, key, num), one per patient at a level's key: per (year, key) the patients
    with num 1 and all patients, marked with the level's position."""
    return (
        rows.group_by("year", "key")
        .agg(numerator=rows.num.cast("int64").sum(), denominator=rows.count().cast("int64"))
        .mutate(level=ibis.literal(position, "int8"))
    )


# The level key columns of `CellCodes.level_keys`, per level the backend groups.
_LEVEL_KEY: Final = {
    ("caregiver", "unit"): "key_unit",
    ("caregiver", "provider"): "key_provider",
    ("caregiver", "rhf"): "key_caregiver_rhf",
    ("resident", "hf"): "key_resident_hf",
    ("resident", "rhf"): "key_resident_rhf",
    ("resident", "nation"): "key_resident_nation",
}


def coded_patient_levels(
    coded: ir.Table,
    cells: CellCodes,
    definition: IndicatorDefinition,
    organisations: Organisations,
    materialise: Any,
    drop: Any,
    fetch: Any,
) -> pa.Table:
    """`patient_levels` on integer cell codes (DuckDB), the same counts: `coded` rows (year, the
    patient's columns, cell, num) of `cells` (`CellCodes.coded` or `CellCodes.coded_records`).

    The narrow coded rows are materialised; then
    per (year, patient) its rows, largest num (the patient-year's: a patient is in the
    numerator of every result they count in if any of their rows in the year is, DOMAIN.md),
    and smallest and largest cell. A patient whose rows all lie in one cell counts once at each
    level above that cell: those are counted per cell and rolled up in Arrow as sums. A patient
    with two rows in two cells is counted per level from those two cells alone (`_two_cells`).
    The others (three rows or more, several cells): one row per (year, patient, cell) is
    materialised and grouped per level key and patient. The caregiver nation counts
    every several-cell patient once, the caregiver hf level repeats the provider rows of public
    HFs. The parts are disjoint sets of (year, patient), summed per (year, context, level,
    orgnr, unit_code).

    On the 10M-episode bench, one year at a time, the study indicator's steps took 18 s instead
    of 21.6 s with `patient_levels` (run 38.8 s -> 34.3 s): the reduced rows are 27 bytes wide
    instead of three strings, a group-by replaces the window over (year, patient) and the
    several-cell patients' rows are narrow. Counting the two-row patients without their rows
    took the steps after the coded rows from 12.1 s CPU to 8.1 s (per-level group-bys 7.3 ->
    3.6 s)."""
    patient = [c for c in coded.columns if c not in ("year", "cell", "num")]
    coded = materialise(coded, "patients (coded)")
    per_patient = materialise(
        coded.group_by("year", *patient).agg(
            patient_num=coded.num.max(),
            first=coded.cell.min(),
            last=coded.cell.max(),
            rows=coded.count().cast("int32"),
        ),
        "patients (per patient)",
    )
    single = per_patient.filter(per_patient.first == per_patient.last)
    single = single.group_by("year", cell=single.first).agg(
        n=single.count().cast("int64"), num=single.patient_num.cast("int64").sum()
    )
    single_cells = cells.decoded(fetch(single, "patient cells (one cell)"))
    counted = roll_up_sums(single_cells, definition, organisations)
    several = per_patient.filter(per_patient.first != per_patient.last)
    levels = levels_of(definition)
    parts = []
    if ("caregiver", "nation") in levels:
        nation = several.group_by("year").agg(
            n=several.count().cast("int64"), num=several.patient_num.cast("int64").sum()
        )
        nation = fetch(nation, "patient nation (several cells)")
        count = nation.num_rows
        orgnr, no_unit = pa.array([NATION_ORGNR] * count, pa.string()), pa.nulls(count, pa.string())
        counts = _counts(nation["year"], orgnr, no_unit, nation["num"], nation["n"])
        parts.append(_labelled(counts, "caregiver", "nation"))
    two = several.filter(several.rows == 2)
    three = several.filter(several.rows > 2).select("year", *patient, "patient_num")
    multi = coded.inner_join(three, ["year", *patient])
    multi = materialise(
        multi.group_by("year", *patient, "cell").agg(num=multi.patient_num.max()),
        "patients (several cells)",
    )
    drop(coded)
    grouped_levels = [pair for pair in levels if pair in _LEVEL_KEY]
    if grouped_levels:
        keys = ibis.memtable(cells.level_keys(grouped_levels, organisations))
        union = _two_cells(two, keys, grouped_levels)
        table = multi.inner_join(keys, multi.cell == keys.key_cell)
        for position, pair in enumerate(grouped_levels):
            key = table[_LEVEL_KEY[pair]]
            scoped = table.filter(key.notnull()).mutate(key=key)
            distinct = scoped.group_by("year", "key", *patient).agg(num=scoped.num.max())
            union.append(_level_counts(distinct, position))
        grouped = fetch(ibis.union(*union, distinct=False), "patient levels (several cells)")
        parts.append(cells.level_rows(grouped, grouped_levels))
        if ("caregiver", "hf") in levels:
            parts.append(_public_hfs(parts[-1], organisations))
    drop(per_patient)
    return _summed(counted, _concat(parts))
