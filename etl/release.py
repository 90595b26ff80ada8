"""Releases: numbered (1, 2, ...), immutable snapshots of every stored table.

A release is a manifest (`releases/{N}/manifest.json`: per table its Delta version, its Parquet
files as absolute paths and its row count) plus a `schemas.catalog.Release` row. Nothing in the
warehouse deletes a file that a non-retired release lists, except an erasure (`etl.erasure`), which
retires the releases that held an erased patient and publishes a replacement.

The release is its file list; its Delta version is informational. An erasure removes every log
entry before its checkpoint (those entries' file statistics hold the erased records' values), so
afterwards a release's Delta version no longer resolves (`DeltaTable(path, version=v)` fails),
while its files, kept, still read its rows. Keeping the versions resolvable would mean keeping
those entries.
"""

import shutil
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session, SQLModel, col, func, select

from etl.ledger import repair_interrupted
from etl.warehouse import STORED_FORMS, Warehouse
from schemas.catalog import Release
from schemas.errors import NotFound
from schemas.manifest import ReleaseManifest, TableSnapshot

MANIFEST = "manifest.json"

# Runs under the write locks before a release's row is added; the catalog rows it returns (the
# service's index of the release's indicator results) are added after the release's row is
# flushed (their foreign key names it), to be committed with it: no process death between two
# commits can leave the release without them.
BeforeCommit = Callable[[ReleaseManifest], Iterable[SQLModel] | None]


def manifest_path(releases_dir: Path, number: int) -> Path:
    return releases_dir / str(number) / MANIFEST


def publish_release(
    warehouse: Warehouse,
    releases_dir: Path,
    session: Session,
    note: str | None = None,
    published_by: str = "cli",
    before_commit: BeforeCommit | None = None,
) -> ReleaseManifest:
    """Publish the warehouse's current state as the next release and COMMIT the catalog (the
    release row and whatever else `session` holds) before the write locks are released.

    An erasure takes the same locks and retires only the releases it finds committed: a row
    committed after the locks were released could be missed by an erasure in between, which would
    then delete files this release lists and leave it served with the erased patient counted.
    `before_commit(manifest)` runs under the locks, after the manifest is written and before the
    row is added (the service computes the indicators there, so that no served release lacks
    them; nothing of the catalog is locked meanwhile), and the rows it returns are committed with
    the release's (`BeforeCommit`). If it or the commit fails, nothing is committed and the
    release's directory is removed.

    An exception after the commit (Ctrl-C as it returns) leaves the committed release as it is:
    the directory is removed only when the catalog, asked again, does not hold the row; when it
    cannot be asked, the directory is left to the next writer's repair, which removes it if the
    row is not there (`etl.ledger.repair_interrupted`).
    """
    with warehouse.writing():
        repair_interrupted(session, warehouse)
        manifest: ReleaseManifest | None = None
        try:
            manifest = publish_locked(
                warehouse, releases_dir, session, note, published_by, before_commit
            )
            session.commit()
        except BaseException:
            session.rollback()
            if manifest is not None and not _committed(session, manifest.release):
                shutil.rmtree(releases_dir / str(manifest.release), ignore_errors=True)
            raise
        return manifest


def _committed(session: Session, number: int) -> bool:
    """Whether the catalog holds release `number` (True when it cannot be asked: its
    directory is then left to the next writer's repair)."""
    try:
        return session.get(Release, number) is not None
    except Exception:
        return True
    finally:
        session.rollback()


def publish_locked(
    warehouse: Warehouse,
    releases_dir: Path,
    session: Session,
    note: str | None,
    published_by: str,
    before_commit: BeforeCommit | None = None,
    tables: dict[str, TableSnapshot] | None = None,
) -> ReleaseManifest:
    """`publish_release` for a caller that already holds the warehouse's write locks: adds and
    flushes the row, never commits; the caller must commit before it releases the locks.
    `tables`: the release's tables (an erasure's replacement of a release); default the
    warehouse's current tables."""
    number = _next_number(releases_dir, session)
    directory = releases_dir / str(number)
    # exist_ok=False: two publishers can never both claim a number.
    directory.mkdir(parents=True, exist_ok=False)
    try:
        return _write_release(
            warehouse, directory, session, number, note, published_by, before_commit,
            tables if tables is not None else _current(warehouse),
        )  # fmt: skip
    except BaseException:
        # A release that never reached the catalog leaves no manifest behind.
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _write_release(
    warehouse: Warehouse,
    directory: Path,
    session: Session,
    number: int,
    note: str | None,
    published_by: str,
    before_commit: BeforeCommit | None,
    tables: dict[str, TableSnapshot],
) -> ReleaseManifest:
    manifest = ReleaseManifest(
        release=number, created_at=datetime.now(UTC), note=note, tables=tables
    )
    path = directory / MANIFEST
    manifest.write(path)
    rows = before_commit(manifest) if before_commit is not None else None
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
    session.add_all(rows or ())
    return manifest


def _current(warehouse: Warehouse) -> dict[str, TableSnapshot]:
    """The warehouse's tables as they are now."""
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
    return tables


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
