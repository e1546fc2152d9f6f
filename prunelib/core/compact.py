"""Make pruning pay: drop dead units (compaction) and count what still computes (accounting).

A hidden unit is *dead* when it cannot influence the logits: its incoming column is all zero
(with a zero or absent bias it outputs relu(0) = 0), or its outgoing row is all zero. Removing a
dead unit removes its column and the matching row of the next layer, which may make more units
dead, so :func:`live_units` iterates to a fixed point. The input pixels and the 10 logits are
never removed, so a compact model is a drop-in replacement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prunelib.core.forward import per_layer
from prunelib.core.pruning import DEFAULT_KS, validate_biases, validate_kernel_shapes, validate_kernels


def live_units(kernels: Sequence[np.ndarray], biases: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray]:
    """Boolean masks over each hidden layer's units: ``True`` where the unit can affect the output.

    Args:
        kernels: (inputs, units) kernels in layer order, the last feeding the logits.
        biases: per-layer biases or ``None``; a unit with a nonzero bias is never dead by its
            column alone (it outputs a constant the next layer may use).

    Raises:
        ValueError: the kernels do not chain (:func:`prunelib.core.pruning.validate_kernel_shapes`) or
            the biases do not match them.
    """
    kernels = validate_kernel_shapes(kernels)
    biases = _bias_shapes(kernels, biases)
    live = [np.ones(w.shape[1], dtype=bool) for w in kernels[:-1]]
    changed = True
    while changed:
        changed = False
        for i in range(len(live)):
            w_in = kernels[i][_rows(live, i, kernels[i].shape[0])][:, live[i]]
            has_input = np.any(w_in != 0, axis=0)
            if biases[i] is not None:
                has_input |= biases[i][live[i]] != 0
            w_out = kernels[i + 1][live[i]]
            if i + 1 < len(live):
                w_out = w_out[:, live[i + 1]]
            has_output = np.any(w_out != 0, axis=1)
            keep = has_input & has_output
            if not keep.all():
                live[i][np.flatnonzero(live[i])[~keep]] = False
                changed = True
    return live


def _bias_shapes(kernels: list[np.ndarray], biases) -> list:
    """Biases as a list, one per kernel, each None or (units,) (values unchecked, like the kernels')."""
    biases = per_layer(biases, kernels, "biases")
    for i, (w, b) in enumerate(zip(kernels, biases)):
        if b is not None and np.shape(b) != (w.shape[1],):
            raise ValueError(f"bias {i} has shape {np.shape(b)}; kernel {i} has {w.shape[1]} units")
    return [None if b is None else np.asarray(b) for b in biases]


def _rows(live: list[np.ndarray], i: int, n_inputs: int) -> np.ndarray:
    return live[i - 1] if i > 0 else np.ones(n_inputs, dtype=bool)


def compact_kernels(
    kernels: Sequence[np.ndarray], biases: Sequence[np.ndarray | None] | None = None
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Physically smaller kernels (and biases) computing the same logits.

    Returns:
        ``(kernels, biases)`` with dead units' columns and the next layer's matching rows removed.
        The first kernel keeps all its input rows and the last keeps all its output columns.

    Raises:
        ValueError: the kernels are invalid (:func:`prunelib.core.pruning.validate_kernels`: 2-D, real,
            finite, chaining) or the biases are (one 1-D array or None per kernel, one entry per
            unit, finite).
    """
    kernels = validate_kernels(kernels)
    biases = validate_biases(kernels, biases)
    live = live_units(kernels, biases)
    for mask in live:
        # A layer with no live unit keeps one, so shapes stay valid; it cannot affect the logits.
        if not mask.any():
            mask[0] = True
    out_k, out_b = [], []
    for i, (w, b) in enumerate(zip(kernels, biases)):
        rows = _rows(live, i, w.shape[0])
        cols = live[i] if i < len(live) else np.ones(w.shape[1], dtype=bool)
        w = np.ascontiguousarray(w[rows][:, cols])
        out_k.append(w)
        out_b.append(None if b is None else b[cols].copy())
    return out_k, out_b


@dataclass(frozen=True)
class Accounting:
    """What a pruned network costs, against its dense original."""

    total_weights: int
    zero_weights: int
    effective_weights: int  # nonzero weights between live units: the ones that can matter
    macs_per_sample: int  # multiply-accumulates one image needs after compaction/sparsity
    dense_macs_per_sample: int

    @property
    def sparsity(self) -> float:
        return 100.0 * self.zero_weights / self.total_weights

    @property
    def mac_ratio(self) -> float:
        """Dense MACs over remaining MACs: the physical limit of any speedup."""
        return self.dense_macs_per_sample / max(self.macs_per_sample, 1)


def account(kernels: Sequence[np.ndarray], biases: Sequence[np.ndarray | None] | None = None) -> Accounting:
    """Count zero, effective and multiply-accumulate work for pruned ``kernels``.

    Raises:
        ValueError: the kernels do not chain or the biases do not match them.
    """
    kernels = validate_kernel_shapes(kernels)
    live = live_units(kernels, biases)
    total = sum(w.size for w in kernels)
    effective = 0
    for i, w in enumerate(kernels):
        cols = live[i] if i < len(live) else np.ones(w.shape[1], dtype=bool)
        effective += int(np.count_nonzero(w[_rows(live, i, w.shape[0])][:, cols]))
    return Accounting(
        total_weights=total,
        zero_weights=total - sum(int(np.count_nonzero(w)) for w in kernels),
        effective_weights=effective,
        macs_per_sample=effective,  # one MAC per surviving weight, with zeros skipped
        dense_macs_per_sample=total,
    )


def accounting_table(
    kernels: Sequence[np.ndarray], methods: Sequence[str] = ("weight", "unit"), ks: Sequence[float] = DEFAULT_KS
):
    """Tidy table of :func:`account` for every (method, k): what pruning really removes.

    Columns: method, k, sparsity, zero_weights, effective_weights, macs_per_sample, mac_ratio.
    """
    import pandas as pd

    from prunelib.core import pruning

    rows = []
    for method in methods:
        for k in ks:
            a = account(pruning.prune(kernels, k, method))
            rows.append(
                {
                    "method": method,
                    "k": float(k),
                    "sparsity": a.sparsity,
                    "zero_weights": a.zero_weights,
                    "effective_weights": a.effective_weights,
                    "macs_per_sample": a.macs_per_sample,
                    "mac_ratio": a.mac_ratio,
                }
            )
    return pd.DataFrame(rows)
