"""Peak resident memory of the study against its number of seeds.

Runs ``python -m prunelib run --quick`` (MNIST, from an empty cache, into a scratch directory) with
1 and 3 seeds, each in its own process, and reports each process's peak resident set size
(``ru_maxrss`` of the finished child), so growth with the number of seeds is visible.
Writes ``results/benchmarks/memory.csv``.

    python benchmarks/memory.py [--seeds 1 3] [--dataset mnist]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def peak_rss_gb(argv: list[str]) -> tuple[float, float]:
    """Run ``python -m prunelib`` with ``argv`` in a child process; its peak RSS (GB) and seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", (
        "import resource, sys\n"
        "from prunelib.cli import main\n"
        f"status = main({argv!r})\n"
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(status)\n")], capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        raise SystemExit(f"run failed:\n{proc.stderr[-2000:]}")
    peak_kb = int(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PEAK_KB")))
    return peak_kb / 1024**2, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/memory.csv"))
    args = parser.parse_args(argv)
    rows = []
    for n in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            gb, seconds = peak_rss_gb(["run", "--quick", "--dataset", args.dataset, "--seeds", str(n),
                                       "--recovery-seeds", "1", "--results", f"{tmp}/results",
                                       "--cache", f"{tmp}/cache", "--no-progress"])
        rows.append({"study": f"quick {args.dataset}", "seeds": n, "peak_rss_gb": gb, "seconds": seconds})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["growth_vs_first"] = table["peak_rss_gb"] / table["peak_rss_gb"].iloc[0] - 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.3f")
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
