"""Magnitude pruning as pure functions on lists of Keras kernels.

A kernel has Keras' shape ``(inputs, units)``: column ``j`` holds every weight feeding unit ``j``.
Kernels come in layer order and the last one feeds the logits; that layer is never pruned, and
:func:`split_logits` is the one place that says so.

Computing masks (``*_masks``) and applying them (:func:`apply_masks`) are separate steps, so a
mask can be kept fixed while training (fine-tuning) or reused for compaction and sparse kernels.
Nothing here mutates its inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Real

import numpy as np

LOGITS = "logits"
"""Name of a model's output layer: the one layer that is never pruned (its kernel comes last)."""

Masks = list[np.ndarray]
MaskFn = Callable[[Sequence[np.ndarray], float], Masks]


DEFAULT_KS: tuple[float, ...] = (0, 25, 50, 60, 70, 80, 90, 95, 97, 99)
"""The challenge's pruning percentages (the default of every sweep and of the study)."""


def check_percent(value: object, name: str = "k") -> float:
    """``value`` as a float, checked to be a real number in [0, 100] (a percent).

    Raises:
        ValueError: ``value`` is not a real number (a string, a bool, an array, a Decimal: named as
            such) or lies outside [0, 100] (NaN and integers beyond float's range included).

    Example:
        >>> check_percent(50), check_percent(12.5, "final_k")
        (50.0, 12.5)
    """
    text = repr(value)
    text = text if len(text) <= 40 else text[:20] + "..."
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(
            f"{name} must be a number, a percent in [0, 100] such as 50; got {type(value).__name__} {text}"
        )
    # the range test alone: NaN fails it, and an int beyond float's range (10**400) never reaches float()
    if not 0 <= value <= 100:
        raise ValueError(f"{name} must be a percentage in [0, 100], got {text}")
    return float(value)


def validate_k(k: object) -> float:
    """Check a pruning percentage and return it as a float (:func:`check_percent` of ``k``).

    Raises:
        ValueError: ``k`` is not a real number in [0, 100] (NaN, bools and strings included).
    """
    return check_percent(k, "k")


def count_to_prune(n: int, k: float) -> int:
    """Number of items out of ``n`` to prune at ``k`` percent: ``round(k / 100 * n)``."""
    return round(validate_k(k) / 100 * n)


def validate_kernels(kernels: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Check kernels at an entry point and return them as a list of arrays (not copied).

    Each must be a 2-D array of real numbers (floating, or integer: scores are then computed in
    float64, so no ``abs`` overflow), finite, and consecutive shapes must chain
    (``kernels[i].shape[1] == kernels[i + 1].shape[0]``).

    Raises:
        ValueError: naming the layer and what is wrong with it.
    """
    return _checked_kernels(kernels, finite=True)


def weight_scores(kernel: np.ndarray) -> np.ndarray:
    """Weight pruning's score of every weight: |w| as float64 (exact for every integer dtype, so
    int8's -128 ranks as the largest). Shaped like ``kernel``."""
    return np.abs(np.asarray(kernel).astype(np.float64))


def unit_scores(kernel: np.ndarray) -> np.ndarray:
    """Unit pruning's score of every unit: the L2 norm of its kernel column, as float64, (units,)."""
    return np.linalg.norm(np.asarray(kernel).astype(np.float64), axis=0)


def split_logits(kernels: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Split kernels into the prunable hidden layers and the logit layer (the last one)."""
    if len(kernels) < 1:
        raise ValueError("need at least the logit layer's kernel")
    return list(kernels[:-1]), kernels[-1]


def smallest(scores: np.ndarray, n: int) -> np.ndarray:
    """Boolean mask of the ``n`` smallest entries of a 1-D array; ties go to the earlier position.

    Linear time (a partition, not a sort): the sweep calls this for every layer and k.
    """
    chosen = np.zeros(scores.size, dtype=bool)
    if n <= 0:
        return chosen
    if n >= scores.size:
        chosen[:] = True
        return chosen
    threshold = np.partition(scores, n - 1)[n - 1]
    chosen |= scores < threshold
    ties = np.flatnonzero(scores == threshold)
    chosen[ties[: n - int(chosen.sum())]] = True
    return chosen


def _keep_all(kernel: np.ndarray) -> np.ndarray:
    return np.ones(kernel.shape, dtype=bool)


def weight_masks(kernels: Sequence[np.ndarray], k: float) -> Masks:
    """Per layer, mask out the ``round(k/100 * size)`` weights of smallest magnitude.

    Returns:
        Boolean masks shaped like the kernels; ``True`` keeps a weight. The logit mask keeps all.
    """
    k = validate_k(k)
    hidden, logits = split_logits(validate_kernels(kernels))
    masks = []
    for kernel in hidden:
        pruned = smallest(weight_scores(kernel).ravel(), count_to_prune(kernel.size, k))
        masks.append(~pruned.reshape(kernel.shape))
    return masks + [_keep_all(logits)]


def unit_masks(kernels: Sequence[np.ndarray], k: float) -> Masks:
    """Per layer, mask out the ``round(k/100 * units)`` columns (units) of smallest L2 norm.

    Returns:
        Boolean masks shaped like the kernels, constant down each column.
    """
    k = validate_k(k)
    hidden, logits = split_logits(validate_kernels(kernels))
    masks = []
    for kernel in hidden:
        keep = ~smallest(unit_scores(kernel), count_to_prune(kernel.shape[1], k))
        masks.append(np.broadcast_to(keep, kernel.shape).copy())
    return masks + [_keep_all(logits)]


def global_weight_masks(kernels: Sequence[np.ndarray], k: float) -> Masks:
    """Mask out the ``round(k/100 * N)`` smallest-magnitude weights pooled over all hidden layers.

    ``N`` is the number of prunable weights; layers lose different fractions. A baseline for the
    layer-wise rule of the challenge.
    """
    k = validate_k(k)
    hidden, logits = split_logits(validate_kernels(kernels))
    sizes = [w.size for w in hidden]
    pooled = np.concatenate([weight_scores(w).ravel() for w in hidden]) if hidden else np.zeros(0)
    keep = ~smallest(pooled, count_to_prune(pooled.size, k))
    pieces = np.split(keep, np.cumsum(sizes)[:-1]) if hidden else []
    return [p.reshape(w.shape) for p, w in zip(pieces, hidden)] + [_keep_all(logits)]


METHODS: dict[str, MaskFn] = {
    "weight": weight_masks,
    "unit": unit_masks,
    "global-weight": global_weight_masks,
}


def compute_masks(kernels: Sequence[np.ndarray], k: float, method: str) -> Masks:
    """Masks of pruning method ``method`` (a key of :data:`METHODS`) at ``k`` percent."""
    try:
        fn = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {sorted(METHODS)}") from None
    return fn(kernels, k)


def _one_per_kernel(values: object, kernels: Sequence[np.ndarray], what: str, each: str) -> None:
    """Refuse anything but a list or tuple of one entry per kernel (``each`` says what an entry is);
    an array is refused too, since iterating it would yield its rows."""
    if isinstance(values, np.ndarray) or not isinstance(values, Sequence):
        raise ValueError(f"{what} must be a list with {each} per kernel; got {type(values).__name__}")
    if len(values) != len(kernels):
        raise ValueError(f"{len(kernels)} kernels but {len(values)} {what}; give {each} per kernel")


def validate_masks(kernels: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Check masks against (validated) kernels and return them as a list of arrays (not copied).

    Each mask must be a boolean array of its kernel's shape (a float or NaN mask is not read as
    "keep where nonzero": that guess hides bugs), and the logit kernel's mask must keep every
    weight, since the logit layer is never pruned.

    Raises:
        ValueError: naming the mask and what is wrong with it.
    """
    _one_per_kernel(masks, kernels, "masks", "one boolean array")
    out = []
    for i, (kernel, mask) in enumerate(zip(kernels, masks)):
        m = np.asarray(mask)
        if m.dtype != bool:
            raise ValueError(
                f"mask {i} must be a boolean array (True keeps a weight), got dtype "
                f"{m.dtype}; convert it explicitly, e.g. mask != 0"
            )
        if m.shape != kernel.shape:
            raise ValueError(f"mask {i} has shape {m.shape}, which does not match kernel shape {kernel.shape}")
        out.append(m)
    if not out[-1].all():
        raise ValueError(
            f"the logit kernel's mask (mask {len(out) - 1}) prunes "
            f"{int(out[-1].size - np.count_nonzero(out[-1]))} weights; the logit layer is "
            "never pruned, so its mask must be all True"
        )
    return out


def apply_masks(kernels: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Return new kernels with masked-out weights set to zero (inputs untouched).

    Raises:
        ValueError: the kernels are invalid (:func:`validate_kernels`) or the masks are
            (:func:`validate_masks`: boolean, the kernels' shapes, the logit mask all True).
    """
    kernels = validate_kernels(kernels)
    masks = validate_masks(kernels, masks)
    return [np.where(mask, kernel, np.zeros((), dtype=kernel.dtype)) for kernel, mask in zip(kernels, masks)]


def prune(kernels: Sequence[np.ndarray], k: float, method: str) -> list[np.ndarray]:
    """Prune ``kernels`` by ``method`` at ``k`` percent; the logit kernel comes back bit-identical.

    Args:
        kernels: kernels in layer order, each (inputs, units); the last feeds the logits.
        k: percent in [0, 100]; each hidden kernel loses exactly ``round(k/100 * n)`` of its n
            weights (``"weight"``) or units (``"unit"``).
        method: ``"weight"`` (smallest |w|) or ``"unit"`` (columns of smallest L2 norm).

    Returns:
        New kernels; the inputs are not modified.
    """
    # apply_masks selects values (np.where) rather than multiplying, so kept weights, the logit
    # kernel included, come back bit-identical (no -0.0 or NaN surprises).
    return apply_masks(kernels, compute_masks(kernels, k, method))


def weight_prune(kernels: Sequence[np.ndarray], k: float) -> list[np.ndarray]:
    """Zero the ``round(k/100 * size)`` smallest-|w| weights of each hidden kernel (:func:`prune`).

    Example:
        >>> hidden, logit = np.array([[0.1, -3.0], [2.0, -0.2]]), np.ones((2, 1))
        >>> weight_prune([hidden, logit], 50)[0]
        array([[ 0., -3.],
               [ 2.,  0.]])
    """
    return prune(kernels, k, "weight")


def unit_prune(kernels: Sequence[np.ndarray], k: float) -> list[np.ndarray]:
    """Zero the ``round(k/100 * units)`` columns of smallest L2 norm of each hidden kernel (:func:`prune`).

    Example:
        >>> hidden, logit = np.array([[0.1, -3.0], [2.0, -0.2]]), np.ones((2, 1))
        >>> unit_prune([hidden, logit], 50)[0]  # column norms 2.0 and 3.0: the first goes
        array([[ 0. , -3. ],
               [ 0. , -0.2]])
    """
    return prune(kernels, k, "unit")


def prune_biases(
    biases: Sequence[np.ndarray | None], masks: Sequence[np.ndarray], method: str
) -> list[np.ndarray | None]:
    """Zero the biases of units that unit pruning removed, so a pruned unit outputs exactly 0.

    Weight pruning leaves biases alone: a column it happens to empty is not a removed unit.

    Raises:
        ValueError: the biases and masks differ in number, or a bias does not have one entry per
            unit of its mask.
    """
    biases, masks = list(biases), list(masks)
    if len(biases) != len(masks):
        raise ValueError(f"{len(biases)} biases but {len(masks)} masks; give one bias (or None) per mask")
    for i, (b, m) in enumerate(zip(biases, masks)):
        if b is not None and (np.ndim(m) != 2 or np.shape(b) != (np.shape(m)[1],)):
            raise ValueError(
                f"bias {i} has shape {np.shape(b)} but mask {i} has shape {np.shape(m)}; "
                "a bias has one entry per unit (column)"
            )
    if method != "unit":
        return list(biases)
    return [None if b is None else np.where(m.any(axis=0), b, np.zeros((), b.dtype)) for b, m in zip(biases, masks)]


def sparsity(arrays: Sequence[np.ndarray]) -> float:
    """Measured percent of zero entries over all ``arrays`` together (any iterable, read once).

    Example:
        >>> import numpy as np
        >>> float(sparsity(w for w in [np.zeros(3), np.ones(1)]))
        75.0
    """
    arrays = [np.asarray(a) for a in arrays]
    total = sum(a.size for a in arrays)
    zeros = sum(a.size - np.count_nonzero(a) for a in arrays)
    return 100.0 * zeros / total if total else 0.0


def validate_biases(
    kernels: Sequence[np.ndarray], biases: Sequence[np.ndarray | None] | None
) -> list[np.ndarray | None]:
    """Check per-layer biases against (validated) kernels; return them as a list (not copied).

    ``None`` (or a ``None`` entry) means no bias for that layer. Each bias must be a finite 1-D
    array of real numbers with one entry per unit of its kernel.

    Raises:
        ValueError: naming the bias and what is wrong with it.
    """
    if biases is None:
        return [None] * len(kernels)
    _one_per_kernel(biases, kernels, "biases", "one 1-D array (or None)")
    out = []
    for i, (kernel, bias) in enumerate(zip(kernels, biases)):
        if bias is None:
            out.append(None)
            continue
        b = np.asarray(bias)
        if b.dtype == bool or not (np.issubdtype(b.dtype, np.floating) or np.issubdtype(b.dtype, np.integer)):
            raise ValueError(f"bias {i} must hold real numbers, got dtype {b.dtype}")
        if b.shape != (kernel.shape[1],):
            raise ValueError(
                f"bias {i} has shape {b.shape}; kernel {i} has {kernel.shape[1]} units, "
                f"so it must have shape ({kernel.shape[1]},)"
            )
        if np.issubdtype(b.dtype, np.floating) and not np.isfinite(b).all():
            raise ValueError(f"bias {i} contains {int(np.sum(~np.isfinite(b)))} NaN or infinite values")
        out.append(b)
    return out


def validate_inputs(x: object, features: int) -> np.ndarray:
    """Inference inputs as a C-contiguous float32 (n, features) array, after checking them.

    Policy shared by every inference path (:class:`prunelib.inference.predictor.Predictor`,
    :class:`prunelib.inference.sparse.SparseMLP`): a batch ``(n, ...)`` whose trailing axes flatten to
    ``features`` (a single sample is a batch of one, ``x[None]``; a 1-D array is refused rather
    than guessed at); real numbers (bool, integer or floating); every value finite after the cast
    to float32. Non-finite inputs are refused because the sparse paths skip pruned weights and
    would turn NaN into finite logits where the dense path gives NaN. ``n`` may be 0.

    Raises:
        ValueError: naming the shape, dtype or count of non-finite values that is wrong.
    """
    if np.ma.is_masked(x):  # np.asarray would drop the mask and compute on the hidden values
        raise ValueError("inputs are a masked array with masked entries; fill them first (x.filled(...))")
    a = np.asarray(x)
    if a.dtype == object or not (
        a.dtype == bool or np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
    ):
        raise ValueError(f"inputs must be real numbers, got dtype {a.dtype}")
    if a.ndim < 2 or int(np.prod(a.shape[1:], dtype=np.int64)) != features:
        raise ValueError(
            f"inputs of shape {a.shape} do not flatten to {features} features per sample; "
            "pass a batch (n, ...) even for one sample (x[None])"
        )
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
        out = np.ascontiguousarray(a.reshape(len(a), features), dtype=np.float32)
    bad = out.size - int(np.count_nonzero(np.isfinite(out)))
    if bad:
        raise ValueError(
            f"inputs contain {bad} NaN or infinite values (after conversion to float32); "
            "inference refuses them on every path, so clean or clip the inputs first"
        )
    return out


def validate_kernel_shapes(kernels: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The structural half of :func:`validate_kernels`: a non-empty list of 2-D real arrays whose
    shapes chain. Values are not checked, so evaluating or counting a diverged (NaN) network still
    reports it rather than raising.

    Raises:
        ValueError: naming the layer and what is wrong with it.
    """
    return _checked_kernels(kernels, finite=False)


def _checked_kernels(kernels: Sequence[np.ndarray], *, finite: bool) -> list[np.ndarray]:
    """:func:`validate_kernels` (``finite=True``) or :func:`validate_kernel_shapes`: one pass, the
    first fault in layer order raised."""
    if isinstance(kernels, np.ndarray) or not isinstance(kernels, Sequence):
        raise ValueError(
            f"kernels must be a list of 2-D arrays in layer order, one per Dense layer; got {type(kernels).__name__}"
        )
    if len(kernels) < 1:
        raise ValueError("need at least the logit layer's kernel")
    out = []
    for i, kernel in enumerate(kernels):
        w = np.asarray(kernel)
        if w.ndim != 2:
            raise ValueError(f"kernel {i} must be 2-D (inputs, units), got shape {w.shape}")
        if w.dtype == bool or not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
            raise ValueError(f"kernel {i} must hold real numbers, got dtype {w.dtype}")
        if finite and np.issubdtype(w.dtype, np.floating) and not np.isfinite(w).all():
            raise ValueError(
                f"kernel {i} contains {int(np.sum(~np.isfinite(w)))} NaN or infinite "
                "values; magnitude pruning cannot rank them (check the training run)"
            )
        if out and out[-1].shape[1] != w.shape[0]:
            raise ValueError(
                f"kernel {i} takes {w.shape[0]} inputs but kernel {i - 1} has "
                f"{out[-1].shape[1]} units; kernels must be in layer order"
            )
        out.append(w)
    return out
