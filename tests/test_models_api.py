"""The model-level API on tiny Keras models: every path checked against Keras' own predict."""

import os
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import prunelib  # noqa: E402
from prunelib.toolkit import chain as ch  # noqa: E402

TOL = 1e-5
D = keras.layers.Dense


def _seq(act="relu", out="softmax", bias=True, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((4, 5)),
            keras.layers.Flatten(),
            D(12, activation=act, use_bias=bias, bias_initializer="glorot_uniform", name="h1"),
            keras.layers.Dropout(0.1),
            D(8, activation=act, use_bias=bias, bias_initializer="glorot_uniform", name="h2"),
            D(3, activation=out, use_bias=bias, name="out"),
        ],
        name="seq",
    )


def _functional(act="tanh", bias=True):
    keras.utils.set_random_seed(1)
    inp = keras.Input((20,))
    h = D(12, use_bias=bias, bias_initializer="glorot_uniform", name="h1")(inp)
    h = keras.layers.Activation(act)(h)
    h = D(8, activation=act, use_bias=bias, bias_initializer="glorot_uniform", name="h2")(h)
    return keras.Model(inp, D(3, name="out", use_bias=bias)(h), name="fun")


def _nested(bias=True):
    keras.utils.set_random_seed(2)
    inner = keras.Sequential(
        [
            keras.Input((20,)),
            D(12, activation="sigmoid", use_bias=bias, bias_initializer="glorot_uniform", name="h1"),
            D(8, activation="relu", use_bias=bias, bias_initializer="glorot_uniform", name="h2"),
        ],
        name="inner",
    )
    inp = keras.Input((4, 5))
    out = D(3, activation="softmax", name="out")(inner(keras.layers.Flatten()(inp)))
    return keras.Model(inp, out, name="nested")


MODELS = {
    "seq-relu-softmax": lambda: _seq(),
    "seq-nobias-linear": lambda: _seq(bias=False, out=None),
    "seq-tanh": lambda: _seq("tanh"),
    "seq-sigmoid": lambda: _seq("sigmoid"),
    "functional": lambda: _functional(),
    "functional-nobias": lambda: _functional("relu", bias=False),
    "nested": lambda: _nested(),
}


def _x(n=64, seed=0):
    return np.random.default_rng(seed).random((n, 4, 5), dtype=np.float32)


def _pred(model, x):
    # Keras' own forward pass (predict's per-model tf.function compile costs seconds per call here)
    return keras.ops.convert_to_numpy(model(x.reshape((len(x), *model.inputs[0].shape[1:])), training=False))


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def test_import_prunelib_stays_light():
    code = "import sys, prunelib; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert "prune_model" in dir(prunelib)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method", ["weight", "unit"])
def test_prune_reconstruct_compact_match_keras(name, method):
    model = MODELS[name]()
    before = _weights(model)
    x = _x()
    pruned = prunelib.prune_model(model, 50, method)
    hidden = ch.dense_layers(pruned)[:-1]
    for layer, orig in zip(hidden, ch.dense_layers(model)[:-1]):
        w = layer.kernel.numpy()
        if method == "weight":
            assert (w == 0).sum() == round(0.5 * w.size)
        else:
            removed = ~w.any(axis=0)
            assert removed.sum() == round(0.5 * w.shape[1])
            if layer.bias is not None:
                assert np.all(layer.bias.numpy()[removed] == 0)
        kept = w != 0
        np.testing.assert_array_equal(w[kept], orig.kernel.numpy()[kept])
    np.testing.assert_array_equal(ch.dense_layers(pruned)[-1].kernel.numpy(), ch.dense_layers(model)[-1].kernel.numpy())
    # the numpy reading of the pruned model is Keras' own answer
    c = ch.chain(pruned, "test")
    np.testing.assert_allclose(ch.predict_chain(c, x), _pred(pruned, x), atol=TOL)

    # calibration rows of exactly the model's input shape (the functional models take them flat)
    fixed = prunelib.reconstruct_model(model, pruned, x.reshape((len(x), *model.inputs[0].shape[1:])))
    for a, b in zip(ch.dense_layers(fixed), ch.dense_layers(pruned)):
        assert np.array_equal(a.kernel.numpy() == 0, b.kernel.numpy() == 0) or method == "unit"
        assert np.all(a.kernel.numpy()[b.kernel.numpy() == 0] == 0)
    err = lambda m: float(np.mean((_pred(m, x) - _pred(model, x)) ** 2))  # noqa: E731
    if method == "weight":  # unit pruning's fixed output layer can leave the end-to-end error higher
        assert err(fixed) <= err(pruned) * 1.05 + 1e-9
    assert np.isfinite(_pred(fixed, x)).all()

    small = prunelib.compact_model(fixed)
    np.testing.assert_allclose(_pred(small, x), _pred(fixed, x), atol=TOL)
    if method == "unit":
        assert sum(layer.units for layer in ch.dense_layers(small)) < sum(
            layer.units for layer in ch.dense_layers(model)
        )
    for a, b in zip(before, model.get_weights()):  # the input model is never mutated
        np.testing.assert_array_equal(a, b)


def test_sigmoid_removed_units_are_folded_not_zeroed():
    model = _seq("sigmoid")
    pruned = prunelib.prune_model(model, 75, "unit")
    small = prunelib.compact_model(pruned)
    assert [layer.units for layer in ch.dense_layers(small)] == [3, 2, 3]
    np.testing.assert_allclose(_pred(small, _x()), _pred(pruned, _x()), atol=TOL)
    # and through model.predict itself (the other tests call the model, which is much faster)
    np.testing.assert_allclose(small.predict(_x(), verbose=0), pruned.predict(_x(), verbose=0), atol=TOL)


def test_skip_and_layers():
    model = _seq()
    pruned = prunelib.prune_model(model, 50, skip=["h1"])
    assert np.all(pruned.get_layer("h1").kernel.numpy() != 0)
    assert (pruned.get_layer("h2").kernel.numpy() == 0).sum() == 48


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda: prunelib.prune_model(keras.Sequential([keras.Input((4,)), keras.layers.Flatten()]), 50), "no Dense"),
        (lambda: prunelib.prune_model(_seq(), 50, skip=["nope"]), "not layers"),
        (lambda: prunelib.prune_model(_seq(), 50, skip="h1"), "list of layer names"),
        (lambda: prunelib.prune_model(_seq(), 150), "percentage"),
        (lambda: prunelib.prune_model(_seq(), 50, "magic"), "unknown pruning method"),
        (lambda: prunelib.prune_model(_seq(), None, "2:3"), r"h1.*skip="),
        (lambda: prunelib.reconstruct_model(_seq(), _seq(), np.zeros((64, 7), np.float32)), "x_calib"),
        (lambda: prunelib.reconstruct_model(_seq(), _seq(), np.zeros((5, 4, 5), np.float32)), "too few"),
        (lambda: prunelib.export(_seq(), "model.h5"), "suffix|format"),
    ],
)
def test_bad_inputs_give_one_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def _conv():
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(2, 3, name="conv"),
            keras.layers.Flatten(),
            D(5, activation="relu", name="h"),
            D(3, name="out"),
        ]
    )


def test_conv_layers_are_pruned_refitted_and_compacted():
    model = _conv()
    pruned = prunelib.prune_model(model, 50)
    assert int((pruned.get_layer("conv").kernel.numpy() == 0).sum()) == 9  # round(0.5 * 18)
    only = prunelib.prune_model(model, 50, layers=["conv"])
    assert np.all(only.get_layer("h").kernel.numpy() == model.get_layer("h").kernel.numpy())
    x = np.random.default_rng(0).random((64, 6, 6, 1), dtype=np.float32)
    np.testing.assert_allclose(
        prunelib.compact_model(pruned).predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5
    )
    fitted = prunelib.reconstruct_model(model, pruned, x)  # tests/test_models_conv_refit.py checks the fit
    assert prunelib.model_masks(fitted).keys() == prunelib.model_masks(pruned).keys()


def test_the_output_layer_is_pruned_only_when_asked():
    model = _seq()

    def zeros(m, name):
        return int((m.get_layer(name).kernel.numpy() == 0).sum())

    assert [zeros(prunelib.prune_model(model, 50), n) for n in ("h1", "out")] == [120, 0]
    assert [zeros(prunelib.prune_model(model, 50, layers=["out"]), n) for n in ("h1", "out")] == [0, 12]
    assert [zeros(prunelib.prune_model(model, 50, include_output=True), n) for n in ("h1", "out")] == [120, 12]


def test_non_elementwise_hidden_activation_is_refused():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), D(4, activation="softmax"), D(2)])
    with pytest.raises(ValueError, match="not elementwise"):
        prunelib.compact_model(model)


def test_branching_model_is_refused_not_misread():
    inp = keras.Input((6,))
    a = D(4, name="a")(inp)
    b = D(4, name="b")(inp)
    model = keras.Model(inp, D(2, name="out")(keras.layers.Add()([a, b])))
    with pytest.raises(ValueError):
        prunelib.compact_model(model)


def test_masks_survive_saving_and_are_checked(tmp_path):
    model = _seq()
    pruned = prunelib.prune_model(model, 50)
    path = tmp_path / "masks.npz"
    prunelib.save_masks(pruned, path)
    masks = prunelib.load_masks(path, model)
    assert set(masks) == {"h1", "h2"}
    again = prunelib.apply_model_masks(model, masks)
    for a, b in zip(again.get_weights(), pruned.get_weights()):
        np.testing.assert_array_equal(a, b)
    prunelib.save_masks({"h1": masks["h1"][:, :4]}, tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="shape"):
        prunelib.load_masks(tmp_path / "bad.npz", model)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a mask file"):
        prunelib.load_masks(tmp_path / "junk.npz")
    no_out = prunelib.apply_model_masks(model, {"out": np.zeros((8, 3), bool)})  # include_output's masks apply
    assert not no_out.get_layer("out").kernel.numpy().any() and not no_out.get_layer("out").bias.numpy().any()
    with pytest.raises(ValueError, match="output layer"):  # the re-fit keeps the dense output layer
        prunelib.reconstruct_model(model, pruned, _x(), masks={"out": np.zeros((8, 3), bool)})
    with pytest.raises(ValueError, match="output layer"):
        prunelib.reconstruct_model(model, prunelib.prune_model(model, 50, include_output=True), _x())


def test_predictor_from_model_is_exact_or_refuses():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), D(6, activation="relu", use_bias=False), D(3, use_bias=False)])
    x = np.random.default_rng(0).random((5, 8), dtype=np.float32)
    fast = prunelib.predictor_from_model(prunelib.prune_model(model, 50))
    np.testing.assert_allclose(fast.predict(x), _pred(prunelib.prune_model(model, 50), x), atol=TOL)
    conv = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(), D(3)])
    with pytest.raises(ValueError, match="'conv2d.*' \\(Conv2D\\): export it .* ONNX Runtime"):
        prunelib.predictor_from_model(conv)


@pytest.mark.parametrize("out", ["linear", "softmax", "sigmoid"])
@pytest.mark.parametrize("act", ["relu", "tanh", "gelu", "elu", "sigmoid", "silu"])
def test_predictor_from_model_computes_every_elementwise_activation_and_output(act, out):
    x = _x(32)
    for model in (_seq(act, out), prunelib.prune_model(_seq(act, out), 50, "unit")):
        fast = prunelib.predictor_from_model(model)
        if act != "relu" or out != "linear":
            assert "sparse" not in fast.paths
        want = _pred(model, x)
        for path in fast.paths:
            np.testing.assert_allclose(fast.run(path, x), want, rtol=1e-5, atol=1e-5, err_msg=path)
        np.testing.assert_allclose(fast.predict(x), want, rtol=1e-5, atol=1e-5)


def test_predictor_from_model_reads_a_softmax_layer_after_the_output():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), D(6, activation="tanh"), D(3), keras.layers.Softmax()])
    x = np.random.default_rng(0).random((5, 8), dtype=np.float32)
    np.testing.assert_allclose(prunelib.predictor_from_model(model).predict(x), _pred(model, x), atol=1e-5)


@pytest.mark.parametrize("suffix", [".onnx", ".tflite", ".keras"])
def test_export_matches_keras(tmp_path, suffix):
    pytest.importorskip("onnxruntime") if suffix == ".onnx" else None
    from prunelib.toolkit.exporting import onnx_predict, tflite_predict

    model = prunelib.compact_model(prunelib.prune_model(_seq(), 50, "unit"))
    x = _x(16)
    path = prunelib.export(model, tmp_path / f"m{suffix}")
    if suffix == ".onnx":
        got = onnx_predict(path, x)
    elif suffix == ".tflite":
        got = tflite_predict(path, x)
    else:
        got = _pred(keras.models.load_model(path), x)
    np.testing.assert_allclose(got, _pred(model, x), atol=TOL)


@pytest.mark.parametrize("k", [0, 90, 97, 100])
@pytest.mark.parametrize("act", ["relu", "sigmoid"])
def test_every_k_prunes_the_exact_count_and_compacts_exactly(k, act):
    model = _seq(act)
    x = _x(16)
    for method in ("weight", "unit"):
        pruned = prunelib.prune_model(model, k, method)
        for layer in ch.dense_layers(pruned)[:-1]:
            w = layer.kernel.numpy()
            n = w.size if method == "weight" else w.shape[1]
            gone = (w == 0).sum() if method == "weight" else (~w.any(axis=0)).sum()
            assert gone == round(k / 100 * n)
        small = prunelib.compact_model(pruned)
        np.testing.assert_allclose(_pred(small, x), _pred(pruned, x), atol=TOL)


def test_predictor_from_model_equals_the_model_with_biases_and_a_softmax():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(9, "relu"), keras.layers.Dense(4)])
    for layer in model.layers:  # nonzero biases, so the test can tell a bias-free answer apart
        layer.bias.assign(np.linspace(-1, 1, layer.units).astype(np.float32))
    x = np.random.default_rng(0).random((16, 12), dtype=np.float32)
    pruned = prunelib.prune_model(model, 90, "unit")
    for m in (model, pruned):
        np.testing.assert_allclose(prunelib.predictor_from_model(m).predict(x), m(x).numpy(), atol=1e-5)
    soft = keras.Sequential([keras.Input((12,)), keras.layers.Dense(4, activation="softmax")])
    np.testing.assert_allclose(prunelib.predictor_from_model(soft).predict(x), soft(x).numpy(), atol=1e-5)


def test_reconstruct_model_exact_and_default_solvers_agree(monkeypatch):
    """``exact=True`` reaches the core's factorizations; the default's conjugate gradients (forced
    onto these tiny layers) fit the same function: they stop at a small residual, which bounds the
    error of the fit's outputs, not of each weight along directions the inputs barely excite."""
    from prunelib.core import reconstruct as core

    model, x = _seq(), _x()
    pruned = prunelib.prune_model(model, 50)
    exact = prunelib.reconstruct_model(model, pruned, x, exact=True)
    monkeypatch.setattr(core, "_EXACT_SIZE", 0)
    default = prunelib.reconstruct_model(model, pruned, x)
    for a, b in zip(ch.dense_layers(default), ch.dense_layers(exact)):
        assert np.array_equal(a.kernel.numpy() == 0, b.kernel.numpy() == 0)
    np.testing.assert_allclose(_pred(default, x), _pred(exact, x), atol=1e-3)
    with pytest.raises(ValueError, match="exact must be True or False"):
        prunelib.reconstruct_model(model, pruned, x, exact="yes")
