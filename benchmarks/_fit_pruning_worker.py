"""One tool's side of benchmarks/fit_pruning.py, in a process of its own: prune during ``fit``, and a plain ``fit``.

``--tool prunelib`` and ``--tool pquant`` run on Keras 3; ``--tool tfmot`` needs ``TF_USE_LEGACY_KERAS=1``
and tf-keras + tensorflow-model-optimization on ``PYTHONPATH`` (fit_pruning.py sets both), and
``--tool pquant`` needs pquant-ml on ``PYTHONPATH``. Reads the training images and the dense start
weights from ``--inputs`` (a folder fit_pruning.py wrote) and the run from ``--spec`` (JSON); for each
target it runs the tool's pruning ``fit`` and a plain ``fit`` of the same model from the same weights
(the order alternating from one target to the next), writes the final weights to
``OUT/<target>.npz`` and the tool's own export to ``OUT/<target>.<suffix>``, and prints one JSON line.
Accuracy, sparsity and the plain ``.keras`` size are measured by fit_pruning.py, the same for every tool.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build(keras, model: str):
    """The Keras examples' models, functional (pquant's layer replacement needs an Input layer first)."""
    layers = keras.layers
    if model == "mlp":  # the Keras MNIST MLP (its Dropout left out, as in issue 35's trial)
        inputs = keras.Input((784,))
        x = layers.Dense(512, activation="relu", name="dense_1")(inputs)
        x = layers.Dense(512, activation="relu", name="dense_2")(x)
    elif model == "cnn":  # keras.io/examples/vision/mnist_convnet
        inputs = keras.Input((28, 28, 1))
        x = layers.Conv2D(32, 3, activation="relu", name="conv_1")(inputs)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(64, 3, activation="relu", name="conv_2")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Flatten()(x)
        x = layers.Dropout(0.5)(x)
    else:
        raise ValueError(f"unknown model {model!r}")
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=model)


def dataset(x: np.ndarray, y: np.ndarray, batch: int, seed: int):
    """The same batches in the same order for every tool and the plain fit: tf.data, shuffled by ``seed``."""
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(batch)
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )


def zipped_size(path: Path) -> int:
    """Bytes of ``path`` deflated into a zip, as tfmot's pruning tutorial measures a model ("gzip size")."""
    import zipfile

    out = path.with_name(path.name + ".zip")
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as f:
        f.write(path, arcname=path.name)
    size = out.stat().st_size
    out.unlink()
    return size


class Run:
    """What every tool shares: the model, data, start weights and the plain fit."""

    def __init__(self, keras, spec: dict, inputs: Path) -> None:
        self.keras, self.spec = keras, spec
        x = np.load(inputs / "x_train.npy")
        self.x = x.reshape(len(x), 784) if spec["model"] == "mlp" else x.reshape(len(x), 28, 28, 1)
        self.y = np.load(inputs / "y_train.npy").astype(np.int32)
        start = np.load(inputs / spec["start"])
        self.start = [start[f"w{i}"] for i in range(len(start.files))]
        self.steps_per_epoch = -(-len(self.x) // spec["batch_size"])
        self.steps = spec["epochs"] * self.steps_per_epoch

    def check_start(self, weights) -> None:
        """Refuse to time a tool whose model does not start from the dense start weights."""
        if len(weights) != len(self.start) or any(
            w.shape != s.shape or not np.array_equal(w, s) for w, s in zip(weights, self.start)
        ):
            raise RuntimeError("the tool's model does not hold the dense start weights")

    def model(self):
        model = build(self.keras, self.spec["model"])
        model.set_weights(self.start)
        return model

    def compile(self, model, from_logits: bool = False) -> None:
        keras = self.keras
        model.compile(
            optimizer=keras.optimizers.Adam(self.spec["learning_rate"]),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
            metrics=["accuracy"],
        )

    def fit(self, model, callbacks=(), steps_per_epoch: int | None = None) -> float:
        """Seconds of ``model.fit`` over ``spec['epochs']`` epochs (``steps_per_epoch`` splits them)."""
        self.keras.utils.set_random_seed(self.spec["seed"])
        data = dataset(self.x, self.y, self.spec["batch_size"], self.spec["seed"])
        per = steps_per_epoch or self.steps_per_epoch
        if self.steps % per:
            raise ValueError(f"{self.steps} steps do not split into epochs of {per}")
        t0 = time.perf_counter()
        model.fit(
            data, epochs=self.steps // per, steps_per_epoch=per, callbacks=list(callbacks), shuffle=False, verbose=0
        )
        return time.perf_counter() - t0

    def plain(self) -> float:
        model = self.model()
        self.compile(model)
        return self.fit(model)


# --- the three tools: each returns (seconds of its fit, final weights in build()'s order, export path, notes)


def run_prunelib(run: Run, target: dict, out: Path):
    import prunelib
    from prunelib.schedules import PolynomialDecay

    model = run.model()
    run.compile(model)
    skip = target["skip"] or None
    if target["nm"]:
        callback = prunelib.PruningCallback(granularity=target["nm"], skip=skip, include_output=True)
        note = f"granularity={target['nm']!r}, masks set at step 0"
    else:
        schedule = PolynomialDecay(
            target["initial"], target["final"], 0, target["end_step"], power=3, frequency=target["frequency"]
        )
        callback = prunelib.PruningCallback(schedule=schedule, skip=skip, include_output=True)
        note = "granularity='weight'"
    seconds = run.fit(model, [callback])
    path = prunelib.export(model, out / f"{target['name']}.keras")
    return seconds, model.get_weights(), path, note + "; export: prunelib.export(model, '.keras')"


def run_tfmot(run: Run, target: dict, out: Path):
    import tensorflow_model_optimization as tfmot

    keras, sparsity = run.keras, tfmot.sparsity.keras
    if target["nm"]:
        n, m = (int(v) for v in target["nm"].split(":"))
        # prunelib sets N:M masks once, at begin_step; end_step=0 does the same here (tfmot's 2:4 tutorial
        # recomputes them every `frequency` steps with end_step=-1)
        params = {
            "pruning_schedule": sparsity.ConstantSparsity((m - n) / m, begin_step=0, end_step=0),
            "sparsity_m_by_n": (m - n, m),
        }
    else:
        params = {
            "pruning_schedule": sparsity.PolynomialDecay(
                target["initial"] / 100,
                target["final"] / 100,
                0,
                target["end_step"],
                power=3,
                frequency=target["frequency"],
            )
        }
    base = run.model()
    if target["skip"]:

        def wrap(layer):
            if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense) and layer.name not in target["skip"]:
                return sparsity.prune_low_magnitude(layer, **params)
            return layer

        model = keras.models.clone_model(base, clone_function=wrap)  # wraps (and keeps) base's layers
        note = f"prune_low_magnitude on each layer but {target['skip']}"
    else:
        model = sparsity.prune_low_magnitude(base, **params)  # the whole model, as tfmot's tutorial
        note = "prune_low_magnitude(model)"
    run.check_start(sparsity.strip_pruning(model).get_weights())
    run.compile(model)
    seconds = run.fit(model, [sparsity.UpdatePruningStep()])
    stripped = sparsity.strip_pruning(model)
    path = out / f"{target['name']}.h5"
    keras.models.save_model(stripped, path, include_optimizer=False)  # as tfmot's tutorial exports
    return seconds, stripped.get_weights(), path, note + "; export: strip_pruning, .h5 without optimizer"


def run_pquant(run: Run, target: dict, out: Path):
    import pquant
    from pquant.core.keras.layers import PQWeightBiasBase, add_compression_layers
    from pquant.core.keras.train import PQuantCallback

    if target["nm"]:
        n, m = (int(v) for v in target["nm"].split(":"))
        config = pquant.wanda_config()
        pp = config.pruning_parameters
        pp.N, pp.M = m - n, m  # Wanda's N is the number pruned in each group of M
        pp.t_start_collecting_batch, pp.t_delta = 0, 1  # one batch of activations, masks at the first step
        pp.calculate_pruning_budget = False
        per = run.steps_per_epoch
    else:
        config = pquant.pdp_config()
        pp = config.pruning_parameters
        pp.sparsity = target["final"] / 100
        pp.epsilon = target["pquant_epsilon"]
        per = target["pquant_epoch_steps"]
    pp.disable_pruning_for_layers = list(target["skip"])
    config.quantization_parameters.enable_quantization = False  # pruning alone, like the other tools
    tp = config.training_parameters
    tp.pretraining_epochs, tp.fine_tuning_epochs, tp.rounds, tp.epochs = 0, 0, 1, run.steps // per
    base = run.model()
    model = add_compression_layers(base, config, (None, *run.x.shape[1:]))

    def weights():
        got = []
        for layer in model.layers:
            if isinstance(layer, PQWeightBiasBase):
                got += [layer._kernel.numpy()] + ([] if layer._bias is None else [layer._bias.numpy()])
        return got

    run.check_start(weights())
    run.compile(model, from_logits=True)  # add_compression_layers drops the output's softmax
    callback = PQuantCallback(config, log_ebops=False, log_keep_ratio=False)
    seconds = run.fit(model, [callback], steps_per_epoch=per)
    path = out / f"{target['name']}.keras"
    try:
        model.save(path)  # pquant has no strip: its layers, masks and optimizer stay in the file
    except Exception as error:  # noqa: BLE001  (a peer's failure is a finding, not a crash)
        path, note_export = None, f"; model.save failed: {type(error).__name__}: {str(error)[:200]}"
    else:
        note_export = "; export: model.save('.keras') after apply_final_compression"
    if target["nm"]:
        note = f"Wanda N={pp.N} M={pp.M} t_delta=1 (masks from |w|·||x|| after one batch)"
    else:
        note = f"PDP epsilon={pp.epsilon:.4g} over epochs of {per} steps"
    return seconds, weights(), path, note + note_export


TOOLS = {"prunelib": run_prunelib, "tfmot": run_tfmot, "pquant": run_pquant}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", required=True, choices=list(TOOLS))
    parser.add_argument("--inputs", required=True, type=Path)
    parser.add_argument(
        "--spec", required=True, help="JSON: model, seed, epochs, batch_size, learning_rate, start, targets, round"
    )
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    spec = json.loads(args.spec)
    if args.tool == "tfmot":
        import tensorflow as tf

        keras = tf.keras  # tf_keras under TF_USE_LEGACY_KERAS=1
    else:
        import keras
    run = Run(keras, spec, args.inputs)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, target in enumerate(spec["targets"]):
        tool_first = (spec["round"] + i) % 2 == 0
        plain_s = None
        if not tool_first:
            plain_s = run.plain()
        seconds, weights, path, note = TOOLS[args.tool](run, target, args.out)
        if tool_first:
            plain_s = run.plain()
        np.savez(args.out / f"{target['name']}.npz", **{f"w{j}": w for j, w in enumerate(weights)})
        row = {
            "target": target["name"],
            "fit_s": seconds,
            "plain_fit_s": plain_s,
            "order": "tool, plain" if tool_first else "plain, tool",
            "export": path.suffix if path else "",
            "export_gz_bytes": zipped_size(path) if path else None,
            "steps": run.steps,
            "keras": version("tf-keras" if args.tool == "tfmot" else "keras"),
            "notes": note,
        }
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
