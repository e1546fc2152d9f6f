"""The recovery strategies before and after they moved onto the pruning callback, side by side.

Fine-tuning, gradual pruning and IMP trained masked Dense layers (``MaskedDense``: the kernel times
its mask in the forward pass, Adam's moments zeroed at pruned positions) until commit faab8a0; they
now train plain layers under :class:`prunelib.toolkit.masking.MaskingCallback` (the mask applied by
a variable constraint after every optimizer step). Both keep live weights on the same trajectory in
exact arithmetic (the same forward pass, the same gradients of live weights, per-weight Adam), so
the tables should agree up to floating-point order. This script joins the two ``recovery.csv``
tables of the same trained models and writes ``results/benchmarks/recovery_switch.csv``.

Reproduce (same machine for both runs: the trained models are cached and shared)::

    git worktree add /tmp/before faab8a0 && cd /tmp/before
    python -m prunelib run --preset full --no-recipes --no-sensitivity --no-aware --no-baselines \\
        --recovery finetune gradual imp --recovery-seeds 1 --results /tmp/recov_old --workers 2
    cd -   # this checkout
    python -m prunelib run --preset full --seeds 1 --no-recipes --no-sensitivity --no-aware --no-baselines \\
        --recovery finetune gradual imp --recovery-seeds 1 --results /tmp/recov_new --workers 2
    python benchmarks/recovery_switch.py /tmp/recov_old /tmp/recov_new
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

OUT = Path("results/benchmarks/recovery_switch.csv")
KEY = ["dataset", "method", "k", "strategy", "seed"]


def joined(before: Path, after: Path) -> pd.DataFrame:
    """One row per (dataset, method, k, strategy, seed) found in both runs' recovery tables."""
    tables = []
    for root in (before, after):
        frames = [pd.read_csv(p) for p in sorted(root.glob("*/recovery.csv"))]
        if not frames:
            raise SystemExit(f"no */recovery.csv under {root}")
        tables.append(pd.concat(frames, ignore_index=True))
    both = tables[0].merge(tables[1], on=KEY, suffixes=("_masked_layers", "_callback"))
    both["difference"] = both["accuracy_callback"] - both["accuracy_masked_layers"]
    columns = [
        *KEY,
        "dense_accuracy_masked_layers",
        "dense_accuracy_callback",
        "accuracy_masked_layers",
        "accuracy_callback",
        "difference",
        "prunable_sparsity_masked_layers",
        "prunable_sparsity_callback",
        "seconds_masked_layers",
        "seconds_callback",
    ]
    return both[columns]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="results directory of the run before the switch")
    parser.add_argument("after", type=Path, help="results directory of the run after it")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    table = joined(args.before, args.after)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.4f")
    print(table[[*KEY, "accuracy_masked_layers", "accuracy_callback", "difference"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
