"""The challenge's unit + lstsq, side by side: the last hidden layer fitted to the minimum-norm logit
targets (clipped by the ReLU; the sweep's target until this benchmark) against the non-negative
ones (:mod:`prunelib.core.logit_targets`, what the sweep fits now).

Same trained challenge models (the study's cache: seeds and recipe of ``ExperimentConfig()``), same
unit masks (smallest column norm), same 4,096 calibration images per seed, same solver; only the
target of the last hidden layer differs. Test accuracy per (dataset, seed, k, target) into
``results/benchmarks/unit_refit_targets.csv``; prints the mean over seeds.

    python benchmarks/unit_refit_targets.py [--datasets mnist fashion-mnist] [--seeds 5] [--ks 80 90 95 97 99]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from prunelib.core import reconstruct  # noqa: E402
from prunelib.core.evaluate import evaluate_kernels  # noqa: E402
from prunelib.core.pruning import unit_masks  # noqa: E402

OUT = Path("results/benchmarks/unit_refit_targets.csv")


def minimum_norm_targets(h_dense, keep, logits, *args, **kwargs):
    """The former target: the dense activations plus the minimum-norm change (clipped by the fit's
    rule below, since its negative entries are read as 'at or below zero')."""
    return reconstruct.logit_matching_targets(h_dense, keep, logits, np.float64)


def former_rule(wanted, pre_dense):
    return np.where(wanted > 0, wanted, np.minimum(pre_dense, wanted))


def rows(dataset: str, seed: int, ks: list[float]) -> list[dict]:
    from prunelib.base.quiet import framework_import
    from prunelib.data import load_dataset
    from prunelib.study.config import ExperimentConfig

    with framework_import():
        from prunelib.models import mlp

    data = load_dataset(dataset)
    model = mlp.train_or_load(data, ExperimentConfig().train_config(seed))
    kernels = mlp.get_kernels(model)
    x = reconstruct.calibration_set(data.x_train, 4096, seed)
    out = []
    for k in ks:
        masks = unit_masks(kernels, k)
        for target in ("minimum-norm", "non-negative"):
            t0 = time.perf_counter()
            if target == "minimum-norm":
                with (
                    mock.patch.object(reconstruct, "nonnegative_targets", minimum_norm_targets),
                    mock.patch.object(reconstruct, "relu_layer_targets", former_rule),
                ):
                    fitted = reconstruct.reconstruct(kernels, masks, x)
            else:
                fitted = reconstruct.reconstruct(kernels, masks, x)
            seconds = time.perf_counter() - t0
            accuracy, _ = evaluate_kernels(fitted, data.x_test, data.y_test)
            out.append(dict(dataset=dataset, seed=seed, k=k, target=target, accuracy=accuracy, seconds=seconds))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--ks", nargs="+", type=float, default=[80, 90, 95, 97, 99])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    table = pd.DataFrame([r for d in args.datasets for s in range(args.seeds) for r in rows(d, s, args.ks)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.4f")
    summary = table.pivot_table(index=["dataset", "k"], columns="target", values="accuracy", aggfunc="mean")
    print(summary.round(2).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
