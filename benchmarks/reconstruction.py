"""Variants of one-shot least-squares reconstruction on the default MNIST model (seed 0).

Measures, beside the defaults (magnitude / norm masks, 4,096 calibration images, damping 0.01,
logit targets for the last hidden layer):
  * calibration size 1,024 / 16,384;
  * damping 0.001 / 0.1;
  * no logit targets (the last hidden layer fitted to its own dense pre-activations);
  * weight masks chosen by OBS saliency instead of magnitude (selection is a separate axis).
Each row: accuracy and seconds of the correction. Writes ``results/benchmarks/reconstruction.csv``.

    python benchmarks/reconstruction.py [--out results/benchmarks/reconstruction.csv]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from prunelib.models import mlp
from prunelib.core import pruning
from prunelib.models.config import TrainConfig
from prunelib.data import load_dataset
from prunelib.core.evaluate import evaluate_kernels
from prunelib.core.reconstruct import calibration_set, obs_weight_masks, reconstruct

GRID = [("weight", 95), ("weight", 97), ("weight", 99), ("unit", 80), ("unit", 90)]
VARIANTS = {
    "default": {},
    "calibration 1024": {"n": 1024},
    "calibration 16384": {"n": 16384},
    "damping 0.001": {"damping": 1e-3},
    "damping 0.1": {"damping": 1e-1},
    "no logit targets": {"logit_targets": False},
    "OBS selection": {"select": "obs"},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/reconstruction.csv"))
    args = parser.parse_args(argv)
    data = load_dataset("mnist")
    kernels = mlp.get_kernels(mlp.train_or_load(data, TrainConfig()))
    rows = []
    for variant, opts in VARIANTS.items():
        calibration = calibration_set(data.x_train, opts.get("n", 4096), seed=0)
        for method, k in GRID:
            if opts.get("select") == "obs" and method != "weight":
                continue
            t0 = time.perf_counter()
            if opts.get("select") == "obs":
                masks = obs_weight_masks(kernels, k, calibration)
            else:
                masks = pruning.compute_masks(kernels, k, method)
            plain = evaluate_kernels(pruning.apply_masks(kernels, masks), data.x_test, data.y_test)[0]
            fixed = reconstruct(kernels, masks, calibration, damping=opts.get("damping", 0.01),
                                logit_targets=opts.get("logit_targets", True))
            seconds = time.perf_counter() - t0
            accuracy = evaluate_kernels(fixed, data.x_test, data.y_test)[0]
            rows.append({"variant": variant, "method": method, "k": k, "plain_accuracy": plain,
                         "lstsq_accuracy": accuracy, "seconds": seconds,
                         "sparsity": pruning.sparsity(fixed)})
            print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False, float_format="%.4f")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
