"""A scratch DuckDB connection for the packages' in-memory queries.

DuckDB's default `temp_directory` is `.tmp` in the working directory (duckdb 2.0): a query that
spills would leave rows (patient keys, health data) wherever the CLI or the API happens to run,
outside the data directory that erasure searches. Every package queries through DuckDB and all of
them import `schemas/`, so the one safe way to open a connection lives here.
"""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb


@contextmanager
def duckdb_connection() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory connection that spills to a temporary directory of its own, removed afterwards.
    Spilling stays possible: a 1M-row load may need it."""
    with tempfile.TemporaryDirectory(prefix="kvarus-duckdb-") as spill:
        connection = duckdb.connect(":memory:", config={"temp_directory": spill})
        try:
            yield connection
        finally:
            connection.close()
