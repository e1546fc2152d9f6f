"""The study's figures, laid out once: the runner saves them, the notebook shows them, the report
embeds them by the file names below.

Each function takes tidy tables and returns a matplotlib Figure; :func:`save_all` draws every
figure a :class:`prunelib.reporting.results.Results` supports into ``<results>/<dataset>/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from prunelib.reporting.plotting import (
    plot_distributions,
    plot_recipes,
    plot_recovery,
    plot_sensitivity,
    plot_sparsity_vs_accuracy,
)

MAIN = "sparsity_vs_accuracy.png"
BASELINES = "baselines.png"
SENSITIVITY = "sensitivity.png"
DISTRIBUTIONS = "distributions.png"
RECIPES = "recipes.png"
RECOVERY = "recovery.png"

CAPTIONS = {
    MAIN: "accuracy vs weights remaining (100 - measured sparsity, log axis); dashed: survivors "
    "re-fitted by least squares (lstsq); dotted, at the high ks: the library's best post-training method (best)",
    RECIPES: "one-shot pruning of models trained with each recipe of the study",
    BASELINES: "baselines: global pruning; retrain from scratch vs effective parameters",
    SENSITIVITY: "pruning one layer at a time",
    DISTRIBUTIONS: "weight magnitudes and unit norms before pruning",
    RECOVERY: "recovering accuracy: strategies vs one-shot",
}
"""Figure file names in report order, with their captions."""
FILE_NAMES = frozenset(CAPTIONS)


def sparsity_vs_accuracy(sweep: pd.DataFrame, dataset: str) -> plt.Figure:
    """The challenge's figure: accuracy against weights remaining (log axis), one curve per
    method; the least-squares corrected curves dashed beside them and the best post-training
    method's dotted (line styles in the table's order of corrections: none, lstsq, best)."""
    main_rows = sweep[sweep["method"].isin(["weight", "unit"])]
    corrected = "correction" in main_rows and main_rows["correction"].nunique() > 1
    # Weights remaining on a log axis: k = 90 ... 99, where the curves part, get half the width.
    ax = plot_sparsity_vs_accuracy(
        main_rows,
        x="remaining",
        style="correction" if corrected else None,
        title=f"{dataset}: one-shot pruning, mean and 95 % CI over {sweep['seed'].nunique()} seeds",
    )
    return ax.figure


def baselines(sweep: pd.DataFrame, dataset: str) -> plt.Figure:
    """Layer-wise vs global weight pruning; unit pruning vs the same sizes trained from scratch."""
    df = sweep[sweep["correction"] == "none"] if "correction" in sweep else sweep
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    plot_sparsity_vs_accuracy(
        df[df["method"].isin(["weight", "global-weight"])], axes[0], title="layer-wise vs global weight pruning"
    )
    plot_sparsity_vs_accuracy(
        df[df["method"].isin(["unit", "retrain-small"])],
        axes[1],
        x="effective_params",
        title="unit pruning vs the same sizes trained from scratch",
    )
    fig.suptitle(dataset)
    return fig


def sensitivity(table: pd.DataFrame, dataset: str) -> plt.Figure:
    """One hidden layer pruned at a time, weight and unit side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, method in zip(axes, ["weight", "unit"]):
        plot_sensitivity(table, ax, method=method)
    fig.suptitle(f"{dataset}: layer sensitivity")
    return fig


def distributions(table: pd.DataFrame, dataset: str) -> plt.Figure:
    """Weight magnitudes and unit norms of the trained model before pruning."""
    axes = plot_distributions(table, title=f"{dataset}: trained weights before pruning (seed 0)")
    return axes[0].figure


def recipes(curves: pd.DataFrame) -> plt.Figure:
    """One-shot weight and unit curves per training recipe (one dataset)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, method in zip(axes, ["weight", "unit"]):
        plot_recipes(curves, ax, method=method)
    fig.suptitle(
        f"{curves['dataset'].iloc[0]}: one-shot pruning by training recipe (seed {int(curves['seed'].iloc[0])})"
    )
    return fig


def recovery(table: pd.DataFrame, dataset: str) -> plt.Figure:
    """Recovery strategies against one-shot pruning."""
    return plot_recovery(table, x="remaining", title=f"{dataset}: recovering accuracy at high sparsity").figure


def plan(results, dataset: str | None = None) -> Iterator[tuple[str, str, pd.DataFrame, Callable[[], plt.Figure]]]:
    """Every figure ``results`` supports, not yet drawn: ``(dataset, file name, its table, draw)``,
    in report order."""

    def of(table: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
        if table.empty:
            return iter(())
        return ((str(d), df) for d, df in table.groupby("dataset", sort=False) if dataset in (None, d))

    for d, df in of(results.sweep):
        yield d, MAIN, df, lambda df=df, d=d: sparsity_vs_accuracy(df, d)
    for d, df in of(results.recipes):
        yield d, RECIPES, df, lambda df=df: recipes(df)
    for d, df in of(results.sweep):
        if df["method"].isin(["global-weight", "retrain-small"]).any():
            yield d, BASELINES, df, lambda df=df, d=d: baselines(df, d)
    for d, df in of(results.sensitivity):
        yield d, SENSITIVITY, df, lambda df=df, d=d: sensitivity(df, d)
    for d, df in results.distributions.items():
        if dataset in (None, d):
            yield d, DISTRIBUTIONS, df, lambda df=df, d=d: distributions(df, d)
    for d, df in of(results.recovery):
        yield d, RECOVERY, df, lambda df=df, d=d: recovery(df, d)


def draw(results, dataset: str | None = None) -> Iterator[tuple[str, str, plt.Figure]]:
    """Every figure ``results`` supports, as ``(dataset, file name, figure)``, in report order."""
    for d, name, _, make in plan(results, dataset):
        yield d, name, make()


def save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` as a PNG and close it."""
    fig.savefig(path, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def _table_digest(df: pd.DataFrame) -> str:
    import hashlib

    h = hashlib.sha256(repr((list(df.columns), [str(t) for t in df.dtypes])).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def save_all(
    results, results_dir: str | os.PathLike = "results", *, cache: str | os.PathLike | None = None
) -> list[Path]:
    """Draw every figure of ``results`` into ``<results>/<dataset>/<file name>``.

    Args:
        cache: a directory of drawn figures, each kept under a key of its table's contents, the
            source of this module and the plotting code, and the plotting libraries' versions; a
            figure whose key matches is copied instead of drawn again. ``None`` draws everything.
    """
    import shutil

    from prunelib.base.fingerprint import code_fingerprint
    from prunelib.base.paths import digest
    from prunelib.base.provenance import cached_artifact, versions

    written = []
    if cache is not None:
        code = code_fingerprint(__name__)
        libraries = versions(("matplotlib", "seaborn", "pandas", "numpy"))
    for dataset, name, table, make in plan(results):
        out = Path(results_dir) / dataset
        out.mkdir(parents=True, exist_ok=True)
        if cache is None:
            written.append(save(make(), out / name))
            continue
        key = {"figure": name, "dataset": dataset, "table": _table_digest(table), "code": code, "versions": libraries}
        path = Path(cache) / f"{dataset}-{Path(name).stem}-{digest(key)}.png"
        cached_artifact(path, key, make, lambda fig, tmp: save(fig, tmp), lambda p: p)
        shutil.copyfile(path, out / name)
        written.append(out / name)
    return written
