"""API benchmark: precomputed indicator reads under load, and one large researcher aggregate.

1. Reads: a uvicorn server on 127.0.0.1 serves a release of precomputed indicator results
   (every indicator × 5 years × 2 contexts × every organisation); 50 concurrent keep-alive
   clients ask for one indicator's provider rows for 30 s (a bounded loop per client), anonymous
   or with a researcher key. Prints requests, p50 and p99 latency per run and the best of
   `--runs` (target p99 ≤ 50 ms), with the load average. Every request is audited.
2. Aggregate: 10 million episodes (3 million patients) as a year-partitioned basis table,
   written once under `bench/out/api-aggregate-v2-{N}/` and reused; one aggregate with three
   dimensions (year × rhf × sex) with cell keys, perturbation and suppression, twice: the first
   builds the release's in-memory episode view, the second uses it. Target ≤ 2 s.

Usage: .venv/bin/python -P bench/api.py [--clients 50] [--seconds 30] [--runs 2] [--with-key]
       [--client raw|httpx] [--workers 1] [--episodes 10000000] [--only reads|aggregate]
"""

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import SecretStr
from sqlmodel import Session

from indicators.catalogue import load_catalogue
from indicators.results import RESULT_SCHEMA
from schemas.api import AggregateCreate
from schemas.catalog import Release
from schemas.manifest import ReleaseManifest, TableSnapshot
from schemas.organisations import Hierarchy
from service.aggregates import aggregate
from service.app import create_app
from service.auth import create_key
from service.settings import Settings

KEY = "benchmark-pseudonym-key-0123456789abcdef"


def write_results(settings: Settings) -> int:
    hierarchy = Hierarchy.default()
    organisations = [("nation", "1")]
    organisations += [("rhf", o.orgnr) for o in hierarchy.rhfs]
    organisations += [(o.level, o.orgnr) for o in hierarchy.providers]
    rows = []
    for definition in load_catalogue():
        for year in range(2020, 2025):
            for context in ("caregiver", "resident"):
                for level, orgnr in organisations:
                    rows.append(
                        {
                            "indicator_id": definition.id,
                            "release": 1,
                            "year": year,
                            "context": context,
                            "level": level,
                            "orgnr": orgnr,
                            "name": orgnr,
                            "numerator": 40,
                            "denominator": 100,
                            "value": 0.4,
                            "suppressed": False,
                        }
                    )
    root = settings.releases_dir / "1"
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA), root / "indicators.parquet")
    ReleaseManifest(release=1, created_at=datetime.now(UTC), tables={}).write(
        root / "manifest.json"
    )
    return len(rows)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def load_httpx(
    url: str, clients: int, seconds: float, headers: dict[str, str]
) -> list[float]:
    """The first client of this benchmark (`--client httpx`): it costs more CPU than the server."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            response = await client.get(url, headers=headers)
            latencies.append(time.perf_counter() - start)
            response.raise_for_status()

    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return latencies


async def load_raw(url: str, clients: int, seconds: float, headers: dict[str, str]) -> list[float]:
    """`clients` keep-alive connections, each sending its next GET when the last answer is read.

    Latency runs from writing the request to reading the last byte of the body. A bare HTTP/1.1
    client on asyncio streams: httpx on the same two cores managed ~330 requests/s against an
    empty FastAPI route, so it measured itself rather than the server.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status_line, *header_lines = head.decode("latin-1").split("\r\n")
                length = 0
                for line in header_lines:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                if status_line.split()[1] != "200":
                    raise RuntimeError(f"answer {status_line}")
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def bench_reads(
    clients: int, seconds: float, *, runs: int, client: str, with_key: bool, workers: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), pseudonym_key=SecretStr(KEY))
        app = create_app(settings)
        rows = write_results(settings)
        headers: dict[str, str] = {}
        with Session(app.state.engine) as session:
            session.add(Release(number=1, manifest_path="releases/1/manifest.json"))
            if with_key:
                _, key = create_key(session, role="researcher", name="benchmark")
                headers["Authorization"] = f"Bearer {key}"
            session.commit()
        app.state.audit.close()
        port = free_port()
        # The server runs in its own process: client and server must not share one GIL. One
        # worker by default: the machine has two cores and the client needs one.
        server = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "uvicorn",
                "service.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--no-access-log",
                "--backlog",
                "1024",
            ],
            env={
                **os.environ,
                "KVARUS_DATA_DIR": str(settings.data_dir),
                "KVARUS_PSEUDONYM_KEY": KEY,
            },
        )
        base = f"http://127.0.0.1:{port}"
        load = load_raw if client == "raw" else load_httpx
        results: list[tuple[float, float, int]] = []
        try:
            for _ in range(200):
                try:
                    if httpx.get(f"{base}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            url = f"{base}/api/v1/indicators/results?indicator=plan&level=hf&year=2024"
            for run in range(runs):
                before = loadavg()
                latencies = asyncio.run(load(url, clients, seconds, headers))
                ordered = sorted(latencies)
                p50 = statistics.median(latencies) * 1000
                p99 = ordered[int(0.99 * (len(ordered) - 1))] * 1000
                results.append((p99, p50, len(latencies)))
                print(
                    f"reads run {run + 1}: {len(latencies)} requests "
                    f"({len(latencies) / seconds:.0f}/s), p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                    f"(load average {before} before, {loadavg()} after)"
                )
        finally:
            server.terminate()
            server.wait(timeout=30)
        p99, p50, count = min(results)
        who = "researcher key" if with_key else "anonymous"
        print(
            f"reads: {rows} result rows, {clients} clients ({client}, {who}), {seconds:.0f} s, "
            f"best of {runs}: {count} requests ({count / seconds:.0f}/s), "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )


def write_basis(directory: Path, episodes: int) -> list[str]:
    """The benchmark's basis table, written once per size and reused (under `bench/out/`)."""
    done = directory / "complete"
    if not done.exists():
        providers = [o.orgnr for o in Hierarchy.default().providers]
        patients = max(episodes * 3 // 10, 1)
        partial = directory.with_name(directory.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        connection = duckdb.connect()
        # Patient p has the episodes p, p + patients, ...: about 3.3 episodes per patient, in
        # several years and at several providers. Keys are 64 hex characters, like the HMAC.
        connection.execute(
            f"""
            COPY (
                SELECT md5(CAST(i % {patients} AS VARCHAR))
                           || md5('p' || CAST(i % {patients} AS VARCHAR)) AS patient_key,
                       'e' || CAST(i AS VARCHAR) AS episode_id,
                       'r' || CAST(i AS VARCHAR) AS record_id,
                       make_date(2020 + i % 5, 1 + i % 12, 1 + i % 28) AS intake_date,
                       list_extract($providers, CAST(1 + i % {len(providers)} AS INTEGER))
                           AS provider_orgnr,
                       CAST(1 + (i // 7) % 2 AS INTEGER) AS sex,
                       CAST(18 + i % 60 AS INTEGER) AS age,
                       CAST(1 + i % 5 AS INTEGER) AS treatment_type,
                       CAST(1 + i % 6 AS INTEGER) AS primary_substance,
                       CASE WHEN i % 50 = 0 THEN 'S1' END AS clinical_study_id,
                       CAST(2020 + i % 5 AS INTEGER) AS year
                FROM range({episodes}) t(i)
            ) TO '{partial / "basis"}' (FORMAT parquet, PARTITION_BY (year))
            """,
            {"providers": providers},
        )
        connection.close()
        shutil.rmtree(directory, ignore_errors=True)
        partial.rename(directory)
        done.touch()
    return sorted(str(p) for p in (directory / "basis").rglob("*.parquet"))


def bench_aggregate(episodes: int, out: Path) -> None:
    start = time.perf_counter()
    files = write_basis(out / f"api-aggregate-v2-{episodes}", episodes)
    written = time.perf_counter() - start
    manifest = ReleaseManifest(
        release=1,
        created_at=datetime.now(UTC),
        tables={
            "basis": TableSnapshot(name="basis", delta_version=1, files=files, row_count=episodes)
        },
    )
    request = AggregateCreate(measures=["episodes"], dimensions=["year", "rhf", "sex"])
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        result = aggregate(
            manifest, request, pseudonym_key=KEY.encode(), hierarchy=Hierarchy.default()
        )
        timings.append(time.perf_counter() - start)
    print(
        f"aggregate: {episodes:,} episodes (basis ready in {written:.1f} s), year × rhf × sex, "
        f"{len(result.cells)} cells: {timings[0]:.2f} s first, {timings[1]:.2f} s second"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--episodes", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="Cached basis table")
    parser.add_argument("--only", choices=["reads", "aggregate"], default=None)
    parser.add_argument("--runs", type=int, default=2, help="Read runs; the best p99 counts")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--with-key", action="store_true", help="Read as a researcher")
    parser.add_argument("--workers", type=int, default=1)
    arguments = parser.parse_args()
    if arguments.only != "aggregate":
        bench_reads(
            arguments.clients,
            arguments.seconds,
            runs=arguments.runs,
            client=arguments.client,
            with_key=arguments.with_key,
            workers=arguments.workers,
        )
    if arguments.only != "reads":
        bench_aggregate(arguments.episodes, arguments.out)


if __name__ == "__main__":
    main()
