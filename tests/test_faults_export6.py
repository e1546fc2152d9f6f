"""Round 6 of the fault hunt, export: files refused that are fine, a quantization that did nothing
without a word, and runtime errors that escaped as the runtimes' own types.

Each test fails on the code before its fix: a mixed-precision model refused for ``.onnx`` (its
tolerance taken from its float32 output, not the float16 it computes in), a variable-length model
refused for ``.tflite`` (allocated at length 1 to be checked), an int8 ``.tflite`` file of a small
model identical to the float32 one and no warning, ``onnx_predict`` raising onnxruntime's own
exception types, an MLIR location quoted for a TFLite conversion that fails, and a full disk
raising TensorFlow's ``OutOfRangeError``.
"""

import errno
import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

import prunelib  # noqa: E402
from prunelib.toolkit.exporting import onnx_predict, tflite_predict  # noqa: E402

L = keras.layers


def _dense(widths, seed=0, name="m"):
    keras.utils.set_random_seed(seed)
    layers = [L.Dense(w, activation="relu") for w in widths[1:-1]]
    return keras.Sequential([keras.Input((widths[0],)), *layers, L.Dense(widths[-1])], name=name)


def test_a_mixed_precision_model_with_a_float32_output_exports_to_onnx(tmp_path):
    # Keras' recommended mixed precision: float16 layers, the output layer float32; the file
    # differs from Keras by float16's rounding (1.4e-3 here), more than float32's tolerance
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            L.Dense(16, activation="relu", dtype="mixed_float16"),
            L.Dense(3, dtype="float32"),
        ],
        name="mixed",
    )
    model.set_weights([w * 2 for w in model.get_weights()])
    x = np.random.default_rng(1).standard_normal((8, 6)).astype(np.float32)
    path = prunelib.export(model, tmp_path / "m.onnx")
    want = keras.ops.convert_to_numpy(model(x))
    assert want.dtype == np.float32
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(onnx_predict(path, x), want, atol=8 * float(np.finfo(np.float16).eps) * scale)


def test_a_variable_length_model_is_written_as_tflite_and_run_at_each_length(tmp_path):
    # allocated at its default length (1), a kernel-3 convolution has no output: the file is fine
    inp = keras.Input((None, 4))
    keras.utils.set_random_seed(0)
    h = L.Conv1D(4, 3, activation="relu")(inp)
    model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling1D()(h)), name="varlen")
    path = prunelib.export(model, tmp_path / "m.tflite")
    rng = np.random.default_rng(1)
    for shape in ((3, 9, 4), (2, 5, 4)):
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(tflite_predict(path, x), model(x), atol=1e-5)


def _int8_warnings(model, path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prunelib.export(model, path, quantize="int8")
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning) and "int8" in str(w.message)]


def test_an_int8_tflite_file_says_which_weights_stayed_float32(tmp_path):
    # the converter quantizes only weight tensors of 1,024 or more entries: 5x4 and 4x2 kernels
    # stay float32, so the "int8" file is the float32 one
    small = _dense([5, 4, 2], name="small")
    found = _int8_warnings(small, tmp_path / "small.tflite")
    assert len(found) == 1, found
    assert "no weight tensor was quantized" in found[0] and "1,024" in found[0] and ".onnx" in found[0]
    assert (tmp_path / "small.tflite").stat().st_size == prunelib.export(small, tmp_path / "f.tflite").stat().st_size
    # a 30x40 kernel is quantized, the 40x2 one is not
    found = _int8_warnings(_dense([30, 40, 2], name="mid"), tmp_path / "mid.tflite")
    assert len(found) == 1 and "1 of its 2 weight tensors stayed float32" in found[0], found
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float16 quantizes every size; .onnx int8 too
        prunelib.export(small, tmp_path / "small16.tflite", quantize="float16")
        prunelib.export(small, tmp_path / "small.onnx", quantize="int8")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    model = _dense([6, 3], name="h")
    return {suffix: prunelib.export(model, folder / f"h{suffix}") for suffix in (".onnx", ".tflite")}


PREDICT = {".onnx": onnx_predict, ".tflite": tflite_predict}


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_predict_refuses_a_batch_of_the_wrong_width_with_one_line(files, suffix):
    with pytest.raises(ValueError, match="cannot run it") as err:
        PREDICT[suffix](files[suffix], np.ones((2, 5), np.float32))
    assert type(err.value) is ValueError and "\n" not in str(err.value) and files[suffix].name in str(err.value)


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_predict_on_a_missing_file_is_a_file_not_found_error(tmp_path, suffix):
    with pytest.raises(FileNotFoundError, match=f"missing{suffix}"):
        PREDICT[suffix](tmp_path / f"missing{suffix}", np.ones((2, 6), np.float32))


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_predict_on_a_file_of_the_other_format_is_one_value_error(files, suffix):
    other = files[".tflite" if suffix == ".onnx" else ".onnx"]
    with pytest.raises(ValueError, match="cannot load it") as err:
        PREDICT[suffix](other, np.ones((2, 6), np.float32))
    assert type(err.value) is ValueError and "\n" not in str(err.value) and other.name in str(err.value)


def test_a_failed_tflite_conversion_quotes_why_not_where(tmp_path):
    # a float16-computing model needs TF Select ops; the first "error" line is an MLIR location
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, dtype="float16")], name="half")
    with pytest.raises(ValueError, match="'half' failed") as err:
        prunelib.export(model, tmp_path / "m.tflite")
    message = str(err.value)
    assert "not supported" in message and "TF Select ops: " in message and "loc(" not in message, message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("error", "code"), [("OutOfRangeError", errno.EFBIG), ("ResourceExhaustedError", errno.ENOSPC)]
)
def test_a_full_disk_during_a_tflite_export_is_an_os_error_naming_the_file(tmp_path, monkeypatch, error, code):
    # TensorFlow's names for EFBIG and ENOSPC while the SavedModel is written
    tf = pytest.importorskip("tensorflow")

    def full(*args, **kwargs):
        raise getattr(tf.errors, error)(None, None, "/tmp/x/variables/variables_temp; File too large")

    monkeypatch.setattr(tf.saved_model, "save", full)
    path = tmp_path / "m.tflite"
    path.write_bytes(b"the user's previous file")
    with pytest.raises(OSError) as err:
        prunelib.export(_dense([5, 2]), path)
    assert err.value.errno == code and str(path) in str(err.value)
    assert path.read_bytes() == b"the user's previous file"
