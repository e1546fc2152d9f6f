"""The library's best post-training method beside the challenge's curves, at the ks where they part.

The challenge prunes by magnitude (weights) or column norm (units) and, as its correction, re-fits
the survivors of those masks (:func:`prunelib.core.evaluate.sweep`). The post-training methods
(:mod:`prunelib.core.post_training`) choose their own masks from calibration data and re-fit; at high
k they keep far more (results/benchmarks/post_training.csv). :func:`sweep_best` adds them to the
sweep as the correction ``"best"``, one method per pruning method (:data:`BEST`), with the sweep's
columns and measurements, so the report and figures read them as one more curve.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from prunelib.core import pruning
from prunelib.core.evaluate import SWEEP_COLUMNS, check_evaluation, check_grid, hidden_norm, sweep_row
from prunelib.core.post_training import get_method, post_training_prune_with_biases

BEST: dict[str, str] = {"weight": "per-unit-obs-gradual", "unit": "unit-obs+lstsq"}
"""The post-training method that keeps the most at high k on the challenge MLP, per pruning method
(``per-unit-obs-gradual``: weight 99 on MNIST 97.93 against magnitude + lstsq's 93.07; ``unit-obs+lstsq``:
unit 95 95.22 against unit-norm + lstsq's 86.20; results/benchmarks/post_training.csv, 5 seeds)."""
if {m: get_method(name).granularity for m, name in BEST.items()} != {"weight": "weight", "unit": "unit"}:
    raise ImportError("prunelib.core.best.BEST must name a weight method for 'weight' and a unit method for 'unit'")

CORRECTION = "best"
"""The ``correction`` value of :func:`sweep_best`'s rows in the sweep table."""


def sweep_best(
    kernels: Sequence[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    dataset: str,
    calibration: np.ndarray,
    methods: Iterable[str] = ("weight", "unit"),
    ks: Iterable[float] = (95, 97, 99),
    seed: int = 0,
    biases: Sequence[np.ndarray | None] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Prune with :data:`BEST`'s method for each pruning method at each k and evaluate.

    Args:
        kernels: (inputs, units) kernels in layer order; the last feeds the logits (never pruned).
        x, y: evaluation images and integer labels.
        calibration: training images the methods choose masks and re-fit from.
        methods: ``"weight"`` and/or ``"unit"``.
        ks: percents; ``weight`` counts all hidden weights together (its ``per-unit`` allocation),
            ``unit`` exactly ``round(k/100 * n)`` units per hidden layer.

    Raises:
        ValueError: an unknown method, a bad k, or images, labels, biases or calibration images
            that do not fit the kernels; all before any pruning.

    Returns:
        One row per (method, k) with :data:`prunelib.core.evaluate.SWEEP_COLUMNS`, ``correction``
        :data:`CORRECTION`, measured as :func:`~prunelib.core.evaluate.sweep` measures (``seconds``:
        the method's, calibration included).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> ws = [rng.standard_normal((8, 6)), rng.standard_normal((6, 3))]
        >>> x = rng.random((64, 8))
        >>> t = sweep_best(ws, x, rng.integers(0, 3, 64), dataset="toy", calibration=x, ks=[50], progress=False)
        >>> t[["method", "correction", "k", "prunable_sparsity"]].values.tolist()
        [['weight', 'best', 50.0, 50.0], ['unit', 'best', 50.0, 50.0]]
    """
    kernels = pruning.validate_kernels(kernels)
    methods, ks = check_grid(methods, ks, known=BEST)
    _, _, biases = check_evaluation(kernels, x, y, biases)  # before minutes of pruning, not after a method
    pruning.validate_inputs(calibration, kernels[0].shape[0])
    dense_norm = hidden_norm(kernels)
    grid = [(m, k) for m in methods for k in ks]
    rows = []
    for method, k in tqdm(grid, desc=f"best {dataset} seed {seed}", disable=not progress, leave=False):
        t0 = time.perf_counter()
        pruned, pruned_biases, _ = post_training_prune_with_biases(kernels, biases, k, calibration, method=BEST[method])
        seconds = time.perf_counter() - t0
        identity = {"dataset": dataset, "method": method, "correction": CORRECTION, "k": k, "seed": seed}
        rows.append(sweep_row(pruned, pruned_biases, x, y, dense_norm=dense_norm, seconds=seconds, **identity))
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)
