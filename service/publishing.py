"""Publishing a release: the warehouse's tables pinned as release N, then its indicators computed.

`etl/` cannot import `indicators/` (the engine must run without the loader), so the two steps meet
here, at the edge, for the CLI and the API alike.

A release's indicators are its results and, in the same file, the standardised variation figures
of its outcome indicators (`indicators.results.compute_with_variation`): one computation, one
atomic write.

Erasures retire releases and delete their `indicators.parquet` while holding the warehouse's write
locks. So results are only ever written under those locks, after checking (in the committed
catalog) that the release is not retired: a computation that ran while an erasure retired its
release must not bring the release's results back.
"""

import logging
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pyarrow as pa
from sqlalchemy import Connection, Engine
from sqlmodel import Session, col, select

from etl.release import publish_release, read_manifest
from etl.warehouse import Warehouse
from indicators import results as result_files
from indicators.results import RESULTS_FILE
from schemas.catalog import IndicatorRun, Release
from schemas.manifest import ReleaseManifest
from service.settings import Settings

logger = logging.getLogger("kvarus.publishing")


def publish(
    settings: Settings, session: Session, *, note: str | None = None, published_by: str = "cli"
) -> tuple[ReleaseManifest, Path]:
    """Publish the next release with its indicator results (manifest, results path); commits.

    The indicators are computed under the write locks, before the release row is committed: the
    release is served from the moment it is committed, so it must have its results by then, and an
    erasure waiting for the locks then finds it (and retires it if it holds the patient).
    """
    results = ResultsUnderLocks(settings, required=True)
    manifest = publish_release(
        _warehouse(settings),
        settings.releases_dir,
        session,
        note=note,
        published_by=published_by,
        before_commit=results,
    )
    # Results that an erasure's replacement lacks (its computation failed or its process died).
    try:
        ensure_indicators(settings, session)
    except Exception as error:  # the release is published: report, and leave them for later
        logger.error("indicators of an earlier release not computed: %s", type(error).__name__)
    return manifest, results.stored[0]


class ResultsUnderLocks:
    """The `before_commit` hook of `etl.release.publish_release` and `etl.erasure.erase_patients`:
    computes a new release's indicators and writes them, under the write locks, before its row is
    committed (so that it is never served without them).

    `required=False` (an erasure): a failure is logged, not raised (the erasure must not fail for
    the indicators; `ensure_indicators` computes them later). The `IndicatorRun` row it returns
    is committed with the release's row (`etl.release.BeforeCommit`).
    """

    def __init__(self, settings: Settings, *, required: bool) -> None:
        self.settings = settings
        self.required = required
        self.stored: list[Path] = []

    def __call__(self, manifest: ReleaseManifest) -> list[IndicatorRun]:
        try:
            table = _compute(manifest, "duckdb")
            path = _write_file(manifest.release, table, self.settings)
        except Exception as error:
            if self.required:
                raise
            logger.error(
                "release %s: indicators not computed: %s", manifest.release, type(error).__name__
            )
            return []
        self.stored.append(path)
        return [IndicatorRun(release=manifest.release, results_path=str(path), rows=table.num_rows)]


def store_indicators(
    manifest: ReleaseManifest,
    settings: Settings,
    session: Session,
    *,
    engine: str = "duckdb",
    only_missing: bool = False,
) -> Path | None:
    """Compute a release's indicators, write them beside its manifest, index them in the catalog
    (added to `session`, not committed); None when the release is retired (or gone) by then, or,
    with `only_missing`, when its results were written meanwhile (`write_results`).

    Computes without the locks (a long computation must not hold up loads), writes under them.
    """
    try:
        table = _compute(manifest, engine)
    except Exception:
        # An erasure may have retired the release and deleted its files meanwhile.
        if _retired(session, manifest.release):
            return None
        raise
    return write_results(
        manifest.release, table, settings, session, engine=engine, only_missing=only_missing
    )


def write_results(
    number: int,
    table: pa.Table,
    settings: Settings,
    session: Session,
    *,
    engine: str,
    only_missing: bool = False,
) -> Path | None:
    """Write release `number`'s computed results under the write locks and index them (added to
    `session`); None, writing nothing, when the release is retired (or gone) by then, or, with
    `only_missing` (filling in results a release lacks), when its results file exists by then:
    another process filled them in meanwhile (checked under the locks, where results are
    written), and writing them again would index them twice.

    Results computed without their standardised variation figures (`indicators.engine.compute`
    alone, as `kvarus indicators` does) get them first, on DuckDB, without the locks.
    """
    if result_files.stored_variation(table.schema) is None:
        try:
            manifest = read_manifest(settings.releases_dir, number)
            table = result_files.attach_variation(manifest, table)
        except Exception:
            # An erasure may have retired the release and deleted its files meanwhile.
            if _retired(session, number):
                return None
            raise
    with _warehouse(settings).writing():
        if _retired(session, number):
            return None
        if only_missing and _results_path(settings, number).exists():
            return None
        path = _write_file(number, table, settings)
    session.add(
        IndicatorRun(release=number, engine=engine, results_path=str(path), rows=table.num_rows)
    )
    return path


def ensure_indicators(settings: Settings, session: Session) -> list[int]:
    """Compute and store the indicators of every non-retired release that has none; returns their
    numbers (oldest first).

    `etl/` publishes a release by itself when an erasure retires one (the replacement "rebuilt
    after erasure") but cannot compute indicators; call this after a load (an opt-out file erases)
    and after an erasure. The catalog rows are added to `session`, not committed. Results that
    another process writes meanwhile are not written again (nor counted here).
    """
    statement = select(Release.number).where(col(Release.retired).is_(False))
    numbers = sorted(int(n) for n in session.exec(statement).all())
    computed: list[int] = []
    for number in numbers:
        if _results_path(settings, number).exists():
            continue
        manifest = read_manifest(settings.releases_dir, number)
        # Another process may fill them in meanwhile: written once (checked again under the locks).
        if store_indicators(manifest, settings, session, only_missing=True) is not None:
            computed.append(number)
    return computed


def _warehouse(settings: Settings) -> Warehouse:
    return Warehouse(settings.warehouse_dir, settings.releases_dir)


def _compute(manifest: ReleaseManifest, engine: str) -> pa.Table:
    """The release's results with their standardised variation figures."""
    from indicators.engine import engine_name  # the engine loads on first use

    return result_files.compute_with_variation(manifest, engine=engine_name(engine))


def _write_file(number: int, table: pa.Table, settings: Settings) -> Path:
    """Write the results (and the variation figures they carry) whole or not at all (the API may
    read the file at any moment). Call under the write locks."""
    path = _results_path(settings, number)
    partial = path.with_name(f".{RESULTS_FILE}.partial")
    result_files.write(table, partial)
    partial.replace(path)
    return path


def _results_path(settings: Settings, number: int) -> Path:
    return settings.releases_dir / str(number) / RESULTS_FILE


def _retired(session: Session, number: int) -> bool:
    """Whether release `number` is retired (or not in the catalog), as committed now."""
    retired = release_retired(session, number)
    return retired is None or retired


def release_retired(session: Session, number: int) -> bool | None:
    """Whether release `number` is retired, as committed now (None: not in the catalog).

    Read on a connection of its own: the session's transaction may predate the erasure.
    """
    bind = session.get_bind()
    connection: AbstractContextManager[Connection] = (
        bind.connect() if isinstance(bind, Engine) else nullcontext(bind)
    )
    with connection as reading:
        retired = reading.execute(
            select(Release.retired).where(Release.number == number)
        ).scalar_one_or_none()
    return None if retired is None else bool(retired)
