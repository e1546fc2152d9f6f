"""Reading the recipe study's table: the one-shot area per recipe, and the recipe it chooses.

Pure pandas on the table :func:`prunelib.study.recipes.recipe_tables` writes, so the report can
summarize a run without loading a framework.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

AUC_KS: tuple[float, ...] = (70, 80, 90, 95, 97, 99)
"""The pruning percentages whose mean one-shot accuracy is a recipe's area."""


def summarize(curves: pd.DataFrame, ks: Sequence[float] = AUC_KS) -> pd.DataFrame:
    """Per (dataset, recipe): dense accuracy, training seconds and the one-shot area per method.

    The area is the mean accuracy over ``ks`` (percent), one number per method; ``area`` is the
    mean of the weight and unit areas, the quantity :func:`choose` maximizes.
    """
    part = curves[curves["k"].isin([float(k) for k in ks])]
    areas = part.groupby(["dataset", "recipe", "method"], sort=False)["accuracy"].mean().unstack("method")
    base = curves.groupby(["dataset", "recipe"], sort=False).agg(
        dense_accuracy=("dense_accuracy", "mean"), train_seconds=("train_seconds", "mean"))
    out = base.join(areas.add_prefix("area_"))
    out["area"] = out[[c for c in out.columns if c.startswith("area_")]].mean(axis=1)
    return out.reset_index()


def choose(summary: pd.DataFrame, *, dataset: str = "mnist", min_dense: float = 98.4,
           max_seconds: float | None = None) -> str:
    """The recipe with the largest one-shot area on ``dataset`` among those with dense accuracy of
    at least ``min_dense`` and (if given) training time of at most ``max_seconds``.

    Raises:
        ValueError: no recipe of ``dataset`` meets the constraints.
    """
    part = summary[(summary["dataset"] == dataset) & (summary["dense_accuracy"] >= min_dense)]
    if max_seconds is not None:
        part = part[part["train_seconds"] <= max_seconds]
    if part.empty:
        raise ValueError(f"no recipe on {dataset!r} reaches {min_dense} % dense accuracy"
                         + (f" within {max_seconds} s" if max_seconds is not None else ""))
    return str(part.loc[part["area"].idxmax(), "recipe"])
