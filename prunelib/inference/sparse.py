"""Sparse inference for weight-pruned MLPs: CSR kernels by density, and their file format.

Each layer is stored sparse (CSR) or dense by its density, with the cut-off set from
``benchmarks/inference.py``. :meth:`SparseMLP.predict` keeps the activations tiled (``(tiles,
features, TILE)``, :mod:`prunelib.inference.kernels`) from the first layer to the last: each run
of consecutive sparse layers is one fused pass of :class:`~prunelib.inference.kernels.CsrChain`
(the kernel of the predictor's ``sparse`` path too), each dense layer a batched BLAS matmul.
:meth:`SparseMLP.save` and :meth:`SparseMLP.load` write and read a compressed ``.npz``, every array
checked before it is used.
"""

from __future__ import annotations

import functools
import os
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from prunelib.base.files import creating_folders, replacing, user_path
from prunelib.core.pruning import validate_inputs, validate_kernels
from prunelib.inference.kernels import CsrChain, csr_t, from_tiles, to_tiles

DENSE_ABOVE = 0.30
"""Layers whose fraction of nonzeros exceeds this run as dense BLAS matmuls.

A conservative cut: in ``benchmarks/inference.py`` the all-sparse network was already no faster
than dense at 20 % density (weight k = 80) and faster at 10 % (k = 90)."""

MAX_LOAD_ENTRIES = 2**28
"""Largest kernel (inputs x units) :meth:`SparseMLP.load` accepts: 1 GiB of float32 once dense.
A file claiming more is refused before anything is allocated."""


@dataclass(frozen=True)
class SparseLayer:
    """One layer's kernel, stored transposed (units x inputs) as CSR or as a dense array."""

    weight_t: sp.csr_matrix | np.ndarray
    shape: tuple[int, int]  # the Keras kernel's (inputs, units)

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.weight_t)

    @property
    def nnz(self) -> int:
        return int(self.weight_t.nnz if self.is_sparse else np.count_nonzero(self.weight_t))


def inference_kernels(kernels: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Kernels checked for a compiled inference path, as float32 arrays (copies only where cast).

    On top of :func:`prunelib.core.pruning.validate_kernels` (2-D, real, finite, chaining), every
    kernel must have at least one input and one unit, and stay finite in float32: the compiled
    kernels index by these shapes without bounds checks, so nothing unchecked may reach them.

    Raises:
        ValueError: naming the kernel and what is wrong with it.
    """
    out = []
    for i, w in enumerate(validate_kernels(kernels)):
        if 0 in w.shape:
            raise ValueError(f"kernel {i} has shape {w.shape}; every layer needs at least one input and one unit")
        with np.errstate(over="ignore"):
            w32 = np.asarray(w, dtype=np.float32)
        if not np.isfinite(w32).all():
            raise ValueError(
                f"kernel {i} has values beyond float32's range (largest |w| = "
                f"{float(np.max(np.abs(w.astype(np.float64)))):g}); inference runs in float32"
            )
        out.append(w32)
    return out


class SparseMLP:
    """A bias-free ReLU MLP for inference, each layer sparse (CSR) or dense by its density.

    Inputs follow :func:`prunelib.core.pruning.validate_inputs`: a batch ``(n, ...)`` (a single sample
    is ``x[None]``; a 1-D array is refused), real and finite (NaN or inf is a ``ValueError``, as
    on every inference path); an empty batch gives ``(0, classes)`` logits.

    Args:
        kernels: (inputs, units) kernels in layer order; ReLU between, linear logits.
        dense_above: layers with a larger fraction of nonzeros run dense (a number in [0, 1]).

    Raises:
        ValueError: the kernels are invalid (:func:`inference_kernels`) or ``dense_above`` is not
            a number in [0, 1].
    """

    def __init__(self, kernels: Sequence[np.ndarray], dense_above: float = DENSE_ABOVE):
        if isinstance(dense_above, bool) or not isinstance(dense_above, Real) or not 0 <= dense_above <= 1:
            raise ValueError(f"dense_above must be a fraction in [0, 1], got {dense_above!r}")
        kernels = inference_kernels(kernels)
        self.layers = []
        for w in kernels:
            density = np.count_nonzero(w) / w.size
            stored = np.ascontiguousarray(w.T) if density > dense_above else csr_t(w)
            self.layers.append(SparseLayer(stored, tuple(w.shape)))
        self._steps = _steps(self.layers)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits (n, classes) for images (n, ...).

        Raises:
            ValueError: the inputs are not a finite real batch of the first kernel's width
                (:func:`prunelib.core.pruning.validate_inputs`).
        """
        x = validate_inputs(x, self.layers[0].shape[0])
        if len(x) == 0:
            return np.zeros((0, self.layers[-1].shape[1]), dtype=np.float32)
        a = to_tiles(x)
        for i, step in enumerate(self._steps):
            a = step(a, i < len(self._steps) - 1)
        return from_tiles(a, len(x))

    def kernels(self) -> list[np.ndarray]:
        """The kernels back as dense (inputs, units) arrays."""
        return [np.ascontiguousarray((l.weight_t.toarray() if l.is_sparse else l.weight_t).T) for l in self.layers]

    def save(self, path: str | os.PathLike) -> Path:
        """Save as a compressed ``.npz``: CSR arrays for sparse layers, raw arrays for dense ones.

        ``.npz`` is appended where ``path`` lacks it (as numpy does); missing folders are created
        and ``~`` is expanded. The file is written beside its target and renamed onto it: a failed
        save leaves the previous file as it was.

        Returns:
            The path written.

        Raises:
            ValueError: the target is a directory, or a folder on its way is a file.
        """
        path = user_path(path)
        target = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
        arrays = {}
        for i, layer in enumerate(self.layers):
            csr = layer.weight_t if layer.is_sparse else sp.csr_matrix(layer.weight_t)
            arrays[f"{i}_data"], arrays[f"{i}_indices"] = csr.data, csr.indices.astype(np.int32)
            arrays[f"{i}_indptr"] = csr.indptr.astype(np.int32)
            arrays[f"{i}_shape"] = np.array(layer.shape)
        with creating_folders(target), replacing(target, ".npz") as tmp:
            np.savez_compressed(tmp, n_layers=len(self.layers), **arrays)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike, dense_above: float = DENSE_ABOVE) -> SparseMLP:
        """Load a model written by :meth:`save`, checking every array before it is used.

        Raises:
            ValueError: the file is not a SparseMLP ``.npz`` or any array is inconsistent (wrong
                dtype, indices out of bounds, ``indptr`` not monotone or not matching ``nnz``,
                shapes that do not chain, missing or extra layers); the message names the file.
        """
        try:
            f = np.load(path, allow_pickle=False)
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array, not a SparseMLP archive")
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise ValueError(f"{path} is not a SparseMLP file written by SparseMLP.save ({err})") from err
        with f:
            try:
                names = set(f.files)
                if "n_layers" not in names:
                    raise ValueError("it has no 'n_layers' entry")
                n = f["n_layers"]
                if n.shape != () or not np.issubdtype(n.dtype, np.integer) or int(n) < 1:
                    raise ValueError("'n_layers' must be a positive integer")
                n = int(n)
                # 4 entries per layer: a count the file cannot hold is refused before anything
                # is built from it (a tiny file may claim millions of layers)
                if 4 * n + 1 != len(names):
                    raise ValueError(
                        f"'n_layers' says {n} layers but it holds {len(names)} entries, "
                        "which do not match (a file of n layers holds 4n + 1)"
                    )
                expected = {"n_layers"} | {
                    f"{i}_{part}" for i in range(n) for part in ("data", "indices", "indptr", "shape")
                }
                if names != expected:
                    raise ValueError(f"its entries {sorted(names ^ expected)[:4]} do not match {n} layers")
                kernels = [_checked_layer(f, i) for i in range(n)]
            except (ValueError, KeyError, OSError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error) as err:
                raise ValueError(f"{path} is not a valid SparseMLP file: {err}") from None
        for i in range(1, len(kernels)):
            if kernels[i].shape[0] != kernels[i - 1].shape[1]:
                raise ValueError(
                    f"{path} is not a valid SparseMLP file: layer {i} takes "
                    f"{kernels[i].shape[0]} inputs, layer {i - 1} has {kernels[i - 1].shape[1]}"
                )
        return cls(kernels, dense_above)


def _steps(layers: Sequence[SparseLayer]) -> list[Callable[[np.ndarray, bool], np.ndarray]]:
    """``(tiles, relu) -> tiles`` per run of consecutive sparse layers (one fused pass) or dense layer."""
    steps, run = [], []
    for layer in [*layers, None]:  # None closes the last run
        if layer is not None and layer.is_sparse:
            run.append(layer.weight_t)
            continue
        if run:
            steps.append(CsrChain(run))
            run = []
        if layer is not None:
            steps.append(functools.partial(_dense_step, layer.weight_t))
    return steps


def _dense_step(weight_t: np.ndarray, a: np.ndarray, relu: bool) -> np.ndarray:
    out = np.matmul(weight_t, a)  # batched BLAS over tiles
    return np.maximum(out, 0, out=out) if relu else out


def _checked_layer(f, i: int) -> np.ndarray:
    """Layer ``i``'s kernel from a saved file, after checking its CSR arrays (scipy trusts them,
    and out-of-bounds indices would corrupt memory)."""
    shape = _read_checked(f, f"{i}_shape", 64)
    if shape.shape != (2,) or not np.issubdtype(shape.dtype, np.integer) or (shape < 1).any():
        raise ValueError(f"layer {i}: shape must be two positive integers, got {shape.tolist()}")
    rows, cols = (int(v) for v in shape)
    if rows * cols > MAX_LOAD_ENTRIES:
        raise ValueError(
            f"layer {i}: shape {rows} x {cols} exceeds the {MAX_LOAD_ENTRIES} weights "
            "a loaded kernel may have (prunelib.inference.sparse.MAX_LOAD_ENTRIES)"
        )
    # nnz <= rows * cols, so no honest array is larger than this; read nothing that claims more
    limit = 8 * (rows * cols + cols + 1)
    data, indices, indptr = (_read_checked(f, f"{i}_{part}", limit) for part in ("data", "indices", "indptr"))
    if not np.issubdtype(data.dtype, np.floating) or data.ndim != 1 or not np.isfinite(data).all():
        raise ValueError(f"layer {i}: data must be a 1-D array of finite floats")
    for name, arr in (("indices", indices), ("indptr", indptr)):
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"layer {i}: {name} must be a 1-D integer array")
    if indptr.size != cols + 1 or indptr[0] != 0 or indptr[-1] != data.size or (np.diff(indptr) < 0).any():
        raise ValueError(f"layer {i}: indptr must rise from 0 to nnz = {data.size} over {cols} rows")
    if indices.size != data.size or (indices.size and (indices.min() < 0 or indices.max() >= rows)):
        raise ValueError(f"layer {i}: indices must number nnz = {data.size}, each in [0, {rows})")
    csr = sp.csr_matrix((data, indices.astype(np.int64), indptr.astype(np.int64)), shape=(cols, rows))
    return csr.toarray().T


def _read_checked(f, name: str, limit: int) -> np.ndarray:
    """Entry ``name`` of an open ``.npz``, after checking that its header claims at most ``limit``
    bytes and no more than the archive member holds (numpy allocates what the header claims)."""
    member = f"{name}.npy"
    try:
        info = f.zip.getinfo(member)
    except KeyError:
        raise ValueError(f"entry {name!r} is missing") from None
    with f.zip.open(member) as fp:
        version = np.lib.format.read_magic(fp)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = header(fp)
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if claimed > min(limit, info.file_size):
        raise ValueError(f"entry {name!r} claims {claimed} bytes, more than the file holds or the layer's shape allows")
    return f[name]
