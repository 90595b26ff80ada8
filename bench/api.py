"""API benchmark: precomputed indicator reads under load, and one large researcher aggregate.

1. Reads: a uvicorn server on 127.0.0.1 serves a release of precomputed indicator results
   (every indicator × 5 years × 2 contexts × every organisation); 50 concurrent httpx clients
   ask for one indicator's provider rows for 30 s (a bounded loop per client). Prints requests,
   p50 and p99 latency (target p99 ≤ 50 ms). Every request is audited (one catalog row each).
2. Aggregate: 10 million episodes (about 3 million patients) written as a year-partitioned basis
   table; one aggregate with three dimensions (year × rhf × sex) with cell keys, perturbation
   and suppression. Prints wall time (target ≤ 2 s).

Usage: .venv/bin/python -P bench/api.py [--clients 50] [--seconds 30] [--episodes 10000000]
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


async def load(url: str, clients: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            response = await client.get(url)
            latencies.append(time.perf_counter() - start)
            response.raise_for_status()

    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return latencies


def bench_reads(clients: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), pseudonym_key=SecretStr(KEY))
        app = create_app(settings)
        rows = write_results(settings)
        with Session(app.state.engine) as session:
            session.add(Release(number=1, manifest_path="releases/1/manifest.json"))
            session.commit()
        port = free_port()
        # The server runs in its own process: client and server must not share one GIL.
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
                "--log-level",
                "warning",
            ],
            env={
                **os.environ,
                "KVARUS_DATA_DIR": str(settings.data_dir),
                "KVARUS_PSEUDONYM_KEY": KEY,
            },
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if httpx.get(f"{base}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            url = f"{base}/api/v1/indicators/results?indicator=plan&level=hf&year=2024"
            latencies = asyncio.run(load(url, clients, seconds))
        finally:
            server.terminate()
            server.wait(timeout=30)
        ordered = sorted(latencies)
        p99 = ordered[int(0.99 * (len(ordered) - 1))]
        print(
            f"reads: {rows} result rows, {clients} clients, {seconds:.0f} s: "
            f"{len(latencies)} requests ({len(latencies) / seconds:.0f}/s), "
            f"p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
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
    files = write_basis(out / f"api-aggregate-{episodes}", episodes)
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
    arguments = parser.parse_args()
    if arguments.only != "aggregate":
        bench_reads(arguments.clients, arguments.seconds)
    if arguments.only != "reads":
        bench_aggregate(arguments.episodes, arguments.out)


if __name__ == "__main__":
    main()
