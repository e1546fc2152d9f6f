from dataclasses import replace

import keras
import numpy as np
import pytest
from tiny import TINY, tiny_data

from prunelib.base import strategies as registry
from prunelib.core import pruning, tensor_masks
from prunelib.models import masked, mlp, recovery
from prunelib.models.config import AwareTarget, Recipe
from prunelib.study.config import ExperimentConfig
from prunelib.toolkit.schedules import PolynomialDecay

FAST = recovery.RecoveryConfig(
    Recipe(epochs=2, batch_size=32, learning_rate=1e-2, weight_decay=0.0, precision="float32"), every=2, imp_rounds=2
)


@pytest.fixture(scope="module")
def trained():
    return mlp.train(tiny_data(), TINY)


def hidden_zeros(model):
    return [w == 0 for w in mlp.get_kernels(model)[:-1]]


class ZeroWatch(keras.callbacks.Callback):
    """After every executed batch, record whether the pruned kernel entries are exactly 0."""

    def __init__(self, masks):
        super().__init__()
        self.masks, self.checks = masks, []

    def on_train_batch_end(self, batch, logs=None):
        kernels = mlp.get_kernels(self.model)
        self.checks.append(all(np.all(w[~keep] == 0) for w, keep in zip(kernels, self.masks)))


@pytest.mark.parametrize("method", ["weight", "unit"])
def test_fixed_mask_finetuning_keeps_pruned_weights_at_zero(trained, method):
    data = tiny_data()
    masks = pruning.compute_masks(mlp.get_kernels(trained), 60, method)[:-1]
    net = recovery.trainable_copy(trained, FAST)
    watch = ZeroWatch(masks)
    callback = recovery.pruning_callback(net, method, masks=recovery.hidden_masks(net, masks))
    mlp.fit(net, data, replace(TINY.recipe, epochs=2), seed=0, callbacks=[callback, watch])
    assert watch.checks and all(watch.checks)
    for w, keep in zip(mlp.get_kernels(net), masks):
        assert np.all(w[~keep] == 0)
        assert np.any(w[keep] != 0)
    assert len(net.weights) == len(trained.weights)  # the callback added nothing to the model


@pytest.mark.parametrize("strategy", ["one-shot", *registry.RECOVERY])
@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("k", [0, 50, 90])
def test_strategies_reach_exact_sparsity_and_leave_logits_and_input_untouched(trained, strategy, method, k):
    before = mlp.get_kernels(trained)
    # a closed-form re-fit of 784 inputs needs as many calibration images
    data = tiny_data(1024 if strategy == "refit-finetune" else 256)
    pruned, epochs = recovery.run_strategy(strategy, trained, data, k, method, FAST)
    kernels = mlp.get_kernels(pruned)
    hidden = kernels[:-1]
    if method == "weight" and strategy == "refit-finetune":  # its allocation counts hidden weights together
        zeros = sum(np.count_nonzero(w == 0) for w in hidden)
        assert zeros == pruning.count_to_prune(sum(w.size for w in hidden), k)
    elif method == "weight":
        for w in hidden:
            assert np.count_nonzero(w == 0) == pruning.count_to_prune(w.size, k)
    else:
        for w in hidden:
            dead = np.all(w == 0, axis=0)
            assert dead.sum() == pruning.count_to_prune(w.shape[1], k)
            assert np.all(w[:, ~dead] != 0)  # whole columns: a live unit keeps all its weights
    np.testing.assert_array_equal(kernels[-1], before[-1])  # logits bit-identical
    for a, b in zip(mlp.get_kernels(trained), before):
        np.testing.assert_array_equal(a, b)  # the dense model is not modified
    assert epochs == {"one-shot": 0, "imp": FAST.imp_epochs * FAST.imp_rounds}.get(strategy, FAST.recipe.epochs)
    assert epochs == registry.epochs(strategy, FAST)


def test_training_logits_is_opt_in(trained):
    config = replace(FAST, train_logits=True)
    pruned = recovery.run_strategy("finetune", trained, tiny_data(), 50, "weight", config)[0]
    assert not np.array_equal(mlp.get_kernels(pruned)[-1], mlp.get_kernels(trained)[-1])


def test_finetuning_recovers_accuracy_lost_by_pruning():
    data = tiny_data(512)
    dense = mlp.train(data, replace(TINY, architecture=replace(TINY.architecture, hidden_sizes=(256, 64))))
    table = recovery.recovery_table(
        dense, data, methods=["weight"], ks=[90], strategies=["one-shot", "finetune"], config=FAST, progress=False
    )
    acc = table.set_index("strategy")["accuracy"]
    assert acc["finetune"] > acc["one-shot"]
    assert acc["finetune"] >= 90


def test_recovery_table_is_tidy(trained):
    table = recovery.recovery_table(
        trained,
        tiny_data(),
        methods=["weight", "unit"],
        ks=[50, 90],
        strategies=["one-shot", "gradual"],
        config=FAST,
        progress=False,
    )
    assert list(table.columns) == recovery.RECOVERY_COLUMNS
    assert len(table) == 8
    assert not table.duplicated(["dataset", "method", "k", "strategy", "seed"]).any()
    assert (table["seconds"] > 0).all()
    np.testing.assert_allclose(table["prunable_sparsity"], table["k"], atol=3)  # per-layer rounding


def test_gradual_schedule_is_cubic_and_masks_only_grow(trained):
    schedule = PolynomialDecay(0, 90, 0, 100, frequency=2)
    assert schedule.k_at(0) == 0 and schedule.k_at(100) == 90 and schedule.k_at(500) == 90
    assert schedule.k_at(50) == pytest.approx(90 * (1 - 0.5**3))
    ks = [schedule.k_at(s) for s in range(0, 101, 5)]
    assert ks == sorted(ks)

    net = recovery.trainable_copy(trained, FAST)
    history = []

    class Snap(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            history.append([w != 0 for w in mlp.get_kernels(self.model)[:-1]])

    callback = recovery.pruning_callback(net, "weight", schedule=PolynomialDecay(0, 90, 0, 10, frequency=2))
    mlp.fit(net, tiny_data(), replace(TINY.recipe, epochs=2), seed=0, callbacks=[callback, Snap()])
    assert [k for _, k in callback.history] == sorted(k for _, k in callback.history)
    assert callback.history[-1][1] == 90
    for earlier, later in zip(history, history[1:]):
        for a, b in zip(earlier, later):
            assert not np.any(b & ~a)  # nothing pruned ever comes back


@pytest.mark.parametrize("method", ["weight", "unit"])
def test_tightening_keeps_pruned_entries_even_among_exact_zeros(method):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(6, 5)).astype(np.float32)
    kernel[0, :] = 0.0  # live weights that are exactly zero
    mask = pruning.compute_masks([kernel, np.zeros((5, 2))], 40, method)[0]
    tighten = tensor_masks.unit_mask if method == "unit" else tensor_masks.weight_mask
    new = tighten(kernel * mask, 60, keep=mask)
    assert not np.any(new & ~mask)
    n = kernel.size if method == "weight" else kernel.shape[1]
    pruned = (~new).sum() if method == "weight" else (~new.any(axis=0)).sum()
    assert pruned == pruning.count_to_prune(n, 60)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("variant", ["weight", "unit"])
def test_targeting_threshold_selects_round_gamma_n(gamma, variant):
    kernel = np.random.default_rng(1).normal(size=(7, 10)).astype(np.float32)
    threshold = masked.targeting_threshold(kernel, gamma, variant)
    scores = np.abs(kernel).ravel() if variant == "weight" else np.linalg.norm(kernel, axis=0)
    assert np.count_nonzero(scores < threshold) == round(gamma * scores.size)


@pytest.mark.parametrize("variant", ["weight", "unit"])
def test_targeted_dropout_drops_only_targeted_entries_and_only_in_training(variant):
    layer = masked.MaskedDense(6, dropout_rate=1.0, dropout_variant=variant)
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    layer.build((None, 5))
    kernel = np.asarray(layer.kernel)
    threshold = masked.targeting_threshold(kernel, 0.5, variant)
    layer.threshold.assign(threshold)
    scores = np.abs(kernel) if variant == "weight" else np.linalg.norm(kernel, axis=0)[None, :]
    expected = x @ np.where(scores < threshold, 0.0, kernel)
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), x @ kernel, rtol=1e-5, atol=1e-6)


def test_pruning_aware_training_returns_a_plain_mlp_and_l1_shrinks_weights():
    data = tiny_data(512)
    base = replace(TINY, architecture=replace(TINY.architecture, hidden_sizes=(64, 32))).with_recipe(epochs=4)
    plain = mlp.train(data, base)
    aware = recovery.train_aware(
        data, base, AwareTarget("weight", 90, 0.9, rate=1.0, batch_size=base.recipe.batch_size)
    )
    assert all(type(layer) is not masked.MaskedDense for layer in aware.layers)
    assert mlp.dense_layers(aware)[-1].name == mlp.LOGITS
    l1 = recovery.train_aware(
        data, base, AwareTarget("weight", 90, 0.0, rate=0.0, l1=1e-3, batch_size=base.recipe.batch_size)
    )
    assert np.abs(mlp.get_kernels(l1)[0]).mean() < np.abs(mlp.get_kernels(plain)[0]).mean()


def test_masked_model_round_trips_through_keras_file(tmp_path, trained):
    masks = pruning.compute_masks(mlp.get_kernels(trained), 50, "unit")[:-1]
    net = masked.masked_mlp(trained, masks, dropout_rate=0.5, dropout_variant="unit")
    net.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    for a, b in zip(masked.get_masks(loaded), masks):
        np.testing.assert_array_equal(a, b)
    assert masked.masked_layers(loaded)[0].dropout_variant == "unit"
    x = tiny_data().x_test
    np.testing.assert_allclose(loaded.predict(x, verbose=0), net.predict(x, verbose=0), rtol=1e-6)


def test_distillation_loss_reduces_to_cross_entropy_at_weight_zero():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 1])
    packed = np.concatenate([labels[:, None], rng.normal(size=(4, 3))], axis=1).astype(np.float32)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    np.testing.assert_allclose(recovery.DistillationLoss(0.0)(packed, logits), ce, rtol=1e-6)
    # Pure distillation from a teacher equal to the student: the loss is the entropy, gradient-free minimum
    same = np.concatenate([labels[:, None], logits], axis=1).astype(np.float32)
    other = np.concatenate([labels[:, None], -logits], axis=1).astype(np.float32)
    assert float(recovery.DistillationLoss(1.0, 2.0)(same, logits)) < float(
        recovery.DistillationLoss(1.0, 2.0)(other, logits)
    )


@pytest.mark.parametrize(
    "bad",
    [
        dict(recipe=Recipe(epochs=0)),
        dict(recipe="fast"),
        dict(ramp_fraction=0),
        dict(imp_rewind="x"),
        dict(distill=2),
        dict(temperature=0),
    ],
)
def test_recovery_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        recovery.RecoveryConfig(**bad)


def test_unknown_strategy_is_named(trained):
    with pytest.raises(ValueError, match="'magic'"):
        recovery.run_strategy("magic", trained, tiny_data(), 50, "weight", FAST)


@pytest.mark.parametrize("strategy", ["one-shot", *registry.RECOVERY])
def test_every_strategy_refuses_a_method_it_does_not_support(trained, strategy):
    with pytest.raises(ValueError, match="unknown pruning method 'global-weight' for recovery"):
        recovery.run_strategy(strategy, trained, tiny_data(), 50, "global-weight", FAST)


def test_recovery_table_checks_every_method_and_k_before_any_training(trained, monkeypatch):
    monkeypatch.setattr(recovery, "run_strategy", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(ValueError, match="'wieght'"):
        recovery.recovery_table(trained, tiny_data(), methods=["unit", "wieght"], strategies=["finetune"], config=FAST)
    with pytest.raises(ValueError, match="150"):
        recovery.recovery_table(trained, tiny_data(), ks=[50, 150], strategies=["finetune"], config=FAST)


def test_recovery_table_reads_methods_and_ks_once_so_generators_give_the_whole_grid(trained):
    table = recovery.recovery_table(
        trained,
        tiny_data(),
        methods=(m for m in ("weight", "unit")),
        ks=(k for k in (50, 90)),
        strategies=["one-shot", "finetune"],
        config=replace(FAST, recipe=replace(FAST.recipe, epochs=1)),
        progress=False,
    )
    assert len(table) == 2 * 2 * 2
    assert set(zip(table["strategy"], table["method"], table["k"])) == {
        (s, m, k) for s in ("one-shot", "finetune") for m in ("weight", "unit") for k in (50.0, 90.0)
    }


def test_imp_with_init_rewind_prunes_to_target(trained):
    config = replace(FAST, imp_rewind="init")
    pruned = recovery.run_strategy("imp", trained, tiny_data(), 75, "weight", config)[0]
    for w in mlp.get_kernels(pruned)[:-1]:
        assert np.count_nonzero(w == 0) == pruning.count_to_prune(w.size, 75)


def test_recovery_recipe_states_every_optimizer_setting():
    """The recovery recipe is its own: changing Recipe's defaults must not change it."""
    from prunelib.models.config import RecoveryConfig

    r = RecoveryConfig().recipe
    assert (r.learning_rate, r.batch_size, r.weight_decay, r.lr_schedule, r.epochs, r.precision) == (
        1e-2,
        128,
        0.0,
        "cosine",
        2,
        "mixed_bfloat16",
    )
    assert Recipe().weight_decay != r.weight_decay  # the study's recipe decays, recovery does not


def test_registry_names_every_strategy_once_and_rejects_unknown_names_before_training(trained):
    assert list(registry.STRATEGIES)[0] == "one-shot" and "targeted-dropout" in registry.STRATEGIES
    assert registry.order(["imp", "one-shot", "finetune"]) == ["one-shot", "finetune", "imp"]
    assert registry.epochs("imp", FAST) == FAST.imp_epochs * FAST.imp_rounds
    with pytest.raises(ValueError, match="unknown strategy 'prune-harder'"):
        recovery.recovery_table(trained, tiny_data(), strategies=["finetune", "prune-harder"], config=FAST)
    with pytest.raises(ValueError, match="trains its own model"):
        recovery.run_strategy("targeted-dropout", trained, tiny_data(), 50, "weight", FAST)
    with pytest.raises(ValueError, match="unknown recovery strategy"):
        ExperimentConfig(recovery_strategies=("finetune", "prune-harder"))


def test_masked_model_is_a_clone_and_strips_back_to_a_plain_model_with_the_same_outputs(trained):
    masks = pruning.compute_masks(mlp.get_kernels(trained), 50, "unit")[:-1]
    net = masked.masked_mlp(trained, masks, precision="float32")  # strip always gives float32
    assert [type(layer).__name__ for layer in net.layers if "Dense" in type(layer).__name__] == ["MaskedDense"] * (
        len(mlp.dense_layers(trained)) - 1
    ) + ["Dense"]
    plain = masked.strip(net)
    assert [layer.name for layer in plain.layers] == [layer.name for layer in trained.layers]
    expected = pruning.apply_masks(mlp.get_kernels(trained), [*masks, np.ones_like(mlp.get_kernels(trained)[-1], bool)])
    for got, want in zip(mlp.get_kernels(plain), expected):
        np.testing.assert_array_equal(got, want)
    x = tiny_data().x_test
    np.testing.assert_allclose(plain.predict(x, verbose=0), net.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_targeted_dropout_makes_the_network_robust_to_its_own_pruning():
    """What targeted dropout is for: trained while the weights weight pruning would remove are
    dropped, the network's logits move much less when they are removed than a plain network's do."""
    from prunelib.core import forward

    data = tiny_data(512)
    base = replace(TINY, architecture=replace(TINY.architecture, hidden_sizes=(64, 32))).with_recipe(epochs=4)
    plain = mlp.train(data, base)
    aware = recovery.train_aware(
        data, base, AwareTarget("weight", 90, 0.9, rate=1.0, batch_size=base.recipe.batch_size)
    )

    def change(model):
        kernels, biases = mlp.get_kernels(model), mlp.get_biases(model)
        dense = forward.logits(kernels, data.x_test, biases)
        masks = pruning.compute_masks(kernels, 90, "weight")
        pruned = forward.logits(pruning.apply_masks(kernels, masks), data.x_test, biases)
        return float(np.linalg.norm(pruned - dense) / np.linalg.norm(dense))

    assert change(aware) < 0.75 * change(plain)  # measured 0.48 against 0.91


@pytest.mark.parametrize("method, weight_method", [("weight", None), ("weight", "obs+lstsq"), ("unit", None)])
def test_refit_finetune_starts_from_the_post_training_refit_and_keeps_its_masks(method, weight_method, monkeypatch):
    # enough images for a closed-form fit of 784 inputs plus a bias
    data = tiny_data(1024)
    model = mlp.train(data, TINY)
    if weight_method:  # a per-layer count beside BEST's own (one total over the hidden layers)
        monkeypatch.setitem(recovery.BEST, "weight", weight_method)
    x = recovery.calibration_set(data.x_train, 1024, 0)
    start, _, masks = recovery.post_training_prune_with_biases(
        mlp.get_kernels(model), mlp.get_biases(model), 75, x, method=recovery.BEST[method]
    )
    before = mlp.get_kernels(model)
    config = replace(FAST, recipe=replace(FAST.recipe, epochs=1))
    pruned, epochs = recovery.run_strategy("refit-finetune", model, data, 75, method, config)
    kernels = mlp.get_kernels(pruned)
    for w, s, keep in zip(kernels[:-1], start[:-1], masks[:-1]):
        np.testing.assert_array_equal(w == 0, ~keep | (s == 0))  # the re-fit's zeros, and no others
        assert not np.allclose(w[keep], s[keep])  # and then trained
    np.testing.assert_array_equal(kernels[-1], before[-1])
    for a, b in zip(mlp.get_kernels(model), before):
        np.testing.assert_array_equal(a, b)
    assert epochs == 1
