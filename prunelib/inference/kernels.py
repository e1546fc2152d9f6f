"""The one sparse kernel of inference: runs of CSR layers, fused, over tiles of TILE samples.

Activations travel in tiles of :data:`TILE` samples, feature-major inside a tile ``(tiles,
features, TILE)`` (:func:`to_tiles`, :func:`from_tiles`), so one stored weight multiplies a
contiguous run of samples: the inner loop is a SIMD multiply-add over the tile. :class:`CsrChain`
runs consecutive CSR layers in one compiled (numba) pass per tile: the tile is copied once into a
block that stays in cache through every layer of the run, and the tiles are spread over the cores.
Both sparse entry points use it: the ``sparse`` path of
:class:`prunelib.inference.predictor.Predictor` (every hidden layer in one run) and
:class:`prunelib.inference.sparse.SparseMLP` (each run of layers sparse by density).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import scipy.sparse as sp

TILE = 64
"""Samples per tile, chosen by measurement in ``benchmarks/inference.py``'s setting (docs/benchmarks.md,
"One sparse kernel"): at 64 the compiler vectorises the inner loop, where 16 and 32 ran several
times slower; 128 gained little on large batches and lost on small ones (more padding)."""


# No bounds checks: every index is proven in range before the call. The CSR arrays come from scipy
# on kernels that were checked (validate_kernels; SparseMLP.load checks a file's arrays before it
# builds them), CsrChain checks that its layers chain and the width of the tiles it is given.
@numba.njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def _csr_chain(indptrs, indices, values, widths, a, relu_last):  # pragma: no cover - compiled
    """``a`` (tiles, inputs, TILE) through CSR layers (rows = units), ReLU after each but the last
    unless ``relu_last``; returns (tiles, last width, TILE)."""
    n_tiles, features = a.shape[0], a.shape[1]
    widest = features
    for w in widths:
        widest = max(widest, w)
    last = len(widths) - 1
    out = np.empty((n_tiles, widths[last], TILE), dtype=np.float32)
    for t in numba.prange(n_tiles):
        # one sequential copy lets the prefetcher stream the tile in; the CSR walk then reads its
        # rows in random order from cache rather than from memory
        src = np.empty((widest, TILE), dtype=np.float32)
        dst = np.empty((widest, TILE), dtype=np.float32)
        src[:features] = a[t]
        acc = np.empty(TILE, dtype=np.float32)
        for layer in range(last + 1):
            indptr, index, value = indptrs[layer], indices[layer], values[layer]
            relu = relu_last or layer < last
            for r in range(widths[layer]):
                for j in range(TILE):
                    acc[j] = 0.0
                for p in range(indptr[r], indptr[r + 1]):
                    v = value[p]
                    c = index[p]
                    for j in range(TILE):
                        acc[j] += v * src[c, j]
                for j in range(TILE):
                    dst[r, j] = max(acc[j], 0.0) if relu else acc[j]
            src, dst = dst, src
        out[t] = src[: widths[last]]
    return out


def to_tiles(x: np.ndarray) -> np.ndarray:
    """(n, features) -> (tiles, features, TILE) float32, zero-padding the last tile.

    Example:
        >>> import numpy as np
        >>> from prunelib.inference.kernels import TILE, from_tiles, to_tiles
        >>> x = np.arange(6, dtype=np.float32).reshape(3, 2)
        >>> to_tiles(x).shape == (1, 2, TILE) and bool((from_tiles(to_tiles(x), 3) == x).all())
        True
    """
    n, f = x.shape
    n_tiles = -(-n // TILE)
    padded = np.zeros((n_tiles * TILE, f), dtype=np.float32)
    padded[:n] = x
    return np.ascontiguousarray(padded.reshape(n_tiles, TILE, f).transpose(0, 2, 1))


def from_tiles(a: np.ndarray, n: int) -> np.ndarray:
    """(tiles, features, TILE) -> (n, features), dropping the padding (the inverse of :func:`to_tiles`)."""
    return np.ascontiguousarray(a.transpose(0, 2, 1).reshape(-1, a.shape[1])[:n])


def csr_t(w: np.ndarray) -> sp.csr_matrix:
    """A kernel (inputs, units) transposed to CSR (rows = units), indices sorted and int64, the
    form :class:`CsrChain` and scipy's products take.

    Example:
        >>> import numpy as np
        >>> from prunelib.inference.kernels import csr_t
        >>> m = csr_t(np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], np.float32))
        >>> m.shape, m.nnz, m.indices.dtype.name
        ((2, 3), 3, 'int64')
    """
    m = sp.csr_matrix(np.ascontiguousarray(w.T))
    m.sort_indices()
    m.indices = m.indices.astype(np.int64)
    m.indptr = m.indptr.astype(np.int64)
    return m


class CsrChain:
    """Consecutive CSR layers run as one fused pass per tile (:data:`TILE` samples).

    Args:
        layers: transposed kernels (units x inputs) in layer order, as from :func:`csr_t`; each
            layer's inputs must be the previous one's units.

    Raises:
        ValueError: no layers, or layers that do not chain.

    Example:
        >>> import numpy as np
        >>> from prunelib.inference.kernels import CsrChain, csr_t, from_tiles, to_tiles
        >>> w1, w2 = np.eye(3, 2, dtype=np.float32), -np.ones((2, 2), np.float32)
        >>> x = np.array([[1.0, -2.0, 5.0]], np.float32)
        >>> from_tiles(CsrChain([csr_t(w1), csr_t(w2)])(to_tiles(x), relu_last=False), 1).tolist()
        [[-1.0, -1.0]]
    """

    def __init__(self, layers: Sequence[sp.csr_matrix]) -> None:
        if not layers:
            raise ValueError("a CsrChain needs at least one layer")
        for i in range(1, len(layers)):
            if layers[i].shape[1] != layers[i - 1].shape[0]:
                raise ValueError(
                    f"layer {i} takes {layers[i].shape[1]} inputs, layer {i - 1} has {layers[i - 1].shape[0]}"
                )
        self.inputs = layers[0].shape[1]
        self._indptrs = numba.typed.List([np.ascontiguousarray(m.indptr, dtype=np.int64) for m in layers])
        self._indices = numba.typed.List([np.ascontiguousarray(m.indices, dtype=np.int64) for m in layers])
        self._values = numba.typed.List([np.ascontiguousarray(m.data, dtype=np.float32) for m in layers])
        self._widths = np.array([m.shape[0] for m in layers], dtype=np.int64)

    def __call__(self, a: np.ndarray, relu_last: bool) -> np.ndarray:
        """Tiled activations (tiles, inputs, TILE) -> (tiles, units of the last layer, TILE), ReLU
        between the layers and after the last when ``relu_last``."""
        if a.ndim != 3 or a.shape[1] != self.inputs or a.shape[2] != TILE or a.dtype != np.float32:
            raise ValueError(f"expected float32 tiles (tiles, {self.inputs}, {TILE}), got {a.dtype} {a.shape}")
        a = np.ascontiguousarray(a)
        return _csr_chain(self._indptrs, self._indices, self._values, self._widths, a, bool(relu_last))
