"""Opt-out: physical erasure of every record of a patient, logged without the pseudonym.

Steps, holding the warehouse's write locks:
1. re-key the source pseudonyms (the keys only live in memory);
2. per table (every stored form and the quarantine), delete the patients' rows with
   `merge(source=pa.table({"patient_key": keys}), "t.patient_key = s.patient_key")
   .when_matched_delete()`: a literal predicate would write the key into the Delta log;
3. releases whose files hold one of the keys (looked up in the files, with DuckDB) are marked
   `retired`. If the release in service was one of them, a replacement noted "rebuilt after
   erasure" is published: that release without the patients (its files that hold them copied
   without them, `Warehouse.copy_without`), not the current tables, which may hold loads that
   staff have not published (its indicators are computed at the edge:
   `service.publishing.ensure_indicators`). The log's `releases_rebuilt` reads "1,2->3" (1 and 2
   retired, 3 the replacement), or "1" (retired; the release in service held none of them).
   We do not rewrite an old release in place: a release is immutable, and a rewritten one would
   silently change its published numbers; retiring it is honest and leaves its manifest (paths and
   counts, no record) as the record of what was published.
4. the catalog is COMMITTED (retirements, the replacement, the withheld upload names, the log row
   `schemas.catalog.Erasure`: date, provider and row counts per table) before any file is deleted:
   a process killed while deleting must not leave a release in service whose files are gone.
5. `finish_pending` removes the deleted rows' record ids from the stored quality reports
   (`failing_record_ids`, from the marker) and commits, then deletes the files: the retired
   releases' `indicators.parquet` (computed from the erased records), and every data file no
   longer referenced (by the current table version or by a non-retired release): Delta's
   `vacuum(retention_hours=0, enforce_retention_duration=False,
   full=True, dry_run=True)` lists them, and we delete its list minus the files of non-retired
   releases (Delta's own `keep_versions` would need the older log files removed next). Then
   `create_checkpoint()` and `cleanup_metadata()`: with `delta.logRetentionDuration` 0 (set by
   `Warehouse.ensure`) every log JSON before the checkpoint is deleted; the older ones hold the
   `add` actions (and statistics) of the removed files. Afterwards we verify that no log JSON older
   than the checkpoint remains.

Crash safety: a marker file (`PENDING`, under the warehouse root) is written and synced before the
first delete, rewritten after each, and removed when step 5 is done. It holds no pseudonym or key,
only the (form, upload, record id, provider) of the rows to be erased, which the quality reports
name (once the rows are deleted nothing else could tell which ids to scrub), the erasure's log
row with the rows deleted so far, the numbers of the releases in service that hold the
patients (found before the first delete) and, per table, its rows of the patients and its
version before the deletes (a delete that committed before the marker said so is counted).
Every writer repairs first under the write locks (`etl.ledger.repair_interrupted`), and the
repair scrubs the reports and runs step 5 again while the marker is there (each part is
idempotent). A process killed after step 4 thus leaves an
erasure that the next writer completes; one killed before it: the repair retires the releases
the marker names (no longer served; step 5 then deletes their results and the files no other
release lists) and logs the erasure's row from the marker (`RETIRED_BY_REPAIR`, with the rows it
deleted; `NOT_REBUILT` for a marker of an earlier version, which names no releases), deletes
the rows the marker names that are still in the tables (by record id; a marker of an earlier
version names no tables, and then the tables may still hold some), and warns on stderr: no
release is rebuilt without the patients (that needs their keys, which only ever live in memory),
so a release must be published, and the erasure run again for what the marker could not name
(quarantined rows without a record id; all of its rows for a marker of an earlier version).
A kill before the deletes scrubs ids of rows that stay: a report then names fewer failing rows
than it counts, never more.
"""

import json
import logging
import os
import re
from dataclasses import astuple, dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Final, cast

import pyarrow as pa
from sqlmodel import Session, col, or_, select

from etl.keycheck import check_key
from etl.ledger import checkpoint_catalog, repair_interrupted
from etl.privacy import rekey
from etl.release import BeforeCommit, publish_locked
from etl.warehouse import QUARANTINE, TABLES, Warehouse, schema_of
from schemas.catalog import ApiClient, Erasure, Release, Upload, ValidationRun, utcnow
from schemas.errors import KvarusError, RejectedInput
from schemas.forms import PATIENT_KEY_COLUMN, Form
from schemas.manifest import ReleaseManifest, TableSnapshot
from schemas.scratch import duckdb_connection

REBUILT_NOTE = "rebuilt after erasure"
# The log's `releases_rebuilt` of an erasure killed before its commit (logged by the repair).
NOT_REBUILT = (
    "none: interrupted before its commit; a release may still hold the patients: run it again"
)
# Appended to the releases a repair retired for an erasure killed before its commit ("1,2" + it).
RETIRED_BY_REPAIR = (
    ": retired by the repair, the erasure interrupted before its commit; run it again, then "
    "publish a release"
)
# An upload's file name that held an erased patient's pseudonym.
NAME_ERASED = "(name withheld: it held an erased patient's pseudonym)"
# Any other stored free text that held one (an uploader, a release's note or publisher, a key's
# name, an earlier erasure's performer).
TEXT_ERASED = "(withheld: it held an erased patient's pseudonym)"
# A release's indicator results beside its manifest (`indicators.results.RESULTS_FILE`; etl does
# not import indicators/). A retired release's results go with it: they were computed from the
# erased patients' records. `service.publishing.ensure_indicators` computes the replacement's.
INDICATORS_FILE = "indicators.parquet"
# Under the warehouse root while an erasure's files may still need deleting (module docstring).
PENDING = "erasure.pending"

# A repair's warning (`_log_uncommitted`); no handler configured: Python prints it on stderr.
log = logging.getLogger("kvarus.erasure")


class ErasureIncomplete(KvarusError):
    title = "Erasure incomplete"
    type_slug = "erasure-incomplete"


def erase_patients(
    source_pseudonyms: list[str],
    *,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    releases_dir: Path,
    provider_orgnr: str | None = None,
    optout_date: date | None = None,
    performed_by: str = "cli",
    locked: bool = False,
    before_commit: BeforeCommit | None = None,
) -> Erasure:
    """Erase every record of these patients; returns the log row.

    COMMITS the catalog (the log row, the retired releases, the replacement, and whatever else
    `session` holds) before it deletes any file, and so before the write locks are released: a
    writer that takes the locks next (a publish, another erasure) must find the replacement
    release, or it would not retire it, nor keep its files.

    `locked=True` when the caller already holds `warehouse.writing()` (loading an optout file);
    the caller's `running` upload row is committed with the erasure, unchanged.
    `before_commit(manifest)` runs under the locks for the replacement release, if one is published
    (the service computes its indicators there; it must not raise: the erasure would fail).
    A key other than the register's (`etl.keycheck`) raises `ConfigurationError` before anything
    is read or written: under it the patients' keys match none of their rows.
    """
    check_key(warehouse.root, key)
    pseudonyms = sorted({p for p in source_pseudonyms if p})
    if not pseudonyms:
        raise RejectedInput("No pseudonym given to erase")
    if locked:
        return _erase(
            pseudonyms, warehouse, session, key, releases_dir, provider_orgnr, optout_date,
            performed_by, before_commit,
        )  # fmt: skip
    with warehouse.writing():
        repair_interrupted(session, warehouse)
        erasure = _erase(
            pseudonyms, warehouse, session, key, releases_dir, provider_orgnr, optout_date,
            performed_by, before_commit,
        )  # fmt: skip
    checkpoint_catalog(session)
    return erasure


def _erase(
    pseudonyms: list[str],
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    releases_dir: Path,
    provider_orgnr: str | None,
    optout_date: date | None,
    performed_by: str,
    before_commit: BeforeCommit | None,
) -> Erasure:
    keys = rekey(pa.array(pseudonyms, pa.string()), key)
    records, found = _records_of(warehouse, keys)
    erasure = Erasure(
        optout_date=datetime.combine(optout_date, time(), tzinfo=UTC) if optout_date else None,
        provider_orgnr=provider_orgnr,
        patients=len(pseudonyms),
        rows_erased={},
        releases_rebuilt=NOT_REBUILT,
        performed_by=performed_by,
    )
    # Nothing reaches the catalog until `before_commit` (the indicators, tens of seconds on a
    # large register) is done: a flushed change opens SQLite's write transaction, and every other
    # catalog writer (the audit, upload requests, other processes) would wait for it and time out.
    with session.no_autoflush:
        served = select(Release).where(col(Release.retired).is_(False))
        releases = session.exec(served.order_by(col(Release.number))).all()
        # Found before the first delete and kept in the marker: a repair, which has no keys,
        # retires them if this process dies before its commit.
        holding = [
            release.number
            for release in releases
            if _holds_patients(ReleaseManifest.read(Path(release.manifest_path)), keys)
        ]
    # Each table's rows of the patients and its version before the deletes: a repair counts
    # the rows of a table whose delete committed before the marker could say so.
    planned = {"rows": found, "versions": warehouse.versions()}
    _mark_pending(warehouse, records, erasure, holding, planned)
    for table in TABLES:
        erasure.rows_erased = {**erasure.rows_erased, table: warehouse.delete_patients(table, keys)}
        _mark_pending(warehouse, records, erasure, holding, planned)  # deleted rows stay deleted

    with session.no_autoflush:
        # The reports are scrubbed by `finish_pending`, from the marker, after the commit.
        _withhold_names(session, pseudonyms)
        retired: list[int] = []
        for release in releases:
            if release.number in holding:
                release.retired = True
                session.add(release)
                retired.append(release.number)

        erasure.releases_rebuilt = ",".join(map(str, retired))
        if retired and retired[-1] == releases[-1].number:
            # The release in service held them: its replacement is it without them.
            latest = ReleaseManifest.read(Path(releases[-1].manifest_path))
            manifest = publish_locked(
                warehouse, releases_dir, session, REBUILT_NOTE, performed_by, before_commit,
                tables=_without_patients(warehouse, latest, keys),
            )  # fmt: skip
            erasure.releases_rebuilt += f"->{manifest.release}"
        erasure.performed_at = utcnow()  # after the marker's: the repair tells them apart
        session.add(erasure)
    session.commit()  # step 4: before any file is deleted
    finish_pending(session, warehouse)
    return erasure


def finish_pending(session: Session, warehouse: Warehouse) -> bool:
    """Delete what an erasure that began left on disk (step 5 of the module docstring), if its
    marker is there; True if it was. Call holding the write locks, with the catalog committed.

    Works from the committed catalog, not from the erasure's own state (the process that began it
    may be dead): retired releases lose their results, non-retired ones keep their files.
    """
    marker = warehouse.root / PENDING
    marker.with_name(f"{PENDING}.new").unlink(missing_ok=True)  # a rewrite killed half-way
    pending = _pending(warehouse)
    if pending is None:
        return False
    # The reports name the rows by id: scrubbed from the marker, never from the tables (an
    # erasure killed before its commit deleted the rows, and a rerun would find none to scrub).
    records = [_Record(*row) for row in pending["records"]]
    _scrub_reports(session, records)
    if "erasure" in pending:
        erasure = _marked_erasure(warehouse, pending)
        _log_uncommitted(session, erasure, pending.get("holding"), warehouse, records)
    session.commit()
    keep: set[str] = set()
    for release in session.exec(select(Release)).all():
        path = Path(release.manifest_path)
        if release.retired:
            (path.parent / INDICATORS_FILE).unlink(missing_ok=True)
        else:
            manifest = ReleaseManifest.read(path)
            keep |= {f for snapshot in manifest.tables.values() for f in snapshot.files}
    for table in TABLES:
        _purge(warehouse, table, keep)
    marker.unlink()
    return True


def _delete_marked(warehouse: Warehouse, records: list["_Record"]) -> dict[str, int]:
    """Delete the marker's rows still in the tables (an erasure killed between its deletes),
    per table; the rows deleted. Exact: nothing wrote since the marker was (the write locks),
    a form's record id names one row, and the quarantine's rows are found by form, upload and
    record id, as a load releases them."""
    deleted: dict[str, int] = {}
    for table in TABLES:
        rows = [r for r in records if r.table == table]
        if not rows:
            continue
        if table == QUARANTINE:
            count = 0
            for form in sorted({r.form for r in rows}):
                versions = [(r.record_id, r.upload_id) for r in rows if r.form == form]
                count += warehouse.release_quarantined(Form(form), versions, upload_id=None)
        else:
            count = warehouse.delete_records(table, [r.record_id for r in rows])
        if count:
            deleted[table] = count
    return deleted


def _pending(warehouse: Warehouse) -> dict[str, Any] | None:
    """The marker's contents (`_mark_pending`), None without one."""
    marker = warehouse.root / PENDING
    if not marker.exists():
        return None
    pending = json.loads(marker.read_text() or "[]")
    if isinstance(pending, list):  # the marker of an earlier version: the records alone
        return {"records": pending}
    return cast(dict[str, Any], pending)


def rows_deleted_pending(warehouse: Warehouse) -> int:
    """The rows the erasure of the marker deleted (0 without one), with those the repair
    deletes for it (`_delete_marked`: the rows the marker names in the tables whose delete had
    not run), as its log row will count them: an opt-out load killed before its erasure's commit
    counts them as erased."""
    pending = _pending(warehouse)
    if pending is None or "erasure" not in pending:
        return 0
    erased = _marked_erasure(warehouse, pending).rows_erased
    records = [_Record(*row) for row in pending["records"]]
    left = sum(1 for r in records if r.table is not None and r.table not in erased)
    return sum(erased.values()) + left


def _marked_erasure(warehouse: Warehouse, pending: dict[str, Any]) -> Erasure:
    """The marker's erasure, its rows deleted counted also for a table whose delete committed
    before the marker was rewritten (the table's version moved on since the marker's
    `versions`: nothing else writes under the locks; a marker of an earlier version has no
    such record, and its count may fall short by that table's rows)."""
    erasure = Erasure.model_validate(pending["erasure"])
    planned = pending.get("planned") or {}
    versions = planned.get("versions", {})
    for table, rows in planned.get("rows", {}).items():
        moved = table in versions and warehouse.version(table) > versions[table]
        if table not in erasure.rows_erased and moved:
            erasure.rows_erased = {**erasure.rows_erased, table: rows}
    return erasure


def _log_uncommitted(
    session: Session,
    erasure: Erasure,
    holding: list[int] | None,
    warehouse: Warehouse,
    records: list["_Record"],
) -> None:
    """Log the marker's erasure if it was killed before its commit: its deletes stand (they are
    never undone), so its rows are counted, and the releases that held its patients
    (`holding`, found before its first delete) are retired, no longer served, as the erasure
    would have (`RETIRED_BY_REPAIR`; a marker of an earlier version holds no such list:
    `NOT_REBUILT`). No release is rebuilt without them (that needs the keys, which only ever
    live in memory): a warning on stderr asks for the erasure to be run again and a release
    published. Its row, committed, would be the first after the marker's (the row's time is
    taken after).

    The rows it had not yet deleted are deleted here, by the record ids the marker names (a
    marker of an earlier version names no table: then not): a release published before the
    erasure is run again would hold them otherwise. A quarantined row without a record id is
    named by none (its values hold the patient's key, which the marker never does): it stays
    until the erasure is run again (the quarantine is in no release)."""
    begun = select(Erasure).where(col(Erasure.performed_at) >= erasure.performed_at)
    if session.exec(begun).first() is not None:
        return
    deleted = _delete_marked(warehouse, records)
    erasure.rows_erased = {
        table: erasure.rows_erased.get(table, 0) + deleted.get(table, 0)
        for table in TABLES
        if table in erasure.rows_erased or table in deleted
    }
    retired = []
    for number in holding or ():
        release = session.get(Release, number)
        if release is not None and not release.retired:
            release.retired = True
            session.add(release)
            retired.append(number)
    if retired:
        erasure.releases_rebuilt = ",".join(map(str, retired)) + RETIRED_BY_REPAIR
    session.add(erasure)
    unserved = ""
    if retired:
        numbers = ", ".join(map(str, retired))
        unserved = f", and release(s) {numbers} that held its patients are no longer served"
    log.warning(
        "Warning: an erasure was interrupted before it finished; its deleted rows stay deleted%s. "
        "Run it again (kvarus erase, or send the opt-out file again), then publish a release "
        "(kvarus release).",
        unserved,
    )


def _mark_pending(
    warehouse: Warehouse,
    records: list["_Record"],
    erasure: Erasure,
    holding: list[int],
    planned: dict[str, dict[str, int]],
) -> None:
    """(Re)write the marker with the records to be erased, the erasure's log row (its time,
    the rows deleted so far), the releases that hold its patients and, per table, the rows to
    delete and its version before the deletes (`_marked_erasure`), synced to disk with its
    directory, before the first delete and after each: the catalog commit that follows is
    durable, and a lost marker would leave the files unpurged, the reports unscrubbed and an
    erasure killed before its commit unlogged.
    Replaced atomically: a kill while writing leaves the previous marker."""
    marker = warehouse.root / PENDING
    pending = {
        "records": [astuple(record) for record in records],
        "erasure": erasure.model_dump(mode="json", exclude={"id"}),
        "holding": holding,
        "planned": planned,
    }
    written = marker.with_name(f"{PENDING}.new")
    with written.open("w", encoding="utf-8") as handle:
        json.dump(pending, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(written, marker)
    directory = os.open(warehouse.root, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass(frozen=True)
class _Record:
    """One erased row as the quality reports name it: form, upload and record id (and provider)."""

    form: str
    upload_id: int
    record_id: str
    provider: str | None
    # The table that holds the row (a form's or the quarantine); None in the marker of an
    # earlier version, which did not say.
    table: str | None = None


def _records_of(warehouse: Warehouse, keys: pa.Array) -> tuple[list[_Record], dict[str, int]]:
    """The rows of these patients in the current tables (and quarantine), before they go, and
    their number per table."""
    records: list[_Record] = []
    found: dict[str, int] = {}
    with duckdb_connection() as connection:
        connection.register("erased", pa.table({PATIENT_KEY_COLUMN: keys}))
        for table in TABLES:
            names = schema_of(table).names
            files = warehouse.files(table)
            if PATIENT_KEY_COLUMN not in names or "record_id" not in names or not files:
                continue
            quarantined = table == QUARANTINE
            own = "form, upload_id, record_id, values"
            columns = own if quarantined else "upload_id, record_id, provider_orgnr"
            rows = connection.sql(
                # The SQL holds only constants of ours; the keys are a registered table.
                f"SELECT {columns} FROM read_parquet($files, hive_partitioning=true) AS t "  # noqa: S608
                f"SEMI JOIN erased AS s USING ({PATIENT_KEY_COLUMN})",
                params={"files": files},
            ).fetchall()
            found[table] = len(rows)
            for row in rows:
                if quarantined:
                    form, upload_id, record_id, values = row
                    provider = json.loads(values).get("provider_orgnr")
                else:
                    (upload_id, record_id, provider), form = row, table
                if record_id is not None:
                    records.append(_Record(form, int(upload_id), str(record_id), provider, table))
    return records, found


def _scrub_reports(session: Session, records: list[_Record]) -> None:
    """Remove the erased records' ids from the stored quality reports (`failing_record_ids`).

    From the report of the upload that stored the row, and from the reports of the same form of
    the uploads of the row's provider (an earlier version of the record, superseded by a re-sent
    one, was erased from the tables then, but its report still names it). From a rejected
    upload's report, every erased record's id, of any form and provider: nothing of the file was
    stored, so which of its rows were the patient's is not known. The counts stay: they
    describe the file as it was validated, and name no one.
    """
    if not records:
        return
    forms = {r.form for r in records}
    statement = (
        select(ValidationRun, Upload)
        .join(Upload, col(Upload.id) == col(ValidationRun.upload_id))
        .where(or_(col(ValidationRun.form).in_(forms), col(Upload.status) == "rejected"))
    )
    for run, upload in session.exec(statement).all():
        providers = set(upload.providers.split(","))
        ids = {
            r.record_id
            for r in records
            if upload.status == "rejected"
            or (r.form == run.form and (r.upload_id == run.upload_id or r.provider in providers))
        }
        checks = run.report.get("checks")
        if not ids or not isinstance(checks, list):
            continue
        scrubbed: list[object] = []
        changed = False
        for check in checks:
            failing = check.get("failing_record_ids") if isinstance(check, dict) else None
            if isinstance(failing, list) and ids.intersection(failing):
                check = {**check, "failing_record_ids": [i for i in failing if i not in ids]}
                changed = True
            scrubbed.append(check)
        if changed:
            run.report = {**run.report, "checks": scrubbed}  # a new value: JSON is not tracked
            session.add(run)


# The catalog's stored free text (`_withhold_names`): model, field, what replaces a held value.
_FREE_TEXT: Final[tuple[tuple[Any, str, str], ...]] = (
    (Upload, "filename", NAME_ERASED),
    (Upload, "uploaded_by", TEXT_ERASED),
    (Release, "note", TEXT_ERASED),
    (Release, "published_by", TEXT_ERASED),
    (ApiClient, "name", TEXT_ERASED),
    (Erasure, "performed_by", TEXT_ERASED),
)


def _withhold_names(session: Session, pseudonyms: list[str]) -> None:
    """Withhold every stored free text that holds one of the erased source pseudonyms (any case):
    an upload's file name (a file named after its patient) and uploader, a release's note and
    publisher (in the catalog and its manifest, which `GET /releases` shows to anyone), an API
    key's name, an earlier erasure's performer. Typed by people, they may name a patient by the
    pseudonym the register erases. A short pseudonym may withhold texts that merely contain it:
    the cheaper error."""
    pattern = re.compile("|".join(map(re.escape, pseudonyms)), re.IGNORECASE)

    def held(text: str | None) -> bool:
        return text is not None and pattern.search(text) is not None

    for model, name, withheld in _FREE_TEXT:
        for row in session.exec(select(model)).all():
            if not held(getattr(row, name)):
                continue
            setattr(row, name, withheld)
            session.add(row)
            if isinstance(row, Release) and name == "note":
                path = Path(row.manifest_path)
                if path.exists():
                    manifest = ReleaseManifest.read(path)
                    manifest.note = withheld
                    rewritten = path.with_name(f"{path.name}.new")
                    manifest.write(rewritten)
                    os.replace(rewritten, path)


def _holds_patients(manifest: ReleaseManifest, keys: pa.Array) -> bool:
    """Whether a release's files hold any of the keys (or some of its files are gone already).

    Looking into the files, rather than at which files this erasure rewrote, also catches a
    release left behind by an earlier erasure of the same patient that was interrupted.
    """
    files = [f for snapshot in manifest.tables.values() for f in snapshot.files]
    if any(not Path(f).exists() for f in files):
        return True
    with duckdb_connection() as connection:
        connection.register("erased", pa.table({PATIENT_KEY_COLUMN: keys}))
        return any(_holding(connection, s) for s in manifest.tables.values())


def _holding(connection: Any, snapshot: TableSnapshot) -> set[str]:
    """The files of a table that hold a row of the keys registered as `erased`."""
    if not snapshot.files or PATIENT_KEY_COLUMN not in schema_of(snapshot.name).names:
        return set()
    rows = connection.sql(
        # The SQL holds only our column-name constant; the keys are a registered table.
        f"SELECT DISTINCT filename FROM read_parquet($files, filename=true) AS t "  # noqa: S608
        f"SEMI JOIN erased AS s USING ({PATIENT_KEY_COLUMN})",
        params={"files": snapshot.files},
    ).fetchall()
    return {row[0] for row in rows}


def _without_patients(
    warehouse: Warehouse, manifest: ReleaseManifest, keys: pa.Array
) -> dict[str, TableSnapshot] | None:
    """A release's tables without these patients' rows: each file that holds none is listed as
    it is, each that holds some is copied without them (`Warehouse.copy_without`). Not the
    current tables: they may hold loads that staff have not published. None (then the current
    tables are published) if some file of the release is gone (an earlier erasure's purge)."""
    if any(not Path(f).exists() for s in manifest.tables.values() for f in s.files):
        return None
    tables: dict[str, TableSnapshot] = {}
    with duckdb_connection() as connection:
        connection.register("erased", pa.table({PATIENT_KEY_COLUMN: keys}))
        for name, snapshot in manifest.tables.items():
            held = _holding(connection, snapshot)
            if not held:
                tables[name] = snapshot
                continue
            files = [warehouse.copy_without(f, keys) if f in held else f for f in snapshot.files]
            tables[name] = snapshot.model_copy(
                update={"files": files, "row_count": warehouse.count(name, files)}
            )
    return tables


def _purge(warehouse: Warehouse, table: str, keep: set[str]) -> None:
    """Delete unreferenced files (except those of non-retired releases) and the old log."""
    delta = warehouse.delta(table)
    root = warehouse.path(table).resolve()
    candidates = delta.vacuum(
        retention_hours=0, enforce_retention_duration=False, dry_run=True, full=True
    )
    for candidate in candidates:
        path = Path(candidate) if Path(candidate).is_absolute() else root / candidate
        if str(path.resolve()) not in keep:
            path.unlink(missing_ok=True)
    delta.create_checkpoint()
    delta.cleanup_metadata()
    checkpoint = int(delta.version())
    log = warehouse.path(table) / "_delta_log"
    stale = [p.name for p in log.glob("*.json") if int(p.stem) < checkpoint]
    if stale:
        raise ErasureIncomplete(
            f"Table '{table}': {len(stale)} log file(s) older than the checkpoint remain"
        )
