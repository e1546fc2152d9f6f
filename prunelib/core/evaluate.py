"""Evaluating pruned kernels and sweeping over methods and k into a tidy table."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from prunelib.core import forward, pruning
from prunelib.core.compact import account
from prunelib.core.pruning import DEFAULT_KS

SWEEP_COLUMNS = [
    "dataset",
    "method",
    "correction",
    "k",
    "seed",
    "sparsity",
    "prunable_sparsity",
    "accuracy",
    "loss",
    "effective_params",
    "norm_kept",
    "seconds",
]
CORRECTIONS = ("none", "lstsq")
"""``none``: the challenge's one-shot pruning; ``lstsq``: the same masks, survivors re-fitted in closed
form (:func:`prunelib.core.reconstruct.reconstruct`)."""


def check_evaluation(
    kernels: Sequence[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    biases: Sequence[np.ndarray | None] | None = None,
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray | None]]:
    """The checks of :func:`evaluate_kernels` without its forward pass.

    A sweep calls it before any pruning, so that bad images, labels or biases fail at once rather
    than after the first method's work.

    Returns:
        The kernels, the labels as an array and the biases as a list of one per kernel.

    Raises:
        ValueError: the kernels do not chain (:func:`prunelib.core.pruning.validate_kernel_shapes`),
            there are no images, an image does not flatten to the first kernel's inputs, the
            labels are not one integer in [0, classes) per image, or the biases are not one per
            kernel, each ``None`` or one value per unit (values unchecked, like the kernels').

    Example:
        >>> import numpy as np
        >>> check_evaluation([np.ones((4, 3))], np.ones((2, 2, 2)), [0, 3])
        Traceback (most recent call last):
        ValueError: labels must lie in [0, 3), got 0..3
    """
    kernels = pruning.validate_kernel_shapes(kernels)
    x_shape = np.shape(x)
    if len(x_shape) < 2 or len(x) == 0 or int(np.prod(x_shape[1:], dtype=np.int64)) != kernels[0].shape[0]:
        raise ValueError(
            f"images of shape {x_shape} must be a non-empty batch (n, ...) flattening to the "
            f"first kernel's {kernels[0].shape[0]} inputs"
        )
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"need one integer label per image: {len(x)} images, labels of shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers (class indices), got dtype {y.dtype}")
    classes = np.shape(kernels[-1])[1]
    if y.min() < 0 or y.max() >= classes:
        raise ValueError(f"labels must lie in [0, {classes}), got {y.min()}..{y.max()}")
    biases = forward.per_layer(biases, kernels, "biases")
    for i, (w, b) in enumerate(zip(kernels, biases)):
        # A mis-shaped bias would broadcast (a (1,) bias over every unit): wrong logits, no error.
        if b is not None and np.shape(b) != (w.shape[1],):
            raise ValueError(
                f"bias {i} has shape {np.shape(b)}; kernel {i} has {w.shape[1]} units, so it must have shape ({w.shape[1]},)"
            )
    return kernels, y, biases


def evaluate_kernels(
    kernels: Sequence[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    biases: Sequence[np.ndarray | None] | None = None,
    batch_size: int = forward.CHUNK,
) -> tuple[float, float]:
    """Accuracy (percent) and mean cross-entropy of the MLP with these weights.

    Args:
        kernels: (inputs, units) kernels in layer order; ReLU between them, linear logits.
        x: images (n, ...) flattened to (n, inputs) inside.
        y: integer labels (n,).
        biases: per-layer biases or ``None`` (no bias).
        batch_size: rows per block of the forward pass.

    Raises:
        ValueError: what :func:`check_evaluation` refuses (it checks without evaluating).
    """
    kernels, y, biases = check_evaluation(kernels, x, y, biases)
    ws = [np.asarray(w, np.float32) for w in kernels]
    bs = [None if b is None else np.asarray(b, np.float32) for b in biases]
    z = forward.logits(ws, np.asarray(x, np.float32), bs, chunk=batch_size)
    correct = int(np.sum(np.argmax(z, axis=1) == y))
    # Cross-entropy from logits: log-sum-exp minus the true logit, stable for any scale.
    peak = z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z - peak).sum(axis=1, dtype=np.float64)) + peak[:, 0]
    loss = float(np.sum(log_norm - z[np.arange(len(y)), y]))
    return 100.0 * correct / len(x), loss / len(x)


def check_grid(
    methods: Iterable[str], ks: Iterable[float], known: Collection[str], purpose: str = ""
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """``methods`` and ``ks`` read once and checked, before a sweep does any work.

    Read once because a sweep loops over ks for every method: a generator would serve the first
    method alone and the table would silently lack the others' rows.

    Args:
        purpose: what the methods are for, named in the error (e.g. "recovery").

    Raises:
        ValueError: a method not in ``known`` or a k outside [0, 100], named.

    Example:
        >>> check_grid(iter(["unit"]), (k for k in [50, 90]), known=["weight", "unit"])
        (('unit',), (50.0, 90.0))
    """
    methods = tuple(methods)
    for m in methods:
        if m not in known:
            where = f" for {purpose}" if purpose else ""
            raise ValueError(f"unknown pruning method {m!r}{where}; choose one of {list(known)}")
    return methods, tuple(pruning.validate_k(k) for k in ks)


def hidden_norm(kernels: Sequence[np.ndarray]) -> float:
    """The squared L2 norm of the hidden kernels (every kernel but the last), in float64."""
    return sum(float(np.sum(np.square(w, dtype=np.float64))) for w in kernels[:-1])


def sweep_row(
    pruned: Sequence[np.ndarray],
    pruned_biases: Sequence[np.ndarray | None] | None,
    x: np.ndarray,
    y: np.ndarray,
    *,
    dense_norm: float,
    dataset: str,
    method: str,
    correction: str,
    k: float,
    seed: int,
    seconds: float,
) -> dict:
    """One row of :data:`SWEEP_COLUMNS`: the given identity and seconds, and ``pruned`` measured on
    ``x``, ``y`` (``dense_norm``: :func:`hidden_norm` of the unpruned kernels)."""
    accuracy, loss = evaluate_kernels(pruned, x, y, pruned_biases)
    return {
        "dataset": dataset,
        "method": method,
        "correction": correction,
        "k": k,
        "seed": seed,
        "sparsity": pruning.sparsity(pruned),
        "prunable_sparsity": pruning.sparsity(pruning.split_logits(pruned)[0]),
        "accuracy": accuracy,
        "loss": loss,
        "effective_params": account(pruned, pruned_biases).effective_weights,
        "norm_kept": 100.0 * hidden_norm(pruned) / dense_norm,
        "seconds": seconds,
    }


def sweep(
    kernels: Sequence[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    dataset: str,
    methods: Iterable[str] = ("weight", "unit"),
    ks: Iterable[float] = DEFAULT_KS,
    seed: int = 0,
    biases: Sequence[np.ndarray | None] | None = None,
    corrections: Iterable[str] = ("none",),
    calibration: np.ndarray | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Prune with each method at each k (and correct the survivors, if asked) and evaluate.

    Args:
        kernels: (inputs, units) kernels in layer order; the last feeds the logits.
        x, y: evaluation images and integer labels.
        corrections: any of :data:`CORRECTIONS`; ``lstsq`` needs ``calibration``.
        calibration: training images for the least-squares reconstruction.

    Raises:
        ValueError: an unknown method or correction, a bad k, images, labels or biases that do
            not fit the kernels, or a bias that is not finite; all before any pruning.

    Returns:
        A tidy DataFrame, one row per (method, correction, k), with columns :data:`SWEEP_COLUMNS`:
        ``sparsity`` is the measured percent of zero weights over all kernels (logit layer
        included), ``prunable_sparsity`` over the hidden kernels alone, ``accuracy`` in percent,
        ``effective_params`` the nonzero weights between live units (those that can still change
        the output), ``norm_kept`` the percent of the hidden kernels' squared L2 norm that
        survives pruning, ``seconds`` the time of the correction (0 for ``none``).
    """
    from prunelib.core.reconstruct import reconstruct

    kernels = pruning.validate_kernels(kernels)
    methods, ks = check_grid(methods, ks, known=pruning.METHODS)
    corrections = tuple(corrections)
    for c in corrections:
        if c not in CORRECTIONS:
            raise ValueError(f"unknown correction {c!r}; choose from {list(CORRECTIONS)}")
    if "lstsq" in corrections and calibration is None:
        raise ValueError("the lstsq correction needs calibration images; pass calibration=")
    biases = pruning.validate_biases(kernels, biases)  # values too: a NaN bias would fill the table with NaN
    check_evaluation(kernels, x, y, biases)  # before any pruning, not after the first method
    dense_norm = hidden_norm(kernels)
    grid = [(m, k) for m in methods for k in ks]
    rows = []
    for method, k in tqdm(grid, desc=f"sweep {dataset} seed {seed}", disable=not progress, leave=False):
        masks = pruning.compute_masks(kernels, k, method)
        pruned_biases = pruning.prune_biases(biases, masks, method)
        for correction in corrections:
            t0 = time.perf_counter()
            if correction == "lstsq":
                pruned = reconstruct(kernels, masks, calibration, biases=pruned_biases)
            else:
                pruned = pruning.apply_masks(kernels, masks)
            seconds = time.perf_counter() - t0 if correction != "none" else 0.0
            identity = {"dataset": dataset, "method": method, "correction": correction, "k": k, "seed": seed}
            rows.append(sweep_row(pruned, pruned_biases, x, y, dense_norm=dense_norm, seconds=seconds, **identity))
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)
