"""What the last hidden layer must output when the logits cannot change: non-negative logit targets.

The logit kernel is never pruned or re-fitted, so when units of the last hidden layer are removed,
the kept ones must reproduce the dense logits on their own, with activations a ReLU can give.
:func:`logit_targets` fits non-negative activations of the kept units to the dense logits (one small
non-negative least-squares problem per calibration row, solved together by FISTA), up to a shift per
row, which softmax and argmax ignore. Both the challenge's unit + lstsq
(:mod:`prunelib.core.reconstruct`) and the post-training unit methods
(:mod:`prunelib.core.unit_selection`) fit that layer to these targets. Pure numpy, no other prunelib
import, so either can use it.
"""

from __future__ import annotations

import numpy as np


def nonnegative_rows(z: np.ndarray, v: np.ndarray, iters: int) -> np.ndarray:
    """Rows ``a >= 0`` minimizing ``||a v - z||^2``, one small non-negative least-squares problem per
    row, all solved together by FISTA (accelerated projected gradient) from the clipped unconstrained
    solution (a start near the answer matters: the answers can be far larger than the activations).

    ``v`` may carry leading batch dimensions, ``(..., m, c)`` with ``z`` ``(n, c)``: each batch entry
    is a separate problem, and the result is ``(..., n, m)``.

    Example:
        >>> import numpy as np
        >>> v = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> nonnegative_rows(np.array([[2.0, -3.0]]), v, iters=50).tolist()  # -3 is out of reach
        [[2.0, 0.0]]
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


def centred(v: np.ndarray) -> np.ndarray:
    """``v`` minus its mean over the last axis."""
    # softmax and argmax ignore a shift of all the logits of a row, so only their centred part counts
    return v - v.mean(axis=-1, keepdims=True)


def logit_targets(h_dense: np.ndarray, keep: np.ndarray, logit_kernel: np.ndarray, iters: int = 300) -> np.ndarray:
    """Last-hidden activations that reproduce the dense logits through the fixed logit kernel as
    closely as non-negative (post-ReLU) activations of the kept units can, up to a shift per row.

    The minimum-norm change of :func:`prunelib.core.reconstruct.logit_matching_targets` ignores the
    ReLU: with few kept units it asks for negative activations, and clipping them loses the logits.
    """
    v = centred(logit_kernel)
    out = np.zeros_like(h_dense)
    out[:, keep] = nonnegative_rows(h_dense @ v, v[keep], iters)
    return out


def relu_layer_targets(wanted: np.ndarray, pre_dense: np.ndarray) -> np.ndarray:
    """Pre-activation targets of a ReLU layer whose activations should be ``wanted`` (>= 0).

    Where ``wanted`` is positive the pre-activation must hit it; where it is zero any pre-activation
    at or below zero will do, so the dense one is kept if it is, else 0. "Zero" allows for the
    solver's tolerance: FISTA stops at about 1e-7 of the scale above an exact 0, and reading that as
    a positive target would pull a unit the dense network holds far below zero up to 0.

    Example:
        >>> import numpy as np
        >>> relu_layer_targets(np.array([[2.0, 1e-12, 0.0]]), np.array([[1.0, -3.0, 4.0]])).tolist()
        [[2.0, -3.0, 0.0]]
    """
    wanted = np.asarray(wanted)
    scale = float(np.max(np.abs(wanted))) if wanted.size else 0.0
    tol = np.sqrt(np.finfo(wanted.dtype if wanted.dtype.kind == "f" else np.float64).eps) * scale
    return np.where(wanted > tol, wanted, np.minimum(pre_dense, 0.0))
