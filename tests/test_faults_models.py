"""Faults of the model-level API (issue 38): each case ends in a clear error or a correct result.

No lost file (every writer goes through a temporary file), no hang (work-sizing parameters are
bounded before any work), no silent wrong answer (masks, arguments, calibration data) and no raw
traceback (unbuilt, subclassed, non-float32 models, non-finite data). Models are a few units wide.
"""

import errno
import zipfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import prunelib  # noqa: E402
from prunelib.core.post_training import PostTrainingMethod, gradual_levels, post_training_prune  # noqa: E402
from prunelib.toolkit import chain as ch  # noqa: E402

D = keras.layers.Dense


def _model(names=("h1", "h2"), seed=0, dtype=None):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((5,))
    h = inp
    for name in names:
        h = D(4, activation="relu", bias_initializer="glorot_uniform", name=name, dtype=dtype)(h)
    return keras.Model(inp, D(2, name="out", dtype=dtype)(h), name="tiny")


def _x(n=16, seed=0, shape=(5,)):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def _pred(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


# -- data loss: a failed write leaves the previous file byte-identical ------------------------


def _previous(path):
    path.write_bytes(b"the user's previous file " * 100)
    return path.read_bytes()


def _only(path):
    """The directory holds the target file and nothing else (no temporary file left behind)."""
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.mark.parametrize("suffix", [".keras", ".onnx"])
def test_a_failed_export_leaves_the_previous_file(tmp_path, monkeypatch, suffix):
    model = _model()
    path = tmp_path / f"m{suffix}"
    before = _previous(path)

    def half(self, filepath, *args, **kwargs):  # Keras' own writers, failing half-way
        with open(filepath, "wb") as f:
            f.write(b"PK half a file")
        raise OSError(errno.ENOSPC, "No space left on device (forced by the test)")

    monkeypatch.setattr(keras.Model, "save" if suffix == ".keras" else "export", half)
    with pytest.raises(OSError, match="No space"):
        prunelib.export(model, path)
    assert path.read_bytes() == before
    _only(path)


def test_a_keras_export_of_an_unserializable_model_leaves_the_previous_file(tmp_path):
    class Unserializable(keras.layers.Layer):
        def get_config(self):
            return {**super().get_config(), "fn": object()}

        def call(self, x):
            return x

    inp = keras.Input((3,))
    model = keras.Model(inp, D(2)(Unserializable()(inp)))
    path = tmp_path / "m.keras"
    before = _previous(path)
    with pytest.raises(Exception):  # noqa: B017 - whatever Keras raises; the file is the point
        prunelib.export(model, path)
    assert path.read_bytes() == before
    _only(path)


def test_a_failed_tflite_write_leaves_the_previous_file(tmp_path, monkeypatch):
    import pathlib

    import tensorflow as tf

    class Converter:
        def convert(self):
            return b"TFL3 a converted model"

    path = tmp_path / "m.tflite"
    before = _previous(path)
    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", staticmethod(lambda _: Converter()))
    real = pathlib.Path.write_bytes

    def half(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device (forced by the test)")

    monkeypatch.setattr(pathlib.Path, "write_bytes", half)
    with pytest.raises(OSError, match="No space"):
        prunelib.export(_model(), path)
    assert path.read_bytes() == before
    _only(path)


def test_a_failed_tflite_conversion_leaves_the_previous_file_and_says_so_in_one_line(tmp_path, monkeypatch):
    import tensorflow as tf

    class Converter:
        def convert(self):
            raise RuntimeError("loc(fused[...]): error: 'tfl.fully_connected' op\n" * 50)

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", staticmethod(lambda _: Converter()))
    path = tmp_path / "m.tflite"
    before = _previous(path)
    with pytest.raises(ValueError, match="TFLite") as err:
        prunelib.export(_model(), path)
    assert "\n" not in str(err.value)
    assert path.read_bytes() == before
    _only(path)


def test_a_failed_save_masks_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "masks.npz"
    before = _previous(path)

    def half(fid, array, *args, **kwargs):
        fid.write(b"\x93NUMPY half")
        raise OSError(errno.ENOSPC, "No space left on device (forced by the test)")

    monkeypatch.setattr(np.lib.format, "write_array", half)
    with pytest.raises(OSError, match="No space"):
        prunelib.save_masks({"h1": np.ones((5, 4), bool)}, path)
    assert path.read_bytes() == before
    _only(path)


def test_paths_expand_the_home_directory(tmp_path, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    model = _model()
    assert prunelib.export(model, "~/x.keras") == home / "x.keras"
    pruned = prunelib.prune_model(model, 50)
    prunelib.save_masks(pruned, "~/m.npz")
    assert set(prunelib.load_masks("~/m.npz", model)) == set(prunelib.model_masks(pruned))
    assert sorted(p.name for p in home.iterdir()) == ["m.npz", "x.keras"]
    assert list(cwd.iterdir()) == []


def test_an_upper_case_suffix_works(tmp_path):
    model = _model()
    path = prunelib.export(model, tmp_path / "U.KERAS")
    assert path == tmp_path / "U.KERAS" and zipfile.is_zipfile(path)
    (tmp_path / "copy.keras").write_bytes(path.read_bytes())
    x = _x(4)
    np.testing.assert_allclose(_pred(keras.models.load_model(tmp_path / "copy.keras"), x), _pred(model, x))
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["U.KERAS", "copy.keras"]


def test_export_to_a_directory_is_refused(tmp_path):
    (tmp_path / "m.keras").mkdir()
    with pytest.raises(ValueError, match="directory"):
        prunelib.export(_model(), tmp_path / "m.keras")


# -- hangs: parameters that size work are bounded before any work ------------------------------


@pytest.mark.parametrize("keep", [1 - 1e-6, 1 - 1e-9, 0.0, 1.0, float("nan"), "0.5", True])
def test_gradual_keep_is_bounded_when_the_method_is_made(keep):
    with pytest.raises(ValueError, match="keep"):
        PostTrainingMethod(selection="obs", schedule="gradual", keep=keep)
    with pytest.raises(ValueError, match="keep"):
        gradual_levels(90, keep)


@pytest.mark.parametrize("rounds", [10**9, 0, 2.0, True, "4"])
def test_network_rounds_are_bounded(rounds):
    with pytest.raises(ValueError, match="rounds"):
        PostTrainingMethod(selection="obs", targets="network", rounds=rounds)


def test_numpy_scalars_are_accepted_where_python_numbers_are():
    spec = PostTrainingMethod(
        selection="obs", schedule="gradual", keep=np.float32(0.5), targets="network", rounds=np.int64(2)
    )
    assert gradual_levels(np.float64(90), np.float32(0.5)) == gradual_levels(90, 0.5)
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal((5, 4)), rng.standard_normal((4, 2))]
    new, masks = post_training_prune(ws, np.float64(50), rng.random((16, 5)), method=spec, damping=np.float32(0.01))
    assert int((~masks[0]).sum()) == 10
    with pytest.raises(ValueError, match="damping"):
        post_training_prune(ws, 50, rng.random((16, 5)), damping=True)


# -- masks ------------------------------------------------------------------------------------


def test_mask_names_that_are_savez_keywords_round_trip(tmp_path):
    model = _model(names=("file", "allow_pickle"))
    pruned = prunelib.prune_model(model, 50)
    path = tmp_path / "masks.npz"
    prunelib.save_masks(pruned, path)
    masks = prunelib.load_masks(path, model)
    want = prunelib.model_masks(pruned)
    assert set(masks) == set(want) and {"file", "allow_pickle"} <= set(masks)
    for name in want:
        np.testing.assert_array_equal(masks[name], want[name])


def _not_masks(tmp_path):
    good = tmp_path / "good.npz"
    prunelib.save_masks({"h1": np.eye(5, 4, dtype=bool), "h2": np.ones((4, 4), bool)}, good)
    data = good.read_bytes()
    files = {}
    files["model.keras"] = prunelib.export(_model(), tmp_path / "model.keras")
    np.save(tmp_path / "mask.npy", np.ones((5, 4), bool))
    files["mask.npy"] = tmp_path / "mask.npy"
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    files["truncated.npz"] = tmp_path / "truncated.npz"
    corrupt = bytearray(data)
    middle = data.index(b"h1.npy") + 40  # inside the first member's compressed bytes
    corrupt[middle : middle + 8] = b"\xff" * 8
    (tmp_path / "corrupted.npz").write_bytes(bytes(corrupt))
    files["corrupted.npz"] = tmp_path / "corrupted.npz"
    (tmp_path / "empty.npz").write_bytes(b"")
    files["empty.npz"] = tmp_path / "empty.npz"
    with zipfile.ZipFile(tmp_path / "nomasks.npz", "w"):
        pass
    files["nomasks.npz"] = tmp_path / "nomasks.npz"
    return files


def test_load_masks_of_any_other_file_is_a_value_error_naming_it(tmp_path):
    for name, path in _not_masks(tmp_path).items():
        with pytest.raises(ValueError, match=name.replace(".", r"\.")) as err:
            prunelib.load_masks(path)
        assert "\n" not in str(err.value), name


def test_save_masks_refuses_nothing_to_save(tmp_path):
    with pytest.raises(ValueError, match="no masks"):
        prunelib.save_masks({}, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("method", ["unit", "weight"])
def test_masks_round_trip_with_biases(tmp_path, method):
    """Unit pruning zeroes a removed unit's bias; weight pruning that empties a unit's column keeps
    it (75 % of a 5-input layer empties some): applying saved masks reproduces either exactly."""
    model = _model()
    pruned = prunelib.prune_model(model, 75, method)
    if method == "weight":
        assert any(name.endswith("/bias") for name in prunelib.model_masks(pruned))
    prunelib.save_masks(pruned, tmp_path / "m.npz")
    again = prunelib.apply_model_masks(model, prunelib.load_masks(tmp_path / "m.npz", model))
    for a, b in zip(again.get_weights(), pruned.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _x()
    np.testing.assert_array_equal(_pred(again, x), _pred(pruned, x))
    np.testing.assert_array_equal(
        _pred(prunelib.apply_model_masks(model, prunelib.model_masks(pruned)), x), _pred(pruned, x)
    )


# -- arguments --------------------------------------------------------------------------------


def _pruned_names(pruned):
    return sorted(name for name, m in prunelib.model_masks(pruned).items() if not m.all())


def test_skip_and_layers_as_generators_and_arrays_are_read_once():
    model = _model(names=("h1", "h2", "h3"))
    assert _pruned_names(prunelib.prune_model(model, 50, skip=(n for n in ["h1"]))) == ["h2", "h3"]
    assert _pruned_names(prunelib.prune_model(model, 50, layers=(n for n in ["h2"]))) == ["h2"]
    assert _pruned_names(prunelib.prune_model(model, 50, skip=np.array(["h1", "h3"]))) == ["h2"]
    assert _pruned_names(prunelib.prune_model(model, 50, layers=np.array(["h1", "h3"]))) == ["h1", "h3"]


def test_a_layer_both_chosen_and_skipped_is_refused():
    with pytest.raises(ValueError, match="h1.*both"):
        prunelib.prune_model(_model(), 50, layers=["h1", "h2"], skip=["h1"])


def test_reconstruct_with_masks_for_some_layers_keeps_the_others_zeros():
    model = _model()
    pruned = prunelib.prune_model(model, 50)
    fixed = prunelib.reconstruct_model(model, pruned, _x(), masks={"h1": prunelib.model_masks(pruned)["h1"]})
    for name in ("h1", "h2"):
        gone = pruned.get_layer(name).kernel.numpy() == 0
        assert np.all(fixed.get_layer(name).kernel.numpy()[gone] == 0), name


def test_reconstruct_with_the_models_swapped_is_refused():
    model = _model()
    pruned = prunelib.prune_model(model, 50)
    with pytest.raises(ValueError, match="swapped"):
        prunelib.reconstruct_model(pruned, model, _x())


@pytest.mark.parametrize(
    "x,match",
    [
        (_x(32, shape=(2, 4, 4)), r"\(4, 4, 2\)"),  # channels-first images into a channels-last model
        (_x(32, shape=(32,)), r"\(4, 4, 2\)"),  # flat rows of the right size
        (_x(32, shape=(4, 4, 2)) + 1j, "real"),
    ],
)
def test_calibration_data_must_match_the_input_exactly(x, match):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Flatten(), D(4, activation="relu"), D(2)])
    with pytest.raises(ValueError, match=match):
        prunelib.reconstruct_model(model, prunelib.prune_model(model, 50), x)


@pytest.mark.parametrize("x", [(_x(), np.arange(16)), [[0.0] * 5] * 15 + [[0.0] * 4]], ids=["xy-pair", "ragged"])
def test_calibration_data_that_is_not_one_array_is_refused_in_one_line(x):
    model = _model()
    with pytest.raises(ValueError, match="x_calib") as err:
        prunelib.reconstruct_model(model, prunelib.prune_model(model, 50), x)
    assert "\n" not in str(err.value)


def test_variable_path_keys_round_trip(tmp_path):
    """PruningCallback's masks are keyed by variable path (``"h1/kernel"``): saved and loaded as they are."""
    masks = {"h1/kernel": np.eye(5, 4, dtype=bool), "out/kernel": np.ones((4, 2), bool)}
    prunelib.save_masks(masks, tmp_path / "m.npz")
    again = prunelib.load_masks(tmp_path / "m.npz")
    assert set(again) == set(masks) and all(np.array_equal(again[n], masks[n]) for n in masks)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"damping": True}, "damping"),
        ({"damping": "0.01"}, "damping"),
        ({"damping": -1.0}, "damping"),
        ({"logit_targets": "no"}, "logit_targets"),
        ({"exact": 1}, "exact"),
    ],
)
def test_reconstruct_options_are_checked(kwargs, match):
    model = _model()
    with pytest.raises(ValueError, match=match):
        prunelib.reconstruct_model(model, prunelib.prune_model(model, 50), _x(), **kwargs)


def test_reconstruct_accepts_numpy_options():
    model = _model()
    pruned = prunelib.prune_model(model, 50)
    fixed = prunelib.reconstruct_model(model, pruned, _x(), damping=np.float32(0.01), logit_targets=np.bool_(False))
    assert np.isfinite(_pred(fixed, _x())).all()


def test_a_fraction_for_k_warns_that_k_is_a_percent():
    with pytest.warns(UserWarning, match="percent"):
        prunelib.prune_model(_model(), 0.8)


# -- one clear error instead of a raw traceback ----------------------------------------------


def _unbuilt():
    return keras.Sequential([D(4, activation="relu"), D(2)])


class _Sub(keras.Model):
    def __init__(self):
        super().__init__(name="sub")
        self.a = D(4, activation="relu")
        self.b = D(2)

    def call(self, x):
        return self.b(self.a(x))


def _subclassed():
    model = _Sub()
    model(np.zeros((1, 5), np.float32))
    return model


@pytest.mark.parametrize(
    "make,match", [(_unbuilt, "not built"), (_subclassed, "subclass")], ids=["unbuilt", "subclassed"]
)
@pytest.mark.parametrize("op", ["prune", "reconstruct", "compact", "predictor", "masks", "export"])
def test_unbuilt_and_subclassed_models_are_refused_in_one_line(make, match, op, tmp_path):
    model = make()
    calls = {
        "prune": lambda: prunelib.prune_model(model, 50),
        "reconstruct": lambda: prunelib.reconstruct_model(model, model, _x()),
        "compact": lambda: prunelib.compact_model(model),
        "predictor": lambda: prunelib.predictor_from_model(model),
        "masks": lambda: prunelib.model_masks(model),
        "export": lambda: prunelib.export(model, tmp_path / "m.onnx"),
    }
    if op == "export" and make is _subclassed:  # a built subclassed model exports as it is
        assert calls["export"]().stat().st_size > 0
        return
    with pytest.raises((ValueError, TypeError), match=match) as err:
        calls[op]()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_calibration_data_is_named(bad):
    model = _model()
    x = _x()
    x[3, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf") as err:
        prunelib.reconstruct_model(model, prunelib.prune_model(model, 50), x)
    assert "branches" not in str(err.value)


def test_non_finite_weights_are_named_not_guessed():
    model = _model()
    w = model.get_layer("h2").kernel.numpy()
    w[0, 0] = np.nan
    model.get_layer("h2").kernel.assign(w)
    with pytest.raises(ValueError, match="h2.*NaN") as err:
        prunelib.compact_model(model)
    assert "branches" not in str(err.value)


@pytest.mark.parametrize("policy", ["float16", "mixed_bfloat16"])
@pytest.mark.parametrize("op", ["reconstruct", "compact", "predictor"])
def test_low_precision_models_are_refused_naming_the_dtype(policy, op):
    model = _model(dtype=policy)
    calls = {
        "reconstruct": lambda: prunelib.reconstruct_model(model, prunelib.prune_model(model, 50), _x()),
        "compact": lambda: prunelib.compact_model(model),
        "predictor": lambda: prunelib.predictor_from_model(model),
    }
    with pytest.raises(ValueError, match=policy) as err:
        calls[op]()
    assert "branches" not in str(err.value)


def test_the_chain_reader_still_reads_float32_models():
    model = _model()
    np.testing.assert_allclose(ch.predict_chain(ch.chain(model, "test"), _x()), _pred(model, _x()), atol=1e-5)
