"""PruningCallback and its schedules: exact counts, no resurrection, every kernel layer, saving.

Tiny models, a few dozen steps each: the invariants, not accuracy.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import prunelib  # noqa: E402
from prunelib.core import tensor_masks as tm  # noqa: E402
from prunelib.schedules import ConstantSparsity, PolynomialDecay  # noqa: E402
from prunelib.toolkit import kernels as kl  # noqa: E402

L = keras.layers
RNG = np.random.default_rng(0)
X_FLAT = RNG.random((128, 12), dtype=np.float32)
X_IMG = RNG.random((64, 8, 8, 4), dtype=np.float32)
Y = np.arange(128) % 4


def mlp() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((12,)),
            L.Dense(16, activation="relu", name="dense"),
            L.Dense(8, activation="tanh", name="dense_1"),
            L.Dense(4, name="out"),
        ]
    )


def compiled(model: keras.Model, optimizer="adam", **kwargs) -> keras.Model:
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True), **kwargs)
    return model


# One model per kernel layer type, with the input it takes.
LAYER_MODELS = {
    "Dense": (lambda: L.Dense(8), (12,)),
    "EinsumDense": (lambda: L.EinsumDense("ab,bc->ac", output_shape=8, bias_axes="c"), (12,)),
    "Conv1D": (lambda: L.Conv1D(8, 3, padding="same"), (8, 4)),
    "Conv2D": (lambda: L.Conv2D(8, 3, strides=2, dilation_rate=1), (8, 8, 4)),
    "Conv2D-groups": (lambda: L.Conv2D(8, 3, groups=2, padding="same"), (8, 8, 4)),
    "Conv3D": (lambda: L.Conv3D(8, 2), (4, 4, 4, 4)),
    "DepthwiseConv2D": (lambda: L.DepthwiseConv2D(3, depth_multiplier=2), (8, 8, 4)),
    "DepthwiseConv1D": (lambda: L.DepthwiseConv1D(3), (8, 4)),
    "SeparableConv2D": (lambda: L.SeparableConv2D(8, 3, depth_multiplier=2), (8, 8, 4)),
    "SeparableConv1D": (lambda: L.SeparableConv1D(8, 3), (8, 4)),
    "Conv1DTranspose": (lambda: L.Conv1DTranspose(8, 3), (8, 4)),
    "Conv2DTranspose": (lambda: L.Conv2DTranspose(8, 3, strides=2), (8, 8, 4)),
    "Conv3DTranspose": (lambda: L.Conv3DTranspose(8, 2), (4, 4, 4, 4)),
    "Embedding": (lambda: L.Embedding(20, 8), (6,)),
}


def layer_model(kind: str) -> keras.Model:
    keras.utils.set_random_seed(1)
    make, shape = LAYER_MODELS[kind]
    inp = keras.Input(shape, dtype="int32" if kind == "Embedding" else "float32")
    h = make()(inp)
    out = L.Dense(4)(L.Flatten()(h))
    return compiled(keras.Model(inp, out))


def layer_data(kind: str) -> np.ndarray:
    shape = LAYER_MODELS[kind][1]
    if kind == "Embedding":
        return RNG.integers(0, 20, (64, *shape)).astype("int32")
    return RNG.random((64, *shape), dtype=np.float32)


def zeros(variable) -> int:
    return int((np.asarray(variable.numpy()) == 0).sum())


class Spy(keras.callbacks.Callback):
    """After every batch: every weight the pruning callback has pruned is exactly zero, and no
    weight once pruned ever holds a nonzero value again."""

    def __init__(self, pruning: prunelib.PruningCallback) -> None:
        super().__init__()
        self.pruning, self.pruned, self.batches, self.resurrected = pruning, {}, 0, 0

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.batches += 1
        values = {}
        for layer in self.model.layers:
            values.update({kl.key(layer, v): np.asarray(v.numpy()) for v in layer.weights})
        for path, keep in self.pruning.masks.items():
            assert np.all(values[path][~keep] == 0), f"{path}: a masked weight is nonzero"
            before = self.pruned.get(path, np.zeros(keep.shape, bool))
            self.resurrected += int(np.count_nonzero(values[path][before]))
            self.pruned[path] = before | ~keep


# --- the numpy masks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 25, 50, 90, 100])
@pytest.mark.parametrize("shape", [(7, 5), (3, 3, 4, 6), (2, 5)])
def test_tensor_masks_prune_exactly_round_k_and_only_tighten(k, shape):
    w = RNG.standard_normal(shape)
    mask = tm.weight_mask(w, k)
    assert int((~mask).sum()) == round(k / 100 * w.size)
    units = tm.unit_mask(w, k)
    assert int((~units.reshape(-1, shape[-1])).all(axis=0).sum()) == round(k / 100 * shape[-1])
    looser = tm.weight_mask(w, k / 2)
    assert not np.any(tm.weight_mask(w, k, keep=looser) & ~looser)  # what was pruned stays pruned


def test_weight_mask_equals_the_challenge_masks_on_2d_kernels():
    from prunelib.core.pruning import unit_masks, weight_masks

    kernels = [RNG.standard_normal((9, 7)), RNG.standard_normal((7, 3))]
    for k in (10, 50, 90):
        assert np.array_equal(tm.weight_mask(kernels[0], k), weight_masks(kernels, k)[0])
        assert np.array_equal(tm.unit_mask(kernels[0], k), unit_masks(kernels, k)[0])


def test_global_and_nm_masks():
    ws = [RNG.standard_normal((4, 4)), RNG.standard_normal((8, 2))]
    masks = tm.global_weight_masks(ws, 75)
    assert sum(int((~m).sum()) for m in masks) == round(0.75 * 32)
    kept = np.concatenate([np.abs(w[m]) for w, m in zip(ws, masks)])
    dropped = np.concatenate([np.abs(w[~m]) for w, m in zip(ws, masks)])
    assert kept.min() >= dropped.max()
    w = RNG.standard_normal((3, 3, 8, 5))
    mask = tm.nm_mask(w, 2, 4, axis=-2)
    assert tm.nm_valid(mask, 2, 4, axis=-2) and int(mask.sum()) == w.size // 2
    with pytest.raises(ValueError, match="multiple|along axis"):
        tm.nm_mask(RNG.standard_normal((6, 3)), 2, 4, axis=0)


@pytest.mark.parametrize("bad", ["4:2", "2:2", "0:4", "weights", "2-4", 3])
def test_bad_granularity_is_refused(bad):
    with pytest.raises(ValueError, match="granularity|N:M"):
        tm.parse_nm(bad)


# --- schedules ---------------------------------------------------------------------------------------------


def test_schedules_follow_tfmot_and_end_exactly():
    s = PolynomialDecay(50, 80, begin_step=0, end_step=250, frequency=100)
    assert s.k_at(0) == 50 and s.k_at(250) == 80 and s.k_at(10_000) == 80
    assert [t for t in range(400) if s.updates_at(t)] == [0, 100, 200, 250]
    c = ConstantSparsity(90, begin_step=5, end_step=25, frequency=10)
    assert c.k_at(4) == 0 and c.k_at(5) == 90 and [t for t in range(40) if c.updates_at(t)] == [5, 15, 25]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PolynomialDecay(0, 80, begin_step=100, end_step=50), "end_step"),
        (lambda: PolynomialDecay(80, 50, 0, 10), "masks only tighten"),
        (lambda: ConstantSparsity(120), "percentage"),
        (lambda: ConstantSparsity(50, frequency=0), "frequency"),
        (lambda: ConstantSparsity(50, begin_step=-1), "begin_step"),
        (lambda: PolynomialDecay(0, 50, 0, 10, power=float("nan")), "power"),
    ],
)
def test_bad_schedules_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --- the callback ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 101}, "percentage"),
        ({"k": float("nan")}, "percentage"),
        ({}, "give k"),
        ({"granularity": "4:2"}, "N < M"),
        ({"k": 50, "granularity": "2:4"}, "leave k out"),
        ({"k": 50, "schedule": ConstantSparsity(60)}, "give one of them"),
        ({"k": 50, "layers": "dense"}, "list of layer names"),
        ({"k": 50, "schedule": "cubic"}, "schedule must be"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        prunelib.PruningCallback(**kwargs)


def test_unknown_layer_and_bad_nm_fail_before_any_step():
    model = compiled(mlp())
    before = [w.copy() for w in model.get_weights()]
    for callback, match in (
        (prunelib.PruningCallback(50, layers=["nope"]), "not layers of model"),
        (prunelib.PruningCallback(50, layers=["dense"], skip=["dense"]), "both"),
        (prunelib.PruningCallback(granularity="8:16"), "inputs along axis"),
    ):
        with pytest.raises(ValueError, match=match):
            model.fit(X_FLAT, Y, epochs=1, batch_size=32, verbose=0, callbacks=[callback])
        assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
        assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0


def test_fraction_k_warns_that_k_is_a_percent():
    with pytest.warns(UserWarning, match="percent"):
        prunelib.PruningCallback(0.8)


@pytest.mark.parametrize("granularity", ["weight", "unit", "global"])
@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.Adam(0.01),
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
        lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    ],
)
def test_exact_counts_and_no_resurrection(granularity, optimizer):
    model = compiled(mlp(), optimizer())
    callback = prunelib.PruningCallback(
        70, granularity, schedule=PolynomialDecay(0, 70, begin_step=0, end_step=12, frequency=3)
    )
    spy = Spy(callback)
    model.fit(X_FLAT, Y, epochs=4, batch_size=16, verbose=0, callbacks=[callback, spy])
    assert spy.batches == 32 and spy.resurrected == 0
    hidden = [model.layers[0], model.layers[1]]
    if granularity == "weight":
        assert [zeros(layer.kernel) for layer in hidden] == [round(0.7 * 12 * 16), round(0.7 * 16 * 8)]
    elif granularity == "unit":
        dead = [int((layer.kernel.numpy() == 0).all(axis=0).sum()) for layer in hidden]
        assert dead == [round(0.7 * 16), round(0.7 * 8)]
        for layer in hidden:  # a removed unit's bias goes with it
            assert np.all(layer.bias.numpy()[(layer.kernel.numpy() == 0).all(axis=0)] == 0)
    else:
        assert sum(zeros(layer.kernel) for layer in hidden) == round(0.7 * (12 * 16 + 16 * 8))
    assert zeros(model.layers[2].kernel) == 0  # the output layer is left dense by default
    assert len(model.weights) == 6  # no extra variables
    assert all(layer.kernel.constraint is None for layer in model.layers)  # the user's constraints back


@pytest.mark.parametrize("kind", sorted(LAYER_MODELS))
@pytest.mark.parametrize("granularity", ["weight", "unit"])
def test_every_kernel_layer_type(kind, granularity):
    model = layer_model(kind)
    x, y = layer_data(kind), np.arange(64) % 4
    callback = prunelib.PruningCallback(50, granularity, schedule=ConstantSparsity(50, frequency=1000))
    spy = Spy(callback)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[callback, spy])
    assert spy.resurrected == 0
    spec = kl.describe(model.layers[1])
    assert [spec.key(k.variable) for k in spec.kernels] == [p for p in callback.masks if "bias" not in p]
    for kernel in spec.kernels:
        value = np.asarray(kernel.variable.numpy())
        if granularity == "weight":
            assert zeros(kernel.variable) == round(0.5 * value.size)
        elif kernel.units_of_layer:
            units = {a % value.ndim for a in kernel.unit_axes}
            other = tuple(a for a in range(value.ndim) if a not in units)
            n_units = int(np.prod([value.shape[a] for a in units]))
            assert int((value == 0).all(axis=other).sum()) == round(0.5 * n_units)
    # the pruned model still computes what Keras computes with those weights (nothing hidden)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), keras.ops.convert_to_numpy(model(x, training=False)), rtol=1e-5, atol=1e-5
    )


def test_two_four_on_dense_and_conv_kernels():
    model = layer_model("Conv2D")
    callback = prunelib.PruningCallback(granularity="2:4", include_output=True)
    model.fit(X_IMG, np.arange(64) % 4, epochs=1, batch_size=16, verbose=0, callbacks=[callback])
    conv, dense = model.layers[1], model.layers[3]
    assert tm.nm_valid(conv.kernel.numpy() != 0, 2, 4, axis=-2)
    assert tm.nm_valid(dense.kernel.numpy() != 0, 2, 4, axis=0)
    assert zeros(conv.kernel) == conv.kernel.numpy().size // 2


def test_jit_compile_and_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = compiled(mlp(), jit_compile=True)
    finally:
        keras.config.set_dtype_policy("float32")
    callback = prunelib.PruningCallback(60, schedule=PolynomialDecay(0, 60, 0, 8, frequency=2))
    spy = Spy(callback)
    model.fit(X_FLAT, Y, epochs=2, batch_size=16, verbose=0, callbacks=[callback, spy])
    assert spy.resurrected == 0 and zeros(model.layers[0].kernel) == round(0.6 * 12 * 16)


def test_logs_show_k_and_per_layer_sparsity():
    model = compiled(mlp())
    history = model.fit(
        X_FLAT, Y, epochs=2, batch_size=16, verbose=0, callbacks=[prunelib.PruningCallback(50, granularity="unit")]
    )
    assert history.history["prune_k"][-1] == 50
    assert history.history["sparsity/dense"][-1] == 50 and history.history["sparsity/dense_1"][-1] == 50


def test_default_schedule_reaches_k_half_way_and_warns_when_training_stops_short():
    model = compiled(mlp())
    callback = prunelib.PruningCallback(80)
    model.fit(X_FLAT, Y, epochs=2, batch_size=16, verbose=0, callbacks=[callback])
    assert callback.history[-1] == (8, 80.0)  # 16 steps: the cubic ends at step 8
    model = compiled(mlp())
    late = prunelib.PruningCallback(80, schedule=PolynomialDecay(0, 80, 0, 1000))
    with pytest.warns(UserWarning, match="before the masks reached"):
        model.fit(X_FLAT, Y, epochs=1, batch_size=16, verbose=0, callbacks=[late])


def test_saved_model_loads_without_custom_objects_and_resumes_with_the_same_masks(tmp_path):
    model = compiled(mlp())
    first = prunelib.PruningCallback(60, schedule=PolynomialDecay(0, 60, 0, 16, frequency=4))
    with pytest.warns(UserWarning, match="before the masks reached"):  # stops mid-schedule (8 of 16)
        model.fit(X_FLAT, Y, epochs=1, batch_size=16, verbose=0, callbacks=[first])
    path = tmp_path / "mid.keras"
    model.save(path)
    prunelib.save_masks(first.masks, tmp_path / "masks.npz")
    again = keras.models.load_model(path)  # no custom objects needed
    assert len(again.weights) == len(model.weights)
    assert int(keras.ops.convert_to_numpy(again.optimizer.iterations)) == 8
    resumed = prunelib.PruningCallback(
        60, schedule=PolynomialDecay(0, 60, 0, 16, frequency=4), masks=prunelib.load_masks(tmp_path / "masks.npz")
    )
    spy = Spy(resumed)
    spy.pruned = {p: ~m for p, m in first.masks.items()}  # what was pruned before the save stays pruned
    again.fit(X_FLAT, Y, epochs=1, batch_size=16, verbose=0, callbacks=[resumed, spy])
    assert spy.resurrected == 0
    assert zeros(again.layers[0].kernel) == round(0.6 * 12 * 16)
    # and a plain fit afterwards trains every weight again: the callback left no constraint behind
    again.fit(X_FLAT, Y, epochs=1, batch_size=16, verbose=0)
    assert zeros(again.layers[0].kernel) < round(0.6 * 12 * 16)


def test_subclassed_model_needs_layers_named():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.out = L.Dense(4)  # declared before the hidden layer: attribute order is not call order
            self.hidden = L.Dense(8, activation="relu")

        def call(self, x):
            return self.out(self.hidden(x))

    model = Net()
    model(X_FLAT[:2])
    compiled(model)
    with pytest.raises(ValueError, match="subclassed|no graph"):
        model.fit(X_FLAT, Y, epochs=1, verbose=0, callbacks=[prunelib.PruningCallback(50)])
    callback = prunelib.PruningCallback(50, layers=[model.hidden.name])
    model.fit(X_FLAT, Y, epochs=1, batch_size=16, verbose=0, callbacks=[callback])
    assert zeros(model.hidden.kernel) == 48 and zeros(model.out.kernel) == 0


def test_every_head_of_a_two_headed_model_is_an_output():
    inp = keras.Input((12,))
    h = L.Dense(8, activation="relu", name="trunk")(inp)
    a = L.Dense(3, name="head_a")(h)
    b = L.Activation("softmax")(L.Dense(2, name="head_b")(h))
    model = keras.Model(inp, [a, b])
    assert {layer.name for layer in kl.output_layers(model)} == {"head_a", "head_b"}
    assert [spec.name for spec in kl.prunable_layers(model)] == ["trunk"]


@pytest.mark.parametrize("mode", ["int8"])
def test_quantized_and_lora_layers_are_refused_by_name(mode):
    model = mlp()
    model.layers[0].enable_lora(2)
    with pytest.raises(ValueError, match="LoRA"):
        kl.prunable_layers(model)
    model = mlp()
    model.quantize(mode)
    with pytest.raises(ValueError, match="quantized"):
        kl.prunable_layers(model)


def test_a_dense_subclass_with_its_own_call_is_refused():
    class Scaled(L.Dense):
        def call(self, inputs):
            return super().call(inputs) * 2.0

    model = keras.Sequential([keras.Input((12,)), Scaled(8, name="scaled"), L.Dense(4)])
    with pytest.raises(ValueError, match="its own call"):
        kl.prunable_layers(model)


# --- post-training at the model level, and as the callback's start -----------------------------------------


def relu_mlp(activation="relu") -> keras.Model:
    keras.utils.set_random_seed(2)
    return keras.Sequential(
        [
            keras.Input((12,)),
            L.Dense(24, activation=activation, name="h0"),
            L.Dense(16, activation=activation, name="h1"),
            L.Dense(4, activation="softmax", name="out"),
        ]
    )


@pytest.mark.parametrize("method", ["per-unit-obs-gradual", "obs-gradual", "unit-obs+lstsq"])
def test_post_training_model_equals_the_core_and_keras(method):
    from prunelib.core.post_training import post_training_prune_with_biases

    model = relu_mlp()
    for layer in model.layers:  # nonzero biases, so a bias-free reading would show
        layer.bias.assign(np.linspace(-0.2, 0.3, layer.units).astype(np.float32))
    before = [w.copy() for w in model.get_weights()]
    pruned = prunelib.post_training_model(model, 60, X_FLAT, method=method)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the model is untouched
    kernels = [layer.kernel.numpy() for layer in model.layers]
    biases = [layer.bias.numpy() for layer in model.layers]
    want, want_b, _ = post_training_prune_with_biases(kernels, biases, 60, X_FLAT, method=method)
    for layer, w, b in zip(pruned.layers, want, want_b):
        np.testing.assert_allclose(layer.kernel.numpy(), w.astype(np.float32), rtol=0, atol=0)
        np.testing.assert_allclose(layer.bias.numpy(), b.astype(np.float32), rtol=0, atol=0)
    assert np.array_equal(pruned.layers[-1].kernel.numpy(), model.layers[-1].kernel.numpy())
    # what the numpy core computes is what Keras computes with those weights
    from prunelib.toolkit import chain

    c = chain.chain(pruned, "test")
    np.testing.assert_allclose(chain.predict_chain(c, X_FLAT), pruned.predict(X_FLAT, verbose=0), atol=1e-5)


def test_post_training_model_refuses_a_non_relu_hidden_layer_by_name_where_a_method_assumes_relu():
    with pytest.raises(ValueError, match="ReLU hidden layers; layer 'h0' computes tanh: with this activation it runs"):
        prunelib.post_training_model(relu_mlp("tanh"), 50, X_FLAT, method="unit-obs+lstsq")
    with pytest.raises(ValueError, match="unknown"):
        prunelib.post_training_model(relu_mlp(), 50, X_FLAT, method="best")
    assert set(prunelib.post_training_methods()) >= {"per-unit-obs-gradual", "unit-obs+lstsq"}


@pytest.mark.parametrize("method, granularity", [("per-unit-obs-gradual", "weight"), ("unit-obs+lstsq", "unit")])
def test_start_from_a_post_training_method_then_fine_tune_with_masks_fixed(method, granularity):
    model = relu_mlp()
    model.compile("adam", "sparse_categorical_crossentropy")  # a softmax output: probabilities
    expected = prunelib.post_training_model(model, 70, X_FLAT, method=method)
    callback = prunelib.PruningCallback(70, granularity, start=method, x=X_FLAT)
    spy = Spy(callback)
    model.fit(X_FLAT, Y, epochs=2, batch_size=16, verbose=0, callbacks=[callback, spy])
    assert spy.resurrected == 0
    for got, want in zip(model.layers[:2], expected.layers[:2]):  # the same masks, trained further
        assert np.array_equal(got.kernel.numpy() == 0, want.kernel.numpy() == 0)
        assert not np.array_equal(got.kernel.numpy(), want.kernel.numpy())


def test_start_on_a_cnn_keeps_every_conv_mask_through_fit():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(6, 3, activation="relu", name="c1"),
            keras.layers.Conv2D(4, 2, activation="relu", name="c2"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((48, 6, 6, 2), dtype=np.float32)
    expected = prunelib.post_training_model(model, 80, x, method="per-unit-obs-gradual")
    callback = prunelib.PruningCallback(80, start="per-unit-obs-gradual", x=x)
    spy = Spy(callback)
    model.fit(x, np.arange(48) % 3, epochs=2, batch_size=16, verbose=0, callbacks=[callback, spy])
    assert spy.resurrected == 0 and set(callback.masks) >= {"c1/kernel", "c2/kernel"}
    for name in ("c1", "c2"):
        got, want = model.get_layer(name).kernel.numpy(), expected.get_layer(name).kernel.numpy()
        assert np.array_equal(got == 0, want == 0) and not np.array_equal(got, want), name


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 50, "start": "per-unit-obs-gradual"}, "calibration"),
        ({"start": "per-unit-obs-gradual", "x": X_FLAT}, "give k"),
        ({"k": 50, "start": "unit-obs+lstsq", "x": X_FLAT}, "granularity='unit'"),
        ({"k": 50, "start": "obs-gradual", "x": X_FLAT, "skip": ["h0"]}, "every kernel layer but the outputs"),
        ({"k": 50, "start": "nope", "x": X_FLAT}, "unknown"),
    ],
)
def test_bad_start_is_refused_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        prunelib.PruningCallback(**kwargs)


def test_steps_per_execution_groups_batches_and_the_schedule_still_ends_exactly():
    model = compiled(mlp(), steps_per_execution=4)
    callback = prunelib.PruningCallback(60, schedule=PolynomialDecay(0, 60, 0, 10, frequency=3))
    model.fit(X_FLAT, Y, epochs=2, batch_size=16, verbose=0, callbacks=[callback])
    assert [step for step, _ in callback.history] == [0, 4, 8, 12]  # each due step, at its group's end
    assert zeros(model.layers[0].kernel) == round(0.6 * 12 * 16)


def test_export_drops_the_optimizer_unless_asked(tmp_path):
    model = keras.Sequential([keras.Input((64,)), L.Dense(256, activation="relu", name="h"), L.Dense(4, name="o")])
    weights_only = tmp_path / "dense.weights.h5"
    model.save_weights(weights_only)
    compiled(model)
    x = RNG.random((256, 64), dtype=np.float32)
    model.fit(x, np.arange(256) % 4, epochs=1, verbose=0, callbacks=[prunelib.PruningCallback(80)])
    lean = prunelib.export(model, tmp_path / "lean.keras")
    full = prunelib.export(model, tmp_path / "full.keras", include_optimizer=True)
    assert lean.stat().st_size <= 1.05 * weights_only.stat().st_size < full.stat().st_size
    again = keras.models.load_model(lean)
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))
    assert not again.compiled or again.optimizer is None or not again.optimizer.variables


def test_unit_pruning_refuses_an_einsum_whose_units_are_not_in_bias_order():
    inp = keras.Input((3, 4))
    ok = L.EinsumDense("abc,cde->abde", output_shape=(3, 2, 5), bias_axes="de", name="ok")(inp)
    bad = L.EinsumDense("abc,ced->abde", output_shape=(3, 2, 5), bias_axes="de", name="bad")(inp)  # kernel (c, e, d)
    out = L.Dense(4)(L.Flatten()(L.Add()([ok, bad])))
    model = compiled(keras.Model(inp, out))
    x = RNG.random((32, 3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="'bad'.*not one entry per unit in the kernel's order"):
        model.fit(x, np.arange(32) % 4, epochs=1, verbose=0, callbacks=[prunelib.PruningCallback(50, "unit")])
    assert kl.units_in_bias_order(model.get_layer("ok"))


# --- fault hunt, round 3: reuse, shared weightless layers, same names, interrupted fits ------------------


def test_a_second_fit_with_the_same_callback_keeps_the_pruning_and_a_new_model_is_pruned_afresh():
    callback = prunelib.PruningCallback(50, schedule=ConstantSparsity(50, frequency=1))
    model = compiled(mlp())
    model.fit(X_FLAT, Y, epochs=1, batch_size=16, verbose=0, callbacks=[callback])
    assert zeros(model.layers[0].kernel) == 96
    spy = Spy(callback)
    spy.pruned = {p: ~m for p, m in callback.masks.items()}
    model.fit(X_FLAT, Y, epochs=2, batch_size=16, verbose=0, callbacks=[callback, spy])
    assert spy.resurrected == 0 and zeros(model.layers[0].kernel) == 96
    other = compiled(mlp())
    other.fit(X_FLAT, Y, epochs=1, batch_size=16, verbose=0, callbacks=[callback])
    assert zeros(other.layers[0].kernel) == 96 and callback.history[0][0] == 0
    two_four = prunelib.PruningCallback(granularity="2:4")
    for model in (compiled(mlp()), compiled(mlp())):
        model.fit(X_FLAT, Y, epochs=1, batch_size=16, verbose=0, callbacks=[two_four])
        assert zeros(model.layers[0].kernel) == 12 * 16 // 2


def test_a_weightless_layer_used_twice_does_not_hide_the_output_layer():
    i = keras.Input((12,))
    act = L.Activation("tanh")
    h = act(L.Dense(8, name="hid")(i))
    out = act(L.Dense(3, name="outd")(h))
    model = keras.Model(i, out)
    assert [layer.name for layer in kl.output_layers(model)] == ["outd"]
    assert [spec.name for spec in kl.prunable_layers(model)] == ["hid"]


def test_layers_of_the_same_name_in_nested_models_are_refused():
    a = keras.Sequential([keras.Input((12,)), L.Dense(12, name="d")], name="block_a")
    b = keras.Sequential([keras.Input((12,)), L.Dense(12, name="d")], name="block_b")
    i = keras.Input((12,))
    model = compiled(keras.Model(i, L.Dense(4)(b(a(i)))))
    with pytest.raises(ValueError, match=r"\['d'\] occur more than once"):
        model.fit(X_FLAT, Y, epochs=1, verbose=0, callbacks=[prunelib.PruningCallback(50)])
    with pytest.raises(ValueError, match="more than one layer"):
        kl.prunable_layers(model, layers=["d"])


def test_an_interrupted_fit_keeps_the_masks_until_detach():
    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                raise KeyboardInterrupt

    model = compiled(mlp())
    callback = prunelib.PruningCallback(50, schedule=ConstantSparsity(50, frequency=1))
    with pytest.raises(KeyboardInterrupt):
        model.fit(X_FLAT, Y, epochs=1, batch_size=16, verbose=0, callbacks=[callback, Stop()])
    assert model.layers[0].kernel.constraint is not None  # Keras skips on_train_end after an exception
    callback.detach()
    assert all(layer.kernel.constraint is None for layer in model.layers)
    model.fit(X_FLAT, Y, epochs=1, batch_size=16, verbose=0)  # a plain fit trains every weight again
    assert zeros(model.layers[0].kernel) < 96


def test_resuming_takes_every_name_the_library_gives_masks(tmp_path):
    model = compiled(mlp())
    first = prunelib.PruningCallback(50, "unit", schedule=ConstantSparsity(50, frequency=1))
    model.fit(X_FLAT, Y, epochs=1, batch_size=16, verbose=0, callbacks=[first])
    prunelib.save_masks(first.masks, tmp_path / "cb.npz")  # "<layer>/kernel" and "<layer>/bias"
    prunelib.save_masks(prunelib.prune_model(model, 50), tmp_path / "model.npz")  # layer names
    for path in ("cb.npz", "model.npz"):
        again = prunelib.PruningCallback(50, "unit", masks=prunelib.load_masks(tmp_path / path))
        copy = compiled(mlp())
        copy.set_weights(model.get_weights())
        copy.fit(X_FLAT, Y, epochs=1, batch_size=16, verbose=0, callbacks=[again])
        assert zeros(copy.layers[0].kernel) >= 96


def test_float32_k_equal_to_the_schedule_and_huge_numbers():
    prunelib.PruningCallback(np.float32(33.3), schedule=ConstantSparsity(33.3))
    with pytest.raises(ValueError, match="percentage"):
        prunelib.PruningCallback(10**400)
    with pytest.raises(ValueError, match="power"):
        PolynomialDecay(0, 50, 0, 10, power=10**400)
    with pytest.warns(UserWarning, match="percent"):
        prunelib.PruningCallback(0.5, start="obs-gradual", x=X_FLAT)


def test_gradient_accumulation_counts_optimizer_steps():
    model = compiled(mlp(), keras.optimizers.Adam(0.01, gradient_accumulation_steps=2))
    callback = prunelib.PruningCallback(50, schedule=PolynomialDecay(0, 50, 0, 6, frequency=3))
    model.fit(X_FLAT, Y, epochs=2, batch_size=16, verbose=0, callbacks=[callback])
    iterations = int(model.optimizer.iterations.numpy())
    assert all(step <= iterations for step, _ in callback.history)
    assert zeros(model.layers[0].kernel) == 96
