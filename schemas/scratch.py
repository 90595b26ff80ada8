"""A scratch DuckDB connection for the packages' in-memory queries.

DuckDB's default `temp_directory` is `.tmp` in the working directory (duckdb 2.0): a query that
spills would leave rows (patient keys, health data) wherever the CLI or the API happens to run,
outside the data directory that erasure searches. Every package queries through DuckDB and all of
them import `schemas/`, so the one safe way to open a connection lives here.
"""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import duckdb

# The threads of this thread's connections (`one_thread`); None: DuckDB's default, one per core.
_THREADS: ContextVar[int | None] = ContextVar("duckdb_threads", default=None)


@contextmanager
def one_thread() -> Iterator[None]:
    """Connections opened in this block (in this thread) run their queries on one thread: for
    work beside other work that already takes every core, where more threads only contend."""
    token = _THREADS.set(1)
    try:
        yield
    finally:
        _THREADS.reset(token)


@contextmanager
def duckdb_connection() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory connection that spills to a temporary directory of its own, removed afterwards.
    Spilling stays possible: a 1M-row load may need it."""
    with tempfile.TemporaryDirectory(prefix="kvarus-duckdb-") as spill:
        config: dict[str, str | bool | int | float | list[str]] = {"temp_directory": spill}
        threads = _THREADS.get()
        if threads is not None:
            config["threads"] = threads
        connection = duckdb.connect(":memory:", config=config)
        try:
            yield connection
        finally:
            connection.close()
