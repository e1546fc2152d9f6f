"""Peak resident memory of the study against its number of seeds, with and without worker processes.

Runs ``python -m prunelib run --quick`` (MNIST, from an empty cache, into a scratch directory) with
1 and 3 seeds, once as the default run (cells in short-lived worker processes) and once with
``--in-process``, each in its own process tree. Memory is the tree's resident set summed over the
driver and its workers, sampled every 0.2 s (``ru_maxrss`` would see only the largest process).
``--repeats`` rounds run every configuration once, in an order rotating every round (AB, BA, ...),
each from an empty cache; memory and seconds are medians over the rounds with min and max.
Writes ``results/benchmarks/memory.csv``.

    python benchmarks/memory.py [--seeds 1 3] [--dataset mnist] [--repeats 3]
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
import psutil
from memory_tree import tree_rss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import rotation, spread  # noqa: E402


def peak_tree_gb(argv: list[str]) -> tuple[float, float, float]:
    """Run ``python -m prunelib`` with ``argv``: (peak tree GB, peak single-process GB, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "prunelib", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    root = psutil.Process(proc.pid)
    peak_sum = peak_one = 0
    while proc.poll() is None:
        total, largest = tree_rss(root)
        peak_sum, peak_one = max(peak_sum, total), max(peak_one, largest)
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"run failed:\n{proc.stderr.read()[-2000:]}")
    return peak_sum / 2**30, peak_one / 2**30, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/memory.csv"))
    args = parser.parse_args(argv)
    modes = {"worker processes": [], "in-process": ["--in-process"]}
    configs = [(mode, n) for mode in modes for n in args.seeds]
    samples: dict[tuple[str, int], list[tuple[float, float, float]]] = {c: [] for c in configs}
    for r in range(args.repeats):
        for mode, n in rotation(configs, r):
            with tempfile.TemporaryDirectory() as tmp:
                samples[(mode, n)].append(
                    peak_tree_gb(
                        [
                            "run",
                            "--quick",
                            "--dataset",
                            args.dataset,
                            "--seeds",
                            str(n),
                            "--recovery-seeds",
                            "1",
                            "--results",
                            f"{tmp}/results",
                            "--cache",
                            f"{tmp}/cache",
                            "--no-progress",
                            *modes[mode],
                        ]
                    )
                )
            print(mode, n, f"round {r}", samples[(mode, n)][-1], flush=True)
    rows = []
    for (mode, n), got in samples.items():
        row = {"study": f"quick {args.dataset}", "mode": mode, "seeds": n, "rounds": len(got)}
        for i, column in enumerate(("peak_tree_rss_gb", "peak_process_rss_gb", "seconds")):
            row |= {
                k: v for k, v in spread([g[i] for g in got], f"{column}_").items() if k[-2:] not in ("q1", "q3", "_n")
            }
        rows.append(row)
    table = pd.DataFrame(rows)
    first = table.groupby("mode")["peak_tree_rss_gb_median"].transform("first")
    table["growth_vs_first"] = table["peak_tree_rss_gb_median"] / first - 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.3f")
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
