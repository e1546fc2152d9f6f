"""Post-training pruning: choose the mask and re-fit the survivors from calibration data, no gradient step.

A separate axis from the challenge (whose curves keep magnitude masks, uniform per layer). Each
method of :data:`POST_TRAINING_METHODS` is a frozen :class:`PostTrainingMethod` composed from

* *selection*, which weights (or units) to remove: ``magnitude`` (|w|), ``wanda`` (|w_ij| * ||x_i||,
  Sun et al. 2023), ``obs`` (w_ij^2 / [H^-1]_ii with H = X^T X + lam I, the optimal-brain-surgeon
  saliency: the error removing the weight alone causes once the others compensate); for units
  ``norm`` (column L2 norm), ``activation`` (||h_j|| * ||W_next[j, kept]||, the unit's share of the
  next layer's input) or ``obs`` (greedy OBS over the next layer's input rows, which re-computes the
  saliencies after every removal; in the last hidden layer, whose next kernel is frozen, the units
  whose non-negative activations best reproduce the dense predictions). Units are chosen on the
  dense network from the last hidden layer backward, each layer judged by the units the next keeps;
* *update*: ``none`` (the mask applied) or ``lstsq``
  (:func:`prunelib.core.reconstruct.fit_layer` toward the dense network's pre-activations);
* *schedule*: ``one-shot`` or ``gradual`` within each layer (prune to 50 %, re-fit, re-select on the
  re-fitted weights at 75 %, 87.5 %, ... until the target): a weight the fit can compensate for
  early is ranked on what it is worth after the compensation;
* *allocation*: ``uniform`` (``round(k/100 * n)`` per hidden layer, the challenge's convention) or
  ``global`` (one ranking of the saliencies normalized by their layer's mean, pooled over the hidden
  layers; the exact total ``round(k/100 * N)``) or ``per-unit`` (the same exact total, spread so that
  every hidden unit keeps the same number of weights on average: a narrow layer late in the network
  keeps a larger share than a wide first layer) or ``owl`` (layers with more outlier weights keep
  more, Yin et al. 2024) or ``search`` (a few allocations between ``per-unit`` and uniform tried, the
  one whose calibration logits come closest to the dense ones kept; see
  :mod:`prunelib.core.allocation`);
* *targets*: ``layer`` (each layer's own dense pre-activations, below) or ``network`` (then
  ``rounds`` of SparseLLM's alternation pull every hidden layer toward what the layers after it need
  to reproduce the dense logits, masks fixed; kept only if the calibration logits come closer).

Layers are fitted sequentially, as in OBC / SparseGPT: layer i's fit (and its weight selection) sees
the inputs the already-pruned network computes, and its targets are the dense network's pre-activations. Under
unit pruning the last hidden layer is fitted to non-negative activations of its kept units that
reproduce the dense logits through the fixed logit kernel as closely as they can, up to a shift per
row (which softmax ignores). The logit kernel comes back bit-identical; nothing is mutated.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prunelib.core import allocation, forward
from prunelib.core.greedy import greedy_supports
from prunelib.core.pruning import (
    count_to_prune,
    smallest,
    split_logits,
    validate_biases,
    validate_k,
    validate_kernels,
)
from prunelib.core.reconstruct import check_calibration, fit_layer

SELECTIONS = {"weight": ("magnitude", "wanda", "obs", "greedy"), "unit": ("norm", "activation", "obs")}
UPDATES = ("none", "lstsq")
SCHEDULES = ("one-shot", "gradual")
ALLOCATIONS = ("uniform", "global", "per-unit", "owl", "search")
TARGETS = ("layer", "network")


@dataclass(frozen=True)
class PostTrainingMethod:
    """One post-training pruning method: how it selects, updates, schedules and allocates.

    Raises:
        ValueError: an unknown component, or a combination that means nothing (a gradual schedule
            without a re-fit is the one-shot selection; unit pruning is one-shot and uniform).
    """

    granularity: str = "weight"
    selection: str = "magnitude"
    update: str = "lstsq"
    schedule: str = "one-shot"
    allocation: str = "uniform"
    keep: float = 0.5  # share of the kept weights each gradual step keeps
    targets: str = "layer"
    rounds: int = 4  # of the network-target alternation

    def __post_init__(self) -> None:
        if self.granularity not in SELECTIONS:
            raise ValueError(f"granularity must be one of {sorted(SELECTIONS)}, got {self.granularity!r}")
        for name, allowed in (
            ("selection", SELECTIONS[self.granularity]),
            ("update", UPDATES),
            ("schedule", SCHEDULES),
            ("allocation", ALLOCATIONS),
            ("targets", TARGETS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.selection == "greedy" and (self.update, self.schedule) != ("lstsq", "one-shot"):
            raise ValueError("greedy selection builds each row's support from nothing: one-shot, update='lstsq'")
        if self.schedule == "gradual" and self.update != "lstsq":
            raise ValueError("a gradual schedule re-selects on re-fitted weights, so it needs update='lstsq'")
        if self.granularity == "unit" and (self.schedule, self.allocation, self.targets) != (
            "one-shot",
            "uniform",
            "layer",
        ):
            raise ValueError("unit pruning is one-shot with a uniform allocation and layer targets")
        if self.targets == "network" and self.update != "lstsq":
            raise ValueError("network targets re-fit the kept weights, so they need update='lstsq'")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, numbers.Integral) or self.rounds < 1:
            raise ValueError(f"rounds must be a positive integer, got {self.rounds!r}")


POST_TRAINING_METHODS: dict[str, PostTrainingMethod] = {
    "magnitude": PostTrainingMethod(selection="magnitude", update="none"),
    "magnitude+lstsq": PostTrainingMethod(selection="magnitude"),
    "wanda": PostTrainingMethod(selection="wanda", update="none"),
    "wanda+lstsq": PostTrainingMethod(selection="wanda"),
    "obs+lstsq": PostTrainingMethod(selection="obs"),
    "magnitude-gradual": PostTrainingMethod(selection="magnitude", schedule="gradual"),
    "obs-gradual": PostTrainingMethod(selection="obs", schedule="gradual"),
    "global-obs+lstsq": PostTrainingMethod(selection="obs", allocation="global"),
    "global-obs-gradual": PostTrainingMethod(selection="obs", schedule="gradual", allocation="global"),
    "per-unit-obs+lstsq": PostTrainingMethod(selection="obs", allocation="per-unit"),
    "per-unit-obs-gradual": PostTrainingMethod(selection="obs", schedule="gradual", allocation="per-unit"),
    "owl-obs-gradual": PostTrainingMethod(selection="obs", schedule="gradual", allocation="owl"),
    "search-obs-gradual": PostTrainingMethod(selection="obs", schedule="gradual", allocation="search"),
    "per-unit-greedy+lstsq": PostTrainingMethod(selection="greedy", allocation="per-unit"),
    "per-unit-obs-gradual+network": PostTrainingMethod(
        selection="obs", schedule="gradual", allocation="per-unit", targets="network"
    ),
    "unit-norm+lstsq": PostTrainingMethod("unit", "norm"),
    "unit-activation+lstsq": PostTrainingMethod("unit", "activation"),
    "unit-obs+lstsq": PostTrainingMethod("unit", "obs"),
}
"""The registered post-training methods by name (``unit-*`` prune whole units)."""


def get_method(method: str | PostTrainingMethod) -> PostTrainingMethod:
    """The method named ``method`` (or ``method`` itself if it is one).

    Raises:
        ValueError: an unknown name; the message lists the registered ones.
    """
    if isinstance(method, PostTrainingMethod):
        return method
    try:
        return POST_TRAINING_METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown post-training method {method!r}; choose one of {list(POST_TRAINING_METHODS)}"
        ) from None


def gradual_levels(k: float, keep: float = 0.5) -> list[float]:
    """The sparsities a gradual schedule passes through: each step keeps ``keep`` of the weights the
    previous one kept (50, 75, 87.5, ... for 0.5) while below ``k``, then ``k``.

    Example:
        >>> gradual_levels(90)
        [50.0, 75.0, 87.5, 90.0]
    """
    k = validate_k(k)
    if not 0 < keep < 1:
        raise ValueError(f"keep must lie in (0, 1), got {keep!r}")
    levels, t = [], 1
    while (level := 100.0 * (1.0 - keep**t)) < k:
        levels.append(level)
        t += 1
    return [*levels, k] if k > 0 else [0.0]


def _ridge(gram: np.ndarray, damping: float) -> float:
    mean_diag = float(np.mean(np.diag(gram))) if gram.size else 0.0
    return damping * (mean_diag if mean_diag > 0 else 1.0)


def _inverse_diagonal(gram: np.ndarray, damping: float) -> np.ndarray:
    """diag((G + lam I)^-1) in float64: the damping keeps always-zero inputs (border pixels) invertible."""
    g = np.asarray(gram, np.float64)
    return np.diag(np.linalg.inv(g + _ridge(g, damping) * np.eye(len(g))))


def obs_scores(kernel: np.ndarray, inputs: np.ndarray, damping: float = 0.01) -> np.ndarray:
    """Optimal-brain-surgeon saliency of every weight: ``w_ij^2 / [H^-1]_ii``, ``H = X^T X + lam I``.

    It is the increase of ``||X (v - w)||^2 + lam ||v - w||^2`` when weight ``(i, j)`` alone is
    removed and the rest of column ``j`` re-fitted (``lam`` = ``damping`` times the mean diagonal of
    ``X^T X``).

    Example:
        >>> import numpy as np
        >>> x = np.eye(2)  # H = I + 0.01 I: the score is w^2 * 1.01
        >>> obs_scores(np.array([[1.0], [2.0]]), x).round(2).ravel().tolist()
        [1.01, 4.04]
    """
    x = np.asarray(inputs, np.float64)
    return np.square(np.asarray(kernel, np.float64)) / _inverse_diagonal(x.T @ x, damping)[:, None]


def wanda_scores(kernel: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Wanda's score of every weight: ``|w_ij| * ||x_i||_2`` over the calibration inputs ``x``.

    Example:
        >>> import numpy as np
        >>> wanda_scores(np.array([[1.0], [-1.0]]), np.array([[3.0, 0.0], [4.0, 1.0]])).ravel().tolist()
        [5.0, 1.0]
    """
    norms = np.linalg.norm(np.asarray(inputs, np.float64), axis=0)
    return np.abs(np.asarray(kernel, np.float64)) * norms[:, None]


def _weight_scores(selection: str, w: np.ndarray, x: np.ndarray, gram: np.ndarray, damping: float) -> np.ndarray:
    if selection == "magnitude":
        return np.abs(w)
    if selection == "wanda":
        return np.abs(w) * np.sqrt(np.maximum(np.diag(gram), 0.0))[:, None]
    return np.square(w) / _inverse_diagonal(gram, damping)[:, None]


class _Normal:
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


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, mask: np.ndarray, damping: float) -> np.ndarray:
    return _Normal(x, x.T @ x).fit(y, w, mask, damping)


def _prune_weights_of_layer(
    method: PostTrainingMethod,
    w: np.ndarray,
    x: np.ndarray,
    target: np.ndarray,
    count: int,
    damping: float,
    fixed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(new kernel in float64, keep-mask) of one layer with ``count`` weights removed.

    The last ``fixed`` rows of ``w`` (a bias, as the weight of a constant input) are never pruned,
    and selection ranks the other rows only.
    """
    gram = x.T @ x
    w64 = w.astype(np.float64)
    size = w64[: len(w64) - fixed].size

    def select(current: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
        scores = _weight_scores(method.selection, current, x, gram, damping)
        scores[~mask] = -np.inf  # never un-prune: a gradual step only adds to the pruned set
        chosen = ~smallest(scores[: len(w64) - fixed].ravel(), n)
        return np.vstack([chosen.reshape(-1, w64.shape[1]), np.ones((fixed, w64.shape[1]), bool)])

    mask = np.ones(w64.shape, dtype=bool)
    if method.update == "none":
        mask = select(w64, mask, count)
        return np.where(mask, w64, 0.0), mask
    normal = _Normal(x, gram)
    if method.selection == "greedy":
        mask = greedy_supports(gram, x.T @ target, size - count, _ridge(gram, damping), fixed)
        return normal.fit(target, w64, mask, damping), mask
    levels = [100.0 * count / size]
    if method.schedule == "gradual":
        levels = gradual_levels(levels[0], method.keep)
    current = w64
    for level in levels:
        n = count if level == levels[-1] else min(count, round(level / 100 * size))
        mask = select(current, mask, n)
        current = normal.fit(target, w64, mask, damping)
    return current, mask


def _global_counts(
    method: PostTrainingMethod, hidden: list[np.ndarray], x: np.ndarray, biases: list, k: float, damping: float
) -> list[int]:
    """Per-layer counts of a global ranking on the dense network; the total is exactly ``round(k/100 N)``."""
    pooled, h = [], x
    for w, b in zip(hidden, biases):
        w64 = w.astype(np.float64)
        scores = _weight_scores(method.selection, w64, h, h.T @ h, damping)
        # Normalized by the layer's mean so that layers of different scales compete on relative terms.
        mean = float(scores.mean())
        pooled.append((scores / (mean if mean > 0 else 1.0)).ravel())
        h = forward.layer(h, w64, _float64(b), relu=True)
    flat = np.concatenate(pooled)
    chosen = smallest(flat, count_to_prune(flat.size, k))
    return [int(p.sum()) for p in np.split(chosen, np.cumsum([w.size for w in hidden])[:-1])]


def _unit_keeps(
    selection: str, hidden: list, biases: list, logits: np.ndarray, x: np.ndarray, counts: list[int], damping: float
) -> list[np.ndarray]:
    """Boolean keep-vector of every hidden layer's units, chosen on the dense network from the last
    hidden layer backward, so that each layer is judged by the units the next one keeps.

    ``norm`` ranks column norms; ``activation`` ranks ``||h_j|| * ||W_next[j, kept]||``; ``obs``
    removes units by greedy OBS over the next layer's kept columns (:func:`_greedy_obs_rows`), and in
    the last hidden layer, whose next kernel (the logits) is never re-fitted, picks units by how well
    non-negative activations of them reproduce the dense predictions (:func:`_greedy_logit_units`).
    """
    acts, h = [], x
    for w, b in zip(hidden, biases):
        h = forward.layer(h, w.astype(np.float64), _float64(b), relu=True)
        acts.append(h)
    nexts = [w.astype(np.float64) for w in hidden[1:]] + [np.asarray(logits, np.float64)]
    keeps: list[np.ndarray] = [np.ones(0, bool)] * len(hidden)
    kept_next = np.ones(logits.shape[1], dtype=bool)
    for i in reversed(range(len(hidden))):
        w, h, nxt, count = hidden[i], acts[i], nexts[i][:, kept_next], counts[i]
        keep = np.ones(w.shape[1], dtype=bool)
        if count and selection == "obs" and i == len(hidden) - 1:
            keep = _greedy_logit_units(h, nxt, _float64(biases[-1]), w.shape[1] - count)
        elif count and selection == "obs":
            keep[_greedy_obs_rows(h, nxt, damping, count)] = False
        elif count:
            scores = np.linalg.norm(w, axis=0)
            if selection == "activation":
                scores = np.linalg.norm(h, axis=0) * np.linalg.norm(nxt, axis=1)
            keep = ~smallest(scores, count)
        keeps[i] = kept_next = keep
    return keeps


def _greedy_obs_rows(h: np.ndarray, nxt: np.ndarray, damping: float, count: int) -> np.ndarray:
    """The first ``count`` rows greedy group OBS removes from the next layer's inputs, in order.

    Removing row ``j`` of ``V`` (= unit ``j``) while the other rows compensate costs
    ``||V_j||^2 / [H^-1]_jj`` (``H = h^T h + lam I``); after each removal the inverse and the rows are
    updated (Frantar & Alistarh 2022's row-wise OBS, applied to the shared input Hessian).
    """
    gram = h.T @ h
    inv = np.linalg.inv(gram + _ridge(gram, damping) * np.eye(len(gram)))
    v = np.array(nxt, dtype=np.float64)
    alive = np.ones(len(v), dtype=bool)
    order = []
    for _ in range(count):
        cost = np.where(alive, np.sum(v * v, axis=1) / np.where(alive, np.diag(inv), 1.0), np.inf)
        j = int(np.argmin(cost))
        order.append(j)
        col = inv[:, j] / inv[j, j]
        v -= np.outer(col, v[j])
        inv -= np.outer(col, inv[j])
        alive[j] = False
        v[j] = 0.0
        inv[j, :] = inv[:, j] = 0.0
    return np.asarray(order)


def post_training_prune(
    kernels: Sequence[np.ndarray],
    k: float,
    calibration: np.ndarray,
    *,
    method: str | PostTrainingMethod = "obs-gradual",
    damping: float = 0.01,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Prune a bias-free MLP at ``k`` percent with a post-training method.

    Args:
        kernels: kernels in layer order, each (inputs, units); the last feeds the logits.
        k: percent of each hidden layer's weights (or units, for ``unit-*`` methods) to remove; of
            all hidden weights together under a ``global`` allocation.
        calibration: calibration inputs (n, ...) flattening to the first kernel's inputs; n must be
            at least the largest fan-in of a hidden layer.
        method: a name of :data:`POST_TRAINING_METHODS` or a :class:`PostTrainingMethod`.
        damping: ridge strength relative to the mean diagonal of each layer's input Gram matrix.

    Returns:
        ``(kernels, masks)``: new kernels, zero exactly where the boolean masks are False, the logit
        kernel bit-identical and its mask all True. At ``k = 0`` the kernels are the dense ones.

    Raises:
        ValueError: a bad ``k``, ``damping`` or method name, invalid kernels, or calibration inputs
            that do not fit or are too few.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> ws = [rng.standard_normal((8, 6)), rng.standard_normal((6, 3))]
        >>> new, masks = post_training_prune(ws, 50, rng.random((32, 8)), method="obs-gradual")
        >>> int((~masks[0]).sum()), bool(np.array_equal(new[1], ws[1]))
        (24, True)
    """
    new, _, masks = _prune(kernels, None, k, calibration, method, damping)
    return new, masks


def post_training_prune_with_biases(
    kernels: Sequence[np.ndarray],
    biases: Sequence[np.ndarray | None],
    k: float,
    calibration: np.ndarray,
    *,
    method: str | PostTrainingMethod = "obs-gradual",
    damping: float = 0.01,
) -> tuple[list[np.ndarray], list[np.ndarray | None], list[np.ndarray]]:
    """Like :func:`post_training_prune`, with each hidden unit's bias fitted with its weights.

    The bias is the weight of an extra, never-pruned input of constant 1 (as in
    :func:`prunelib.core.reconstruct.reconstruct_with_biases`); a removed unit's bias becomes 0, so it
    outputs exactly 0. The logit layer's bias is returned as given.

    Returns:
        ``(kernels, biases, masks)``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> ws, bs = [rng.standard_normal((8, 6)), rng.standard_normal((6, 3))], [np.ones(6), np.zeros(3)]
        >>> new, new_b, masks = post_training_prune_with_biases(ws, bs, 50, rng.random((32, 8)),
        ...                                                     method="unit-activation+lstsq")
        >>> int((new_b[0] == 0).sum()), new_b[1].tolist()
        (3, [0.0, 0.0, 0.0])
    """
    if biases is None:
        raise ValueError("biases must be a list with one bias (or None) per kernel; use post_training_prune()")
    return _prune(kernels, biases, k, calibration, method, damping)


def _prune(kernels, biases, k, calibration, method, damping):
    k = validate_k(k)
    spec = get_method(method)
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not (np.isfinite(damping) and damping > 0):
        raise ValueError(f"damping must be a positive number, got {damping!r}")
    kernels = validate_kernels(kernels)
    biases = validate_biases(kernels, biases)
    hidden, logits = split_logits(kernels)
    fan_ins = [w.shape[0] + (b is not None) for w, b in zip(hidden, biases)]
    x = check_calibration(calibration, kernels, fan_ins, biases_counted=any(b is not None for b in biases[:-1])).astype(
        np.float64
    )
    keeps = None
    if spec.granularity == "weight":
        candidates = _candidate_counts(spec, hidden, x, biases, k, damping)
    else:
        candidates = [[count_to_prune(w.shape[1], k) for w in hidden]]
        keeps = _unit_keeps(spec.selection, hidden, biases, logits, x, candidates[0], damping)
    if len(candidates) > 1 or spec.targets == "network":
        dense_logits = _dense_logits(hidden, biases, logits, x)
    out, out_b, masks, changed = _prune_layers(spec, hidden, biases, x, candidates[0], keeps, logits, damping)
    if len(candidates) > 1:
        best = _disagreement(out, out_b, logits, biases[-1], x, dense_logits)
        for counts in candidates[1:]:
            trial = _prune_layers(spec, hidden, biases, x, counts, keeps, logits, damping)
            error = _disagreement(*trial[:2], logits, biases[-1], x, dense_logits)
            if error < best:
                best, (out, out_b, masks, changed) = error, trial
    if spec.targets == "network" and changed:
        refined = _network_rounds(out, out_b, masks, logits, biases[-1], x, dense_logits, spec.rounds, damping)
        # kept only where the network's own output on the calibration set comes closer (it may not)
        if _logit_error(*refined, logits, biases[-1], x, dense_logits) < _logit_error(
            out, out_b, logits, biases[-1], x, dense_logits
        ):
            out, out_b = refined
    out.append(np.array(logits, copy=True))
    out_b.append(None if biases[-1] is None else np.array(biases[-1], copy=True))
    masks.append(np.ones(logits.shape, dtype=bool))
    return out, out_b, masks


def _candidate_counts(spec, hidden, x, biases, k, damping) -> list[list[int]]:
    """The per-layer counts to remove that ``spec``'s allocation tries (one list unless it searches)."""
    if spec.allocation == "global":
        return [_global_counts(spec, hidden, x, biases, k, damping)]
    if spec.allocation == "per-unit":
        return [allocation.power_counts(hidden, k, 0.0)]
    if spec.allocation == "owl":
        ratios, h = [], x
        for w, b in zip(hidden, biases):
            ratios.append(allocation.outlier_ratio(w, h))
            h = forward.layer(h, w.astype(np.float64), _float64(b), relu=True)
        return [allocation.owl_counts(ratios, [w.size for w in hidden], k)]
    if spec.allocation == "search":
        tried = [allocation.power_counts(hidden, k, a) for a in allocation.SEARCH_ALPHAS]
        return [c for i, c in enumerate(tried) if c not in tried[:i]]
    return [[count_to_prune(w.size, k) for w in hidden]]


def _dense_logits(hidden, biases, logits, x) -> np.ndarray:
    h = x
    for w, b in zip(hidden, biases):
        h = forward.layer(h, w.astype(np.float64), _float64(b), relu=True)
    return forward.layer(h, logits.astype(np.float64), _float64(biases[-1]), relu=False)


def _prune_layers(spec, hidden, biases, x, counts, keeps, logits, damping):
    """The hidden layers pruned in order, each fitted on the inputs the already-pruned layers compute:
    ``(kernels, biases, masks, changed)``."""
    out, out_b, masks = [], [], []
    h_dense = h_pruned = x
    changed = False
    for i, (w, given, count) in enumerate(zip(hidden, biases, counts)):
        w64 = w.astype(np.float64)
        b = _float64(given)
        pre_dense = forward.layer(h_dense, w64, b, relu=False)
        dtype = w.dtype if np.issubdtype(w.dtype, np.floating) else np.float32
        if count == 0 and not changed:
            # nothing removed and the inputs unchanged: the layer is the dense one, bit for bit
            new, mask, new_b = np.array(w, dtype=dtype), np.ones(w.shape, dtype=bool), None if b is None else b.copy()
        elif spec.granularity == "weight":
            new, mask, new_b = _weight_layer(spec, w64, b, h_pruned, pre_dense, count, damping)
        else:
            nxt = (hidden + [logits])[i + 1].astype(np.float64)
            last = i == len(hidden) - 1
            new, mask, new_b = _unit_layer(spec, w64, b, h_pruned, pre_dense, keeps[i], damping, nxt, last)
        out.append(np.asarray(new, dtype=dtype))
        out_b.append(None if given is None else np.asarray(new_b, dtype=np.asarray(given).dtype))
        masks.append(mask)
        changed = changed or count > 0
        h_dense = forward.relu(pre_dense)
        h_pruned = h_dense if not changed else forward.layer(h_pruned, out[-1].astype(np.float64), new_b, relu=True)
    return out, out_b, masks, changed


def _float64(b):
    return None if b is None else np.asarray(b, np.float64)


def _network_rounds(hidden, biases, masks, logits, logit_bias, x, dense_logits, rounds, damping, history=None):
    """Hidden kernels (and biases) re-fitted toward the network's output, masks fixed: SparseLLM's
    alternation (Bai et al. 2024) with the dense logits as the last target.

    Each hidden layer ``l`` gets auxiliary pre-activations ``z_l`` and activations ``a_l``, and a
    round minimizes ``sum_l ||a_(l-1) W_l + b_l - z_l||^2 + ||a_l - relu(z_l)||^2`` (with ``a_L``'s
    term the frozen logit layer's distance to the dense logits) in turn over every ``a_l`` (a ridge
    solve through the next layer), every ``z_l`` (elementwise, the better of its ReLU's two branches)
    and every ``W_l`` (least squares on the kept weights, its ridge a proximal term toward the
    current ``W_l``, so no round increases the objective; ``history`` collects it after each round).
    The variables start at the sequentially pruned network's values, so a layer is pulled toward what
    the layers after it need instead of toward its own dense output.
    """
    ws, bs = [w.astype(np.float64) for w in hidden], [_float64(b) for b in biases]
    z, a, h = [], [], x
    for w, b in zip(ws, bs):
        z.append(forward.layer(h, w, b, relu=False))
        h = forward.relu(z[-1])
        a.append(h)
    top, top_b = logits.astype(np.float64), _float64(logit_bias)
    for _ in range(rounds):
        # each a_l through the next layer as it is now (re-fitted in the previous round)
        for i, (v, c) in enumerate(zip([*ws[1:], top], [*bs[1:], top_b])):
            wanted = dense_logits if i == len(ws) - 1 else z[i + 1]
            if c is not None:
                wanted = wanted - c
            a[i] = np.linalg.solve(v @ v.T + np.eye(len(v)), (wanted @ v.T + forward.relu(z[i])).T).T
        inputs = [x, *a[:-1]]
        for i, (w, b) in enumerate(zip(ws, bs)):
            p = forward.layer(inputs[i], w, b, relu=False)
            positive = np.maximum((p + a[i]) / 2.0, 0.0)
            negative = np.minimum(p, 0.0)
            cost_positive = np.square(positive - p) + np.square(a[i] - positive)
            cost_negative = np.square(negative - p) + np.square(a[i])
            z[i] = np.where(cost_positive <= cost_negative, positive, negative)
        for i, (w, b) in enumerate(zip(ws, bs)):
            xb, wb = _with_bias_input(inputs[i], w, b)
            mb = masks[i] if b is None else np.vstack([masks[i], np.ones((1, w.shape[1]), bool)])
            fitted = _fit(xb, z[i], wb, mb, damping)
            ws[i], bs[i] = (fitted, None) if b is None else (fitted[:-1], fitted[-1])
        if history is not None:
            history.append(_network_objective(ws, bs, top, top_b, x, a, z, dense_logits))
    return (
        [w.astype(old.dtype) for w, old in zip(ws, hidden)],
        [None if b is None else b.astype(old.dtype) for b, old in zip(bs, biases)],
    )


def _network_objective(ws, bs, top, top_b, x, a, z, dense_logits) -> float:
    inputs = [x, *a[:-1]]
    total = sum(
        float(np.sum(np.square(forward.layer(i, w, b, relu=False) - zz))) for i, w, b, zz in zip(inputs, ws, bs, z)
    )
    total += sum(float(np.sum(np.square(aa - forward.relu(zz)))) for aa, zz in zip(a, z))
    return total + float(np.sum(np.square(forward.layer(a[-1], top, top_b, relu=False) - dense_logits)))


def _pruned_logits(hidden, biases, logits, logit_bias, x) -> np.ndarray:
    kernels = [w.astype(np.float64) for w in [*hidden, logits]]
    return forward.logits(kernels, x, [_float64(b) for b in [*biases, logit_bias]])


def _logit_error(hidden, biases, logits, logit_bias, x, dense_logits) -> float:
    return float(np.mean(np.square(_pruned_logits(hidden, biases, logits, logit_bias, x) - dense_logits)))


def _disagreement(hidden, biases, logits, logit_bias, x, dense_logits) -> tuple[float, float]:
    """(share of calibration rows whose prediction differs from the dense network's, mean squared
    logit error): how a ``search`` allocation ranks its candidates (the second breaks ties)."""
    out = _pruned_logits(hidden, biases, logits, logit_bias, x)
    return float(np.mean(out.argmax(1) != dense_logits.argmax(1))), float(np.mean(np.square(out - dense_logits)))


def _with_bias_input(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if b is None:
        return x, w
    return np.hstack([x, np.ones((len(x), 1))]), np.vstack([w, b[None]])


def _weight_layer(spec, w, b, x, target, count, damping):
    xb, wb = _with_bias_input(x, w, b)
    new, mask = _prune_weights_of_layer(spec, wb, xb, target, count, damping, fixed=int(b is not None))
    if b is None:
        return new, mask, None
    return new[:-1], mask[:-1], new[-1]


def _nonnegative_rows(z: np.ndarray, v: np.ndarray, iters: int) -> np.ndarray:
    """Rows ``a >= 0`` minimizing ``||a v - z||^2``, one small non-negative least-squares problem per
    row, all solved together by FISTA (accelerated projected gradient) from the clipped unconstrained
    solution (a start near the answer matters: the answers can be far larger than the activations).

    ``v`` may carry leading batch dimensions, ``(..., m, c)`` with ``z`` ``(n, c)``: each batch entry
    is a separate problem, and the result is ``(..., n, m)``.
    """
    vt = np.swapaxes(v, -1, -2)
    gram, rhs = v @ vt, z @ vt
    # 1 / the largest eigenvalue of the Gram matrix is a step that never overshoots
    step = 1.0 / np.maximum(np.linalg.eigvalsh(gram)[..., -1], 1e-12)[..., None, None]
    a = y = np.maximum(z @ np.linalg.pinv(v), 0.0)
    t = 1.0
    for _ in range(iters):
        new = np.maximum(y - (y @ gram - rhs) * step, 0.0)
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        y = new + ((t - 1.0) / t_next) * (new - a)
        a, t = new, t_next
    return a


def _centred(v: np.ndarray) -> np.ndarray:
    # softmax and argmax ignore a shift of all the logits of a row, so only their centred part counts
    return v - v.mean(axis=-1, keepdims=True)


def _logit_targets(h_dense: np.ndarray, keep: np.ndarray, logit_kernel: np.ndarray, iters: int = 300) -> np.ndarray:
    """Last-hidden activations that reproduce the dense logits through the fixed logit kernel as
    closely as non-negative (post-ReLU) activations of the kept units can, up to a shift per row.

    The minimum-norm change of :func:`prunelib.core.reconstruct.logit_matching_targets` ignores the
    ReLU: with few kept units it asks for negative activations, and clipping them loses the logits.
    """
    v = _centred(logit_kernel)
    out = np.zeros_like(h_dense)
    out[:, keep] = _nonnegative_rows(h_dense @ v, v[keep], iters)
    return out


def _greedy_logit_units(
    h_dense: np.ndarray, logit_kernel: np.ndarray, logit_bias: np.ndarray | None, keep_count: int, rows: int = 1024
) -> np.ndarray:
    """Boolean keep-vector of the last hidden layer: its first ``min(keep_count, classes)`` units
    chosen one at a time, each the unit whose addition lets non-negative activations of the chosen
    units reproduce the most dense predictions (argmax of the logits; the squared error breaks ties)
    on the first ``rows`` calibration rows; the rest by the activation score.

    With the logit kernel frozen, the kept rows of it must span every class with non-negative
    weights; a score of each unit alone (norm, activation) cannot see that, and at ``keep_count``
    near the number of classes it decides whether the network still classifies.
    """
    h, v = h_dense[:rows], _centred(logit_kernel)
    z = h @ v
    bias = 0.0 if logit_bias is None else logit_bias  # it cancels in the fit, not in the argmax
    wanted = np.argmax(z + bias, axis=1)
    chosen: list[int] = []
    for _ in range(min(keep_count, v.shape[1])):
        cand = np.setdiff1d(np.arange(len(v)), chosen)
        vs = np.concatenate(
            [np.broadcast_to(v[chosen], (len(cand), len(chosen), v.shape[1])), v[cand][:, None]], axis=1
        )
        fits = _nonnegative_rows(z, vs, iters=30)
        out = fits @ vs
        agree = np.sum(np.argmax(out + bias, axis=2) == wanted, axis=1)
        error = np.sum(np.square(out - z), axis=(1, 2))
        best = int(np.lexsort((error, -agree))[0])
        chosen.append(int(cand[best]))
    keep = np.zeros(len(v), dtype=bool)
    keep[chosen] = True
    rest = keep_count - len(chosen)
    if rest > 0:
        score = np.where(keep, -np.inf, np.linalg.norm(h_dense, axis=0) * np.linalg.norm(logit_kernel, axis=1))
        keep[np.argsort(-score, kind="stable")[:rest]] = True
    return keep


def _unit_layer(spec, w, b, x, pre_dense, keep, damping, nxt, last):
    h_dense = forward.relu(pre_dense)
    mask = np.broadcast_to(keep, w.shape).copy()
    target = pre_dense
    if last and keep.any() and not keep.all():
        wanted = _logit_targets(h_dense, keep, nxt)
        # where the wanted activation is zero, any pre-activation at or below zero will do
        target = np.where(wanted > 0, wanted, np.minimum(pre_dense, 0.0))
    if spec.update == "none":
        new = np.where(mask, w, 0.0)
        return new, mask, None if b is None else np.where(keep, b, 0.0)
    xb, wb = _with_bias_input(x, w, b)
    mb = mask if b is None else np.vstack([mask, keep[None]])
    fitted = _fit(xb, target, wb, mb, damping)
    if b is None:
        return fitted, mask, None
    return fitted[:-1], mask, np.where(keep, fitted[-1], 0.0)
