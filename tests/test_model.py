from dataclasses import replace

import numpy as np
import pytest
from tiny import TINY, tiny_data

from prunelib.core.evaluate import evaluate_kernels
from prunelib.models import mlp
from prunelib.models.config import Architecture, Recipe, TrainConfig
from prunelib.study.config import ExperimentConfig


def test_default_mlp_has_2386000_kernel_weights_and_named_logits():
    model = mlp.build_mlp()
    kernels = mlp.get_kernels(model)
    assert [w.shape for w in kernels] == [(784, 1000), (1000, 1000), (1000, 500), (500, 200), (200, 10)]
    assert sum(w.size for w in kernels) == 2_386_000
    assert model.count_params() == 2_386_000  # no biases by default
    assert mlp.dense_layers(model)[-1].name == mlp.LOGITS
    assert model.output_shape == (None, 10)


def test_bias_option_adds_biases():
    model = mlp.build_mlp((4,), 3, use_bias=True)
    assert [b.shape for b in mlp.get_biases(model)] == [(4,), (3,)]


def test_training_is_deterministic_and_learns():
    data = tiny_data()
    a = mlp.get_kernels(mlp.train(data, TINY))
    b = mlp.get_kernels(mlp.train(data, TINY))
    for wa, wb in zip(a, b):
        assert wa.tobytes() == wb.tobytes()
    c = mlp.get_kernels(mlp.train(data, replace(TINY, seed=1)))
    assert a[0].tobytes() != c[0].tobytes()
    accuracy, _ = evaluate_kernels(a, data.x_test, data.y_test)
    assert accuracy > 70


def test_model_predictions_match_numpy_evaluation():
    data = tiny_data()
    model = mlp.train(data, TINY)
    logits = np.asarray(model.predict(data.x_test, verbose=0))
    # bf16 training, float32 evaluation of the same float32 weights: compare in float32
    f32 = mlp.with_weights(
        mlp.build_mlp(TINY.architecture.hidden_sizes, 2, precision="float32"), mlp.get_kernels(model)
    )
    accuracy, _ = evaluate_kernels(mlp.get_kernels(model), data.x_test, data.y_test)
    f32_logits = np.asarray(f32.predict(data.x_test, verbose=0))
    assert 100 * np.mean(f32_logits.argmax(1) == data.y_test) == pytest.approx(accuracy)
    assert np.mean(logits.argmax(1) == f32_logits.argmax(1)) > 0.95


def test_with_weights_returns_new_model_and_leaves_original():
    model = mlp.build_mlp((4,), 3)
    before = mlp.get_kernels(model)
    zeros = [np.zeros_like(w) for w in before]
    clone = mlp.with_weights(model, zeros)
    assert all(np.count_nonzero(w) == 0 for w in mlp.get_kernels(clone))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, mlp.get_kernels(model)))


def test_train_or_load_caches_by_config(tmp_path):
    data = tiny_data()
    first = mlp.train_or_load(data, TINY, cache=tmp_path)
    files = list(tmp_path.glob("*.keras"))
    assert len(files) == 1 and files[0].name.startswith("tiny-")
    again = mlp.train_or_load(data, TINY, cache=tmp_path)
    for a, b in zip(mlp.get_kernels(first), mlp.get_kernels(again)):
        assert a.tobytes() == b.tobytes()
    mlp.train_or_load(data, TINY.with_recipe(epochs=1), cache=tmp_path)
    assert len(list(tmp_path.glob("*.keras"))) == 2
    data = tiny_data()
    assert mlp.cache_key(data, TINY) != mlp.cache_key(tiny_data(seed=1), TINY)


def test_configs_are_frozen_and_validated():
    cfg = ExperimentConfig()
    with pytest.raises(AttributeError):
        cfg.ks = (1,)  # type: ignore[misc]
    with pytest.raises(ValueError, match="120"):
        ExperimentConfig(ks=(0, 120))
    with pytest.raises(ValueError):
        Recipe(epochs=-1)
    with pytest.raises(ValueError, match="'sgd'"):
        Recipe(lr_schedule="sgd")
    with pytest.raises(ValueError, match="hidden_sizes"):
        Architecture(hidden_sizes=(10, 0))
    with pytest.raises(ValueError, match="Architecture and Recipe"):
        TrainConfig(architecture=(1000, 10))  # type: ignore[arg-type]
    assert ExperimentConfig.quick().train.train_subset == 2000
