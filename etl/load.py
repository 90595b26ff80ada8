"""Load one extract file into the warehouse, with its ledger row and validation report.

Steps: sha256 → an identical file (hash + form) already loaded is recorded as `duplicate` and
changes nothing → `read_extract` → privacy guard → `validate_extract` (a fatal check → `rejected`,
nothing written but the ledger row and its report) → the typed table (the suite's own `normalise`
result, `ValidationResult.typed`: typing 1M rows twice cost seconds) → rows with a row-level error
(the suite's `row_failures` and `cross_record.check` against the warehouse) go to quarantine with
check and reason; the accepted rows get `patient_key` (HMAC of the pseudonym; the pseudonym itself
is never written anywhere), `year` and `upload_id` and are merged into their form's table. The
upload's stored report lists the warehouse checks' failures beside the suite's, and its
`quarantined_rows` is the ledger's. A record sent again (same record_id and provider) replaces
its earlier quarantine rows, whether it is stored or quarantined again. Follow-on rows held for
their intake (`cross.no_intake`) are stored when a basis file brings it: they then count as
accepted, no longer quarantined, in the ledger row and report of the upload that sent them. An
`optout` file is not stored: its patients are erased (`etl.erasure`), every patient of the file,
also on a row that fails a row-level check (a missing or impossible optout_date, a malformed
provider_orgnr, no record_id): an opt-out is the patient's right, and erasing is the safe side.
Such rows are counted as quarantined, not accepted, and the upload's validation report names them
by record_id and check, as any load's row failures; but no quarantine row is written (it would be
the erased patient's, by `patient_key`). A row without a pseudonym erases nothing.

Atomicity protocol (a load commits fully or leaves no trace, even under SIGKILL):
1. Reading and validation touch nothing. A rejected file gets its ledger row (`rejected`) through
   the caller's transaction; no Delta table is touched.
2. The loader takes the warehouse's write locks (`Warehouse.writing()`: flock on every table's lock
   file, so one writer at a time, across threads and processes; the kernel drops the locks of a
   dead process).
3. Holding the locks, it repairs first: any ledger row still `running` belongs to a dead load (a
   live one would hold the locks), so its Delta commits are undone (`DeltaTable.restore` to the
   version before its first commit; each of our commits carries `kvarus.upload_id` in its commit
   metadata) and it is marked `failed`.
4. It inserts its own ledger row as `running` and COMMITS the catalog (the one place inner code
   commits: the row must be visible to a later repair), then writes its Delta commits (each atomic).
5. One catalog transaction marks the row `loaded` with its counts and stores the validation run.
   A kill before 5 leaves a `running` row that step 3 of the next writer repairs; a kill after 5
   leaves a finished load. The repair also deletes the Parquet files of the undone commits and of a
   commit that never happened (`Warehouse.restore_before`).
"""

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import update
from sqlmodel import Session, col, or_, select

from etl.keycheck import check_key
from etl.ledger import (
    NOT_KEPT,
    checkpoint_catalog,
    file_sha256,
    loaded_upload,
    repair,
    repair_interrupted,
    request_id_of,
)
from etl.privacy import guard, rekey, safe_filename
from etl.read import Extract, Received, read_extract
from etl.release import BeforeCommit
from etl.warehouse import (
    QUARANTINE,
    Warehouse,
    quarantine_rows,
    values_table,
)
from schemas.catalog import Upload, ValidationRun
from schemas.errors import KvarusError
from schemas.forms import (
    FORMS,
    ORGNR_PATTERN,
    PATIENT_KEY_COLUMN,
    PSEUDONYM_COLUMN,
    Form,
    extract_schema,
    register_today,
    warehouse_schema,
)
from schemas.parsing import normalise
from schemas.scratch import one_thread
from validation import cross_record, validate_extract
from validation.report import with_warehouse_checks

Progress = Callable[[str, int], None]

NO_INTAKE = "cross.no_intake"
# A re-sent record_id supersedes the stored record (EXTRACT_SPEC.md), but only the provider that
# sent it may correct it: a record_id stored under another provider is quarantined instead.
OTHER_PROVIDER = "record_id.other_provider"
OTHER_PROVIDER_REASON = (
    "record_id is stored under another provider; it cannot supersede that record"
)

FAILURE_SCHEMA = pa.schema(
    [
        ("row_index", pa.int64()),
        ("record_id", pa.string()),
        ("check", pa.string()),
        ("severity", pa.string()),
        ("reason", pa.string()),
    ]
)


class _Validation(Protocol):
    """What the loader uses of `validation.ValidationResult`."""

    @property
    def suite_version(self) -> str: ...
    @property
    def rejected(self) -> bool: ...
    @property
    def rejection_reasons(self) -> list[str]: ...
    @property
    def row_failures(self) -> pa.Table: ...
    @property
    def typed(self) -> pa.Table | None: ...
    def to_report(self) -> dict[str, object]: ...


def load_file(
    path: Extract,
    form: Form,
    *,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    known_providers: frozenset[str],
    uploaded_by: str = "cli",
    today: date | None = None,
    progress: Progress | None = None,
    before_commit: BeforeCommit | None = None,
) -> Upload:
    """Load one file (where it lies, or received by the API and held in memory); returns its
    ledger row (status loaded, rejected or duplicate).

    A key other than the register's (`etl.keycheck`) raises `ConfigurationError` before anything
    is read or written, and leaves no ledger row: the file is not at fault (under the register's
    key it loads), and a `rejected` row would say it is.
    `before_commit`: for an optout file, `erase_patients`' hook for the replacement release (runs
    under the write locks before it is committed: the service computes its indicators there)."""
    check_key(warehouse.root, key)
    _finish_interrupted_erasure(session, warehouse)
    report: Progress = progress if progress is not None else _no_progress
    today = today if today is not None else register_today()
    optout = form is Form.OPTOUT
    if optout:
        sha256 = NOT_KEPT
    else:
        sha256 = path.sha256 if isinstance(path, Received) else file_sha256(path)
    upload = Upload(
        file_sha256=sha256,
        form=form.value,
        filename=NOT_KEPT if optout else safe_filename(path.name),
        uploaded_by=uploaded_by,
    )
    if not optout and loaded_upload(session, sha256, form.value) is not None:
        return _duplicate(session, upload)
    # No catalog transaction stays open through the read and validation (on PostgreSQL it would
    # sit `idle in transaction`, holding its snapshot, and `idle_in_transaction_session_timeout`
    # would end the session). Committed, not rolled back: a rollback would expire the caller's
    # objects and drop what it added; the load commits it at step 4 anyway. `upload` is not in
    # the session yet, so an `expire_on_commit` session expires nothing of the load's.
    if session.in_transaction():
        session.commit()

    # 1. Read and validate: no side effects. Meanwhile another core re-keys the pseudonyms, until
    # the cross-record checks are done; a large file's HMAC loop runs in a child process
    # (`etl.privacy.rekey`), as in a thread it would hold the GIL that the suite wants too (1M
    # basis rows: validation and re-keying 1.5 s one after the other; validation 1.1 s beside
    # the re-keying thread, 0.64 s beside the child). The checks against the warehouse run
    # beside the suite too (`_against_warehouse`), in DuckDB, which does not hold the GIL.
    validation: _Validation | None = None
    keys: Future[pa.Array] | None = None
    ahead: Future[_Checked] | None = None
    background = ThreadPoolExecutor(max_workers=2)

    def check_ahead(typed: pa.Table) -> None:
        nonlocal ahead
        if form not in (Form.OPTOUT, Form.NPR_COUNTS):
            rows = _without_pseudonym(typed)
            ahead = background.submit(_against_warehouse_beside, rows, form, warehouse)

    try:  # not `with`: an early answer (rejected, duplicate) need not wait for the keys
        try:
            raw = read_extract(path, form)
            upload.rows_read = raw.num_rows
            report("read", raw.num_rows)
            guard(raw)  # before anything of the file reaches the ledger
            report("guarded", raw.num_rows)
            if form is not Form.OPTOUT and PSEUDONYM_COLUMN in raw.column_names:
                # The pseudonym is text, which the suite types as itself: raw is typed here.
                keys = background.submit(patient_keys, raw.column(PSEUDONYM_COLUMN), key)
            upload.providers = _providers(raw)
            validation = validate_extract(
                raw, form, known_providers=known_providers, today=today, on_typed=check_ahead
            )
            report("validated", raw.num_rows)
            if validation.rejected:
                reasons = "; ".join(validation.rejection_reasons)
                return _reject(session, upload, reasons, validation)
            typed = _typed(raw, form, validation)
            del raw  # the raw text columns are not needed again: free them before the write
        except KvarusError as error:
            return _reject(session, upload, error.detail, validation)
        except Exception as error:
            # A reader's or validator's own message may quote a value: keep only the error's type.
            detail = f"The file could not be processed ({type(error).__name__}); nothing was stored"
            upload.status = "failed"
            upload.error = detail
            upload.finished_at = datetime.now(UTC)
            session.add(upload)
            session.commit()
            raise LoadFailed(detail) from None

        # 2-5. Write, under the locks.
        with warehouse.writing():
            repair_interrupted(session, warehouse)
            if not optout and loaded_upload(session, sha256, form.value) is not None:
                # The same file finished loading while this one waited for the locks.
                return _duplicate(session, upload)
            upload.status = "running"
            upload.started_at = datetime.now(UTC)
            session.add(upload)
            try:
                # Inside: Ctrl-C as this commit returns leaves a `running` row that the
                # repair below fails at once, not one that waits for the next writer.
                session.commit()  # step 4: the running row must outlive this process
                assert upload.id is not None
                run = _validation_run(upload, validation)
                if form is Form.OPTOUT:
                    _optout(
                        typed, validation, warehouse=warehouse, session=session, key=key,
                        upload=upload, before_commit=before_commit,
                    )  # fmt: skip
                else:
                    stored = _store(
                        typed, validation, form, warehouse=warehouse, keys=keys, ahead=ahead,
                        upload=upload, report=report,
                    )  # fmt: skip
                    run.report = with_warehouse_checks(
                        run.report, stored.failures, quarantined_rows=upload.rows_quarantined
                    )
                    if stored.released:
                        run.report["released"] = _count_released(session, stored.released)
                report("written", upload.rows_accepted)
                upload.status = "loaded"
                upload.finished_at = datetime.now(UTC)
                session.add(upload)
                session.add(run)
                session.commit()  # step 5: the counts of released rows' uploads with it
                if optout:
                    checkpoint_catalog(session)
            except BaseException as error:
                session.rollback()
                if isinstance(error, KeyboardInterrupt) and _loaded(session, upload.id):
                    # Ctrl-C as step 5's commit returned (or in the opt-out's checkpoint): the
                    # load stands, and must not be reported as undone.
                    raise InterruptedAfterLoading(cast(int, upload.id)) from None
                # Undo at once what a kill would leave for the next writer: ours is the only
                # `running` row while we hold the locks.
                repair_interrupted(session, warehouse)
                if isinstance(error, KvarusError) or not isinstance(error, Exception):
                    raise
                # A storage engine's message may quote a record value: keep only the error's type.
                detail = (
                    f"The load failed while writing ({type(error).__name__}); nothing was stored"
                )
                upload.error = detail
                session.add(upload)
                session.commit()
                raise LoadFailed(detail) from None
        return upload
    finally:
        background.shutdown(wait=False, cancel_futures=True)


class InterruptedAfterLoading(KeyboardInterrupt):
    """Ctrl-C after the load's final commit: upload `upload_id` is `loaded`, and stays so."""

    def __init__(self, upload_id: int) -> None:
        super().__init__(upload_id)
        self.upload_id = upload_id


def _loaded(session: Session, upload_id: int | None) -> bool:
    """Whether the catalog holds the upload as `loaded` (False when it cannot be asked)."""
    if upload_id is None:
        return False
    try:
        status = session.exec(select(Upload.status).where(Upload.id == upload_id)).first()
    except Exception:
        session.rollback()
        return False
    return status == "loaded"


class LoadFailed(KvarusError):
    """A load that failed after validation; its changes were undone."""

    status = 500
    title = "Load failed"
    type_slug = "load-failed"


def _providers(raw: pa.Table) -> str:
    """The organisation numbers in the file, comma-separated (only well-formed ones: 9 digits)."""
    if "provider_orgnr" not in raw.column_names:
        return ""
    values = pc.unique(raw.column("provider_orgnr").drop_null())
    wellformed = values.filter(pc.match_substring_regex(values, ORGNR_PATTERN))
    return ",".join(sorted(str(p) for p in wellformed.to_pylist()))


def _typed(raw: pa.Table, form: Form, validation: _Validation) -> pa.Table:
    """The file typed as the form's extract schema: the table the suite already typed with
    `normalise` when it hands it over (same function, same input), else typed here."""
    typed = validation.typed
    if typed is not None and typed.schema.equals(extract_schema(form)):
        return typed
    return normalise(raw, form).table


def _finish_interrupted_erasure(session: Session, warehouse: Warehouse) -> None:
    """Repair first if an erasure's marker is there: a load that answers before it takes the
    write locks (a duplicate, a rejected file) would otherwise leave a dead erasure's releases
    served, the patients in them, until another writer came."""
    from etl.erasure import PENDING  # erasure imports this module's neighbours

    if (warehouse.root / PENDING).exists():
        repair(session, warehouse)


def _duplicate(session: Session, upload: Upload) -> Upload:
    upload.status = "duplicate"
    upload.rows_read = 0
    upload.finished_at = datetime.now(UTC)
    session.add(upload)
    session.flush()
    return upload


def _no_progress(step: str, rows: int) -> None:
    return None


def _reject(
    session: Session, upload: Upload, detail: str, validation: _Validation | None
) -> Upload:
    upload.status = "rejected"
    upload.error = detail
    upload.finished_at = datetime.now(UTC)
    session.add(upload)
    session.flush()
    if validation is not None:
        session.add(_validation_run(upload, validation))
        session.flush()
    return upload


def _validation_run(upload: Upload, validation: _Validation) -> ValidationRun:
    return ValidationRun(
        upload_id=upload.id,
        form=upload.form,
        suite_version=validation.suite_version,
        passed=not validation.rejected,
        report=validation.to_report(),
    )


def staged_schema(form: Form) -> pa.Schema:
    """The warehouse schema with every field nullable (rows may still be invalid)."""
    schema = warehouse_schema(form)
    return pa.schema([field.with_nullable(True) for field in schema])


def patient_keys(pseudonyms: pa.ChunkedArray, key: bytes) -> pa.Array:
    """Each row's `patient_key`: the HMAC of each distinct pseudonym once (patients have several
    records), spread over its rows."""
    encoded = pc.dictionary_encode(pseudonyms).combine_chunks()
    return pc.take(rekey(encoded.dictionary, key), encoded.indices)


def stage(typed: pa.Table, form: Form, *, patient_key: pa.Array | None, upload_id: int) -> pa.Table:
    """Typed extract rows → warehouse shape: `patient_key` (of `patient_keys`) for the
    pseudonym, year, upload_id."""
    spec = FORMS[form]
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for name in typed.column_names:
        if name == PSEUDONYM_COLUMN:
            assert patient_key is not None
            columns[PATIENT_KEY_COLUMN] = patient_key
        else:
            columns[name] = typed.column(name)
    if spec.year_column is not None:
        columns["year"] = pc.cast(pc.year(typed.column(spec.year_column)), pa.int32())
    columns["upload_id"] = pa.array(np.full(typed.num_rows, upload_id, dtype=np.int64))
    schema = staged_schema(form)
    return pa.table({name: columns[name] for name in schema.names}).cast(schema)


def _without_pseudonym(typed: pa.Table) -> pa.Table:
    return typed.drop_columns([n for n in typed.column_names if n == PSEUDONYM_COLUMN])


@dataclass(frozen=True)
class _Checked:
    """The errors (FAILURE_SCHEMA, row_index into the rows checked) of `_against_warehouse`, and
    the warehouse files it read, per table: the errors stand while those are the tables' files
    (Delta's data files never change; a commit adds or removes files)."""

    failures: pa.Table
    files: dict[str, list[str]]


def _failures(
    typed: pa.Table,
    form: Form,
    row_failures: pa.Table,
    warehouse: Warehouse,
    ahead: Future[_Checked] | None = None,
) -> tuple[pa.Table, pa.Table, np.ndarray[Any, np.dtype[np.bool_]]]:
    """The row-level errors (FAILURE_SCHEMA) of the suite and of the checks against the
    warehouse (cross-record, another provider's record_id); those of the latter alone (for the
    report: the suite's are in it already); and which rows have one.

    The checks against the warehouse read no `patient_key`, so they run on the typed rows while
    the keys are still being computed; without the pseudonym, which never reaches DuckDB (a
    query may spill to disk). They check the rows that passed the suite: those of `ahead`
    (every row, checked beside the suite) stand when every row passed and the warehouse is as
    they read it.
    """
    failed = row_failures.filter(pc.equal(row_failures.column("severity"), "error"))
    failed = failed.select(FAILURE_SCHEMA.names).cast(FAILURE_SCHEMA)
    bad = np.zeros(typed.num_rows, dtype=bool)
    bad[failed.column("row_index").to_numpy()] = True
    if form is Form.NPR_COUNTS or bad.all():
        return failed, FAILURE_SCHEMA.empty_table(), bad
    candidates_index = np.flatnonzero(~bad)
    checked = _still_current(ahead, warehouse) if failed.num_rows == 0 else None
    if checked is None:
        incoming = _without_pseudonym(typed)
        candidates = incoming if not bad.any() else incoming.take(pa.array(candidates_index))
        checked = _against_warehouse(candidates, form, warehouse)
    cross = checked.failures
    if cross.num_rows > 0:
        original = candidates_index[cross.column("row_index").to_numpy()]
        cross = cross.set_column(
            cross.schema.get_field_index("row_index"), "row_index", pa.array(original)
        )
        failed = pa.concat_tables([failed, cross])
        bad[original] = True
    return failed, cross, bad


def _against_warehouse(rows: pa.Table, form: Form, warehouse: Warehouse) -> _Checked:
    """The errors of rows (typed, without the pseudonym) against the stored tables: those of
    `validation.cross_record.check` (warnings quarantine nothing), and a record_id stored under
    another provider."""
    tables = {stored.value for stored in cross_record.EXISTING_COLUMNS} | {form.value}
    files = {table: warehouse.files_if_any(table) for table in sorted(tables)}
    cross = _cross_check(rows, form, warehouse, files)
    other = warehouse.stored_under_other_provider(form, rows, files[form.value])
    failures = pa.concat_tables(
        [
            cross.select(FAILURE_SCHEMA.names).cast(FAILURE_SCHEMA),
            _other_provider_failures(rows, other.to_numpy(zero_copy_only=False)),
        ]
    )
    return _Checked(failures, files)


def _against_warehouse_beside(rows: pa.Table, form: Form, warehouse: Warehouse) -> _Checked:
    """`_against_warehouse` beside the suite and the re-keying child, which take both cores of
    the machine: on one DuckDB thread (1M basis rows: validation 0.76 s alone, 1.21 s beside
    the checks on two threads, 1.02 s beside them on one)."""
    with one_thread():
        return _against_warehouse(rows, form, warehouse)


def _still_current(ahead: Future[_Checked] | None, warehouse: Warehouse) -> _Checked | None:
    """The checks run beside the suite, if they ran and the warehouse has not changed since."""
    if ahead is None:
        return None
    try:
        checked = ahead.result()
    except Exception:  # e.g. a file vacuumed away while it was read: check again
        return None
    current = all(warehouse.files(table) == files for table, files in checked.files.items())
    return checked if current else None


def _cross_check(
    incoming: pa.Table,
    form: Form,
    warehouse: Warehouse,
    files: Mapping[str, Sequence[str]] | None = None,
) -> pa.Table:
    """The errors of `validation.cross_record.check` against the stored tables (only the columns
    it reads; in their current files, or in `files`): warnings quarantine nothing, and only the
    warnings read the stored patient keys."""
    existing = {
        stored: warehouse.read(
            stored.value, files=None if files is None else files[stored.value], columns=columns
        )
        for stored, columns in cross_record.NO_PATIENT_KEY.items()
    }
    return cross_record.check(incoming, form, existing, warnings=False)


@dataclass(frozen=True)
class _Stored:
    """What a stored file's report and the ledger need beyond the upload's own counts."""

    # The rows the checks against the warehouse quarantined (FAILURE_SCHEMA; row_index into the
    # file): the suite's report does not know them.
    failures: pa.Table
    # Rows of earlier uploads held for their intake and stored now, per upload id.
    released: dict[int, int]


def _store(
    typed: pa.Table,
    validation: _Validation,
    form: Form,
    *,
    warehouse: Warehouse,
    keys: Future[pa.Array] | None,
    ahead: Future[_Checked] | None,
    upload: Upload,
    report: Progress,
) -> _Stored:
    assert upload.id is not None
    failed, warehouse_failures, bad = _failures(
        typed, form, validation.row_failures, warehouse, ahead
    )
    report("checked", int((~bad).sum()))
    patient_key = None if keys is None else keys.result()
    staged = stage(typed, form, patient_key=patient_key, upload_id=upload.id)
    report("staged", staged.num_rows)
    accepted = staged if not bad.any() else staged.filter(pa.array(~bad))
    quarantined = quarantine_rows(form, upload.id, staged, failed)
    counts = warehouse.write(form, accepted, upload_id=upload.id)
    # Before this file's own quarantine rows: every record of the file replaces its earlier ones.
    warehouse.clear_quarantined(form, staged, upload_id=upload.id)
    warehouse.append_quarantine(quarantined, upload_id=upload.id)
    report("stored", accepted.num_rows)
    upload.rows_accepted = accepted.num_rows
    upload.rows_quarantined = int(bad.sum())
    upload.rows_superseded = counts.superseded
    released: dict[int, int] = {}
    if form is Form.BASIS and accepted.num_rows > 0:
        released = _release_held(warehouse, upload.id)
        if released:
            report("released", sum(released.values()))
    return _Stored(failures=warehouse_failures, released=released)


def _count_released(session: Session, released: Mapping[int, int]) -> list[dict[str, object]]:
    """Count released rows as accepted, no longer quarantined, by the uploads that sent them
    (their ledger rows, an API request's mirror of one too, and their reports'
    `quarantined_rows`, which the report's `released_rows` explains); returns the releasing
    upload's account of them (form, upload id, rows). Added to the session: committed with the
    releasing load, or rolled back with it."""
    account: list[dict[str, object]] = []
    for upload_id, rows in sorted(released.items()):
        sender = session.get(Upload, upload_id)
        assert sender is not None  # the held rows carry the id of the upload that wrote them
        owners = or_(Upload.id == upload_id, Upload.loaded_as == upload_id)
        # An API request whose job has committed this load but not yet told it (`loaded_as`
        # unset): counted here too, as its job may have read the load's counts already.
        request_id = request_id_of(sender.uploaded_by)
        if request_id is not None:
            owners = or_(owners, Upload.id == request_id)
        # Added in the database, not from what this session read: a job telling its request
        # concurrently writes the counts it read, and this adds to them (or it reads these).
        # Locked first in id order, as the job locks them (`service.uploads.run_load`): no
        # deadlock between the two.
        session.exec(select(Upload.id).where(owners).order_by(col(Upload.id)).with_for_update())
        session.execute(
            update(Upload)
            .where(owners)
            .values(
                rows_accepted=Upload.rows_accepted + rows,
                rows_quarantined=Upload.rows_quarantined - rows,
            )
            .execution_options(synchronize_session="fetch")
        )
        session.refresh(sender)
        account.append({"form": sender.form, "upload_id": upload_id, "rows": rows})
        run = session.exec(
            select(ValidationRun)
            .where(ValidationRun.upload_id == upload_id)
            .order_by(col(ValidationRun.id).desc())
        ).first()
        if run is not None:
            released_rows = run.report.get("released_rows", 0)
            assert isinstance(released_rows, int)
            # A new dict: the JSON column does not track changes inside it.
            run.report = {
                **run.report,
                "quarantined_rows": sender.rows_quarantined,
                "released_rows": released_rows + rows,
            }
            session.add(run)
    return account


def _release_held(warehouse: Warehouse, upload_id: int) -> dict[int, int]:
    """Rows held for `cross.no_intake` whose intake has now arrived are re-checked and stored;
    returns how many were stored per upload that sent them (the `upload_id` they keep).

    A record held more than once (re-sent while its intake was still missing) is released in its
    latest version only (the highest upload id, per record_id and provider: a re-sent record
    supersedes the earlier one), and never over a newer version already stored; the versions so
    superseded leave the quarantine with it. A record that now fails another check (two held
    follow-ups of one episode: each is the other's duplicate) stays quarantined under that check
    instead, no longer as held for its intake. The quarantine is read without its `values` (each
    row's JSON, most of its bytes); only the held versions of the records concerned are read
    whole."""
    quarantine = warehouse.read(QUARANTINE, columns=["form", "record_id", "episode_id", "check"])
    released: dict[int, int] = {}
    if quarantine.num_rows == 0:
        return released
    held = quarantine.filter(pc.equal(quarantine.column("check"), NO_INTAKE))
    if held.num_rows == 0:
        return released
    # Only records held for nothing but a missing intake (by episode too: another provider's
    # record of the same record_id may be quarantined for something else).
    other = quarantine.filter(pc.not_equal(quarantine.column("check"), NO_INTAKE))
    blocked = set(
        zip(
            other.column("form").to_pylist(),
            other.column("record_id").to_pylist(),
            other.column("episode_id").to_pylist(),
            strict=True,
        )
    )
    basis_episodes = pc.unique(
        warehouse.select_in(
            Form.BASIS.value, ["episode_id"], "episode_id", held.column("episode_id")
        ).column("episode_id")
    )
    for form in (Form.MEASUREMENT, Form.DISCHARGE, Form.FOLLOWUP):
        rows = held.filter(
            pc.and_(
                pc.equal(held.column("form"), form.value),
                pc.is_in(held.column("episode_id"), value_set=basis_episodes),
            )
        )
        ids = sorted(
            {
                record_id
                for record_id, episode_id in zip(
                    rows.column("record_id").to_pylist(),
                    rows.column("episode_id").to_pylist(),
                    strict=True,
                )
                if record_id is not None and (form.value, record_id, episode_id) not in blocked
            }
        )
        if not ids:
            continue
        record_ids = pa.array(ids, pa.string())
        versions = warehouse.select_in(
            QUARANTINE, ["upload_id", "values"], "record_id", record_ids,
            where={"form": form.value, "check": NO_INTAKE},
        )  # fmt: skip
        staged = values_table(versions.column("values").to_pylist(), staged_schema(form))
        free = pa.array(
            [
                (form.value, record_id, episode_id) not in blocked
                for record_id, episode_id in zip(
                    staged.column("record_id").to_pylist(),
                    staged.column("episode_id").to_pylist(),
                    strict=True,
                )
            ],
            pa.bool_(),
        )
        staged, versions = staged.filter(free), versions.filter(free)
        stored = warehouse.select_in(
            form.value, ["record_id", "provider_orgnr", "upload_id"], "record_id", record_ids
        )
        latest, superseded = _latest_versions(staged, versions.column("upload_id"), stored)
        candidates = staged.filter(pa.array(latest))
        candidate_uploads = versions.column("upload_id").filter(pa.array(latest)).to_numpy()
        failures = _cross_check(candidates, form, warehouse)
        bad = np.zeros(candidates.num_rows, dtype=bool)
        bad[failures.column("row_index").to_numpy()] = True
        # Still held (not superseding another provider's record) until the sender resends it.
        other_provider = warehouse.stored_under_other_provider(form, candidates).to_numpy(
            zero_copy_only=False
        )
        passing = ~bad & ~other_provider
        # No longer held for their intake but failing another check now (a second follow-up or
        # discharge of the episode): they stay quarantined, under the new reasons.
        missing = np.zeros(candidates.num_rows, dtype=bool)
        held_again = pc.equal(failures.column("check"), NO_INTAKE)
        missing[failures.filter(held_again).column("row_index").to_numpy()] = True
        errors = failures.filter(pc.invert(held_again)).select(FAILURE_SCHEMA.names)
        # Two providers' records of one record_id that would both be stored (the table's key is
        # record_id): as if loaded one after the other, the earlier upload's is, and the other
        # is quarantined as another provider's record.
        clash = _later_of_a_record_id(candidates, candidate_uploads, passing)
        if clash.any():
            errors = pa.concat_tables(
                [errors.cast(FAILURE_SCHEMA), _other_provider_failures(candidates, clash)]
            )
        moved = (bad & ~missing & ~other_provider) | clash
        passed = candidates.filter(pa.array(passing & ~clash))
        if passed.num_rows > 0:
            warehouse.write(form, passed, upload_id=upload_id)
        gone = {
            (record_id, provider)
            for record_id, provider, out in zip(
                candidates.column("record_id").to_pylist(),
                candidates.column("provider_orgnr").to_pylist(),
                passing | moved,
                strict=True,
            )
            if out
        }
        done = [
            (record_id, upload)
            for record_id, provider, upload, old in zip(
                staged.column("record_id").to_pylist(),
                staged.column("provider_orgnr").to_pylist(),
                versions.column("upload_id").to_pylist(),
                superseded,
                strict=True,
            )
            if old or (record_id, provider) in gone
        ]
        warehouse.release_quarantined(form, done, upload_id=upload_id)
        for held_upload in np.unique(candidate_uploads[moved]):
            rows = np.flatnonzero(moved & (candidate_uploads == held_upload))
            mine = errors.filter(pc.is_in(errors.column("row_index"), pa.array(rows)))
            quarantined = quarantine_rows(form, int(held_upload), candidates, mine)
            warehouse.append_quarantine(quarantined, upload_id=upload_id)
        for sender, rows in Counter(passed.column("upload_id").to_pylist()).items():
            released[sender] = released.get(sender, 0) + rows
    return released


def _later_of_a_record_id(
    candidates: pa.Table, uploads: np.ndarray[Any, Any], passing: np.ndarray[Any, Any]
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Which passing candidates share their record_id with an earlier upload's passing candidate
    of another provider."""
    ids = candidates.column("record_id").to_pylist()
    providers = candidates.column("provider_orgnr").to_pylist()
    first: dict[str, str] = {}
    for row in np.argsort(uploads, kind="stable"):
        if passing[row]:
            first.setdefault(ids[row], providers[row])
    return np.array(
        [bool(passing[row]) and first[ids[row]] != providers[row] for row in range(len(ids))],
        dtype=bool,
    )


def _other_provider_failures(table: pa.Table, rows: np.ndarray[Any, Any]) -> pa.Table:
    """`record_id.other_provider` failures (FAILURE_SCHEMA) of these rows of `table`."""
    index = pa.array(np.flatnonzero(rows), pa.int64())
    return pa.table(
        {
            "row_index": index,
            "record_id": pc.take(table.column("record_id"), index),
            "check": pa.array([OTHER_PROVIDER] * len(index), pa.string()),
            "severity": pa.array(["error"] * len(index), pa.string()),
            "reason": pa.array([OTHER_PROVIDER_REASON] * len(index), pa.string()),
        },
        schema=FAILURE_SCHEMA,
    )


def _latest_versions(
    staged: pa.Table, uploads: pa.ChunkedArray, stored: pa.Table
) -> tuple[list[bool], list[bool]]:
    """Per held version (rows of `staged`, from the uploads `uploads`): whether it is its
    record's latest version (per record_id and provider, against the other held versions and the
    stored one), and whether a newer version is already stored (superseded for good)."""

    def keys(table: pa.Table) -> list[tuple[str, str]]:
        return list(
            zip(
                table.column("record_id").to_pylist(),
                table.column("provider_orgnr").to_pylist(),
                strict=True,
            )
        )

    stored_upload = dict(zip(keys(stored), stored.column("upload_id").to_pylist(), strict=True))
    held = list(zip(keys(staged), uploads.to_pylist(), strict=True))
    newest_held: dict[tuple[str, str], int] = {}
    for key, upload in held:
        newest_held[key] = max(upload, newest_held.get(key, upload))
    superseded = [stored_upload.get(key, -1) > upload for key, upload in held]
    latest = [
        upload == newest_held[key] and not old
        for (key, upload), old in zip(held, superseded, strict=True)
    ]
    return latest, superseded


def _optout(
    typed: pa.Table,
    validation: _Validation,
    *,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    upload: Upload,
    before_commit: BeforeCommit | None,
) -> None:
    """Erase every patient of an optout file, rows with a row-level error included (see the
    module docstring): those rows count as quarantined, not accepted; no quarantine row is
    written. The erasure's optout_date is the latest of the rows that failed no check (a date
    in the future is a date, but not a valid one)."""
    from etl.erasure import erase_patients  # erasure imports this module's neighbours

    failed = validation.row_failures.filter(
        pc.equal(validation.row_failures.column("severity"), "error")
    )
    failed_rows = set(pc.unique(failed.column("row_index")).to_pylist())
    quarantined = len(failed_rows)
    pseudonyms = [p for p in typed.column(PSEUDONYM_COLUMN).to_pylist() if p is not None]
    dates = [
        d
        for row, d in enumerate(typed.column("optout_date").to_pylist())
        if d is not None and row not in failed_rows
    ]
    erasure = erase_patients(
        pseudonyms,
        warehouse=warehouse,
        session=session,
        key=key,
        releases_dir=warehouse.releases_dir,
        provider_orgnr=upload.providers or None,
        optout_date=max(dates) if dates else None,
        performed_by=upload.uploaded_by,
        locked=True,
        before_commit=before_commit,
    )
    upload.rows_accepted = typed.num_rows - quarantined
    upload.rows_quarantined = quarantined
    upload.rows_erased = sum(erasure.rows_erased.values())
