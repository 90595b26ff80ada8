"""Researcher aggregates over a release, with disclosure control.

A query names measures (counts of episodes, patients, ...), up to three dimensions and optional
filters. The answer is the full table with all margins, computed with DuckDB over the release's
Parquet files (basis, joined to discharge). An episode is (provider_orgnr, episode_id), as in the
indicators (`indicators.episodes`): it is counted once, with the columns (and year) of its first
basis row by (intake_date, record_id), however many basis rows it has (a re-sent intake under a
new record_id is not a second episode), and its discharge is the one with the same provider and
episode id (episode ids are each provider's own).

Disclosure control, in two layers:

1. Cell-key perturbation (ABS TableBuilder, Statistics Sweden; `indicators.disclosure`). Every
   patient has a fixed record key: the first 4 bytes of sha256(salt ‖ patient_key) as an integer
   in [0, 2^32). The salt is derived from the register's secret pseudonym key (HMAC), so nobody
   outside can compute the keys. A cell's key is the sum of its records' keys mod 2^32 (episode
   measures add the patient's key once per episode, patient measures once per distinct patient).
   The published count is count + noise, the noise looked up in a fixed table by (count, cell
   key): zero mean, at most ±2, and never a published value in 1..4 (counts 5 get no noise,
   6 at most ±1). Every margin is a cell of its own (its own records, its own key, its own noise),
   not a sum of perturbed cells. The salt is the same for every release (not per release), so
   the same set of records gets the same noise in every query of every release: repeating a
   query, or asking "all providers" and "all providers but one", cannot average the noise away,
   and the difference of two published cells is the small cell plus the difference of two
   independent noises (exact only by chance, and the attacker cannot tell when).
2. Suppression on the true table (`indicators.disclosure.suppress_table`): primary suppression of
   counts 1..4, secondary suppression until an LP audit shows that every
   primary cell's feasible range, given every published cell *exactly* and all margin equations,
   is at least 5 wide and no secondary cell is exactly recoverable. The audit assumes an attacker
   who knows the unperturbed published values, so it holds a fortiori for the perturbed ones.
   Suppressed cells are published as null with `suppressed: true`, never as zero. Zeros are shown,
   except in the breakdown of a group under the threshold (`zeros_beside`): there a shown 0 would
   tell which hidden cell holds the group, and so its members' category.

Filters select cells, never records. A filter may name only a requested dimension (else 422),
and the table, every cell and every margin, is computed and protected over the release's full
population; a filter then only leaves out the cells of the other categories, and the margins
stay the full-population margins (not sums of the cells shown). So every answer is a part of one
fixed table per (release, set of dimensions), computed in a canonical dimension order whatever
order the query names them in: the same cell always has the same value and the same
suppression, and "all providers but X" minus "all providers but X and the target" is not a
question anyone can ask. (Before, a filter changed which records a cell counted, so each
filtered population got its own noise: averaging the differences over many X cancelled it.)

Linked measures and tables (what the LP audit does and does not see). mutual_end asked by
dimensions that include end_reason is the end-reason-1 slice of the episodes table over the same
dimensions (`_mutual_end_slice`), so one answer never shows the same records under two
suppressions. Beyond that, each (measure, set of dimensions) table is protected on its own, and
the cells two tables share are protected only by the perturbation layer, not by the audit:
mutual_end by D against episodes by D and end_reason; [provider] against [rhf] (an RHF's total
minus its published providers); a provider's total in [provider] and in [provider, age_group];
a followup_arranged cell equal to the episodes cell when every episode in it had follow-up
arranged. Each such difference carries the noise of every cell in it (exact only by chance,
and the attacker cannot tell when). Protecting all of them by the audit means protecting the
linked tables together; tried (every provider table as [rhf, provider, ...], audited whole), a
two-dimension answer took over two minutes, so it was not kept. Comparing two releases shows
which cells new records fell into (the salt is the same for every release, by design, and a
cell going from 0 to suppressed shows that a record arrived): releases should add many records
at a time.

Categories of a dimension are fixed by the code lists and the organisation hierarchy (and the
release's years), not by the data, so the shape of an answer does not reveal that a rare
category exists.

Computation (not semantics): a release's episodes, with each patient's record key computed once,
are kept in memory as an `EpisodeView` while the release's files stand (never on disk), and
episode measures are summed per combination of the columns a query reads before the CUBE. The
counts and key sums are the same as over the rows one by one.

Cost limits (`_protected_tables`): protected tables are cached with the episode view, per
(canonical dimensions, measure), so a repeated request is answered from memory and the cache goes
with the view (files changed or deleted: an erasure); one aggregate is computed at a time per
process (a request that cannot start within COMPUTE_WAIT_SECONDS is answered 503); the audit of
one request has a wall-clock budget, AUDIT_BUDGET_SECONDS (over it: 422, ask for fewer
dimensions or categories), beside the cap of MAX_CELLS inner cells.
"""

import hashlib
import hmac
import itertools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Final, Literal, get_args, overload

import duckdb
import numpy as np
import numpy.typing as npt

from indicators.disclosure import (
    CELL_KEY_MODULUS,
    DEFAULT_PTABLE,
    DEFAULT_THRESHOLD,
    PerturbationTable,
    perturb,
    suppress_table,
)
from indicators.statistics import AGE_BANDS, AGE_GROUP_LABELS
from schemas.api import AggregateCell, AggregateCreate, AggregatePublic, Dimension
from schemas.codes import END_REASON, PRIMARY_SUBSTANCE, SEX, TREATMENT_TYPE
from schemas.errors import RejectedInput
from schemas.manifest import ReleaseManifest
from schemas.organisations import Hierarchy
from service.errors import ServiceUnavailable

THRESHOLD: Final = DEFAULT_THRESHOLD
# Beyond this many inner cells the LP audit of secondary suppression gets slow and the table is
# mostly small cells anyway: the researcher is asked to filter or drop a dimension.
MAX_CELLS: Final = 2000
NO_DISCHARGE: Final = "none"
# The canonical order of dimensions in a computed table (the order of the API's list).
DIMENSION_ORDER: Final[tuple[str, ...]] = get_args(Dimension)

# No published value may fall in 1..threshold−1: counts below 5 are suppressed anyway (no noise
# needed), 5 is published as is and 6 moves by at most 1; larger counts use the module's default
# zero-mean ±2 row. Every row has mean 0, so totals stay unbiased on average.
PTABLE: Final = PerturbationTable(
    rows={
        **dict.fromkeys(range(1, THRESHOLD + 1), ((0, 1.0),)),
        THRESHOLD + 1: ((-1, 0.25), (0, 0.5), (1, 0.25)),
    },
    default=DEFAULT_PTABLE.default,
)


MUTUAL_END: Final = 1  # the end_reason of mutual_end (schemas.codes.END_REASON)


@dataclass(frozen=True)
class MeasureSpec:
    unit: str  # episode | patient
    condition: str  # SQL over the episode view
    needs_discharge: bool = False


MEASURES: Final[dict[str, MeasureSpec]] = {
    "episodes": MeasureSpec("episode", "TRUE"),
    "patients": MeasureSpec("patient", "TRUE"),
    # End reason 1 = mutual agreement (schemas.codes.END_REASON).
    "mutual_end": MeasureSpec("episode", f"d_end_reason = {MUTUAL_END}", needs_discharge=True),
    "followup_arranged": MeasureSpec("episode", "d_followup_arranged = 1", needs_discharge=True),
    "study": MeasureSpec("patient", "in_study"),
}

_AGE_CASE: Final = (
    "CASE "
    + " ".join(
        f"WHEN age BETWEEN {lo} AND {hi} THEN '{label}'"
        if hi is not None
        else f"WHEN age >= {lo} THEN '{label}'"
        for label, lo, hi in AGE_BANDS
    )
    + " ELSE 'unknown' END"
)

DIMENSION_SQL: Final[dict[str, str]] = {
    "year": "CAST(year AS VARCHAR)",
    "rhf": "COALESCE(rhf_orgnr, 'unknown')",
    "provider": "provider_orgnr",
    "sex": "CAST(sex AS VARCHAR)",
    "age_group": _AGE_CASE,
    "treatment_type": "CAST(treatment_type AS VARCHAR)",
    "primary_substance": "CAST(primary_substance AS VARCHAR)",
    "end_reason": f"COALESCE(CAST(d_end_reason AS VARCHAR), '{NO_DISCHARGE}')",
}


def cell_key_salt(pseudonym_key: bytes) -> str:
    """The record-key salt: secret (keyed by the register's key) and the same for every release."""
    return hmac.new(pseudonym_key, b"kvarus-aggregate-cell-key-v1", hashlib.sha256).hexdigest()


def record_key(salt: str, patient_key: str) -> int:
    """A patient's record key in [0, 2^32): the Python twin of the SQL in `_fill_episode_view`."""
    return int(hashlib.sha256((salt + patient_key).encode()).hexdigest()[:8], 16)


def _files(manifest: ReleaseManifest, table: str) -> list[str]:
    if table not in manifest.tables:
        raise RejectedInput(f"release {manifest.release} has no {table} table")
    return [f.removeprefix("file://") for f in manifest.files(table)]


def categories(dimension: str, *, hierarchy: Hierarchy, years: list[str]) -> list[str]:
    """The fixed categories of a dimension (not taken from the data)."""
    if dimension == "year":
        return years
    if dimension == "rhf":
        return sorted(o.orgnr for o in hierarchy.rhfs)
    if dimension == "provider":
        return sorted(o.orgnr for o in hierarchy.providers)
    if dimension == "age_group":
        return list(AGE_GROUP_LABELS)
    code_lists = {
        "sex": SEX,
        "treatment_type": TREATMENT_TYPE,
        "primary_substance": PRIMARY_SUBSTANCE,
    }
    if dimension in code_lists:
        return [str(v) for v in sorted(code_lists[dimension].values)]
    if dimension == "end_reason":
        return [*(str(v) for v in sorted(END_REASON.values)), NO_DISCHARGE]
    raise RejectedInput(f"unknown dimension {dimension}")


@dataclass
class EpisodeView:
    """A release's episode rows with their record keys, in an in-memory DuckDB database.

    Built once per release (and salt and hierarchy) and queried by every aggregate over it:
    the SHA-256 of every patient is the cost of an aggregate (10 million episodes: ~10 s as a
    hash per row), the CUBE over integer columns in memory a fraction of a second. Reducing the
    basis rows to one per episode (a window ranking) roughly doubles the build: 10 million basis
    rows took 7 s without it and 16-18 s with it (2 threads, a shared machine). Each patient
    is hashed once (not once per episode) and numbered: `patient` is a dense integer standing
    for `patient_key`, so the view holds no pseudonym. The view is kept only in memory, never
    written beside the release: an erasure retires a release and deletes its files, and a copy
    on disk would outlive both.
    """

    connection: duckdb.DuckDBPyConnection
    signature: tuple[tuple[str, int, int], ...]
    # Protected tables of this view (`aggregate`), by (canonical dimensions, measure): they live
    # and die with the view, so a release whose files change or go (an erasure) takes them along.
    results: "OrderedDict[tuple[tuple[str, ...], str], ProtectedTable]" = field(
        default_factory=OrderedDict
    )


# Releases whose views are kept (the latest and the one before, typically): about 35 bytes per
# episode in DuckDB's memory (10 million episodes: ~330 MiB).
MAX_VIEWS: Final = 2
_views: OrderedDict[tuple[object, ...], EpisodeView] = OrderedDict()
_views_lock = threading.Lock()  # one build at a time: concurrent first queries share it
# The connections of views being built, for `interrupt_builds`.
_building: set[duckdb.DuckDBPyConnection] = set()
_building_lock = threading.Lock()


@contextmanager
def _interruptible(connection: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """While the block runs, `interrupt_builds` interrupts the connection's query."""
    with _building_lock:
        _building.add(connection)
    try:
        yield
    finally:
        with _building_lock:
            _building.discard(connection)


def interrupt_builds() -> None:
    """Interrupt every episode view being built (a service shutting down): its query raises
    `duckdb.InterruptException`. A thread left inside a DuckDB query at interpreter exit can
    abort the process ("FATAL: exception not rethrown")."""
    with _building_lock:
        for connection in _building:
            connection.interrupt()


def _signature(files: list[str]) -> tuple[tuple[str, int, int], ...] | None:
    """Path, size and mtime of every file; None when one is gone (an erasure deleted it)."""
    result: list[tuple[str, int, int]] = []
    for file in files:
        try:
            stat = os.stat(file)
        except FileNotFoundError:
            return None
        result.append((file, stat.st_size, stat.st_mtime_ns))
    return tuple(result)


@overload
def episode_view(
    manifest: ReleaseManifest, *, salt: str, hierarchy: Hierarchy, build: Literal[True] = True
) -> EpisodeView: ...
@overload
def episode_view(
    manifest: ReleaseManifest, *, salt: str, hierarchy: Hierarchy, build: bool
) -> EpisodeView | None: ...
def episode_view(
    manifest: ReleaseManifest, *, salt: str, hierarchy: Hierarchy, build: bool = True
) -> EpisodeView | None:
    """The release's episode view: cached in memory while its files are unchanged.

    build=False: only a cached, current view (None when there is none to reuse).
    """
    basis = _files(manifest, "basis")
    if not basis:
        raise RejectedInput(f"release {manifest.release} has no episodes")
    discharge = _files(manifest, "discharge") if "discharge" in manifest.tables else []
    measurement = _files(manifest, "measurement") if "measurement" in manifest.tables else []
    providers = sorted(o.orgnr for o in hierarchy.providers)
    rhfs = [hierarchy.rhf_of(p).orgnr for p in providers]
    key = (
        manifest.release, tuple(basis), tuple(discharge), tuple(measurement), salt,
        tuple(providers), tuple(rhfs),
    )  # fmt: skip
    with _views_lock:
        # Drop every view whose files changed or are gone, not just this release's: the data
        # of an erased patient must not stay in memory until someone asks for that release.
        for other, view in list(_views.items()):
            if _signature([f for f, _, _ in view.signature]) != view.signature:
                del _views[other]
                view.connection.close()
        cached = _views.get(key)
        if cached is not None:
            _views.move_to_end(key)
            return cached
        if not build:
            return None
        signature = _signature(basis + discharge + measurement)
        fill = partial(
            _fill_episode_view, basis=basis, discharge=discharge, measurement=measurement,
            salt=salt, providers=providers, rhfs=rhfs,
        )  # fmt: skip
        view = EpisodeView(_build_episode_view(fill), signature or ())
        if signature is not None:  # files gone: DuckDB has raised above; kept out regardless
            _views[key] = view
            while len(_views) > MAX_VIEWS:
                _, evicted = _views.popitem(last=False)
                evicted.connection.close()
        return view


def _build_episode_view(
    fill: Callable[[duckdb.DuckDBPyConnection], None],
) -> duckdb.DuckDBPyConnection:
    """A connection of its own holding the `episode` table that `fill` creates in it
    (`_fill_episode_view`), interruptibly; closed if that fails."""
    # Row order is irrelevant to a CUBE: letting DuckDB insert in parallel, unordered, is faster
    # and needs less memory. No spilling (`temp_directory` empty): the view lives in memory for as
    # long as it is cached, and DuckDB's default `.tmp` in the working directory would put patient
    # keys on disk where no erasure looks.
    connection = duckdb.connect(config={"preserve_insertion_order": False, "temp_directory": ""})
    try:
        with _interruptible(connection):
            fill(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def _fill_episode_view(
    connection: duckdb.DuckDBPyConnection,
    basis: list[str],
    discharge: list[str],
    measurement: list[str],
    *,
    salt: str,
    providers: list[str],
    rhfs: list[str],
) -> None:
    """Create the `episode` table in `connection`: one row per episode (its first basis row),
    RHF, discharge columns, whether it is in a study and the record key `rkey`."""
    # The record key: first 4 bytes of sha256(salt || patient_key), see `record_key`;
    # computed once per distinct patient, whose row number then stands for the key.
    connection.execute(
        "CREATE TEMP TABLE patient AS SELECT patient_key, "
        "CAST(('0x' || substr(sha256($salt || patient_key), 1, 8)) AS UBIGINT) AS rkey "
        "FROM (SELECT DISTINCT patient_key FROM read_parquet($basis, hive_partitioning = true) "
        "WHERE patient_key IS NOT NULL)",
        {"salt": salt, "basis": basis},
    )
    parameters: dict[str, object] = {"basis": basis, "map_orgnr": providers, "map_rhf": rhfs}
    ctes = [
        "rhf_map AS (SELECT unnest($map_orgnr) AS map_orgnr, unnest($map_rhf) AS rhf_orgnr)",
        # One row per episode, (provider_orgnr, episode_id), with the columns of its first basis
        # row by (intake_date, record_id), as the indicators' `episodes` (indicators.episodes):
        # a re-sent intake under a new record_id is not a second episode. Its year is that
        # row's. Its study id is any of its basis rows' (the measure asks only whether there is
        # one; measurement points carry one too, `enrolled` below). The partition order
        # (episode_id first) as in `indicators.episodes._first`.
        "b AS (SELECT * EXCLUDE (_rank) FROM ("
        "SELECT patient_key, provider_orgnr, episode_id, sex, age, treatment_type, "
        "primary_substance, year, row_number() OVER w AS _rank, "
        "max(clinical_study_id) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) "
        "AS clinical_study_id "
        "FROM read_parquet($basis, hive_partitioning = true) "
        "WINDOW w AS (PARTITION BY episode_id, provider_orgnr ORDER BY intake_date, record_id)"
        ") WHERE _rank = 1)",
    ]
    study_join = ""
    in_study = "b.clinical_study_id IS NOT NULL"
    if measurement:
        # An episode is in a study if any of its records carries a study id, as the study
        # indicator reads DOMAIN.md: the basis and measurement forms have one.
        parameters["measurement"] = measurement
        ctes.append(
            "enrolled AS (SELECT DISTINCT provider_orgnr, episode_id "
            "FROM read_parquet($measurement, hive_partitioning = true) "
            "WHERE clinical_study_id IS NOT NULL)"
        )
        study_join = (
            "LEFT JOIN enrolled e "
            "ON e.provider_orgnr = b.provider_orgnr AND e.episode_id = b.episode_id"
        )
        in_study += " OR e.episode_id IS NOT NULL"
    discharge_join = ""
    discharge_columns = "NULL::INTEGER AS d_end_reason, NULL::INTEGER AS d_followup_arranged"
    if discharge:
        parameters["discharge"] = discharge
        # One discharge per episode (a duplicate is a validation error; take the latest). An
        # episode is (provider_orgnr, episode_id) (`indicators.episodes.EPISODE_KEY`): each
        # provider's system issues its own episode ids, so the same id at another provider is
        # another episode, even the same patient's.
        ctes.append(
            "discharge_one AS (SELECT provider_orgnr, episode_id, "
            "arg_max(end_reason, discharge_date) AS d_end_reason, "
            "arg_max(followup_arranged, discharge_date) AS d_followup_arranged "
            "FROM read_parquet($discharge, hive_partitioning = true) "
            "GROUP BY provider_orgnr, episode_id)"
        )
        discharge_join = (
            "LEFT JOIN discharge_one d "
            "ON d.provider_orgnr = b.provider_orgnr AND d.episode_id = b.episode_id"
        )
        discharge_columns = "d.d_end_reason, d.d_followup_arranged"
    connection.execute(
        f"CREATE TABLE episode AS WITH {', '.join(ctes)} "  # noqa: S608
        "SELECT p.rowid AS patient, p.rkey, b.provider_orgnr, b.sex, b.age, b.treatment_type, "
        f"b.primary_substance, ({in_study}) AS in_study, CAST(b.year AS INTEGER) AS year, "
        f"m.rhf_orgnr, {discharge_columns} "
        "FROM b "
        "LEFT JOIN patient p ON p.patient_key = b.patient_key "
        f"LEFT JOIN rhf_map m ON m.map_orgnr = b.provider_orgnr {discharge_join} {study_join}",
        parameters,
    )
    connection.execute("DROP TABLE patient")


# The episode columns each dimension (and its filter) reads.
DIMENSION_COLUMNS: Final[dict[str, str]] = {
    "year": "year",
    "rhf": "rhf_orgnr",
    "provider": "provider_orgnr",
    "sex": "sex",
    "age_group": "age",
    "treatment_type": "treatment_type",
    "primary_substance": "primary_substance",
    "end_reason": "d_end_reason",
}


def _episode_groups(dimensions: Iterable[str], measures: list[str]) -> str:
    """Episode measures summed once per combination of the columns the query reads.

    Counts and key sums add up, so the CUBE (one hash aggregation per grouping set) runs over
    these few hundred groups instead of every episode: the same counts and the same sums.
    Distinct-patient measures do not add up and take the episode rows themselves.
    """
    columns = sorted({DIMENSION_COLUMNS[d] for d in dimensions})
    sums = []
    for i, name in enumerate(measures):
        condition = MEASURES[name].condition
        sums.append(f"count(*) FILTER (WHERE {condition}) AS n{i}")
        sums.append(f"sum(rkey) FILTER (WHERE {condition}) AS k{i}")
    grouping = f"GROUP BY {', '.join(columns)}" if columns else ""
    return f"(SELECT {', '.join([*columns, *sums])} FROM episode {grouping})"  # noqa: S608


@dataclass(frozen=True)
class MeasureTable:
    """True counts and cell keys of one measure, as tables with margins."""

    counts: npt.NDArray[np.int64]
    keys: npt.NDArray[np.int64]


def canonical_dimensions(dimensions: Iterable[str]) -> list[str]:
    """The dimensions in the one order every table is computed and protected in."""
    return sorted(dimensions, key=DIMENSION_ORDER.index)


def _normalised(request: AggregateCreate) -> tuple[list[str], list[str]]:
    """The request's dimensions in canonical order and its measures (with `episodes` when
    mutual_end is answered as its slice); rejects a repeated dimension or a stray filter."""
    requested: list[str] = [str(d) for d in request.dimensions]
    if len(set(requested)) != len(requested):
        raise RejectedInput("a dimension may appear only once")
    for dimension in request.filters:
        if dimension not in requested:
            raise RejectedInput(
                f"filters.{dimension}: a filter may only name one of the requested dimensions"
            )
    dimensions = canonical_dimensions(requested)
    measures: list[str] = list(dict.fromkeys(str(m) for m in request.measures))
    if _sliced(measures, dimensions) and "episodes" not in measures:
        measures.append("episodes")  # mutual_end is answered as its slice (`aggregate`)
    return dimensions, measures


def compute_tables(
    manifest: ReleaseManifest,
    request: AggregateCreate,
    *,
    salt: str,
    hierarchy: Hierarchy,
    view: EpisodeView | None = None,
) -> tuple[list[list[str]], dict[str, MeasureTable]]:
    """The true counts and cell keys of every requested measure, over every cell and margin.

    Over the release's full population and every category, in the canonical dimension order
    (`canonical_dimensions`): filters select cells of this table afterwards (`aggregate`), they
    never change what it counts. `view`: the release's episode view, if the caller holds it.
    """
    dimensions, measures = _normalised(request)
    needs_discharge = "end_reason" in dimensions
    needs_discharge = needs_discharge or any(MEASURES[m].needs_discharge for m in measures)
    if needs_discharge and "discharge" not in manifest.tables:
        raise RejectedInput(f"release {manifest.release} has no discharge table")
    if view is None:
        view = episode_view(manifest, salt=salt, hierarchy=hierarchy)
    # A cursor per query: the view's connection is shared by concurrent requests.
    connection = view.connection.cursor()
    try:
        years = [
            str(row[0])
            for row in connection.execute(
                "SELECT DISTINCT year AS y FROM episode ORDER BY y"
            ).fetchall()
        ]
        axes = [categories(d, hierarchy=hierarchy, years=years) for d in dimensions]
        if int(np.prod([len(a) for a in axes])) > MAX_CELLS:
            raise RejectedInput(
                f"the table would have more than {MAX_CELLS} cells: drop a dimension"
            )
        selects = [f"{DIMENSION_SQL[d]} AS dim{i}" for i, d in enumerate(dimensions)]
        group_columns = ", ".join(f"dim{i}" for i in range(len(dimensions)))
        if all(MEASURES[m].unit == "episode" for m in measures):
            source = _episode_groups(dimensions, measures)
            aggregates = [f"sum(n{i}) AS n{i}, sum(k{i}) AS k{i}" for i in range(len(measures))]
        else:
            source = "episode"
            aggregates = []
            for i, name in enumerate(measures):
                spec = MEASURES[name]
                if spec.unit == "episode":
                    aggregates.append(f"count(*) FILTER (WHERE {spec.condition}) AS n{i}")
                    aggregates.append(f"sum(rkey) FILTER (WHERE {spec.condition}) AS k{i}")
                else:
                    # `patient` numbers the distinct patient keys: the same count.
                    aggregates.append(
                        f"count(DISTINCT patient) FILTER (WHERE {spec.condition}) AS n{i}"
                    )
                    # Distinct patients: each patient's key once. DISTINCT over the key alone
                    # added two patients with equal 32-bit keys once (about 11,600 such pairs
                    # among 10M patients); over (patient << 32) + key it is once per patient,
                    # and the sum mod 2^32 (below) is the keys' sum.
                    aggregates.append(
                        f"sum(DISTINCT (CAST(patient AS HUGEINT) << 32) + rkey) "
                        f"FILTER (WHERE {spec.condition}) AS k{i}"
                    )
        # Only whitelisted fragments (DIMENSION_SQL, MEASURES) are interpolated; no value of the
        # request reaches the SQL at all.
        sql = (
            f"SELECT {group_columns}, GROUPING({group_columns}) AS grp, "  # noqa: S608
            f"{', '.join(aggregates)} "
            f"FROM (SELECT *, {', '.join(selects)} FROM {source}) "
            f"GROUP BY CUBE ({group_columns})"
        )
        rows = connection.execute(sql).fetchall()
    finally:
        connection.close()
    shape = tuple(len(a) + 1 for a in axes)
    positions = [{c: j for j, c in enumerate(a)} for a in axes]
    tables = {
        m: MeasureTable(np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64))
        for m in measures
    }
    d = len(dimensions)
    for row in rows:
        grp = int(row[d])
        cell: list[int] = []
        outside = False
        for axis in range(d):
            # GROUPING(...) sets bit (d - 1 - axis) when axis is rolled up into a margin.
            if grp >> (d - 1 - axis) & 1:
                cell.append(len(axes[axis]))
            else:
                position = positions[axis].get(str(row[axis]))
                if position is None:
                    outside = True  # e.g. an unknown provider: counted only in the margins
                    break
                cell.append(position)
        if outside:
            continue
        for i, name in enumerate(measures):
            count = int(row[d + 1 + 2 * i] or 0)
            key = int(row[d + 2 + 2 * i] or 0) % CELL_KEY_MODULUS
            tables[name].counts[tuple(cell)] = count
            tables[name].keys[tuple(cell)] = key
    return axes, tables


def protect(
    table: MeasureTable,
    *,
    threshold: int = THRESHOLD,
    ptable: PerturbationTable = PTABLE,
    check: Callable[[], None] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Published values (perturbed) and the suppression mask of one measure's table.

    `check` is called before every LP of the audit (`suppress_table`): it may raise to give up.
    """
    additive = _additive(table.counts)
    # Distinct-patient margins can be small where the sum of their cells is not: suppress every
    # true count in 1..threshold−1 as well.
    suppression = suppress_table(additive, threshold, check=check)
    small = (table.counts >= 1) & (table.counts < threshold)
    # A small group's zeros, after the audit: hiding more cells keeps its guarantee. Not audited
    # themselves (as secondary cells they took a 3-dimension table's suppression from 3 s to
    # minutes): one of them is recovered as 0 only through a sum of perturbed cells, not exactly.
    beside = zeros_beside(table.counts, threshold) | zeros_beside(additive, threshold)
    mask: npt.NDArray[np.bool_] = suppression.mask | small | beside
    published = np.zeros(table.counts.shape, dtype=np.int64)
    for cell in itertools.product(*(range(n) for n in table.counts.shape)):
        published[cell] = perturb(int(table.counts[cell]), int(table.keys[cell]), ptable)
    return published, mask


def zeros_beside(counts: npt.NDArray[np.int64], threshold: int) -> npt.NDArray[np.bool_]:
    """The zero cells of a small group's breakdown: on a line (along any axis) whose total, its
    margin, is in 1..threshold−1. Shown, they told which hidden cell held the group, and so every
    member's category: a zero is never a small cell, and secondary suppression hardly ever takes
    one (a zero partner cannot go down), so a hidden cell meant "not 0". A reviewer read a
    provider's single episode of a year off one table per dimension (its only hidden category,
    the others 0: substance, end reason, age group, treatment type, sex) and rebuilt a
    three-episode provider whole. A larger group's zeros stay shown: they say that none of its
    members is in a category, not which category a member is in."""
    beside: npt.NDArray[np.bool_] = np.zeros(counts.shape, dtype=bool)
    for axis in range(counts.ndim):
        total = counts.take([counts.shape[axis] - 1], axis=axis)
        beside |= np.broadcast_to((total >= 1) & (total < threshold), counts.shape)
    beside &= counts == 0
    return beside


def _additive(counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    # Episode counts add up along every axis. Distinct-patient margins do not (a patient treated
    # by two providers is one patient in the total): suppression then audits the table as if the
    # margins were the sums of their cells, which is what an attacker's equations can use.
    inner = counts[tuple(slice(0, n - 1) for n in counts.shape)]
    result = inner.astype(np.int64)
    for axis in range(result.ndim):
        result = np.concatenate([result, result.sum(axis=axis, keepdims=True)], axis=axis)
    return result


def _sliced(measures: list[str], dimensions: list[str]) -> bool:
    """Whether mutual_end is answered as a slice of the episodes table (`_mutual_end_slice`)."""
    return "mutual_end" in measures and "end_reason" in dimensions


def _mutual_end_slice(
    episodes: tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]], dimensions: list[str]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """mutual_end over dimensions with end_reason, from the protected episodes table over the
    same dimensions: its end-reason-1 cells are the episodes cells of end reason 1 (the same
    records: the same cell key, the same published value) and so is its end-reason margin;
    under every other end reason it is 0, shown. Protected on its own, the table showed the
    end-reason-1 cell that the episodes table hid as the partner of a small cell, and the row
    total gave the small cell away; as a slice it shows nothing the episodes table does not."""
    axis = dimensions.index("end_reason")
    mutual = sorted(END_REASON.values).index(MUTUAL_END)  # its position in `categories`
    values, mask = np.moveaxis(episodes[0], axis, 0), np.moveaxis(episodes[1], axis, 0)
    sliced_values, sliced_mask = np.zeros_like(values), np.zeros_like(mask)
    for index in (mutual, len(values) - 1):  # end reason 1 and the end-reason margin
        sliced_values[index], sliced_mask[index] = values[mutual], mask[mutual]
    return np.moveaxis(sliced_values, 0, axis), np.moveaxis(sliced_mask, 0, axis)


@dataclass(frozen=True)
class ProtectedTable:
    """One measure's protected table (canonical dimension order): published values and
    suppression mask, read-only, with the categories of its axes."""

    axes: tuple[tuple[str, ...], ...]
    values: npt.NDArray[np.int64]
    mask: npt.NDArray[np.bool_]


# Wall-clock budget of one request's suppression audit, all its tables together, checked before
# every LP (`protect`'s `check`): beyond it the request is refused (422), so one request cannot
# hold a server thread (and the aggregate lock) for minutes. Measured on the 3,000-episode demo
# register (2 shared CPUs), audit of 1,680-1,920-cell tables: [provider, year, age_group]
# episodes 71 s before the audit kept a pool of feasible tables (LPs 2,964 -> 170), 2-4 s after;
# the same dimensions with all five measures 316 s before, ~12 s after; [provider, age_group,
# primary_substance], five measures, 292 s before, ~15 s after.
AUDIT_BUDGET_SECONDS: Final = 30.0
# A second aggregate waits at most this long for the one being computed, then gets a 503: a
# waiting request holds a server thread, so the wait is short.
COMPUTE_WAIT_SECONDS: Final = 3.0
# Protected tables kept per episode view (at most MAX_VIEWS views): a table of 2,000 cells with
# margins holds ~25 KB.
MAX_RESULTS: Final = 256

# One aggregate computation (episode view, CUBE, audit) at a time per process.
_compute_lock = threading.Lock()
_results_lock = threading.Lock()  # guards every view's `results`


def _cached(
    view: EpisodeView, dimensions: list[str], measures: list[str]
) -> dict[str, ProtectedTable]:
    """The cached protected tables of these measures over these dimensions (those there are)."""
    found: dict[str, ProtectedTable] = {}
    with _results_lock:
        for name in measures:
            key = (tuple(dimensions), name)
            entry = view.results.get(key)
            if entry is not None:
                view.results.move_to_end(key)
                found[name] = entry
    return found


def _keep(view: EpisodeView, dimensions: list[str], name: str, entry: ProtectedTable) -> None:
    with _results_lock:
        view.results[(tuple(dimensions), name)] = entry
        while len(view.results) > MAX_RESULTS:
            view.results.popitem(last=False)


def _over_budget() -> Callable[[], None]:
    deadline = time.monotonic() + AUDIT_BUDGET_SECONDS

    def check() -> None:
        if time.monotonic() > deadline:
            raise RejectedInput(
                f"protecting this table would take more than {AUDIT_BUDGET_SECONDS:g} s of "
                "suppression audit: ask for fewer dimensions, or dimensions with fewer "
                "categories (a filter does not help: the full table is protected)"
            )

    return check


def _protected_tables(
    manifest: ReleaseManifest,
    request: AggregateCreate,
    dimensions: list[str],
    measures: list[str],
    salt: str,
    hierarchy: Hierarchy,
) -> tuple[list[list[str]], dict[str, ProtectedTable]]:
    """The protected tables of `measures` over `dimensions` (canonical order) and their axes.

    Cached with the release's episode view (`EpisodeView.results`): a repeated request is
    answered from memory, and the tables go when the view does (its files changed or gone: an
    erasure). A miss is computed under `_compute_lock`, one at a time per process; a request
    that cannot have the lock within COMPUTE_WAIT_SECONDS is answered 503, one whose audit
    overruns AUDIT_BUDGET_SECONDS 422.
    """
    view = episode_view(manifest, salt=salt, hierarchy=hierarchy, build=False)
    found = _cached(view, dimensions, measures) if view is not None else {}
    if len(found) < len(measures):
        if not _compute_lock.acquire(timeout=COMPUTE_WAIT_SECONDS):
            raise ServiceUnavailable(
                "another researcher aggregate is being computed (one at a time); "
                "try again in a minute"
            )
        try:
            view = episode_view(manifest, salt=salt, hierarchy=hierarchy)
            found = _cached(view, dimensions, measures)  # computed while this one waited
            missing = [name for name in measures if name not in found]
            if missing:
                axes, tables = compute_tables(
                    manifest, request, salt=salt, hierarchy=hierarchy, view=view
                )
                check = _over_budget()
                for name in missing:
                    values, mask = protect(tables[name], check=check)
                    values.setflags(write=False)
                    mask.setflags(write=False)
                    entry = ProtectedTable(tuple(tuple(a) for a in axes), values, mask)
                    _keep(view, dimensions, name, entry)
                    found[name] = entry
        finally:
            _compute_lock.release()
    axes = [list(a) for a in found[measures[0]].axes]
    return axes, found


def aggregate(
    manifest: ReleaseManifest,
    request: AggregateCreate,
    *,
    pseudonym_key: bytes,
    hierarchy: Hierarchy,
) -> AggregatePublic:
    """The disclosure-controlled table of a researcher's query (see the module docstring).

    The full table of the query's dimensions is computed and protected; the filters then pick
    the cells of their categories, and every margin shown is the full table's margin.
    """
    salt = cell_key_salt(pseudonym_key)
    canonical, computed = _normalised(request)
    if _sliced(computed, canonical):
        computed.remove("mutual_end")  # answered as the episodes table's slice, below
    axes, found = _protected_tables(manifest, request, canonical, computed, salt, hierarchy)
    dimensions = [str(d) for d in request.dimensions]
    # From the canonical order (in which the table was protected) to the order asked for.
    order = [canonical.index(d) for d in dimensions]
    axes = [axes[i] for i in order]
    measures = list(dict.fromkeys(str(m) for m in request.measures))
    protected = {name: (entry.values, entry.mask) for name, entry in found.items()}
    if _sliced(measures, canonical):
        protected["mutual_end"] = _mutual_end_slice(protected["episodes"], canonical)
    protected = {
        name: (np.transpose(protected[name][0], order), np.transpose(protected[name][1], order))
        for name in measures
    }
    selected: list[list[int]] = []
    for dimension, labels in zip(dimensions, axes, strict=True):
        kept = list(range(len(labels)))
        if dimension in request.filters:
            wanted = set(request.filters[dimension])
            kept = [j for j, label in enumerate(labels) if label in wanted]
            if not kept:
                raise RejectedInput(f"the filter on {dimension} leaves no category")
        selected.append([*kept, len(labels)])  # the full-population margin comes with them
    cells: list[AggregateCell] = []
    for cell in itertools.product(*selected):
        cells.append(
            AggregateCell(
                dimensions={
                    name: axes[axis][cell[axis]] if cell[axis] < len(axes[axis]) else None
                    for axis, name in enumerate(dimensions)
                },
                values={
                    name: None if mask[cell] else int(values[cell])
                    for name, (values, mask) in protected.items()
                },
                suppressed={name: bool(mask[cell]) for name, (_, mask) in protected.items()},
            )
        )
    return AggregatePublic(
        release=manifest.release,
        measures=measures,
        dimensions=dimensions,
        threshold=THRESHOLD,
        method="cell-key perturbation (max ±2) + primary/secondary suppression (threshold 5)",
        cells=cells,
    )
