"""The MLP's forward pass in numpy: the one place that knows "ReLU between layers, linear logits".

Evaluation, reconstruction and inference all run the network through these functions. Kernels
are (inputs, units) in layer order; the last one feeds the logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

Activation = Callable[[np.ndarray], np.ndarray]
"""An elementwise activation on a numpy array; ``None`` in a list of them means the default
(ReLU for a hidden layer, none for the last)."""

CHUNK = 4096
"""Rows per block of :func:`logits`: a block's activations stay in cache, which measured faster
than one block of all rows (docs/benchmarks.md, "Forward pass")."""


def relu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The activation between hidden layers: ``max(x, 0)`` elementwise (into ``out`` if given)."""
    return np.maximum(x, 0, out=out)


_activation = relu  # ``layer``'s flag of the same name hides the function inside it


def layer(h: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None = None, *, relu: bool) -> np.ndarray:
    """One Dense layer: ``h @ kernel (+ bias)``, then ReLU if ``relu`` (a new array)."""
    out = h @ kernel
    if bias is not None:
        out += bias
    return _activation(out, out=out) if relu else out


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x.reshape(len(x), int(np.prod(x.shape[1:])))


def per_layer(values: Sequence | None, kernels: Sequence[np.ndarray], what: str) -> list:
    """``values`` as a list of one entry per kernel; ``None`` means ``None`` for every layer.

    Raises:
        ValueError: a list of another length (``what`` names it: "biases", "activations", ...).
    """
    values = list(values) if values is not None else [None] * len(kernels)
    if len(values) != len(kernels):
        raise ValueError(f"{len(kernels)} kernels but {len(values)} {what}; give one per kernel (None for the default)")
    return values


def _biases(kernels: Sequence[np.ndarray], biases: Sequence[np.ndarray | None] | None) -> list:
    return per_layer(biases, kernels, "biases")


def _acts(kernels: Sequence[np.ndarray], acts: Sequence[Activation | None] | None) -> list:
    return per_layer(acts, kernels, "activations")


def apply(activation: Activation, z: np.ndarray) -> np.ndarray:
    """``activation(z)`` as an array of ``z``'s shape and dtype.

    Raises:
        ValueError: the activation changed the shape (it is not elementwise).
    """
    out = np.asarray(activation(z), dtype=z.dtype)
    if out.shape != z.shape:
        raise ValueError(
            f"activation {activation!r} turned shape {z.shape} into {out.shape}; "
            "only elementwise activations are supported"
        )
    return out


def activations(
    kernels: Sequence[np.ndarray],
    x: np.ndarray,
    biases: Sequence[np.ndarray | None] | None = None,
    acts: Sequence[Activation | None] | None = None,
) -> Iterator[np.ndarray]:
    """Each layer's output in turn: the hidden layers' activations (ReLU by default), then the logits.

    Args:
        x: inputs (n, ...) whose trailing axes flatten to the first kernel's inputs.
        acts: per-layer elementwise activations; ``None`` (or a ``None`` entry) keeps the default,
            ReLU for hidden layers and none for the last.

    Example:
        >>> import numpy as np
        >>> ws = [np.ones((2, 3), np.float32), np.ones((3, 1), np.float32)]
        >>> *_, out = activations(ws, np.array([[1.0, -2.0]], np.float32), acts=[np.tanh, None])
        >>> round(float(out[0, 0]), 4)  # 3 * tanh(-1)
        -2.2848
    """
    biases = _biases(kernels, biases)
    acts = _acts(kernels, acts)
    h = _flat(x)
    for i, (w, b, f) in enumerate(zip(kernels, biases, acts)):
        # the default path is the study's: the same operations, so the same bits
        h = layer(h, w, b, relu=f is None and i < len(kernels) - 1)
        if f is not None:
            h = apply(f, h)
        yield h


def logits(
    kernels: Sequence[np.ndarray],
    x: np.ndarray,
    biases: Sequence[np.ndarray | None] | None = None,
    chunk: int = CHUNK,
    acts: Sequence[Activation | None] | None = None,
) -> np.ndarray:
    """The network's logits (n, classes) for inputs ``x`` (n, ...), computed in blocks of ``chunk`` rows.

    ``acts`` as in :func:`activations` (an output activation there makes these probabilities).
    """
    biases = _biases(kernels, biases)
    acts = _acts(kernels, acts)
    x = _flat(x)
    out = np.empty((len(x), kernels[-1].shape[1]), np.result_type(x.dtype, kernels[-1].dtype))
    for start in range(0, len(x), chunk):
        for h in activations(kernels, x[start : start + chunk], biases, acts):  # noqa: B007 - h is used after
            pass  # only the last layer's output, the logits, is kept
        out[start : start + chunk] = h
    return out
