"""Published releases and their precomputed indicator results, as the API serves them.

Results are read from `{data_dir}/releases/{N}/indicators.parquet` (written by the indicator
job) and kept in memory per release: a release is immutable, so the cache key is the file's path
and modification time. Rows are then scoped to the principal: unit-level rows (`level == "unit"`)
and the denominator behind suppressed rows (they keep no numerator, value or interval) only for the
registry and for a trust's own provider's caregiver rows (never a resident row: it counts an HF's
residents, mostly others' patients).
"""

import csv
import hashlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Connection, Engine
from sqlmodel import Session, col, select

from etl import release as etl_release
from indicators import results as result_files
from indicators.catalogue import load_catalogue
from indicators.results import RESULT_SCHEMA, RESULTS_FILE
from indicators.variation_report import STANDARDISED, case_mix_adjusted
from schemas.catalog import Release
from schemas.errors import NotFound
from schemas.manifest import ReleaseManifest
from service.auth import Principal
from service.settings import Settings

RESULT_COLUMNS: Final = tuple(RESULT_SCHEMA.names)
# Numbers hidden from a published row that is suppressed (fewer than the minimum observations).
SUPPRESSED_NUMBERS: Final = (
    "numerator",
    "denominator",
    "value",
    "ci95_low",
    "ci95_high",
    "ci998_low",
    "ci998_high",
    "previous_value",
)
RESTRICTED_LEVELS: Final = frozenset({"unit"})


def list_releases(session: Session) -> list[Release]:
    return list(session.exec(select(Release).order_by(col(Release.number).desc())))


# Built once: the indicator routes ask on every request (a release may be retired at any moment
# by an erasure in another process), so the question must be cheap. Releases are few (one a
# quarter or so): all served numbers are read at once.
_SERVED_RELEASES: Final = (
    select(Release.number)
    .where(col(Release.retired).is_(False))
    .order_by(col(Release.number).desc())
)


def served_releases(connection: Connection) -> list[int]:
    """The numbers of the releases that are served (not retired), latest first."""
    return [int(number) for number in connection.execute(_SERVED_RELEASES).scalars()]


def pick_release(served: Sequence[int], number: int | None) -> int:
    """Release `number`, or the latest one, if it is among the `served` (latest first)."""
    if number is None:
        if not served:
            raise NotFound("no release has been published yet")
        return served[0]
    if number not in served:
        # Not echoed: the number is what a client typed (an identity number without its leading
        # zero fits an int).
        raise NotFound("no such release, or it is retired")
    return number


def served_release(connection: Connection, number: int | None) -> int:
    """The number of release `number`, or of the latest one, if it is served (not retired)."""
    return pick_release(served_releases(connection), number)


def served_release_in(engine: Engine, number: int | None) -> int:
    """`served_release` on a pooled connection of its own (for routes without a session)."""
    with engine.connect() as connection:
        return served_release(connection, number)


def get_release(session: Session, number: int | None) -> Release:
    """Release `number`, or the latest one not retired; retired releases are not served."""
    release = session.get(Release, served_release(session.connection(), number))
    assert release is not None  # served_release found it in this transaction
    return release


def read_manifest(settings: Settings, number: int) -> ReleaseManifest:
    return etl_release.read_manifest(settings.releases_dir, number)


def results_path(settings: Settings, number: int) -> tuple[str, int]:
    """The results file of a release and its modification time (the cache key of its answers).

    Stat'ed on every request: the indicator job may rewrite a release's results.
    """
    path = os.path.join(settings.data_dir, "releases", str(number), RESULTS_FILE)
    try:
        return path, os.stat(path).st_mtime_ns
    except FileNotFoundError:
        raise NotFound(f"release {number} has no indicator results yet") from None


_tables: dict[str, tuple[int, pa.Table]] = {}
_cache_lock = threading.Lock()


def results_table(settings: Settings, number: int) -> pa.Table:
    """All indicator results of a release (cached in memory per release file)."""
    path, stamp = results_path(settings, number)
    with _cache_lock:
        entry = _tables.get(path)
    if entry is not None and entry[0] == stamp:
        return entry[1]
    table = pq.read_table(path, columns=list(RESULT_COLUMNS))
    with _cache_lock:
        # One entry per file: a rewritten file (new mtime) replaces the old entry.
        _tables[path] = (stamp, table)
    return table


@dataclass(frozen=True)
class Answer:
    body: bytes
    rows: int


# Rendered answers by (results file, its mtime, ETag): the ETag already holds release, query,
# scope and format. A hit costs one stat and a dict look-up, so the route serves it on the event
# loop. Bounded: the least recently used entry goes first.
MAX_ANSWERS: Final = 1024
_answers: OrderedDict[tuple[str, int, str], Answer] = OrderedDict()


def cached_answer(file: tuple[str, int], tag: str) -> Answer | None:
    key = (*file, tag)
    with _cache_lock:
        answer = _answers.get(key)
        if answer is not None:
            _answers.move_to_end(key)
    return answer


def remember_answer(file: tuple[str, int], tag: str, answer: Answer) -> None:
    with _cache_lock:
        _answers[(*file, tag)] = answer
        while len(_answers) > MAX_ANSWERS:
            _answers.popitem(last=False)


# One answer is rendered at a time: 50 clients asking for a new release at once would otherwise
# read the file and render the same answer 50 times over (the GIL runs them one by one anyway).
_render_lock = threading.Lock()


def answer_once(file: tuple[str, int], tag: str, render: Callable[[], Answer]) -> Answer:
    """The cached answer, or `render()`'s, remembered (rendered once for concurrent callers)."""
    with _render_lock:
        answer = cached_answer(file, tag)
        if answer is None:
            answer = render()
            remember_answer(file, tag, answer)
    return answer


@dataclass(frozen=True)
class ResultQuery:
    indicator: str | None = None
    years: tuple[int, ...] = ()
    level: str | None = None
    orgnr: str | None = None
    context: str | None = None

    def normalised(self) -> str:
        return (
            f"i={self.indicator or ''}&y={','.join(str(y) for y in sorted(set(self.years)))}"
            f"&l={self.level or ''}&o={self.orgnr or ''}&c={self.context or ''}"
        )


def etag(release: int, query: ResultQuery, principal: Principal, results_mtime_ns: int) -> str:
    """Entity tag of an answer: release, the results file's modification time (the indicator
    job may rewrite a release's results: the old tag must then no longer match), normalised
    query and the principal's scope."""
    scope = f"{principal.role}:{principal.provider or ''}"
    text = f"{release}|{results_mtime_ns}|{query.normalised()}|{scope}"
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f'"{digest[:32]}"'


@cache
def catalogue_ids() -> frozenset[str]:
    """The ids of the packaged indicator catalogue (read once: it ships with the code)."""
    return frozenset(d.id for d in load_catalogue())


@cache
def case_mix_adjusted_ids() -> frozenset[str]:
    """The indicators whose variation figures are on indirectly standardised rates."""
    return frozenset(d.id for d in load_catalogue() if case_mix_adjusted(d))


def stored_variation(
    table: pa.Table, indicator: str, year: int, context: str
) -> dict[str, Any] | None:
    """The standardised variation figures of `indicator` in `year` and `context` stored in the
    results file `table` was read from (`indicators.results.VARIATION_KEY`); None when the file
    holds none for them (computed before they were stored, or not standardised there).

    From the table's schema metadata, read with the table and cached with it: no release data
    is read per request. The figures are over the shown providers alone, the same for every
    principal.
    """
    entries = result_files.stored_variation(table.schema)
    for entry in entries or ():
        if (
            entry.get("indicator_id") == indicator
            and entry.get("year") == year
            and entry.get("context") == context
            and entry.get("method") == STANDARDISED
        ):
            return entry
    return None


def select_results(
    table: pa.Table, query: ResultQuery, principal: Principal
) -> list[dict[str, Any]]:
    """The rows matching `query` that `principal` may see, as published.

    An indicator id that is not in the catalogue is a 404 (a known one without rows in this
    release answers no rows): an empty answer would read as "no results yet". The message does
    not repeat the id, which the client typed and could be anything.
    """
    if query.indicator is not None and query.indicator not in catalogue_ids():
        raise NotFound(
            "no indicator with this id in the catalogue (GET /api/v1/indicators lists them)"
        )
    conditions: list[Any] = []
    if query.indicator is not None:
        conditions.append(pc.equal(table["indicator_id"], query.indicator))
    if query.years:
        conditions.append(pc.is_in(table["year"], pa.array(list(query.years), pa.int64())))
    if query.level is not None:
        conditions.append(pc.equal(table["level"], query.level))
    if query.orgnr is not None:
        conditions.append(pc.equal(table["orgnr"], query.orgnr))
    if query.context is not None:
        conditions.append(pc.equal(table["context"], query.context))
    selected = table
    if conditions:
        mask = conditions[0]
        for condition in conditions[1:]:
            mask = pc.and_(mask, condition)
        selected = table.filter(mask)
    rows: list[dict[str, Any]] = []
    for row in selected.to_pylist():
        privileged = principal.may_see_result(str(row["orgnr"]), str(row["context"]))
        if row["level"] in RESTRICTED_LEVELS and not privileged:
            continue
        if row["suppressed"] and not privileged:
            for name in SUPPRESSED_NUMBERS:
                row[name] = None
        rows.append(row)
    return rows


def sort_key(row: dict[str, Any]) -> tuple[str, int, str, str, str]:
    return (row["indicator_id"], int(row["year"]), row["context"], row["level"], row["orgnr"])


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return result_files.spreadsheet_safe(value) if isinstance(value, str) else value


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(RESULT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in RESULT_COLUMNS})
    return buffer.getvalue()
