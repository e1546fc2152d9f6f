"""Network targets for post-training pruning: hidden layers re-fitted toward the dense logits, masks fixed.

SparseLLM's alternation (Bai et al. 2024) over auxiliary pre- and post-activations per hidden layer,
with the frozen logit layer's distance to the dense logits as the last term, run after the
layer-by-layer pass of :mod:`prunelib.core.post_training`.
"""

from __future__ import annotations

import numpy as np

from prunelib.core import forward
from prunelib.core.layer_fit import fit, float64, with_bias_input


def network_rounds(hidden, biases, masks, logits, logit_bias, x, dense_logits, rounds, damping, history=None):
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
    ws, bs = [w.astype(np.float64) for w in hidden], [float64(b) for b in biases]
    z, a, h = [], [], x
    for w, b in zip(ws, bs):
        z.append(forward.layer(h, w, b, relu=False))
        h = forward.relu(z[-1])
        a.append(h)
    top, top_b = logits.astype(np.float64), float64(logit_bias)
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
            xb, wb = with_bias_input(inputs[i], w, b)
            mb = masks[i] if b is None else np.vstack([masks[i], np.ones((1, w.shape[1]), bool)])
            fitted = fit(xb, z[i], wb, mb, damping)
            ws[i], bs[i] = (fitted, None) if b is None else (fitted[:-1], fitted[-1])
        if history is not None:
            history.append(network_objective(ws, bs, top, top_b, x, a, z, dense_logits))
    return (
        [w.astype(old.dtype) for w, old in zip(ws, hidden)],
        [None if b is None else b.astype(old.dtype) for b, old in zip(bs, biases)],
    )


def network_objective(ws, bs, top, top_b, x, a, z, dense_logits) -> float:
    """The alternation's objective at its current variables (it never rises from round to round)."""
    inputs = [x, *a[:-1]]
    total = sum(
        float(np.sum(np.square(forward.layer(i, w, b, relu=False) - zz))) for i, w, b, zz in zip(inputs, ws, bs, z)
    )
    total += sum(float(np.sum(np.square(aa - forward.relu(zz)))) for aa, zz in zip(a, z))
    return total + float(np.sum(np.square(forward.layer(a[-1], top, top_b, relu=False) - dense_logits)))
