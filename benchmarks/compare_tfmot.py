"""Side by side with TensorFlow Model Optimization: gradual magnitude pruning, same start, same recipe.

Both tools start from the same trained MNIST model (prunelib's cached default), prune the hidden
layers (never the logits) to each target along the same cubic schedule (Zhu & Gupta; tfmot's
``PolynomialDecay(power=3)``) with the same optimizer, batch, learning-rate schedule and epochs.
tfmot needs tf-keras, so it runs in a subprocess with ``TF_USE_LEGACY_KERAS=1`` and the packages of
``benchmarks/requirements.txt`` (``make bench-tfmot-env`` installs them into ``.venv-tfmot``).

Rows: ``tfmot`` (float32, its only tested precision), ``prunelib`` at float32 (the like-for-like
row), and prunelib's defaults (bf16 matmuls, distillation from the dense model). Also a plain dense
epoch with the same batch for scale. Writes ``results/benchmarks/tfmot.csv``.

    python benchmarks/compare_tfmot.py [--targets 90 95 99] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from prunelib.models import masked
from prunelib.core import pruning
from prunelib.models import recovery
from prunelib.models import mlp
from prunelib.models.config import TrainConfig
from prunelib.data import load_dataset
from prunelib.core.evaluate import evaluate_kernels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import epoch_timer_class  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


EpochTimer = epoch_timer_class(keras.callbacks.Callback)


def run_tfmot(model, data, config: recovery.RecoveryConfig, targets, seed: int, site: Path) -> list[dict]:
    if not (site / "tensorflow_model_optimization").is_dir():
        sys.exit(f"tfmot is not installed in {site}; run `make bench-tfmot-env` first")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.npz"
        np.savez(inputs, **{f"k{i}": w for i, w in enumerate(mlp.get_kernels(model))},
                 x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
        recipe = {"targets": list(targets), "epochs": config.recipe.epochs,
                  "batch_size": config.recipe.batch_size, "learning_rate": config.recipe.learning_rate, "ramp_fraction": config.ramp_fraction,
                  "every": config.every, "seed": seed, "train_logits": config.train_logits}
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "_tfmot_worker.py"),
                              "--inputs", str(inputs), "--recipe", json.dumps(recipe)],
                             env=env, check=True, capture_output=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def run_prunelib(model, data, config: recovery.RecoveryConfig, k: float, seed: int) -> dict:
    """prunelib's gradual pruning, timed per epoch like the tfmot worker."""
    timer = EpochTimer()
    net = masked.masked_mlp(model, precision=config.recipe.precision, train_logits=config.train_logits)
    steps = config.recipe.epochs * mlp.steps_per_epoch(len(data.x_train), config.recipe.batch_size)
    schedule = masked.GradualPruning(k, "weight", end_step=round(config.ramp_fraction * steps), every=config.every)
    t0 = time.perf_counter()
    recovery.fit_recovery(net, model, data, config, seed, [schedule, timer])
    seconds = time.perf_counter() - t0
    kernels = mlp.get_kernels(masked.strip(net))
    accuracy, _ = evaluate_kernels(kernels, data.x_test, data.y_test)
    return {"k": k, "accuracy": accuracy, "seconds": seconds, "epoch_seconds": timer.times,
            "sparsity": pruning.sparsity(kernels)}


def plain_epoch(model, data, config: recovery.RecoveryConfig, seed: int) -> float:
    """Seconds of one ordinary dense training epoch with the same batch and precision (2nd epoch)."""
    timer = EpochTimer()
    clone = mlp.with_weights(model, mlp.get_kernels(model))
    mlp.fit(clone, data, replace(config.recipe, epochs=2), seed=seed, callbacks=[timer])
    return timer.times[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=float, nargs="+", default=[90, 95, 99])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--site", type=Path, default=ROOT / ".venv-tfmot")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "tfmot.csv")
    args = parser.parse_args()

    data = load_dataset("mnist")
    model = mlp.train_or_load(data, TrainConfig(seed=args.seed))
    default = recovery.RecoveryConfig().with_recipe(epochs=args.epochs)
    alike = replace(default.with_recipe(precision="float32"), distill=0.0)
    rows = []
    for r in run_tfmot(model, data, alike, args.targets, args.seed, args.site):
        rows.append({"tool": "tfmot", "recipe": "float32", **r})
    for name, config in [("float32", alike), ("default (bf16 + distill)", default)]:
        for k in args.targets:
            rows.append({"tool": "prunelib", "recipe": name, **run_prunelib(model, data, config, k, args.seed)})
    table = pd.DataFrame(rows)
    table["epochs"] = args.epochs
    table["seconds_per_epoch"] = table.pop("epoch_seconds").map(np.mean)
    table["plain_epoch_seconds_float32"] = plain_epoch(model, data, alike, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.3f")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
