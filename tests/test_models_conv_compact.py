"""compact_model on models with convolutions: dead filters leave with the input channels that read them.

Every result must predict what the pruned model predicts (within 1e-5, on inputs it never saw) and
be smaller exactly where a constant channel can be folded into the bias of what reads it.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import prunelib  # noqa: E402

L = keras.layers
RAND = {"bias_initializer": "random_normal"}


def _x(model, n=8, seed=3):
    return np.random.default_rng(seed).standard_normal((n, *model.inputs[0].shape[1:])).astype(np.float32)


def _same_predictions(a, b, x):
    want = np.asarray(keras.ops.convert_to_numpy(a(x, training=False)))
    got = np.asarray(keras.ops.convert_to_numpy(b(x, training=False)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * (1 + np.abs(want).max()))


def _shapes(model):
    return {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers if layer.weights}


def _convnet():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            L.Conv2D(8, 3, activation="relu", name="c1"),
            L.MaxPooling2D(2),
            L.Conv2D(6, 3, activation="relu", name="c2"),
            L.Flatten(),
            L.Dropout(0.5),
            L.Dense(4, activation="softmax", name="out"),
        ]
    )


def test_unit_pruned_convnet_loses_its_filters_and_the_rows_that_read_them():
    model = _convnet()
    pruned = prunelib.prune_model(model, 50, "unit")
    before = [w.copy() for w in pruned.get_weights()]
    small = prunelib.compact_model(pruned)
    assert all(np.array_equal(a, b) for a, b in zip(before, pruned.get_weights()))  # not mutated
    assert _shapes(small) == {
        "c1": [(3, 3, 1, 4), (4,)],
        "c2": [(3, 3, 4, 3), (3,)],
        "out": [(3 * 3 * 3, 4), (4,)],  # 3 x 3 positions x 3 channels
    }
    _same_predictions(pruned, small, _x(model))


def test_a_nonzero_constant_channel_is_folded_through_batch_norm_into_a_valid_conv():
    keras.utils.set_random_seed(0)
    inp = keras.Input((9, 9, 3))
    h = L.Conv2D(8, 3, padding="same", name="a", **RAND)(inp)
    h = L.BatchNormalization(name="bn")(h)
    h = L.Activation("sigmoid")(h)  # a removed filter outputs sigmoid(bn(0)), not 0
    h = L.Conv2D(5, 3, name="b", activation="tanh", **RAND)(h)
    out = L.Dense(3, name="out")(L.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    model.get_layer("bn").set_weights(
        [rng.random(8) + 0.5, rng.standard_normal(8), rng.standard_normal(8), rng.random(8) + 0.5]
    )
    pruned = prunelib.prune_model(model, 50, "unit", skip=["b"])
    small = prunelib.compact_model(pruned)
    assert _shapes(small)["a"][0] == (3, 3, 3, 4) and _shapes(small)["bn"] == [(4,)] * 4
    assert _shapes(small)["b"][0] == (3, 3, 4, 5)
    _same_predictions(pruned, small, _x(model))


def test_a_same_padded_reader_keeps_a_channel_whose_constant_is_not_zero():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2))
    h = L.Conv2D(4, 3, padding="same", activation="sigmoid", name="a", **RAND)(inp)
    h = L.Conv2D(3, 3, padding="same", name="b")(h)  # zero padding at the borders: the constant is not
    model = keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(h)))
    pruned = prunelib.prune_model(model, 50, "unit", layers=["a"])
    small = prunelib.compact_model(pruned)
    assert _shapes(small)["a"][0] == (3, 3, 2, 4)  # sigmoid(0) = 0.5 everywhere but the border
    _same_predictions(pruned, small, _x(model))
    relu = keras.Model(inp, L.Dense(2, name="out2")(L.Flatten()(L.Conv2D(3, 3, padding="same", name="b2")(
        L.Conv2D(4, 3, padding="same", activation="relu", name="a2")(inp)))))  # fmt: skip
    pruned = prunelib.prune_model(relu, 50, "unit", layers=["a2"])  # its bias is zeroed: relu(0) = 0
    small = prunelib.compact_model(pruned)
    assert _shapes(small)["a2"][0] == (3, 3, 2, 2) and _shapes(small)["b2"][0] == (3, 3, 2, 3)
    _same_predictions(pruned, small, _x(relu))


def test_channels_that_reach_an_add_or_concatenate_are_kept():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 4))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a", **RAND)(inp)
    s = L.Add()([a, inp])
    b = L.Conv2D(3, 1, name="b", **RAND)(s)
    c = L.Concatenate()([b, L.Conv2D(2, 1, name="c", **RAND)(inp)])
    model = keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(c)))
    pruned = prunelib.prune_model(model, 50, "unit")
    small = prunelib.compact_model(pruned)
    assert _shapes(small) == _shapes(pruned)
    _same_predictions(pruned, small, _x(model))


def test_compaction_cascades_to_a_fixed_point():
    model = _convnet()
    pruned = prunelib.prune_model(model, 50, "unit", layers=["c1"])
    # c2's filter 0 reads only the channels c1 lost: once those go, it is dead too
    weights = pruned.get_layer("c2").get_weights()
    alive = np.any(pruned.get_layer("c1").kernel.numpy() != 0, axis=(0, 1, 2))
    weights[0][:, :, alive, 0] = 0
    pruned.get_layer("c2").set_weights(weights)
    small = prunelib.compact_model(pruned)
    assert _shapes(small)["c2"][0] == (3, 3, 4, 5)  # the relu of its bias alone reaches the Dense, folded
    _same_predictions(pruned, small, _x(model))


def test_a_dense_on_conv_channels_and_an_output_conv_are_handled():
    keras.utils.set_random_seed(0)
    inp = keras.Input((5, 5, 2))
    h = L.Conv2D(4, 3, activation="relu", name="a", **RAND)(inp)
    h = L.Dense(6, activation="relu", name="d", **RAND)(h)  # on the channel axis, per position
    out = L.Conv2D(2, 1, name="out")(h)  # the output layer keeps its filters
    model = keras.Model(inp, out)
    pruned = prunelib.prune_model(model, 50, "unit")
    small = prunelib.compact_model(pruned)
    assert _shapes(small)["a"][0] == (3, 3, 2, 2) and _shapes(small)["d"][0] == (2, 3)
    assert _shapes(small)["out"][0] == (1, 1, 3, 2)
    _same_predictions(pruned, small, _x(model))
