"""The one sparse kernel (prunelib.inference.kernels): both entry points that run it, Predictor's
``sparse`` path and SparseMLP, give the float64 reference's logits, whatever the batch's size
against TILE and whatever the layers hold (ties, zeros, rows with no weight)."""

import numpy as np
import pytest

from prunelib.inference.kernels import TILE, CsrChain, csr_t, from_tiles, to_tiles
from prunelib.inference.predictor import Predictor
from prunelib.inference.sparse import SparseMLP


def reference(ks, x):
    h = x.astype(np.float64)
    for i, w in enumerate(ks):
        h = h @ w.astype(np.float64)
        if i < len(ks) - 1:
            h = np.maximum(h, 0)
    return h


def awkward_net():
    """Tied values, mostly zeros, a unit with no input, an input that feeds nothing, and a dense layer."""
    rng = np.random.default_rng(3)
    ws = []
    for a, b in ((13, 9), (9, 7), (7, 8), (8, 5)):
        w = rng.choice(np.float32([-1, 0.5, 1]), size=(a, b))  # few distinct values: ties
        ws.append(np.where(rng.random((a, b)) < 0.2, w, 0).astype(np.float32))  # below DENSE_ABOVE
    ws[0][:, 2] = 0  # unit 2 of layer 1 has no input
    ws[1][4, :] = 0  # unit 4 of layer 1 feeds nothing
    ws[0][0, :] = 0  # input 0 feeds nothing
    ws[2] = rng.normal(size=(7, 8)).astype(np.float32)  # dense: SparseMLP runs it with BLAS between sparse runs
    return ws


ENTRY_POINTS = {
    "predictor-sparse": lambda ws: lambda x: Predictor(ws, paths=["sparse"]).run("sparse", x),
    "sparse-mlp": lambda ws: SparseMLP(ws).predict,
    "sparse-mlp-all-csr": lambda ws: SparseMLP(ws, dense_above=1.0).predict,
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("n", [0, 1, 2, TILE - 1, TILE, TILE + 1, 2 * TILE + 5])
def test_both_entry_points_give_the_reference_logits(entry, n):
    ws = awkward_net()
    x = np.random.default_rng(n).choice(np.float32([0, 0, 0.5, 1, 2]), size=(n, 13))
    got = ENTRY_POINTS[entry](ws)(x)
    assert got.shape == (n, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference(ws, x), rtol=1e-5, atol=1e-5)


def test_sparse_mlp_runs_consecutive_sparse_layers_as_one_chain():
    ws = awkward_net()
    steps = SparseMLP(ws)._steps
    assert [layer.is_sparse for layer in SparseMLP(ws).layers] == [True, True, False, True]
    assert [type(s).__name__ for s in steps] == ["CsrChain", "partial", "CsrChain"]
    assert len(SparseMLP(ws, dense_above=1.0)._steps) == 1


def test_tiles_round_trip_and_pad_with_zeros():
    x = np.arange(3 * (TILE + 1), dtype=np.float32).reshape(TILE + 1, 3)
    a = to_tiles(x)
    assert a.shape == (2, 3, TILE) and a.dtype == np.float32
    assert (a[1, :, 1:] == 0).all()
    np.testing.assert_array_equal(from_tiles(a, TILE + 1), x)


def test_a_chain_refuses_layers_that_do_not_chain_and_tiles_of_the_wrong_width():
    with pytest.raises(ValueError, match="at least one layer"):
        CsrChain([])
    with pytest.raises(ValueError, match="layer 1 takes 4 inputs, layer 0 has 3"):
        CsrChain([csr_t(np.ones((2, 3), np.float32)), csr_t(np.ones((4, 1), np.float32))])
    chain = CsrChain([csr_t(np.ones((2, 3), np.float32))])
    with pytest.raises(ValueError, match="expected float32 tiles"):
        chain(to_tiles(np.ones((1, 5), np.float32)), relu_last=False)
