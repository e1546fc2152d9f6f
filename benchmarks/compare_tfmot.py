"""Side by side with TensorFlow Model Optimization: gradual magnitude pruning, same start, same recipe.

Both tools start from the same trained MNIST model (prunelib's cached default), prune the hidden
layers (never the logits) to each target along the same cubic schedule (Zhu & Gupta; tfmot's
``PolynomialDecay(power=3)``) with the same optimizer, batch, learning-rate schedule and epochs.
tfmot needs tf-keras, so it runs in a subprocess with ``TF_USE_LEGACY_KERAS=1`` and the packages of
``benchmarks/requirements.txt`` (``make bench-tfmot-env`` installs them into ``.venv-tfmot``).

Rows: ``tfmot`` (float32, its only tested precision), ``prunelib`` at float32 (the like-for-like
row), and prunelib's defaults (bf16 matmuls, distillation from the dense model). Also a plain dense
epoch with the same batch for scale. Writes ``results/benchmarks/tfmot.csv``.

Fair timing: every run (each tool, each target, each round) is a fresh process of its own, tfmot's
as prunelib's, with data and model loaded before the clock. ``--repeats`` rounds run every
configuration once per target, in an order rotating every round (AB, BA, ...). The first epoch of a
fresh process includes graph tracing, so it is reported on its own (``first_epoch_s``) and the
per-epoch figure is the median of the later epochs only (``steady_epoch_s``; needs ``--epochs`` >= 2),
both tools alike. Seconds are medians over the rounds with min and max, and
``seconds_vs_tfmot_*`` is the paired (same round, same target) ratio to tfmot: a claim of
"faster" needs its max below 1.

    python benchmarks/compare_tfmot.py [--targets 90 95 99] [--epochs 2] [--repeats 3]
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

from prunelib.core import pruning
from prunelib.core.evaluate import evaluate_kernels
from prunelib.data import load_dataset
from prunelib.models import mlp, recovery
from prunelib.models.config import TrainConfig
from prunelib.toolkit.schedules import PolynomialDecay

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import epoch_timer_class, in_own_process, ratio_spread, rotation, spread  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


EpochTimer = epoch_timer_class(keras.callbacks.Callback)


def run_tfmot(model, data, config: recovery.RecoveryConfig, targets, seed: int, site: Path) -> list[dict]:
    if not (site / "tensorflow_model_optimization").is_dir():
        sys.exit(f"tfmot is not installed in {site}; run `make bench-tfmot-env` first")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.npz"
        np.savez(
            inputs,
            **{f"k{i}": w for i, w in enumerate(mlp.get_kernels(model))},
            x_train=data.x_train,
            y_train=data.y_train,
            x_test=data.x_test,
            y_test=data.y_test,
        )
        recipe = {
            "targets": list(targets),
            "epochs": config.recipe.epochs,
            "batch_size": config.recipe.batch_size,
            "learning_rate": config.recipe.learning_rate,
            "ramp_fraction": config.ramp_fraction,
            "every": config.every,
            "seed": seed,
            "train_logits": config.train_logits,
        }
        env = {
            **os.environ,
            "TF_USE_LEGACY_KERAS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        }
        out = subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "_tfmot_worker.py"),
                "--inputs",
                str(inputs),
                "--recipe",
                json.dumps(recipe),
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def run_prunelib(model, data, config: recovery.RecoveryConfig, k: float, seed: int) -> dict:
    """prunelib's gradual pruning, timed per epoch like the tfmot worker."""
    timer = EpochTimer()
    net = recovery.trainable_copy(model, config)
    steps = config.recipe.epochs * mlp.steps_per_epoch(len(data.x_train), config.recipe.batch_size)
    end = max(round(config.ramp_fraction * steps), 1)
    schedule = recovery.pruning_callback(net, "weight", schedule=PolynomialDecay(0, k, 0, end, frequency=config.every))
    t0 = time.perf_counter()
    recovery.fit_recovery(net, model, data, config, seed, [schedule, timer])
    seconds = time.perf_counter() - t0
    kernels = mlp.get_kernels(net)
    accuracy, _ = evaluate_kernels(kernels, data.x_test, data.y_test)
    return {
        "k": k,
        "accuracy": accuracy,
        "seconds": seconds,
        "epoch_seconds": timer.times,
        "sparsity": pruning.sparsity(kernels),
    }


def prunelib_job(recipe_name: str, epochs: int, k: float, seed: int) -> dict:
    """run_prunelib in a fresh process: data and the cached dense model load before the clock."""
    data = load_dataset("mnist")
    model = mlp.train_or_load(data, TrainConfig(seed=seed))
    return run_prunelib(model, data, configs(epochs)[recipe_name], k, seed)


def configs(epochs: int) -> dict[str, recovery.RecoveryConfig]:
    default = recovery.RecoveryConfig().with_recipe(epochs=epochs)
    return {
        "float32": replace(default.with_recipe(precision="float32"), distill=0.0),
        "default (bf16 + distill)": default,
    }


def plain_epoch(model, data, config: recovery.RecoveryConfig, seed: int) -> float:
    """Seconds of one ordinary dense training epoch with the same batch and precision (2nd epoch)."""
    timer = EpochTimer()
    clone = mlp.with_weights(model, mlp.get_kernels(model))
    mlp.fit(clone, data, replace(config.recipe, epochs=2), seed=seed, callbacks=[timer])
    return timer.times[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=float, nargs="+", default=[90, 95, 99])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per (configuration, target)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--site", type=Path, default=ROOT / ".venv-tfmot")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "tfmot.csv")
    args = parser.parse_args(argv)

    data = load_dataset("mnist")
    model = mlp.train_or_load(data, TrainConfig(seed=args.seed))
    alike = configs(args.epochs)["float32"]
    runs = {
        "tfmot float32": lambda k: run_tfmot(model, data, alike, [k], args.seed, args.site)[0],
        **{
            f"prunelib {name}": (lambda k, name=name: in_own_process(prunelib_job, name, args.epochs, k, args.seed)[0])
            for name in configs(args.epochs)
        },
    }
    samples: dict[tuple[str, float], list[dict]] = {}
    for r in range(args.repeats):
        for k in args.targets:
            for name in rotation(list(runs), r):
                samples.setdefault((name, k), []).append(runs[name](k))
                print(name, k, f"round {r}", round(samples[(name, k)][-1]["seconds"], 2), flush=True)
    rows = []
    for (name, k), got in samples.items():
        tool, recipe = name.split(" ", 1)
        firsts = [g["epoch_seconds"][0] for g in got]
        steady = [float(np.median(g["epoch_seconds"][1:])) if len(g["epoch_seconds"]) > 1 else np.nan for g in got]
        row = {
            "tool": tool,
            "recipe": recipe,
            "k": k,
            "rounds": len(got),
            "accuracy": float(np.median([g["accuracy"] for g in got])),
            "sparsity": got[-1]["sparsity"],
            "epochs": args.epochs,
        }
        for column, values in (
            ("seconds", [g["seconds"] for g in got]),
            ("first_epoch_s", firsts),
            ("steady_epoch_s", steady),
        ):
            row |= {key: v for key, v in spread(values, f"{column}_").items() if key[-2:] not in ("q1", "q3", "_n")}
        base = [g["seconds"] for g in samples[("tfmot float32", k)]]
        row |= {
            key: v
            for key, v in ratio_spread([g["seconds"] for g in got], base, "seconds_vs_tfmot_").items()
            if key[-2:] not in ("q1", "q3", "_n")
        }
        rows.append(row)
    table = pd.DataFrame(rows)
    plain = [plain_epoch(model, data, alike, args.seed) for _ in range(args.repeats)]
    table["plain_epoch_s_float32_median"] = float(np.median(plain))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.3f")
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
