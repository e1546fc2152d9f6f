"""Plots of tidy result tables; each function takes a DataFrame and returns the Axes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from prunelib.base.strategies import order as strategy_order
from prunelib.reporting.stats import ci95_interval

XLABELS = {
    "sparsity": "measured sparsity (% of all weights that are zero)",
    "effective_params": "effective parameters (nonzero weights between live units, log scale)",
    "k": "k (% pruned in the one layer)",
    "remaining": "weights remaining (% of all weights that are nonzero, log scale)",
}

REMAINING_TICKS = (100, 50, 30, 20, 10, 5, 3, 2, 1)
"""Ticks of the weights-remaining axis: where the challenge's ks (0 ... 99) fall."""
REMAINING_FLOOR = 0.1
"""Weights remaining below this (k = 100) are drawn at it: a log axis has no zero."""


def with_remaining(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``remaining`` column: the percent of weights left, 100 - measured sparsity."""
    return df.assign(remaining=(100.0 - df["sparsity"]).clip(lower=REMAINING_FLOOR))


def _remaining_axis(ax: plt.Axes, remaining: pd.Series) -> None:
    """Weights remaining on a log axis, dense on the left (100 % ... 1 % for the challenge's ks),
    the convention of pruning papers: k = 90 ... 99, where the curves part, get as much width as
    0 ... 90. The limits hug the data (the recovery figure starts near 20 %)."""
    from matplotlib.ticker import FixedLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_xlim(min(110.0, remaining.max() * 1.3), remaining.min() / 1.3)  # descending: dense left
    ax.xaxis.set_major_locator(FixedLocator(REMAINING_TICKS))
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:g} %")
    ax.xaxis.set_minor_formatter(NullFormatter())


def _accuracy_axes(ax: plt.Axes, xlabel: str, title: str | None, *, full_range: bool = True) -> plt.Axes:
    """The house style of an accuracy plot: the x label, test accuracy (%) on y (0 to 100 unless
    ``full_range`` is off), a light grid and the title if any."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    if full_range:
        ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return ax


def plot_sparsity_vs_accuracy(
    df: pd.DataFrame,
    ax: plt.Axes | None = None,
    *,
    x: str = "sparsity",
    hue: str = "method",
    style: str | None = None,
    title: str | None = None,
) -> plt.Axes:
    """Accuracy (%) against measured sparsity (%), one curve per ``hue`` value.

    With several seeds per point the curve is the mean and the band its 95 % t confidence
    interval. The dense accuracy (mean at k = 0) is drawn as a dashed reference line.
    ``x="effective_params"`` plots against the weights that can still matter, on a log axis
    that runs from dense (left) to tiny (right); ``x="remaining"`` against the percent of weights
    left (:func:`with_remaining`), on a log axis from 100 % to 1 %.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    if x == "remaining":
        df = with_remaining(df)
    sns.lineplot(data=df, x=x, y="accuracy", hue=hue, style=style, marker="o", errorbar=ci95_interval, ax=ax)
    dense = df.loc[df["k"] == 0, "accuracy"]
    if len(dense):
        ax.axhline(dense.mean(), color="grey", linestyle="--", linewidth=1, label=f"dense ({dense.mean():.2f} %)")
    if x == "effective_params":
        ax.set_xscale("log")
        ax.invert_xaxis()
    elif x == "remaining":
        _remaining_axis(ax, df["remaining"])
    ax.legend(loc="lower left")
    return _accuracy_axes(ax, XLABELS.get(x, x), title)


def plot_sensitivity(
    df: pd.DataFrame, ax: plt.Axes | None = None, *, method: str = "weight", title: str | None = None
) -> plt.Axes:
    """Accuracy when only one hidden layer is pruned at k, one curve per layer (mean, 95 % CI)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(
        data=df[df["method"] == method], x="k", y="accuracy", hue="layer", marker="o", errorbar=ci95_interval, ax=ax
    )
    return _accuracy_axes(ax, XLABELS["k"], title or f"{method} pruning of one layer at a time")


def plot_distributions(df: pd.DataFrame, axes=None, *, title: str | None = None):
    """Histograms of weight magnitudes and of unit norms, one colour per layer.

    Args:
        df: long table with columns ``layer, quantity, value`` (see
            :func:`prunelib.study.analysis.weight_distributions`).
        axes: two Axes to draw on (default: a new 1x2 figure).

    Returns:
        The two Axes (|weight|, unit norm).
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, quantity in zip(axes, ["|weight|", "unit L2 norm"]):
        part = df[df["quantity"] == quantity]
        sns.histplot(
            data=part,
            x="value",
            hue="layer",
            element="step",
            fill=False,
            stat="density",
            common_norm=False,
            bins=60,
            ax=ax,
        )
        ax.set_xlabel(quantity)
        ax.set_title(f"{quantity} per hidden layer")
    if title:
        axes[0].figure.suptitle(title)
    return axes


def plot_recovery(
    df: pd.DataFrame, ax: plt.Axes | None = None, *, x: str = "sparsity", title: str | None = None
) -> plt.Axes:
    """Accuracy against measured sparsity (or ``x="remaining"``: weights remaining, log axis),
    colour = recovery strategy, line style = method."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    if x == "remaining":
        df = with_remaining(df)
    sns.lineplot(
        data=df,
        x=x,
        y="accuracy",
        hue="strategy",
        style="method",
        marker="o",
        hue_order=strategy_order(df["strategy"].unique()),
        errorbar=ci95_interval,
        ax=ax,
    )
    if x == "remaining":
        _remaining_axis(ax, df["remaining"])
    # Recovered networks sit close together near the top: the axis follows the data.
    return _accuracy_axes(ax, XLABELS[x], title, full_range=False)


def plot_recipes(
    df: pd.DataFrame, ax: plt.Axes | None = None, *, method: str = "weight", title: str | None = None
) -> plt.Axes:
    """One-shot accuracy against k for each training recipe (a recipe-study table, one method)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    part = df[df["method"] == method]
    sns.lineplot(data=part, x="k", y="accuracy", hue="recipe", marker="o", errorbar=None, ax=ax)
    ax.legend(loc="lower left", fontsize=7)
    return _accuracy_axes(
        ax, f"k (% pruned per layer, {method} pruning)", title or f"{method} pruning by training recipe"
    )
