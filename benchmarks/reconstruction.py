"""Variants of one-shot least-squares reconstruction on the default MNIST model (seed 0).

Measures, beside the defaults (magnitude / norm masks, 4,096 calibration images, damping 0.01,
logit targets for the last hidden layer):
  * calibration size 1,024 / 16,384;
  * damping 0.001 / 0.1;
  * no logit targets (the last hidden layer fitted to its own dense pre-activations);
  * weight masks chosen by OBS saliency instead of magnitude (selection is a separate axis).

Timing is fair: per (method, k) every variant first runs once untimed (warm-up), then ``--repeats``
rounds run every variant once each, in an order that rotates every round (AB, BA, ...). The clock
holds exactly what each column names: ``lstsq_seconds`` the call to ``reconstruct`` alone (masks,
calibration set and both accuracy evaluations are outside it), ``select_seconds`` the mask
selection alone (magnitude masks, or OBS's). Each is reported as the median over the rounds with its
minimum and maximum. Writes ``results/benchmarks/reconstruction.csv``.

    python benchmarks/reconstruction.py [--repeats 3] [--out results/benchmarks/reconstruction.csv]
    python benchmarks/reconstruction.py --smoke   # a random small network, seconds, writes nothing
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from prunelib.core import pruning
from prunelib.core.evaluate import evaluate_kernels
from prunelib.core.reconstruct import calibration_set, obs_weight_masks, reconstruct

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, spread  # noqa: E402

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


def _inputs(smoke: bool):
    """(kernels, x_train, x_test, y_test): the cached default MNIST model, or a small random one."""
    if smoke:
        rng = np.random.default_rng(0)
        sizes = (784, 64, 32, 10)
        kernels = [rng.normal(scale=a**-0.5, size=(a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
        x = rng.random((2000, 28, 28), dtype=np.float32)
        return kernels, x, x[:500], rng.integers(0, 10, 500)
    from prunelib.data import load_dataset
    from prunelib.models import mlp
    from prunelib.models.config import TrainConfig

    data = load_dataset("mnist")
    return mlp.get_kernels(mlp.train_or_load(data, TrainConfig())), data.x_train, data.x_test, data.y_test


def measure(kernels, x_train, x_test, y_test, *, grid=GRID, variants=VARIANTS, repeats: int = 3) -> pd.DataFrame:
    """One row per (variant, method, k): accuracies and the timings with their spread."""
    calibration = {n: calibration_set(x_train, n, seed=0) for n in {opts.get("n", 4096) for opts in variants.values()}}
    rows = []
    for method, k in grid:
        chosen = {v: o for v, o in variants.items() if not (o.get("select") == "obs" and method != "weight")}

        def selector(opts):
            x = calibration[opts.get("n", 4096)]
            if opts.get("select") == "obs":
                return lambda: obs_weight_masks(kernels, k, x)
            return lambda: pruning.compute_masks(kernels, k, method)

        select_s, masks = interleaved({v: selector(o) for v, o in chosen.items()}, repeats=repeats)

        def fitter(v, opts):
            x = calibration[opts.get("n", 4096)]
            return lambda: reconstruct(
                kernels, masks[v], x, damping=opts.get("damping", 0.01), logit_targets=opts.get("logit_targets", True)
            )

        lstsq_s, fixed = interleaved({v: fitter(v, o) for v, o in chosen.items()}, repeats=repeats)
        for v in chosen:
            plain = evaluate_kernels(pruning.apply_masks(kernels, masks[v]), x_test, y_test)[0]
            rows.append(
                {
                    "variant": v,
                    "method": method,
                    "k": k,
                    "plain_accuracy": plain,
                    "lstsq_accuracy": evaluate_kernels(fixed[v], x_test, y_test)[0],
                    "sparsity": pruning.sparsity(fixed[v]),
                    **spread(lstsq_s[v], "lstsq_seconds_"),
                    **spread(select_s[v], "select_seconds_"),
                }
            )
            print(
                {key: rows[-1][key] for key in ("variant", "method", "k", "lstsq_accuracy", "lstsq_seconds_median")},
                flush=True,
            )
    table = pd.DataFrame(rows)
    return table.drop(columns=["select_seconds_n"]).rename(columns={"lstsq_seconds_n": "repeats"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/reconstruction.csv"))
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per variant (after one warm-up)")
    parser.add_argument("--smoke", action="store_true", help="a small random network, 2 rounds; writes nothing")
    args = parser.parse_args(argv)
    kernels, x_train, x_test, y_test = _inputs(args.smoke)
    if args.smoke:
        variants = {v: {**o, "n": 1000} for v, o in VARIANTS.items()}  # >= the first fan-in, 784
        table = measure(
            kernels, x_train, x_test, y_test, grid=[("weight", 90), ("unit", 50)], variants=variants, repeats=2
        )
        print(table.to_string(index=False))
        return 0
    t0 = time.perf_counter()
    table = measure(kernels, x_train, x_test, y_test, repeats=args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.4f")
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
