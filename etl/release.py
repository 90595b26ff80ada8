"""Releases: numbered (1, 2, ...), immutable snapshots of every stored table.

A release is a manifest (`releases/{N}/manifest.json`: per table its Delta version, its Parquet
files as absolute paths and its row count) plus a `schemas.catalog.Release` row. Nothing in the
warehouse deletes a file that a non-retired release lists, except an erasure (`etl.erasure`), which
retires the releases that held an erased patient and publishes a replacement.
"""

from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session, col, func, select

from etl.ledger import repair_interrupted
from etl.warehouse import STORED_FORMS, Warehouse
from schemas.catalog import Release
from schemas.errors import NotFound
from schemas.manifest import ReleaseManifest, TableSnapshot

MANIFEST = "manifest.json"


def manifest_path(releases_dir: Path, number: int) -> Path:
    return releases_dir / str(number) / MANIFEST


def publish_release(
    warehouse: Warehouse,
    releases_dir: Path,
    session: Session,
    note: str | None = None,
    published_by: str = "cli",
) -> ReleaseManifest:
    """Publish the warehouse's current state as the next release (adds, never commits, the row)."""
    with warehouse.writing():
        repair_interrupted(session, warehouse)
        return publish_locked(warehouse, releases_dir, session, note, published_by)


def publish_locked(
    warehouse: Warehouse,
    releases_dir: Path,
    session: Session,
    note: str | None,
    published_by: str,
) -> ReleaseManifest:
    """`publish_release` for a caller that already holds the warehouse's write locks."""
    number = _next_number(releases_dir, session)
    directory = releases_dir / str(number)
    # exist_ok=False: two publishers can never both claim a number.
    directory.mkdir(parents=True, exist_ok=False)
    tables: dict[str, TableSnapshot] = {}
    for form in STORED_FORMS:
        delta = warehouse.delta(form.value)
        files = sorted(str(Path(uri).resolve()) for uri in delta.file_uris())
        tables[form.value] = TableSnapshot(
            name=form.value,
            delta_version=int(delta.version()),
            files=files,
            row_count=warehouse.count(form.value, files),
        )
    manifest = ReleaseManifest(
        release=number, created_at=datetime.now(UTC), note=note, tables=tables
    )
    path = directory / MANIFEST
    manifest.write(path)
    session.add(
        Release(
            number=number,
            created_at=manifest.created_at,
            note=note,
            manifest_path=str(path.resolve()),
            published_by=published_by,
        )
    )
    session.flush()
    return manifest


def _next_number(releases_dir: Path, session: Session) -> int:
    in_catalog = session.exec(select(func.max(Release.number))).one()
    on_disk = [int(p.name) for p in releases_dir.glob("*") if p.name.isdigit()]
    return max([in_catalog or 0, *on_disk]) + 1


def latest_release(session: Session) -> Release | None:
    """The newest release that is still served (not retired)."""
    statement = (
        select(Release).where(col(Release.retired).is_(False)).order_by(col(Release.number).desc())
    )
    return session.exec(statement).first()


def read_manifest(releases_dir: Path, number: int) -> ReleaseManifest:
    path = manifest_path(releases_dir, number)
    if not path.exists():
        raise NotFound(f"Release {number} does not exist")
    return ReleaseManifest.read(path)
