"""The recipe study: how the training recipe decides how gracefully a network prunes one-shot.

For each named recipe (a full :class:`~prunelib.models.config.TrainConfig`) the study trains a model
(cached), sweeps one-shot weight and unit pruning, and measures why it prunes as it does: per
hidden layer the relative distance travelled from initialization ``||W - W0|| / ||W0||`` and the
share of the squared norm held by the top 10 % of weights and of units. :func:`choose` picks the
recipe with the largest area under both one-shot curves among those that are accurate enough and
within a training budget counted in optimizer steps.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from prunelib.core import pruning
from prunelib.core.evaluate import sweep
from prunelib.data import Dataset
from prunelib.models import mlp
from prunelib.models.config import (  # noqa: F401 - the recipe study's names, read from here too
    DEFAULT_RECIPE,
    FIRST_RECIPE,
    RECIPES,
    TrainConfig,
    get_recipe,
    recipe_model,
)
from prunelib.reporting.recipe_summary import AUC_KS, MAX_STEPS, choose, summarize, train_steps  # noqa: F401

RECIPE_COLUMNS = [
    "dataset",
    "recipe",
    "seed",
    "method",
    "k",
    "sparsity",
    "accuracy",
    "dense_accuracy",
    "train_seconds",
    "epochs",
    "batch_size",
    "learning_rate",
    "lr_schedule",
    "precision",
    "weight_decay",
]
LAYER_COLUMNS = ["dataset", "recipe", "seed", "layer", "drift", "top10_weight_share", "top10_unit_share"]


def top_share(values: np.ndarray, fraction: float = 0.1) -> float:
    """Percent of ``sum(values)`` held by the largest ``fraction`` of the (non-negative) values."""
    flat = np.sort(np.asarray(values, dtype=np.float64).ravel())[::-1]
    n = max(1, round(fraction * flat.size))
    total = flat.sum()
    return float(100.0 * flat[:n].sum() / total) if total > 0 else float("nan")


def layer_diagnostics(kernels: Sequence[np.ndarray], init_kernels: Sequence[np.ndarray]) -> pd.DataFrame:
    """Per hidden layer: drift from initialization and how concentrated the squared norm is.

    Args:
        kernels: trained kernels, each (inputs, units); the last feeds the logits and is skipped.
        init_kernels: the same model's kernels at initialization.

    Returns:
        Columns ``layer, drift, top10_weight_share, top10_unit_share`` (drift as a ratio, shares in
        percent of the layer's squared L2 norm).
    """
    hidden, _ = pruning.split_logits(kernels)
    rows = []
    for i, (w, w0) in enumerate(zip(hidden, init_kernels)):
        w64, w064 = w.astype(np.float64), w0.astype(np.float64)
        rows.append(
            {
                "layer": f"hidden_{i}",
                "drift": float(np.linalg.norm(w64 - w064) / np.linalg.norm(w064)),
                "top10_weight_share": top_share(np.square(w64)),
                "top10_unit_share": top_share(np.square(w64).sum(axis=0)),
            }
        )
    return pd.DataFrame(rows)


def initial_kernels(config: TrainConfig, input_shape: tuple[int, ...]) -> list[np.ndarray]:
    """The kernels :func:`prunelib.models.mlp.train` starts from for ``config`` (same seeds)."""
    return mlp.get_kernels(mlp.build(config, input_shape))


def recipe_tables(
    data: Dataset,
    recipes: Mapping[str, TrainConfig],
    *,
    seed: int = 0,
    ks: Iterable[float] = (0, *AUC_KS),
    cache: str | os.PathLike | None = None,
    retrain: bool = False,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (or load) one model per recipe and measure its one-shot curves and diagnostics.

    Returns:
        ``(curves, layers)``: one row per (recipe, method, k) with :data:`RECIPE_COLUMNS`, and one
        row per (recipe, hidden layer) with :data:`LAYER_COLUMNS`.
    """
    ks = tuple(pruning.validate_k(k) for k in ks)
    curves, layers = [], []
    for name, config in tqdm(list(recipes.items()), desc=f"recipes {data.name}", disable=not progress):
        config = replace(config, seed=seed)
        model, seconds = mlp.train_cached(data, config, cache=cache, retrain=retrain, progress=progress)
        kernels = mlp.get_kernels(model)
        table = sweep(kernels, data.x_test, data.y_test, dataset=data.name, ks=ks, seed=seed, progress=False)
        dense = float(table.loc[table["k"] == 0, "accuracy"].iloc[0]) if 0 in ks else float("nan")
        params = {
            f: getattr(config.recipe, f)
            for f in ("epochs", "batch_size", "learning_rate", "lr_schedule", "precision", "weight_decay")
        }
        curves.append(table.assign(recipe=name, dense_accuracy=dense, train_seconds=seconds, **params))
        diag = layer_diagnostics(kernels, initial_kernels(config, data.x_train.shape[1:]))
        layers.append(diag.assign(dataset=data.name, recipe=name, seed=seed))
    return (pd.concat(curves, ignore_index=True)[RECIPE_COLUMNS], pd.concat(layers, ignore_index=True)[LAYER_COLUMNS])


def describe(config: TrainConfig) -> dict:
    """The recipe fields of ``config`` as a plain dict (for reports and manifests)."""
    return asdict(config.recipe)
