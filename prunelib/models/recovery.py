"""Recovering accuracy after pruning: fine-tuning, gradual pruning, iterative magnitude pruning,
and pruning-aware training from scratch (targeted dropout).

The strategies are declared in :mod:`prunelib.base.strategies`; this module holds their training code.
Every recovery strategy starts from a trained dense model, leaves it untouched, and returns a new
plain MLP whose pruned weights are exactly zero. Fine-tuning (from magnitude pruning or from a closed-form post-training re-fit), gradual pruning and IMP train with the
library's own :class:`prunelib.PruningCallback` and its schedules (one implementation for users and
the study); targeted dropout changes the forward pass, so it trains masked layers
(:mod:`prunelib.models.masked`). :func:`recovery_table` runs them into one tidy
table, :func:`aware_table` the targeted-dropout models.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict

import keras
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from prunelib.base import strategies as registry
from prunelib.base.fingerprint import code_fingerprint
from prunelib.base.paths import digest
from prunelib.core import pruning, tensor_masks
from prunelib.core.best import BEST
from prunelib.core.evaluate import check_grid, evaluate_kernels
from prunelib.core.post_training import post_training_prune_with_biases
from prunelib.core.reconstruct import calibration_set
from prunelib.data import Dataset
from prunelib.models import masked, mlp
from prunelib.models.config import AwareTarget, RecoveryConfig, TrainConfig
from prunelib.toolkit.masking import MaskingCallback
from prunelib.toolkit.schedules import PolynomialDecay

RECOVERY_COLUMNS = [
    "dataset",
    "method",
    "k",
    "strategy",
    "seed",
    "epochs",
    "sparsity",
    "prunable_sparsity",
    "accuracy",
    "loss",
    "seconds",
    "dense_accuracy",
]

REFIT_CALIBRATION = 8192
"""Training images the re-fit of ``refit-finetune`` reads (the post-training benchmark's)."""

RECOVERY_METHODS = ("weight", "unit")
"""The pruning methods every recovery strategy supports (the challenge's two)."""


@keras.saving.register_keras_serializable(package="prunelib")
class DistillationLoss(keras.losses.Loss):
    """Cross-entropy to the labels blended with a softened match to a teacher's logits.

    ``y_true`` packs the integer label and the teacher's logits as (batch, 1 + classes).

    Args:
        weight: share of the teacher term (0 = plain cross-entropy).
        temperature: softening of both distributions; the teacher term is scaled by its square so
            its gradients keep their size (Hinton et al. 2015).
    """

    def __init__(self, weight: float = 0.5, temperature: float = 4.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.weight, self.temperature = float(weight), float(temperature)

    def call(self, y_true, y_pred):
        from keras import ops

        y_pred = ops.cast(y_pred, "float32")
        labels = ops.cast(y_true[:, 0], "int32")
        hard = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        t = self.temperature
        soft = -ops.sum(ops.softmax(y_true[:, 1:] / t) * ops.log_softmax(y_pred / t), axis=-1) * t * t
        return (1.0 - self.weight) * hard + self.weight * soft

    def get_config(self) -> dict:
        return {**super().get_config(), "weight": self.weight, "temperature": self.temperature}


def fit_recovery(
    net: keras.Model,
    teacher: keras.Model,
    data: Dataset,
    config: RecoveryConfig,
    seed: int,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    progress: bool = False,
    desc: str = "recover",
) -> None:
    """Train ``net`` with the recovery recipe, distilling from ``teacher`` if configured."""
    targets = loss = None
    if config.distill > 0:
        x, y = mlp.training_subset(data, config.train_subset)
        logits = teacher.predict(x, batch_size=10_000, verbose=0).astype(np.float32)
        targets = np.concatenate([y[:, None].astype(np.float32), logits], axis=1)
        loss = DistillationLoss(config.distill, config.temperature)
    mlp.seed_everything(seed)
    mlp.fit(
        net,
        data,
        config.recipe,
        seed=seed,
        train_subset=config.train_subset,
        callbacks=callbacks,
        progress=progress,
        desc=desc,
        targets=targets,
        loss=loss,
    )


def trainable_copy(model: keras.Model, config: RecoveryConfig) -> keras.Model:
    """A copy of the trained MLP to train: hidden layers at the recovery recipe's precision, the
    logit layer frozen unless ``config.train_logits`` (so it keeps its weights bit for bit)."""

    def copy(layer):
        layer_config = layer.get_config()
        if isinstance(layer, keras.layers.Dense):
            if layer.name == pruning.LOGITS:
                layer_config["trainable"] = config.train_logits
            else:
                layer_config["dtype"] = config.recipe.precision or layer.dtype_policy
        return layer.__class__.from_config(layer_config)

    net = keras.models.clone_model(model, clone_function=copy)
    net.set_weights(model.get_weights())
    return net


def _train_pruned(model, net, data, config, seed, callback, progress, desc) -> keras.Model:
    """Train ``net`` with ``callback`` pruning its hidden layers; a plain float32 MLP comes back."""
    fit_recovery(net, model, data, config, seed, [callback], progress, desc)
    return mlp.with_weights(model, mlp.get_kernels(net), mlp.get_biases(net))


def hidden_masks(net: keras.Model, masks: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Masks of the hidden kernels in :class:`prunelib.PruningCallback`'s naming."""
    return {f"{layer.name}/{layer.kernel.name}": m for layer, m in zip(mlp.prunable_layers(net), masks)}


def pruning_callback(net: keras.Model, method: str, **kwargs) -> MaskingCallback:
    """:class:`prunelib.PruningCallback`'s masking on ``net``'s hidden layers (``kwargs``: its schedule
    or masks); the mechanism class itself, so the study's results depend on it and not on ``start=``."""
    return MaskingCallback(granularity=method, layers=[layer.name for layer in mlp.prunable_layers(net)], **kwargs)


def _finetune(model, data, k, method, config, seed, progress) -> keras.Model:
    """Prune ``model`` once at ``k`` percent, then train the survivors with the mask fixed.

    Returns:
        A plain MLP; pruned weights are exactly zero. ``model`` is not modified.
    """
    masks = pruning.compute_masks(mlp.get_kernels(model), k, method)[:-1]
    net = trainable_copy(model, config)
    callback = pruning_callback(net, method, masks=hidden_masks(net, masks))
    return _train_pruned(model, net, data, config, seed, callback, progress, f"finetune {method} {k:g}")


def _refit_finetune(model, data, k, method, config, seed, progress) -> keras.Model:
    """Prune and re-fit ``model`` in closed form with the library's best post-training method for
    ``method`` (:data:`prunelib.core.best.BEST`, on :data:`REFIT_CALIBRATION` training images), then fine-tune with the
    mask fixed.

    Returns:
        A plain MLP; pruned weights are exactly zero. ``model`` is not modified.
    """
    x = calibration_set(data.x_train, min(REFIT_CALIBRATION, len(data.x_train)), seed)
    kernels, biases, masks = post_training_prune_with_biases(
        mlp.get_kernels(model), mlp.get_biases(model), k, x, method=BEST[method]
    )
    net = trainable_copy(mlp.with_weights(model, kernels, biases), config)
    callback = pruning_callback(net, method, masks=hidden_masks(net, masks[:-1]))
    return _train_pruned(model, net, data, config, seed, callback, progress, f"refit-finetune {method} {k:g}")


def _gradual(model, data, k, method, config, seed, progress) -> keras.Model:
    """Prune from dense to ``k`` percent along Zhu & Gupta's cubic schedule while training.

    The target is reached after ``ramp_fraction`` of the budget; training goes on at ``k`` after.
    """
    net = trainable_copy(model, config)
    n = len(mlp.training_subset(data, config.train_subset)[0])
    steps = config.recipe.epochs * mlp.steps_per_epoch(n, config.recipe.batch_size)
    end = max(round(config.ramp_fraction * steps), 1)
    callback = pruning_callback(net, method, schedule=PolynomialDecay(0, k, 0, end, frequency=config.every))
    return _train_pruned(model, net, data, config, seed, callback, progress, f"gradual {method} {k:g}")


def _imp(model, data, k, method, config, seed, progress) -> keras.Model:
    """Iterative magnitude pruning: ``imp_rounds`` rounds of prune, rewind, retrain.

    Rewinding to ``"init"`` restores the dense model's initial kernels, rebuilt from ``seed`` as
    :func:`prunelib.models.mlp.build_mlp` draws them.
    """
    if config.imp_rewind == "init":
        init_kernels = mlp.get_kernels(
            mlp.build_mlp(
                [w.shape[1] for w in mlp.get_kernels(model)[:-1]], seed=seed, input_shape=model.input_shape[1:]
            )
        )
    current = model
    for r in range(1, config.imp_rounds + 1):
        k_r = 100.0 * (1.0 - (1.0 - k / 100.0) ** (r / config.imp_rounds)) if r < config.imp_rounds else k
        hidden = mlp.get_kernels(current)[:-1]
        if r == 1:
            masks = pruning.compute_masks(mlp.get_kernels(current), k_r, method)[:-1]
        else:  # never un-prune: the previous round's zeros stay zero
            tighten = tensor_masks.unit_mask if method == "unit" else tensor_masks.weight_mask
            masks = [tighten(w, k_r, keep=w != 0) for w in hidden]
        # Rewinding restores the hidden kernels only: the logit layer keeps its trained weights.
        start = (
            current
            if config.imp_rewind == "lr"
            else mlp.with_weights(current, [*init_kernels[:-1], mlp.get_kernels(model)[-1]])
        )
        net = trainable_copy(start, config)
        current = _train_pruned(
            model,
            net,
            data,
            config.with_recipe(epochs=config.imp_epochs),
            seed + r,
            pruning_callback(net, method, masks=hidden_masks(net, masks)),
            progress,
            f"imp {method} {k:g} round {r}/{config.imp_rounds}",
        )
    return current


def _one_shot(model, data, k, method, config, seed, progress) -> keras.Model:
    """Prune ``model`` once at ``k`` percent (no training)."""
    return mlp.prune_model(model, k, method)


# Every strategy that starts from a trained model, called as
# strategy(model, data, k, method, config, seed, progress) -> a new plain MLP; run_strategy is the entry
# point, which validates its arguments first.
_TRAINING = {
    "one-shot": _one_shot,
    "finetune": _finetune,
    "refit-finetune": _refit_finetune,
    "gradual": _gradual,
    "imp": _imp,
}
if set(_TRAINING) != {n for n, s in registry.STRATEGIES.items() if s.kind != "from-scratch"}:
    raise ImportError("prunelib.models.recovery and the registry prunelib.base.strategies disagree on the strategies")


def run_strategy(
    strategy: str,
    model: keras.Model,
    data: Dataset,
    k: float,
    method: str,
    config: RecoveryConfig = RecoveryConfig(),
    seed: int = 0,
    progress: bool = False,
) -> tuple[keras.Model, int]:
    """Apply one strategy of :data:`prunelib.base.strategies.STRATEGIES` that starts from ``model``.

    Returns:
        The pruned model and its training epochs.

    Raises:
        ValueError: an unknown strategy or method, a bad k, or a strategy that trains from scratch
            (see :func:`aware_table`).
    """
    (method,), (k,) = check_grid((method,), (k,), known=RECOVERY_METHODS, purpose="recovery")
    if strategy not in _TRAINING:
        registry.get(strategy)  # unknown names: the message lists the registry
        raise ValueError(f"strategy {strategy!r} trains its own model; use aware_table")
    return _TRAINING[strategy](model, data, k, method, config, seed, progress), registry.epochs(strategy, config)


def _row(data: Dataset, pruned: keras.Model, *identity: object, seconds: float, dense_accuracy: float) -> dict:
    """One row of :data:`RECOVERY_COLUMNS`: ``identity`` is (method, k, strategy, seed, epochs)."""
    kernels = mlp.get_kernels(pruned)
    accuracy, loss = evaluate_kernels(kernels, data.x_test, data.y_test, mlp.get_biases(pruned))
    measured = (pruning.sparsity(kernels), pruning.sparsity(kernels[:-1]), accuracy, loss)
    return dict(zip(RECOVERY_COLUMNS, (data.name, *identity, *measured, seconds, dense_accuracy), strict=True))


def recovery_table(
    model: keras.Model,
    data: Dataset,
    *,
    methods: Iterable[str] = ("weight", "unit"),
    ks: Iterable[float] = (90, 95, 99),
    strategies: Iterable[str] = ("one-shot", *registry.RECOVERY),
    config: RecoveryConfig = RecoveryConfig(),
    seed: int = 0,
    base: TrainConfig | None = None,
    cache: str | os.PathLike | None = None,
    retrain: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Run every (strategy, method, k) from ``model`` and evaluate on the test set.

    Args:
        base: the recipe that trained ``model``; when given, each recovered model is cached under
            a key of everything that determines it, so a re-run only evaluates.
        cache: cache directory (default :func:`prunelib.base.paths.cache_dir`).
        retrain: recompute even what is cached.

    Raises:
        ValueError: an unknown strategy or method, or a bad k, before any training.

    Returns:
        One row per (method, k, strategy) with columns :data:`RECOVERY_COLUMNS`; ``seconds`` is the
        wall-clock time of pruning plus training (as first measured, for cached results), and
        ``dense_accuracy`` the accuracy of ``model`` before pruning.
    """
    strategies = list(strategies)
    for name in strategies:
        registry.get(name)
    # Materialized once and checked before any training: a generator would serve the first
    # strategy alone, and a bad method found after the first strategy would waste its training.
    methods, ks = check_grid(methods, ks, known=RECOVERY_METHODS, purpose="recovery")
    grid = [(s, m, k) for s in registry.order(strategies) for m in methods for k in ks]
    dense_accuracy = evaluate_kernels(mlp.get_kernels(model), data.x_test, data.y_test, mlp.get_biases(model))[0]
    rows = []
    for strategy, method, k in tqdm(grid, desc=f"recovery {data.name} seed {seed}", disable=not progress):
        epochs = registry.epochs(strategy, config)

        def build(strategy=strategy, method=method, k=k):
            return run_strategy(strategy, model, data, k, method, config, seed)[0]

        if base is None or strategy == "one-shot":
            t0 = time.perf_counter()
            pruned = build()
            seconds = time.perf_counter() - t0
        else:
            key = {
                "base": mlp.cache_key(data, base),
                "strategy": strategy,
                "method": method,
                "k": k,
                "seed": seed,
                **asdict(config),
                "code": code_fingerprint(__name__),
            }
            name = f"{data.name}-recovery-{digest(key)}"
            pruned, seconds = mlp.cached(name, build, key=key, cache=cache, retrain=retrain)
        rows.append(
            _row(data, pruned, method, k, strategy, seed, epochs, seconds=seconds, dense_accuracy=dense_accuracy)
        )
    return pd.DataFrame(rows, columns=RECOVERY_COLUMNS)


def train_aware(data: Dataset, config: TrainConfig, target: AwareTarget, progress: bool = False) -> keras.Model:
    """Train a fresh model with ``target``'s targeted dropout (and L1), returned as a plain MLP.

    ``config`` is the optimizer recipe (its batch size replaced by the target's); the hidden layers
    train as :class:`prunelib.models.masked.MaskedDense` and are stripped afterwards.
    """
    net = mlp.train(
        data,
        target.train_config(config),
        callbacks=[masked.TargetedDropout(target.gamma)] if target.rate > 0 and target.gamma > 0 else [],
        progress=progress,
        wrap=lambda model: masked.masked_mlp(
            model, dropout_rate=target.rate, dropout_variant=target.method, l1=target.l1
        ),
        desc=f"train {data.name} (targeted dropout {target.method} {target.k:g})",
    )
    return masked.strip(net)


def aware_key(data: Dataset, config: TrainConfig, target: AwareTarget) -> dict:
    """Everything that determines a pruning-aware model (its cache key)."""
    return {
        **mlp.cache_description(data, target.train_config(config)),
        "aware": asdict(target),
        "code": code_fingerprint(__name__),
    }


def aware_table(
    data: Dataset,
    base: TrainConfig,
    targets: Iterable[AwareTarget],
    *,
    cache: str | os.PathLike | None = None,
    retrain: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Train with targeted dropout for each target (cached), then prune one-shot at its k.

    Rows have strategy ``targeted-dropout``; ``epochs`` and ``seconds`` are those of the
    pruning-aware training from scratch, ``dense_accuracy`` the unpruned pruning-aware model's.
    """
    rows = []
    for target in tqdm(list(targets), desc=f"targeted dropout {data.name} seed {base.seed}", disable=not progress):
        key = aware_key(data, base, target)
        model, seconds = mlp.cached(
            f"{data.name}-aware-{digest(key)}",
            lambda target=target: train_aware(data, base, target),
            key=key,
            cache=cache,
            retrain=retrain,
        )
        dense_accuracy = evaluate_kernels(mlp.get_kernels(model), data.x_test, data.y_test)[0]
        pruned = mlp.prune_model(model, target.k, target.method)
        identity = (target.method, target.k, "targeted-dropout", base.seed, base.recipe.epochs)
        rows.append(_row(data, pruned, *identity, seconds=seconds, dense_accuracy=dense_accuracy))
    return pd.DataFrame(rows, columns=RECOVERY_COLUMNS)
