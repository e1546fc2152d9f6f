"""Time the core job: train on MNIST for 10 epochs, then the 20-point pruning sweep.

Runs (in one process, so the numbers compare):
  * ``straightforward``: the seed notebook's recipe, Adam 1e-3, batch 64, float32, constant
    learning rate (``--baseline`` only);
  * ``prunelib``: the default TrainConfig (the recipe study's choice: AdamW lr 6e-3, weight decay 1,
    batch 512, bf16 matmuls, cosine decay);
  * ``cached``: the same job again, the model loaded from the cache instead of trained.
Peak resident memory of the process is reported too. Writes ``results/benchmarks/pipeline.csv``.

    python benchmarks/pipeline.py [--baseline] [--out results/benchmarks/pipeline.csv]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd

from prunelib.models import mlp
from prunelib.models.config import TrainConfig
from prunelib.study.config import DEFAULT_KS
from prunelib.data import load_dataset
from prunelib.core.evaluate import sweep
from prunelib.models.config import RECIPES


def core_job(data, config: TrainConfig, cache: Path) -> dict:
    t0 = time.perf_counter()
    model = mlp.train_or_load(data, config, cache=cache)
    t1 = time.perf_counter()
    table = sweep(mlp.get_kernels(model), data.x_test, data.y_test, dataset=data.name,
                  ks=DEFAULT_KS, progress=False)
    t2 = time.perf_counter()
    return {"train_s": t1 - t0, "sweep_s": t2 - t1, "total_s": t2 - t0,
            "dense_accuracy": float(table.loc[table.k == 0, "accuracy"].iloc[0]),
            **{f"{m}_{k}_accuracy": float(table.query(f"method == '{m}' and k == {k}").accuracy.iloc[0])
               for m, k in (("weight", 90), ("weight", 95), ("weight", 99), ("unit", 80), ("unit", 90))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", action="store_true", help="also time the straightforward recipe")
    parser.add_argument("--out", default="results/benchmarks/pipeline.csv")
    args = parser.parse_args()

    data = load_dataset("mnist")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        if args.baseline:
            straightforward = TrainConfig(recipe=RECIPES["b64-lr1e-3-constant-fp32"])
            rows.append({"run": "straightforward", **core_job(data, straightforward, cache)})
        rows.append({"run": "prunelib", **core_job(data, TrainConfig(), cache)})
        rows.append({"run": "cached", **core_job(data, TrainConfig(), cache)})
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux
    df = pd.DataFrame(rows).assign(peak_rss_gb=peak_gb, cores=os.cpu_count())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False, float_format="%.3f")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
