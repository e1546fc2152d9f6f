"""prunelib.export: quantized files (issue 36) and files verified before they are put in place (issue 38).

Quantized files are compared with Keras on random inputs within the tolerances below (measured on
these models: float16 at most 1.4e-4, int8 at most 3.6e-3, with outputs up to 0.43 in size); float
files within 1e-5. Every file is run by the runtime a deployment uses: onnxruntime, and the LiteRT
interpreter (``ai-edge-litert``) for TFLite.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

import prunelib  # noqa: E402
from prunelib.toolkit import exporting  # noqa: E402
from prunelib.toolkit.exporting import onnx_predict, tflite_predict  # noqa: E402

D = keras.layers.Dense
PREDICT = {".onnx": onnx_predict, ".tflite": tflite_predict}
# the largest difference from Keras allowed, relative to the outputs' largest magnitude (at least 1)
TOL = {None: 1e-5, "float16": 1e-3, "int8": 2e-2}


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((784,)), D(256, activation="relu"), D(10, activation="softmax")], name="mlp_784_256_10"
    )


def _cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            D(10),
        ],
        name="cnn",
    )


def _tiny(activation="relu", seed=0, name="tiny"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((5,)), D(4, activation=activation), D(2)], name=name)


def _x(model, n=64, seed=1):
    return np.random.default_rng(seed).random((n, *model.inputs[0].shape[1:]), dtype=np.float32)


def _previous(path):
    path.write_bytes(b"the user's previous file " * 100)
    return path.read_bytes()


def _only(path):
    """The directory holds the target file and nothing else (no temporary file left behind)."""
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.fixture(scope="module")
def mlp_files(tmp_path_factory):
    model, folder = _mlp(), tmp_path_factory.mktemp("mlp")
    files = {
        (suffix, q): prunelib.export(model, folder / f"m-{q}{suffix}", quantize=q)
        for suffix in PREDICT
        for q in (None, "float16", "int8")
    }
    return model, files


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_quantized_files_are_a_half_and_a_quarter_of_the_float_file(mlp_files, suffix):
    # Measured on 784-256-10 (203,530 weights): .tflite 814,508 / 408,348 / 207,992 bytes (0.501 and
    # 0.255), .onnx 813,715 / 407,589 / 205,913 (0.501 and 0.253). A quantized file keeps its graph,
    # float32 biases and (int8) one float32 scale per unit beside the weights, so it is half or a
    # quarter of the float file plus those few KB, not below.
    _, files = mlp_files
    full = files[suffix, None].stat().st_size
    assert files[suffix, "float16"].stat().st_size <= 0.505 * full
    assert files[suffix, "int8"].stat().st_size <= 0.26 * full


@pytest.mark.parametrize("quantize", [None, "float16", "int8"])
@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_each_file_predicts_as_keras_within_its_tolerance(mlp_files, suffix, quantize):
    model, files = mlp_files
    x = _x(model)
    want = model(x).numpy()
    got = PREDICT[suffix](files[suffix, quantize], x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= TOL[quantize] * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("quantize", [None, "float16", "int8"])
@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_a_conv_model_exports_quantized(tmp_path, suffix, quantize):
    model = _cnn()
    x = _x(model)
    path = prunelib.export(model, tmp_path / f"cnn{suffix}", quantize=quantize)
    want = model(x).numpy()
    assert np.abs(PREDICT[suffix](path, x) - want).max() <= TOL[quantize] * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_every_head_of_a_two_headed_model_is_verified_in_order(tmp_path, suffix):
    keras.utils.set_random_seed(0)
    inp = keras.Input((5,))
    h = D(4, activation="relu")(inp)
    model = keras.Model(inp, [D(3, name="a")(h), D(2, name="b")(h)], name="two_heads")
    assert prunelib.export(model, tmp_path / f"m{suffix}").stat().st_size > 0


@pytest.mark.parametrize("activation", ["gelu", "celu"])
def test_an_onnx_file_that_onnxruntime_refuses_is_not_written(tmp_path, activation):
    # tf2onnx converts Erfc (gelu) and Expm1 (celu) into ops onnxruntime has not got, logs it and
    # writes the file anyway: onnxruntime refuses it (INVALID_GRAPH)
    model = _tiny(activation, name=f"with_{activation}")
    path = tmp_path / "m.onnx"
    before = _previous(path)
    with pytest.raises(ValueError, match=f"with_{activation}.*onnxruntime cannot load it") as err:
        prunelib.export(model, path)
    message = str(err.value)
    assert "\n" not in message
    assert "no op" in message and repr(model.layers[0].name) in message  # the op and its layer
    assert path.read_bytes() == before
    _only(path)
    path.unlink()
    with pytest.raises(ValueError, match="onnxruntime"):
        prunelib.export(model, path)
    assert list(tmp_path.iterdir()) == []
    # the same model as TFLite is fine, and equal to Keras
    x = _x(model, 8)
    np.testing.assert_allclose(tflite_predict(prunelib.export(model, tmp_path / "m.tflite"), x), model(x), atol=1e-5)


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_a_file_that_differs_from_keras_is_not_written(tmp_path, monkeypatch, suffix):
    model, other = _tiny(seed=0), _tiny(seed=1)  # a converter that wrote another model's weights
    other(_x(other, 1))  # Keras' exporters need a model that has run once
    if suffix == ".onnx":
        real = exporting._keras_onnx
        monkeypatch.setattr(exporting, "_keras_onnx", lambda _, tmp: real(other, tmp))
    else:
        real = exporting._tflite_bytes
        monkeypatch.setattr(exporting, "_tflite_bytes", lambda _, quantize=None: real(other, quantize))
    path = tmp_path / f"m{suffix}"
    before = _previous(path)
    with pytest.raises(ValueError, match="'tiny'.*failed verification: output 0 differs from Keras'"):
        prunelib.export(model, path)
    assert path.read_bytes() == before
    _only(path)


def test_a_tflite_file_that_litert_cannot_load_is_not_written(tmp_path, monkeypatch):
    monkeypatch.setattr(exporting, "_tflite_bytes", lambda *_: b"TFL3 not a flatbuffer")
    path = tmp_path / "m.tflite"
    before = _previous(path)
    with pytest.raises(ValueError, match="LiteRT interpreter cannot load it") as err:
        prunelib.export(_tiny(), path)
    assert "\n" not in str(err.value)
    assert path.read_bytes() == before
    _only(path)


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_a_float16_file_of_weights_beyond_float16_is_refused(tmp_path, suffix):
    # both converters clamp such weights to 65504: a file off by 25 % here, without a word
    model = _tiny(name="big")
    kernel, bias = model.layers[1].get_weights()
    model.layers[1].set_weights([np.where(np.arange(kernel.size).reshape(kernel.shape) == 3, 1e5, kernel), bias])
    with pytest.raises(ValueError, match=f"'big'.*beyond float16's range.*{model.layers[1].name}/kernel"):
        prunelib.export(model, tmp_path / f"m{suffix}", quantize="float16")
    assert list(tmp_path.iterdir()) == []
    assert prunelib.export(model, tmp_path / f"m{suffix}", quantize="int8").stat().st_size > 0


def test_a_file_with_non_finite_outputs_where_keras_has_none_is_not_written(tmp_path, monkeypatch):
    model, other = _tiny(), _tiny()
    kernel, bias = other.layers[1].get_weights()
    other.layers[1].set_weights([np.full_like(kernel, 3e38), bias])  # its outputs overflow to inf
    other(_x(other, 1))
    real = exporting._keras_onnx
    monkeypatch.setattr(exporting, "_keras_onnx", lambda _, tmp: real(other, tmp))
    with pytest.raises(ValueError, match="NaN or infinite where Keras' is finite"):
        prunelib.export(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("quantize", ["int4", "INT8", "", 8, True, ["int8"]])
def test_an_unknown_quantize_is_refused_before_any_work(tmp_path, quantize):
    path = tmp_path / "new" / "m.onnx"
    with pytest.raises(ValueError, match='quantize must be None, "float16" or "int8"'):
        prunelib.export(_tiny(), path, quantize=quantize)
    with pytest.raises(ValueError, match="quantize must be"):  # before the model is even looked at
        prunelib.export(keras.Sequential([D(2)]), path, quantize=quantize)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("quantize", ["float16", "int8"])
def test_a_quantized_keras_file_is_refused(tmp_path, quantize):
    path = tmp_path / "new" / "m.keras"
    with pytest.raises(ValueError, match=r"applies to \.onnx and \.tflite files.*model\.quantize"):
        prunelib.export(_tiny(), path, quantize=quantize)
    assert list(tmp_path.iterdir()) == []


def test_tflite_predict_runs_on_litert_not_tf_lite(tmp_path, monkeypatch, recwarn):
    import tensorflow as tf

    model = _tiny()
    path = prunelib.export(model, tmp_path / "m.tflite")

    def refused(*args, **kwargs):
        raise AssertionError("tf.lite.Interpreter used")

    monkeypatch.setattr(tf.lite, "Interpreter", refused)
    x = _x(model, 8)
    np.testing.assert_allclose(tflite_predict(path, x), model(x), atol=1e-5)
    assert not [w for w in recwarn if "LiteRT" in str(w.message) or "tf.lite" in str(w.message)]


# -- fault hunt, round 3 -----------------------------------------------------------------------


def _embedding():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((4,), dtype="int32"), keras.layers.Embedding(10, 4), keras.layers.Flatten(), D(2)], name="emb"
    )


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_an_int32_input_model_exports_to_onnx_and_is_verified(tmp_path, quantize, monkeypatch):
    model = _embedding()
    fed = []
    real = exporting._onnx_runner

    def watched(path):
        specs, run = real(path)
        return specs, lambda arrays: (fed.extend(arrays), run(arrays))[1]

    monkeypatch.setattr(exporting, "_onnx_runner", watched)
    path = prunelib.export(model, tmp_path / "m.onnx", quantize=quantize)
    assert [a.dtype for a in fed] == [np.int32]  # the file's own input type, and it ran
    session = exporting.onnx_session(path)
    x = np.random.default_rng(0).integers(0, 10, (3, 4)).astype(np.int32)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, model(x).numpy(), atol=TOL[quantize])


def test_a_never_called_two_input_model_exports_to_onnx(tmp_path):
    keras.utils.set_random_seed(0)
    a, b = keras.Input((3,)), keras.Input((2,))
    model = keras.Model([a, b], D(2)(keras.layers.Concatenate()([a, b])), name="two_inputs")
    path = prunelib.export(model, tmp_path / "m.onnx")
    session = exporting.onnx_session(path)
    x = [np.ones((1, 3), np.float32), np.ones((1, 2), np.float32)]
    got = session.run(None, {i.name: v for i, v in zip(session.get_inputs(), x)})[0]
    np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5)


class _Sub(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.a = D(4, activation="relu")
        self.b = D(2)

    def call(self, x):
        return self.b(self.a(x))


def test_a_compiled_subclassed_model_exports_to_keras_without_its_optimizer(tmp_path, recwarn):
    model = _Sub(name="sub")
    x = np.random.default_rng(0).random((4, 5), dtype=np.float32)
    model(x)
    model.compile("adam", "mse")
    model.fit(x, np.zeros((4, 2)), verbose=0)  # an optimizer with state
    path = prunelib.export(model, tmp_path / "m.keras")
    assert not [w for w in recwarn if "optimizer" in str(w.message)]
    again = keras.models.load_model(path, custom_objects={"_Sub": _Sub})
    np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), rtol=1e-6)
