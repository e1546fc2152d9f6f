"""Confidence intervals over seeds: Student's t, because five seeds are too few to bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def ci95(values) -> float:
    """Half-width of the two-sided 95 % t confidence interval of the mean (NaN for one value)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))


def ci95_interval(values) -> tuple[float, float]:
    """The 95 % t interval (low, high) around the mean; a point for a single value.

    Shaped for seaborn's ``errorbar=`` argument, so plots and tables use one definition.
    """
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    half = ci95(x)
    return (mean, mean) if np.isnan(half) else (mean - half, mean + half)


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy per (dataset, method, k) with its 95 % confidence half-width over seeds.

    Raises:
        ValueError: ``table`` is not a DataFrame with the sweep's columns (naming those missing).
    """
    needed = ["dataset", "method", "k", "seed", "sparsity", "prunable_sparsity", "accuracy"]
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"summary_table needs a sweep DataFrame, got {type(table).__name__}")
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"summary_table needs the sweep's columns; missing {missing}")
    keys = ["dataset", "method", *(["correction"] if "correction" in table else []), "k"]
    grouped = table.groupby(keys, sort=False)
    out = grouped.agg(
        sparsity=("sparsity", "mean"),
        prunable_sparsity=("prunable_sparsity", "mean"),
        accuracy=("accuracy", "mean"),
        ci95=("accuracy", ci95),
        seeds=("seed", "nunique"),
    )
    return out.reset_index()
