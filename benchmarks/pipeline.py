"""Time the core job: train on MNIST for 10 epochs, then the 20-point pruning sweep.

Configurations:
  * ``straightforward``: the seed notebook's recipe, Adam 1e-3, batch 64, float32, constant
    learning rate (``--baseline`` only);
  * ``prunelib``: the default TrainConfig (the recipe study's choice: AdamW lr 6e-3, weight decay 1,
    batch 512, bf16 matmuls, cosine decay), trained from scratch into an empty cache;
  * ``cached``: the same job with the model loaded from a cache filled beforehand.

Fair timing: every job runs in a fresh process of its own (so none inherits another's warm caches,
thread pools or memory, and each reports its own peak resident memory); libraries are imported and
the data loaded before the clock starts. After ``--warmup`` untimed rounds, ``--repeats`` rounds run
each configuration once, in an order rotating every round (AB, BA, ...). ``train_s`` is the
training (or cache load) alone, ``sweep_s`` the 20-point sweep alone, ``total_s`` their sum; each
is reported as the median over the rounds with min and max, and ``total_vs_prunelib`` is the
round-by-round (paired) ratio of total times. Writes ``results/benchmarks/pipeline.csv``.

    python benchmarks/pipeline.py [--baseline] [--repeats 3] [--out results/benchmarks/pipeline.csv]
    python benchmarks/pipeline.py --smoke   # 1 epoch on 2,000 images, 5 ks on 1,000 test images, 2 rounds; writes nothing
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import in_own_process, ratio_spread, rotation, spread  # noqa: E402

ACCURACIES = (("weight", 90), ("weight", 95), ("weight", 99), ("unit", 80), ("unit", 90))


def core_job(recipe_name: str | None, cache: str, smoke: bool) -> dict:
    """One core job in this (fresh) process; imports and data loading happen before the clock."""
    import time

    from prunelib.core.evaluate import sweep
    from prunelib.data import load_dataset
    from prunelib.models import mlp
    from prunelib.models.config import RECIPES, TrainConfig
    from prunelib.study.config import DEFAULT_KS

    data = load_dataset("mnist")
    config = TrainConfig() if recipe_name is None else TrainConfig(recipe=RECIPES[recipe_name])
    ks = DEFAULT_KS
    if smoke:
        config = replace(config.with_recipe(epochs=1), train_subset=2000)
        ks, data = (0, 80, 90, 95, 99), replace(data, x_test=data.x_test[:1000], y_test=data.y_test[:1000])
    t0 = time.perf_counter()
    model = mlp.train_or_load(data, config, cache=cache)
    t1 = time.perf_counter()
    table = sweep(mlp.get_kernels(model), data.x_test, data.y_test, dataset=data.name, ks=ks, progress=False)
    t2 = time.perf_counter()
    return {
        "train_s": t1 - t0,
        "sweep_s": t2 - t1,
        "total_s": t2 - t0,
        "dense_accuracy": float(table.loc[table.k == 0, "accuracy"].iloc[0]),
        **{
            f"{m}_{k}_accuracy": float(table.query(f"method == '{m}' and k == {k}").accuracy.iloc[0])
            for m, k in ACCURACIES
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", action="store_true", help="also time the straightforward recipe")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (each configuration once per round)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument(
        "--smoke", action="store_true", help="1 epoch on 2,000 images, 2 rounds, no warm-up; writes nothing"
    )
    parser.add_argument("--out", default="results/benchmarks/pipeline.csv")
    args = parser.parse_args(argv)
    repeats, warmup = (2, 0) if args.smoke else (args.repeats, args.warmup)

    with tempfile.TemporaryDirectory() as tmp:
        filled = Path(tmp) / "filled"
        in_own_process(core_job, None, str(filled), args.smoke)  # fills the cache the "cached" rows read
        jobs = {"prunelib": lambda r: (None, str(Path(tmp) / f"empty-{r}"))}
        if args.baseline:
            jobs = {"straightforward": lambda r: ("b64-lr1e-3-constant-fp32", str(Path(tmp) / f"base-{r}")), **jobs}
        jobs["cached"] = lambda r: (None, str(filled))
        samples: dict[str, list[dict]] = {name: [] for name in jobs}
        for r in range(-warmup, repeats):
            for name in rotation(list(jobs), r):
                result, peak_gb = in_own_process(core_job, *jobs[name](r), args.smoke)
                if r >= 0:
                    samples[name].append({**result, "peak_rss_gb": peak_gb})
                print(
                    name, "warm-up" if r < 0 else f"round {r}", {k: round(v, 2) for k, v in result.items()}, flush=True
                )

    rows = []
    for name, runs in samples.items():
        df = pd.DataFrame(runs)
        row = {"run": name, "rounds": len(df)}
        for column in ("train_s", "sweep_s", "total_s"):
            row |= {
                k: v
                for k, v in spread(df[column], f"{column}_").items()
                if not k.endswith("_n") and not k.endswith(("_q1", "_q3"))
            }
        row |= spread(df["peak_rss_gb"], "peak_rss_gb_") | {
            c: df[c].iloc[-1] for c in df.columns if c.endswith("accuracy")
        }
        row = {k: v for k, v in row.items() if not k.startswith("peak_rss_gb_q") and k != "peak_rss_gb_n"}
        row |= ratio_spread(
            [s["total_s"] for s in runs], [s["total_s"] for s in samples["prunelib"]], "total_vs_prunelib_"
        )
        row = {k: v for k, v in row.items() if not k.startswith("total_vs_prunelib_q") and k != "total_vs_prunelib_n"}
        rows.append(row)
    table = pd.DataFrame(rows).assign(cores=os.cpu_count())
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if not args.smoke:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False, float_format="%.3f")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
