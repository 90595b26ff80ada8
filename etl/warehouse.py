"""The warehouse: one Delta table per stored form, plus the quarantine, under one root directory.

Layout: `{root}/{basis,measurement,discharge,followup,npr_counts}/` (partitioned by `year`),
`{root}/quarantine/`, and one lock file per table, `{root}/{table}.lock`.

Privacy of the data plane:
- `delta.dataSkippingStatsColumns` lists every column except `patient_key` (and the quarantine's
  `values` JSON, which holds it), so the Delta log never holds min/max statistics of a patient key;
  the Parquet writer is told the same (`statistics_enabled="NONE"`), so no footer holds one either.
- Deletions by patient go through `merge(... when_matched_delete())` from a source table: a literal
  predicate's text would be written into the log.
- `delta.logRetentionDuration` is 0 so that `cleanup_metadata()` (called only by an erasure, after a
  checkpoint) really deletes the old log JSON files, which hold the `add` actions of removed files.
  `delta.enableExpiredLogCleanup` is false so that no ordinary commit prunes the log behind our back
  (repairing an interrupted load restores older versions).

Reads go through DuckDB `read_parquet(table.file_uris(), hive_partitioning=true)`, never pyarrow
datasets with filters (pyarrow >= 21 fails on string filters over files rewritten by merge/delete).

Writers: Delta's optimistic concurrency is not safe on a local filesystem without a locking
provider, so every writer holds `fcntl.flock` locks on the tables' lock files
(`Warehouse.writing()`); flock locks are released by the kernel when a process dies, even by
SIGKILL, which the load protocol in `etl.load` relies on.
"""

import fcntl
import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    WriterProperties,
    write_deltalake,
)

from schemas.forms import PATIENT_KEY_COLUMN, Form, warehouse_schema
from schemas.manifest import ReleaseManifest
from schemas.scratch import duckdb_connection

# The stored forms, in a fixed order (also the order of a release manifest).
STORED_FORMS: Final = (
    Form.BASIS,
    Form.MEASUREMENT,
    Form.DISCHARGE,
    Form.FOLLOWUP,
    Form.NPR_COUNTS,
)
QUARANTINE: Final = "quarantine"
TABLES: Final[tuple[str, ...]] = (*(f.value for f in STORED_FORMS), QUARANTINE)

# The key a corrected record is matched on (npr_counts has one count per provider and year).
MERGE_KEYS: Final[dict[Form, tuple[str, ...]]] = {
    Form.BASIS: ("record_id",),
    Form.MEASUREMENT: ("record_id",),
    Form.DISCHARGE: ("record_id",),
    Form.FOLLOWUP: ("record_id",),
    Form.NPR_COUNTS: ("provider_orgnr", "year"),
}

logger = logging.getLogger("kvarus.warehouse")

# Commit metadata key naming the ledger row (Upload.id) that made a Delta commit.
UPLOAD_ID_METADATA: Final = "kvarus.upload_id"
# A release's manifest file, `{releases_dir}/{N}/manifest.json` (`etl.release.MANIFEST`; etl.release
# imports this module).
RELEASE_MANIFEST: Final = "manifest.json"
# A Delta table's log directory.
LOG_DIR: Final = "_delta_log"

QUARANTINE_SCHEMA: Final = pa.schema(
    [
        pa.field("form", pa.string(), nullable=False),
        pa.field("upload_id", pa.int64(), nullable=False),
        pa.field("record_id", pa.string()),
        pa.field("episode_id", pa.string()),
        pa.field(PATIENT_KEY_COLUMN, pa.string()),
        pa.field("check", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        # The row's typed values as JSON, with patient_key in place of the source pseudonym.
        pa.field("values", pa.string(), nullable=False),
    ]
)

# Columns that must never have min/max statistics (Delta log or Parquet footer): the patient key,
# and the quarantine's JSON of a row's values (it holds the patient key too).
NO_STATISTICS: Final = frozenset({PATIENT_KEY_COLUMN, "values"})

# Columns with about one value per row: the Parquet writer tries a dictionary, finds it as large
# as the column and falls back to plain encoding. Not trying saved 0.15 s of the 0.6 s that writing
# 1M basis rows took.
NO_DICTIONARY: Final = frozenset({"record_id", "episode_id", PATIENT_KEY_COLUMN, "values"})

_WRITER_PROPERTIES: Final = WriterProperties(
    column_properties={
        name: ColumnProperties(
            dictionary_enabled=False if name in NO_DICTIONARY else None,
            statistics_enabled="NONE" if name in NO_STATISTICS else None,
        )
        for name in sorted(NO_STATISTICS | NO_DICTIONARY)
    }
)


def schema_of(table: str) -> pa.Schema:
    return QUARANTINE_SCHEMA if table == QUARANTINE else warehouse_schema(Form(table))


def _configuration(schema: pa.Schema) -> dict[str, str | None]:
    stats_columns = [name for name in schema.names if name not in NO_STATISTICS]
    return {
        "delta.dataSkippingStatsColumns": ",".join(stats_columns),
        "delta.logRetentionDuration": "interval 0 seconds",
        "delta.enableExpiredLogCleanup": "false",
    }


@dataclass(frozen=True)
class WriteCounts:
    inserted: int = 0
    superseded: int = 0
    unchanged: int = 0


def _commit(upload_id: int | None) -> CommitProperties | None:
    if upload_id is None:
        return None
    return CommitProperties(custom_metadata={UPLOAD_ID_METADATA: str(upload_id)})


class Warehouse:
    """The Delta tables under `root`; `releases_dir` is where releases live (default beside it)."""

    def __init__(self, root: Path, releases_dir: Path | None = None) -> None:
        self.root = root
        self.releases_dir = releases_dir if releases_dir is not None else root.parent / "releases"

    # -- layout -----------------------------------------------------------------------------
    def path(self, table: str) -> Path:
        if table not in TABLES:
            raise KeyError(table)
        return self.root / table

    def ensure(self) -> None:
        """Create the empty tables (version 0) that do not exist yet, with their properties."""
        self.root.mkdir(parents=True, exist_ok=True)
        for table in TABLES:
            path = self.path(table)
            if (path / "_delta_log").exists():
                continue
            schema = schema_of(table)
            partition = ["year"] if "year" in schema.names else None
            DeltaTable.create(
                str(path),
                schema,
                partition_by=partition,
                mode="ignore",
                configuration=_configuration(schema),
            )

    def delta(self, table: str) -> DeltaTable:
        return DeltaTable(str(self.path(table)))

    def version(self, table: str) -> int:
        return int(self.delta(table).version())

    def versions(self) -> dict[str, int]:
        return {table: self.version(table) for table in TABLES}

    def files(self, table: str) -> list[str]:
        return sorted(self.delta(table).file_uris())

    def files_if_any(self, table: str) -> list[str]:
        """The table's current files; none where the table does not exist yet (`ensure`)."""
        if not (self.path(table) / LOG_DIR).exists():
            return []
        return self.files(table)

    # -- locking ----------------------------------------------------------------------------
    @contextmanager
    def writing(self, tables: Sequence[str] = TABLES) -> Iterator[None]:
        """Hold exclusive flock locks on the tables' lock files (sorted order: no deadlock); the
        tables are created under the locks, so two first writers cannot race to create them."""
        self.root.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            for table in sorted(set(tables)):
                handle = stack.enter_context((self.root / f"{table}.lock").open("a"))
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            self.ensure()
            yield

    # -- reading ----------------------------------------------------------------------------
    def read(
        self,
        table: str,
        files: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """The table's current rows (or those of `files`) as Arrow, in the table's schema (or
        only `columns` of it)."""
        schema = schema_of(table)
        if columns is not None:
            schema = pa.schema([schema.field(name) for name in columns])
        uris = list(files) if files is not None else self.files(table)
        if not uris:
            return schema.empty_table()
        selected = ", ".join(f'"{name}"' for name in schema.names)
        with duckdb_connection() as connection:
            result = connection.sql(
                f"SELECT {selected} FROM read_parquet($files, hive_partitioning=true)",  # noqa: S608
                params={"files": uris},
            ).to_arrow_table()
        return result.cast(schema)

    def table(self, form: Form, columns: Sequence[str] | None = None) -> pa.Table:
        """A stored form's current rows (for cross-record checks)."""
        return self.read(form.value, columns=columns)

    def count(self, table: str, files: Sequence[str] | None = None) -> int:
        """Rows of the table's current version (or of `files`), without reading the columns."""
        files = list(files) if files is not None else self.files(table)
        if not files:
            return 0
        with duckdb_connection() as connection:
            rows = connection.sql(
                "SELECT count(*) FROM read_parquet($files)", params={"files": files}
            ).fetchall()
        return int(rows[0][0])

    # -- writing ----------------------------------------------------------------------------
    def write(self, form: Form, rows: pa.Table, *, upload_id: int | None) -> WriteCounts:
        """Insert rows; a re-sent key with new values supersedes the stored row (merge)."""
        if rows.num_rows == 0:
            return WriteCounts()
        schema = warehouse_schema(form)
        rows = rows.select(schema.names).cast(schema)
        table = self.delta(form.value)
        keys = MERGE_KEYS[form]
        if not self._overlaps(form, rows, keys):
            # Nothing to supersede: a plain append is much cheaper than a merge.
            write_deltalake(
                table,
                rows,
                mode="append",
                writer_properties=_WRITER_PROPERTIES,
                commit_properties=_commit(upload_id),
            )
            return WriteCounts(inserted=rows.num_rows)
        on = " AND ".join(f't."{k}" = s."{k}"' for k in keys)
        compared = [n for n in schema.names if n not in keys and n != "upload_id"]
        changed = " OR ".join(f'(t."{n}" IS DISTINCT FROM s."{n}")' for n in compared)
        metrics = (
            table.merge(
                rows,
                on,
                source_alias="s",
                target_alias="t",
                writer_properties=_WRITER_PROPERTIES,
                commit_properties=_commit(upload_id),
            )
            .when_matched_update_all(predicate=changed)
            .when_not_matched_insert_all()
            .execute()
        )
        inserted = int(metrics["num_target_rows_inserted"])
        superseded = int(metrics["num_target_rows_updated"])
        return WriteCounts(
            inserted=inserted,
            superseded=superseded,
            unchanged=rows.num_rows - inserted - superseded,
        )

    def _overlaps(self, form: Form, rows: pa.Table, keys: tuple[str, ...]) -> bool:
        files = self.files(form.value)
        if not files:
            return False
        key_list = ", ".join(f'"{k}"' for k in keys)
        with duckdb_connection() as connection:
            connection.register("incoming", rows.select(list(keys)))
            found = connection.execute(
                f"SELECT count(*) FROM read_parquet(?, hive_partitioning=true) AS t "  # noqa: S608
                f"SEMI JOIN incoming AS s USING ({key_list})",
                [files],
            ).fetchone()
        return found is not None and int(found[0]) > 0

    def stored_under_other_provider(
        self, form: Form, rows: pa.Table, files: Sequence[str] | None = None
    ) -> pa.Array:
        """Per row of `rows` (`record_id`, `provider_orgnr`): whether its record_id is stored
        under another provider (in the table's current files, or in `files` of it). Such a row
        must not supersede the stored record (`write` merges on record_id alone): a provider
        may only correct its own records."""
        if "record_id" not in MERGE_KEYS[form] or rows.num_rows == 0:
            return pa.array(np.zeros(rows.num_rows, dtype=bool))
        files = list(files) if files is not None else self.files(form.value)
        if not files:
            return pa.array(np.zeros(rows.num_rows, dtype=bool))
        incoming = pa.table(
            {
                "row_index": pa.array(np.arange(rows.num_rows, dtype=np.int64)),
                "record_id": rows.column("record_id"),
                "provider_orgnr": rows.column("provider_orgnr"),
            }
        )
        with duckdb_connection() as connection:
            connection.register("incoming", incoming)
            found = connection.execute(
                "SELECT DISTINCT s.row_index FROM incoming AS s "
                "JOIN read_parquet(?, hive_partitioning=true) AS t ON t.record_id = s.record_id "
                "WHERE t.provider_orgnr IS DISTINCT FROM s.provider_orgnr",
                [files],
            ).fetchall()
        flags = np.zeros(rows.num_rows, dtype=bool)
        flags[[int(row[0]) for row in found]] = True
        return pa.array(flags)

    def append_quarantine(self, rows: pa.Table, *, upload_id: int | None) -> None:
        if rows.num_rows == 0:
            return
        write_deltalake(
            self.delta(QUARANTINE),
            rows.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA),
            mode="append",
            writer_properties=_WRITER_PROPERTIES,
            commit_properties=_commit(upload_id),
        )

    def select_in(
        self,
        table: str,
        columns: Sequence[str],
        column: str,
        values: pa.Array | pa.ChunkedArray,
        where: Mapping[str, str] | None = None,
    ) -> pa.Table:
        """The rows of a table's current files whose `column` is one of `values` (and whose
        `where` columns equal the given texts), only `columns` of them: a look-up that does not
        read the whole table into memory. Column names must be the table's; values are query
        parameters."""
        schema = schema_of(table)
        where = dict(where or {})
        for name in (*columns, column, *where):
            if name not in schema.names:
                raise ValueError(f"{name!r} is not a column of {table}")
        result_schema = pa.schema([schema.field(name) for name in columns])
        files = self.files(table)
        if not files or len(values) == 0:
            return result_schema.empty_table()
        selected = ", ".join(f't."{name}"' for name in columns)
        conditions = "".join(f' AND t."{name}" = ${name}' for name in where)
        with duckdb_connection() as connection:
            connection.register("wanted", pa.table({"value": values}))
            result = connection.sql(
                f"SELECT {selected} FROM read_parquet($files, hive_partitioning=true) AS t "  # noqa: S608 (names checked above)
                f'WHERE t."{column}" IN (SELECT value FROM wanted){conditions}',
                params={"files": files, **where},
            ).to_arrow_table()
        return result.cast(result_schema)

    def release_quarantined(
        self, form: Form, versions: Iterable[tuple[str, int]], *, upload_id: int | None
    ) -> int:
        """Delete the quarantine rows of `form` of these (record_id, upload_id) versions (they
        were stored, or superseded). Returns the rows deleted."""
        pairs = sorted(set(versions))
        if not pairs:
            return 0
        source = pa.table(
            {
                "form": pa.array([form.value] * len(pairs)),
                "record_id": pa.array([record_id for record_id, _ in pairs], pa.string()),
                "upload_id": pa.array([upload for _, upload in pairs], pa.int64()),
            }
        )
        metrics = (
            self.delta(QUARANTINE)
            .merge(
                source,
                "t.form = s.form AND t.record_id = s.record_id AND t.upload_id = s.upload_id",
                source_alias="s",
                target_alias="t",
                writer_properties=_WRITER_PROPERTIES,
                commit_properties=_commit(upload_id),
            )
            .when_matched_delete()
            .execute()
        )
        return int(metrics["num_target_rows_deleted"])

    def clear_quarantined(self, form: Form, rows: pa.Table, *, upload_id: int) -> int:
        """Delete the quarantine rows that earlier uploads left of these rows' records (per
        `record_id` and `provider_orgnr`, a missing provider included): a record sent again, stored
        or quarantined again, replaces its earlier versions, so a fixed record leaves the
        quarantine and a file loaded again does not double it. Returns the rows deleted.

        The quarantine has no provider column (it is in each row's `values` JSON), so only the
        few rows whose record_id matches are read whole; a file that re-sends no quarantined
        record costs one look-up of the quarantine's `record_id` column."""
        files = self.files(QUARANTINE)
        if "record_id" not in MERGE_KEYS[form] or rows.num_rows == 0 or not files:
            return 0
        with duckdb_connection() as connection:
            connection.register("incoming", rows.select(["record_id"]))
            matched = connection.sql(
                "SELECT DISTINCT t.record_id FROM read_parquet($files) AS t "
                "WHERE t.form = $form AND t.upload_id <> $upload "
                "AND t.record_id IN (SELECT record_id FROM incoming)",
                params={"files": files, "form": form.value, "upload": upload_id},
            ).to_arrow_table()
        if matched.num_rows == 0:
            return 0
        record_ids = matched.column("record_id")
        resent = rows.filter(pc.is_in(rows.column("record_id"), value_set=record_ids))
        provider = dict(
            zip(
                resent.column("record_id").to_pylist(),
                resent.column("provider_orgnr").to_pylist(),
                strict=True,
            )
        )
        earlier = self.select_in(
            QUARANTINE, ["record_id", "upload_id", "values"], "record_id", record_ids,
            where={"form": form.value},
        )  # fmt: skip
        versions = [
            (record_id, upload)
            for record_id, upload, values in zip(
                earlier.column("record_id").to_pylist(),
                earlier.column("upload_id").to_pylist(),
                earlier.column("values").to_pylist(),
                strict=True,
            )
            if upload != upload_id
            and json.loads(values).get("provider_orgnr") == provider[record_id]
        ]
        return self.release_quarantined(form, versions, upload_id=upload_id)

    def delete_patients(self, table: str, keys: pa.Array) -> int:
        """Delete every row of these patient keys."""
        if PATIENT_KEY_COLUMN not in schema_of(table).names:
            return 0
        return self._delete_matching(table, PATIENT_KEY_COLUMN, keys.cast(pa.string()))

    def delete_records(self, table: str, record_ids: list[str]) -> int:
        """Delete a form table's rows of these record ids (unique within a form). For a repair
        that has the ids of an erasure's rows but not their keys."""
        ids = pa.array(sorted(set(record_ids)), pa.string())
        return self._delete_matching(table, "record_id", ids)

    def _delete_matching(self, table: str, column: str, values: pa.Array) -> int:
        """Delete the rows whose `column` is one of `values`, by a merge from a source table: a
        literal predicate would write the values into the Delta log."""
        if len(values) == 0:
            return 0
        delta = self.delta(table)
        if not delta.file_uris():
            return 0
        metrics = (
            delta.merge(
                pa.table({column: values}),
                f"t.{column} = s.{column}",
                source_alias="s",
                target_alias="t",
                writer_properties=_WRITER_PROPERTIES,
            )
            .when_matched_delete()
            .execute()
        )
        return int(metrics["num_target_rows_deleted"])

    def copy_without(self, path: str, keys: pa.Array) -> str:
        """A copy of a data file without these patients' rows, beside it (in its partition
        directory), with the warehouse's statistics rule (none of `NO_STATISTICS`); its path.
        For a release rebuilt after an erasure: in no Delta commit, the copy is kept while a
        release lists it (`_delete_left_behind`, `etl.erasure._purge`)."""
        source = Path(path)
        table = pq.ParquetFile(source).read()
        # A file delta-rs rewrote (a merge) holds its text as string_view, which `is_in` does
        # not take: as string, as the table's schema has it.
        table = table.cast(
            pa.schema(
                [
                    f.with_type(pa.string()) if f.type == pa.string_view() else f
                    for f in table.schema
                ]
            )
        )
        kept = table.filter(pc.invert(pc.is_in(table[PATIENT_KEY_COLUMN], value_set=keys)))
        target = source.with_name(f"release-copy-{uuid.uuid4().hex}.parquet")
        statistics = [name for name in kept.column_names if name not in NO_STATISTICS]
        pq.write_table(kept, target, write_statistics=statistics)
        return str(target.resolve())

    # -- repair -----------------------------------------------------------------------------
    def restore_before(self, upload_id: int) -> dict[str, int]:
        """Undo every Delta commit an upload made: restore each table to the version before its
        first commit tagged with the upload. Returns {table: restored version}.

        Then delete what the load left on disk (health data, patient keys: `restore` only writes
        a commit that unlists files): the data files of the undone commits, and those of a write
        whose commit never happened (the load was killed or failed while writing), in every
        table. Call only holding the write locks (`writing()`): no other writer may be between
        writing its files and committing them."""
        releases = self._release_files()
        restored: dict[str, int] = {}
        for table in TABLES:
            delta = self.delta(table)
            tagged = [
                int(entry["version"])
                for entry in delta.history()
                if str(entry.get(UPLOAD_ID_METADATA)) == str(upload_id) and "version" in entry
            ]
            undone: set[str] = set()
            if tagged:
                target = min(tagged) - 1
                undone = self._files_since(table, target, int(delta.version()))
                delta.restore(target)
                restored[table] = target
            if releases is not None:
                self._delete_left_behind(table, undone, releases)
        return restored

    def _files_since(self, table: str, target: int, current: int) -> set[str]:
        """The data files of the versions after `target` up to `current` (resolved paths): those
        the undone commits added, including any a later commit of theirs removed again."""
        path = str(self.path(table))
        return {
            str(Path(uri).resolve())
            for version in range(target + 1, current + 1)
            for uri in DeltaTable(path, version=version).file_uris()
        }

    def _delete_left_behind(self, table: str, undone: set[str], releases: set[str]) -> None:
        """Delete the `undone` files and the table's files that no commit on record lists, except
        those of the current (restored) version and of any release.

        No release can list an undone file: releases are published holding the write locks,
        after repairing any dead load (`etl.release.publish_release`, `etl.erasure`), and a live
        load publishes none but an optout's, whose commits carry no upload id and are never
        undone. Every release's files are kept all the same. A file that only a log JSON deleted
        by an erasure's clean-up listed was that erasure's to delete (it keeps only releases').
        """
        root = self.path(table).resolve()
        keep = {str(Path(uri).resolve()) for uri in self.delta(table).file_uris()} | releases
        logged = self._logged_files(table)
        on_disk = {
            str(path.resolve())
            for path in root.rglob("*.parquet")
            if LOG_DIR not in path.relative_to(root).parts and path.is_file()
        }
        for name in sorted(((on_disk - logged) | undone) - keep):
            Path(name).unlink(missing_ok=True)

    def _logged_files(self, table: str) -> set[str]:
        """The data files (resolved paths) of every `add` or `remove` action in the table's log
        JSON files, and of its current version: every file a commit still on record wrote."""
        root = self.path(table).resolve()
        files = {str(Path(uri).resolve()) for uri in self.delta(table).file_uris()}
        for entry in sorted((root / LOG_DIR).glob("*.json")):
            with entry.open(encoding="utf-8") as lines:
                for line in lines:
                    if not line.strip():
                        continue
                    action = json.loads(line)
                    for kind in ("add", "remove"):
                        if kind in action:
                            name = Path(unquote(str(action[kind]["path"])))
                            files.add(str((root / name).resolve()))
        return files

    def _release_files(self) -> set[str] | None:
        """Every file a release manifest under `releases_dir` lists (retired ones included), or
        None if a manifest cannot be read (a publish killed while writing it): then no file is
        deleted, as any might be that release's, and the repair itself still goes through."""
        files: set[str] = set()
        for path in sorted(self.releases_dir.glob(f"*/{RELEASE_MANIFEST}")):
            try:
                manifest = ReleaseManifest.read(path)
            except (OSError, ValueError):
                logger.warning(
                    "Release manifest %s cannot be read: files left by undone loads are kept",
                    path.parent.name,
                )
                return None
            for snapshot in manifest.tables.values():
                files |= {str(Path(name).resolve()) for name in snapshot.files}
        return files


def quarantine_rows(
    form: Form,
    upload_id: int,
    typed: pa.Table,
    failures: pa.Table,
) -> pa.Table:
    """One quarantine row per failing row × check; `typed` carries patient_key, not the pseudonym.

    `failures` has `row_index` (into `typed`), `check`, `reason`, `severity`.
    """
    if failures.num_rows == 0:
        return QUARANTINE_SCHEMA.empty_table()
    index = failures.column("row_index").cast(pa.int64())
    rows = typed.take(index)
    values = [json.dumps(row, default=_json_default, sort_keys=True) for row in rows.to_pylist()]

    def text(column: str) -> pa.Array:
        if column in rows.column_names:
            return pc.cast(rows.column(column), pa.string()).combine_chunks()
        return pa.nulls(rows.num_rows, pa.string())

    return pa.table(
        {
            "form": pa.array([form.value] * rows.num_rows, pa.string()),
            "upload_id": pa.array([upload_id] * rows.num_rows, pa.int64()),
            "record_id": text("record_id"),
            "episode_id": text("episode_id"),
            PATIENT_KEY_COLUMN: text(PATIENT_KEY_COLUMN),
            "check": failures.column("check").cast(pa.string()),
            "reason": failures.column("reason").cast(pa.string()),
            "severity": failures.column("severity").cast(pa.string()),
            "values": pa.array(values, pa.string()),
        },
        schema=QUARANTINE_SCHEMA,
    )


def values_table(values: Sequence[str], schema: pa.Schema) -> pa.Table:
    """Rebuild typed rows from quarantine `values` JSON."""
    records: list[dict[str, Any]] = []
    for text in values:
        record = json.loads(text)
        for field in schema:
            value = record.get(field.name)
            if value is not None and pa.types.is_date(field.type):
                record[field.name] = date.fromisoformat(value)
        records.append({name: record.get(name) for name in schema.names})
    return pa.Table.from_pylist(records, schema=schema)


def _json_default(value: object) -> str:
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(type(value).__name__)
