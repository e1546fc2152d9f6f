"""prune_model on every layer that holds a kernel, checked against Keras' own outputs on tiny models.

Each layer type (padding, strides, dilation, groups where Keras computes them on CPU) is pruned by
weight, unit and N:M; the expected masks are computed here in numpy from each kernel's layout, a
copy of the dense model with those masks applied by hand must predict what the pruned model
predicts, and the Dense path must be today's (``prunelib.core.pruning``'s masks) bit for bit.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import prunelib  # noqa: E402
from prunelib.core import pruning  # noqa: E402
from prunelib.toolkit import api  # noqa: E402

L = keras.layers
RAND = {"bias_initializer": "random_normal"}  # nonzero biases, so a kept or zeroed bias shows

# (layer, input shape): 4 input channels, so "1:2" groups every layer's inputs
CASES = {
    "conv1d-same-strides": (lambda n: L.Conv1D(4, 3, padding="same", strides=2, name=n, **RAND), (8, 4)),
    "conv1d-dilation-groups": (lambda n: L.Conv1D(4, 3, dilation_rate=2, groups=2, name=n, **RAND), (8, 4)),
    "conv2d-same-strides": (lambda n: L.Conv2D(4, 3, padding="same", strides=(2, 1), name=n, **RAND), (8, 8, 4)),
    "conv2d-valid-dilation": (lambda n: L.Conv2D(4, 3, dilation_rate=2, name=n, **RAND), (8, 8, 4)),
    "conv2d-groups": (lambda n: L.Conv2D(4, 3, groups=2, name=n, **RAND), (8, 8, 4)),
    "conv3d-same": (lambda n: L.Conv3D(4, 2, padding="same", name=n, **RAND), (4, 4, 4, 4)),
    "depthwise1d-same": (lambda n: L.DepthwiseConv1D(3, depth_multiplier=2, padding="same", name=n, **RAND), (8, 4)),
    "depthwise2d-strides": (lambda n: L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, name=n, **RAND), (8, 8, 4)),
    "depthwise2d-dilation": (
        lambda n: L.DepthwiseConv2D(3, dilation_rate=2, padding="same", name=n, **RAND),
        (8, 8, 4),
    ),
    "separable1d": (lambda n: L.SeparableConv1D(4, 3, depth_multiplier=2, name=n, **RAND), (8, 4)),
    "separable2d-same-strides": (
        lambda n: L.SeparableConv2D(4, 3, padding="same", strides=2, name=n, **RAND),
        (8, 8, 4),
    ),
    "conv1d-transpose-strides": (lambda n: L.Conv1DTranspose(4, 3, strides=2, name=n, **RAND), (8, 4)),
    "conv2d-transpose-same": (lambda n: L.Conv2DTranspose(4, 3, strides=2, padding="same", name=n, **RAND), (8, 8, 4)),
    "conv3d-transpose": (lambda n: L.Conv3DTranspose(4, 2, strides=2, name=n, **RAND), (4, 4, 4, 4)),
    "einsum-dense": (lambda n: L.EinsumDense("ab,bc->ac", output_shape=6, bias_axes="c", name=n, **RAND), (8,)),
    "embedding": (lambda n: L.Embedding(10, 4, name=n), (5,)),
}

# where each kernel's units and inputs are, written out here rather than read from prunelib
UNITS = {
    "Conv": ((-1,), -2),
    "Transpose": ((-2,), -1),
    "Depthwise": ((-2, -1), None),
    "depthwise_kernel": (None, None),  # a SeparableConv's first stage: no unit of the layer, no input axis
    "pointwise_kernel": ((-1,), -2),
    "EinsumDense": ((1,), 0),
    "Embedding": ((1,), 0),
    "Dense": ((1,), 0),
}


def _axes(layer, variable_name):
    kind = type(layer).__name__
    if variable_name in ("depthwise_kernel", "pointwise_kernel"):
        return UNITS[variable_name]
    for key in ("Transpose", "Depthwise", "EinsumDense", "Embedding", "Dense"):
        if key in kind:
            return UNITS[key]
    return UNITS["Conv"]


def _model(case, seed=0):
    make, shape = CASES[case]
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape, dtype="int32" if case == "embedding" else "float32")
    out = L.Dense(3, name="out", **RAND)(L.Flatten()(make("under_test")(inp)))
    return keras.Model(inp, out, name=case.replace("-", "_"))


def _x(model, n=4):
    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(1)
    if model.inputs[0].dtype == "int32":
        return rng.integers(0, 10, (n, *shape)).astype(np.int32)
    return rng.standard_normal((n, *shape)).astype(np.float32)


def _pred(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _expected_kernel_mask(w, method, k, units, inp):
    """The keep-mask written from the definitions (stable ties: the earlier position goes first)."""
    if method == "weight":
        gone = np.argsort(np.abs(w.astype(np.float64)).ravel(), kind="stable")[: round(k / 100 * w.size)]
        keep = np.ones(w.size, bool)
        keep[gone] = False
        return keep.reshape(w.shape)
    if method == "unit":
        if units is None:
            return np.ones(w.shape, bool)
        axes = tuple(sorted(a % w.ndim for a in units))
        other = tuple(a for a in range(w.ndim) if a not in axes)
        norms = np.sqrt(np.sum(np.square(w.astype(np.float64)), axis=other))
        gone = np.argsort(norms.ravel(), kind="stable")[: round(k / 100 * norms.size)]
        keep = np.ones(norms.size, bool)
        keep[gone] = False
        return np.broadcast_to(np.expand_dims(keep.reshape(norms.shape), other), w.shape).copy()
    n, m = map(int, method.split(":"))
    if inp is None:
        return np.ones(w.shape, bool)
    moved = np.moveaxis(np.abs(w), inp, -1)
    groups = moved.reshape(*moved.shape[:-1], -1, m)
    order = np.argsort(groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, bool)
    np.put_along_axis(keep, order[..., m - n :], True, axis=-1)
    return np.moveaxis(keep.reshape(moved.shape), -1, inp)


def _hand_pruned_weights(layer, method, k):
    """``layer``'s weights masked with numpy, and the kernel masks."""
    out, masks, alive = [], {}, None
    for variable in layer.weights:
        w = np.array(variable.numpy())
        if variable.name == "bias":
            out.append(w)
            continue
        units, inp = _axes(layer, variable.name)
        keep = _expected_kernel_mask(w, method, k, units, inp)
        masks[variable.name] = keep
        if units is not None:
            axes = {a % w.ndim for a in units}
            alive = np.any(keep, axis=tuple(a for a in range(w.ndim) if a not in axes)).ravel()
        out.append(np.where(keep, w, 0))
    if method == "unit":
        out = [np.where(alive, w, 0) if v.name == "bias" else w for v, w in zip(layer.weights, out)]
    return out, masks


METHODS = [("weight", 60), ("unit", 50), ("1:2", None)]


@pytest.mark.parametrize("method,k", METHODS, ids=[m for m, _ in METHODS])
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_layer_type_equals_a_copy_masked_by_hand(case, method, k):
    model = _model(case)
    before = [w.copy() for w in model.get_weights()]
    pruned = prunelib.prune_model(model, k, method)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the input is untouched

    layer = model.get_layer("under_test")
    want, masks = _hand_pruned_weights(layer, method, k)
    got = pruned.get_layer("under_test").get_weights()
    for variable, a, b in zip(layer.weights, got, want):
        np.testing.assert_array_equal(a, b, err_msg=variable.name)
    for name, keep in masks.items():  # exact counts per kernel
        w = np.array(layer.weights[[v.name for v in layer.weights].index(name)].numpy())
        units, inp = _axes(layer, name)
        if method == "weight":
            assert int((~keep).sum()) == round(k / 100 * w.size), name
        elif method == "unit" and units is not None:
            n_units = int(np.prod([w.shape[a] for a in units]))
            assert int((~keep).sum()) == round(k / 100 * n_units) * (w.size // n_units), name
        elif method == "1:2" and inp is not None:
            assert int((~keep).sum()) == w.size // 2, name
    np.testing.assert_array_equal(pruned.get_layer("out").get_weights()[0], model.get_layer("out").get_weights()[0])

    hand = keras.models.clone_model(model)
    hand.set_weights(model.get_weights())
    hand.get_layer("under_test").set_weights(want)
    x = _x(model)
    np.testing.assert_allclose(_pred(pruned, x), _pred(hand, x), rtol=0, atol=1e-6)


def test_unit_pruning_zeroes_whole_filters_and_their_biases():
    model = _model("conv2d-same-strides")
    pruned = prunelib.prune_model(model, 50, "unit").get_layer("under_test")
    kernel, bias = pruned.kernel.numpy(), pruned.bias.numpy()
    gone = ~kernel.any(axis=(0, 1, 2))
    assert gone.sum() == 2 and np.all(bias[gone] == 0) and np.all(bias[~gone] != 0)
    norms = np.linalg.norm(model.get_layer("under_test").kernel.numpy().reshape(-1, 4), axis=0)
    assert norms[gone].max() <= norms[~gone].min()
    depthwise = prunelib.prune_model(_model("depthwise2d-strides"), 25, "unit").get_layer("under_test")
    gone = ~depthwise.kernel.numpy().any(axis=(0, 1))  # (in, multiplier): bias entry c * multiplier + m
    assert gone.sum() == 2 and np.all(depthwise.bias.numpy()[gone.ravel()] == 0)


def test_channels_first_convolutions_are_pruned_as_channels_last_ones():
    keras.utils.set_random_seed(0)
    conv = L.Conv2D(4, 3, data_format="channels_first", name="under_test", **RAND)
    try:
        inp = keras.Input((4, 8, 8))
        model = keras.Model(inp, L.Dense(3, name="out")(L.Flatten()(conv(inp))))
        x = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
        model(x)
    except Exception as err:  # noqa: BLE001 - the backend may not compute it on CPU
        pytest.skip(f"channels_first Conv2D does not run on this backend: {err}")
    pruned = prunelib.prune_model(model, 50, "unit")
    want, _ = _hand_pruned_weights(conv, "unit", 50)
    hand = keras.models.clone_model(model)
    hand.set_weights(model.get_weights())
    hand.get_layer("under_test").set_weights(want)
    np.testing.assert_allclose(_pred(pruned, x), _pred(hand, x), rtol=0, atol=1e-6)


# -- the Dense path: today's prune_model, bit for bit -----------------------------------------------


def _dense_models():
    keras.utils.set_random_seed(5)
    seq = keras.Sequential(
        [
            keras.Input((4, 5)),
            L.Flatten(),
            L.Dense(12, activation="relu", name="h1", **RAND),
            L.Dropout(0.1),
            L.Dense(7, activation="tanh", name="h2", **RAND),
            L.Dense(3, activation="softmax", name="out"),
        ]
    )
    inp = keras.Input((9,))
    h = L.Dense(6, use_bias=False, name="a")(inp)
    h = L.Activation("sigmoid")(L.Dense(5, name="b", **RAND)(h))
    fun = keras.Model(inp, L.Dense(2, name="out")(h))
    inner = keras.Sequential([keras.Input((9,)), L.Dense(6, name="i1", **RAND), L.Dense(4, name="i2")], name="inner")
    inp = keras.Input((9,))
    nested = keras.Model(inp, L.Dense(2, name="out")(inner(inp)))
    return [seq, fun, nested]


@pytest.mark.parametrize("k", [0, 10, 33.3, 50, 90, 97, 100])
@pytest.mark.parametrize("method", ["weight", "unit"])
def test_dense_chains_are_pruned_bit_identically_to_the_challenges_masks(method, k):
    models = _dense_models()
    # an already pruned model too: its zeros tie, and the earlier ones go first as before
    for model in [*models, prunelib.prune_model(models[0], 50, "unit"), prunelib.prune_model(models[1], 60)]:
        pruned = prunelib.prune_model(model, k, method)
        dense = [layer for layer in api.kl.flat_layers(model) if isinstance(layer, L.Dense)]
        twins = {layer.name: layer for layer in api.kl.flat_layers(pruned)}
        for layer in dense[:-1]:
            kernel = layer.kernel.numpy()
            # what prune_model did before it took convolutions: the dummy logit kernel follows
            mask = pruning.compute_masks([kernel, np.zeros((kernel.shape[1], 1), kernel.dtype)], k, method)[0]
            twin = twins[layer.name]
            np.testing.assert_array_equal(twin.kernel.numpy(), np.where(mask, kernel, 0))
            if layer.bias is not None:
                bias = layer.bias.numpy()
                want = np.where(mask.any(axis=0), bias, 0) if method == "unit" else bias
                np.testing.assert_array_equal(twin.bias.numpy(), want)
        for a, b in zip(twins[dense[-1].name].get_weights(), dense[-1].get_weights()):
            np.testing.assert_array_equal(a, b)
        assert {n for n in prunelib.model_masks(pruned) if "/" not in n} == {d.name for d in dense[:-1]}


# -- the output layers ------------------------------------------------------------------------------


def _two_heads():
    keras.utils.set_random_seed(2)
    inp = keras.Input((8, 8, 4))
    h = L.Flatten()(L.Conv2D(4, 3, name="conv", **RAND)(inp))
    a = L.Softmax()(L.Dense(3, name="head_a", **RAND)(h))
    b = L.Dense(2, name="head_b", **RAND)(L.Dense(5, activation="relu", name="hidden", **RAND)(h))
    return keras.Model(inp, [a, b])


def test_every_output_head_is_left_dense_unless_asked():
    model = _two_heads()

    def zeros(m, name):
        return int((m.get_layer(name).get_weights()[0] == 0).sum())

    pruned = prunelib.prune_model(model, 50)
    assert [zeros(pruned, n) for n in ("conv", "hidden", "head_a", "head_b")] == [72, 360, 0, 0]
    assert sorted(prunelib.model_masks(pruned)) == ["conv", "hidden"]
    every = prunelib.prune_model(model, 50, include_output=True)
    assert [zeros(every, n) for n in ("conv", "hidden", "head_a", "head_b")] == [72, 360, 216, 5]
    named = prunelib.prune_model(model, 50, "unit", layers=["head_a"])
    assert [zeros(named, n) for n in ("conv", "hidden", "head_b")] == [0, 0, 0]
    kernel = named.get_layer("head_a").kernel.numpy()
    assert (~kernel.any(axis=0)).sum() == 2  # round(1.5): the library's rounding, half to even
    assert sorted(prunelib.model_masks(named)) == ["conv", "head_a", "hidden"]


class _Named(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = L.Conv1D(4, 3, name="c")
        self.flat = L.Flatten()
        self.out = L.Dense(2, name="o")

    def call(self, x):
        return self.out(self.flat(self.conv(x)))


class _NoConfig(keras.Model):
    def __init__(self):
        super().__init__(name="noconfig")
        self.conv = L.Conv1D(4, 3, name="c")
        self.flat = L.Flatten()

    def call(self, x):
        return self.flat(self.conv(x))


def test_a_subclassed_model_needs_its_layers_named():
    model = _Named(name="sub")
    model(np.zeros((1, 8, 4), np.float32))
    with pytest.raises(ValueError, match="subclassed") as err:
        prunelib.prune_model(model, 50)
    assert "\n" not in str(err.value)
    pruned = prunelib.prune_model(model, 50, layers=["c"])
    assert type(pruned) is _Named and pruned is not model
    assert int((pruned.conv.kernel.numpy() == 0).sum()) == 24 and np.all(pruned.out.kernel.numpy() != 0)
    assert np.all(model.conv.kernel.numpy() != 0)
    other = _NoConfig()
    other(np.zeros((1, 8, 4), np.float32))
    with pytest.raises(ValueError, match="clone_model"):
        prunelib.prune_model(other, 50, layers=["c"])


# -- bad inputs: one clear error before any work -----------------------------------------------------


def _three_channels():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, name="rgb")(inp)
    h = L.Conv2D(4, 3, name="second")(h)
    return keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(h)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"k": 50, "layers": ["nope"]}, "nope.*not layers"),
        ({"k": 50, "skip": ["nope"]}, "nope.*not layers"),
        ({"k": None, "method": "4:2"}, "0 < N < M"),
        ({"k": None, "method": "2:2"}, "0 < N < M"),
        ({"k": None, "method": "2:4"}, r"rgb.*3 inputs.*skip=\['rgb'\]"),
        ({"k": 75, "method": "1:2"}, "k=None"),
        ({"k": None}, "needs k"),
        ({"k": 50, "method": "global"}, "unknown pruning method"),
        ({"k": 50, "layers": ["rgb"], "skip": ["rgb"]}, "both"),
        ({"k": 50, "include_output": "yes"}, "include_output"),
    ],
)
def test_bad_inputs_are_refused_before_any_work(kwargs, match, monkeypatch):
    model = _three_channels()
    monkeypatch.setattr(api, "_copy", lambda m: pytest.fail("copied before the error"))
    with pytest.raises(ValueError, match=match) as err:
        prunelib.prune_model(model, **kwargs)
    assert "\n" not in str(err.value)


def test_n_m_with_the_first_conv_skipped_prunes_the_rest():
    model = _three_channels()
    pruned = prunelib.prune_model(model, None, "2:4", skip=["rgb"])
    assert np.all(pruned.get_layer("rgb").kernel.numpy() != 0)
    assert int((pruned.get_layer("second").kernel.numpy() == 0).sum()) == 3 * 3 * 4 * 4 // 2
    same = prunelib.prune_model(model, 50, "2:4", skip=["rgb"])  # k may repeat the ratio's percent
    np.testing.assert_array_equal(same.get_layer("second").kernel.numpy(), pruned.get_layer("second").kernel.numpy())


def test_non_finite_weights_and_unlaid_biases_are_named():
    model = _three_channels()
    w = model.get_layer("second").kernel.numpy()
    w[0, 0, 0, 0] = np.nan
    model.get_layer("second").kernel.assign(w)
    with pytest.raises(ValueError, match="second.*NaN"):
        prunelib.prune_model(model, 50)
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    odd = L.EinsumDense("ab,bcd->acd", output_shape=(2, 3), bias_axes="d", name="odd")(inp)
    model = keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(odd)))
    with pytest.raises(ValueError, match="odd.*bias"):
        prunelib.prune_model(model, 50, "unit")
    assert int((prunelib.prune_model(model, 50).get_layer("odd").kernel.numpy() == 0).sum()) == 24


def test_weights_other_layers_hold_are_named_in_a_warning_but_normalization_is_not():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 4))
    h = L.BatchNormalization()(L.Conv2D(4, 3, name="conv")(inp))
    h = L.PReLU(name="prelu")(h)
    model = keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(h)))
    with pytest.warns(UserWarning, match="prelu") as record:
        prunelib.prune_model(model, 50)
    assert not any("batch_normalization" in str(w.message) for w in record)


# -- masks: saved, loaded and applied on models with convolutions ----------------------------------


def _cnn():
    keras.utils.set_random_seed(4)
    inp = keras.Input((8, 8, 4))
    h = L.Conv2D(4, 3, padding="same", name="conv", **RAND)(inp)
    h = L.SeparableConv2D(4, 3, depth_multiplier=2, name="sep", **RAND)(h)
    h = L.DepthwiseConv2D(3, name="dw", **RAND)(h)
    h = L.Flatten()(L.BatchNormalization()(h))
    return keras.Model(inp, L.Dense(3, name="out", **RAND)(L.Dense(6, activation="relu", name="h", **RAND)(h)))


@pytest.mark.parametrize(
    "method,k,include_output", [("weight", 80, False), ("unit", 50, False), ("1:2", None, True), ("weight", 90, True)]
)
def test_masks_of_a_cnn_round_trip(tmp_path, method, k, include_output):
    model = _cnn()
    pruned = prunelib.prune_model(model, k, method, include_output=include_output)
    masks = prunelib.model_masks(pruned)
    kernels = {"conv", "sep/depthwise_kernel", "sep/pointwise_kernel", "dw", "h"} | (
        {"out"} if include_output else set()
    )
    assert {n for n in masks if not n.endswith("/bias")} == kernels
    assert masks["sep/pointwise_kernel"].shape == (1, 1, 8, 4) and masks["dw"].shape == (3, 3, 4, 1)
    prunelib.save_masks(pruned, tmp_path / "m.npz")
    again = prunelib.apply_model_masks(model, prunelib.load_masks(tmp_path / "m.npz", model))
    for a, b in zip(again.get_weights(), pruned.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _x(model)
    np.testing.assert_array_equal(_pred(again, x), _pred(pruned, x))


def test_callback_style_mask_names_apply_too_and_bad_masks_are_named():
    model = _cnn()
    pruned = prunelib.prune_model(model, 50, "unit")
    masks = prunelib.model_masks(pruned)
    by_variable = {("conv/kernel" if n == "conv" else "dw/kernel" if n == "dw" else n): m for n, m in masks.items()}
    again = prunelib.apply_model_masks(model, by_variable)
    for a, b in zip(again.get_weights(), pruned.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="same weights"):
        prunelib.apply_model_masks(model, {"conv": masks["conv"], "conv/kernel": masks["conv"]})
    with pytest.raises(ValueError, match="sep.*2 kernels.*depthwise_kernel"):
        prunelib.apply_model_masks(model, {"sep": masks["sep/pointwise_kernel"]})
    with pytest.raises(ValueError, match="shape"):
        prunelib.apply_model_masks(model, {"dw": masks["conv"]})


def test_compaction_of_a_cnn_with_separable_and_depthwise_layers_is_exact():
    model = _cnn()
    pruned = prunelib.prune_model(model, 50, "unit")
    small = prunelib.compact_model(pruned)  # tests/test_models_conv_compact.py: which channels go
    x = _x(model, 8)
    np.testing.assert_allclose(_pred(small, x), _pred(pruned, x), rtol=1e-5, atol=1e-5)
