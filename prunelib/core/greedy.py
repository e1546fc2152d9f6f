"""Exact greedy support selection per output unit: forward orthogonal least squares on a layer's Gram matrix.

OBC (Frantar & Alistarh 2022) removes one weight at a time per row, each the one whose removal
raises the row's reconstruction error least once the others are re-fitted, and reads every sparsity
off that trajectory. Run backward, the trajectory costs O(d^3) per row (a d x d inverse downdated
d times): for LeNet-300-100's first layer about 10^11 floating-point operations, minutes on 2 cores.
At the sparsities post-training pruning is for (90 % and beyond) a row keeps few weights, so this
module runs the exact greedy the other way: starting from nothing, it adds to each row the input
that lowers that row's error ``||X v - y||^2 + lam ||v||^2`` most once the row's chosen inputs are
re-fitted (orthogonal least squares), which costs O(d s^2) for s kept weights. The gain of every
step is recorded, and the layer's kept budget goes to the largest gains over all rows (each row's
gains made non-increasing first, so every row keeps a prefix of its own order), the way OBC spreads
a layer's removals over its rows.
"""

from __future__ import annotations

import numbers

import numpy as np

from prunelib.core.pruning import smallest

SPARE = 3
"""A row may keep up to this many times the layer's mean kept weights per row."""

_CHUNK_ELEMENTS = 2**25
"""Rows are processed in blocks whose basis (rows x inputs x steps, float64) stays under 256 MiB."""


def greedy_supports(gram: np.ndarray, cross: np.ndarray, keep: int, ridge: float, fixed: int = 0) -> np.ndarray:
    """Keep-mask (inputs, units) with ``keep`` True entries chosen by forward greedy least squares.

    Args:
        gram: the layer inputs' Gram matrix ``X^T X`` (d, d).
        cross: ``X^T Y`` (d, units), ``Y`` the pre-activations to reproduce.
        keep: how many weights of the first ``d - fixed`` rows to keep, over all units.
        ridge: ``lam`` added to the Gram matrix's diagonal (must be positive).
        fixed: the last ``fixed`` inputs (a bias) are kept in every unit and not counted in ``keep``.

    Example:
        >>> import numpy as np
        >>> x = np.eye(3)  # orthonormal inputs: the greedy keeps the largest target entries
        >>> greedy_supports(x.T @ x, x.T @ np.array([[1.0], [-3.0], [2.0]]), 2, 1e-3).ravel().tolist()
        [False, True, True]
    """
    d, units = cross.shape
    free = d - fixed
    if isinstance(keep, bool) or not isinstance(keep, numbers.Integral) or not 0 <= keep <= free * units:
        raise ValueError(f"keep must be a whole number in [0, {free * units}], got {keep!r}")
    if isinstance(ridge, bool) or not isinstance(ridge, numbers.Real) or not (np.isfinite(ridge) and ridge > 0):
        raise ValueError(f"ridge must be a positive finite number, got {ridge!r}")
    if keep == free * units:  # every weight kept: nothing to choose
        return np.ones((d, units), dtype=bool)
    h = np.asarray(gram, np.float64) + ridge * np.eye(d)
    steps = min(free, -(-SPARE * keep // units)) if keep else 0
    order = np.zeros((units, steps), dtype=np.int64)
    gains = np.zeros((units, steps))
    block = max(1, _CHUNK_ELEMENTS // max(1, d * (steps + fixed)))
    for start in range(0, units, block):
        cols = slice(start, min(units, start + block))
        order[cols], gains[cols] = _forward(h, np.asarray(cross[:, cols], np.float64).T, steps, fixed, ridge)
    mask = np.zeros((d, units), dtype=bool)
    mask[free:] = True
    if keep:
        # each row's gains made non-increasing, so the largest ones over all rows are prefixes
        flat = np.minimum.accumulate(gains, axis=1).ravel()
        chosen = smallest(-flat, keep).reshape(units, steps)
        rows, step = np.nonzero(chosen)
        mask[order[rows, step], rows] = True
    return mask


def _forward(h: np.ndarray, b: np.ndarray, steps: int, fixed: int, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Forward orthogonal least squares for each row of ``b`` (rows, d) against ``h`` (a Gram matrix
    with ``ridge`` on its diagonal): the inputs added in order and each one's drop in error, after
    the last ``fixed`` inputs (added first)."""
    rows, d = b.shape
    r = np.arange(rows)
    basis = np.zeros((rows, d, steps + fixed))  # h-space images of an orthonormal basis of the chosen columns
    g = b.copy()  # correlation of every input with the current residual
    # squared norm of every input's part orthogonal to the chosen ones: at least ridge in exact
    # arithmetic, so rounding below it (a duplicated input) is floored there instead of a huge gain
    denom = np.tile(np.diag(h), (rows, 1))
    alive = np.ones((rows, d), dtype=bool)
    order, gains = np.zeros((rows, steps), np.int64), np.zeros((rows, steps))
    for t in range(steps + fixed):
        if t < fixed:
            p = np.full(rows, d - fixed + t)
        else:
            score = np.where(alive, np.square(g) / np.maximum(denom, ridge), -np.inf)  # fixed: added, not alive
            p = np.argmax(score, axis=1)
            order[:, t - fixed], gains[:, t - fixed] = p, score[r, p]
        norm = np.sqrt(np.maximum(denom[r, p], ridge))
        q = (h[:, p].T - np.matmul(basis[:, :, :t], basis[r, p, :t][:, :, None])[:, :, 0]) / norm[:, None]
        g -= q * (g[r, p] / norm)[:, None]
        denom -= np.square(q)
        basis[:, :, t] = q
        alive[r, p] = False
    return order, gains
