"""Benchmark: the full indicator catalogue on DuckDB over a 10-million-episode release.

Builds the release directly as warehouse-shaped Parquet (numpy-generated columns per
`schemas.forms.warehouse_schema`, hive `year=YYYY/` directories, written in chunks): per episode one
basis row, ~2 measurement points, 0.8 discharges and 0.3 follow-ups; identifiers shaped as in
production (episode and record ids a letter and ten digits, patient_key 64 hex characters).
Then times `indicators.engine.compute` (DuckDB) and a straightforward pandas implementation of three
indicators (plan, mutual_end, waiting_days) and prints time (best of `--runs`), peak memory
(ru_maxrss), the ratio and the load average (other jobs share the machine). `--per-indicator`
also times each indicator alone (each rebuilding the episode tables it needs); `--steps` prints
the time of each engine step (materialised tables, queries).
Targets: ≤ 20 s and ≤ 4 GB. The release is built once per size and reused (under `bench/out/`,
git-ignored).

    .venv/bin/python -m bench.indicators [--episodes 10000000] [--dir bench/out] [--runs 2]
        [--per-indicator] [--steps]

(run as a module from the repository root: as a script its own name would shadow `indicators`)
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from etl.generate.columns import ID_PREFIX, fixed_width_strings, format_ids
from indicators.catalogue import load_catalogue
from indicators.engine import aggregates, compute
from schemas.forms import Form, warehouse_schema
from schemas.manifest import ReleaseManifest, TableSnapshot
from schemas.organisations import Hierarchy

CHUNK = 1_000_000
EPOCH = np.datetime64("2021-01-01")
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def _strings(prefix: str, numbers: np.ndarray[Any, Any]) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(numbers).cast(pa.string()), "")


def _patient_keys(patients: np.ndarray[Any, Any]) -> pa.Array:
    """64 hex characters per patient, the shape of production's patient_key (the hex HMAC-SHA256
    of the pseudonym, `etl.privacy.rekey`): four splitmix64 words of the patient number, a
    bijection, so distinct patients get distinct keys. Long keys cost the engine more than short
    ones (DuckDB inlines strings of up to 12 bytes), so the bench measures production's."""
    words = []
    with np.errstate(over="ignore"):
        for salt in range(1, 5):
            z = patients.astype(np.uint64) + np.uint64(salt) * np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            words.append(z ^ (z >> np.uint64(31)))
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nibbles = np.hstack([(w[:, None] >> shifts) & np.uint64(0xF) for w in words])
    return fixed_width_strings(HEX[nibbles.astype(np.uint8)])


def _dates(days: np.ndarray[Any, Any]) -> pa.Array:
    return pa.array((EPOCH + days.astype("timedelta64[D]")).astype("datetime64[D]"))


def _write(
    root: Path,
    name: str,
    columns: dict[str, Any],
    year: np.ndarray[Any, Any],
    part: int,
    files: dict[str, list[str]],
) -> None:
    schema = warehouse_schema(Form(name))
    stored = pa.schema([f for f in schema if f.name != "year"])
    table = pa.table({f.name: columns[f.name] for f in stored}).cast(stored)
    for value in np.unique(year):
        directory = root / name / f"year={value}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"part-{part:04d}.parquet"
        pq.write_table(table.filter(pa.array(year == value)), path)
        files[name].append(str(path))


def build(root: Path, episodes: int, seed: int = 5) -> ReleaseManifest:
    rng = np.random.default_rng(seed)
    hierarchy = Hierarchy.default()
    providers = np.array(sorted(o.orgnr for o in hierarchy.providers))
    hfs = np.array(sorted(o.orgnr for o in hierarchy.hfs))
    files: dict[str, list[str]] = {t: [] for t in ("basis", "measurement", "discharge", "followup")}
    counts = dict.fromkeys(files, 0)
    record = 0
    for part, start in enumerate(range(0, episodes, CHUNK)):
        n = min(CHUNK, episodes - start)
        ids = np.arange(start, start + n)
        provider = providers[rng.integers(0, len(providers), n)]
        unit = _strings("U", rng.integers(1, 6, n))
        patient = _patient_keys(rng.integers(0, episodes * 7 // 10, n))
        episode = format_ids(ID_PREFIX["episode_id"], ids)
        intake = rng.integers(0, 3 * 365, n)
        common = {
            "episode_id": episode,
            "patient_key": patient,
            "provider_orgnr": provider,
            "unit_code": unit,
            "upload_id": np.ones(n, dtype=np.int64),
        }

        def rec(k: int, form: str) -> pa.Array:
            # Production's shape: the form's letter and ten digits (etl.generate).
            nonlocal record
            record += k
            return format_ids(ID_PREFIX[form], np.arange(record - k, record))

        wait = rng.integers(0, 120, n)
        has_referral = rng.random(n) > 0.1
        basis = common | {
            "record_id": rec(n, "basis"),
            "intake_date": _dates(intake),
            "referral_date": pa.array(_dates(intake - wait), mask=~has_referral),
            "age": rng.integers(13, 90, n).astype(np.int32),
            "sex": rng.choice([1, 2, 9], n, p=[0.6, 0.39, 0.01]).astype(np.int32),
            "home_hf_orgnr": hfs[rng.integers(0, len(hfs), n)],
            "treatment_type": rng.integers(1, 6, n).astype(np.int32),
            "primary_substance": rng.choice([1, 2, 3, 4, 5, 6, 9], n).astype(np.int32),
            "icd10": pa.array(["F10.2"] * n),
            "audit": pa.array(rng.integers(0, 41, n).astype(np.int32), mask=rng.random(n) < 0.3),
            "dudit": pa.array(rng.integers(0, 45, n).astype(np.int32), mask=rng.random(n) < 0.5),
            "housing": rng.choice([1, 2, 3, 4, 5, 9], n).astype(np.int32),
            "employment": rng.choice([1, 2, 3, 4, 9], n).astype(np.int32),
            "injecting_6m": rng.integers(0, 2, n).astype(np.int32),
            "severity": rng.integers(1, 6, n).astype(np.int32),
            "research_consent": rng.integers(0, 2, n).astype(np.int32),
            "clinical_study_id": pa.array(["S1"] * n, mask=rng.random(n) > 0.02),
        }
        _write(root, "basis", basis, 2021 + intake // 365, part, files)
        counts["basis"] += n
        # ~2 measurement points per episode: every episode one, 100 % a second.
        take = np.concatenate([np.arange(n), np.arange(n)])
        m = len(take)
        measured = intake[take] + rng.integers(1, 90, m) + np.where(np.arange(m) >= n, 90, 0)
        measurement = {
            k: (v.take(pa.array(take)) if isinstance(v, pa.Array) else v[take])
            for k, v in common.items()
        } | {
            "record_id": rec(m, "measurement"),
            "measure_date": _dates(measured),
            "status": rng.choice([1, 2, 3, 4], m, p=[0.85, 0.05, 0.05, 0.05]).astype(np.int32),
            "treatment_plan": rng.choice([1, 2, 3], m, p=[0.2, 0.75, 0.05]).astype(np.int32),
            "crisis_plan": rng.choice([1, 2, 3], m, p=[0.4, 0.55, 0.05]).astype(np.int32),
            "benefit": pa.array(rng.integers(1, 6, m).astype(np.int32), mask=rng.random(m) < 0.1),
            "use_days_30": pa.array(rng.integers(0, 31, m).astype(np.int32)),
            "clinical_study_id": pa.array(["S1"] * m, mask=rng.random(m) > 0.01),
        }
        measurement["upload_id"] = np.ones(m, dtype=np.int64)
        _write(
            root, "measurement", measurement, np.minimum(2021 + measured // 365, 2024), part, files
        )
        counts["measurement"] += m
        discharged = np.flatnonzero(rng.random(n) < 0.8)
        d = len(discharged)
        out = intake[discharged] + rng.integers(30, 400, d)
        discharge = {
            k: (v.take(pa.array(discharged)) if isinstance(v, pa.Array) else v[discharged])
            for k, v in common.items()
        } | {
            "record_id": rec(d, "discharge"),
            "discharge_date": _dates(out),
            "end_reason": rng.choice([1, 2, 3, 4, 9], d, p=[0.6, 0.2, 0.1, 0.02, 0.08]).astype(
                np.int32
            ),
            "audit": pa.nulls(d, pa.int32()),
            "dudit": pa.nulls(d, pa.int32()),
            "housing": rng.choice([1, 2, 3, 4, 5, 9], d).astype(np.int32),
            "employment": rng.choice([1, 2, 3, 4, 9], d).astype(np.int32),
            "followup_arranged": rng.integers(0, 2, d).astype(np.int32),
            "satisfaction": pa.nulls(d, pa.int32()),
        }
        _write(root, "discharge", discharge, 2021 + out // 365, part, files)
        counts["discharge"] += d
        chosen = rng.random(d) < 0.375  # 0.8 × 0.375 = 0.3 follow-ups per episode
        followed = discharged[chosen]
        f = len(followed)
        when = out[chosen] + 365
        followup = {
            k: (v.take(pa.array(followed)) if isinstance(v, pa.Array) else v[followed])
            for k, v in common.items()
        } | {
            "record_id": rec(f, "followup"),
            "followup_date": _dates(when),
            "followup_status": rng.choice([1, 2, 3], f, p=[0.7, 0.2, 0.1]).astype(np.int32),
            "use_days_30": rng.integers(0, 31, f).astype(np.int32),
            "housing": rng.choice([1, 2, 3, 4, 5, 9], f).astype(np.int32),
            "employment": rng.choice([1, 2, 3, 4, 9], f).astype(np.int32),
            "readmitted": rng.integers(0, 2, f).astype(np.int32),
        }
        _write(root, "followup", followup, 2021 + when // 365, part, files)
        counts["followup"] += f
        print(f"  chunk {part}: {start + n:,} episodes written", flush=True)
    npr_rows = [
        {"provider_orgnr": p, "episodes": int(episodes / len(providers) / 3 * 1.1), "upload_id": 1}
        for p in providers
    ]
    npr_files = []
    stored = pa.schema([f for f in warehouse_schema(Form.NPR_COUNTS) if f.name != "year"])
    for year in (2021, 2022, 2023):
        directory = root / "npr_counts" / f"year={year}"
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(npr_rows, schema=stored), directory / "part-0.parquet")
        npr_files.append(str(directory / "part-0.parquet"))
    tables = {
        name: TableSnapshot(name=name, delta_version=0, files=paths, row_count=counts[name])
        for name, paths in files.items()
    }
    tables["npr_counts"] = TableSnapshot(
        name="npr_counts", delta_version=0, files=npr_files, row_count=3 * len(npr_rows)
    )
    return ReleaseManifest(release=1, created_at=datetime.now(UTC), tables=tables)


def pandas_three(manifest: ReleaseManifest) -> pd.DataFrame:
    """plan, mutual_end and waiting_days per provider and year, the straightforward pandas way."""
    m = pq.read_table(
        manifest.files("measurement"),
        columns=[
            "record_id",
            "episode_id",
            "provider_orgnr",
            "measure_date",
            "status",
            "treatment_plan",
        ],
    ).to_pandas()
    m = m.sort_values(["provider_orgnr", "episode_id", "measure_date", "record_id"])
    first = m.drop_duplicates(["provider_orgnr", "episode_id"])
    first = first[first.status == 1]
    first = first.assign(
        year=pd.to_datetime(first.measure_date).dt.year, yes=first.treatment_plan == 2
    )
    plan = first.groupby(["provider_orgnr", "year"]).yes.agg(["sum", "count"])
    del m, first
    d = pq.read_table(
        manifest.files("discharge"), columns=["provider_orgnr", "discharge_date", "end_reason"]
    ).to_pandas()
    d = d[d.end_reason.isin([1, 2])]
    d = d.assign(year=pd.to_datetime(d.discharge_date).dt.year, yes=d.end_reason == 1)
    mutual = d.groupby(["provider_orgnr", "year"]).yes.agg(["sum", "count"])
    b = pq.read_table(
        manifest.files("basis"), columns=["provider_orgnr", "intake_date", "referral_date"]
    ).to_pandas()
    b = b.dropna(subset=["referral_date"])
    b = b.assign(
        year=pd.to_datetime(b.intake_date).dt.year,
        wait=(pd.to_datetime(b.intake_date) - pd.to_datetime(b.referral_date)).dt.days,
    )
    waiting = b.groupby(["provider_orgnr", "year"]).wait.median()
    return pd.concat(
        {
            "plan": plan["sum"] / plan["count"],
            "mutual_end": mutual["sum"] / mutual["count"],
            "waiting_days": waiting,
        }
    )


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=10_000_000)
    parser.add_argument("--dir", type=Path, default=Path("bench/out"))
    parser.add_argument("--runs", type=int, default=2, help="timed runs; the best is reported")
    parser.add_argument("--per-indicator", action="store_true")
    parser.add_argument("--steps", action="store_true", help="print each engine step's time")
    args = parser.parse_args()
    if args.steps:
        logging.basicConfig(format="    %(message)s")
        logging.getLogger("indicators").setLevel(logging.DEBUG)
    manifest_path = args.dir / f"manifest-{args.episodes}.json"
    if manifest_path.exists():
        manifest = ReleaseManifest.read(manifest_path)
        print(f"reusing the release in {args.dir}")
    else:
        started = time.perf_counter()
        manifest = build(args.dir / str(args.episodes), args.episodes)
        manifest.write(manifest_path)
        print(f"built in {time.perf_counter() - started:.1f} s")
    rows = {name: t.row_count for name, t in manifest.tables.items()}
    print(f"release: {rows}")
    hierarchy = Hierarchy.default()
    times = []
    for run in range(args.runs):
        print(f"load average before run {run + 1}: {_load()}")
        started = time.perf_counter()
        table = compute(manifest, hierarchy=hierarchy)
        times.append(time.perf_counter() - started)
        print(f"  run {run + 1}: {times[-1]:.1f} s")
    engine_seconds = min(times)
    engine_peak = _peak_gb()
    print(
        f"duckdb, full catalogue ({len({*table.column('indicator_id').to_pylist()})} "
        f"indicators, {table.num_rows} result rows): best of {args.runs} {engine_seconds:.1f} s, "
        f"peak RSS {engine_peak:.2f} GB (load average now {_load()})"
    )
    if args.per_indicator:
        for definition in load_catalogue():
            started = time.perf_counter()
            aggregates(manifest, hierarchy=hierarchy, catalogue=[definition])
            print(f"  {definition.id:<18} alone: {time.perf_counter() - started:6.1f} s")
    started = time.perf_counter()
    baseline = pandas_three(manifest)
    pandas_seconds = time.perf_counter() - started
    print(
        f"pandas, three indicators ({len(baseline)} values): {pandas_seconds:.1f} s, "
        f"peak RSS so far {_peak_gb():.2f} GB"
    )
    print(
        f"ratio duckdb full catalogue / pandas three indicators: "
        f"{engine_seconds / pandas_seconds:.2f}"
    )
    print(
        f"targets: ≤ 20 s {'met' if engine_seconds <= 20 else 'NOT met'}, "
        f"≤ 4 GB {'met' if engine_peak <= 4 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
