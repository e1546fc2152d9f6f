"""Peak resident memory of a command and all its child processes, summed, sampled twice a second.

``ru_maxrss`` (and ``/usr/bin/time -v``) report the largest *single* process; the study runs its
cells in worker processes beside an idle parent, so what the machine must hold is the sum over
the process tree. Prints and appends one row to ``--out`` (default
``results/benchmarks/memory_tree.csv``).

    python benchmarks/memory_tree.py [--label NAME] -- python -m prunelib run ...
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil


def tree_rss(root: psutil.Process) -> tuple[int, int]:
    """(sum, largest) resident bytes over ``root`` and its descendants."""
    sizes = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            sizes.append(proc.memory_info().rss)
        except psutil.Error:  # exited between listing and reading
            pass
    return sum(sizes), max(sizes, default=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/memory_tree.csv"))
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    t0 = time.perf_counter()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    peak_sum = peak_one = 0
    while child.poll() is None:
        total, largest = tree_rss(root)
        peak_sum, peak_one = max(peak_sum, total), max(peak_one, largest)
        time.sleep(args.interval)
    row = {
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "label": args.label,
        "command": shlex.join(command),
        "exit_code": child.returncode,
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_tree_rss_gb": round(peak_sum / 2**30, 3),
        "peak_process_rss_gb": round(peak_one / 2**30, 3),
    }
    print(row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = pd.read_csv(args.out) if args.out.is_file() else pd.DataFrame()
    pd.concat([old, pd.DataFrame([row])], ignore_index=True).to_csv(args.out, index=False)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
