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
  more, Yin et al. 2024) or ``search`` (a few allocations of the family through ``per-unit`` and toward
  uniform tried, the one whose pruned network agrees most with the dense network's predictions on the
  calibration inputs kept; see :mod:`prunelib.core.allocation`);
* *targets*: ``layer`` (each layer's own dense pre-activations, below) or ``network`` (then
  ``rounds`` of SparseLLM's alternation pull every hidden layer toward what the layers after it need
  to reproduce the dense logits, masks fixed; kept only if the calibration logits come closer).

Layers are fitted sequentially, as in OBC / SparseGPT: layer i's fit (and its weight selection) sees
the inputs the already-pruned network computes, and its targets are the dense network's pre-activations. Under
unit pruning the last hidden layer is fitted to non-negative activations of its kept units that
reproduce the dense logits through the fixed logit kernel as closely as they can, up to a shift per
row (which softmax ignores). The logit kernel comes back bit-identical; nothing is mutated.

This module composes the method and runs the layers; the parts live beside it:
:mod:`~prunelib.core.allocation` (per-layer counts), :mod:`~prunelib.core.greedy` (exact greedy
supports), :mod:`~prunelib.core.unit_selection` (which units, the last hidden layer's targets),
:mod:`~prunelib.core.network_targets` (the alternation) and :mod:`~prunelib.core.layer_fit` (one
layer's re-fit).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prunelib.core import allocation, forward, layer_fit, network_targets, unit_selection
from prunelib.core.greedy import greedy_supports
from prunelib.core.pruning import (
    count_to_prune,
    smallest,
    split_logits,
    validate_biases,
    validate_k,
    validate_kernels,
)
from prunelib.core.reconstruct import check_calibration

SELECTIONS = {"weight": ("magnitude", "wanda", "obs", "greedy"), "unit": ("norm", "activation", "obs")}
UPDATES = ("none", "lstsq")
SCHEDULES = ("one-shot", "gradual")
ALLOCATIONS = ("uniform", "global", "per-unit", "owl", "search")
TARGETS = ("layer", "network")
MAX_KEEP = 0.95
"""The largest gradual ``keep``: about 90 re-fits per layer to reach 99 % (``log 0.01 / log keep``);
closer to 1 the plan grows without bound (``keep=1-1e-6`` would plan 4.6 million re-fits)."""
MAX_ROUNDS = 100
"""The most rounds of the network-target alternation (each re-fits every hidden layer; 4 by default)."""


def check_keep(keep: object) -> float:
    """A gradual schedule's ``keep`` as a float, checked to lie in (0, :data:`MAX_KEEP`].

    Raises:
        ValueError: not a real number (bools and strings included), NaN, or out of range.
    """
    if isinstance(keep, (bool, np.bool_)) or not isinstance(keep, numbers.Real) or not 0 < float(keep) <= MAX_KEEP:
        raise ValueError(
            f"keep must be a real number in (0, {MAX_KEEP}] (the share of the weights each gradual step keeps; "
            f"closer to 1 plans too many re-fits), got {keep!r}"
        )
    return float(keep)


@dataclass(frozen=True)
class PostTrainingMethod:
    """One post-training pruning method: how it selects, updates, schedules and allocates.

    Raises:
        ValueError: an unknown component, a combination that means nothing (a gradual schedule
            without a re-fit is the one-shot selection; unit pruning is one-shot and uniform), or a
            ``keep`` outside (0, :data:`MAX_KEEP`] or ``rounds`` outside 1..:data:`MAX_ROUNDS`
            (numpy scalars accepted).
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
        if self.selection == "greedy" and self.allocation == "global":
            raise ValueError("a global allocation ranks saliency scores, which greedy selection has none of")
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
        # bounded here, before any work: each gradual level and each round re-fits every layer
        check_keep(self.keep)
        if (
            isinstance(self.rounds, (bool, np.bool_))
            or not isinstance(self.rounds, numbers.Integral)
            or not 1 <= self.rounds <= MAX_ROUNDS
        ):
            raise ValueError(f"rounds must be an integer from 1 to {MAX_ROUNDS}, got {self.rounds!r}")


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
    "search-obs-gradual+network": PostTrainingMethod(
        selection="obs", schedule="gradual", allocation="search", targets="network"
    ),
    "unit-norm+lstsq": PostTrainingMethod("unit", "norm"),
    "unit-activation+lstsq": PostTrainingMethod("unit", "activation"),
    "unit-obs+lstsq": PostTrainingMethod("unit", "obs"),
}
"""The registered post-training methods by name (``unit-*`` prune whole units)."""

WHEN: dict[str, str] = {
    "magnitude": "smallest |w|, no re-fit: the challenge's one-shot baseline",
    "magnitude+lstsq": "|w| masks, survivors re-fitted by least squares: the fastest re-fit (the challenge's + lstsq)",
    "wanda": "|w| * ||x|| (Wanda), no re-fit: a baseline that needs only activation norms",
    "wanda+lstsq": "Wanda masks, survivors re-fitted",
    "obs+lstsq": "OBS saliency in one step, re-fitted: behind the gradual schedule at high k",
    "magnitude-gradual": "|w| re-selected on the re-fitted weights in steps (50 %, 75 %, ...)",
    "obs-gradual": "OBS in steps, the same share of every layer",
    "global-obs+lstsq": "one pooled OBS ranking over all layers, one step",
    "global-obs-gradual": "one pooled OBS ranking over all layers, in steps",
    "per-unit-obs+lstsq": "OBS, every unit keeping as many weights on average, one step",
    "per-unit-obs-gradual": "weight pruning's default: the best fixed allocation measured on every model "
    "(docs/post-training.md)",
    "owl-obs-gradual": "outlier-weighted layer shares (OWL): behind per-unit on the MLPs measured",
    "search-obs-gradual": "four allocations tried, the one agreeing most with the dense predictions kept: best "
    "layer-target mean from weight 98 on LeNet, about 4x per-unit's seconds",
    "per-unit-greedy+lstsq": "exact greedy supports per unit: not better than gradual OBS, faster at very high k",
    "per-unit-obs-gradual+network": "per-unit-obs-gradual, then layers pulled toward the dense logits (SparseLLM)",
    "search-obs-gradual+network": "the best measured at high weight sparsity when its seconds are affordable",
    "unit-norm+lstsq": "whole units by column norm, re-fitted: the fastest unit method",
    "unit-activation+lstsq": "whole units by their share of the next layer's input, re-fitted",
    "unit-obs+lstsq": "unit pruning's default: greedy OBS over units, the best unit method measured",
}
"""One line per registered method: when to use it (what :func:`prunelib.post_training_methods` prints)."""
if set(WHEN) != set(POST_TRAINING_METHODS):
    raise ImportError("post_training.WHEN and POST_TRAINING_METHODS name different methods")


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
    keep = check_keep(keep)
    levels, t = [], 1
    while (level := 100.0 * (1.0 - keep**t)) < k:
        levels.append(level)
        t += 1
    return [*levels, k] if k > 0 else [0.0]


def _inverse_diagonal(gram: np.ndarray, damping: float) -> np.ndarray:
    """diag((G + lam I)^-1) in float64: the damping keeps always-zero inputs (border pixels) invertible."""
    g = np.asarray(gram, np.float64)
    return np.diag(np.linalg.inv(g + layer_fit.ridge(g, damping) * np.eye(len(g))))


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


def weight_scores(selection: str, w: np.ndarray, gram: np.ndarray, damping: float = 0.01) -> np.ndarray:
    """Every weight's score under a weight ``selection`` (``magnitude``, ``wanda`` or ``obs``) from the
    inputs' Gram matrix ``gram = X^T X``: the smallest go first.

    Example:
        >>> import numpy as np
        >>> weight_scores("obs", np.array([[1.0], [2.0]]), np.eye(2)).round(2).ravel().tolist()
        [1.01, 4.04]
    """
    if selection not in ("magnitude", "wanda", "obs"):
        raise ValueError(f"selection must be 'magnitude', 'wanda' or 'obs', got {selection!r}")
    if selection == "magnitude":
        return np.abs(w)
    if selection == "wanda":
        return np.abs(w) * np.sqrt(np.maximum(np.diag(gram), 0.0))[:, None]
    return np.square(w) / _inverse_diagonal(gram, damping)[:, None]


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
        scores = weight_scores(method.selection, current, gram, damping)
        scores[~mask] = -np.inf  # never un-prune: a gradual step only adds to the pruned set
        chosen = ~smallest(scores[: len(w64) - fixed].ravel(), n)
        return np.vstack([chosen.reshape(-1, w64.shape[1]), np.ones((fixed, w64.shape[1]), bool)])

    mask = np.ones(w64.shape, dtype=bool)
    if method.update == "none":
        mask = select(w64, mask, count)
        return np.where(mask, w64, 0.0), mask
    normal = layer_fit.Normal(x, gram)
    if method.selection == "greedy":
        mask = greedy_supports(gram, x.T @ target, size - count, layer_fit.ridge(gram, damping), fixed)
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
    method: PostTrainingMethod, hidden: list[np.ndarray], inputs: list[np.ndarray], k: float, damping: float
) -> list[int]:
    """Per-layer counts of a global ranking on the dense network (``inputs``: each hidden layer's dense
    inputs); the total is exactly ``round(k/100 N)``."""
    pooled = []
    for w, h in zip(hidden, inputs):
        scores = weight_scores(method.selection, w.astype(np.float64), h.T @ h, damping)
        # Normalized by the layer's mean so that layers of different scales compete on relative terms.
        mean = float(scores.mean())
        pooled.append((scores / (mean if mean > 0 else 1.0)).ravel())
    flat = np.concatenate(pooled)
    chosen = smallest(flat, count_to_prune(flat.size, k))
    return [int(p.sum()) for p in np.split(chosen, np.cumsum([w.size for w in hidden])[:-1])]


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
            all hidden weights together under any allocation but ``uniform``.
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
    if (
        isinstance(damping, (bool, np.bool_))
        or not isinstance(damping, numbers.Real)
        or not (np.isfinite(damping) and damping > 0)
    ):
        raise ValueError(f"damping must be a positive number, got {damping!r}")
    damping = float(damping)
    kernels = validate_kernels(kernels)
    biases = validate_biases(kernels, biases)
    hidden, logits = split_logits(kernels)
    fan_ins = [w.shape[0] + (b is not None) for w, b in zip(hidden, biases)]
    x = check_calibration(calibration, kernels, fan_ins, biases_counted=any(b is not None for b in biases[:-1])).astype(
        np.float64
    )
    keeps = None
    if spec.granularity == "weight":
        candidates = _candidate_counts(spec, hidden, logits, x, biases, k, damping)
    else:
        candidates = [[count_to_prune(w.shape[1], k) for w in hidden]]
        keeps = unit_selection.unit_keeps(spec.selection, hidden, biases, logits, x, candidates[0], damping)
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
        refined = network_targets.network_rounds(
            out, out_b, masks, logits, biases[-1], x, dense_logits, spec.rounds, damping
        )
        # kept only where the network's own output on the calibration set comes closer (it may not)
        if _logit_error(*refined, logits, biases[-1], x, dense_logits) < _logit_error(
            out, out_b, logits, biases[-1], x, dense_logits
        ):
            out, out_b = refined
    out.append(np.array(logits, copy=True))
    out_b.append(None if biases[-1] is None else np.array(biases[-1], copy=True))
    masks.append(np.ones(logits.shape, dtype=bool))
    return out, out_b, masks


def _candidate_counts(spec, hidden, logits, x, biases, k, damping) -> list[list[int]]:
    """The per-layer counts to remove that ``spec``'s allocation tries (one list unless it searches)."""
    if spec.allocation in ("global", "owl"):
        inputs = [x, *layer_fit.dense_activations([*hidden, logits], biases, x)[: len(hidden) - 1]]
    if spec.allocation == "global":
        return [_global_counts(spec, hidden, inputs, k, damping)]
    if spec.allocation == "per-unit":
        return [allocation.power_counts(hidden, k, 0.0)]
    if spec.allocation == "owl":
        ratios = [allocation.outlier_ratio(w, h) for w, h in zip(hidden, inputs)]
        return [allocation.owl_counts(ratios, [w.size for w in hidden], k)]
    if spec.allocation == "search":
        tried = [allocation.power_counts(hidden, k, a) for a in allocation.SEARCH_ALPHAS]
        return [c for i, c in enumerate(tried) if c not in tried[:i]]
    return [[count_to_prune(w.size, k) for w in hidden]]


def _dense_logits(hidden, biases, logits, x) -> np.ndarray:
    return layer_fit.dense_activations([*hidden, logits], biases, x)[-1]


def _prune_layers(spec, hidden, biases, x, counts, keeps, logits, damping):
    """The hidden layers pruned in order, each fitted on the inputs the already-pruned layers compute:
    ``(kernels, biases, masks, changed)``."""
    out, out_b, masks = [], [], []
    h_dense = h_pruned = x
    changed = False
    for i, (w, given, count) in enumerate(zip(hidden, biases, counts)):
        w64 = w.astype(np.float64)
        b = layer_fit.float64(given)
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


def _pruned_logits(hidden, biases, logits, logit_bias, x) -> np.ndarray:
    kernels = [w.astype(np.float64) for w in [*hidden, logits]]
    return forward.logits(kernels, x, [layer_fit.float64(b) for b in [*biases, logit_bias]])


def _logit_error(hidden, biases, logits, logit_bias, x, dense_logits) -> float:
    return float(np.mean(np.square(_pruned_logits(hidden, biases, logits, logit_bias, x) - dense_logits)))


def _disagreement(hidden, biases, logits, logit_bias, x, dense_logits) -> tuple[float, float]:
    """(share of calibration rows whose prediction differs from the dense network's, mean squared
    logit error): how a ``search`` allocation ranks its candidates (the second breaks ties)."""
    out = _pruned_logits(hidden, biases, logits, logit_bias, x)
    return float(np.mean(out.argmax(1) != dense_logits.argmax(1))), float(np.mean(np.square(out - dense_logits)))


def _weight_layer(spec, w, b, x, target, count, damping):
    xb, wb = layer_fit.with_bias_input(x, w, b)
    new, mask = _prune_weights_of_layer(spec, wb, xb, target, count, damping, fixed=int(b is not None))
    if b is None:
        return new, mask, None
    return new[:-1], mask[:-1], new[-1]


def _unit_layer(spec, w, b, x, pre_dense, keep, damping, nxt, last):
    h_dense = forward.relu(pre_dense)
    mask = np.broadcast_to(keep, w.shape).copy()
    target = pre_dense
    if last and keep.any() and not keep.all():
        wanted = unit_selection.logit_targets(h_dense, keep, nxt)
        # where the wanted activation is zero, any pre-activation at or below zero will do
        target = np.where(wanted > 0, wanted, np.minimum(pre_dense, 0.0))
    if spec.update == "none":
        new = np.where(mask, w, 0.0)
        return new, mask, None if b is None else np.where(keep, b, 0.0)
    xb, wb = layer_fit.with_bias_input(x, w, b)
    mb = mask if b is None else np.vstack([mask, keep[None]])
    fitted = layer_fit.fit(xb, target, wb, mb, damping)
    if b is None:
        return fitted, mask, None
    return fitted[:-1], mask, np.where(keep, fitted[-1], 0.0)
