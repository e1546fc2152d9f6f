"""Prune your own model: a stock Keras LeNet-300-100 (biases, softmax), pruned, re-fitted, compacted
and exported to ONNX, with onnxruntime's predictions checked against Keras.

Run: ``python examples/prune_your_own_model.py [--train N] [--epochs E] [--out DIR]``
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

import prunelib  # noqa: E402
from prunelib.core.reconstruct import calibration_set, reconstruct  # noqa: E402
from prunelib.data import load_dataset  # noqa: E402
from prunelib.toolkit.exporting import onnx_predict  # noqa: E402


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=1024), axis=1) == y))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10_000, help="training images (default 10,000)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", default=None, help="where to write the .onnx files (default: a temp dir)")
    args = parser.parse_args(argv)

    data = load_dataset("mnist")
    x_train, y_train = data.x_train[: args.train].reshape(-1, 784), data.y_train[: args.train]
    x_test, y_test = data.x_test.reshape(-1, 784), data.y_test

    # A user's model, Keras defaults throughout: biases, softmax output, no special names.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, verbose=0)
    results = {"dense": accuracy(model, x_test, y_test)}

    x_cal = calibration_set(x_train, 2048, seed=0)
    out = args.out or tempfile.mkdtemp()
    for method, k in (("weight", 95), ("unit", 90)):
        pruned = prunelib.prune_model(model, k, method)
        fixed = prunelib.reconstruct_model(model, pruned, x_cal)  # weights and biases re-fitted
        small = prunelib.compact_model(fixed)  # removed units gone, same predictions
        path = prunelib.export(small, os.path.join(out, f"lenet-{method}{k}.onnx"))
        probs = onnx_predict(path, x_test)
        gap = float(np.max(np.abs(probs - small.predict(x_test, verbose=0, batch_size=1024))))
        assert gap < 1e-5, f"onnxruntime differs from Keras by {gap}"
        results[f"{method}{k}"] = accuracy(pruned, x_test, y_test)
        results[f"{method}{k}+lstsq"] = accuracy(fixed, x_test, y_test)
        results[f"{method}{k} onnx"] = float(np.mean(np.argmax(probs, axis=1) == y_test))
        units = [layer.units for layer in small.layers if isinstance(layer, keras.layers.Dense)]
        print(
            f"{method} {k}: pruned {results[f'{method}{k}']:.4f}, least squares "
            f"{results[f'{method}{k}+lstsq']:.4f}, compact {units}, {path.name} "
            f"{path.stat().st_size / 1024:.0f} KiB, onnxruntime max |diff| {gap:.1e}"
        )

    # Today's kernel-only correction (biases kept as they are), for comparison at weight 95.
    pruned = prunelib.prune_model(model, 95)
    dense_ws = [layer.kernel.numpy() for layer in model.layers]
    kernel_masks = [m for name, m in prunelib.model_masks(pruned).items() if "/" not in name]  # not "<layer>/bias"
    masks = kernel_masks + [np.ones((100, 10), bool)]
    ws = reconstruct(dense_ws, masks, x_cal, biases=[layer.bias.numpy() for layer in model.layers])
    old = prunelib.apply_model_masks(model, prunelib.model_masks(pruned))
    for layer, w in zip(old.layers, ws):
        layer.kernel.assign(w)
    results["weight95+kernel-only lstsq"] = accuracy(old, x_test, y_test)
    print(
        f"dense {results['dense']:.4f}; weight 95 kernel-only least squares "
        f"{results['weight95+kernel-only lstsq']:.4f} vs weights and biases {results['weight95+lstsq']:.4f}"
    )
    return results


if __name__ == "__main__":
    main()
