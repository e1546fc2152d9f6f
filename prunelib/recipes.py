"""The recipe study: how the training recipe decides how gracefully a network prunes one-shot.

For each named recipe (a full :class:`~prunelib.config.TrainConfig`) the study trains a model
(cached), sweeps one-shot weight and unit pruning, and measures why it prunes as it does: per
hidden layer the relative distance travelled from initialization ``||W - W0|| / ||W0||`` and the
share of the squared norm held by the top 10 % of weights and of units. :func:`choose` picks the
recipe with the largest area under both one-shot curves among those that are accurate and fast
enough.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from prunelib import model as mlp
from prunelib import pruning
from prunelib.config import TrainConfig
from prunelib.data import Dataset
from prunelib.evaluate import sweep

# Every field spelled out: a change of TrainConfig's defaults must never move a recipe of the study.
_B512 = TrainConfig(hidden_sizes=(1000, 1000, 500, 200), num_classes=10, use_bias=False, epochs=10,
                    batch_size=512, learning_rate=1e-3, lr_schedule="cosine", weight_decay=0.0,
                    precision="mixed_bfloat16", seed=0, jit_compile=False, train_subset=None,
                    targeted_dropout=0.0, targeted_gamma=0.0, targeted_variant="weight", l1=0.0)

RECIPES: dict[str, TrainConfig] = {
    # The recipe of the first version: few large-batch steps at a small learning rate.
    "b512-lr1e-3-cosine": _B512,
    "b512-lr2e-3-cosine": replace(_B512, learning_rate=2e-3),
    "b512-lr4e-3-cosine": replace(_B512, learning_rate=4e-3),
    "b512-lr8e-3-cosine": replace(_B512, learning_rate=8e-3),
    "b512-lr4e-3-constant": replace(_B512, learning_rate=4e-3, lr_schedule="constant"),
    "b512-lr4e-3-cosine-fp32": replace(_B512, learning_rate=4e-3, precision="float32"),
    "b512-lr4e-3-cosine-20ep": replace(_B512, learning_rate=4e-3, epochs=20),
    "b512-lr4e-3-cosine-wd0.1": replace(_B512, learning_rate=4e-3, weight_decay=0.1),
    "b512-lr4e-3-cosine-wd0.3": replace(_B512, learning_rate=4e-3, weight_decay=0.3),
    "b512-lr4e-3-cosine-wd1": replace(_B512, learning_rate=4e-3, weight_decay=1.0),
    "b512-lr4e-3-cosine-wd2": replace(_B512, learning_rate=4e-3, weight_decay=2.0),
    "b512-lr4e-3-cosine-wd3": replace(_B512, learning_rate=4e-3, weight_decay=3.0),
    "b512-lr4e-3-cosine-wd1-20ep": replace(_B512, learning_rate=4e-3, weight_decay=1.0, epochs=20),
    "b512-lr6e-3-cosine-wd1": replace(_B512, learning_rate=6e-3, weight_decay=1.0),
    "b512-lr8e-3-cosine-wd1": replace(_B512, learning_rate=8e-3, weight_decay=1.0),
    "b128-lr1e-3-constant": replace(_B512, batch_size=128, lr_schedule="constant"),
    "b128-lr2e-3-cosine": replace(_B512, batch_size=128, learning_rate=2e-3),
    # The seed notebook's recipe (shuffled): Adam 1e-3, batch 64, float32.
    "b64-lr1e-3-constant-fp32": replace(_B512, batch_size=64, lr_schedule="constant", precision="float32"),
}
"""Named recipes of the study; every field is spelled out, so defaults elsewhere cannot move them."""

FIRST_RECIPE = "b512-lr1e-3-cosine"
"""The recipe of the first version (few large-batch steps at a small learning rate)."""
DEFAULT_RECIPE = "b512-lr6e-3-cosine-wd1"
"""The recipe :class:`~prunelib.config.TrainConfig` defaults to, chosen by :func:`choose` on the
study's MNIST results (largest one-shot area with dense >= 98.4 % and training <= 45 s)."""

STUDY: dict[str, tuple[str, ...]] = {
    "mnist": tuple(RECIPES),
    "fashion-mnist": ("b512-lr1e-3-cosine", "b512-lr4e-3-cosine", "b512-lr8e-3-cosine",
                      "b512-lr4e-3-cosine-wd0.1", "b512-lr4e-3-cosine-wd1", "b512-lr4e-3-cosine-wd3",
                      "b512-lr6e-3-cosine-wd1", "b128-lr1e-3-constant"),
}
"""The recipes the study runs per dataset (Fashion-MNIST: a subset, to check the MNIST ranking)."""

AUC_KS: tuple[float, ...] = (70, 80, 90, 95, 97, 99)
RECIPE_COLUMNS = ["dataset", "recipe", "seed", "method", "k", "sparsity", "accuracy", "dense_accuracy",
                  "train_seconds", "epochs", "batch_size", "learning_rate", "lr_schedule", "precision",
                  "weight_decay"]
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
        rows.append({"layer": f"hidden_{i}",
                     "drift": float(np.linalg.norm(w64 - w064) / np.linalg.norm(w064)),
                     "top10_weight_share": top_share(np.square(w64)),
                     "top10_unit_share": top_share(np.square(w64).sum(axis=0))})
    return pd.DataFrame(rows)


def initial_kernels(config: TrainConfig, input_shape: tuple[int, ...]) -> list[np.ndarray]:
    """The kernels :func:`prunelib.model.train` starts from for ``config`` (same seeds)."""
    return mlp.get_kernels(mlp.build_mlp(config.hidden_sizes, config.num_classes, input_shape,
                                         config.use_bias, config.seed))


def recipe_tables(data: Dataset, recipes: Mapping[str, TrainConfig], *, seed: int = 0,
                  ks: Iterable[float] = (0, *AUC_KS), cache: str | os.PathLike | None = None,
                  retrain: bool = False, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
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
        table = sweep(kernels, data.x_test, data.y_test, dataset=data.name, ks=ks, seed=seed,
                      progress=False)
        dense = float(table.loc[table["k"] == 0, "accuracy"].iloc[0]) if 0 in ks else float("nan")
        params = {f: getattr(config, f) for f in ("epochs", "batch_size", "learning_rate", "lr_schedule",
                                                   "precision", "weight_decay")}
        curves.append(table.assign(recipe=name, dense_accuracy=dense, train_seconds=seconds, **params))
        diag = layer_diagnostics(kernels, initial_kernels(config, data.x_train.shape[1:]))
        layers.append(diag.assign(dataset=data.name, recipe=name, seed=seed))
    return (pd.concat(curves, ignore_index=True)[RECIPE_COLUMNS],
            pd.concat(layers, ignore_index=True)[LAYER_COLUMNS])


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


def recipe_config(name: str) -> TrainConfig:
    """The :class:`TrainConfig` of recipe ``name``.

    Raises:
        ValueError: ``name`` is not a key of :data:`RECIPES`.
    """
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}") from None


def describe(config: TrainConfig) -> dict:
    """The recipe fields of ``config`` as a plain dict (for reports and manifests)."""
    return {k: v for k, v in asdict(config).items() if k not in ("seed",)}
