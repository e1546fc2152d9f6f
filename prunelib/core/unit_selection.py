"""Which whole units post-training unit pruning keeps, and what the last hidden layer must output then.

Units are chosen on the dense network from the last hidden layer backward, each layer judged by the
units the next one keeps: by column norm, by activation (``||h_j|| * ||W_next[j, kept]||``) or by
greedy group OBS over the next layer's kept input rows. The last hidden layer's next kernel, the
logits, is never re-fitted, so its kept units must reproduce the logits on their own with
activations a ReLU can give: :func:`logit_targets` fits non-negative activations to them (one small
non-negative least-squares problem per calibration row, solved together by FISTA), and
:func:`greedy_logit_units` picks that layer's first units by how many dense predictions such a fit
keeps.
"""

from __future__ import annotations

import numpy as np

from prunelib.core.layer_fit import dense_activations, float64, ridge
from prunelib.core.logit_targets import centred, logit_targets, nonnegative_rows
from prunelib.core.pruning import smallest

__all__ = ["centred", "greedy_logit_units", "greedy_obs_rows", "logit_targets", "nonnegative_rows", "unit_keeps"]


def unit_keeps(
    selection: str, hidden: list, biases: list, logits: np.ndarray, x: np.ndarray, counts: list[int], damping: float
) -> list[np.ndarray]:
    """Boolean keep-vector of every hidden layer's units, chosen on the dense network from the last
    hidden layer backward, so that each layer is judged by the units the next one keeps.

    ``norm`` ranks column norms; ``activation`` ranks ``||h_j|| * ||W_next[j, kept]||``; ``obs``
    removes units by greedy OBS over the next layer's kept columns (:func:`greedy_obs_rows`), and in
    the last hidden layer, whose next kernel (the logits) is never re-fitted, picks units by how well
    non-negative activations of them reproduce the dense predictions (:func:`greedy_logit_units`).
    """
    acts = dense_activations([*hidden, logits], biases, x)[:-1]
    nexts = [w.astype(np.float64) for w in hidden[1:]] + [np.asarray(logits, np.float64)]
    keeps: list[np.ndarray] = [np.ones(0, bool)] * len(hidden)
    kept_next = np.ones(logits.shape[1], dtype=bool)
    for i in reversed(range(len(hidden))):
        w, h, nxt, count = hidden[i], acts[i], nexts[i][:, kept_next], counts[i]
        keep = np.ones(w.shape[1], dtype=bool)
        if count and selection == "obs" and i == len(hidden) - 1:
            keep = greedy_logit_units(h, nxt, float64(biases[-1]), w.shape[1] - count)
        elif count and selection == "obs":
            keep[greedy_obs_rows(h, nxt, damping, count)] = False
        elif count:
            scores = np.linalg.norm(w, axis=0)
            if selection == "activation":
                scores = np.linalg.norm(h, axis=0) * np.linalg.norm(nxt, axis=1)
            keep = ~smallest(scores, count)
        keeps[i] = kept_next = keep
    return keeps


def greedy_obs_rows(h: np.ndarray, nxt: np.ndarray, damping: float, count: int) -> np.ndarray:
    """The first ``count`` rows greedy group OBS removes from the next layer's inputs, in order.

    Removing row ``j`` of ``V`` (= unit ``j``) while the other rows compensate costs
    ``||V_j||^2 / [H^-1]_jj`` (``H = h^T h + lam I``); after each removal the inverse and the rows are
    updated (Frantar & Alistarh 2022's row-wise OBS, applied to the shared input Hessian).
    """
    gram = h.T @ h
    inv = np.linalg.inv(gram + ridge(gram, damping) * np.eye(len(gram)))
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


def greedy_logit_units(
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
    h, v = h_dense[:rows], centred(logit_kernel)
    z = h @ v
    bias = 0.0 if logit_bias is None else logit_bias  # it cancels in the fit, not in the argmax
    wanted = np.argmax(z + bias, axis=1)
    chosen: list[int] = []
    for _ in range(min(keep_count, v.shape[1])):
        cand = np.setdiff1d(np.arange(len(v)), chosen)
        vs = np.concatenate(
            [np.broadcast_to(v[chosen], (len(cand), len(chosen), v.shape[1])), v[cand][:, None]], axis=1
        )
        fits = nonnegative_rows(z, vs, iters=30)
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
