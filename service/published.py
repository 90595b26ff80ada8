"""Published releases and their precomputed indicator results, as the API serves them.

Results are read from `{data_dir}/releases/{N}/indicators.parquet` (written by the indicator
job) and kept in memory per release: a release is immutable, so the cache key is the file's path
and modification time. Rows are then scoped to the principal: unit-level rows (`level == "unit"`)
and the numbers behind suppressed rows only for the registry and for a trust's own provider.
"""

import csv
import hashlib
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlmodel import Session, col, select

from indicators.results import RESULT_SCHEMA
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


def get_release(session: Session, number: int | None) -> Release:
    """Release `number`, or the latest one not retired; retired releases are not served."""
    if number is None:
        release = session.exec(
            select(Release)
            .where(col(Release.retired).is_(False))
            .order_by(col(Release.number).desc())
        ).first()
        if release is None:
            raise NotFound("no release has been published yet")
        return release
    release = session.get(Release, number)
    if release is None or release.retired:
        raise NotFound(f"release {number} does not exist or is retired")
    return release


def read_manifest(settings: Settings, number: int) -> ReleaseManifest:
    path = settings.releases_dir / str(number) / "manifest.json"
    if not path.is_file():
        raise NotFound(f"release {number} has no manifest")
    return ReleaseManifest.read(path)


_cache: dict[tuple[str, int], pa.Table] = {}
_cache_lock = threading.Lock()


def results_table(settings: Settings, number: int) -> pa.Table:
    """All indicator results of a release (cached in memory per release file)."""
    path: Path = settings.releases_dir / str(number) / "indicators.parquet"
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise NotFound(f"release {number} has no indicator results yet") from None
    key = (str(path.resolve()), stamp)
    with _cache_lock:
        table = _cache.get(key)
    if table is None:
        table = pq.read_table(path, columns=list(RESULT_COLUMNS))
        with _cache_lock:
            # One entry per file: a rewritten file (new mtime) replaces the old entry.
            for stale in [k for k in _cache if k[0] == key[0]]:
                del _cache[stale]
            _cache[key] = table
    return table


@dataclass(frozen=True)
class Answer:
    body: bytes
    rows: int


# Rendered answers by (results table, ETag): the ETag already holds release, query and scope,
# and the table object changes when its file does. Bounded: the oldest entry goes first.
MAX_ANSWERS: Final = 1024
# Each entry keeps its table alive, so an id cannot be reused by another table meanwhile.
_answers: dict[tuple[int, str], tuple[pa.Table, Answer]] = {}


def cached_answer(table: pa.Table, tag: str) -> Answer | None:
    with _cache_lock:
        entry = _answers.get((id(table), tag))
    return entry[1] if entry is not None and entry[0] is table else None


def remember_answer(table: pa.Table, tag: str, answer: Answer) -> None:
    with _cache_lock:
        if len(_answers) >= MAX_ANSWERS:
            del _answers[next(iter(_answers))]
        _answers[(id(table), tag)] = (table, answer)


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


def etag(release: int, query: ResultQuery, principal: Principal) -> str:
    """Entity tag of an answer: release, normalised query and the principal's scope."""
    scope = f"{principal.role}:{principal.provider or ''}"
    digest = hashlib.sha256(f"{release}|{query.normalised()}|{scope}".encode()).hexdigest()
    return f'"{digest[:32]}"'


def select_results(
    table: pa.Table, query: ResultQuery, principal: Principal
) -> list[dict[str, Any]]:
    """The rows matching `query` that `principal` may see, as published."""
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
        privileged = principal.may_see_provider(str(row["orgnr"]))
        if row["level"] in RESTRICTED_LEVELS and not privileged:
            continue
        if row["suppressed"] and not privileged:
            for name in SUPPRESSED_NUMBERS:
                row[name] = None
        rows.append(row)
    return rows


def sort_key(row: dict[str, Any]) -> tuple[str, int, str, str, str]:
    return (row["indicator_id"], int(row["year"]), row["context"], row["level"], row["orgnr"])


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(RESULT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in RESULT_COLUMNS})
    return buffer.getvalue()
