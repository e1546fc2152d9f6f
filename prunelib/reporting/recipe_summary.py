"""Reading the recipe study's table: the one-shot area per recipe, and the recipe it chooses.

Pure pandas on the table :func:`prunelib.study.recipes.recipe_tables` writes, so the report can
summarize a run without loading a framework.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

AUC_KS: tuple[float, ...] = (70, 80, 90, 95, 97, 99)
"""The pruning percentages whose mean one-shot accuracy is a recipe's area."""

TRAIN_SIZE = 60_000
"""Training images per epoch of the recipe study (MNIST and Fashion-MNIST both have 60,000)."""

MAX_STEPS = 10 * -(-TRAIN_SIZE // 512)
"""The recipe study's training budget in optimizer steps: 10 epochs at batch 512 over 60,000
images (1,180 steps). Counted in work, not seconds, so the choice does not move with the machine's
speed or load; the measured seconds stay in the summary beside the steps."""


def train_steps(epochs, batch_size, train_size: int = TRAIN_SIZE):
    """Optimizer steps of a recipe: ``epochs * ceil(train_size / batch_size)`` (as
    :func:`prunelib.models.mlp.steps_per_epoch` counts them); works elementwise on columns."""
    return epochs * -(-train_size // batch_size)


def summarize(curves: pd.DataFrame, ks: Sequence[float] = AUC_KS, *, train_size: int = TRAIN_SIZE) -> pd.DataFrame:
    """Per (dataset, recipe): dense accuracy, training steps and seconds, the one-shot area per method.

    The area is the mean accuracy over ``ks`` (percent), one number per method; ``area`` is the
    mean of the weight and unit areas, the quantity :func:`choose` maximizes. ``train_steps``
    (:func:`train_steps` over ``train_size`` images) needs the table's ``epochs`` and
    ``batch_size`` columns; without them it is missing (NaN).
    """
    part = curves[curves["k"].isin([float(k) for k in ks])]
    areas = part.groupby(["dataset", "recipe", "method"], sort=False)["accuracy"].mean().unstack("method")
    agg = {"dense_accuracy": ("dense_accuracy", "mean"), "train_seconds": ("train_seconds", "mean")}
    if {"epochs", "batch_size"} <= set(curves.columns):
        agg |= {"epochs": ("epochs", "first"), "batch_size": ("batch_size", "first")}
    base = curves.groupby(["dataset", "recipe"], sort=False).agg(**agg)
    if "epochs" in base.columns:
        base.insert(1, "train_steps", train_steps(base.pop("epochs"), base.pop("batch_size"), train_size))
    else:
        base.insert(1, "train_steps", float("nan"))
    out = base.join(areas.add_prefix("area_"))
    out["area"] = out[[c for c in out.columns if c.startswith("area_")]].mean(axis=1)
    return out.reset_index()


def choose(
    summary: pd.DataFrame, *, dataset: str = "mnist", min_dense: float = 98.4, max_steps: int | None = None
) -> str:
    """The recipe with the largest one-shot area on ``dataset`` among those with dense accuracy of
    at least ``min_dense`` and (if given) at most ``max_steps`` optimizer steps of training
    (:data:`MAX_STEPS` is the study's budget). Measured seconds play no part: they vary with the
    machine and its load.

    Raises:
        ValueError: no recipe of ``dataset`` meets the constraints, or a step budget is given and
            the summary has no step counts.
    """
    part = summary[(summary["dataset"] == dataset) & (summary["dense_accuracy"] >= min_dense)]
    if max_steps is not None:
        if part["train_steps"].isna().any():
            raise ValueError("a step budget needs the recipes' epochs and batch_size columns")
        part = part[part["train_steps"] <= max_steps]
    if part.empty:
        raise ValueError(
            f"no recipe on {dataset!r} reaches {min_dense} % dense accuracy"
            + (f" within {max_steps} optimizer steps" if max_steps is not None else "")
        )
    return str(part.loc[part["area"].idxmax(), "recipe"])
