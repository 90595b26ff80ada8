"""Benchmark: time and peak memory of generating a synthetic register.

Usage: python bench/generate.py [EPISODES] [--format csv|xlsx|parquet] [--error-rate R] [--out DIR]
(default 10,000,000 episodes, CSV, into a temporary directory that is removed afterwards).
"""

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from etl.generate import generate_register


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("episodes", type=int, nargs="?", default=10_000_000)
    parser.add_argument("--format", default="csv", choices=["csv", "xlsx", "parquet"])
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="kvarus-bench-"))
    start = time.perf_counter()
    summary = generate_register(
        out,
        episodes=args.episodes,
        seed=args.seed,
        file_format=args.format,
        error_rate=args.error_rate,
    )
    elapsed = time.perf_counter() - start
    # ru_maxrss is in kilobytes on Linux.
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    rows = sum(summary.rows.values())
    print(f"episodes: {args.episodes:,}  format: {args.format}  error rate: {args.error_rate}")
    for form, count in summary.rows.items():
        print(f"  {form.value:<12} {count:>12,} rows")
    rate = f"{args.episodes / elapsed:,.0f} episodes/s, {rows / elapsed:,.0f} rows/s"
    print(f"time: {elapsed:.1f} s  ({rate})")
    print(f"peak memory (ru_maxrss): {peak_mib:,.0f} MiB")
    print(f"output: {size / 2**20:,.0f} MiB")
    if args.out is None:
        shutil.rmtree(out)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
