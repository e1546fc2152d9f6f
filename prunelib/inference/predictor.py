"""Fast inference with a pruned MLP: one entry point that runs the fastest path for the batch.

:class:`Predictor` takes a pruned network's kernels, removes its dead units
(:func:`prunelib.core.compact.compact_kernels`: unit pruning's removed units and every unit weight
pruning cut off), and keeps three ways to compute the same logits:

* ``blas``: a numpy chain of dense matmuls over the compacted kernels. Unit pruning's compact
  network is small and dense, so this is its fast path at every batch size (no framework call
  overhead at batch 1).
* ``sparse``: the hidden layers as CSR in one fused, compiled pass per tile of samples
  (:class:`prunelib.inference.kernels.CsrChain`, the kernel :class:`~prunelib.inference.sparse.SparseMLP`
  runs too), then the logit layer as one dense matmul. Weight pruning's candidate for large
  batches.
* ``csr``: the same CSR layers through ``scipy.sparse``, one matrix-vector product per layer;
  the cheapest call for a single image.

Which one is fastest depends on the sparsity, the batch size and the machine, so the first call
in each batch-size bucket times every path on that very batch (the fastest of a few calls each)
and remembers the winner
(:attr:`Predictor.chosen`); ``benchmarks/inference.py`` records what each path costs. All paths
agree to float32 rounding (tested).

One input policy on every path (:func:`prunelib.core.pruning.validate_inputs`): a batch ``(n, ...)``
(one sample is ``x[None]``; a 1-D array is refused), real, and finite. NaN or inf inputs are a
``ValueError``, never a path-dependent answer: the sparse paths skip pruned weights, so they
would give finite logits where the dense path gives NaN. An empty batch gives ``(0, classes)``.
Networks with biases run on ``blas`` and ``csr``; the ``sparse`` kernel is bias-free and is
refused for them. The activation is ReLU between layers and linear logits unless ``acts`` names
others (one elementwise numpy function per layer, the last one the output's: a softmax or a
sigmoid turns the logits into probabilities); such a network runs on ``blas`` and ``csr`` as given,
since the ReLU compaction (a unit with no input outputs 0) does not hold for it:
:func:`prunelib.predictor_from_model` hands it over already compacted, constants folded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from prunelib.core import forward
from prunelib.core.compact import compact_kernels
from prunelib.core.pruning import validate_biases, validate_inputs, validate_kernels
from prunelib.inference.kernels import CsrChain, csr_t, from_tiles, to_tiles

BUCKETS = (1, 32, 1024)
"""Upper ends of the batch-size buckets a path is chosen for (larger batches form the last one)."""

PROBE_ROUNDS = 5
"""Timed calls per path on a bucket's first batch, in rotating order; the fastest call counts. A
single call of a small batch lasts a fraction of a millisecond, where one timing is mostly noise."""

PROBE_SECONDS = 0.05
"""Once the probes have taken this long, stop after the current round: a batch that large is timed
well by few calls, and the probe's cost would otherwise add up on the first call."""


def blas_forward(
    kernels: Sequence[np.ndarray],
    biases: Sequence[np.ndarray | None] | None = None,
    acts: Sequence[Callable | None] | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> logits`` as a chain of dense matmuls (numpy/BLAS), ReLU between layers
    (:func:`prunelib.core.forward.logits`), adding ``biases`` where given; ``acts`` as there."""
    kernels = list(kernels)
    if acts is not None and any(a is not None for a in acts):
        acts = list(acts)
        return lambda x: forward.logits(kernels, x, biases, acts=acts)
    if biases is None or all(b is None for b in biases):
        return lambda x: forward.logits(kernels, x)
    biases = list(biases)
    return lambda x: forward.logits(kernels, x, biases)


def _bucket(n: int) -> int:
    for i, top in enumerate(BUCKETS):
        if n <= top:
            return i
    return len(BUCKETS)


class Predictor:
    """Logits of a pruned ReLU MLP (biases optional), by the fastest path for each batch size.

    Args:
        kernels: (inputs, units) kernels in layer order, the last feeding the logits (zeros where
            pruned); they are compacted and copied, never modified.
        biases: one 1-D bias (or None) per kernel, or None for a bias-free network; computed in
            float32 like the kernels.
        paths: restrict the candidates (default: every path of :data:`PATHS` that can compute
            this network: ``sparse`` is bias-free and ReLU only).
        acts: one elementwise numpy function (or None: ReLU, and no output activation) per kernel,
            the last the output's; with any given, the kernels are used as given (not compacted).

    Raises:
        ValueError: the kernels or biases are invalid (2-D, real, finite in float32, chaining;
            biases 1-D with one entry per unit), an unknown path is named, ``sparse`` is named
            for a network with biases or other activations, or ``acts`` is not one callable (or
            None) per kernel.
    """

    PATHS = ("blas", "sparse", "csr")

    def __init__(
        self,
        kernels: Sequence[np.ndarray],
        biases: Sequence[np.ndarray | None] | None = None,
        *,
        paths: Sequence[str] | None = None,
        acts: Sequence[Callable | None] | None = None,
    ) -> None:
        kernels = validate_kernels(kernels)
        biases = validate_biases(kernels, biases)
        acts = forward.per_layer(acts, kernels, "activations")
        if any(a is not None and not callable(a) for a in acts):
            raise ValueError("acts must hold one numpy function (or None for the default) per kernel")
        custom = any(a is not None for a in acts)
        if isinstance(paths, str):
            raise ValueError(f"paths must be a list of path names, got the string {paths!r}")
        unknown = [p for p in (paths or ()) if p not in self.PATHS]
        if unknown:
            raise ValueError(f"unknown inference path {unknown[0]!r}; choose from {list(self.PATHS)}")
        has_bias = any(b is not None and np.any(b != 0) for b in biases)
        if (has_bias or custom) and paths and "sparse" in paths:
            raise ValueError(
                "the 'sparse' path computes bias-free ReLU networks only; choose 'blas' or 'csr' for a network with "
                "biases or other activations"
            )
        with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused below
            k32 = [np.asarray(w, dtype=np.float32) for w in kernels]
            b32 = [None if b is None else np.asarray(b, dtype=np.float32) for b in biases]
        for i, w in enumerate(k32):
            if 0 in w.shape:
                raise ValueError(f"kernel {i} has shape {w.shape}; every layer needs at least one input and one unit")
            if not np.isfinite(w).all() or (b32[i] is not None and not np.isfinite(b32[i]).all()):
                raise ValueError(f"kernel or bias {i} has values beyond float32's range; inference runs in float32")
        small, small_b = (k32, b32) if custom else compact_kernels(k32, b32 if has_bias else None)
        self.kernels = [np.ascontiguousarray(w, dtype=np.float32) for w in small]
        self.biases = (
            [None if b is None else np.ascontiguousarray(b, dtype=np.float32) for b in small_b] if has_bias else None
        )
        self.acts = list(acts) if custom else None
        self.paths = tuple(paths or (p for p in self.PATHS if not ((has_bias or custom) and p == "sparse")))
        self.chosen: dict[int, str] = {}  # bucket -> path
        self.timings: dict[int, dict[str, float]] = {}  # bucket -> path -> seconds on the probe
        self._built: dict[str, Callable[[np.ndarray], np.ndarray]] = {}

    @property
    def input_size(self) -> int:
        return self.kernels[0].shape[0]

    def run(self, path: str, x: np.ndarray) -> np.ndarray:
        """Logits of ``x`` by one named path (for tests and benchmarks)."""
        if path not in self.paths:
            raise ValueError(f"path {path!r} is not one of this predictor's {list(self.paths)}")
        if path not in self._built:
            self._built[path] = getattr(self, f"_build_{path}")()
        x = self._prepare(x)
        if len(x) == 0:
            return self._empty()
        return self._built[path](x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits (n, classes) for inputs (n, ...) flattening to the first kernel's inputs.

        Raises:
            ValueError: the inputs are not a finite real batch of :attr:`input_size` features
                per sample (:func:`prunelib.core.pruning.validate_inputs`).
        """
        x = self._prepare(x)
        if len(x) == 0:  # nothing to time: an empty batch must not choose the path for bucket 1
            return self._empty()
        bucket = _bucket(len(x))
        if bucket not in self.chosen:
            self.timings[bucket] = self._time_paths(x)
            self.chosen[bucket] = min(self.timings[bucket], key=self.timings[bucket].get)
        return self._built[self.chosen[bucket]](x)

    def path_for(self, n: int) -> str | None:
        """The path :meth:`predict` runs for a batch of ``n`` (None until such a batch is seen)."""
        return self.chosen.get(_bucket(n))

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        return validate_inputs(x, self.input_size)

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.kernels[-1].shape[1]), dtype=np.float32)

    def _time_paths(self, x: np.ndarray) -> dict[str, float]:
        """Each path's fastest of up to :data:`PROBE_ROUNDS` timed calls on ``x``, after a warm-up."""
        for path in self.paths:
            self.run(path, x)  # warm-up: compilation, caches
        best, spent = dict.fromkeys(self.paths, float("inf")), 0.0
        for r in range(PROBE_ROUNDS):
            shift = r % len(self.paths)  # rotating order: drift falls on every path alike
            for path in self.paths[shift:] + self.paths[:shift]:
                t0 = time.perf_counter()
                self._built[path](x)
                seconds = time.perf_counter() - t0
                best[path], spent = min(best[path], seconds), spent + seconds
            if spent >= PROBE_SECONDS:
                break
        return best

    def _build_blas(self):
        return blas_forward(self.kernels, self.biases, self.acts)

    def _csr_layers(self):
        return [csr_t(w) for w in self.kernels[:-1]]

    def _build_sparse(self):
        layers = self._csr_layers()
        if not layers:  # only the logit layer: nothing sparse to walk
            return self._build_blas()
        if self.biases is not None:  # refused in __init__; kept as a guard for the bias-free kernel
            raise ValueError("the 'sparse' path computes bias-free networks only")
        hidden, logits = CsrChain(layers), self.kernels[-1]
        # the logit layer is a few units wide: one dense BLAS call on the untiled batch, no CSR walk
        return lambda x: from_tiles(hidden(to_tiles(x), relu_last=True), len(x)) @ logits

    def _build_csr(self):
        layers = [*self._csr_layers(), np.ascontiguousarray(self.kernels[-1].T)]
        biases = [None if b is None else b[:, None] for b in (self.biases or [None] * len(layers))]
        acts = self.acts or [None] * len(layers)

        def run_csr(x):
            h = np.ascontiguousarray(x.T)
            for i, m in enumerate(layers):
                h = m @ h
                if biases[i] is not None:
                    h = h + biases[i]
                if i < len(layers) - 1 and acts[i] is None:
                    np.maximum(h, 0, out=h)
                elif i < len(layers) - 1:
                    h = forward.apply(acts[i], h)
            out = np.ascontiguousarray(h.T)
            # the output's activation on (n, classes): a softmax acts along each row
            return out if acts[-1] is None else forward.apply(acts[-1], out)

        return run_csr
