"""Quantized export of pruned models: file size, gzip size and the accuracy each file keeps.

Issue 36's export goals: float16 TFLite at most 1/2 and int8 at most 1/4 of the float32 file, at an
accuracy cost of at most 0.3 points; the int8 TFLite of the 80 % Keras MNIST MLP at most tfmot's
244 KB once gzipped (its pruning + quantization tutorial's figure for that MLP).

Models, trained as in ``benchmarks/any_model.py`` (MNIST, seed 0, 2 epochs) and pruned at 80 % by
``post_training_model(..., method="per-unit-obs-gradual")`` on 4,096 calibration images: the Keras
MNIST MLP (512-512 ReLU, softmax; hidden layers pruned) and ``mnist_convnet`` (conv layers pruned).
Each is exported to ``.tflite`` and ``.onnx`` as float32, ``quantize="float16"`` and ``"int8"``; the
test accuracy is the exported file's own (the LiteRT interpreter, onnxruntime) on the 10,000 test
images, against the Keras model's.

    python benchmarks/quantized_export.py

Output: ``results/benchmarks/quantized_export.csv``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "quantized_export.csv"
TFMOT_GZIP = 244_000  # bytes: tfmot's tutorial, 80 % pruned + int8 TFLite, gzipped
COST = 0.3  # points of accuracy a quantized file may lose


def _accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return 100.0 * float(np.mean(np.asarray(probs).argmax(1) == y))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    from any_model import MODELS

    from prunelib.base.quiet import framework_import

    with framework_import():
        import keras

        import prunelib
        from prunelib.data import load_dataset
        from prunelib.toolkit.exporting import onnx_predict, tflite_predict

    data = load_dataset("mnist")
    rows = []
    for name in ("keras_mlp", "mnist_convnet"):
        build, shape = MODELS[name]
        x = data.x_train.reshape(-1, *shape).astype(np.float32)
        x_test = data.x_test.reshape(-1, *shape).astype(np.float32)
        keras.utils.set_random_seed(0)
        model = build(keras)
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        model.fit(x, data.y_train.astype(np.int32), batch_size=128, epochs=2, validation_split=0.1, verbose=0)
        calib = x[np.random.default_rng(0).permutation(len(x))[:4096]]
        pruned = prunelib.post_training_model(model, 80, calib, method="per-unit-obs-gradual")
        keras_acc = _accuracy(pruned.predict(x_test, batch_size=1000, verbose=0), data.y_test)
        with tempfile.TemporaryDirectory() as tmp:
            for suffix, run in ((".tflite", tflite_predict), (".onnx", onnx_predict)):
                for quantize in (None, "float16", "int8"):
                    path = prunelib.export(pruned, Path(tmp) / f"{name}-{quantize}{suffix}", quantize=quantize)
                    raw = path.read_bytes()
                    probs = np.concatenate([run(path, x_test[i : i + 1000]) for i in range(0, len(x_test), 1000)])
                    rows.append(
                        dict(
                            model=name, format=suffix[1:], quantize=quantize or "float32", bytes=len(raw),
                            gzip_bytes=len(gzip.compress(raw, 9)), accuracy=_accuracy(probs, data.y_test),
                            keras_accuracy=keras_acc,
                        )
                    )  # fmt: skip
                    print(rows[-1])
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.4f")
    print(render(table))
    return 0


def render(table: pd.DataFrame) -> str:
    """docs/own-model.md's quantized-export table, from results/benchmarks/quantized_export.csv."""
    lines = [
        "| model, 80 % pruned | file | bytes (of float32) | gzip bytes | test accuracy (Keras: float32 model) | goal |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (name, fmt), part in table.groupby(["model", "format"], sort=False):
        base = part[part.quantize == "float32"].iloc[0]
        for _, r in part.iterrows():
            ratio = r.bytes / base.bytes
            goals = []
            if r.quantize != "float32":
                limit = 0.5 if r.quantize == "float16" else 0.25
                goals.append(f"≤ {limit:g}x: {'met' if ratio <= limit else 'missed'}")
                cost = r.keras_accuracy - r.accuracy
                goals.append(f"cost {cost:+.2f} ≤ {COST}: {'met' if cost <= COST else 'missed'}")
            if name == "keras_mlp" and fmt == "tflite" and r.quantize == "int8":
                goals.append(f"gzip ≤ 244 KB: {'met' if r.gzip_bytes <= TFMOT_GZIP else 'missed'}")
            lines.append(
                f"| {name} | `.{fmt}` {r.quantize} | {r.bytes:,.0f} ({ratio:.3f}) | {r.gzip_bytes:,.0f} "
                f"| {r.accuracy:.2f} ({r.keras_accuracy:.2f}) | {'; '.join(goals)} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
