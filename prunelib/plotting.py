"""Plots of tidy result tables; each function takes a DataFrame and returns the Axes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def plot_sparsity_vs_accuracy(df: pd.DataFrame, ax: plt.Axes | None = None, *,
                              x: str = "sparsity", hue: str = "method",
                              title: str | None = None) -> plt.Axes:
    """Accuracy (%) against measured sparsity (%), one curve per ``hue`` value.

    With several seeds per point the curve is the mean and the band its 95 % confidence
    interval. The dense accuracy (mean at k = 0) is drawn as a dashed reference line.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=df, x=x, y="accuracy", hue=hue, marker="o", errorbar=("ci", 95),
                 ax=ax)
    dense = df.loc[df["k"] == 0, "accuracy"]
    if len(dense):
        ax.axhline(dense.mean(), color="grey", linestyle="--", linewidth=1,
                   label=f"dense ({dense.mean():.2f} %)")
    ax.set_xlabel("measured sparsity (% of all weights that are zero)" if x == "sparsity" else x)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    if title:
        ax.set_title(title)
    return ax
