"""A user's CNN pruned after training: one-shot, re-fitted, and the post-training methods, at the model level.

Issue 36's goals on the Keras ``mnist_convnet`` (Conv2D 32 -> pool -> Conv2D 64 -> pool -> Flatten ->
Dropout -> Dense 10 softmax), trained the usual way (Adam 1e-3, batch 128, 2 epochs) on MNIST per
seed. The two convolutions are pruned, the output layer untouched (``prune_model``'s default):

* weight ``k`` in 80 / 90 / 95 (each conv kernel exactly ``round(k/100 n)`` zeros, or the total under
  a per-unit allocation): ``one-shot`` (``prune_model``), ``magnitude+lstsq`` (``prune_model`` then
  ``reconstruct_model``: least squares over each layer's patches) and the post-training methods
  ``obs-gradual``, ``per-unit-obs-gradual`` and ``search-obs-gradual`` (``post_training_model``);
* filter ``k`` in 25 / 50 / 75: ``one-shot`` (``prune_model(..., "unit")``) and ``unit+lstsq``
  (then ``reconstruct_model``).

Beside it, at weight 95 % (hidden layers), the Keras MNIST MLP (512-512 ReLU, dropout 0.2, softmax;
one-shot, ``magnitude+lstsq``, ``per-unit-obs-gradual`` and ``search-obs-gradual``) and the same MLP
with tanh hidden layers (one-shot, ``magnitude+lstsq``, ``obs-gradual``, ``per-unit-obs-gradual``;
read through Keras with its own activation), trained alike.

4,096 calibration images per seed (drawn by the seed), test accuracy on the 10,000 test images, the
measured sparsity of the conv kernels and the seconds of the pruning call. One row per (seed, k,
method) in ``results/benchmarks/any_model.csv``, appended as each is done (a run that is stopped
resumes where it was). Goals (3-seed means): weight 80 / 90 / 95 >= 98.2 / 97.8 / 92.0; filter 50 %
+ re-fit within 2.0 points of dense.

    python benchmarks/any_model.py [--models mnist_convnet keras_mlp tanh_mlp] [--seeds 0 1 2] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

OUT = Path("results/benchmarks/any_model.csv")
WEIGHT_KS = (80, 90, 95)
FILTER_KS = (25, 50, 75)
METHODS = ("one-shot", "magnitude+lstsq", "obs-gradual", "per-unit-obs-gradual", "search-obs-gradual")
COLUMNS = ["model", "seed", "granularity", "k", "method", "accuracy", "dense_accuracy", "sparsity", "seconds"]


def mnist_convnet(keras):
    """The Keras example's network (keras.io/examples/vision/mnist_convnet)."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ],
        name="mnist_convnet",
    )


def accuracy(model, x, y) -> float:
    return 100.0 * float(np.mean(model.predict(x, batch_size=1000, verbose=0).argmax(1) == y))


def keras_mlp(keras, activation: str = "relu"):
    """The Keras MNIST MLP (keras.io/examples: 512-512, dropout 0.2, softmax), ReLU or another activation."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((784,)),
            layers.Dense(512, activation=activation),
            layers.Dropout(0.2),
            layers.Dense(512, activation=activation),
            layers.Dropout(0.2),
            layers.Dense(10, activation="softmax"),
        ],
        name=f"keras_mlp_{activation}",
    )


MODELS = {
    "mnist_convnet": (mnist_convnet, (28, 28, 1)),
    "keras_mlp": (keras_mlp, (784,)),
    "tanh_mlp": (lambda keras: keras_mlp(keras, "tanh"), (784,)),
}
MLP_METHODS = {
    "keras_mlp": ("one-shot", "magnitude+lstsq", "per-unit-obs-gradual", "search-obs-gradual"),
    "tanh_mlp": ("one-shot", "magnitude+lstsq", "obs-gradual", "per-unit-obs-gradual"),
}


def cases(model: str):
    if model != "mnist_convnet":
        for method in MLP_METHODS[model]:
            yield "weight", 95, method
        return
    for k in WEIGHT_KS:
        for method in METHODS:
            yield "weight", k, method
    for k in FILTER_KS:
        for method in ("one-shot", "unit+lstsq"):
            yield "filter", k, method


def pruned_sparsity(model) -> float:
    """Percent zeros over every kernel but the output layer's (the ones pruned)."""
    kernels = [la.kernel.numpy() for la in model.layers if hasattr(la, "kernel")][:-1]
    return 100.0 * sum(int((w == 0).sum()) for w in kernels) / sum(w.size for w in kernels)


def prune(model, granularity: str, k: float, method: str, x_calib):
    import prunelib

    if granularity == "filter":
        pruned = prunelib.prune_model(model, k, "unit")
        return pruned if method == "one-shot" else prunelib.reconstruct_model(model, pruned, x_calib)
    if method == "one-shot":
        return prunelib.prune_model(model, k)
    if method == "magnitude+lstsq":
        return prunelib.reconstruct_model(model, prunelib.prune_model(model, k), x_calib)
    return prunelib.post_training_model(model, k, x_calib, method=method)


def run_seed(name: str, seed: int, done: set, out: Path, *, train: int | None, epochs: int, ks: dict) -> None:
    import keras

    from prunelib.base.quiet import framework_import
    from prunelib.data import load_dataset

    with framework_import():
        import prunelib  # noqa: F401

    wanted = [c for c in cases(name) if c[1] in ks[c[0]] and (name, seed, *c) not in done]
    if not wanted:
        return
    build, shape = MODELS[name]
    data = load_dataset("mnist")
    x = data.x_train.reshape(-1, *shape).astype(np.float32)[:train]
    y = data.y_train[:train].astype(np.int32)
    x_test, y_test = data.x_test.reshape(-1, *shape).astype(np.float32), data.y_test
    keras.utils.set_random_seed(seed)
    model = build(keras)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=128, epochs=epochs, validation_split=0.1, verbose=0)
    dense = accuracy(model, x_test, y_test)
    x_calib = x[np.random.default_rng(seed).permutation(len(x))[:4096]]
    for granularity, k, method in wanted:
        t0 = time.perf_counter()
        pruned = prune(model, granularity, k, method, x_calib)
        seconds = time.perf_counter() - t0
        row = dict(
            model=name, seed=seed, granularity=granularity, k=k, method=method,
            accuracy=accuracy(pruned, x_test, y_test), dense_accuracy=dense, sparsity=pruned_sparsity(pruned),
            seconds=seconds,
        )  # fmt: skip
        print(
            f"{name} seed {seed} {granularity} {k:>2} {method:22s} {row['accuracy']:6.2f} (dense {dense:.2f}) {seconds:6.1f} s"
        )
        pd.DataFrame([row], columns=COLUMNS).to_csv(
            out, mode="a", header=not out.exists(), index=False, float_format="%.4f"
        )


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy (and seconds) over seeds per (granularity, k, method)."""
    return table.groupby(["model", "granularity", "k", "method"], sort=False).agg(
        accuracy=("accuracy", "mean"), seeds=("seed", "nunique"), seconds=("seconds", "mean"),
        dense=("dense_accuracy", "mean"),
    )  # fmt: skip


GOALS = {("weight", 80): 98.2, ("weight", 90): 97.8, ("weight", 95): 92.0}
"""Issue 36's goals for mnist_convnet with the library's best method (3-seed means); filter 50 %:
within 2.0 of dense. For the MLPs at 95 %: the Keras MLP >= 96.4 in one call; on the tanh MLP the
methods >= prune_model + reconstruct_model."""


TITLES = {
    "mnist_convnet": "mnist_convnet on MNIST, 2 epochs; conv layers pruned, output untouched",
    "keras_mlp": "the Keras MNIST MLP (512-512 ReLU, softmax) on MNIST, 2 epochs; hidden layers pruned",
    "tanh_mlp": "the same MLP with tanh hidden layers (read through Keras by post_training_model)",
}


def _goal(name: str, granularity: str, k: float, method: str, rows: pd.DataFrame, table: pd.DataFrame, dense) -> str:
    acc = rows.accuracy.mean()
    if name == "mnist_convnet" and method == "per-unit-obs-gradual" and (granularity, k) in GOALS:
        want = GOALS[granularity, k]
        return f"≥ {want}: {'met' if acc >= want else 'missed'}"
    if name == "mnist_convnet" and granularity == "filter" and k == 50 and method == "unit+lstsq":
        gap = float((rows.set_index("seed").accuracy - dense).mean())
        return f"within 2.0 of dense: {gap:+.2f}, {'met' if gap >= -2.0 else 'missed'}"
    if name == "keras_mlp" and method == "per-unit-obs-gradual":
        return f"≥ 96.4 in one call: {'met' if acc >= 96.4 else 'missed'}"
    if name == "tanh_mlp" and method in ("obs-gradual", "per-unit-obs-gradual"):
        base = table[(table.model == name) & (table.k == k) & (table.method == "magnitude+lstsq")].accuracy.mean()
        return f"≥ prune + reconstruct ({base:.2f}): {'met' if acc >= base else 'missed'}"
    return ""


def render(table: pd.DataFrame) -> str:
    """docs/own-model.md's table: mean test accuracy over seeds (min–max), seconds, and issue 36's goals."""
    lines = []
    for name in [m for m in MODELS if m in set(table.model)]:
        part = table[table.model == name]
        seeds = sorted(part.seed.unique())
        dense = part.groupby("seed").dense_accuracy.first()
        lines += [
            f"{TITLES[name]}; seeds {', '.join(map(str, seeds))}: dense {dense.mean():.2f} "
            f"({dense.min():.2f}–{dense.max():.2f}); 4,096 calibration images.",
            "",
            "| pruned | method | test accuracy, mean (min–max) | seconds | goal |",
            "| --- | --- | --- | --- | --- |",
        ]
        for (granularity, k, method), rows in part.groupby(["granularity", "k", "method"], sort=False):
            acc = rows.accuracy
            lines.append(
                f"| {granularity} {k:g} % | {method} | {acc.mean():.2f} ({acc.min():.2f}–{acc.max():.2f}) | "
                f"{rows.seconds.mean():.1f} | {_goal(name, granularity, k, method, rows, table, dense)} |"
            )
        lines.append("")
    return "\n".join(lines[:-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--smoke", action="store_true", help="6,000 images, 1 epoch, weight 90 and filter 50 only")
    args = parser.parse_args(argv)
    ks = {"weight": WEIGHT_KS, "filter": FILTER_KS}
    train, epochs = None, 2
    if args.smoke:
        train, epochs, ks = 6000, 1, {"weight": (90, 95), "filter": (50,)}
        args.out = args.out.with_name("any_model_smoke.csv")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.exists():
        old = pd.read_csv(args.out)
        done = set(zip(old.model, old.seed, old.granularity, old.k, old.method))
    for name in args.models:
        for seed in args.seeds:
            run_seed(name, seed, done, args.out, train=train, epochs=epochs, ks=ks)
    print(summary(pd.read_csv(args.out)).round(2).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
