"""Round 4 of the fault hunt, on the model-level API's convolution paths and the Keras readings.

Each test fails on the code before its fix: a re-fit of a layer Keras computes otherwise, a bias
counted as a pruned weight, a model of several outputs or a softmax over channels in compaction,
inputs of unknown size, a function of the user's own, fractions of a percent, untouched layers.
"""

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import prunelib  # noqa: E402

L = keras.layers


def _x(shape, n=32, seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def _pred(model, x):
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(model(x, training=False))]


def test_a_layer_keras_computes_otherwise_is_refused_not_refitted():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(4, 3, name="c"), L.Flatten(), L.Dense(2)])
    pruned = prunelib.prune_model(model, 50)
    layer = model.get_layer("c")
    plain = layer.call
    layer.call = lambda inputs, *a, **k: plain(inputs) + 1.0  # what Keras runs is not kernel and bias
    with pytest.raises(ValueError, match="layer 'c' \\(Conv2D\\) does not compute what its kernel and bias give"):
        prunelib.reconstruct_model(model, pruned, _x((6, 6, 2)))


def test_zero_biases_are_not_counted_as_pruned_weights():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Conv2D(16, 1, activation="relu"), L.Flatten(), L.Dense(3)])
    x = _x((4, 4, 1))
    pruned = prunelib.post_training_model(model, 10, x, method="magnitude+lstsq")
    prunelib.reconstruct_model(model, pruned, x)  # was refused: "are they swapped?"
    with pytest.raises(
        ValueError, match=r"model has \d+ zero weights in its kernel layers and pruned only 0: are they"
    ):
        prunelib.reconstruct_model(pruned, model, x)


def test_a_cnn_with_two_heads_is_compacted():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2))
    f = L.Flatten()(L.Conv2D(4, 3, activation="tanh", name="a")(inp))
    model = keras.Model(inp, [L.Dense(2, name="h1")(f), L.Dense(3, activation="softmax", name="h2")(f)])
    pruned = prunelib.prune_model(model, 50, "unit")
    small = prunelib.compact_model(pruned)
    x = _x((6, 6, 2), 8)
    for got, want in zip(_pred(small, x), _pred(pruned, x), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("where", ["conv", "layer"])
def test_a_softmax_over_channels_keeps_them_all(where):
    keras.utils.set_random_seed(0)
    conv = L.Conv2D(6, 3, activation="softmax" if where == "conv" else None, name="c")
    layers = [keras.Input((6, 6, 2)), conv] + ([L.Activation("softmax")] if where == "layer" else [])
    model = keras.Sequential([*layers, L.Flatten(), L.Dense(3)])
    pruned = prunelib.prune_model(model, 50, "unit")
    small = prunelib.compact_model(pruned)
    assert small.get_layer("c").kernel.shape == (3, 3, 2, 6)
    x = _x((6, 6, 2), 8)
    np.testing.assert_allclose(_pred(small, x)[0], _pred(pruned, x)[0], rtol=1e-5, atol=1e-5)


def test_inputs_of_unknown_size_get_advice_that_can_be_followed():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((None, 3)), L.Conv1D(4, 3, activation="relu"), L.GlobalMaxPooling1D(), L.Dense(2)]
    )
    with pytest.raises(ValueError, match=r"inputs of unknown size \(None, 3\).*keras.Input"):
        prunelib.reconstruct_model(model, prunelib.prune_model(model, 50), _x((10, 3)))


def scaled_tanh(z):  # a function of the user's own, registered nowhere
    return keras.ops.tanh(z) * 2 + 0.1


@pytest.mark.parametrize("op", ["prune", "post", "compact", "predictor", "reconstruct"])
def test_a_function_of_the_users_own_is_computed_as_itself(op):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, activation=scaled_tanh, name="h"), L.Dense(3)])
    x = _x((6,))
    calls = {
        "prune": lambda: prunelib.prune_model(model, 50),
        "post": lambda: prunelib.post_training_model(model, 0, x),
        "compact": lambda: prunelib.compact_model(model),
        "predictor": lambda: prunelib.predictor_from_model(model),
        "reconstruct": lambda: prunelib.reconstruct_model(model, model, x),
    }
    result = calls[op]()
    if op == "prune":
        assert result.get_layer("h").activation is scaled_tanh
        return
    got = result.predict(x) if op == "predictor" else _pred(result, x)[0]
    np.testing.assert_allclose(got, _pred(model, x)[0], rtol=1e-4, atol=1e-4)


def test_a_function_mixing_units_is_still_refused_as_not_elementwise():
    keras.utils.set_random_seed(0)

    def centered(z):
        return z - keras.ops.mean(z, axis=-1, keepdims=True)

    model = keras.Sequential([keras.Input((6,)), L.Dense(8, activation=centered, name="h"), L.Dense(3)])
    with pytest.raises(ValueError, match="'centered' of layer 'h': it is not elementwise"):
        prunelib.compact_model(model)


def test_post_training_model_warns_about_fractions_and_untouched_layers():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 3)), L.Conv1D(4, 3, name="c"), L.LSTM(4, name="lstm"), L.Dense(2, name="out")]
    )
    x = _x((8, 3))
    with pytest.warns(UserWarning, match="k is a percent: k=0.8 prunes 0.8 %"):
        prunelib.post_training_model(model, 0.8, x)
    with pytest.warns(UserWarning, match=r"lstm \(LSTM\).*post_training_model does not prune"):
        prunelib.post_training_model(model, 50, x)


def test_an_embedding_is_refused_with_advice_post_training_can_follow():
    keras.utils.set_random_seed(0)
    inp = keras.Input((5,), dtype="int32")
    h = L.Conv1D(4, 2, name="c")(L.Embedding(10, 4, name="emb")(inp))
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(h)))
    with pytest.raises(ValueError, match="'emb' is a Embedding: prune it with prune_model") as err:
        prunelib.post_training_model(model, 50, np.arange(50).reshape(10, 5) % 10)
    assert "skip it, or" not in str(err.value)


def test_a_model_on_a_list_of_one_input_is_called_without_keras_warnings():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2))
    model = keras.Model([inp], L.Dense(3)(L.Flatten()(L.Conv2D(4, 3, activation="relu")(inp))))
    x = _x((6, 6, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruned = prunelib.prune_model(model, 50, "unit")
        prunelib.reconstruct_model(model, pruned, x)
        prunelib.compact_model(pruned)


def _mlp(act=None, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((6,)), L.Dense(8, name="h0", bias_initializer="random_normal")]
    layers += [L.Activation(act)] if act is not None else []
    return keras.Sequential([*layers, L.Dense(3, name="out")])


def test_masks_of_a_model_quantized_after_pruning_are_refused_by_name(tmp_path):
    model = prunelib.prune_model(_mlp(), 50)
    model.quantize("int8")
    with pytest.raises(ValueError, match="'h0' is quantized \\(int8\\)"):
        prunelib.model_masks(model)
    with pytest.raises(ValueError, match="'h0' is quantized \\(int8\\)"):
        prunelib.save_masks(model, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_an_activation_layer_of_a_users_function_is_compacted():
    def myact(z):
        return keras.ops.tanh(z) * 1.5 + 0.1 * z

    pruned = prunelib.prune_model(_mlp(myact), 50, "unit")
    small = prunelib.compact_model(pruned)
    x = _x((6,), 8)
    np.testing.assert_allclose(_pred(small, x)[0], _pred(pruned, x)[0], rtol=1e-5, atol=1e-5)


def test_a_keras_file_that_loads_only_with_the_users_function_says_so(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, activation=scaled_tanh), L.Dense(3)])
    with pytest.warns(UserWarning, match=r"loads only with your own \['scaled_tanh'\] given: .*custom_objects"):
        path = prunelib.export(model, tmp_path / "m.keras")
    again = keras.models.load_model(path, custom_objects={"scaled_tanh": scaled_tanh})
    x = _x((6,), 4)
    np.testing.assert_allclose(_pred(again, x)[0], _pred(model, x)[0], rtol=1e-6, atol=1e-6)


def test_a_keras_file_that_predicts_something_else_is_not_written(tmp_path, monkeypatch):
    model = _mlp()
    target = tmp_path / "m.keras"
    target.write_bytes(b"previous")
    real = keras.models.load_model

    def shifted(*args, **kwargs):  # a file whose model computes something else once loaded
        loaded = real(*args, **kwargs)
        layer = loaded.get_layer("out")
        layer.bias.assign(layer.bias.numpy() + 1.0)
        return loaded

    monkeypatch.setattr(keras.models, "load_model", shifted)  # exporting reads keras.models.load_model at call time
    with pytest.raises(ValueError, match="the file loaded back predicts something else"):
        prunelib.export(model, target)
    assert target.read_bytes() == b"previous"


def test_a_lambda_layer_gets_the_whole_advice():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, name="h0"), L.Lambda(lambda z: z * 2), L.Dense(3)])
    with pytest.raises(
        ValueError, match="Lambda layer .*keras.config.enable_unsafe_deserialization\\(\\) if you trust the model$"
    ):
        prunelib.prune_model(model, 50)


def test_one_row_of_calibration_data_is_told_to_be_a_batch():
    model = _mlp()
    with pytest.raises(ValueError, match=r"x_calib is one input of shape \(6,\); pass a batch \(n, 6\) \(x\[None\]"):
        prunelib.reconstruct_model(model, prunelib.prune_model(model, 50), _x((6,))[0])


def test_exports_of_a_model_on_a_list_of_one_input_raise_no_keras_warning(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    model = keras.Model([inp], L.Dense(3)(L.Dense(8, activation="relu")(inp)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        for suffix in (".onnx", ".keras"):
            prunelib.export(model, tmp_path / f"m{suffix}")


@keras.saving.register_keras_serializable("prunelib_tests")
class _Scale(L.Layer):
    """A layer whose config forgets its factor: loaded back, it computes something else."""

    def __init__(self, s=1.0, **kwargs):
        super().__init__(**kwargs)
        self.s = s

    def call(self, x):
        return x * self.s

    def get_config(self):
        config = super().get_config()
        config.pop("s", None)  # the factor is lost: the saved layer computes x * 1
        return config


def test_a_keras_file_of_a_two_input_model_is_compared_before_it_is_written(tmp_path):
    keras.utils.set_random_seed(0)
    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], L.Dense(3)(_Scale(3.0)(L.Add()([L.Dense(4)(a), L.Dense(4)(b)]))))
    target = tmp_path / "m.keras"
    target.write_bytes(b"previous")
    with pytest.raises(ValueError, match="the file loaded back predicts something else"):
        prunelib.export(model, target)
    assert target.read_bytes() == b"previous"


def test_onnx_and_tflite_predict_return_every_output(tmp_path):
    from prunelib.toolkit.exporting import onnx_predict, tflite_predict

    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    h = L.Dense(8, activation="relu")(inp)
    model = keras.Model(inp, [L.Dense(2)(h), L.Dense(3)(h)])
    x = _x((6,), 5)
    want = _pred(model, x)
    for suffix, run in ((".onnx", onnx_predict), (".tflite", tflite_predict)):
        got = run(prunelib.export(model, tmp_path / f"m{suffix}"), x)
        assert isinstance(got, list) and sorted(g.shape for g in got) == sorted(w.shape for w in want), suffix


def test_a_name_given_twice_in_layers_is_named_as_the_users_repeat():
    with pytest.raises(ValueError, match=r"layers= names \['out'\] more than once; name each layer once"):
        prunelib.prune_model(_mlp(), 50, layers=["out", "out"])


def test_a_damping_too_small_for_the_data_says_so(monkeypatch):
    model = _mlp()
    x = _x((6,))

    def singular(*args, **kwargs):  # what numpy raises where the damping regularizes nothing
        raise np.linalg.LinAlgError("Singular matrix")

    from prunelib.toolkit import api

    monkeypatch.setattr(api, "reconstruct_with_biases", singular)
    with pytest.raises(ValueError, match="singular at damping=1e-300 .* raise damping"):
        prunelib.reconstruct_model(model, prunelib.prune_model(model, 50), x, damping=1e-300)


def test_an_iterator_as_calibration_data_is_told_to_be_an_array():
    model = _mlp()
    with pytest.raises(ValueError, match=r"x_calib must be an array \(n, 6\), got list_iterator"):
        prunelib.post_training_model(model, 50, iter(list(_x((6,)))), method="obs-gradual")
