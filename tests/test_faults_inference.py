"""Inference faults (issue 24): every mistake is a ValueError naming it, never a native crash, and
every path gives the same answer (or the same error) on the same input."""

import subprocess
import sys
import zipfile

import numpy as np
import pytest

from prunelib.core import pruning
from prunelib.inference.predictor import Predictor
from prunelib.inference.sparse import SparseMLP


def kernels(seed=0, sizes=(12, 10, 8, 3)):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]


def reference(ws, x, biases=None):
    """float64 numpy forward pass: ReLU between layers, linear logits."""
    h = np.asarray(x, np.float64).reshape(len(x), -1)
    biases = biases or [None] * len(ws)
    for i, (w, b) in enumerate(zip(ws, biases)):
        h = h @ np.asarray(w, np.float64) + (0 if b is None else np.asarray(b, np.float64))
        if i < len(ws) - 1:
            h = np.maximum(h, 0)
    return h


def in_child(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter, so a segfault fails the test instead of killing pytest."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_sparse_mlp_one_image_as_1d_array_is_a_value_error_not_a_segfault():
    code = (
        "import numpy as np; from prunelib import weight_prune; from prunelib.inference.sparse import SparseMLP\n"
        "rng = np.random.default_rng(0)\n"
        "ws = [rng.normal(size=(784, 50)).astype('f4'), rng.normal(size=(50, 10)).astype('f4')]\n"
        "m = SparseMLP(weight_prune(ws, 95))\n"
        "try:\n    m.predict(rng.random(784, dtype='f4'))\nexcept ValueError as e:\n    print('ok', e)\n"
    )
    done = in_child(code)
    assert done.returncode == 0 and done.stdout.startswith("ok") and "x[None]" in done.stdout, done


def test_sparse_mlp_unchained_kernels_are_a_value_error():
    with pytest.raises(ValueError, match="kernel 1 takes 7 inputs but kernel 0 has 10 units"):
        SparseMLP([np.ones((12, 10), np.float32), np.zeros((7, 3), np.float32)])


@pytest.mark.parametrize("width", [11, 13])
def test_sparse_mlp_wrong_input_width_is_a_value_error(width):
    m = SparseMLP(pruning.weight_prune(kernels(), 90))
    with pytest.raises(ValueError, match="do not flatten to 12 features"):
        m.predict(np.ones((5, width), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused_on_every_path(bad):
    ws = pruning.weight_prune(kernels(), 90)
    x = np.random.default_rng(1).random((40, 12)).astype(np.float32)
    x[3, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        SparseMLP(ws).predict(x)
    p = Predictor(ws)
    for path in p.paths:
        with pytest.raises(ValueError, match="NaN or infinite"):
            p.run(path, x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        p.predict(x)


def test_float64_inputs_beyond_float32_are_refused():
    x = np.full((2, 12), 1e300)
    with pytest.raises(ValueError, match="NaN or infinite"):
        Predictor(kernels()).predict(x)


@pytest.mark.parametrize("x", [np.ones((2, 12), complex), np.array([["a"] * 12] * 2), np.ones((2, 12), object)])
def test_non_real_inputs_are_refused(x):
    with pytest.raises(ValueError, match="must be real numbers"):
        Predictor(kernels()).predict(x)
    with pytest.raises(ValueError, match="must be real numbers"):
        SparseMLP(kernels()).predict(x)


def test_empty_batch_gives_zero_rows_and_does_not_choose_a_path():
    ws = pruning.weight_prune(kernels(), 90)
    p = Predictor(ws)
    assert p.predict(np.zeros((0, 12), np.float32)).shape == (0, 3)
    assert p.chosen == {}
    for path in p.paths:
        assert p.run(path, np.zeros((0, 12))).shape == (0, 3)
    assert SparseMLP(ws).predict(np.zeros((0, 12))).shape == (0, 3)


def test_zero_width_layer_is_refused():
    with pytest.raises(ValueError, match="at least one input and one unit"):
        SparseMLP([np.zeros((12, 0), np.float32), np.zeros((0, 3), np.float32)])
    with pytest.raises(ValueError, match="at least one input and one unit"):
        Predictor([np.zeros((12, 0), np.float32), np.zeros((0, 3), np.float32)])


def test_float64_kernels_beyond_float32_are_refused():
    ws = kernels()
    ws[0] = ws[0].astype(np.float64)
    ws[0][0, 0] = 1e300
    with pytest.raises(ValueError, match="float32"):
        SparseMLP(ws)
    with pytest.raises(ValueError, match="float32"):
        Predictor(ws)


@pytest.mark.parametrize("dense_above", [np.nan, -0.1, 2, "0.3", True])
def test_sparse_mlp_dense_above_is_checked(dense_above):
    with pytest.raises(ValueError, match="dense_above"):
        SparseMLP(kernels(), dense_above)


def test_predictor_with_biases_matches_a_float64_reference_on_every_path():
    rng = np.random.default_rng(2)
    ws = pruning.unit_prune(kernels(), 50)
    biases = [rng.normal(size=w.shape[1]).astype(np.float32) for w in ws]
    x = rng.random((70, 12)).astype(np.float32)
    want = reference(ws, x, biases)
    p = Predictor(ws, biases)
    assert "sparse" not in p.paths
    for path in p.paths:
        np.testing.assert_allclose(p.run(path, x), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(p.predict(x), want, rtol=1e-4, atol=1e-4)


def test_a_unit_with_no_inputs_but_a_bias_is_kept():
    ws = kernels()
    ws[0] = ws[0].copy()
    ws[0][:, 0] = 0  # unit 0 of layer 0 only outputs relu(bias)
    biases = [np.full(10, 2.0, np.float32), None, None]
    x = np.random.default_rng(3).random((4, 12)).astype(np.float32)
    np.testing.assert_allclose(
        Predictor(ws, biases, paths=["blas"]).predict(x), reference(ws, x, biases), rtol=1e-4, atol=1e-4
    )


def test_sparse_path_with_biases_is_refused():
    ws = kernels()
    with pytest.raises(ValueError, match="bias-free"):
        Predictor(ws, [np.ones(10), None, None], paths=["sparse"])


@pytest.mark.parametrize(
    "biases, match",
    [
        ([np.ones(9), None, None], r"bias 0 has shape \(9,\)"),
        ([np.ones((10, 1)), None, None], "bias 0 has shape"),
        ([None, None], "3 kernels but 2 biases"),
        ([None, np.array([np.nan] * 8), None], "bias 1 contains 8 NaN"),
        ([None, None, np.array(["a"] * 3)], "bias 2 must hold real numbers"),
    ],
)
def test_bad_biases_are_refused(biases, match):
    with pytest.raises(ValueError, match=match):
        Predictor(kernels(), biases)


def test_paths_as_a_string_is_refused():
    with pytest.raises(ValueError, match="list of path names"):
        Predictor(kernels(), paths="blas")


def test_bias_free_predictor_is_unchanged_and_paths_agree():
    ws = pruning.weight_prune(kernels(), 80)
    x = np.random.default_rng(4).random((33, 12)).astype(np.float32)
    p = Predictor(ws)
    assert p.paths == Predictor.PATHS and p.biases is None
    out = {path: p.run(path, x) for path in p.paths}
    np.testing.assert_array_equal(
        out["blas"], pruning.np.asarray(__import__("prunelib.core.forward", fromlist=["logits"]).logits(p.kernels, x))
    )
    for path in p.paths:
        np.testing.assert_allclose(out[path], reference(ws, x), rtol=1e-4, atol=1e-4)


# -- SparseMLP.load of damaged or hostile files ------------------------------------------------


def test_load_of_a_tiny_file_claiming_millions_of_layers_fails_fast(tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, n_layers=2_000_000)
    with pytest.raises(ValueError, match="says 2000000 layers but it holds 1 entries, which do not match"):
        SparseMLP.load(path)


def test_load_of_a_layer_claiming_a_huge_shape_fails_before_allocating(tmp_path):
    path = tmp_path / "huge.npz"
    np.savez_compressed(
        path,
        n_layers=1,
        **{
            "0_shape": np.array([10**6, 10**6]),
            "0_data": np.zeros(0, np.float32),
            "0_indices": np.zeros(0, np.int32),
            "0_indptr": np.zeros(10**6 + 1, np.int32),
        },
    )
    with pytest.raises(ValueError, match="exceeds"):
        SparseMLP.load(path)


def test_load_of_an_entry_whose_header_lies_about_its_size(tmp_path):
    good = tmp_path / "good.npz"
    SparseMLP(pruning.weight_prune(kernels(), 90)).save(good)
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            blob = src.read(item)
            if item.filename == "0_data.npy":  # same bytes, a header claiming 10^9 floats
                blob = blob.replace(b"'shape': (", b"'shape': (1000000000, ", 1)
            dst.writestr(item, blob)
    with pytest.raises(ValueError, match="not a valid SparseMLP file"):
        SparseMLP.load(bad)


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04broken zip"])
def test_load_of_garbage_is_a_value_error(tmp_path, content):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="SparseMLP"):
        SparseMLP.load(path)


def test_load_of_a_plain_npy_is_a_value_error(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ValueError, match="SparseMLP"):
        SparseMLP.load(path)


def test_save_load_round_trip_is_exact(tmp_path):
    ws = pruning.weight_prune(kernels(), 90)
    path = SparseMLP(ws).save(tmp_path / "m")
    for a, b in zip(SparseMLP.load(path).kernels(), ws):
        np.testing.assert_array_equal(a, b)


def test_masked_inputs_are_refused_not_unmasked():
    x = np.ma.masked_array(np.ones((2, 12)), mask=np.zeros((2, 12), bool))
    x[0, 0] = np.ma.masked
    with pytest.raises(ValueError, match="masked"):
        Predictor(kernels()).predict(x)
    with pytest.raises(ValueError, match="masked"):
        SparseMLP(kernels()).predict(x)
