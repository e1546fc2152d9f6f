"""The one numpy forward pass: what evaluation, reconstruction and inference all run."""

import numpy as np
import pytest

from prunelib.core import forward
from prunelib.core.evaluate import check_evaluation, evaluate_kernels
from prunelib.inference.predictor import blas_forward


def _net(seed=0, sizes=(12, 9, 7, 4), bias=False):
    rng = np.random.default_rng(seed)
    kernels = [rng.standard_normal((a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.standard_normal(b).astype(np.float32) for b in sizes[1:]] if bias else None
    return kernels, biases


def _reference(kernels, x, biases=None):
    h = x.reshape(len(x), kernels[0].shape[0]).astype(np.float64)
    for i, w in enumerate(kernels):
        h = h @ w.astype(np.float64) + (0 if biases is None else biases[i])
        if i < len(kernels) - 1:
            h = np.maximum(h, 0)
    return h


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("n,chunk", [(1, 4096), (50, 7), (64, 64), (0, 8)])
def test_logits_match_a_float64_reference_in_any_chunking(bias, n, chunk):
    kernels, biases = _net(bias=bias)
    x = np.random.default_rng(1).random((n, 3, 4), dtype=np.float32)
    out = forward.logits(kernels, x, biases, chunk=chunk)
    assert out.shape == (n, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference(kernels, x, biases), rtol=1e-4, atol=1e-4)
    # BLAS picks its kernel by matrix size, so blocks of other sizes may differ in the last bits
    # (seen on an AMD EPYC); a given chunking is deterministic.
    np.testing.assert_allclose(out, forward.logits(kernels, x, biases, chunk=max(n, 1)), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out, forward.logits(kernels, x, biases, chunk=chunk))


def test_activations_are_relu_between_layers_and_linear_logits():
    kernels, biases = _net(bias=True)
    x = np.random.default_rng(2).random((20, 12), dtype=np.float32)
    layers = list(forward.activations(kernels, x, biases))
    assert [h.shape[1] for h in layers] == [9, 7, 4]
    assert all((h >= 0).all() for h in layers[:-1]) and (layers[-1] < 0).any()
    np.testing.assert_array_equal(layers[-1], forward.logits(kernels, x, biases))


def test_inputs_are_never_modified():
    kernels, biases = _net(bias=True)
    x = np.random.default_rng(3).random((10, 12), dtype=np.float32)
    before = [x.copy(), *[w.copy() for w in kernels], *[b.copy() for b in biases]]
    forward.logits(kernels, x, biases)
    list(forward.activations(kernels, x, biases))
    for a, b in zip(before, [x, *kernels, *biases]):
        np.testing.assert_array_equal(a, b)


def test_bias_count_must_match():
    kernels, biases = _net(bias=True)
    with pytest.raises(ValueError, match="3 kernels but 2 biases"):
        forward.logits(kernels, np.zeros((1, 12), np.float32), biases[:2])


def test_evaluation_and_inference_run_the_shared_forward_pass():
    kernels, biases = _net(bias=True)
    x = np.random.default_rng(4).random((30, 12), dtype=np.float32)
    z = forward.logits(kernels, x, biases)
    y = np.argmax(z, axis=1)
    accuracy, loss = evaluate_kernels(kernels, x, y, biases)
    assert accuracy == 100.0
    ref = _reference(kernels, x, biases)
    expected = np.mean(np.log(np.exp(ref - ref.max(1, keepdims=True)).sum(1)) + ref.max(1) - ref[np.arange(30), y])
    assert loss == pytest.approx(expected, rel=1e-4)
    np.testing.assert_array_equal(blas_forward(kernels)(x), forward.logits(kernels, x))


@pytest.mark.parametrize(
    "labels,match",
    [
        (np.zeros(29, int), "one integer label per image"),
        (np.full(30, 4), r"labels must lie in \[0, 4\)"),
        (np.full(30, -1), r"labels must lie in \[0, 4\)"),
    ],
)
def test_evaluation_names_bad_labels(labels, match):
    kernels, _ = _net()
    with pytest.raises(ValueError, match=match):
        evaluate_kernels(kernels, np.zeros((30, 12), np.float32), labels)


@pytest.mark.parametrize("shape", [(1,), (9,), (7, 1), ()])
def test_evaluation_refuses_a_bias_that_would_broadcast_over_the_units(shape):
    kernels, biases = _net(bias=True)
    biases[1] = np.ones(shape, np.float32)  # kernel 1 has 7 units
    x = np.ones((5, 12), np.float32)
    with pytest.raises(ValueError, match=r"bias 1 has shape .*; kernel 1 has 7 units"):
        evaluate_kernels(kernels, x, np.zeros(5, int), biases)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"y": np.full(30, 4)}, r"labels must lie in \[0, 4\)"),
        ({"y": np.zeros(30)}, "labels must be integers"),
        ({"x": np.zeros((30, 11), np.float32)}, "first kernel's 12 inputs"),
        ({"x": np.zeros((0, 12), np.float32), "y": np.zeros(0, int)}, "non-empty batch"),
        ({"biases": [None, np.zeros(8), None]}, "bias 1 has shape"),
    ],
)
def test_check_evaluation_refuses_what_evaluation_refuses_without_a_forward_pass(monkeypatch, bad, match):
    kernels, _ = _net()
    args = {"x": np.zeros((30, 12), np.float32), "y": np.zeros(30, int), "biases": None, **bad}
    with pytest.raises(ValueError, match=match):
        evaluate_kernels(kernels, **args)
    monkeypatch.setattr(forward, "logits", lambda *a, **k: pytest.fail("a forward pass ran"))
    with pytest.raises(ValueError, match=match):
        check_evaluation(kernels, **args)
    good = {"x": np.zeros((30, 12), np.float32), "y": np.zeros(30, int), "biases": None}
    assert check_evaluation(kernels, **good)[2] == [None, None, None]


def test_relu_writes_into_out_when_given():
    x = np.array([[-1.5, 0.0, 2.0]], np.float32)
    buf = np.full_like(x, 7.0)
    result = forward.relu(x, out=buf)
    assert result is buf
    np.testing.assert_array_equal(buf, [[0.0, 0.0, 2.0]])
    np.testing.assert_array_equal(x, [[-1.5, 0.0, 2.0]])  # the input stays as it was


def _reference_acts(kernels, x, biases, acts):
    h = x.reshape(len(x), kernels[0].shape[0]).astype(np.float64)
    for i, (w, b, f) in enumerate(zip(kernels, biases, acts)):
        h = h @ w.astype(np.float64) + b
        h = (np.maximum(h, 0) if i < len(kernels) - 1 else h) if f is None else f(h)
    return h


@pytest.mark.parametrize(
    "acts",
    [[np.tanh, np.tanh, None], [None, np.sin, np.tanh], [np.tanh, None, np.exp]],
    ids=["hidden", "mixed", "output"],
)
def test_given_activations_replace_the_default_per_layer(acts):
    kernels, biases = _net(bias=True)
    x = np.random.default_rng(5).random((20, 12), dtype=np.float32)
    expected = _reference_acts(kernels, x, biases, acts)
    layers = list(forward.activations(kernels, x, biases, acts=acts))
    assert [h.dtype for h in layers] == [np.float32] * 3
    np.testing.assert_allclose(layers[-1], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(forward.logits(kernels, x, biases, chunk=7, acts=acts), expected, rtol=1e-4, atol=1e-4)


def test_apply_keeps_the_dtype_and_refuses_non_elementwise_activations():
    z = np.array([[1.0, -2.0]], np.float32)
    out = forward.apply(lambda a: a.astype(np.float64) * 2, z)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[2.0, -4.0]])
    with pytest.raises(
        ValueError, match=r"turned shape \(1, 2\) into \(1,\); only elementwise activations are supported$"
    ):
        forward.apply(lambda a: a.sum(axis=1), z)


@pytest.mark.parametrize("n_acts", [2, 4])
def test_activation_count_must_match(n_acts):
    kernels, _ = _net()
    x = np.zeros((1, 12), np.float32)
    with pytest.raises(ValueError, match=f"3 kernels but {n_acts} activations; give one per kernel"):
        forward.logits(kernels, x, acts=[None] * n_acts)
    with pytest.raises(ValueError, match=f"3 kernels but {n_acts} activations; give one per kernel"):
        list(forward.activations(kernels, x, acts=[None] * n_acts))


@pytest.mark.parametrize(
    "x_dtype, kernel_dtypes, expected",
    [
        (np.float64, (np.float32, np.float32, np.float32), np.float64),
        (np.float32, (np.float64, np.float64, np.float64), np.float64),
        (np.float32, (np.float32, np.float32, np.float64), np.float64),
    ],
)
def test_logits_keep_the_precision_of_the_computation(x_dtype, kernel_dtypes, expected):
    """Float64 inputs or a float64 logit kernel give float64 logits: the last layer's own values."""
    kernels, _ = _net()
    kernels = [w.astype(t) for w, t in zip(kernels, kernel_dtypes)]
    x = np.random.default_rng(6).random((9, 12)).astype(x_dtype)
    out = forward.logits(kernels, x)
    *_, last = forward.activations(kernels, x)
    assert out.dtype == last.dtype == expected
    np.testing.assert_array_equal(out, last)
