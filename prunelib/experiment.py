"""The challenge end to end: load, train (or reuse the cache), sweep, and write tidy results."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from tqdm.auto import tqdm

from prunelib import model as mlp
from prunelib.config import ExperimentConfig
from prunelib.data import load_dataset
from prunelib.evaluate import sweep
from prunelib.plotting import plot_sparsity_vs_accuracy


@dataclass
class RunResult:
    """What :func:`run_sweeps` produced: the tidy table and where time went."""

    table: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)


def run_sweeps(config: ExperimentConfig, retrain: bool = False,
               data_dir: str | os.PathLike | None = None, progress: bool = True) -> RunResult:
    """Train (or load) one model per (dataset, seed) and sweep every method and k on it.

    Returns:
        The tidy sweep table over all datasets and seeds, and seconds spent per phase.
    """
    frames, seconds = [], {"load": 0.0, "train": 0.0, "sweep": 0.0}
    jobs = [(d, s) for d in config.datasets for s in config.seeds]
    cache: dict[str, object] = {}
    for dataset, seed in tqdm(jobs, desc="datasets x seeds", disable=not progress):
        t0 = time.perf_counter()
        if dataset not in cache:
            cache[dataset] = load_dataset(dataset, data_dir)
        data = cache[dataset]
        t1 = time.perf_counter()
        model = mlp.train_or_load(data, config.train_config(seed), retrain=retrain, progress=progress)
        t2 = time.perf_counter()
        frames.append(sweep(mlp.get_kernels(model), data.x_test, data.y_test, dataset=dataset,
                            methods=config.methods, ks=config.ks, seed=seed,
                            biases=mlp.get_biases(model), progress=progress))
        t3 = time.perf_counter()
        for phase, dt in zip(seconds, (t1 - t0, t2 - t1, t3 - t2)):
            seconds[phase] += dt
    return RunResult(pd.concat(frames, ignore_index=True), seconds)


def save_sweep(table: pd.DataFrame, results_dir: str | os.PathLike = "results") -> list[Path]:
    """Write ``<results>/<dataset>/sweep.csv`` and ``sparsity_vs_accuracy.png`` per dataset."""
    written = []
    for dataset, df in table.groupby("dataset", sort=False):
        out = Path(results_dir) / str(dataset)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "sweep.csv", index=False, float_format="%.4f")
        ax = plot_sparsity_vs_accuracy(df, title=f"{dataset}: one-shot magnitude pruning")
        ax.figure.savefig(out / "sparsity_vs_accuracy.png", dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
        written += [out / "sweep.csv", out / "sparsity_vs_accuracy.png"]
    return written


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy per (dataset, method, k), with measured sparsity, one row per k."""
    grouped = table.groupby(["dataset", "method", "k"], sort=False)
    out = grouped.agg(sparsity=("sparsity", "mean"), prunable_sparsity=("prunable_sparsity", "mean"),
                      accuracy=("accuracy", "mean"), seeds=("seed", "nunique"))
    return out.reset_index()
