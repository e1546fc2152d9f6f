"""Round 5 of the fault hunt: pruning while training beside Keras' own callbacks, and the model-level
API on models whose layers are shared with another graph or nested with several outputs.

Each test fails on the code before its fix: a resumed ``fit`` left dense, a warning naming a ``k``
the model does not have, ``EarlyStopping`` or ``SwapEMAWeights`` undoing the masks, an N:M
granularity ignoring a schedule's ``k``, NaN ranked as a magnitude, re-fits reading another model's
graph, a hidden layer taken for an output, a raw Keras or numpy error, folders left behind.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import prunelib  # noqa: E402
from prunelib.core import tensor_masks as tm  # noqa: E402
from prunelib.schedules import ConstantSparsity, PolynomialDecay  # noqa: E402
from prunelib.toolkit import exporting  # noqa: E402
from prunelib.toolkit import kernels as kl  # noqa: E402

L = keras.layers
RNG = np.random.default_rng(0)
X = RNG.random((128, 12), dtype=np.float32)
Y = np.arange(128) % 4


def _mlp(optimizer="adam") -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), L.Dense(16, activation="relu", name="h"), L.Dense(4, name="out")])
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _zeros(model) -> int:
    return int((model.get_layer("h").kernel.numpy() == 0).sum())


def _pred(model, x):
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(model(x, training=False))]


# --- pruning while training ------------------------------------------------------------------------


def test_the_default_schedule_follows_keras_initial_epoch():
    model = _mlp()
    model.fit(X, Y, epochs=1, batch_size=16, verbose=0)  # epoch 0 of 4, then resumed at epoch 1
    callback = prunelib.PruningCallback(50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the schedule ends inside this fit: no warning
        model.fit(X, Y, epochs=4, initial_epoch=1, batch_size=16, verbose=0, callbacks=[callback])
    # the training's epoch 0 began at step 0: the ramp ends at step 16 of its 32, and at step 8 it
    # is where the cubic is a quarter of the way through
    assert callback.history[0] == (8, 43.75) and callback.history[-1] == (16, 50.0)
    assert _zeros(model) == 96
    fresh = _mlp()  # a new optimizer told it is at epoch 3 of 4: the ramp is over, k at once
    again = prunelib.PruningCallback(50)
    fresh.fit(X, Y, epochs=4, initial_epoch=3, batch_size=16, verbose=0, callbacks=[again])
    assert again.history[-1] == (1, 50.0) and _zeros(fresh) == 96  # was dense: the ramp ended at 16


def test_the_default_schedule_starts_dense_after_earlier_training():
    model = _mlp()
    model.fit(X, Y, epochs=1, batch_size=16, verbose=0)  # the optimizer is at step 8
    callback = prunelib.PruningCallback(50)
    model.fit(X, Y, epochs=2, batch_size=16, verbose=0, callbacks=[callback])
    assert callback.history[0] == (8, 0.0) and callback.history[-1] == (16, 50.0)
    assert _zeros(model) == 96


def test_the_warning_names_the_k_the_masks_reached_not_the_schedules():
    model = _mlp()
    callback = prunelib.PruningCallback(schedule=PolynomialDecay(0, 80, 0, 40, frequency=100))
    with pytest.warns(UserWarning, match=r"before the masks reached k=80 \(they are at k=0\)"):
        model.fit(X, Y, epochs=2, batch_size=16, verbose=0, callbacks=[callback])
    assert _zeros(model) == 0


def _ramp():
    return prunelib.PruningCallback(schedule=PolynomialDecay(0, 75, 0, 16, frequency=2))


def test_early_stopping_that_restores_weights_after_the_callback_is_refused_before_any_step():
    model = _mlp()
    before = [w.copy() for w in model.get_weights()]
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    with pytest.raises(ValueError, match=r"EarlyStopping\(restore_best_weights=True\) comes after PruningCallback"):
        model.fit(X, Y, epochs=3, batch_size=16, verbose=0, callbacks=[_ramp(), stop])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert int(model.optimizer.iterations.numpy()) == 0


def test_backup_and_restore_after_the_callback_is_refused(tmp_path):
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(ValueError, match="BackupAndRestore comes after PruningCallback"):
        _mlp().fit(X, Y, epochs=1, verbose=0, callbacks=[_ramp(), backup])
    model = _mlp()
    model.fit(X, Y, epochs=2, batch_size=16, verbose=0, callbacks=[backup, _ramp()])
    assert _zeros(model) == 144


def test_early_stopping_before_the_callback_ends_with_the_final_masks():
    model = _mlp()
    callback = _ramp()
    # mode="max" on the loss: the first epoch stays "best", the least pruned weights
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True, mode="max")
    model.fit(X, Y, epochs=5, batch_size=16, verbose=0, callbacks=[stop, callback])
    kept = callback.masks["h/kernel"]
    assert int((~kept).sum()) == 144 == _zeros(model)  # round(0.75 * 192)
    assert np.all(model.get_layer("h").kernel.numpy()[~kept] == 0)


def test_ema_checkpoints_hold_the_masks_and_swap_before_the_callback_is_refused(tmp_path):
    model = _mlp(keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.9))
    callback = prunelib.PruningCallback(schedule=PolynomialDecay(0, 50, 0, 4, frequency=2))
    save = keras.callbacks.ModelCheckpoint(str(tmp_path / "e{epoch}.keras"))
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    model.fit(X, Y, epochs=2, batch_size=16, verbose=0, callbacks=[callback, swap, save], validation_data=(X, Y))
    assert _zeros(model) == 96
    for path in sorted(tmp_path.glob("e*.keras")):
        assert _zeros(keras.models.load_model(path)) >= 96, path.name  # were dense: the averages
    with pytest.raises(ValueError, match="SwapEMAWeights comes before PruningCallback"):
        _mlp(keras.optimizers.Adam(use_ema=True)).fit(
            X, Y, epochs=1, verbose=0, callbacks=[keras.callbacks.SwapEMAWeights(), prunelib.PruningCallback(50)]
        )


def test_ema_averages_of_a_mixed_precision_model_are_masked(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((12,)), L.Dense(16, activation="relu", name="h"), L.Dense(4, name="out", dtype="float32")]
        )
        optimizer = keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.9)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        assert type(model.optimizer).__name__ == "LossScaleOptimizer"  # the averages are its inner one's
        callback = prunelib.PruningCallback(schedule=PolynomialDecay(0, 50, 0, 4, frequency=2))
        save = keras.callbacks.ModelCheckpoint(str(tmp_path / "e{epoch}.keras"))
        swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
        model.fit(X, Y, epochs=2, batch_size=16, verbose=0, callbacks=[callback, swap, save])
        assert [_zeros(keras.models.load_model(p)) for p in sorted(tmp_path.glob("e*.keras"))] == [96, 96]
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_n_m_refuses_a_constant_schedule_of_another_k():
    with pytest.raises(ValueError, match=r"'2:4' prunes 50 %, but the schedule says k=90"):
        prunelib.PruningCallback(granularity="2:4", schedule=ConstantSparsity(90))
    model = _mlp()
    callback = prunelib.PruningCallback(granularity="2:4", schedule=ConstantSparsity(50, begin_step=2))
    model.fit(X, Y, epochs=1, batch_size=16, verbose=0, callbacks=[callback])
    assert _zeros(model) == 96 and callback.history[0][0] == 2


def test_a_diverged_fit_stops_at_the_next_mask_update():
    model = _mlp(keras.optimizers.SGD(1e30))
    callback = prunelib.PruningCallback(schedule=PolynomialDecay(0, 50, 0, 40, frequency=4))
    with pytest.raises(ValueError, match=r"holds NaN or infinite weights \(the training diverged\)"):
        model.fit(X * 1e10, Y, epochs=5, batch_size=16, verbose=0, callbacks=[callback])


@pytest.mark.parametrize(
    "masks",
    [
        lambda w: tm.weight_mask(w, 75),
        lambda w: tm.unit_mask(w, 50),
        lambda w: tm.global_weight_masks([w], 75),
        lambda w: tm.nm_mask(w, 2, 4, axis=0),
    ],
)
def test_tensor_masks_refuse_nan_rather_than_keep_it(masks):
    kernel = np.arange(1.0, 9.0).reshape(4, 2)
    kernel[0, 0] = np.nan
    with pytest.raises(ValueError, match="holds 1 NaN or infinite weights"):
        masks(kernel)


# --- the model-level API -----------------------------------------------------------------------------


def _surgery() -> tuple[keras.Model, keras.Model]:
    """A model whose layers were first called in another one (a layer inserted between them), and
    the same model with layers of its own."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 2))
    c1, c2 = L.Conv2D(6, 3, name="c1"), L.Conv2D(6, 3, activation="relu", name="c2")
    flat, out = L.Flatten(name="flat"), L.Dense(3, name="out")
    keras.Model(inp, out(flat(c2(c1(inp)))))  # the first calls: the model before the surgery
    new = keras.Model(inp, out(flat(c2(L.Activation("sigmoid", name="inserted")(c1(inp))))))
    own = keras.models.clone_model(new)
    own.set_weights(new.get_weights())
    return new, own


@pytest.mark.parametrize("op", ["reconstruct", "post", "compact"])
def test_layers_first_called_in_another_model_are_read_in_this_one(op):
    new, own = _surgery()
    x = np.random.default_rng(1).random((64, 8, 8, 2), dtype=np.float32)
    results = []
    for model in (new, own):
        if op == "reconstruct":
            results.append(prunelib.reconstruct_model(model, prunelib.prune_model(model, 60), x))
        elif op == "post":
            results.append(prunelib.post_training_model(model, 60, x, method="per-unit-obs-gradual"))
        else:  # pruned in place, as PruningCallback leaves a model: three dead filters
            kernel, bias = model.get_layer("c1").get_weights()
            kernel[..., :3], bias[:3] = 0, 0
            model.get_layer("c1").set_weights([kernel, bias])
            results.append(prunelib.compact_model(model))
    for got, want in zip(_pred(results[0], x), _pred(results[1], x), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _backbone_of_two_outputs():
    i = keras.Input((6,))
    features = L.Dense(8, activation="relu", name="features")(L.Dense(8, activation="relu", name="hidden")(i))
    logits = L.Dense(3, name="logits")(features)
    backbone = keras.Model(i, [features, logits], name="backbone")
    inp = keras.Input((6,))
    return keras.Model(inp, backbone(inp)[1])


def test_only_the_sub_model_output_the_model_uses_is_an_output():
    keras.utils.set_random_seed(0)
    model = _backbone_of_two_outputs()
    assert [layer.name for layer in kl.output_layers(model)] == ["logits"]
    pruned = prunelib.prune_model(model, 50)
    inner = pruned.get_layer("backbone")
    assert int((inner.get_layer("features").kernel.numpy() == 0).sum()) == 32
    assert sorted(prunelib.model_masks(pruned)) == ["features", "hidden"]


def test_a_conv_whose_output_leaves_a_sub_model_keeps_its_channels_in_compaction():
    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 3))
    c1 = L.Conv2D(6, 3, activation="sigmoid", name="c1")(i)
    backbone = keras.Model(i, [c1, L.Conv2D(4, 3, name="c2")(c1)], name="backbone")
    inp = keras.Input((8, 8, 3))
    a, b = backbone(inp)
    heads = [L.Dense(2, name="head_a")(L.Flatten()(a)), L.Dense(2, name="head_b")(L.Flatten()(b))]
    pruned = prunelib.prune_model(keras.Model(inp, L.Add()(heads)), 50, "unit")
    small = prunelib.compact_model(pruned)  # was a raw Keras error: head_a lost its inputs
    x = np.random.default_rng(1).standard_normal((4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(_pred(small, x)[0], _pred(pruned, x)[0], rtol=1e-5, atol=1e-5)


def test_the_search_allocation_scores_every_head_of_any_width():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, activation="relu", name="c2")(L.Conv2D(4, 3, activation="relu", name="c1")(inp))
    f = L.Flatten()(h)
    model = keras.Model(inp, [L.Dense(2, name="a")(f), L.Dense(5, name="b")(f)])
    x = np.random.default_rng(1).random((64, 8, 8, 3), dtype=np.float32)
    pruned = prunelib.post_training_model(model, 50, x, method="search-obs-gradual")  # was a numpy error
    sizes = sum(pruned.get_layer(n).kernel.numpy().size for n in ("c1", "c2"))
    zeros = sum(int((pruned.get_layer(n).kernel.numpy() == 0).sum()) for n in ("c1", "c2"))
    assert zeros == round(0.5 * sizes)


@pytest.mark.parametrize("key", [0, None, ("h",)])
def test_a_mask_name_that_is_not_a_string_is_a_value_error(key):
    model = _mlp()
    with pytest.raises(ValueError, match="mask names must be strings"):
        prunelib.apply_model_masks(model, {key: np.ones((12, 16), bool)})


def test_prune_model_lists_only_the_methods_it_takes():
    with pytest.raises(ValueError, match=r"unknown granularity '2:4:8'; choose one of \['weight', 'unit'\] or"):
        prunelib.prune_model(_mlp(), None, method="2:4:8")


# --- files ------------------------------------------------------------------------------------------------


def test_a_failed_export_into_new_folders_leaves_none_behind(tmp_path, monkeypatch):
    def failed(*_args, **_kwargs):
        raise RuntimeError("the conversion failed")

    monkeypatch.setattr(exporting, "_tflite_bytes", failed)
    with pytest.raises(RuntimeError, match="conversion failed"):
        prunelib.export(_mlp(), tmp_path / "new" / "deeper" / "model.tflite")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError, match="conversion failed"):
        prunelib.export(_mlp(), tmp_path / "kept" / "new" / "model.tflite")
    assert [p.name for p in tmp_path.rglob("*")] == ["kept"]  # a folder that was there stays


def test_masks_that_cannot_be_written_leave_no_new_folder(tmp_path, monkeypatch):
    path = tmp_path / "a" / "b" / "masks.npz"

    def full(*_args, **_kwargs):
        raise OSError("no space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(np.lib.format, "write_array", full)
        with pytest.raises(OSError, match="no space left"):
            prunelib.save_masks({"h": np.ones((12, 16), bool)}, path)
    assert list(tmp_path.iterdir()) == []
    prunelib.save_masks({"h": np.ones((12, 16), bool)}, path)
    assert prunelib.load_masks(path)["h"].all()
