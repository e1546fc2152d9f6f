"""Does sparsity pay? Inference time of pruned MNIST models: dense-with-zeros vs compact vs sparse.

For each method and k, in one process so the ratios are fair:
  * ``dense-tf``: the masked kernels in a compiled tf.function (zeros cost like any number);
  * ``dense-numpy``: the same as a numpy/BLAS chain;
  * ``compact-tf``: dead units removed, in a compiled tf.function (the previous fast path);
  * ``blas``, ``sparse``, ``csr``: the paths of :class:`prunelib.inference.predictor.Predictor` (dead units
    removed; dense numpy chain / fused numba CSR per tile of 64, ``prunelib.inference.kernels`` /
    scipy CSR);
  * ``auto``: ``Predictor.predict``, which times its paths on the first batch of each size and
    keeps the fastest (``chosen`` says which);
  * ``sparse-mlp``: ``prunelib.inference.sparse.SparseMLP``, the on-disk sparse format's own predict
    (the same kernel, on the uncompacted layers, dense ones by BLAS).
Throughput: all 10,000 test images; latency: batch 1. Median of repeated runs. Speedups are
against the fastest dense path at k = 0 for that batch size, within the same run. The whole
measurement runs ``--runs`` times in a row (default 2) so the noise is visible (column ``run``).
Also writes the accounting (zeros, effective weights, MACs, bytes on disk). Output:
``results/benchmarks/inference.csv`` and ``inference_speedup.png``.

    python benchmarks/inference.py [--runs 2] [--ks ...] [--repeats 5] [--latency-repeats 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from prunelib.core import (
    compact,  # noqa: E402
    pruning,
)
from prunelib.data import load_dataset  # noqa: E402
from prunelib.inference.predictor import Predictor, blas_forward  # noqa: E402
from prunelib.inference.sparse import SparseMLP  # noqa: E402
from prunelib.models import mlp  # noqa: E402
from prunelib.models.config import TrainConfig
from prunelib.study.config import DEFAULT_KS  # noqa: E402


def tf_forward(kernels):
    ws = [tf.constant(w) for w in kernels]

    @tf.function
    def f(x):
        h = x
        for i, w in enumerate(ws):
            h = tf.matmul(h, w)
            if i < len(ws) - 1:
                h = tf.nn.relu(h)
        return h

    return lambda x: f(tf.constant(x)).numpy()


def median_seconds(fn, x, repeats, budget_s=2.0):
    """Median of ``repeats`` timed calls after a warm-up; fewer when the calls are slow (a sparse
    path on a barely pruned network), so the whole benchmark stays within minutes."""
    fn(x)  # warm-up: tracing, JIT compilation, caches
    t = time.perf_counter()
    fn(x)
    times = [time.perf_counter() - t]
    repeats = max(1, min(repeats, int(budget_s / max(times[0], 1e-9))))
    for _ in range(repeats - 1):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def model_bytes(kernels, method, tmp: Path) -> int:
    if method == "weight":
        return SparseMLP(kernels).save(tmp / "m.npz").stat().st_size
    small, _ = compact.compact_kernels(kernels)
    path = tmp / "m.keras"
    mlp.from_kernels(small).save(path)
    return path.stat().st_size


def measure(kernels, batches, args, tmp: Path, run: int) -> list[dict]:
    x_all = batches["throughput"]
    rows = []
    dense_bytes = model_bytes(kernels, "unit", tmp)  # nothing to compact at k = 0
    grid = [(m, k) for m in ("weight", "unit") for k in args.ks]
    for method, k in tqdm(grid, desc=f"inference run {run}"):
        pruned = pruning.prune(kernels, k, method)
        acc = compact.account(pruned)
        predictor = Predictor(pruned)
        paths = {"dense-tf": tf_forward(pruned), "dense-numpy": blas_forward(pruned)}
        if k >= 50:  # below, sparse paths cannot win and take seconds per call
            paths.update(
                {
                    "compact-tf": tf_forward(compact.compact_kernels(pruned)[0]),
                    **{p: (lambda x, p=p: predictor.run(p, x)) for p in Predictor.PATHS},
                    "auto": predictor.predict,
                }
            )
            if method == "weight":
                paths["sparse-mlp"] = SparseMLP(pruned).predict
        reference = blas_forward(pruned)(x_all[:256])
        size = model_bytes(pruned, method, tmp)
        for path, fn in paths.items():
            np.testing.assert_allclose(fn(x_all[:256]), reference, rtol=1e-3, atol=1e-3)
            for batch, x in batches.items():
                reps = args.repeats if batch == "throughput" else args.latency_repeats
                seconds = median_seconds(fn, x, reps)
                chosen = (predictor.path_for(len(x)) or "") if path == "auto" else ""
                rows.append(
                    {
                        "run": run,
                        "method": method,
                        "k": k,
                        "sparsity": acc.sparsity,
                        "effective_weights": acc.effective_weights,
                        "macs": acc.macs_per_sample,
                        "mac_ratio": acc.mac_ratio,
                        "bytes": size,
                        "bytes_ratio": dense_bytes / size,
                        "path": path,
                        "chosen": chosen,
                        "batch": batch,
                        "seconds": seconds,
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--ks", type=float, nargs="+", default=list(DEFAULT_KS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency-repeats", type=int, default=200)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()

    data = load_dataset("mnist")
    x_all = np.ascontiguousarray(data.x_test.reshape(len(data.x_test), -1))
    batches = {"throughput": x_all, "latency": x_all[:1].copy()}
    kernels = mlp.get_kernels(mlp.train_or_load(data, TrainConfig()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(1, args.runs + 1):
            rows += measure(kernels, batches, args, Path(tmp), run)
    df = pd.DataFrame(rows)
    dense0 = df[(df.k == 0) & df.path.str.startswith("dense")].groupby(["run", "batch"]).seconds.min()
    df["speedup"] = [dense0[(r, b)] / s for r, b, s in zip(df.run, df.batch, df.seconds)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "inference.csv", index=False, float_format="%.6g")
    ax = plot_speedup(df[(df.batch == "throughput") & (df.run == 1)])
    ax.figure.savefig(out / "inference_speedup.png", dpi=120, bbox_inches="tight")
    auto = df[df.path == "auto"].pivot_table(index=["method", "k"], columns=["batch", "run"], values="speedup")
    print("speedup of Predictor.predict (auto) vs fastest dense at k=0, per run:")
    print(auto.round(2).to_string())
    print(f"fastest dense (k=0), seconds: {dense0.round(6).to_dict()}")


def plot_speedup(df: pd.DataFrame) -> plt.Axes:
    """Throughput speedup vs measured sparsity per (method, path), the MAC ratio dashed beside it."""
    _, ax = plt.subplots(figsize=(7.5, 4.5))
    df = df[df.path.isin(["dense-numpy", "auto", "compact-tf", "sparse-mlp"])]
    d = df.assign(series=df.method + " / " + df.path)
    sns.lineplot(data=d, x="sparsity", y="speedup", hue="series", marker="o", ax=ax)
    for method, g in df.groupby("method"):
        g = g.drop_duplicates("k")
        ax.plot(g.sparsity, g.mac_ratio, linestyle="--", linewidth=1, label=f"{method}: MAC ratio (limit)")
    ax.set_yscale("log")
    ax.axhline(1, color="grey", linewidth=0.8)
    ax.set_xlabel("measured sparsity (%)")
    ax.set_ylabel("speedup vs fastest dense (10k images)")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return ax


if __name__ == "__main__":
    main()
