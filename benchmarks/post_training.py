"""Post-training pruning on models of the zoo: accuracy and seconds per (model, method, k), against
fine-tuning with the same masks.

For each (model, dataset, seed) of ``prunelib.models.zoo`` (trained or loaded from the model cache)
and each method of ``prunelib.core.post_training.POST_TRAINING_METHODS``, prunes at every k
(``--sparsities`` for weight methods, ``--unit-ks`` for ``unit-*`` methods) on ``--calibration``
training images drawn by the model's seed, and evaluates on the test set. ``seconds`` is the call to
``post_training_prune`` alone. For the methods named by ``--finetune-methods`` it then fine-tunes
the pruned network with its masks fixed and the logit layer frozen
(``prunelib.models.recovery.fit_recovery`` with the default ``RecoveryConfig``, for each of
``--finetune-epochs``); those rows have ``finetune_epochs`` > 0 and ``seconds`` that include the
post-training step. ``sparsity`` is measured over all kernels, the logit kernel included.

Writes ``results/benchmarks/post_training.csv`` (rows already there for the same key are kept and not re-run,
so a run can be resumed or extended; ``--replace`` re-runs them and replaces their rows) and the figure ``results/benchmarks/post_training.png``.

    python benchmarks/post_training.py --models lenet-300-100 --datasets mnist --seeds 0 1 2 3 4
    python benchmarks/post_training.py --smoke   # a random tiny network, seconds, writes nothing
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
from prunelib.core.post_training import POST_TRAINING_METHODS, get_method, post_training_prune_with_biases
from prunelib.core.reconstruct import calibration_set

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [
    "model",
    "dataset",
    "seed",
    "method",
    "granularity",
    "k",
    "finetune_epochs",
    "sparsity",
    "accuracy",
    "dense_accuracy",
    "seconds",
    "calibration",
]
KEY = ["model", "dataset", "seed", "method", "k", "finetune_epochs", "calibration"]
WEIGHT_KS = (90, 91.7, 95, 98, 99, 99.5, 99.8)
UNIT_KS = (80, 90, 95)
DEFAULT_METHODS = (
    "magnitude",
    "magnitude+lstsq",
    "wanda+lstsq",
    "obs+lstsq",
    "obs-gradual",
    "per-unit-obs-gradual",
    "unit-norm+lstsq",
    "unit-activation+lstsq",
    "unit-obs+lstsq",
)


def _smoke_inputs():
    rng = np.random.default_rng(0)
    sizes = (784, 48, 24, 10)
    kernels = [rng.normal(scale=a**-0.5, size=(a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
    x = rng.random((1000, 784), dtype=np.float32)
    y = np.argmax(x @ kernels[0] @ kernels[1] @ kernels[2], axis=1)
    return kernels, [None] * 3, x, x[:300], y[:300]


def _finetune(kernels, biases, masks, dense_model, data, epochs: int, seed: int) -> list[np.ndarray]:
    """The pruned network trained ``epochs`` epochs with its masks fixed and the logits frozen."""
    from prunelib.models import mlp, recovery
    from prunelib.models.config import RecoveryConfig

    net = mlp.from_kernels(kernels, biases, data.x_train.shape[1:])  # float32, as the masked layers were
    mlp.output_layer(net).trainable = False
    # fixed masks; "unit" also zeroes the bias of a unit with no kept weight, as the masked layers did
    callback = recovery.pruning_callback(net, "unit", masks=recovery.hidden_masks(net, masks[:-1]))
    recovery.fit_recovery(net, dense_model, data, RecoveryConfig().with_recipe(epochs=epochs), seed, [callback])
    return mlp.get_kernels(net), mlp.get_biases(net)


def run_model(
    model: str,
    dataset: str,
    seed: int,
    methods,
    weight_ks,
    unit_ks,
    *,
    calibration: int,
    finetune_methods=(),
    finetune_epochs=(1, 2),
    finetune_ks=None,
    done: set | None = None,
    smoke: bool = False,
) -> list[dict]:
    """The rows of one trained model (skipping keys in ``done``)."""
    done = done or set()
    if smoke:
        kernels, biases, x_train, x_test, y_test = _smoke_inputs()
        dense_model = data = None
    else:
        from prunelib.data import load_dataset
        from prunelib.models import mlp
        from prunelib.models.zoo import zoo_config

        data = load_dataset(dataset)
        dense_model = mlp.train_or_load(data, zoo_config(model, seed))
        kernels, biases = mlp.get_kernels(dense_model), mlp.get_biases(dense_model)
        x_train, x_test, y_test = data.x_train, data.x_test, data.y_test
    x = calibration_set(x_train, calibration, seed)
    dense = evaluate_kernels(kernels, x_test, y_test, biases)[0]
    rows = []
    for name in methods:
        spec = get_method(name)
        for k in unit_ks if spec.granularity == "unit" else weight_ks:
            base = {"model": model, "dataset": dataset, "seed": seed, "method": name, "k": float(k)}
            base |= {"granularity": spec.granularity, "dense_accuracy": dense, "calibration": calibration}
            tune = [
                e for e in finetune_epochs if name in finetune_methods and (finetune_ks is None or k in finetune_ks)
            ]
            wanted = [e for e in (0, *tune) if (model, dataset, seed, name, float(k), e, calibration) not in done]
            if not wanted:
                continue
            t0 = time.perf_counter()
            new, new_b, masks = post_training_prune_with_biases(kernels, biases, k, x, method=name)
            seconds = time.perf_counter() - t0
            for epochs in wanted:
                ws, bs, s = new, new_b, seconds
                if epochs:
                    t1 = time.perf_counter()
                    ws, bs = _finetune(new, new_b, masks, dense_model, data, epochs, seed)
                    s += time.perf_counter() - t1
                accuracy = evaluate_kernels(ws, x_test, y_test, bs)[0]
                row = {**base, "finetune_epochs": epochs, "sparsity": pruning.sparsity(ws), "accuracy": accuracy}
                rows.append({**row, "seconds": s})
                print(
                    f"{model} {dataset} seed {seed} {name:22s} k {k:5g} ft {epochs} "
                    f"acc {accuracy:6.2f} sparsity {row['sparsity']:6.2f} {s:6.1f}s",
                    flush=True,
                )
    return rows


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy with its 95 % t half-width over seeds, per (model, dataset, method, fine-tuning
    epochs, k), with the mean measured sparsity and seconds."""
    from prunelib.reporting.stats import ci95

    table = table.astype({"k": float, "sparsity": float, "accuracy": float, "seconds": float})
    keys = ["model", "dataset", "granularity", "method", "finetune_epochs", "k"]
    return (
        table.groupby(keys, sort=True)
        .agg(
            accuracy=("accuracy", "mean"),
            ci95=("accuracy", ci95),
            seeds=("seed", "nunique"),
            sparsity=("sparsity", "mean"),
            seconds=("seconds", "mean"),
            dense=("dense_accuracy", "mean"),
        )
        .reset_index()
    )


def _method_order(methods) -> list[str]:
    registered = list(POST_TRAINING_METHODS)
    return sorted(methods, key=lambda m: registered.index(m) if m in registered else len(registered))


def docs_blocks(table: pd.DataFrame) -> dict[str, str]:
    """The Markdown tables docs/post-training.md quotes, by block name: ``pt-MODEL-DATASET-GRANULARITY``
    (one row per method and per fine-tuning length after it, one column per k, mean ± 95 % CI) and
    ``pt-goals`` (:func:`goals_block`)."""
    points = summary(table)
    blocks = {}
    for (model, dataset, granularity), part in points.groupby(["model", "dataset", "granularity"], sort=True):
        ks = sorted(part["k"].unique())
        cells = {
            (r.method, int(r.finetune_epochs), r.k): f"{r.accuracy:.2f}"
            + ("" if np.isnan(r.ci95) else f" ± {r.ci95:.2f}")
            for r in part.itertuples()
        }  # one seed has no interval
        # a unit table names the granularity in every column, a weight table in its first only
        labels = [f"{granularity} {k:g}" if granularity == "unit" or i == 0 else f"{k:g}" for i, k in enumerate(ks)]
        lines = ["| method | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(ks)]
        for method in _method_order(part["method"].unique()):
            for epochs in sorted(int(e) for e in part.loc[part["method"] == method, "finetune_epochs"].unique()):
                name = f"`{method}`" + (f" + {epochs} epoch{'s' * (epochs > 1)} fine-tuning" if epochs else "")
                lines.append(f"| {name} | " + " | ".join(cells.get((method, epochs, k), "") for k in ks) + " |")
        blocks[f"pt-{model}-{dataset}-{granularity}"] = "\n".join(lines)
    return {**blocks, "pt-goals": goals_block(table)}


GOALS = (  # issue 22's goals: (what, model, dataset, granularity, k, fine-tuning epochs, wanted accuracy)
    ("LeNet-300-100, weight 91.7", "lenet-300-100", "mnist", "weight", 91.7, 0, 98.0),
    ("LeNet-300-100, weight 95", "lenet-300-100", "mnist", "weight", 95, 0, 97.7),
    ("LeNet-300-100, weight 98", "lenet-300-100", "mnist", "weight", 98, 0, 96.0),
    ("LeNet-300-100, weight 99", "lenet-300-100", "mnist", "weight", 99, 0, 92.0),
    ("LeNet-300-100, weight 98, + 1 epoch fine-tuning", "lenet-300-100", "mnist", "weight", 98, 1, 98.0),
    ("challenge MLP, weight 99", "challenge", "mnist", "weight", 99, 0, 98.2),
    ("challenge MLP, weight 99.5", "challenge", "mnist", "weight", 99.5, 0, 97.5),
    ("challenge MLP, weight 99.8", "challenge", "mnist", "weight", 99.8, 0, 90.0),
    ("challenge MLP, unit 95", "challenge", "mnist", "unit", 95, 0, 95.0),
    ("challenge MLP, weight 99.5, + 1 epoch fine-tuning", "challenge", "mnist", "weight", 99.5, 1, 98.2),
    ("challenge MLP, Fashion-MNIST, weight 99", "challenge", "fashion-mnist", "weight", 99, 0, 87.5),
    ("challenge MLP (seed notebook's recipe), weight 99", "challenge-seed-recipe", "mnist", "weight", 99, 0, 97.0),
    ("challenge MLP (seed notebook's recipe), weight 99.5", "challenge-seed-recipe", "mnist", "weight", 99.5, 0, 94.0),
    ("challenge MLP (seed notebook's recipe), unit 90", "challenge-seed-recipe", "mnist", "unit", 90, 0, 97.0),
)


def goals_block(table: pd.DataFrame) -> str:
    """docs/post-training.md's table of the issue's goals: the best method's mean at each, and the gap."""
    points = summary(table)
    lines = [
        "| goal (issue 22) | wanted | best measured | method | seeds | short by |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for what, model, dataset, granularity, k, epochs, wanted in GOALS:
        at = points[
            (points["model"] == model)
            & (points["dataset"] == dataset)
            & (points["granularity"] == granularity)
            & (points["k"] == float(k))
            & (points["finetune_epochs"] == epochs)
        ]
        if at.empty:
            lines.append(f"| {what} | ≥ {wanted:g} | not measured | | | |")
            continue
        best = at.loc[at["accuracy"].idxmax()]
        gap = "met" if best["accuracy"] >= wanted else f"{wanted - best['accuracy']:.2f}"
        lines.append(
            f"| {what} | ≥ {wanted:g} | {best['accuracy']:.2f} ± {best['ci95']:.2f} | `{best['method']}` "
            f"| {int(best['seeds'])} | {gap} |"
        )
    return "\n".join(lines)


PANELS_PER_ROW = 4


def figure(table: pd.DataFrame, path: Path) -> None:
    """Accuracy against the share of weights remaining (log axis), one line per method (one colour per
    method throughout), fine-tuning dashed (1 epoch) or dotted (more); mean and 95 % t interval over
    seeds; one panel per (model, dataset, granularity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prunelib.reporting.stats import ci95

    table = table.astype({"k": float, "sparsity": float, "accuracy": float, "finetune_epochs": int, "seed": int})
    # one colour per method in every panel (fine-tuning: the method's colour, dashed / dotted)
    palette = plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors  # 18 strong colours
    colour = {m: palette[i % len(palette)] for i, m in enumerate(_method_order(table["method"].unique()))}
    panels = table.groupby(["model", "dataset", "granularity"], sort=True)
    # Rows of at most PANELS_PER_ROW panels, so the picture stays readable as the zoo grows.
    rows, columns = -(-panels.ngroups // PANELS_PER_ROW), min(PANELS_PER_ROW, panels.ngroups)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.ravel()[panels.ngroups :]:
        ax.set_visible(False)
    for ax, ((model, dataset, granularity), part) in zip(axes.ravel(), panels):
        for (method, epochs), line in part.groupby(["method", "finetune_epochs"], sort=True):
            g = line.groupby("k").agg(
                remaining=("sparsity", lambda s: 100 - s.mean()),
                mean=("accuracy", "mean"),
                ci=("accuracy", ci95),
                n=("accuracy", "size"),
            )
            g = g.sort_values("remaining")
            label = method if epochs == 0 else f"{method} + {epochs} ep fine-tuning"
            style = {0: "-", 1: "--"}.get(epochs, ":")
            ax.plot(g["remaining"], g["mean"], style, color=colour[method], marker="o", ms=3, label=label)
            ax.fill_between(
                g["remaining"],
                g["mean"] - g["ci"].fillna(0),
                g["mean"] + g["ci"].fillna(0),
                color=colour[method],
                alpha=0.15,
            )
        ax.set_xscale("log")
        ax.set_xlabel("weights remaining (% of all kernels, log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(max(0, part["accuracy"].min() - 2), 100)
        seeds = part["seed"].nunique()
        ax.set_title(f"{model}, {dataset}, {granularity} ({seeds} seed{'s' * (seeds > 1)})", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet-300-100"])
    parser.add_argument("--datasets", nargs="+", default=["mnist"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(POST_TRAINING_METHODS))
    parser.add_argument("--sparsities", nargs="+", type=float, default=list(WEIGHT_KS))
    parser.add_argument("--unit-ks", nargs="+", type=float, default=list(UNIT_KS))
    parser.add_argument("--calibration", type=int, default=8192)
    parser.add_argument("--finetune-methods", nargs="*", default=["magnitude", "per-unit-obs-gradual"])
    parser.add_argument("--finetune-epochs", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--finetune-ks", nargs="*", type=float, default=[98, 99], help="k to fine-tune at")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "post_training.csv")
    parser.add_argument("--figure", type=Path, default=ROOT / "results" / "benchmarks" / "post_training.png")
    parser.add_argument("--figure-only", action="store_true", help="redraw the figure from --out")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="re-run keys already in --out and replace their rows (after a method changed)",
    )
    parser.add_argument("--summary", action="store_true", help="print mean and 95 %% CI per point of --out")
    parser.add_argument("--docs", type=Path, help="rewrite this page's generated tables from --out, then stop")
    parser.add_argument("--smoke", action="store_true", help="a random tiny network, seconds; writes nothing")
    args = parser.parse_args(argv)
    if args.smoke:
        rows = run_model(
            "smoke", "random", 0, args.methods, (90, 99), (50, 90), calibration=1000, finetune_methods=(), smoke=True
        )
        print(pd.DataFrame(rows, columns=COLUMNS).to_string(index=False))
        return 0
    table = pd.read_csv(args.out) if args.out.exists() else pd.DataFrame(columns=COLUMNS)
    if args.summary:
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(summary(table).round(2).to_string(index=False))
        return 0
    if args.docs:
        from _docs import write

        for name, block in docs_blocks(table).items():
            write(args.docs, name, block)  # a table without its markers on the page is an error
        return 0
    if not args.figure_only:
        done = set() if args.replace else set(table[KEY].itertuples(index=False, name=None))
        for model in args.models:
            for dataset in args.datasets:
                for seed in args.seeds:
                    rows = run_model(
                        model,
                        dataset,
                        seed,
                        args.methods,
                        args.sparsities,
                        args.unit_ks,
                        calibration=args.calibration,
                        finetune_methods=args.finetune_methods,
                        finetune_epochs=args.finetune_epochs,
                        finetune_ks=args.finetune_ks,
                        done=done,
                    )
                    if rows:  # saved after every model, so an interrupted run keeps what it measured
                        new = pd.DataFrame(rows, columns=COLUMNS)
                        stale = pd.MultiIndex.from_frame(table[KEY]).isin(pd.MultiIndex.from_frame(new[KEY]))
                        table = pd.concat([table[~stale], new], ignore_index=True)
                        args.out.parent.mkdir(parents=True, exist_ok=True)
                        table.to_csv(args.out, index=False, float_format="%.6g")
    if len(table):
        figure(table, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
