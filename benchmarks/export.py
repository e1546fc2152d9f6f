"""Does export pay? File size and onnxruntime latency of a dense, a weight-pruned and a unit-compacted
LeNet-300-100 (biases, softmax: a user's model, not the study's).

Models: ``dense``; ``weight95`` (weight pruning at 95 %, zeros stored as zeros); ``weight95-compact``
(the same after :func:`prunelib.compact_model`, which removes only units left without inputs);
``unit90-compact`` (unit pruning at 90 %, compacted). Each is exported to ``.keras``, ``.onnx`` and
``.tflite``; ``bytes`` is the file size, ``gzip_bytes`` its size after gzip -9 (what zeros buy on
disk). Latency: onnxruntime on CPU, batch 1 and 256, after warm-up; the models are timed in
interleaved rounds (every round times each model ``--repeats`` calls), the median per call over all
calls is reported with the quartiles, and ``speedup`` is the dense model's median over this one's.

    python benchmarks/export.py [--train 60000] [--epochs 3] [--rounds 7] [--repeats 50] [--threads 1]

Output: ``results/benchmarks/export.csv`` (tidy: model, format, metric, value).
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

import prunelib  # noqa: E402
from prunelib.data import load_dataset  # noqa: E402
from prunelib.toolkit.exporting import onnx_predict, onnx_session  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _latency import onnx_latency_rows  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "export.csv"


def lenet(x: np.ndarray, y: np.ndarray, epochs: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="lenet",
    )
    if epochs:
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=epochs, verbose=0)
    return model


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=60_000, help="training images (0: untrained)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--repeats", type=int, default=50, help="calls per model per round")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    data = load_dataset("mnist")
    x = data.x_train[: max(args.train, 2048)].reshape(-1, 784)
    model = lenet(x[: args.train], data.y_train[: args.train], args.epochs if args.train else 0)
    x_cal = x[np.random.default_rng(0).permutation(len(x))[:2048]]
    weight = prunelib.reconstruct_model(model, prunelib.prune_model(model, 95), x_cal)
    unit = prunelib.reconstruct_model(model, prunelib.prune_model(model, 90, "unit"), x_cal)
    models = {
        "dense": model,
        "weight95": weight,
        "weight95-compact": prunelib.compact_model(weight),
        "unit90-compact": prunelib.compact_model(unit),
    }
    x_test = data.x_test.reshape(-1, 784)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for name, m in models.items():
            want = np.asarray(m(x_test[:256], training=False))
            for suffix in (".keras", ".onnx", ".tflite"):
                path = prunelib.export(m, Path(tmp) / f"{name}{suffix}")
                raw = path.read_bytes()
                rows += [
                    {"model": name, "format": suffix[1:], "metric": "bytes", "value": len(raw)},
                    {"model": name, "format": suffix[1:], "metric": "gzip_bytes", "value": len(gzip.compress(raw, 9))},
                ]
            sessions[name] = onnx_session(Path(tmp) / f"{name}.onnx", threads=args.threads)
            gap = float(np.max(np.abs(onnx_predict(sessions[name], x_test[:256]) - want)))
            assert gap < 1e-5, f"{name}: onnxruntime differs from Keras by {gap}"
            rows.append({"model": name, "format": "onnx", "metric": "max_abs_diff_vs_keras", "value": gap})
        rows += onnx_latency_rows(
            sessions, x_test, repeats=args.repeats, rounds=args.rounds, warmup=max(5, args.repeats // 5), rotate=False
        )
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.pivot_table(index="model", columns=["format", "metric"], values="value").T.to_string())
    return table


if __name__ == "__main__":
    main()
