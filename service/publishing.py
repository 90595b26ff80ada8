"""Publishing a release: the warehouse's tables pinned as release N, then its indicators computed.

`etl/` cannot import `indicators/` (the engine must run without the loader), so the two steps meet
here, at the edge, for the CLI and the API alike.
"""

from pathlib import Path

from sqlmodel import Session

from etl.release import publish_release
from etl.warehouse import Warehouse
from indicators.results import compute_and_store, read
from schemas.catalog import IndicatorRun
from schemas.manifest import ReleaseManifest
from service.settings import Settings


def publish(
    settings: Settings, session: Session, *, note: str | None = None, published_by: str = "cli"
) -> tuple[ReleaseManifest, Path]:
    """Publish the next release and store its indicator results (manifest, results path)."""
    manifest = publish_release(
        Warehouse(settings.warehouse_dir),
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
