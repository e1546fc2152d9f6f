"""Masks for kernels of any rank: convolutions, depthwise and embedding tables as well as Dense.

:mod:`prunelib.core.pruning` prunes the challenge's 2-D kernels; a Keras model's kernels come in
other shapes too (a Conv2D kernel is ``(height, width, in, out)``). Here a kernel comes with the
axes that index its *units* (its output channels: the last axis of a Dense or Conv kernel, the
second last of a transposed convolution's) and, for N:M, the axis that indexes its *inputs*. The
k convention is the library's: ``k`` percent, exactly ``round(k/100 * n)`` weights (or units) per
kernel, ties to the earlier position (:func:`prunelib.core.pruning.smallest`).

Every function takes the current keep-mask too (``keep``, default all kept) and only ever adds to
what is pruned: a pruned weight scores below every live one, so training that tightens a mask step
by step never brings a weight back. Pure functions: arrays in, new boolean masks out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from prunelib.core.pruning import count_to_prune, smallest, validate_k

GRANULARITIES = ("weight", "unit", "global")
"""Granularities with a percent ``k``; N:M (e.g. ``"2:4"``) is written as its ratio."""

_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_nm(granularity: str, names: Sequence[str] = GRANULARITIES) -> tuple[int, int] | None:
    """``(n, m)`` of an N:M granularity such as ``"2:4"``; ``None`` for one of ``names`` (the
    granularities the caller takes besides N:M, listed when refusing).

    Raises:
        ValueError: neither a known name nor ``"N:M"`` with ``0 < N < M``.

    Example:
        >>> parse_nm("2:4"), parse_nm("weight")
        ((2, 4), None)
    """
    if isinstance(granularity, str) and granularity in names:
        return None
    match = _NM.match(granularity) if isinstance(granularity, str) else None
    if match is None:
        raise ValueError(
            f"unknown granularity {granularity!r}; choose one of {list(names)} or an N:M ratio such as '2:4'"
        )
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise ValueError(f"granularity {granularity!r}: N:M needs 0 < N < M (N weights kept in every M), got {n}:{m}")
    return n, m


def _keep(kernel: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    if keep is None:
        return np.ones(kernel.shape, dtype=bool)
    keep = np.asarray(keep)
    if keep.dtype != bool or keep.shape != kernel.shape:
        raise ValueError(
            f"keep must be a boolean array of the kernel's shape {kernel.shape}, got {keep.dtype} {keep.shape}"
        )
    return keep


def _finite(kernel: np.ndarray) -> np.ndarray:
    """``kernel``, refused where it holds NaN or inf: they have no magnitude to rank, and would
    silently keep weights the count says go."""
    kernel = np.asarray(kernel)
    bad = int(np.size(kernel) - np.count_nonzero(np.isfinite(kernel)))
    if bad:
        raise ValueError(
            f"the kernel {kernel.shape} holds {bad} NaN or infinite weights; masks rank finite weights only"
        )
    return kernel


def _live_scores(scores: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Scores with every pruned entry at 0 and every live one above it (so pruned ones go first)."""
    return np.where(live, np.maximum(scores, np.finfo(np.float64).tiny), 0.0)


def _unit_axes(kernel: np.ndarray, unit_axes: Sequence[int]) -> tuple[int, ...]:
    axes = tuple(sorted({a % kernel.ndim for a in unit_axes}))
    if not axes or len(axes) != len(tuple(unit_axes)):
        raise ValueError(f"unit_axes {tuple(unit_axes)} must name distinct axes of a {kernel.ndim}-D kernel")
    return axes


def weight_mask(kernel: np.ndarray, k: float, keep: np.ndarray | None = None) -> np.ndarray:
    """Keep-mask pruning the ``round(k/100 * size)`` smallest-|w| weights of one kernel of any shape.

    Example:
        >>> import numpy as np
        >>> weight_mask(np.arange(1.0, 9.0).reshape(2, 2, 2), 25).ravel().tolist()
        [False, False, True, True, True, True, True, True]
    """
    k = validate_k(k)
    kernel = _finite(kernel)
    live = _keep(kernel, keep)
    scores = _live_scores(np.abs(kernel.astype(np.float64)), live)
    return ~smallest(scores.ravel(), count_to_prune(kernel.size, k)).reshape(kernel.shape) & live


def unit_scores(kernel: np.ndarray, unit_axes: Sequence[int] = (-1,)) -> np.ndarray:
    """The L2 norm of each unit's weights (over every axis but ``unit_axes``), shaped like the units."""
    kernel = np.asarray(kernel)
    axes = _unit_axes(kernel, unit_axes)
    other = tuple(a for a in range(kernel.ndim) if a not in axes)
    return np.sqrt(np.sum(np.square(kernel.astype(np.float64)), axis=other))


def unit_mask(
    kernel: np.ndarray, k: float, unit_axes: Sequence[int] = (-1,), keep: np.ndarray | None = None
) -> np.ndarray:
    """Keep-mask pruning the ``round(k/100 * units)`` units of smallest L2 norm, whole.

    A unit is one index along ``unit_axes`` (a Dense column, a Conv filter, a depthwise channel
    ``(in, multiplier)``); a unit with no live weight in ``keep`` counts as pruned already.

    Example:
        >>> import numpy as np
        >>> kernel = np.ones((3, 3, 2, 4)) * np.array([1.0, 3.0, 2.0, 4.0])  # a Conv2D kernel: 4 filters
        >>> unit_mask(kernel, 50)[0, 0, 0].tolist()
        [False, True, False, True]
    """
    k = validate_k(k)
    kernel = _finite(kernel)
    axes = _unit_axes(kernel, unit_axes)
    live = _keep(kernel, keep)
    other = tuple(a for a in range(kernel.ndim) if a not in axes)
    alive = np.any(live, axis=other)
    scores = _live_scores(unit_scores(np.where(live, kernel, 0), axes), alive)
    keep_units = ~smallest(scores.ravel(), count_to_prune(scores.size, k)).reshape(scores.shape)
    return np.broadcast_to(np.expand_dims(keep_units, other), kernel.shape) & live


def global_weight_masks(
    kernels: Sequence[np.ndarray], k: float, keeps: Sequence[np.ndarray | None] | None = None
) -> list[np.ndarray]:
    """Keep-masks pruning the ``round(k/100 * N)`` smallest |w| pooled over all ``kernels`` (N weights).

    Example:
        >>> import numpy as np
        >>> [m.tolist() for m in global_weight_masks([np.array([1.0, 5.0]), np.array([2.0, 3.0])], 50)]
        [[False, True], [False, True]]
    """
    k = validate_k(k)
    kernels = [_finite(w) for w in kernels]
    keeps = [None] * len(kernels) if keeps is None else list(keeps)
    if len(keeps) != len(kernels):
        raise ValueError(f"{len(kernels)} kernels but {len(keeps)} keep-masks")
    lives = [_keep(w, m) for w, m in zip(kernels, keeps)]
    if not kernels:
        return []
    pooled = np.concatenate([_live_scores(np.abs(w.astype(np.float64)), m).ravel() for w, m in zip(kernels, lives)])
    pruned = smallest(pooled, count_to_prune(pooled.size, k))
    pieces = np.split(~pruned, np.cumsum([w.size for w in kernels])[:-1])
    return [p.reshape(w.shape) & m for p, w, m in zip(pieces, kernels, lives)]


def nm_mask(kernel: np.ndarray, n: int, m: int, axis: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Keep-mask keeping the ``n`` largest |w| in every group of ``m`` consecutive entries along ``axis``.

    ``axis`` is the kernel's input axis (a Dense kernel's rows, a Conv kernel's input channels), as
    sparse tensor cores group weights. Ties go to the earlier position; a weight already pruned in
    ``keep`` is among the first to go.

    Raises:
        ValueError: the axis' length is not a multiple of ``m``.

    Example:
        >>> import numpy as np
        >>> nm_mask(np.array([[4.0], [1.0], [3.0], [2.0]]), 2, 4, axis=0).ravel().tolist()
        [True, False, True, False]
    """
    if not (isinstance(n, int | np.integer) and isinstance(m, int | np.integer) and 0 < n < m):
        raise ValueError(f"N:M needs whole numbers 0 < N < M, got {n!r}:{m!r}")
    kernel = _finite(kernel)
    axis = axis % kernel.ndim
    if kernel.shape[axis] % m:
        raise ValueError(
            f"N:M groups {m} inputs, but the kernel {kernel.shape} has {kernel.shape[axis]} along axis {axis}"
        )
    live = _keep(kernel, keep)
    scores = np.moveaxis(_live_scores(np.abs(kernel.astype(np.float64)), live), axis, -1)
    groups = scores.reshape(*scores.shape[:-1], scores.shape[-1] // m, m)
    # A stable sort ranks ties by position, the library's tie rule; the last n of each group stay.
    order = np.argsort(groups, axis=-1, kind="stable")
    kept = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(kept, order[..., m - n :], True, axis=-1)
    return np.moveaxis(kept.reshape(scores.shape), -1, axis) & live


def nm_valid(mask: np.ndarray, n: int, m: int, axis: int) -> bool:
    """Whether every group of ``m`` consecutive entries along ``axis`` keeps at most ``n``."""
    mask = np.moveaxis(np.asarray(mask, dtype=bool), axis % np.ndim(mask), -1)
    if mask.shape[-1] % m:
        return False
    return bool((mask.reshape(*mask.shape[:-1], -1, m).sum(axis=-1) <= n).all())
