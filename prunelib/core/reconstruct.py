"""One-shot reconstruction: correct the surviving weights in closed form, no gradient training.

After a mask is chosen, each hidden layer's kept weights are re-fitted, layer by layer, so that the
pruned network's pre-activations match the dense network's on a calibration batch. For unit ``j``
with kept inputs ``S`` (its column of the mask) the problem is ridge-regularized least squares
toward the dense weights ``w0``::

    min_w ||X_S w - y_j||^2 + lam * ||w - w0_S||^2   =>   (G_SS + lam I) w = X_S^T y_j + lam * w0_S

where ``X`` holds the layer's inputs as the already-corrected pruned network computes them and
``y_j`` the dense network's pre-activations (sequential, as in OBC / SparseGPT). Pulling toward
``w0`` rather than zero keeps a kept weight whose inputs are never active (e.g. a border pixel)
at its trained value, so no kept weight turns into an accidental zero.

The masks never change: pruned weights stay exactly zero and the logit kernel comes back
bit-identical, so the last hidden layer's removed units cannot be compensated in the logits.
With ``logit_targets=True`` the last hidden layer's kept units are instead fitted to the
non-negative activations that best reproduce the dense logits through the fixed logit kernel
(:func:`prunelib.core.logit_targets.logit_targets`, up to a shift per row), which lets them absorb
some of the removed units' share. (The minimum-norm change, :func:`logit_matching_targets`, asks
for negative activations once few units are kept, and a ReLU clips them: with 10 of 200 units kept
on the challenge MLP it kept 43 % of the test accuracy where the non-negative fit keeps 93 %,
``benchmarks/unit_logit_targets.py``.)

Biases and activations: with :func:`reconstruct_with_biases` each kept unit's bias is fitted with
its weights (the bias is the weight of an unpruned input of constant 1); ``acts`` gives each
hidden layer's elementwise activation (ReLU by default). Numerics: the work is done in float32
and, if anything overflows or comes out non-finite, redone in float64; a result that is still
not finite raises ``ValueError`` rather than returning NaN kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from prunelib.core import forward
from prunelib.core.forward import Activation
from prunelib.core.logit_targets import logit_targets as nonnegative_targets
from prunelib.core.logit_targets import relu_layer_targets
from prunelib.core.pruning import split_logits, validate_biases, validate_kernels

_T = TypeVar("_T")

_CHUNK_BYTES = 256 * 2**20  # memory of one batch of stacked normal-equation matrices


class _NonFinite(ArithmeticError):
    """Raised inside a float32 pass when a value overflowed: the caller redoes it in float64."""


def _finite(*arrays: np.ndarray) -> None:
    if not all(np.isfinite(a).all() for a in arrays):
        raise _NonFinite


def _check_masks(kernels: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(masks) != len(kernels):
        raise ValueError(f"{len(kernels)} kernels but {len(masks)} masks; pass one mask per kernel")
    out = []
    for i, (w, m) in enumerate(zip(kernels, masks)):
        m = np.asarray(m)
        if m.shape != w.shape:
            raise ValueError(f"mask {i} has shape {m.shape}, kernel {i} has {w.shape}; they must match")
        if m.dtype != bool:
            raise ValueError(f"mask {i} must be boolean (True keeps a weight), got dtype {m.dtype}")
        out.append(m)
    if not out[-1].all():
        raise ValueError(
            f"the logit mask prunes {int(np.sum(~out[-1]))} weights, but the logit layer is "
            "never pruned or re-fitted; pass an all-True mask for it"
        )
    return out


def _batched_solve(
    matrix: np.ndarray, sets: np.ndarray, counts: np.ndarray, rhs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve ``matrix[S_c, S_c] z_c = rhs_c`` for a batch of index sets at once.

    Args:
        matrix: (d, d) symmetric positive definite.
        sets: (c, s) row indices per problem, the first ``counts[c]`` of each valid.
        counts: (c,) sizes of the sets.
        rhs: (c, s) right-hand sides (entries past ``counts[c]`` are ignored).

    Returns:
        ``(z, valid)``, both (c, s); padded slots of ``z`` are 0.
    """
    s = sets.shape[1]
    valid = np.arange(s)[None, :] < counts[:, None]
    a = matrix[sets[:, :, None], sets[:, None, :]]
    a *= valid[:, :, None] & valid[:, None, :]
    diag = np.arange(s)
    a[:, diag, diag] += ~valid  # padded slots: identity rows with zero targets
    z = np.linalg.solve(a, (rhs * valid)[..., None])[..., 0]
    return z, valid


def _chunks(order: np.ndarray, sizes: np.ndarray):
    """Consecutive pieces of ``order`` (sorted by ``sizes``) whose stacked s x s systems fit in memory."""
    start = 0
    while start < order.size:
        s = int(sizes[order[min(start + 7, order.size - 1)]])
        chunk = max(1, min(64, _CHUNK_BYTES // (8 * max(s, 1) ** 2)))  # small: little padding
        yield order[start : start + chunk]
        start += chunk


# Columns whose smaller side (kept or pruned rows) is at most this many rows are solved exactly by
# batched factorizations; larger ones by conjugate gradients (see _solve_columns).
_EXACT_SIZE = 128
_CG_TOLERANCE = 3e-4  # relative residual ||H_SS w - r_S|| / ||r_S|| per column
_CG_MAX_ITERATIONS = 500  # a column not converged by then is solved exactly instead


def _solve_columns(
    gram: np.ndarray,
    cross: np.ndarray,
    w0: np.ndarray,
    mask: np.ndarray,
    lam: float,
    dtype: type = np.float32,
    *,
    exact: bool = False,
) -> np.ndarray:
    """Solve every column's ridge problem ``H_SS w_S = r_S`` on its own support; pruned entries are 0.

    Three solvers share the work, by what each column's support costs:

    - columns with the same support (unit pruning keeps the same inputs for every kept unit) share
      one factorization;
    - a column whose support or pruned set is small is solved exactly in a batch
      (:func:`_exact_columns`);
    - the rest (weight pruning around k = 50, where both sides are hundreds of rows and an exact
      solve costs ``min(|S|, |P|)^3`` per column) by conjugate gradients, all columns at once, so
      each iteration is one matrix product with the shared ``H``. Jacobi-preconditioned and started
      from the dense weights, a column stops at a relative residual of ``_CG_TOLERANCE``.

    With ``exact`` every column is solved by factorization.
    """
    d = mask.shape[0]
    # float32 systems: damping keeps them well conditioned, and the products run twice as fast
    hessian = (gram + lam * np.eye(d)).astype(dtype)
    rhs = (cross + lam * w0).astype(dtype)
    _finite(hessian, rhs)  # float32 overflows past 3.4e38: the caller redoes the layer in float64
    out = np.zeros(w0.shape, dtype=np.float64)
    kept = mask.sum(axis=0)
    alone = []
    for cols in _same_support(mask, np.flatnonzero(kept > 0)):
        if cols.size == 1:
            alone.append(cols[0])
            continue
        rows = np.flatnonzero(mask[:, cols[0]])
        out[rows[:, None], cols] = np.linalg.solve(hessian[rows[:, None], rows], rhs[rows[:, None], cols])
    alone = np.asarray(alone, dtype=np.intp)
    large = alone[np.minimum(kept[alone], d - kept[alone]) > (d if exact else _EXACT_SIZE)]
    unconverged = _cg_columns(hessian, rhs, w0.astype(dtype), mask, large, out) if large.size else large
    _exact_columns(hessian, rhs, mask, np.union1d(np.setdiff1d(alone, large), unconverged), out)
    return out * mask


def _same_support(mask: np.ndarray, cols: np.ndarray) -> list[np.ndarray]:
    """``cols`` grouped by identical columns of ``mask``, each group in ascending order."""
    if cols.size == 0:
        return []
    # one bytes key per column (8 rows a byte) makes the comparison cheap
    packed = np.ascontiguousarray(np.packbits(mask[:, cols], axis=0).T)
    _, group = np.unique(packed.view(np.dtype((np.void, packed.shape[1]))).ravel(), return_inverse=True)
    order = np.argsort(group, kind="stable")
    return np.split(cols[order], np.flatnonzero(np.diff(group[order])) + 1)


def _exact_columns(hessian: np.ndarray, rhs: np.ndarray, mask: np.ndarray, cols: np.ndarray, out: np.ndarray) -> None:
    """Solve the columns ``cols`` exactly, writing them into ``out``.

    A column keeping fewer weights than it loses is solved on its support directly. One keeping
    more is solved unconstrained and then projected onto ``w_P = 0`` (P its pruned rows), the
    optimal-brain-surgeon correction ``w = w* - H^-1[:, P] (H^-1[P, P])^-1 w*_P``, which costs
    |P|^3 instead of |S|^3. Both give the same minimizer.
    """
    d = mask.shape[0]
    kept = mask[:, cols].sum(axis=0)
    direct = cols[kept <= d - kept]
    sizes = mask.sum(axis=0)
    for chunk in _chunks(direct[np.argsort(sizes[direct], kind="stable")], sizes):
        s = int(sizes[chunk].max())
        rows = np.argsort(~mask[:, chunk], axis=0, kind="stable")[:s].T  # kept rows first
        z, valid = _batched_solve(hessian, rows, sizes[chunk], rhs[rows, chunk[:, None]])
        out[rows[valid], np.repeat(chunk, valid.sum(axis=1))] = z[valid]
    projected = cols[kept > d - kept]
    if projected.size == 0:
        return
    inverse = np.linalg.inv(hessian.astype(np.float64)).astype(hessian.dtype)
    free = inverse @ rhs[:, projected]  # unconstrained minimizers
    out[:, projected] = free
    pruned = d - sizes
    partial = projected[pruned[projected] > 0]
    position = {c: i for i, c in enumerate(projected)}
    for chunk in _chunks(partial[np.argsort(pruned[partial], kind="stable")], pruned):
        p = int(pruned[chunk].max())
        rows = np.argsort(mask[:, chunk], axis=0, kind="stable")[:p].T  # pruned rows first
        at = np.array([position[c] for c in chunk])
        z, _ = _batched_solve(inverse, rows, pruned[chunk], free[rows, at[:, None]])
        # w = w* - H^-1[:, P] z, one column at a time through a batched matmul
        out[:, chunk] -= np.einsum("dcp,cp->dc", inverse[:, rows], z)


def _cg_columns(
    hessian: np.ndarray, rhs: np.ndarray, start: np.ndarray, mask: np.ndarray, cols: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """Preconditioned conjugate gradients on ``H_SS w_S = r_S`` for the columns ``cols`` at once.

    Writes each converged column into ``out`` and returns the columns that did not converge within
    ``_CG_MAX_ITERATIONS`` (left for an exact solve).
    """
    m = mask[:, cols].astype(hessian.dtype)
    inv_diag = 1.0 / np.diag(hessian)[:, None]
    x = start[:, cols] * m
    b = rhs[:, cols] * m
    r = b - m * (hessian @ x)
    goal = np.square(_CG_TOLERANCE * np.linalg.norm(b, axis=0))
    z = r * inv_diag
    p = z.copy()
    rz = np.einsum("ij,ij->j", r, z)
    for _ in range(_CG_MAX_ITERATIONS + 1):
        done = np.einsum("ij,ij->j", r, r) <= goal
        # Converged columns leave the batch once they are an eighth of it (or all of it): copying
        # the batch each time one column converges would cost more than iterating it along.
        if done.all() or 8 * done.sum() >= done.size:
            out[:, cols[done]] = x[:, done]
            keep = ~done
            cols, m, x, r, p, rz, goal = (
                cols[keep],
                m[:, keep],
                x[:, keep],
                r[:, keep],
                p[:, keep],
                rz[keep],
                goal[keep],
            )
            if cols.size == 0:
                break
        q = hessian @ p
        q *= m
        pq = np.einsum("ij,ij->j", p, q)
        alpha = rz / np.where(pq > 0, pq, np.inf)
        x += alpha * p
        r -= alpha * q
        z = r * inv_diag
        rz_next = np.einsum("ij,ij->j", r, z)
        p *= rz_next / np.where(rz > 0, rz, np.inf)
        p += z
        rz = rz_next
    return cols


def logit_matching_targets(
    h_dense: np.ndarray, keep: np.ndarray, logits_kernel: np.ndarray, dtype: type = np.float32
) -> np.ndarray:
    """Activations of the last hidden layer that reproduce the dense logits through the fixed
    logit kernel using only the kept units: the dense activations plus the minimum-norm change.

    Kept for comparison (``benchmarks/unit_logit_targets.py``): it ignores the ReLU, so the fits use
    the non-negative targets of :mod:`prunelib.core.logit_targets` instead.

    Args:
        h_dense: (n, units) the dense network's last hidden activations.
        keep: (units,) boolean, the units that stay.
        logits_kernel: (units, classes) the logit kernel, never changed.
        dtype: the float type the logit kernel is computed in.

    Returns:
        (n, units) targets, zero for removed units.

    Example:
        >>> import numpy as np
        >>> h, w = np.array([[1.0, 2.0]]), np.array([[1.0], [1.0]])
        >>> logit_matching_targets(h, np.array([True, False]), w, np.float64)
        array([[3., 0.]])
    """
    w = logits_kernel.astype(dtype)
    residual = h_dense[:, ~keep] @ w[~keep]  # what the removed units contributed to the logits
    delta = residual @ np.linalg.pinv(w[keep])
    target = h_dense.copy()
    target[:, keep] += delta
    target[:, ~keep] = 0.0
    return target


def reconstruct(
    kernels: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    x: np.ndarray,
    *,
    damping: float = 0.01,
    biases: Sequence[np.ndarray | None] | None = None,
    logit_targets: bool = True,
    acts: Sequence[Activation | None] | None = None,
    exact: bool = False,
) -> list[np.ndarray]:
    """Re-fit the kept weights of each hidden layer to the dense network's pre-activations.

    Args:
        kernels: the dense kernels in layer order, each (inputs, units); the last feeds the logits.
        masks: boolean keep-masks shaped like the kernels (as :func:`prunelib.core.pruning.compute_masks`
            returns them); the logit mask must keep everything.
        x: calibration images (n, ...) flattened to (n, inputs); n must be at least the largest
            fan-in of a hidden layer, so every problem is determined by data rather than damping.
        damping: ridge strength relative to the mean diagonal of each layer's input Gram matrix.
        biases: per-layer biases (kept as they are; see :func:`reconstruct_with_biases` to fit
            them too) or ``None``.
        logit_targets: fit the last hidden layer to the activations that best reproduce the dense
            logits (see the module docstring) instead of its own dense pre-activations. Used only
            where that layer's activation is ReLU.
        acts: per-layer elementwise activations (:data:`prunelib.core.forward.Activation`); ``None``
            means ReLU for every hidden layer. The last entry (the output's) is not used.
        exact: solve every column by factorization. By default columns whose kept and pruned sets
            are both large are solved by conjugate gradients to a relative residual of 3e-4
            (about 10x faster around k = 50, the same accuracy to within float32 noise).

    Returns:
        New kernels: zero exactly where the masks are False, the logit kernel bit-identical, float
        (an integer kernel comes back as float32 or float64, never rounded). A layer whose mask
        keeps everything and whose inputs are unchanged is returned as it was, so at k = 0 this is
        the identity.

    Raises:
        ValueError: shapes do not chain, masks do not fit or prune the logit layer, ``x`` does not
            fit the first layer, too few calibration samples, a bad ``damping``, or a result that is
            not finite even in float64.

    Example:
        >>> import numpy as np
        >>> from prunelib.core.pruning import weight_masks
        >>> rng = np.random.default_rng(0)
        >>> ws = [rng.standard_normal((8, 6)), rng.standard_normal((6, 3))]
        >>> masks = weight_masks(ws, 50)
        >>> fixed = reconstruct(ws, masks, rng.random((32, 8)))
        >>> bool(np.all(fixed[0][~masks[0]] == 0)), bool(np.array_equal(fixed[1], ws[1]))
        (True, True)
    """
    return _reconstruct(kernels, masks, x, damping, biases, logit_targets, acts, fit_biases=False, exact=exact)[0]


def reconstruct_with_biases(
    kernels: Sequence[np.ndarray],
    biases: Sequence[np.ndarray | None],
    masks: Sequence[np.ndarray],
    x: np.ndarray,
    *,
    damping: float = 0.01,
    pruned_biases: Sequence[np.ndarray | None] | None = None,
    logit_targets: bool = True,
    acts: Sequence[Activation | None] | None = None,
    exact: bool = False,
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Like :func:`reconstruct`, but each kept unit's bias is fitted together with its weights.

    The bias is treated as the weight of an extra, never-pruned input of constant 1 (pulled
    toward the dense bias by the same ridge term). A unit with no kept input (a removed unit) keeps
    its bias in ``pruned_biases`` (default ``biases``): pass unit pruning's zeroed biases
    (:func:`prunelib.core.pruning.prune_biases`) there. ``biases`` are the dense network's (its targets
    are computed with them). A layer without a bias (``None``) gets none.

    Returns:
        ``(kernels, biases)``: kernels as :func:`reconstruct` returns them, and float biases
        (``None`` where given ``None``); the logit layer's are returned as given.

    Example:
        >>> import numpy as np
        >>> from prunelib.core.pruning import unit_masks
        >>> rng = np.random.default_rng(0)
        >>> ws, bs = [rng.standard_normal((8, 6)), rng.standard_normal((6, 3))], [np.ones(6), None]
        >>> new_ws, new_bs = reconstruct_with_biases(ws, bs, unit_masks(ws, 50), rng.random((32, 8)),
        ...                                          acts=[np.tanh, None])
        >>> new_bs[0].shape, new_bs[1] is None
        ((6,), True)
    """
    if biases is None:
        raise ValueError(
            "biases must be a list with one bias (or None) per kernel; use reconstruct() for a model without biases"
        )
    if pruned_biases is not None:
        pruned_biases = list(pruned_biases)
        if len(pruned_biases) != len(biases) or any(
            (p is None) != (b is None) or (p is not None and np.shape(p) != np.shape(b))
            for p, b in zip(pruned_biases, biases)
        ):
            raise ValueError("pruned_biases must match biases: one per layer, None where biases has None, same shapes")
    return _reconstruct(
        kernels,
        masks,
        x,
        damping,
        biases,
        logit_targets,
        acts,
        fit_biases=True,
        pruned_biases=pruned_biases,
        exact=exact,
    )


def check_calibration(
    x: object, kernels: Sequence[np.ndarray], fan_ins: Sequence[int], *, biases_counted: bool = False
) -> np.ndarray:
    """Calibration inputs as a 2-D array ``(n, inputs)``, validated before any work.

    Args:
        x: calibration inputs ``(n, ...)``, flattened per sample.
        kernels: the network's kernels; ``x`` must fit the first.
        fan_ins: the inputs of each layer to be fitted; ``n`` must be at least the largest, so every
            problem is determined by data rather than by damping.
        biases_counted: ``fan_ins`` count a fitted bias as one input (said in the error).

    Raises:
        ValueError: not a numeric array of at least 2 dimensions, the wrong number of features,
            NaN or infinity, or fewer samples than the largest fan-in.

    Example:
        >>> import numpy as np
        >>> check_calibration(np.zeros((4, 2, 3)), [np.ones((6, 2)), np.ones((2, 1))], [6]).shape
        Traceback (most recent call last):
        ...
        ValueError: 4 calibration samples are too few: a hidden layer has 6 inputs, so pass at least 6 samples
    """
    x = np.asarray(x)
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"calibration inputs must be a numeric array (n, ...), got shape {x.shape}")
    x = x.reshape(len(x), -1)
    if x.shape[1] != kernels[0].shape[0]:
        raise ValueError(f"calibration inputs have {x.shape[1]} features, the first kernel takes {kernels[0].shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("calibration inputs contain NaN or infinity")
    need = max(fan_ins, default=0)
    if len(x) < need:
        raise ValueError(
            f"{len(x)} calibration samples are too few: a hidden layer has {need} inputs"
            f"{' (its bias counted as one)' if biases_counted else ''}, so pass at least {need} "
            "samples"
        )
    return x


def _float_dtype(w: np.ndarray) -> np.dtype:
    """The dtype a re-fitted kernel comes back in: its own if float, else a float that holds it."""
    return w.dtype if np.issubdtype(w.dtype, np.floating) else np.result_type(w.dtype, np.float32)


def _reconstruct(
    kernels,
    masks,
    x,
    damping,
    biases,
    logit_targets,
    acts,
    *,
    fit_biases: bool,
    pruned_biases=None,
    exact: bool = False,
):
    kernels = validate_kernels(kernels)
    masks = _check_masks(kernels, masks)
    _check_options(damping, exact)
    x = check_calibration(x, kernels, [w.shape[0] + fit_biases for w in kernels[:-1]], biases_counted=fit_biases)
    biases = validate_biases(kernels, biases)
    acts = forward.per_layer(acts, kernels, "activations")
    if any(a is not None and not callable(a) for a in acts):
        raise ValueError("activations must be callables on numpy arrays (or None for ReLU)")
    return _float32_then_float64(
        lambda dtype: _fit(
            kernels,
            masks,
            x.astype(dtype),
            damping,
            biases,
            logit_targets,
            acts,
            fit_biases,
            dtype,
            pruned_biases or biases,
            exact,
        ),
        "reconstruction is not finite even in float64: the calibration inputs or weights "
        "are too large (scale the inputs, e.g. to [0, 1])",
    )


def _check_options(damping: float, exact: bool) -> None:
    if not (np.isfinite(damping) and damping > 0):
        raise ValueError(f"damping must be a positive number, got {damping!r}")
    if not isinstance(exact, bool):
        raise ValueError(f"exact must be True or False, got {exact!r}")


def _float32_then_float64(fit: Callable[[type], _T], failure: str) -> _T:
    """``fit(np.float32)``, or ``fit(np.float64)`` where float32 overflowed anywhere (``fit`` raised
    _NonFinite): float32 first, because it gives the study's numbers."""
    for dtype in (np.float32, np.float64):
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                return fit(dtype)
            except _NonFinite:
                continue
    raise ValueError(failure)


def _fit(kernels, masks, x, damping, biases, logit_targets, acts, fit_biases, dtype, pruned_biases, exact):
    hidden, logits = split_logits(kernels)
    out: list[np.ndarray] = []
    out_b: list[np.ndarray | None] = []
    h_dense = h_pruned = x
    changed = False
    _finite(x)
    for i, (w, m) in enumerate(zip(hidden, masks)):
        act = acts[i]
        given = biases[i]
        b = np.zeros(w.shape[1], dtype) if given is None else np.asarray(given, dtype)
        w32 = w.astype(dtype)
        pre_dense = forward.layer(h_dense, w32, b, relu=False)
        _finite(pre_dense)
        if not changed and m.all():
            out.append(np.array(w, dtype=_float_dtype(w), copy=True))
            out_b.append(None if given is None else np.array(given, dtype=_float_dtype(np.asarray(given))))
            h_dense = h_pruned = _activate(act, pre_dense)
            continue
        fit_b = fit_biases and given is not None
        target = pre_dense if fit_b else pre_dense - b
        last = i == len(hidden) - 1
        if logit_targets and last and act is None:
            keep = m.any(axis=0)
            if keep.any() and not keep.all():
                h_last = forward.relu(pre_dense).astype(np.float64)
                wanted = nonnegative_targets(h_last, keep, np.asarray(logits, np.float64))
                target = relu_layer_targets(wanted, pre_dense).astype(dtype)
                target = target if fit_b else target - b
        inputs, mask, w0 = h_pruned, m, w.astype(np.float64) * m
        if fit_b:
            # the bias is one more input, constant 1, kept for every unit that has any kept input
            inputs = np.hstack([h_pruned, np.ones((len(h_pruned), 1), dtype)])
            mask = np.vstack([m, m.any(axis=0)])
            w0 = np.vstack([w0, np.asarray(given, np.float64)[None]])
        fitted = _fit_layer(inputs, target, w0, mask, damping, dtype, exact)
        new = np.where(m, fitted[: len(w)], 0.0).astype(_float_dtype(w))
        # A kept weight must stay a kept (nonzero) weight, or the measured sparsity would drift.
        collapsed = m & (new == 0) & (w != 0)
        new[collapsed] = w[collapsed]
        out.append(new)
        if fit_b:
            new_b = np.where(mask[-1], fitted[-1], np.asarray(pruned_biases[i], np.float64))
            new_b = new_b.astype(_float_dtype(np.asarray(given)))
            out_b.append(new_b)
            b = new_b.astype(dtype)
        else:
            out_b.append(None if given is None else np.array(given, copy=True))
        changed = True
        h_dense = _activate(act, pre_dense)
        if act is None:
            h_pruned = forward.layer(h_pruned, new.astype(dtype), b, relu=True)
        else:
            h_pruned = forward.apply(act, forward.layer(h_pruned, new.astype(dtype), b, relu=False))
        _finite(h_dense, h_pruned)
    out_b.append(None if biases[-1] is None else np.array(biases[-1], copy=True))
    return out + [np.array(logits, copy=True)], out_b


def _fit_layer(
    inputs: np.ndarray, targets: np.ndarray, w0: np.ndarray, mask: np.ndarray, damping: float, dtype: type, exact: bool
) -> np.ndarray:
    """The ridge fit of one layer's kept weights (float64, zero off ``mask``); raises _NonFinite."""
    gram = (inputs.T @ inputs).astype(np.float64)
    cross = (inputs.T @ targets).astype(np.float64)
    return _fit_normal(gram, cross, w0, mask, damping, dtype, exact)


def _fit_normal(
    gram: np.ndarray, cross: np.ndarray, w0: np.ndarray, mask: np.ndarray, damping: float, dtype: type, exact: bool
) -> np.ndarray:
    _finite(gram, cross)
    mean_diag = float(np.mean(np.diag(gram)))
    lam = damping * (mean_diag if mean_diag > 0 else 1.0)
    fitted = _solve_columns(gram, cross, w0, mask, lam, dtype, exact=exact)
    _finite(fitted)
    return fitted


def fit_normal(
    gram: np.ndarray,
    cross: np.ndarray,
    kernel: np.ndarray,
    mask: np.ndarray,
    *,
    damping: float = 0.01,
    exact: bool = False,
) -> np.ndarray:
    """:func:`fit_layer` from the normal equations: ``gram = inputs^T inputs``, ``cross = inputs^T targets``.

    For inputs too many to hold at once (a convolution's patches: one row per image and output
    position), whose two products are accumulated batch by batch; the same fit as :func:`fit_layer`.

    Returns:
        The fitted kernel in float64, exactly zero where ``mask`` is False.

    Raises:
        ValueError: shapes that do not fit, a mask that is not boolean, a bad ``damping``, or a
            result that is not finite even in float64.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x, w = rng.random((64, 8)), rng.standard_normal((8, 3))
        >>> mask = np.abs(w) > 0.5
        >>> a, b = fit_normal(x.T @ x, x.T @ (x @ w), w, mask), fit_layer(x, x @ w, w, mask)
        >>> bool(np.allclose(a, b, atol=1e-4))
        True
    """
    gram, cross, kernel, mask = (np.asarray(a) for a in (gram, cross, kernel, mask))
    d = kernel.shape[0] if kernel.ndim == 2 else -1
    if kernel.ndim != 2 or gram.shape != (d, d) or cross.shape != kernel.shape or mask.shape != kernel.shape:
        raise ValueError(
            f"gram {gram.shape}, cross {cross.shape}, kernel {kernel.shape} and mask {mask.shape} must be "
            "(d, d), (d, units), (d, units) and (d, units)"
        )
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean (True keeps a weight), got dtype {mask.dtype}")
    _check_options(damping, exact)
    return _float32_then_float64(
        lambda dtype: _fit_normal(
            gram.astype(np.float64),
            cross.astype(np.float64),
            kernel.astype(np.float64) * mask,
            mask,
            damping,
            dtype,
            exact,
        ),
        "the layer fit is not finite even in float64: scale the inputs (e.g. to [0, 1])",
    )


def fit_layer(
    inputs: np.ndarray,
    targets: np.ndarray,
    kernel: np.ndarray,
    mask: np.ndarray,
    *,
    damping: float = 0.01,
    exact: bool = False,
) -> np.ndarray:
    """Least-squares fit of one layer's kept weights toward ``targets``, the building block of
    :func:`reconstruct` for callers that choose masks layer by layer (post-training pruning).

    Solves, per column ``j`` on its kept rows ``S``,
    ``min ||inputs[:, S] w - targets[:, j]||^2 + lam ||w - kernel[S, j]||^2`` with ``lam`` =
    ``damping`` times the mean diagonal of ``inputs^T inputs``.

    Args:
        inputs: (n, d) the layer's inputs (as the pruned network computes them).
        targets: (n, units) the pre-activations to reproduce (the dense network's).
        kernel: (d, units) the weights the ridge term pulls toward.
        mask: (d, units) boolean, True where a weight is kept.
        damping: ridge strength relative to the mean diagonal of the Gram matrix.
        exact: factorize every column instead of conjugate gradients for the large ones.

    Returns:
        The fitted kernel in float64, exactly zero where ``mask`` is False.

    Raises:
        ValueError: shapes that do not fit, a mask that is not boolean, a bad ``damping``, or a
            result that is not finite even in float64.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x, w = rng.random((64, 8)), rng.standard_normal((8, 3))
        >>> mask = np.abs(w) > 0.5
        >>> fitted = fit_layer(x, x @ w, w, mask)
        >>> bool(np.all(fitted[~mask] == 0))
        True
    """
    inputs, targets, kernel, mask = (np.asarray(a) for a in (inputs, targets, kernel, mask))
    if inputs.ndim != 2 or targets.ndim != 2 or len(inputs) != len(targets):
        raise ValueError(f"inputs {inputs.shape} and targets {targets.shape} must be 2-D with the same rows")
    if kernel.shape != (inputs.shape[1], targets.shape[1]) or mask.shape != kernel.shape:
        raise ValueError(
            f"kernel {kernel.shape} and mask {mask.shape} must both be (inputs, units) = "
            f"{(inputs.shape[1], targets.shape[1])}"
        )
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean (True keeps a weight), got dtype {mask.dtype}")
    _check_options(damping, exact)
    return _float32_then_float64(  # w0 inside: an infinite pruned weight times 0 is caught there
        lambda dtype: _fit_layer(
            inputs.astype(dtype), targets.astype(dtype), kernel.astype(np.float64) * mask, mask, damping, dtype, exact
        ),
        "the layer fit is not finite even in float64: scale the inputs (e.g. to [0, 1])",
    )


def _activate(act: Activation | None, z: np.ndarray) -> np.ndarray:
    return forward.relu(z) if act is None else forward.apply(act, z)


def calibration_set(images: np.ndarray, n: int = 4096, seed: int = 0) -> np.ndarray:
    """``n`` training images drawn without replacement by a seeded permutation.

    Raises:
        ValueError: ``n`` is not a positive integer no larger than the number of images.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < n <= len(images):
        raise ValueError(f"calibration size must be an integer in [1, {len(images)}], got {n!r}")
    return images[np.random.default_rng(seed).permutation(len(images))[:n]]


def obs_weight_masks(kernels: Sequence[np.ndarray], k: float, x: np.ndarray, damping: float = 0.01) -> list[np.ndarray]:
    """Weight masks chosen by optimal-brain-surgeon saliency instead of magnitude.

    Per hidden layer, weight ``(i, j)`` scores ``w_ij^2 / [H^-1]_ii`` with ``H = X^T X + lam I`` the
    Hessian of the layer's reconstruction error on the dense network's inputs ``X``: the error that
    removing it alone would cause after the others compensate. Exactly ``round(k/100 * size)``
    weights per hidden layer are masked out, ties broken by position; the logit mask keeps all.
    """
    from prunelib.core.pruning import count_to_prune, smallest, validate_k

    k = validate_k(k)
    kernels = validate_kernels(kernels)
    hidden, logits = split_logits(kernels)
    h = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    masks = []
    for w in hidden:
        gram = (h.T @ h).astype(np.float64)
        lam = damping * (float(np.mean(np.diag(gram))) or 1.0)
        inv_diag = np.diag(np.linalg.inv(gram + lam * np.eye(len(gram))))
        scores = np.square(w.astype(np.float64)) / inv_diag[:, None]
        masks.append(~smallest(scores.ravel(), count_to_prune(w.size, k)).reshape(w.shape))
        h = forward.layer(h, w.astype(np.float32), relu=True)
    return masks + [np.ones(logits.shape, dtype=bool)]
