import numpy as np
import pytest

from prunelib.core import compact, pruning
from prunelib.inference.sparse import SparseMLP

SIZES = (30, 24, 16, 12, 4)


def kernels(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(a, b)).astype(np.float32) for a, b in zip(SIZES[:-1], SIZES[1:])]


def forward(ws, x, bs=None):
    h = x.reshape(len(x), -1)
    for i, w in enumerate(ws):
        h = h @ w + (0 if bs is None or bs[i] is None else bs[i])
        if i < len(ws) - 1:
            h = np.maximum(h, 0)
    return h


X = np.random.default_rng(1).random((40, 30), dtype=np.float32)


@pytest.mark.parametrize("k", [0, 25, 50, 90, 99, 100])
def test_compact_unit_pruned_predicts_like_masked(k):
    pruned = pruning.unit_prune(kernels(), k)
    small, _ = compact.compact_kernels(pruned)
    assert small[0].shape[0] == SIZES[0] and small[-1].shape[1] == SIZES[-1]
    for w, n in zip(small[:-1], SIZES[1:-1]):
        assert w.shape[1] == max(n - round(k / 100 * n), 1)
    np.testing.assert_allclose(forward(small, X), forward(pruned, X), rtol=1e-5, atol=1e-5)


def test_dead_rows_propagate_and_biases_keep_units_alive():
    ws = kernels()
    ws[2][:, 3] = 0  # hidden unit 3 of layer 2 has no input ...
    ws[1][5, :] = 0  # ... and hidden unit 5 of layer 0 feeds nothing
    live = compact.live_units(ws)
    assert not live[2][3] and not live[0][5]
    assert [m.sum() for m in live] == [SIZES[1] - 1, SIZES[2], SIZES[3] - 1]
    biases = [np.ones(w.shape[1], np.float32) for w in ws]
    assert compact.live_units(ws, biases)[2][3]  # a bias makes it output a constant
    small, small_b = compact.compact_kernels(ws, biases)
    np.testing.assert_allclose(forward(small, X, small_b), forward(ws, X, biases), rtol=1e-5, atol=1e-5)


def test_accounting_counts_effective_weights_and_macs():
    ws = kernels()
    dense = compact.account(ws)
    assert dense.zero_weights == 0 and dense.effective_weights == dense.total_weights
    assert dense.mac_ratio == 1
    pruned = pruning.unit_prune(ws, 50)
    acc = compact.account(pruned)
    # the rows fed by dead units are dead too, so effective < nonzero
    nonzero = acc.total_weights - acc.zero_weights
    assert acc.effective_weights < nonzero
    live = [n - round(n / 2) for n in SIZES[1:-1]]
    dims = [SIZES[0], *live, SIZES[-1]]
    assert acc.effective_weights == sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    assert acc.macs_per_sample == acc.effective_weights
    assert acc.sparsity == pytest.approx(pruning.sparsity(pruned))


@pytest.mark.parametrize("k", [0, 50, 90, 99])
@pytest.mark.parametrize("dense_above", [0.0, 0.3, 1.0])
def test_sparse_mlp_matches_masked_dense(k, dense_above):
    pruned = pruning.weight_prune(kernels(), k)
    model = SparseMLP(pruned, dense_above=dense_above)
    np.testing.assert_allclose(model.predict(X), forward(pruned, X), rtol=1e-4, atol=1e-4)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(model.kernels(), pruned))


def test_sparse_mlp_odd_batch_sizes():
    pruned = pruning.weight_prune(kernels(), 90)
    model = SparseMLP(pruned, dense_above=1.0)
    for n in (1, 3, 65, 130):
        x = np.random.default_rng(n).random((n, 30), dtype=np.float32)
        np.testing.assert_allclose(model.predict(x), forward(pruned, x), rtol=1e-4, atol=1e-4)


def test_sparse_save_load_roundtrip(tmp_path):
    pruned = pruning.weight_prune(kernels(), 95)
    model = SparseMLP(pruned)
    path = model.save(tmp_path / "m.npz")
    loaded = SparseMLP.load(path)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert pruning.sparsity(loaded.kernels()) == pruning.sparsity(pruned)


def test_compact_keras_model_roundtrips_with_same_predictions(tmp_path):
    import keras

    from prunelib.models import mlp

    dense = mlp.from_kernels(kernels(), input_shape=(30,))
    pruned = mlp.prune_model(dense, 50, "unit")
    small = mlp.compact_model(pruned)
    assert [w.shape[1] for w in mlp.get_kernels(small)] == [12, 8, 6, 4]
    want = np.asarray(pruned.predict(X, verbose=0))
    np.testing.assert_allclose(np.asarray(small.predict(X, verbose=0)), want, rtol=1e-5, atol=1e-5)
    small.save(tmp_path / "small.keras")
    loaded = keras.models.load_model(tmp_path / "small.keras", compile=False)
    np.testing.assert_allclose(np.asarray(loaded.predict(X, verbose=0)), want, rtol=1e-5, atol=1e-5)
    assert (tmp_path / "small.keras").stat().st_size < 1e6


def test_accounting_table_is_tidy():
    df = compact.accounting_table(kernels(), ks=[0, 50, 90])
    assert len(df) == 6 and set(df.method) == {"weight", "unit"}
    dense = df[df.k == 0]
    assert (dense.mac_ratio == 1).all()
    unit = df[df.method == "unit"].set_index("k")
    total = sum(w.size for w in kernels())
    assert (unit.effective_weights <= total - unit.zero_weights).all()
    assert unit.loc[90, "mac_ratio"] > unit.loc[50, "mac_ratio"] > 1


def test_pruned_keras_model_save_load_keeps_predictions_and_sparsity(tmp_path):
    import keras

    from prunelib.models import mlp

    pruned = mlp.prune_model(mlp.from_kernels(kernels(), input_shape=(30,)), 90, "weight")
    pruned.save(tmp_path / "p.keras")
    loaded = keras.models.load_model(tmp_path / "p.keras", compile=False)
    assert pruning.sparsity(mlp.get_kernels(loaded)) == pruning.sparsity(mlp.get_kernels(pruned))
    np.testing.assert_array_equal(np.asarray(loaded.predict(X, verbose=0)), np.asarray(pruned.predict(X, verbose=0)))
