"""Reading the recipe study's table: the one-shot area per recipe, and the recipe it chooses.

Pure pandas on the table :func:`prunelib.study.recipes.recipe_tables` writes, so the report can
summarize a run without loading a framework.
"""

from __future__ import annotations

import numbers
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


DENSE_MARGIN = 0.5
"""A recipe is accurate enough when its dense accuracy is within this many points of the best
recipe's on the same dataset (one rule for every dataset)."""


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
    summary: pd.DataFrame, *, dataset: str = "mnist", within: float = DENSE_MARGIN, max_steps: int | None = None
) -> str:
    """The recipe with the largest one-shot area on ``dataset`` among those whose dense accuracy is
    within ``within`` points of the best recipe's on the same dataset and (if given) that train in at
    most ``max_steps`` optimizer steps (:data:`MAX_STEPS` is the study's budget; the best dense
    accuracy is taken among the recipes within it). Measured seconds play no part: they vary with
    the machine and its load.

    Raises:
        ValueError: ``within`` is negative, ``dataset`` has no recipe (within the budget), a recipe
            considered has no dense accuracy or area, or a step budget is given and the summary has
            no step counts.

    Example:
        >>> import pandas as pd
        >>> table = pd.DataFrame({"dataset": ["mnist"] * 3, "recipe": ["a", "b", "c"],
        ...                       "dense_accuracy": [98.6, 98.2, 97.0], "area": [40.0, 60.0, 90.0]})
        >>> choose(table), choose(table, within=0.3)
        ('b', 'a')
    """
    if isinstance(within, bool) or not isinstance(within, numbers.Real) or not 0 <= within < float("inf"):
        raise ValueError(f"within must be a non-negative finite number of points, got {within!r}")
    part = summary[summary["dataset"] == dataset]
    if max_steps is not None:
        if part["train_steps"].isna().any():
            raise ValueError("a step budget needs the recipes' epochs and batch_size columns")
        part = part[part["train_steps"] <= max_steps]
    if part.empty:
        raise ValueError(
            f"no recipe on {dataset!r}" + (f" within {max_steps} optimizer steps" if max_steps is not None else "")
        )
    missing = part.loc[part["dense_accuracy"].isna() | part["area"].isna(), "recipe"].tolist()
    if missing:
        raise ValueError(
            f"recipes {missing} on {dataset!r} have no dense accuracy or one-shot area; re-run the recipe study for them"
        )
    # Accuracies are multiples of 0.01 %: the tolerance keeps a recipe exactly `within` below the best.
    part = part[part["dense_accuracy"] >= part["dense_accuracy"].max() - within - 1e-9]
    return str(part.loc[part["area"].idxmax(), "recipe"])
