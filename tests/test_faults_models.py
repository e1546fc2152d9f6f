"""Faults of the model-level API (issue 38): each case ends in a clear error or a correct result.

No lost file (every writer goes through a temporary file), no hang (work-sizing parameters are
bounded before any work), no silent wrong answer (masks, arguments, calibration data) and no raw
traceback (unbuilt, subclassed, non-float32 models, non-finite data). Models are a few units wide.
"""

import errno
import zipfile
from fractions import Fraction

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
    with pytest.warns(UserWarning, match="load_model reads only the lower-case suffix"):
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


# -- what a layer computes: read exactly, or refused by name (round 2) ------------------------


def _chain_ops(model, x):
    """Every operation that reads a model as a chain of Dense layers, on ``model`` as it is."""
    return {
        "predictor": lambda: prunelib.predictor_from_model(model).predict(x),
        "compact": lambda: _pred(prunelib.compact_model(model), x),
        "reconstruct": lambda: _pred(prunelib.reconstruct_model(model, model, x), x),
        "post": lambda: _pred(prunelib.post_training_model(model, 50, x, method="obs-gradual"), x),
    }


CHAIN_OPS = ["predictor", "compact", "reconstruct", "post"]


def _shared_dense():
    keras.utils.set_random_seed(0)
    inp = keras.Input((5,))
    twice = D(5, activation="relu", bias_initializer="glorot_uniform", name="twice")
    return keras.Model(inp, D(2, name="out")(twice(twice(inp))), name="shared")


def _shared_block():
    keras.utils.set_random_seed(0)
    block_in = keras.Input((5,))
    block = keras.Model(block_in, D(5, activation="relu", name="inner")(block_in), name="twice")
    inp = keras.Input((5,))
    return keras.Model(inp, D(2, name="out")(block(block(inp))), name="shared")


def _dense_in_a_block_and_outside():
    keras.utils.set_random_seed(0)
    inner = D(5, activation="relu", name="twice")
    block_in = keras.Input((5,))
    block = keras.Model(block_in, inner(block_in), name="block")
    inp = keras.Input((5,))
    return keras.Model(inp, D(2, name="out")(inner(block(inp))), name="shared")


@pytest.mark.parametrize("make", [_shared_dense, _shared_block, _dense_in_a_block_and_outside])
@pytest.mark.parametrize("op", CHAIN_OPS)
def test_a_layer_applied_twice_is_refused_by_name(make, op):
    model = make()
    with pytest.raises(ValueError, match="'twice'.*(twice|more than once)") as err:
        _chain_ops(model, _x())[op]()
    assert "\n" not in str(err.value) and "?" not in str(err.value)


class _OwnCall(D):
    def call(self, inputs):
        return super().call(inputs) * 2.0


@pytest.mark.parametrize("op", CHAIN_OPS)
def test_a_dense_subclass_with_its_own_call_is_refused_by_name(op):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), _OwnCall(4, activation="relu", name="mine"), D(2, name="out")])
    with pytest.raises(ValueError, match="'mine'.*own call"):
        _chain_ops(model, _x())[op]()


def relu(x):  # a user's function that happens to share Keras' name
    return keras.ops.tanh(x) + 1.0


def linear(x):
    return 2.0 * x


def _user_functions(hidden=relu, output=None):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((5,)), D(4, activation=hidden, name="h"), D(2, activation=output, name="out")], name="own"
    )


@pytest.mark.parametrize("op", ["compact", "reconstruct"])
def test_a_user_function_named_relu_is_computed_as_itself(op):
    """Operations that run the model's own activations compute the user's function, not ReLU."""
    model = _user_functions()
    x = _x()
    np.testing.assert_allclose(_chain_ops(model, x)[op](), _pred(model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("hidden,output", [(relu, None), ("relu", linear)])
@pytest.mark.parametrize("op", ["predictor", "post"])
def test_a_user_function_named_like_keras_is_computed_as_itself(op, hidden, output):
    """The Predictor and the post-training methods compute a user's function named ``relu`` or
    ``linear`` as itself (the Predictor on its general paths), never as Keras' ReLU or identity."""
    model = _user_functions(hidden, output)
    x = _x()
    if op == "post":
        pruned = _chain_ops(model, x)[op]()
        assert np.isfinite(pruned).all()
        if hidden is relu:  # read through Keras: at k = 0 the model itself, its own function computed
            same = prunelib.post_training_model(model, 0, x)
            np.testing.assert_allclose(_pred(same, x), _pred(model, x), atol=1e-6)
        return
    fast = prunelib.predictor_from_model(model)
    assert "sparse" not in fast.paths  # the fused kernel computes Keras' ReLU only
    for path in fast.paths:
        np.testing.assert_allclose(fast.run(path, x), _pred(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("op", [*CHAIN_OPS, "apply_masks"])
def test_quantized_layers_are_refused_by_name_where_they_are_read(mode, op):
    model = _model()
    masks = prunelib.model_masks(prunelib.prune_model(model, 50))
    model.quantize(mode)
    calls = _chain_ops(model, _x())
    calls["apply_masks"] = lambda: prunelib.apply_model_masks(model, masks)
    with pytest.raises(ValueError, match=f"'h1'.*quantized \\({mode}\\)") as err:
        calls[op]()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("op", ["reconstruct", "post"])
def test_lora_layers_are_refused_by_name_where_weights_are_written(op):
    model = _model()
    model.get_layer("h1").enable_lora(2)
    with pytest.raises(ValueError, match="'h1'.*LoRA"):
        _chain_ops(model, _x())[op]()


# -- usability: Softmax() and ReLU() layers read like the activations they are ----------------


def _mlp(hidden="dense", output="dense"):
    """The same network with the activations written as an argument or as layers."""
    keras.utils.set_random_seed(0)
    layers = [keras.Input((5,))]
    for name in ("h1", "h2"):
        if hidden == "dense":
            layers.append(D(4, activation="relu", bias_initializer="glorot_uniform", name=name))
        else:
            layers.append(D(4, bias_initializer="glorot_uniform", name=name))
            layers.append(keras.layers.ReLU() if hidden == "ReLU" else keras.layers.Activation("relu"))
    if output == "dense":
        layers.append(D(3, activation="softmax", name="out"))
    else:
        layers += [
            D(3, name="out"),
            keras.layers.Softmax() if output == "Softmax" else keras.layers.Activation("softmax"),
        ]
    return keras.Sequential(layers, name=f"{hidden}_{output}")


@pytest.mark.parametrize("hidden,output", [("dense", "Softmax"), ("ReLU", "dense"), ("Activation", "Softmax")])
@pytest.mark.parametrize("op", ["compact", "reconstruct", "post"])
def test_softmax_and_relu_layers_are_read_like_the_activations(hidden, output, op):
    x = _x(32)
    model, plain = _mlp(hidden, output), _mlp()
    calls = {
        "compact": lambda m: prunelib.compact_model(prunelib.prune_model(m, 50, "unit")),
        "reconstruct": lambda m: prunelib.reconstruct_model(m, prunelib.prune_model(m, 50), x),
        "post": lambda m: prunelib.post_training_model(m, 50, x, method="obs-gradual"),
    }
    got, want = calls[op](model), calls[op](plain)
    np.testing.assert_allclose(_pred(got, x), _pred(want, x), rtol=1e-5, atol=1e-6)
    if op == "compact":
        np.testing.assert_allclose(_pred(got, x), _pred(prunelib.prune_model(model, 50, "unit"), x), atol=1e-6)
    else:
        for name in ("h1", "h2"):
            np.testing.assert_array_equal(got.get_layer(name).kernel.numpy(), want.get_layer(name).kernel.numpy())


@pytest.mark.parametrize("hidden", ["ReLU", "Activation"])
def test_the_predictor_reads_relu_layers(hidden):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((5,)), D(4, name="h1")]
    layers += [keras.layers.ReLU() if hidden == "ReLU" else keras.layers.Activation("relu"), D(2, name="out")]
    model, x = keras.Sequential(layers), _x()
    np.testing.assert_allclose(prunelib.predictor_from_model(model).predict(x), _pred(model, x), atol=1e-5)


def test_a_relu_layer_with_other_settings_is_not_read_as_relu():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), D(4, name="h1"), keras.layers.ReLU(max_value=0.1), D(2, name="out")])
    x = _x()
    with pytest.raises(ValueError, match="ReLU hidden layers"):
        prunelib.post_training_model(model, 50, x, method="per-unit-obs-gradual+network")
    np.testing.assert_allclose(_pred(prunelib.compact_model(model), x), _pred(model, x), atol=1e-6)


# -- every chain operation checks its result, and names what differs --------------------------


@pytest.mark.parametrize("op", ["compact", "reconstruct", "post"])
def test_a_result_that_differs_from_what_was_computed_is_refused(op, monkeypatch):
    from prunelib.toolkit import api

    model = _model()
    if op == "compact":
        real = api.compact_kernels_folded

        def wrong(kernels, biases, acts):
            ws, bs = real(kernels, biases, acts)
            return ws, [None if b is None else b + 1.0 for b in bs]

        monkeypatch.setattr(api, "compact_kernels_folded", wrong)
    else:
        real = api._assign

        def wrong(layer, kernel, bias):  # a write that loses the biases
            real(layer, kernel, None if bias is None else np.zeros_like(bias))

        monkeypatch.setattr(api, "_assign", wrong)
    with pytest.raises(ValueError, match="result") as err:
        _chain_ops(model, _x())[op]()
    assert "branches" not in str(err.value)


def test_a_layer_computing_something_else_is_named():
    """A layer whose Keras call differs from its weights' reading is named, not guessed at."""
    model = _model()
    layer = model.get_layer("h2")
    plain = layer.call
    layer.call = lambda inputs, *args, **kwargs: plain(inputs) + 1.0
    with pytest.raises(ValueError, match="'h2'") as err:
        prunelib.compact_model(model)
    assert "branches" not in str(err.value)


def test_the_predictor_is_checked_against_the_model(monkeypatch):
    from prunelib.inference import predictor

    model = _model()
    monkeypatch.setattr(predictor.Predictor, "_build_blas", lambda self: lambda x: np.zeros((len(x), 2), np.float32))
    with pytest.raises(ValueError, match="predictor_from_model.*differ"):
        prunelib.predictor_from_model(model)


@pytest.mark.parametrize("op", ["prune", "apply_masks"])
def test_the_copy_of_a_model_keeps_a_user_function_named_relu(op):
    """Keras saves a user's activation by its name: a copy rebuilt from the config would run Keras' relu."""
    model, x = _user_functions(), _x()
    calls = {
        "prune": lambda: prunelib.prune_model(model, 0),
        "apply_masks": lambda: prunelib.apply_model_masks(model, {"h": np.ones((5, 4), bool)}),
    }
    np.testing.assert_allclose(_pred(calls[op](), x), _pred(model, x), rtol=1e-6)


# -- fault hunt, round 3: one clear error, or the right file -----------------------------------


def test_reconstruct_of_a_model_with_other_activations_names_the_layer():
    """A pruned model of the same shapes computing other activations is refused up front, by layer."""
    model = _model()
    keras.utils.set_random_seed(0)
    inp = keras.Input((5,))
    h = D(4, activation="relu", name="h1")(inp)
    h = D(4, activation="tanh", name="h2")(h)
    other = keras.Model(inp, D(2, name="out")(h), name="other")
    with pytest.raises(ValueError, match="'h2'.*relu.*tanh") as err:
        prunelib.reconstruct_model(model, prunelib.prune_model(other, 50), _x())
    assert "bug" not in str(err.value) and "\n" not in str(err.value)


def test_reconstruct_of_the_same_activations_written_as_layers_is_accepted():
    """Dense(relu) and Dense + ReLU() compute the same: not a difference."""
    model = _model(names=("h1",))
    keras.utils.set_random_seed(0)
    layers = [
        keras.Input((5,)),
        D(4, name="h1", bias_initializer="glorot_uniform"),
        keras.layers.ReLU(),
        D(2, name="out"),
    ]
    other = keras.Sequential(layers, name="with_layers")
    other.set_weights(model.get_weights())
    fixed = prunelib.reconstruct_model(model, prunelib.prune_model(other, 50), _x())
    assert np.isfinite(_pred(fixed, _x())).all()


@pytest.mark.parametrize("op", ["reconstruct", "post"])
def test_calibration_data_without_rows_is_refused_in_one_line(op):
    model = _model()
    x = _x()[:0]
    call = {
        "reconstruct": lambda: prunelib.reconstruct_model(model, prunelib.prune_model(model, 50), x),
        "post": lambda: prunelib.post_training_model(model, 50, x, method="obs-gradual"),
    }[op]
    with pytest.raises(ValueError, match="0 calibration samples are too few.*at least 6") as err:
        call()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "damping",
    [10**400, -(10**400), Fraction(10**400), 1j],
    ids=["huge-int", "huge-negative", "huge-fraction", "complex"],
)
@pytest.mark.parametrize("op", ["reconstruct", "post"])
def test_a_damping_beyond_floats_is_refused(op, damping):
    model = _model()
    call = {
        "reconstruct": lambda: prunelib.reconstruct_model(
            model, prunelib.prune_model(model, 50), _x(), damping=damping
        ),
        "post": lambda: prunelib.post_training_model(model, 50, _x(), method="obs-gradual", damping=damping),
    }[op]
    with pytest.raises(ValueError, match="damping must be a positive"):
        call()


@pytest.mark.parametrize("op", ["save_masks", "export"])
def test_a_path_under_a_file_is_refused_naming_it(tmp_path, op):
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "afile" / "deeper" / "m.npz"
    call = {
        "save_masks": lambda: prunelib.save_masks({"h1": np.ones((5, 4), bool)}, path),
        "export": lambda: prunelib.export(_model(), path.with_suffix(".keras")),
    }[op]
    with pytest.raises(ValueError, match="afile.*not a directory") as err:
        call()
    assert "\n" not in str(err.value)
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("op", ["save_masks", "export"])
def test_writing_to_a_symlink_writes_its_target_and_keeps_the_link(tmp_path, op):
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / ("m.npz" if op == "save_masks" else "m.keras")
    real.write_bytes(b"old")
    link = tmp_path / f"link{real.suffix}"
    link.symlink_to(real)
    if op == "save_masks":
        prunelib.save_masks({"h1": np.ones((5, 4), bool)}, link)
        assert set(prunelib.load_masks(real)) == {"h1"}
    else:
        model = _model()
        prunelib.export(model, link)
        np.testing.assert_allclose(_pred(keras.models.load_model(real), _x(4)), _pred(model, _x(4)))
    assert link.is_symlink() and link.resolve() == real
    assert sorted(p.name for p in tmp_path.iterdir()) == [link.name, "real"]
    assert [p.name for p in (tmp_path / "real").iterdir()] == [real.name]


def test_numpy_booleans_are_accepted_by_export(tmp_path):
    model = _model()
    model.compile("adam", "mse")
    path = prunelib.export(model, tmp_path / "m.keras", include_optimizer=np.True_)
    assert keras.models.load_model(path).optimizer is not None
    path = prunelib.export(model, tmp_path / "n.keras", include_optimizer=np.False_)
    assert zipfile.is_zipfile(path)
