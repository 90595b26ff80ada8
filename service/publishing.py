"""Publishing a release: the warehouse's tables pinned as release N, then its indicators computed.

`etl/` cannot import `indicators/` (the engine must run without the loader), so the two steps meet
here, at the edge, for the CLI and the API alike.
"""

from pathlib import Path

from sqlmodel import Session, col, select

from etl.release import publish_release, read_manifest
from etl.warehouse import Warehouse
from indicators.results import RESULTS_FILE, compute_and_store, read
from schemas.catalog import IndicatorRun, Release
from schemas.manifest import ReleaseManifest
from service.settings import Settings


def publish(
    settings: Settings, session: Session, *, note: str | None = None, published_by: str = "cli"
) -> tuple[ReleaseManifest, Path]:
    """Publish the next release and store its indicator results (manifest, results path)."""
    manifest = publish_release(
        Warehouse(settings.warehouse_dir, settings.releases_dir),
        settings.releases_dir,
        session,
        note=note,
        published_by=published_by,
    )
    results_path = store_indicators(manifest, settings, session)
    return manifest, results_path


def store_indicators(
    manifest: ReleaseManifest, settings: Settings, session: Session, *, engine: str = "duckdb"
) -> Path:
    """Compute a release's indicators, write them beside its manifest, index them in the catalog."""
    results_path = compute_and_store(manifest, settings.releases_dir, engine=engine)
    session.add(
        IndicatorRun(
            release=manifest.release,
            engine=engine,
            results_path=str(results_path),
            rows=read(results_path).num_rows,
        )
    )
    return results_path


def ensure_indicators(settings: Settings, session: Session) -> list[int]:
    """Compute and store the indicators of every non-retired release that has none; returns their
    numbers (oldest first).

    `etl/` publishes a release by itself when an erasure retires one (the replacement "rebuilt
    after erasure") but cannot compute indicators; call this after a load (an opt-out file erases)
    and after an erasure. The catalog rows are added to `session`, not committed.
    """
    statement = select(Release).where(col(Release.retired).is_(False)).order_by(col(Release.number))
    computed: list[int] = []
    for release in session.exec(statement).all():
        if (settings.releases_dir / str(release.number) / RESULTS_FILE).exists():
            continue
        store_indicators(read_manifest(settings.releases_dir, release.number), settings, session)
        computed.append(release.number)
    return computed
