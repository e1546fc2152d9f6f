"""Evidence beside the main sweep: layer sensitivity, weight distributions, retrain-from-scratch.

Each function returns a tidy DataFrame; plotting lives in :mod:`prunelib.reporting.plotting`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from prunelib.core import pruning
from prunelib.core.evaluate import check_evaluation, check_grid, evaluate_kernels
from prunelib.core.pruning import DEFAULT_KS
from prunelib.data import Dataset
from prunelib.models.config import TrainConfig

SENSITIVITY_COLUMNS = ["dataset", "method", "layer", "k", "seed", "sparsity", "accuracy", "loss"]


def layer_sensitivity(
    kernels: Sequence[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    dataset: str,
    methods: Iterable[str] = ("weight", "unit"),
    ks: Iterable[float] = DEFAULT_KS,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Prune one hidden layer at a time at each k, leaving the others dense, and evaluate.

    Raises:
        ValueError: an unknown method, a bad k, or kernels, images or labels that do not fit;
            all before any pruning.

    Returns:
        Columns :data:`SENSITIVITY_COLUMNS`; ``layer`` is ``hidden_i`` for kernel i, ``sparsity``
        the measured percent of zeros over all kernels.
    """
    kernels = pruning.validate_kernels(kernels)
    methods, ks = check_grid(methods, ks, known=pruning.METHODS)
    check_evaluation(kernels, x, y)  # x and y checked as the rows will check them, before any pruning
    hidden, logits = pruning.split_logits(kernels)
    grid = [(m, i, k) for m in methods for i in range(len(hidden)) for k in ks]
    rows = []
    for method, i, k in tqdm(grid, desc=f"sensitivity {dataset} seed {seed}", disable=not progress, leave=False):
        # A stand-in logit kernel that chains with layer i: only layer i's mask is used.
        stand_in = np.zeros((hidden[i].shape[1], 1), hidden[i].dtype)
        mask = pruning.compute_masks([hidden[i], stand_in], k, method)[0]
        pruned = list(kernels)
        pruned[i] = pruning.apply_masks([hidden[i], stand_in], [mask, np.ones(stand_in.shape, bool)])[0]
        accuracy, loss = evaluate_kernels(pruned, x, y)
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "layer": f"hidden_{i}",
                "k": k,
                "seed": seed,
                "sparsity": pruning.sparsity(pruned),
                "accuracy": accuracy,
                "loss": loss,
            }
        )
    return pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)


def weight_distributions(kernels: Sequence[np.ndarray], max_per_layer: int = 20_000, seed: int = 0) -> pd.DataFrame:
    """Per hidden layer, weight magnitudes (a uniform sample of at most ``max_per_layer``) and all
    unit (column) L2 norms, as a long table: ``layer, quantity, value``.

    The sample keeps the table small enough to plot; unit norms are never sampled.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for i, w in enumerate(pruning.split_logits(kernels)[0]):
        mags = pruning.weight_scores(w).ravel()
        if mags.size > max_per_layer:
            mags = rng.choice(mags, max_per_layer, replace=False)
        norms = pruning.unit_scores(w)
        frames += [
            pd.DataFrame({"layer": f"hidden_{i}", "quantity": "|weight|", "value": mags}),
            pd.DataFrame({"layer": f"hidden_{i}", "quantity": "unit L2 norm", "value": norms}),
        ]
    return pd.concat(frames, ignore_index=True)


def units_left(hidden_sizes: Sequence[int], k: float) -> tuple[int, ...]:
    """Hidden layer sizes after unit pruning removes ``round(k/100 * n)`` units of each."""
    return tuple(n - pruning.count_to_prune(n, k) for n in hidden_sizes)


def retrain_baseline(
    data: Dataset,
    config: TrainConfig,
    ks: Iterable[float],
    *,
    cache: str | os.PathLike | None = None,
    retrain: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """Train, from scratch, dense networks with the unit counts unit pruning leaves at each k.

    Rows have method ``retrain-small`` and the sweep's columns. ``sparsity`` is measured with the
    small network written into the full architecture (missing weights are zeros), and
    ``effective_params`` counts its weights, so both axes compare with unit pruning at the same k.

    A k that leaves a hidden layer with 0 units (k = 100, or a small layer at a high k) still gets
    its row, computed without training: no input reaches the logits through a layer of no units, so
    such a network's output does not depend on the image (as unit pruning's at that k does not),
    and the row is the all-zero network's: zero logits, every image called class 0, loss
    ln(classes), ``effective_params`` 0 (no weight reaches the logits); ``sparsity`` still counts
    the small network's shapes.
    """
    from prunelib.core.evaluate import SWEEP_COLUMNS
    from prunelib.models import mlp

    arch = config.architecture
    inputs = int(np.prod(data.x_train.shape[1:]))
    full = sum(a * b for a, b in zip((inputs, *arch.hidden_sizes), (*arch.hidden_sizes, arch.num_classes)))
    full_hidden = full - arch.hidden_sizes[-1] * arch.num_classes
    rows = []
    for k in tqdm(
        [pruning.validate_k(k) for k in ks],
        desc=f"retrain-small {data.name} seed {config.seed}",
        disable=not progress,
        leave=False,
    ):
        sizes = units_left(arch.hidden_sizes, k)
        cut_off = min(sizes) < 1
        if cut_off:
            # Nothing to train: a layer of no units cuts the input off. Evaluate the all-zero
            # network of these (zero-width) shapes; no training, nothing cached.
            widths = (inputs, *sizes, arch.num_classes)
            kernels = [np.zeros((a, b), np.float32) for a, b in zip(widths, widths[1:])]
            biases = [np.zeros(b, np.float32) for b in widths[1:]] if arch.use_bias else None
        else:
            model = mlp.train_or_load(
                data, replace(config, architecture=replace(arch, hidden_sizes=sizes)), retrain=retrain, cache=cache
            )
            kernels, biases = mlp.get_kernels(model), mlp.get_biases(model)
        accuracy, loss = evaluate_kernels(kernels, data.x_test, data.y_test, biases)
        params = sum(w.size for w in kernels)
        hidden_params = params - kernels[-1].size
        rows.append(
            {
                "dataset": data.name,
                "method": "retrain-small",
                "correction": "none",
                "k": k,
                "seed": config.seed,
                "seconds": float("nan"),
                "sparsity": 100.0 * (1 - params / full),
                "prunable_sparsity": 100.0 * (1 - hidden_params / full_hidden),
                "accuracy": accuracy,
                "loss": loss,
                "effective_params": 0 if cut_off else params,  # as unit pruning's: none reach the logits
                "norm_kept": float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)
