"""Least squares and post-training methods on convolutions, checked against the layers' own outputs.

The reference fit here never reads patches: a layer is linear in its kernel and bias, so its output
on the calibration inputs is ``sum_e w_e A_e + sum_j b_j B_j`` where ``A_e`` is the layer's own
output with the one-hot kernel ``e`` (bias 0) and ``B_j`` with the one-hot bias ``j``. The kept
weights' least-squares fit is then an ordinary ``numpy.linalg.lstsq`` over those columns, which the
re-fit (patches from an identity convolution, normal equations per group) must reproduce.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import prunelib  # noqa: E402
from prunelib.toolkit import layerwise  # noqa: E402

L = keras.layers
RAND = {"bias_initializer": "random_normal"}

CASES = {
    "conv1d-same-strides": (lambda n: L.Conv1D(4, 3, padding="same", strides=2, name=n, **RAND), (8, 3)),
    "conv1d-causal-dilation": (lambda n: L.Conv1D(4, 3, padding="causal", dilation_rate=2, name=n, **RAND), (8, 3)),
    "conv2d-valid-dilation": (lambda n: L.Conv2D(4, 3, dilation_rate=2, name=n, **RAND), (7, 7, 2)),
    "conv2d-same-strides": (lambda n: L.Conv2D(4, 3, padding="same", strides=(2, 1), name=n, **RAND), (6, 5, 2)),
    "conv2d-groups": (lambda n: L.Conv2D(4, 2, groups=2, name=n, **RAND), (5, 5, 4)),
    "conv3d-same": (lambda n: L.Conv3D(3, 2, padding="same", name=n, **RAND), (3, 3, 3, 2)),
    "depthwise1d": (lambda n: L.DepthwiseConv1D(3, depth_multiplier=2, padding="same", name=n, **RAND), (8, 3)),
    "depthwise2d-strides": (lambda n: L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, name=n, **RAND), (7, 7, 2)),
    "conv1d-transpose": (lambda n: L.Conv1DTranspose(3, 3, strides=2, name=n, **RAND), (5, 2)),
    "conv2d-transpose-same": (lambda n: L.Conv2DTranspose(3, 3, strides=2, padding="same", name=n, **RAND), (4, 4, 2)),
    "conv3d-transpose": (lambda n: L.Conv3DTranspose(2, 2, strides=2, name=n, **RAND), (2, 2, 2, 2)),
}


def _single(case, seed=0):
    make, shape = CASES[case]
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape)
    return keras.Model(inp, make("under_test")(inp), name=case.replace("-", "_"))


def _correlated(shape, n, seed=1):
    """Inputs whose neighbours and channels correlate, so that a re-fit has something to compensate."""
    z = np.random.default_rng(seed).standard_normal((n, *shape))
    return (z + np.roll(z, 1, axis=1) + 0.5 * np.roll(z, 1, axis=-1)).astype(np.float32)


def _out(model, x):
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), np.float64)


def _reference(model, layer_name, x, kernel_mask):
    """The kept weights and the live units' biases fitted by lstsq over the layer's own one-hot outputs."""
    layer = model.get_layer(layer_name)
    kernel, bias = (np.array(w) for w in layer.get_weights())
    probe = keras.models.clone_model(model)
    probe_layer = probe.get_layer(layer_name)

    def response(k, b):
        probe_layer.set_weights([k.astype(np.float32), b.astype(np.float32)])
        return _out(probe, x).ravel()

    kept = np.flatnonzero(kernel_mask.ravel())
    columns = [response(np.eye(1, kernel.size, e).reshape(kernel.shape), np.zeros_like(bias)) for e in kept]
    units_of = [np.flatnonzero(c.reshape(-1, bias.size).any(axis=0)) for c in columns]
    alive = np.zeros(bias.size, bool)
    for units in units_of:
        alive[units] = True
    dead = np.flatnonzero(~alive)
    columns += [response(np.zeros_like(kernel), np.eye(1, bias.size, j).ravel()) for j in np.flatnonzero(alive)]
    target = _out(model, x).ravel()
    target -= response(np.zeros_like(kernel), np.where(alive, 0.0, bias)) if dead.size else 0.0
    solution = np.linalg.lstsq(np.stack(columns, axis=1), target, rcond=None)[0]
    want_kernel = np.zeros(kernel.size)
    want_kernel[kept] = solution[: kept.size]
    want_bias = bias.astype(np.float64).copy()
    want_bias[alive] = solution[kept.size :]
    return want_kernel.reshape(kernel.shape), want_bias


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_refit_is_the_least_squares_fit_of_the_layers_own_outputs(case):
    model = _single(case)
    n = 48
    x = _correlated(tuple(model.inputs[0].shape[1:]), n)
    pruned = prunelib.prune_model(model, 60, include_output=True)
    before = [w.copy() for w in pruned.get_weights()]
    fitted = prunelib.reconstruct_model(model, pruned, x, damping=1e-9)
    assert all(np.array_equal(a, b) for a, b in zip(before, pruned.get_weights()))  # inputs untouched
    mask = prunelib.model_masks(pruned)["under_test"]
    assert np.array_equal(prunelib.model_masks(fitted)["under_test"], mask)  # the masks are kept
    want_kernel, want_bias = _reference(model, "under_test", x, mask)
    got_kernel, got_bias = fitted.get_layer("under_test").get_weights()
    scale = np.abs(want_kernel).max()
    np.testing.assert_allclose(got_kernel, want_kernel, rtol=0, atol=2e-3 * scale)
    np.testing.assert_allclose(got_bias, want_bias, rtol=0, atol=2e-3 * scale)
    err = [np.mean((_out(m, x) - _out(model, x)) ** 2) for m in (pruned, fitted)]
    assert err[1] < err[0]


@pytest.mark.parametrize("layer", ["separable2d", "separable1d"])
def test_separable_convolutions_refit_both_stages_and_keep_their_masks(layer):
    keras.utils.set_random_seed(0)
    make = {"separable2d": (L.SeparableConv2D, (6, 6, 3)), "separable1d": (L.SeparableConv1D, (8, 3))}[layer]
    inp = keras.Input(make[1])
    model = keras.Model(inp, make[0](4, 3, depth_multiplier=2, padding="same", name="sep", **RAND)(inp))
    x = _correlated(make[1], 64)
    pruned = prunelib.prune_model(model, 50, include_output=True)
    fitted = prunelib.reconstruct_model(model, pruned, x)
    for key, mask in prunelib.model_masks(pruned).items():
        assert np.array_equal(prunelib.model_masks(fitted)[key], mask), key
    err = [np.mean((_out(m, x) - _out(model, x)) ** 2) for m in (pruned, fitted)]
    assert err[1] < err[0]


def _cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(4, 3, activation="relu", name="c1", **RAND),
            L.MaxPooling2D(2),
            L.Conv2D(8, 2, activation="tanh", name="c2", **RAND),
            L.Flatten(),
            L.Dropout(0.5),
            L.Dense(3, activation="softmax", name="out"),
        ],
        name="tiny_cnn",
    )


def test_a_cnn_is_refitted_layer_by_layer_with_the_output_layer_untouched():
    model = _cnn()
    x = _correlated((8, 8, 1), 64)
    pruned = prunelib.prune_model(model, 70)
    fitted = prunelib.reconstruct_model(model, pruned, x)
    np.testing.assert_array_equal(fitted.get_layer("out").kernel.numpy(), model.get_layer("out").kernel.numpy())
    for name in ("c1", "c2"):
        assert np.array_equal(prunelib.model_masks(fitted)[name], prunelib.model_masks(pruned)[name])
    err = [np.mean((_out(m, x) - _out(model, x)) ** 2) for m in (pruned, fitted)]
    assert err[1] < err[0]


def test_calibration_batches_do_not_change_the_fit(monkeypatch):
    model = _cnn()
    x = _correlated((8, 8, 1), 64)
    pruned = prunelib.prune_model(model, 70)
    whole = prunelib.reconstruct_model(model, pruned, x)
    monkeypatch.setattr(layerwise, "_BATCH_FLOATS", 500)  # a few images per batch
    assert len(layerwise.batches(64, 36 * 9)) > 8
    batched = prunelib.reconstruct_model(model, pruned, x)
    for a, b in zip(whole.get_weights(), batched.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, np.abs(a).max()))


CONV_METHODS = ["magnitude", "magnitude+lstsq", "wanda+lstsq", "obs+lstsq", "obs-gradual", "per-unit-obs-gradual"]


@pytest.mark.parametrize(
    "method", [*CONV_METHODS, "search-obs-gradual", "global-obs-gradual", "owl-obs-gradual", "per-unit-greedy+lstsq"]
)
def test_post_training_methods_on_a_cnn_prune_exactly_and_leave_the_output_alone(method):
    model = _cnn()
    before = [w.copy() for w in model.get_weights()]
    x = _correlated((8, 8, 1), 64)
    pruned = prunelib.post_training_model(model, 75, x, method=method)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    zeros = {n: int((pruned.get_layer(n).kernel.numpy() == 0).sum()) for n in ("c1", "c2")}
    sizes = {n: model.get_layer(n).kernel.numpy().size for n in ("c1", "c2")}
    if method.split("-")[0] in ("per", "search", "global", "owl"):  # one total over the layers
        assert sum(zeros.values()) == round(0.75 * sum(sizes.values()))
    else:
        assert zeros == {n: round(0.75 * s) for n, s in sizes.items()}
    np.testing.assert_array_equal(pruned.get_layer("out").kernel.numpy(), model.get_layer("out").kernel.numpy())
    assert np.isfinite(_out(pruned, x)).all()


def test_post_training_on_a_cnn_beats_one_shot_and_obs_beats_magnitude():
    model = _cnn()
    x = _correlated((8, 8, 1), 128)
    dense = _out(model, x)
    err = {
        name: float(np.mean((_out(m, x) - dense) ** 2))
        for name, m in {
            "one-shot": prunelib.prune_model(model, 85),
            "lstsq": prunelib.post_training_model(model, 85, x, method="magnitude+lstsq"),
            "obs": prunelib.post_training_model(model, 85, x, method="obs-gradual"),
        }.items()
    }
    assert err["obs"] < err["lstsq"] < err["one-shot"]


def test_unit_norm_lstsq_removes_whole_filters_of_a_cnn():
    model = _cnn()
    x = _correlated((8, 8, 1), 64)
    pruned = prunelib.post_training_model(model, 50, x, method="unit-norm+lstsq")
    kernel = pruned.get_layer("c2").kernel.numpy()
    gone = ~kernel.any(axis=(0, 1, 2))
    assert gone.sum() == 4 and np.all(pruned.get_layer("c2").bias.numpy()[gone] == 0)


@pytest.mark.parametrize(
    "method", ["per-unit-obs-gradual+network", "search-obs-gradual+network", "unit-obs+lstsq", "unit-activation+lstsq"]
)
def test_methods_that_read_mlp_layers_only_are_refused_on_a_cnn_by_name(method):
    model = _cnn()
    with pytest.raises(ValueError, match="convolutions") as info:
        prunelib.post_training_model(model, 75, _correlated((8, 8, 1), 64), method=method)
    assert "per-unit-obs-gradual" in str(info.value)


def test_greedy_supports_read_through_keras_equal_the_mlp_methods_own():
    from prunelib.core.post_training import get_method
    from prunelib.toolkit import api

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((12,)), L.Dense(8, activation="relu", **RAND), L.Dense(6, activation="relu"), L.Dense(3)]
    )
    x = np.random.default_rng(0).random((200, 12), dtype=np.float32)
    mlp_path = prunelib.post_training_model(model, 60, x, method="per-unit-greedy+lstsq")  # numpy matrices
    graph = api._post_training_graph(model, 60, x, get_method("per-unit-greedy+lstsq"), 0.01)  # through Keras
    for a, b in zip(mlp_path.layers, graph.layers):
        np.testing.assert_array_equal(a.kernel.numpy() == 0, b.kernel.numpy() == 0)
        np.testing.assert_allclose(a.kernel.numpy(), b.kernel.numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("k", [50, 53])  # 53: an odd kept count, one group keeps one more
def test_greedy_on_a_grouped_conv_keeps_as_many_weights_in_every_group(k):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((5, 5, 4)), CASES["conv2d-groups"][0]("under_test"), L.Flatten(), L.Dense(2, name="out")]
    )
    pruned = prunelib.post_training_model(model, k, _correlated((5, 5, 4), 64), method="per-unit-greedy+lstsq")
    kernel = pruned.get_layer("under_test").kernel.numpy()  # (2, 2, 2 inputs per group, 4 filters: 2 per group)
    kept = [int((kernel[..., 2 * g : 2 * g + 2] != 0).sum()) for g in range(2)]
    keep = kernel.size - round(k / 100 * kernel.size)
    assert kept == [keep - keep // 2, keep // 2]


def test_bad_calibration_for_a_cnn_is_refused_before_any_work():
    model = _cnn()
    pruned = prunelib.prune_model(model, 50)
    with pytest.raises(ValueError, match=r"shape \(4, 1, 8, 8\)"):
        prunelib.reconstruct_model(model, pruned, np.zeros((4, 1, 8, 8), np.float32))  # channels first
    with pytest.raises(ValueError, match="too few for layer 'c2': each gives 4 rows of 17 inputs"):
        # c1 gets 36 rows of its 9 inputs + bias from one image; c2 only 4 rows of 16 + 1
        prunelib.reconstruct_model(model, pruned, np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="swapped"):
        prunelib.reconstruct_model(pruned, model, _correlated((8, 8, 1), 16))


def test_a_pruned_einsum_dense_is_refused_by_name_not_refitted():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 4))
    h = L.EinsumDense("abc,cd->abd", output_shape=(6, 5), name="einsum")(inp)
    h = L.Conv1D(4, 3, name="conv")(h)
    model = keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(h)))
    pruned = prunelib.prune_model(model, 50)
    with pytest.raises(ValueError, match="'einsum' is a EinsumDense"):
        prunelib.reconstruct_model(model, pruned, _correlated((6, 4), 32))


def test_a_pruned_model_of_another_models_weights_is_warned_about_not_refused():
    model, other = _cnn(0), _cnn(1)
    x = _correlated((8, 8, 1), 64)
    with pytest.warns(UserWarning, match=r"do not follow model's in layers \['c2 \(r = "):
        prunelib.reconstruct_model(model, prunelib.prune_model(other, 50), x)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its own pruned (and fine-tuned) copy: no warning
        tuned = prunelib.prune_model(model, 50)
        tuned.set_weights([w * 1.05 for w in tuned.get_weights()])
        prunelib.reconstruct_model(model, tuned, x)


def _tanh_mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((12,)),
            L.Dense(16, activation="tanh", name="h1", **RAND),
            L.Dense(8, activation="tanh", name="h2", **RAND),
            L.Dense(3, activation="softmax", name="out"),
        ]
    )


def test_a_tanh_mlp_runs_the_methods_with_its_own_activations():
    model = _tanh_mlp()
    x = _correlated((12,), 256)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(prunelib.post_training_model(model, 0, x).get_weights(), model.get_weights())
    )  # k = 0 is the model itself
    dense = _out(model, x)
    best = prunelib.post_training_model(model, 80, x, method="obs-gradual")  # the same counts as prune_model
    refit = prunelib.reconstruct_model(model, prunelib.prune_model(model, 80), x)
    zeros = [int((best.get_layer(n).kernel.numpy() == 0).sum()) for n in ("h1", "h2")]
    assert zeros == [round(0.8 * 192), round(0.8 * 128)]
    errors = [float(np.mean((_out(m, x) - dense) ** 2)) for m in (best, refit)]
    assert errors[0] < errors[1]


def test_a_channels_first_convolution_is_refitted_as_keras_computes_it():
    keras.utils.set_random_seed(0)
    inp = keras.Input((2, 7, 7))
    conv = L.Conv2D(4, 3, data_format="channels_first", name="under_test", **RAND)
    model = keras.Model(inp, conv(inp))
    x = _correlated((2, 7, 7), 48)
    try:
        model(x[:1])
    except Exception as err:  # noqa: BLE001 - the backend may not compute it on CPU
        pytest.skip(f"channels_first Conv2D does not run on this backend: {err}")
    pruned = prunelib.prune_model(model, 60, include_output=True)
    fitted = prunelib.reconstruct_model(model, pruned, x, damping=1e-9)
    mask = prunelib.model_masks(pruned)["under_test"]
    want_kernel, want_bias = _reference(model, "under_test", x, mask)
    got_kernel, got_bias = fitted.get_layer("under_test").get_weights()
    scale = np.abs(want_kernel).max()
    np.testing.assert_allclose(got_kernel, want_kernel, rtol=0, atol=2e-3 * scale)
    np.testing.assert_allclose(got_bias, want_bias, rtol=0, atol=2e-3 * scale)
