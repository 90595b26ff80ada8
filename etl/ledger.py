"""The upload ledger: one `schemas.catalog.Upload` row per file; repair of interrupted loads.

A row is `running` only while a load holds the warehouse's write locks (`Warehouse.writing()`), so a
process that holds those locks and finds a `running` row knows its load died (flock locks die with
their process). `repair_interrupted` undoes that load's Delta commits (each is tagged with the
upload id in its commit metadata) and marks the row `failed`. See `etl.load` for the protocol.

An API upload has a second row, the request (`service/uploads.py`): `pending` until its
background job starts, then `loading` (never `running`: the job holds no lock while it reads and
validates, and waits for the locks like any writer, so a repair must not take it for dead). Its
load's ledger row has `uploaded_by` `api:{request id}`; when a repair finds that row `running`, the
job died, and the request is marked `failed` too. A request is alive while a process holds its
flock (`hold_request`: taken by the route before the request row is committed, released when the
job ends, and by the kernel when the process dies): a repair marks a `pending` or `loading`
request whose lock nobody holds `failed` (its job died before its load reached the locks, or
never started), or gives it its load's outcome if that load finished. However long a request
waits behind other loads, it is not taken for dead while its process lives.

The repair also deletes release directories the catalog does not know: a publish (or an
erasure's replacement release) killed after writing its manifest and before its commit.

And it deletes every upload file under `incoming/` (`INCOMING_DIR`, beside the warehouse: raw
extracts, pseudonyms and health data) that no live process owns (an exclusive flock). The API no
longer writes there (it keeps an upload in memory, `service.uploads`): these are files that an
earlier version received and a process that died left behind (the API's start-up sweeps stale
ones too, `sweep_incoming`); one that an earlier version's live process owns stays.
"""

import fcntl
import hashlib
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Final, cast

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from etl.warehouse import Warehouse
from schemas.catalog import Erasure, Release, Upload
from schemas.errors import ConfigurationError
from schemas.forms import Form

_CHUNK: Final = 1 << 20

INTERRUPTED: Final = "interrupted: the load did not finish; its table changes were undone"
# An opt-out's deletes are never undone (its Delta commits carry no upload id), so an interrupted
# opt-out says what stands instead: whether its erasure was committed (and is then completed by
# the repair, `etl.erasure.finish_pending`) or not (a release may still hold its patients).
OPTOUT_ERASED: Final = (
    "interrupted after its erasure was committed: the erasure stands and was completed (see the "
    "erasure log); the file's row counts and quality report were not kept"
)
OPTOUT_INTERRUPTED: Final = (
    "interrupted before its erasure was committed: records it deleted stay deleted, but a release "
    "may still hold its patients; send the file again"
)

# Where the API streams an uploaded file before its load reads it (`service/uploads.py`).
INCOMING_DIR: Final = "incoming"
# An upload is read within seconds of being received; a file older than this was left behind by a
# load or a process that died (a 512 MB file loads in well under a minute on the load benchmark).
STALE_INCOMING: Final = timedelta(hours=1)

# What the ledger keeps for an opt-out file's hash and name (README, Privacy): the hash of a small
# opt-out file would confirm a guessed pseudonym, and its name may hold one. Nor is an opt-out
# ever skipped as a duplicate: the same file sent again erases what was loaded since.
NOT_KEPT: Final = "(not kept: an opt-out file)"

# The status of an API request whose background job runs (see the module docstring).
LOADING: Final = "loading"
# `Upload.uploaded_by` of the ledger row that an API request's job loads: prefix + request id.
API_UPLOADER: Final = "api:"


def incoming_dir(warehouse: Warehouse) -> Path:
    """Where the API keeps uploaded files: beside the warehouse, in the data directory."""
    return warehouse.root.parent / INCOMING_DIR


def remove_unowned_incoming(incoming: Path) -> int:
    """Delete the upload files in `incoming` that no live process owns; returns how many (a
    count only: never log a name). Call under the write locks (from `repair_interrupted`)."""
    if not incoming.is_dir():
        return 0
    removed = 0
    for path in incoming.iterdir():
        if path.name.startswith(".") or path.is_symlink() or not path.is_file():
            continue
        try:
            handle = path.open("rb")
        except FileNotFoundError:  # its job finished and removed it meanwhile
            continue
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process's upload
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def api_uploader(request_id: int) -> str:
    return f"{API_UPLOADER}{request_id}"


def _request_lock(warehouse: Warehouse, request_id: int) -> Path:
    return warehouse.root / "requests" / f"{request_id}.lock"


def hold_request(warehouse: Warehouse, request_id: int) -> IO[bytes]:
    """Lock an API request's liveness file (exclusive flock) until `let_go`: call before the
    request row is committed, so that no repair ever sees the row unheld while its job may run."""
    path = _request_lock(warehouse, request_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("ab")
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    return handle


def let_go(held: IO[bytes]) -> None:
    """The request's job has ended: remove its liveness file and release the lock."""
    Path(held.name).unlink(missing_ok=True)
    held.close()


def _request_alive(warehouse: Warehouse, request_id: int) -> bool:
    """Whether a process holds the request's lock; a dead one's file is removed."""
    path = _request_lock(warehouse, request_id)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        path.unlink(missing_ok=True)
    return False


# The columns an API request takes over from the ledger row its job loaded.
MIRRORED: Final = (
    "status",
    "providers",
    "rows_read",
    "rows_accepted",
    "rows_quarantined",
    "rows_superseded",
    "rows_erased",
    "error",
    "finished_at",
)
# Ledger statuses of a load that ended (its outcome is final).
FINISHED: Final = ("loaded", "rejected", "duplicate", "failed")


def mirror(request: Upload, loaded: Upload) -> None:
    """Give an API request the outcome of the ledger row its job loaded."""
    for name in MIRRORED:
        setattr(request, name, getattr(loaded, name))
    request.loaded_as = loaded.id


def loaded_for(session: Session, request_id: int) -> Upload | None:
    """The finished ledger row an API request's job loaded, if there is one."""
    statement = select(Upload).where(
        Upload.uploaded_by == api_uploader(request_id), col(Upload.status).in_(FINISHED)
    )
    return session.exec(statement.order_by(col(Upload.id).desc())).first()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def loaded_upload(session: Session, sha256: str, form: str) -> Upload | None:
    """The earlier upload that loaded this very file for this form, unless a file of the form
    from one of its providers was loaded after it: then the file is sent again after a
    correction, and its records supersede the corrected ones, as any re-sent record does
    (EXTRACT_SPEC.md); otherwise loading it would change nothing."""
    loaded = select(Upload).where(Upload.form == form, Upload.status == "loaded")
    earlier = session.exec(
        loaded.where(Upload.file_sha256 == sha256).order_by(col(Upload.id).desc())
    ).first()
    if earlier is None:
        return None
    providers = set(earlier.providers.split(","))
    for later in session.exec(loaded.where(col(Upload.id) > earlier.id)).all():
        if providers.intersection(later.providers.split(",")):
            return None
    return earlier


def list_uploads(session: Session, limit: int | None = None) -> list[Upload]:
    statement = select(Upload).order_by(col(Upload.id).desc())
    if limit is not None:
        statement = statement.limit(limit)
    return list(session.exec(statement).all())


def repair_interrupted(session: Session, warehouse: Warehouse) -> list[int]:
    """Undo loads left `running` by a dead process, then finish an erasure it left pending
    (`etl.erasure.finish_pending`). Call only while holding `writing()` locks.

    Commits the catalog (the repair must stick even if the caller then fails).
    """
    from etl.erasure import finish_pending  # etl.erasure imports this module

    check_releases_here(session, warehouse.releases_dir)
    _remove_unpublished(session, warehouse)
    stuck = session.exec(select(Upload).where(Upload.status == "running")).all()
    repaired: list[int] = []
    now = datetime.now(UTC)
    for upload in stuck:
        assert upload.id is not None
        warehouse.restore_before(upload.id)
        _fail(upload, now, *_interrupted(session, upload, warehouse))
        session.add(upload)
        repaired.append(upload.id)
        request = _request_of(session, upload)
        if request is not None and request.status in ("pending", LOADING):
            _fail(request, now, upload.error or INTERRUPTED, upload.rows_erased)
            session.add(request)
    waiting = select(Upload).where(col(Upload.status).in_(("pending", LOADING)))
    abandoned = [
        r for r in session.exec(waiting).all() if not _request_alive(warehouse, cast(int, r.id))
    ]
    for request in abandoned:
        assert request.id is not None
        # A job that died after its load finished, before it told its request: the outcome stands.
        loaded = loaded_for(session, request.id)
        if loaded is not None:
            mirror(request, loaded)
        else:
            _fail(request, now)
        session.add(request)
    if repaired or abandoned:
        session.commit()
    # After the commit: a request is failed before its file goes. Also a file whose process died
    # before its request row was committed (no row names it).
    remove_unowned_incoming(incoming_dir(warehouse))
    # After the restores: they read the Delta history that the erasure's clean-up removes.
    if finish_pending(session, warehouse):
        # The erasure's process died before its own checkpoint: the write-ahead log may still
        # hold its patients' pages as they were (a withheld file name).
        checkpoint_catalog(session)
    return repaired


def check_releases_here(session: Session, releases_dir: Path) -> None:
    """Refuse to work when the catalog's releases lie outside this data directory's releases/:
    a manifest names its files by absolute path, so in a data directory copied or moved
    elsewhere (a restored backup beside the original) an erasure would delete the original's
    files and write into its warehouse, and a repair remove its release directories; a reader
    (the API, `kvarus indicators`) would serve the original's rows, or fail on files that are
    gone."""
    here = releases_dir.resolve()
    for path in session.exec(select(Release.manifest_path)).all():
        if not Path(path).resolve().is_relative_to(here):
            raise ConfigurationError(
                "the catalog's releases lie outside this data directory's releases/: was the "
                "data directory copied or moved? Releases name their files by absolute path, "
                "so it is used only where it was made"
            )


def _remove_unpublished(session: Session, warehouse: Warehouse) -> None:
    """Delete the release directories the catalog does not know. Under the write locks no publish
    is between writing its manifest and committing its row, so such a directory is one that never
    will be: never served, its number taken from the next release (`etl.release._next_number`)."""
    known = set(session.exec(select(Release.number)).all())
    for path in warehouse.releases_dir.glob("*"):
        if path.name.isdigit() and int(path.name) not in known and path.is_dir():
            shutil.rmtree(path)


def _interrupted(session: Session, upload: Upload, warehouse: Warehouse) -> tuple[str, int]:
    """An interrupted load's message and its rows erased. An opt-out's erasure was committed if
    an erasure row was added after the load started: the load held the write locks from then on
    until it died, and every writer after it repairs before it adds anything. Not committed, its
    deletes still stand: counted from its marker, as its log row will be (`finish_pending`)."""
    from etl.erasure import rows_deleted_pending  # etl.erasure imports this module

    if upload.form != Form.OPTOUT.value:
        return INTERRUPTED, 0
    statement = select(Erasure).where(col(Erasure.performed_at) >= upload.started_at)
    erasure = session.exec(statement).first()
    if erasure is None:
        return OPTOUT_INTERRUPTED, rows_deleted_pending(warehouse)
    return OPTOUT_ERASED, sum(erasure.rows_erased.values())


def _fail(upload: Upload, now: datetime, error: str = INTERRUPTED, rows_erased: int = 0) -> None:
    upload.status = "failed"
    upload.error = error
    upload.rows_accepted = upload.rows_quarantined = upload.rows_superseded = 0
    upload.rows_erased = rows_erased
    upload.finished_at = now


def request_id_of(uploaded_by: str) -> int | None:
    """The id of the API request whose job loaded a ledger row with this `uploaded_by`, if any."""
    number = uploaded_by.removeprefix(API_UPLOADER)
    if number == uploaded_by or not number.isdigit():
        return None
    return int(number)


def _request_of(session: Session, upload: Upload) -> Upload | None:
    """The API request whose job loaded `upload`, if it was loaded through the API."""
    request_id = request_id_of(upload.uploaded_by)
    return None if request_id is None else session.get(Upload, request_id)


def abandoned_requests(session: Session, warehouse: Warehouse) -> bool:
    """Whether an API upload request is `pending` or `loading` with no live process holding it
    (its job died with its server). Takes no write lock: a service asks it at start-up, and
    then `repair`s (which checks again, under the locks)."""
    waiting = select(Upload.id).where(col(Upload.status).in_(("pending", LOADING)))
    return any(not _request_alive(warehouse, cast(int, i)) for i in session.exec(waiting).all())


def repair(session: Session, warehouse: Warehouse) -> list[int]:
    """Take the write locks and repair interrupted loads (for a service or CLI at start-up)."""
    with warehouse.writing():
        return repair_interrupted(session, warehouse)


def sweep_incoming(
    data_dir: Path, *, older_than: timedelta | None = STALE_INCOMING, now: datetime | None = None
) -> list[Path]:
    """Delete upload files left in `data_dir/incoming` (raw extracts: pseudonyms, health data).

    `older_than=None` deletes every file: for start-up, before any load can be running. Otherwise
    only files not modified for `older_than`. Returns the deleted paths (for a count in a log:
    the names are random, never a patient's).
    """
    incoming = data_dir / INCOMING_DIR
    if not incoming.is_dir():
        return []
    moment = (now if now is not None else datetime.now(UTC)).timestamp()
    deleted: list[Path] = []
    for path in sorted(incoming.iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            age = moment - path.stat().st_mtime
        except FileNotFoundError:  # its load finished and removed it meanwhile
            continue
        if older_than is None or age > older_than.total_seconds():
            path.unlink(missing_ok=True)
            deleted.append(path)
    return deleted


def checkpoint_catalog(session: Session) -> None:
    """After an erasure's commit: on SQLite, move the write-ahead log into the database and
    truncate it (its frames hold the pages as they were, withheld file names included; the
    database zeroes what it frees, `secure_delete`). Best effort: a reader holding an old snapshot
    keeps the frames it reads until the next checkpoint."""
    bind = session.get_bind()
    if bind.dialect.name != "sqlite" or not isinstance(bind, Engine):
        return
    with bind.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
