import os
import threading

from schemas.scratch import duckdb_connection, one_thread


def _threads() -> int:
    with duckdb_connection() as connection:
        rows = connection.sql("SELECT current_setting('threads')").fetchall()
    return int(rows[0][0])


def test_one_thread_limits_the_connections_of_its_block_in_its_thread_only() -> None:
    cores = os.cpu_count() or 1
    seen: list[int] = []
    with one_thread():
        assert _threads() == 1
        other = threading.Thread(target=lambda: seen.append(_threads()))
        other.start()
        other.join()
    assert seen == [cores]
    assert _threads() == cores
