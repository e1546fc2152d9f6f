"""Does a compacted CNN pay? Size and onnxruntime latency of mnist_convnet dense, filter-pruned and compacted.

Issue 36's goal: filter pruning at 50 % + re-fit, compacted, at least 1.8x faster than the dense
model in onnxruntime at batch 256. The Keras ``mnist_convnet`` is trained as in
``benchmarks/any_model.py`` (seed 0, 2 epochs). Models: ``dense``; ``filter50`` (``prune_model(...,
50, "unit")`` + ``reconstruct_model`` on 4,096 calibration images: half the filters of both convs
zero); ``filter50-compact`` (``compact_model`` of it: the zero filters and the channels reading them
removed). Each is exported to ``.onnx`` (checked against Keras within 1e-5) and ``.tflite``; rows give
the test accuracy (Keras), file bytes and gzip -9 bytes, and onnxruntime latency (CPU, one intra-op
thread) at batch 1 and 256: after warm-up, ``--rounds`` interleaved rounds of ``--repeats`` calls per
model, the median per call with its quartiles, and ``speedup`` the dense median over this one's.

    python benchmarks/cnn_compact.py [--rounds 7] [--repeats 20]

Output: ``results/benchmarks/cnn_compact.csv`` (tidy: model, format, metric, value).
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
from _latency import onnx_latency_rows  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "cnn_compact.csv"
GOAL = 1.8


def models(seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    import keras
    from any_model import mnist_convnet

    import prunelib
    from prunelib.data import load_dataset

    data = load_dataset("mnist")
    x = data.x_train.reshape(-1, 28, 28, 1).astype(np.float32)
    keras.utils.set_random_seed(seed)
    dense = mnist_convnet(keras)
    dense.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    dense.fit(x, data.y_train.astype(np.int32), batch_size=128, epochs=2, validation_split=0.1, verbose=0)
    x_calib = x[np.random.default_rng(seed).permutation(len(x))[:4096]]
    filters = prunelib.reconstruct_model(dense, prunelib.prune_model(dense, 50, "unit"), x_calib)
    out = {"dense": dense, "filter50": filters, "filter50-compact": prunelib.compact_model(filters)}
    return out, data.x_test.reshape(-1, 28, 28, 1).astype(np.float32), data.y_test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--repeats", type=int, default=20, help="calls per model per round")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    from prunelib.base.quiet import framework_import

    with framework_import():
        import prunelib
        from prunelib.toolkit.exporting import onnx_predict, onnx_session

    nets, x_test, y_test = models()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for name, net in nets.items():
            probs = net.predict(x_test, batch_size=1000, verbose=0)
            rows.append(
                {
                    "model": name,
                    "format": "keras",
                    "metric": "accuracy",
                    "value": 100 * np.mean(probs.argmax(1) == y_test),
                }
            )
            params = sum(int(np.prod(w.shape)) for w in net.weights)
            rows.append({"model": name, "format": "keras", "metric": "parameters", "value": params})
            for suffix in (".onnx", ".tflite"):
                raw = prunelib.export(net, Path(tmp) / f"{name}{suffix}").read_bytes()
                rows += [
                    {"model": name, "format": suffix[1:], "metric": "bytes", "value": len(raw)},
                    {"model": name, "format": suffix[1:], "metric": "gzip_bytes", "value": len(gzip.compress(raw, 9))},
                ]
            sessions[name] = onnx_session(Path(tmp) / f"{name}.onnx", threads=1)
            gap = float(np.max(np.abs(onnx_predict(sessions[name], x_test[:256]) - probs[:256])))
            assert gap < 1e-5, f"{name}: onnxruntime differs from Keras by {gap}"
        rows += onnx_latency_rows(
            sessions, x_test, repeats=args.repeats, rounds=args.rounds, warmup=max(3, args.repeats // 4), rotate=True
        )
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(render(table))
    return 0


def render(table: pd.DataFrame) -> str:
    """docs/own-model.md's compaction table, from results/benchmarks/cnn_compact.csv."""
    v = table.set_index(["model", "format", "metric"]).value
    lines = [
        "| model | test accuracy | parameters | `.onnx` bytes (gzip) | `.tflite` bytes (gzip) "
        "| onnxruntime ms, batch 1 | onnxruntime ms, batch 256 (speedup) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("dense", "filter50", "filter50-compact"):
        lines.append(
            f"| {name} | {v[name, 'keras', 'accuracy']:.2f} | {v[name, 'keras', 'parameters']:,.0f} "
            f"| {v[name, 'onnx', 'bytes']:,.0f} ({v[name, 'onnx', 'gzip_bytes']:,.0f}) "
            f"| {v[name, 'tflite', 'bytes']:,.0f} ({v[name, 'tflite', 'gzip_bytes']:,.0f}) "
            f"| {v[name, 'onnx', 'latency_ms_b1_median']:.3f} "
            f"| {v[name, 'onnx', 'latency_ms_b256_median']:.2f} ({v[name, 'onnx', 'speedup_b256']:.2f}x) |"
        )
    speedup = v["filter50-compact", "onnx", "speedup_b256"]
    lines += [
        "",
        f"Goal: compacted ≥ {GOAL}x faster than dense at batch 256: {speedup:.2f}x, {'met' if speedup >= GOAL else 'missed'}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
