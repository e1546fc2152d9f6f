"""How many weights each hidden layer keeps when a post-training method spreads one total over them.

Every function here returns per-layer counts of weights to *remove* whose sum is exactly
``round(k/100 * N)`` over the ``N`` hidden weights (the one ``k`` convention, applied to the hidden
layers together), no layer removing more than it has. They differ in which layers keep more:

* :func:`power_counts`: the kept total spread over the layers in proportion to
  ``units * fan_in ** alpha``. ``alpha = 0`` leaves every hidden unit the same number of kept
  weights on average (``per-unit``: a narrow layer late in the network keeps a larger share than a
  wide first layer); ``alpha = 1`` keeps the same fraction of every layer (uniform).
* :func:`owl_counts`: OWL (Yin et al. 2024, outlier-weighed layerwise sparsity): layers with more
  outlier weights (Wanda scores above ``m`` times their layer's mean) keep a larger share.

The ``search`` allocation of :mod:`prunelib.core.post_training` prunes with each of
:data:`SEARCH_ALPHAS` of the power family and keeps the one whose pruned network agrees most often
with the dense network's predictions on the calibration inputs (ties: the smaller squared logit
error), a one-parameter version of SPDY's search over per-layer levels (Frantar & Alistarh 2022),
which also judges candidate allocations by the whole network's calibration output.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from prunelib.core.pruning import count_to_prune

SEARCH_ALPHAS: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5)
"""The exponents the ``search`` allocation tries (0 is ``per-unit``). On LeNet-300-100 the exponent
that tested best moved with the sparsity, from 0 to -1; agreement with the dense predictions on the
calibration inputs picked it more often than the squared logit error did."""


def spread_counts(sizes: Sequence[int], k: float, weights: Sequence[float]) -> list[int]:
    """Per-layer counts to remove so that the kept total ``N - round(k/100 N)`` is spread over the
    layers in proportion to ``weights``, no layer keeping more than its size (those keep all, the
    others share the rest), the fractions rounded by largest remainder.

    Example:
        >>> spread_counts([100, 20], 50, [1.0, 1.0])  # 60 kept: the second keeps its 20, the first 40
        [60, 0]
    """
    sizes_a = np.asarray(sizes, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    if sizes_a.ndim != 1 or not len(sizes_a) or np.any(sizes_a < 1):
        raise ValueError(f"sizes must be one positive whole number per layer, got {list(sizes)!r}")
    if w.shape != sizes_a.shape or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"weights must be one positive finite number per layer, got {list(weights)!r}")
    with np.errstate(over="ignore"):
        huge = not np.isfinite(w.sum() * max(1, int(sizes_a.sum())))
    if huge:
        w = w / w.max()  # only the ratios count; rescaled only here, so usual weights round as given
    total = int(sizes_a.sum())
    kept = total - count_to_prune(total, k)
    share = np.zeros(len(sizes_a))
    free = np.ones(len(sizes_a), dtype=bool)
    while free.any():
        left = kept - share[~free].sum()
        share[free] = left * w[free] / w[free].sum()
        over = free & (share > sizes_a)
        if not over.any():
            break
        share[over] = sizes_a[over]
        free &= ~over
    whole = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - whole), kind="stable")
    whole[order[: kept - int(whole.sum())]] += 1
    counts = [int(n - m) for n, m in zip(sizes_a, whole)]
    assert sum(counts) == total - kept and all(0 <= c <= n for c, n in zip(counts, sizes_a)), counts
    return counts


def power_counts(hidden: Sequence[np.ndarray], k: float, alpha: float = 0.0) -> list[int]:
    """Counts to remove per hidden kernel, the kept total in proportion to ``units * fan_in ** alpha``.

    Example:
        >>> import numpy as np
        >>> ws = [np.ones((100, 30)), np.ones((30, 10))]  # 3,300 weights, 330 kept at k = 90
        >>> power_counts(ws, 90), power_counts(ws, 90, alpha=1.0)
        ([2752, 218], [2700, 270])
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not np.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    try:
        weights = np.array([w.shape[1] * float(w.shape[0]) ** alpha for w in hidden])
    except OverflowError:
        weights = np.zeros(len(hidden))
    if not np.all(np.isfinite(weights) & (weights > 0)):
        # a large |alpha| overflows (or underflows to 0): the same ratios, from logs
        logs = np.array([np.log(w.shape[1]) + alpha * np.log(w.shape[0]) for w in hidden])
        weights = np.exp(logs - logs.max())
    return spread_counts([w.size for w in hidden], k, weights)


def outlier_ratio(kernel: np.ndarray, inputs: np.ndarray, m: float = 5.0) -> float:
    """The share of a layer's weights whose Wanda score ``|w_ij| * ||x_i||`` exceeds ``m`` times the
    layer's mean score (OWL's layer outlier ratio)."""
    x = np.asarray(inputs, np.float64)
    scores = np.abs(np.asarray(kernel, np.float64)) * np.linalg.norm(x, axis=0)[:, None]
    return float(np.mean(scores > m * scores.mean()))


def owl_counts(ratios: Sequence[float], sizes: Sequence[int], k: float, lam: float = 0.25) -> list[int]:
    """OWL's allocation: each layer keeps ``1 + 2 lam (r_l - mean r)`` times the uniform share, with
    ``r`` the layers' outlier ratios scaled to [0, 1]; all equal when the ratios are.

    OWL's ``lam`` (0.08 at 70 % sparsity) is an absolute shift of each layer's sparsity; here it is
    relative to the kept share, so that it means the same at 99 % sparsity as at 70 %.

    Example:
        >>> owl_counts([0.01, 0.03], [1000, 1000], 90)  # the second layer has more outliers
        [925, 875]
    """
    r = np.asarray(ratios, dtype=np.float64)
    if r.shape != (len(sizes),) or not len(r) or not np.all(np.isfinite(r)):
        raise ValueError(f"ratios must be one finite number per layer of sizes {list(sizes)!r}, got {list(ratios)!r}")
    # the smallest factor is 1 - 2 lam (n - 1) / n: positive for every n only up to lam = 0.5
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not 0 <= lam <= 0.5:
        raise ValueError(f"lam must lie in [0, 0.5], got {lam!r}")
    spread = r.max() - r.min()
    scaled = (r - r.min()) / spread if spread > 0 else np.zeros_like(r)
    factor = 1.0 + 2.0 * lam * (scaled - scaled.mean())
    return spread_counts(sizes, k, np.asarray(sizes, np.float64) * factor)
