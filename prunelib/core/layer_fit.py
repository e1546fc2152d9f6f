"""One layer's least-squares re-fit on a calibration batch, shared by the post-training modules.

The damping's scale (a share of the mean diagonal of the inputs' Gram matrix), the normal equations
kept as a Cholesky factor so that a gradual schedule re-fits without touching the n calibration rows
again, and a bias as the weight of a constant input that is never pruned.
"""

from __future__ import annotations

import numpy as np

from prunelib.core import forward
from prunelib.core.reconstruct import fit_layer


def ridge(gram: np.ndarray, damping: float) -> float:
    """``damping`` times the mean diagonal of ``gram`` (times 1 if that is 0): the ridge of every fit.

    Example:
        >>> import numpy as np
        >>> ridge(np.diag([2.0, 4.0]), 0.01), ridge(np.zeros((2, 2)), 0.01)
        (0.03, 0.01)
    """
    mean_diag = float(np.mean(np.diag(gram))) if gram.size else 0.0
    return damping * (mean_diag if mean_diag > 0 else 1.0)


class Normal:
    """The normal equations of one layer, kept as a (d, d) factor ``r`` with ``r^T r = x^T x``.

    ``fit_layer`` reads its inputs only through ``x^T x`` and ``x^T y``, so passing ``r`` and
    ``z = r^-T x^T y`` in their place gives the same fit without multiplying the n calibration rows
    again at every step of a gradual schedule. A jitter of 1e-10 of the mean diagonal (far below the
    damping) lets always-zero inputs through the Cholesky factorization.
    """

    def __init__(self, x: np.ndarray, gram: np.ndarray) -> None:
        self.x = x
        self.compressed = len(x) > x.shape[1]
        if self.compressed:
            jitter = 1e-10 * max(float(np.mean(np.diag(gram))), 1e-300)
            self.lower = np.linalg.cholesky(gram + jitter * np.eye(len(gram)))

    def fit(self, targets: np.ndarray, w: np.ndarray, mask: np.ndarray, damping: float) -> np.ndarray:
        if self.compressed:
            fitted = fit_layer(self.lower.T, np.linalg.solve(self.lower, self.x.T @ targets), w, mask, damping=damping)
        else:
            fitted = fit_layer(self.x, targets, w, mask, damping=damping)
        # A kept weight must stay a kept (nonzero) weight, or the measured sparsity would drift.
        collapsed = mask & (fitted == 0)
        fitted[collapsed] = w[collapsed]
        return fitted


def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, mask: np.ndarray, damping: float) -> np.ndarray:
    """The kept weights of ``w`` re-fitted so that ``x @ w`` comes closest to ``y`` (ridge toward ``w``)."""
    return Normal(x, x.T @ x).fit(y, w, mask, damping)


def with_bias_input(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(x, w)`` with a column of ones appended to ``x`` and ``b`` as ``w``'s last row (unchanged without a bias).

    Example:
        >>> import numpy as np
        >>> x, w = with_bias_input(np.array([[2.0]]), np.array([[3.0]]), np.array([1.0]))
        >>> (x @ w).item()  # 2 * 3 + 1
        7.0
    """
    if b is None:
        return x, w
    return np.hstack([x, np.ones((len(x), 1))]), np.vstack([w, b[None]])


def float64(b):
    """``b`` as float64 (None stays None)."""
    return None if b is None else np.asarray(b, np.float64)


def dense_activations(kernels: list[np.ndarray], biases: list, x: np.ndarray) -> list[np.ndarray]:
    """Every layer's output of the network in float64: the hidden activations (after ReLU), then the
    logits; ``biases`` has one entry (or None) per kernel."""
    return list(forward.activations([np.asarray(w, np.float64) for w in kernels], x, [float64(b) for b in biases]))
