"""Pruning while training, three tools side by side: prunelib's PruningCallback, tfmot and pquant-ml.

Issue 35's "Peers side by side". For each (model, dataset, seed) a dense model is trained once here
(Keras 3, Adam 1e-3, batch 128, ``--epochs`` epochs) and its weights are the start of every tool. Each
tool then prunes it during its own ``model.fit`` for ``--epochs`` epochs with Adam 1e-3 and batch 128 on
the same batches in the same order (tf.data shuffled by the seed), in a process of its own:

* **prunelib**: ``prunelib.PruningCallback(schedule=PolynomialDecay(...), include_output=True)`` in
  Keras 3's ``fit``; exported with ``prunelib.export(model, ".keras")``.
* **tfmot** 0.8 on tf-keras (``TF_USE_LEGACY_KERAS=1``, packages of ``benchmarks/requirements.txt`` in
  ``.venv-tfmot``; ``make bench-tfmot-env``), as its pruning tutorial: ``prune_low_magnitude(model,
  pruning_schedule=PolynomialDecay(...))`` + ``UpdatePruningStep``, then ``strip_pruning`` and a
  ``.h5`` without optimizer.
* **pquant** (pquant-ml 0.1.0 on Keras 3, packages of ``benchmarks/requirements-pquant.txt`` in
  ``.venv-pquant``; ``make bench-pquant-env``): ``add_compression_layers(model, config)`` with
  quantization off, trained by ``model.fit`` with its ``PQuantCallback`` (the Keras callback form of its
  ``train_model``); exported by ``model.save(".keras")`` after its final compression.

Every tool prunes every Dense and Conv2D layer, **the output layer included** (tfmot's tutorial wraps
the whole model; prunelib needs ``include_output=True``; pquant replaces every Dense/Conv2D).

Targets (``--targets``), each on the same schedule for prunelib and tfmot:

* ``80``, ``90``, ``95``: Zhu & Gupta's cubic from 0 to the target over the first half of the
  steps, masks updated every ``--frequency`` (100) steps, then kept (``PolynomialDecay(0, k, 0,
  steps // 2, power=3, frequency=100)``); per layer (tfmot, prunelib ``"weight"``).
* ``50-80``: tfmot's tutorial, ``PolynomialDecay(50, 80, 0, steps, ...)`` (to the last step).
* ``2:4``: 2 zeros in every 4 consecutive inputs of each output, masks set once at step 0 and kept
  (prunelib's N:M; tfmot ``sparsity_m_by_n=(2, 4)`` with ``ConstantSparsity(0.5, 0, end_step=0)``;
  its 2:4 tutorial recomputes them every 100 steps instead). **The first conv (1 input channel) is
  left dense by all three**: prunelib refuses it (no group of 4 inputs), tfmot pads its one input
  with zeros (so keeps it whole), pquant would group 4 consecutive weights of its flattened
  ``(out, in, h, w)`` kernel, i.e. across kernel positions, not inputs.

What pquant-ml cannot do alike (it has no magnitude pruning on a step schedule):

* Percent targets run its PDP method (magnitude with a soft top-k mask recomputed at every step, made
  hard at the end). Its sparsity target moves once per Keras epoch, linearly: ``r = min(1, epsilon *
  (epoch + 1)) * target``. So pquant's ``fit`` runs the same steps cut into short epochs
  (``steps_per_epoch`` = the divisor of an epoch's steps nearest ``--frequency``: 67 on 60,000
  images), and ``epsilon`` is fitted so that ``r`` is nearest (least squares over the steps) to the
  schedule above; each row's ``notes`` give both. The cubic's shape and a starting point other than
  ``epsilon * target`` (e.g. 50 %) cannot be expressed. PDP's global allocation is a no-op in
  pquant's Keras code (it sets ``init_r``, which its Keras PDP never reads), so each layer gets the
  target, as with the other two tools.
* ``2:4`` runs its Wanda method (the only one with N:M): masks from ``|w| * ||x||`` (activations of
  one batch, ``t_delta=1``) at the first step, then kept; groups are 4 consecutive weights of the
  ``(out, in, ...)`` kernel, which for a conv are kernel positions, not input channels.
* Its output layer's softmax is dropped by ``add_compression_layers``; its model is compiled with
  ``from_logits=True`` (same loss) and evaluated from the weights.

Measured here alike for every tool, from the final weights put into a fresh Keras 3 model:
``accuracy`` on the test set, ``sparsity`` (percent zeros over the pruned kernels), ``layer_zeros``
(exact zeros per pruned kernel), ``exact`` (each pruned kernel has exactly ``round(k/100 * n)``
zeros; N:M: every group of 4 inputs along the input axis has at least 2) and ``plain_keras_gz_bytes``
(that model, uncompiled, saved as ``.keras`` and deflated). The workers measure ``fit_s`` (the
tool's ``fit``), ``plain_fit_s`` (a plain ``fit`` of the same model from the same weights, same
process, the order alternating between targets and seeds; ``fit_ratio`` is their quotient) and
``export_gz_bytes`` (the tool's own export, deflated into a zip as tfmot's tutorial measures "gzip
size").

Writes ``results/benchmarks/fit_pruning.csv``; rows already there are kept and their (tool, model,
dataset, seed) not re-run, so a run can be resumed. ``--docs`` renders the table (mean ± 95 % t CI
over seeds) into ``docs/benchmarks.md`` between ``<!-- fit-pruning:begin/end -->``.

Cost of the full grid (2 models x 2 datasets x 3 seeds x 5 targets x 3 tools, each a pruning ``fit``
and a plain one): about 4.5 h on 2 cores, from 100-step timings; pquant's PDP is half of it (its
top-k over every kernel at every step made its ``fit`` about 13x a plain one on the MLP).

    python benchmarks/fit_pruning.py                     # the full grid (make bench-fit-pruning)
    python benchmarks/fit_pruning.py --smoke             # 2,000 images, 1 epoch, 1 seed; build/fit_pruning_smoke.csv
    python benchmarks/fit_pruning.py --docs              # the docs table from the CSV
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's prunelib, not an editable install elsewhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

TOOLS = ("prunelib", "tfmot", "pquant")
MODELS = ("mlp", "cnn")
DATASETS = ("mnist", "fashion-mnist")
TARGETS = ("50-80", "80", "90", "95", "2:4")
SITES = {"tfmot": ROOT / ".venv-tfmot", "pquant": ROOT / ".venv-pquant"}
PACKAGES = {"tfmot": "tensorflow_model_optimization", "pquant": "pquant"}
ENV_TARGETS = {"tfmot": "bench-tfmot-env", "pquant": "bench-pquant-env"}
SKIP_NM = {"cnn": ["conv_1"]}  # one input channel: no group of 4 inputs
BLOCK = "fit-pruning"
COLUMNS = [
    "tool",
    "model",
    "dataset",
    "target",
    "seed",
    "accuracy",
    "dense_accuracy",
    "sparsity",
    "exact",
    "layer_zeros",
    "fit_s",
    "plain_fit_s",
    "fit_ratio",
    "order",
    "export",
    "export_gz_bytes",
    "plain_keras_gz_bytes",
    "epochs",
    "steps",
    "train_images",
    "keras",
    "notes",
]
KEY = ["tool", "model", "dataset", "seed"]


# --- what each target asks ----------------------------------------------------------------------------


def target_spec(name: str, model: str, steps: int, steps_per_epoch: int, frequency: int) -> dict:
    """The schedule of ``name`` (``"90"``, ``"50-80"``, ``"2:4"``) for a fit of ``steps`` steps, pquant's mapping included."""
    spec = {"name": name, "nm": None, "frequency": frequency, "skip": []}
    if ":" in name:
        n, m = (int(v) for v in name.split(":"))
        if not 0 < n < m:
            raise ValueError(f"target {name!r}: N:M needs 0 < N < M")
        return spec | {"nm": name, "final": 100.0 * (m - n) / m, "skip": SKIP_NM.get(model, [])}
    if "-" in name:
        initial, final = (float(v) for v in name.split("-"))
        end = steps  # tfmot's tutorial: to the end of training
    else:
        initial, final, end = 0.0, float(name), steps // 2
    if not 0 <= initial <= final <= 100 or end < 1:
        raise ValueError(f"target {name!r}: want 0 <= initial <= final <= 100 and at least 2 steps")
    spec |= {"initial": initial, "final": final, "end_step": end}
    per, epsilon = pquant_mapping(spec, steps, steps_per_epoch, frequency)
    return spec | {"pquant_epoch_steps": per, "pquant_epsilon": epsilon}


def schedule_k(spec: dict, step: np.ndarray) -> np.ndarray:
    """prunelib's PolynomialDecay of ``spec`` at ``step`` (percent), as its callback applies it between updates."""
    from prunelib.schedules import PolynomialDecay

    schedule = PolynomialDecay(
        spec["initial"], spec["final"], 0, spec["end_step"], power=3, frequency=spec["frequency"]
    )
    k, now = np.zeros(len(step)), 0.0
    for i, s in enumerate(step):  # the masks hold the k of the last update at or before s
        if schedule.updates_at(int(s)):
            now = schedule.k_at(int(s))
        k[i] = now
    return k


def pquant_mapping(spec: dict, steps: int, steps_per_epoch: int, frequency: int) -> tuple[int, float]:
    """PDP's epochs and ``epsilon`` nearest to the schedule: ``(steps per pquant epoch, epsilon)``.

    PDP holds ``min(1, epsilon * (e + 1)) * final`` during epoch ``e``. The epochs are the divisor of
    ``steps_per_epoch`` nearest ``frequency`` steps; ``epsilon`` minimizes the squared gap to the
    schedule's k over all steps.
    """
    divisors = [d for d in range(1, steps_per_epoch + 1) if steps_per_epoch % d == 0]
    per = min(divisors, key=lambda d: (abs(d - frequency), d))
    k = schedule_k(spec, np.arange(steps))
    epoch = np.arange(steps) // per
    grid = np.linspace(1e-3, 1.0, 2000)
    errors = [np.sum((np.minimum(1.0, e * (epoch + 1)) * spec["final"] - k) ** 2) for e in grid]
    return per, float(grid[int(np.argmin(errors))])


# --- the dense start, the tools' processes, and what is measured here ------------------------------------


def shaped(x: np.ndarray, model: str) -> np.ndarray:
    return x.reshape(len(x), 784) if model == "mlp" else x.reshape(len(x), 28, 28, 1)


def train_dense(model: str, x, y, x_test, y_test, seed: int, epochs: int) -> tuple[list[np.ndarray], float]:
    """The start every tool prunes: the model trained dense (Keras 3, Adam 1e-3, batch 128), and its accuracy."""
    import keras
    from _fit_pruning_worker import build, dataset

    keras.utils.set_random_seed(seed)
    net = build(keras, model)
    net.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    per = -(-len(x) // 128)
    net.fit(
        dataset(shaped(x, model), y.astype(np.int32), 128, seed + 10_000),
        epochs=epochs,
        steps_per_epoch=per,
        shuffle=False,
        verbose=0,
    )
    return net.get_weights(), accuracy(model, net.get_weights(), x_test, y_test)


def plain_model(model: str, weights: list[np.ndarray]):
    import keras
    from _fit_pruning_worker import build

    net = build(keras, model)
    net.set_weights(weights)
    return net


def accuracy(model: str, weights, x_test, y_test) -> float:
    net, x = plain_model(model, weights), shaped(x_test, model)
    probs = np.concatenate([np.asarray(net(x[i : i + 1000], training=False)) for i in range(0, len(x), 1000)])
    return 100.0 * float(np.mean(probs.argmax(1) == y_test))


def measure(model: str, spec: dict, weights: list[np.ndarray], x_test, y_test, tmp: Path) -> dict:
    """Accuracy, exact zeros per pruned kernel and the plain ``.keras`` size of the final weights."""
    from _fit_pruning_worker import zipped_size

    net = plain_model(model, weights)
    kernels = {layer.name: layer.get_weights()[0] for layer in net.layers if layer.get_weights()}
    pruned = {name: w for name, w in kernels.items() if name not in spec["skip"]}
    zeros = {name: int(np.sum(w == 0)) for name, w in pruned.items()}
    if spec["nm"]:
        n, m = (int(v) for v in spec["nm"].split(":"))
        exact = all(
            bool(np.all(np.sum(np.moveaxis(w, -2, -1).reshape(-1, m) == 0, axis=1) >= m - n)) for w in pruned.values()
        )
    else:
        exact = all(zeros[name] == round(spec["final"] / 100 * w.size) for name, w in pruned.items())
    path = tmp / "plain.keras"
    net.save(path)
    return {
        "accuracy": accuracy(model, weights, x_test, y_test),
        "sparsity": 100.0 * sum(zeros.values()) / sum(w.size for w in pruned.values()),
        "exact": exact,
        "layer_zeros": "; ".join(f"{name} {zeros[name]}/{w.size}" for name, w in pruned.items()),
        "plain_keras_gz_bytes": zipped_size(path),
    }


def tool_env(tool: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    paths = [str(ROOT)]
    if tool in SITES:
        site = SITES[tool]
        if not (site / PACKAGES[tool]).is_dir():
            raise SystemExit(f"{tool} is not installed in {site}; run `make {ENV_TARGETS[tool]}` first")
        paths.insert(0, str(site))
    if tool == "tfmot":
        env["TF_USE_LEGACY_KERAS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def run_tool(tool: str, inputs: Path, spec: dict, out: Path) -> list[dict]:
    """The worker's JSON lines for one tool and (model, dataset, seed), every target."""
    command = [
        sys.executable,
        str(Path(__file__).resolve().parent / "_fit_pruning_worker.py"),
        "--tool",
        tool,
        "--inputs",
        str(inputs),
        "--spec",
        json.dumps(spec),
        "--out",
        str(out),
    ]
    done = subprocess.run(command, env=tool_env(tool), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{tool} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


# --- the table --------------------------------------------------------------------------------------------


def _mean_ci(values) -> str:
    from prunelib.reporting.stats import ci95

    values = np.asarray(values, np.float64)
    half = ci95(values)
    return f"{values.mean():.2f}" + ("" if np.isnan(half) else f" ± {half:.2f}")


def _target_order(target: str) -> tuple:
    """The trial (INITIAL-FINAL) first, then the percents up, then N:M."""
    return (":" in target, "-" not in target, 0.0 if ":" in target else float(target.split("-")[-1]))


def render(table: pd.DataFrame) -> str:
    """The docs block: per (model, dataset, target, tool) accuracy mean ± 95 % t CI over seeds, and the costs."""
    table = table.copy()
    table["target"] = table["target"].astype(str)
    if table.empty:
        raise ValueError("no rows to render: run the benchmark first")
    seeds = table.groupby(["tool", "model", "dataset", "target"])["seed"].nunique()
    low, high, epochs = int(seeds.min()), int(seeds.max()), int(table["epochs"].iloc[0])
    lines = [
        f"Mean ± 95 % t CI over {low}–{high} seeds"
        if low != high
        else f"Mean ± 95 % t CI over {low} seed{'s' * (low > 1)}"
    ]
    lines[0] += (
        f" ({epochs} epoch{'s' * (epochs > 1)} on {int(table['train_images'].iloc[0]):,} images from the same "
        "dense start, Adam, batch 128, every Dense/Conv2D pruned, the output included); sparsity over the pruned "
        "kernels; `fit ÷ plain` is the median (min–max) over seeds of the tool's `fit` seconds over a plain `fit` "
        "of the same model in the same process; sizes are deflated (KB), the tool's own export and the same "
        "weights in a plain Keras 3 `.keras`:"
    )
    lines += [
        "",
        "| model | dataset | target | tool | accuracy (%) | dense (%) | sparsity (%) | exact | fit ÷ plain "
        "| fit (s) | export (KB) | plain .keras (KB) |",
        "|---|---|---|---|---:|---:|---:|:---:|---:|---:|---:|---:|",
    ]
    order = {tool: i for i, tool in enumerate(TOOLS)}
    groups = table.groupby(["model", "dataset", "target", "tool"], sort=False)
    keys = sorted(
        groups.groups,
        key=lambda k: (
            MODELS.index(k[0]) if k[0] in MODELS else 9,
            DATASETS.index(k[1]) if k[1] in DATASETS else 9,
            _target_order(k[2]),
            order.get(k[3], 9),
        ),
    )
    for model, dataset, target, tool in keys:
        g = groups.get_group((model, dataset, target, tool))
        ratio = g["fit_ratio"]
        exact = "yes" if g["exact"].astype(bool).all() else ("no" if not g["exact"].astype(bool).any() else "some")
        lines.append(
            f"| {model} | {dataset} | {target} | {tool} | {_mean_ci(g['accuracy'])} | {g['dense_accuracy'].mean():.2f} "
            f"| {g['sparsity'].mean():.2f} | {exact} | {ratio.median():.2f} ({ratio.min():.2f}–{ratio.max():.2f}) "
            f"| {g['fit_s'].median():.1f} | {g['export_gz_bytes'].mean() / 1e3:.0f} "
            f"| {g['plain_keras_gz_bytes'].mean() / 1e3:.0f} |"
        )
    return "\n".join(lines)


def write_docs(page: Path, block: str) -> None:
    """Put ``block`` between the markers on ``page``, adding a section with them at its end if it has none."""
    from _docs import markers, write

    begin, _ = markers(BLOCK)
    if begin not in page.read_text():
        section = (
            "\n## Pruning while training: prunelib, tfmot and pquant-ml side by side\n\n"
            "`make bench-fit-pruning` (`benchmarks/fit_pruning.py`, whose docstring says how each tool is "
            "run and what differs; `results/benchmarks/fit_pruning.csv`; the block below is generated from "
            "it by `python benchmarks/fit_pruning.py --docs`).\n\n"
            f"{begin}\n{markers(BLOCK)[1]}\n"
        )
        page.write_text(page.read_text().rstrip("\n") + "\n" + section)
    write(page, BLOCK, block)


# --- the run ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None, load=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), help="percents, INITIAL-FINAL, or N:M")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--frequency", type=int, default=100, help="steps between mask updates")
    parser.add_argument("--train-images", type=int, default=None, help="the first N training images (all)")
    parser.add_argument("--test-images", type=int, default=None, help="the first N test images (all)")
    parser.add_argument("--smoke", action="store_true", help="2,000 images, 1 epoch, seed 0, updates every 4 steps")
    parser.add_argument("--out", type=Path, default=None, help="the CSV (results/benchmarks/fit_pruning.csv)")
    parser.add_argument(
        "--docs",
        nargs="?",
        type=Path,
        const=ROOT / "docs" / "benchmarks.md",
        help="render the table from --out into this page (docs/benchmarks.md), then stop",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.frequency = 1, 4
        args.train_images, args.test_images = args.train_images or 2000, args.test_images or 2000
        if "--seeds" not in (argv if argv is not None else sys.argv):
            args.seeds = [0]
    if args.out is None:
        args.out = ROOT / ("build/fit_pruning_smoke.csv" if args.smoke else "results/benchmarks/fit_pruning.csv")
    table = pd.read_csv(args.out, keep_default_na=False) if args.out.exists() else pd.DataFrame(columns=COLUMNS)
    if args.docs:
        write_docs(args.docs, render(table))
        print(f"{args.docs}: {BLOCK} from {args.out}")
        return 0
    for tool in args.tools:
        tool_env(tool)  # every peer installed, before an hour of training
    if load is None:
        from prunelib.data import load_dataset as load
    for target in args.targets:  # every target understood, before any training
        target_spec(target, "cnn", 1000, 500, args.frequency)
    done = {tuple(str(v) for v in key) for key in table[KEY].itertuples(index=False, name=None)}
    failed, round_ = [], 0
    for dataset in args.datasets:
        data = load(dataset)
        x, y = data.x_train[: args.train_images], data.y_train[: args.train_images]
        x_test, y_test = data.x_test[: args.test_images], data.y_test[: args.test_images]
        with tempfile.TemporaryDirectory(prefix="fit_pruning_") as tmp_name:
            tmp = Path(tmp_name)
            np.save(tmp / "x_train.npy", np.ascontiguousarray(x, np.float32))
            np.save(tmp / "y_train.npy", y)
            for model in args.models:
                for seed in args.seeds:
                    todo = [t for t in args.tools if (t, model, dataset, str(seed)) not in done]
                    if not todo:
                        continue
                    start, dense = train_dense(model, x, y, x_test, y_test, seed, args.epochs)
                    np.savez(tmp / "start.npz", **{f"w{i}": w for i, w in enumerate(start)})
                    per = -(-len(x) // 128)
                    steps = args.epochs * per
                    specs = {t: target_spec(t, model, steps, per, args.frequency) for t in args.targets}
                    for tool in todo[round_ % len(todo) :] + todo[: round_ % len(todo)]:  # rotating
                        spec = {
                            "model": model,
                            "seed": seed,
                            "epochs": args.epochs,
                            "batch_size": 128,
                            "learning_rate": 1e-3,
                            "start": "start.npz",
                            "targets": list(specs.values()),
                            "round": round_,
                        }
                        out = tmp / tool
                        try:
                            got = run_tool(tool, tmp, spec, out)
                        except RuntimeError as error:
                            print(error, file=sys.stderr, flush=True)
                            failed.append((tool, model, dataset, seed))
                            continue
                        rows = []
                        for line in got:
                            tspec = specs[line["target"]]
                            final = np.load(out / f"{line['target']}.npz")
                            weights = [final[f"w{i}"] for i in range(len(final.files))]
                            row = {"tool": tool, "model": model, "dataset": dataset, "seed": seed, **line}
                            row |= measure(model, tspec, weights, x_test, y_test, tmp)
                            row |= {
                                "dense_accuracy": dense,
                                "fit_ratio": line["fit_s"] / line["plain_fit_s"],
                                "epochs": args.epochs,
                                "train_images": len(x),
                            }
                            rows.append(row)
                            print(
                                f"{tool:8s} {model} {dataset} {line['target']:>5s} seed {seed}: "
                                f"{row['accuracy']:.2f} % at {row['sparsity']:.2f} % sparsity, "
                                f"fit {row['fit_s']:.1f} s ({row['fit_ratio']:.2f}x plain)",
                                flush=True,
                            )
                        table = pd.concat([table, pd.DataFrame(rows, columns=COLUMNS)], ignore_index=True)
                        args.out.parent.mkdir(parents=True, exist_ok=True)
                        table.to_csv(args.out, index=False, float_format="%.4f")
                    round_ += 1
    print(f"{args.out}: {len(table)} rows")
    if failed:
        print(f"failed (re-run to retry): {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
