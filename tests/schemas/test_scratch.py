import threading

import pytest

from schemas.scratch import duckdb_connection, one_thread


def _threads() -> int:
    with duckdb_connection() as connection:
        rows = connection.sql("SELECT current_setting('threads')").fetchall()
    return int(rows[0][0])


def test_one_thread_limits_the_connections_of_its_block_in_its_thread_only() -> None:
    # DuckDB's default is the cores it may use (a container's CPU limit), not os.cpu_count().
    default = _threads()
    if default == 1:
        pytest.skip("DuckDB runs on one thread here anyway")
    seen: list[int] = []
    with one_thread():
        assert _threads() == 1
        other = threading.Thread(target=lambda: seen.append(_threads()))
        other.start()
        other.join()
    assert seen == [default]
    assert _threads() == default
