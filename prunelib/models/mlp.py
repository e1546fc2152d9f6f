"""The challenge's ReLU MLP: building, training (seeded, deterministic on CPU) and caching."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from numbers import Integral
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from prunelib.base.fingerprint import code_fingerprint  # noqa: E402
from prunelib.base.paths import cache_dir, digest  # noqa: E402
from prunelib.base.provenance import cached_artifact, versions  # noqa: E402
from prunelib.core import pruning  # noqa: E402
from prunelib.data import Dataset  # noqa: E402
from prunelib.models.config import Recipe, TrainConfig  # noqa: E402

LOGITS = pruning.LOGITS
"""Name of the output layer (:data:`prunelib.core.pruning.LOGITS`), the one layer never pruned."""


def build_mlp(
    hidden_sizes: Sequence[int] = (1000, 1000, 500, 200),
    num_classes: int = 10,
    input_shape: tuple[int, ...] = (28, 28),
    use_bias: bool = False,
    seed: int = 0,
    precision: str = "float32",
) -> keras.Model:
    """Build a ReLU MLP whose last Dense layer, named ``logits``, is linear.

    Without biases (the default) a zeroed kernel column is a dead unit: it outputs exactly 0.
    ``precision="mixed_bfloat16"`` runs the hidden layers' matmuls in bf16 with float32 weights;
    the logits are always float32 so the loss is computed at full precision.
    """
    init = keras.initializers.GlorotUniform
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden_sizes):
        x = keras.layers.Dense(
            units,
            activation="relu",
            use_bias=use_bias,
            kernel_initializer=init(seed=seed + i),
            dtype=precision,
            name=f"hidden_{i}",
        )(x)
    outputs = keras.layers.Dense(
        num_classes,
        use_bias=use_bias,
        kernel_initializer=init(seed=seed + len(hidden_sizes)),
        dtype="float32",
        name=LOGITS,
    )(x)
    return keras.Model(inputs, outputs, name="mlp")


def dense_layers(model: keras.Model) -> list[keras.layers.Dense]:
    """The model's Dense layers in order; the last must be the logit layer."""
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not layers or layers[-1].name != LOGITS:
        raise ValueError(f"expected the last Dense layer to be named {LOGITS!r}")
    return layers


def prunable_layers(model: keras.Model) -> list[keras.layers.Dense]:
    """The hidden Dense layers, in order: every layer pruning may touch."""
    return dense_layers(model)[:-1]


def output_layer(model: keras.Model) -> keras.layers.Dense:
    """The logit layer (named :data:`LOGITS`), which pruning never touches."""
    return dense_layers(model)[-1]


def get_kernels(model: keras.Model) -> list[np.ndarray]:
    """Copies of the model's kernels in layer order, each (inputs, units)."""
    return [np.array(layer.kernel.numpy()) for layer in dense_layers(model)]


def get_biases(model: keras.Model) -> list[np.ndarray | None]:
    """Copies of the biases in layer order (``None`` for a layer without one)."""
    return [None if layer.bias is None else np.array(layer.bias.numpy()) for layer in dense_layers(model)]


def with_weights(
    model: keras.Model, kernels: Sequence[np.ndarray], biases: Sequence[np.ndarray | None] | None = None
) -> keras.Model:
    """Return a new model of the same architecture holding ``kernels`` (and ``biases``)."""
    clone = keras.models.clone_model(model)
    assign_weights(clone, kernels, get_biases(model) if biases is None else biases)
    return clone


def assign_weights(
    model: keras.Model, kernels: Sequence[np.ndarray], biases: Sequence[np.ndarray | None] | None
) -> None:
    """Load kernels (and, for layers that have one, biases; missing ones become zeros) in place."""
    for i, layer in enumerate(dense_layers(model)):
        layer.kernel.assign(kernels[i])
        if layer.bias is not None:
            bias = biases[i] if biases is not None else None
            layer.bias.assign(bias if bias is not None else np.zeros(kernels[i].shape[1]))


def prune_model(model: keras.Model, k: float, method: str = "weight") -> keras.Model:
    """Return a new model pruned by ``method`` at ``k`` percent; ``model`` is left untouched.

    Unit pruning also zeroes the biases of removed units (if the model has biases).
    """
    kernels = get_kernels(model)
    masks = pruning.compute_masks(kernels, k, method)
    biases = pruning.prune_biases(get_biases(model), masks, method)
    return with_weights(model, pruning.apply_masks(kernels, masks), biases)


def from_kernels(
    kernels: Sequence[np.ndarray],
    biases: Sequence[np.ndarray | None] | None = None,
    input_shape: tuple[int, ...] = (28, 28),
) -> keras.Model:
    """A float32 MLP whose layer sizes are read off ``kernels`` and which holds them.

    Raises:
        ValueError: the kernels or biases are invalid (:func:`prunelib.core.pruning.validate_kernels`,
            :func:`prunelib.core.pruning.validate_biases`), or ``input_shape`` does not flatten to the
            first kernel's inputs.
    """
    kernels = pruning.validate_kernels(kernels)
    biases = pruning.validate_biases(kernels, biases)
    dims = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if (
        not dims
        or not all(isinstance(d, Integral) and not isinstance(d, bool) and d > 0 for d in dims)
        or int(np.prod(dims, dtype=object)) != kernels[0].shape[0]
    ):
        raise ValueError(
            f"input_shape {input_shape!r} must be a tuple of positive ints flattening to "
            f"kernel 0's {kernels[0].shape[0]} inputs"
        )
    input_shape = tuple(int(d) for d in dims)
    use_bias = biases is not None and any(b is not None for b in biases)
    model = build_mlp([w.shape[1] for w in kernels[:-1]], kernels[-1].shape[1], input_shape, use_bias)
    assign_weights(model, kernels, biases)
    return model


def compact_model(model: keras.Model) -> keras.Model:
    """A physically smaller model without the dead units of a (unit-)pruned ``model``.

    Same predictions up to float rounding; the input and the logits keep their sizes.
    """
    from prunelib.core.compact import compact_kernels

    kernels, biases = compact_kernels(get_kernels(model), get_biases(model))
    return from_kernels(kernels, biases, model.input_shape[1:])


def compile_model(model: keras.Model, recipe: Recipe, steps: int, loss: keras.losses.Loss | None = None) -> keras.Model:
    """Compile for training from logits with ``recipe``'s Adam(W) over ``steps`` optimizer steps.

    Args:
        loss: the training loss (default: cross-entropy from integer labels, with an accuracy metric).
    """
    lr = recipe.learning_rate
    if recipe.lr_schedule == "cosine" and steps > 0:
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps)
    optimizer = (
        keras.optimizers.AdamW(lr, weight_decay=recipe.weight_decay)
        if recipe.weight_decay > 0
        else keras.optimizers.Adam(lr)
    )
    model.compile(
        optimizer=optimizer,
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=None if loss else ["accuracy"],
        jit_compile=recipe.jit_compile,
        steps_per_execution=20,  # fewer Python round trips per epoch
    )
    return model


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow.

    TF's op-determinism switch is left off on purpose: Keras turns XLA off under it, and on CPU
    the seeded run is reproducible bit for bit without it (``tests/test_model.py`` checks).
    """
    keras.utils.set_random_seed(seed)


def train_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """A tf.data pipeline reshuffled every epoch with a fixed seed.

    ``y`` is integer labels (n,) or any per-example target array (n, ...) the loss understands.
    """
    return (
        tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32) if y.ndim == 1 else y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def training_subset(data: Dataset, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` training images and labels (all of them for ``None``)."""
    n = n or len(data.x_train)
    return data.x_train[:n], data.y_train[:n]


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in one epoch over ``n`` examples."""
    return -(-n // batch_size)


def fit(
    model: keras.Model,
    data: Dataset,
    recipe: Recipe,
    *,
    seed: int,
    train_subset: int | None = None,
    verbose: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    progress: bool = False,
    desc: str = "train",
    targets: np.ndarray | None = None,
    loss: keras.losses.Loss | None = None,
) -> keras.Model:
    """Compile ``model`` with ``recipe``'s optimizer and train it in place for ``recipe.epochs``.

    Args:
        seed: the data-order seed (the tf.data shuffle).
        train_subset: train on the first n training images (None = all).
        verbose: Keras' own per-epoch output level.
        callbacks: extra Keras callbacks (mask schedules, targeted dropout, ...).
        progress: show a tqdm bar over epochs.
        desc: the progress bar's label.
        targets: per-example training targets for ``loss`` in place of the labels (same order).
        loss: the training loss (default: cross-entropy from the labels).
    """
    if progress:
        from tqdm.keras import TqdmCallback

        callbacks = [*callbacks, TqdmCallback(verbose=0, desc=desc)]
    x, y = training_subset(data, train_subset)
    if targets is not None:
        y = targets[: len(x)]
    compile_model(model, recipe, steps=recipe.epochs * steps_per_epoch(len(x), recipe.batch_size), loss=loss)
    # shuffle=False: the tf.data pipeline already reshuffles every epoch with the seed
    model.fit(
        train_dataset(x, y, recipe.batch_size, seed),
        epochs=recipe.epochs,
        shuffle=False,
        verbose=verbose,
        callbacks=list(callbacks),
    )
    return model


def train(
    data: Dataset,
    config: TrainConfig,
    verbose: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    progress: bool = False,
    *,
    wrap: Callable[[keras.Model], keras.Model] | None = None,
    desc: str | None = None,
) -> keras.Model:
    """Build and train a fresh model on ``data`` as ``config`` says (no caching).

    Args:
        verbose: Keras' own per-epoch output level.
        callbacks: extra Keras callbacks.
        progress: show a tqdm bar over epochs.
        wrap: turns the freshly built model into the network to train (e.g. with masked layers);
            the wrapped network is what is trained and returned.
        desc: the progress bar's label (default: dataset and seed).
    """
    seed_everything(config.seed)
    model = build(config, data.x_train.shape[1:])
    return fit(
        wrap(model) if wrap is not None else model,
        data,
        config.recipe,
        seed=config.seed,
        train_subset=config.train_subset,
        verbose=verbose,
        callbacks=callbacks,
        progress=progress,
        desc=desc or f"train {data.name} seed {config.seed}",
    )


def build(config: TrainConfig, input_shape: tuple[int, ...] = (28, 28)) -> keras.Model:
    """The untrained MLP of ``config``'s architecture, initialized from its seed, in its recipe's
    precision."""
    arch = config.architecture
    return build_mlp(
        arch.hidden_sizes, arch.num_classes, input_shape, arch.use_bias, config.seed, config.recipe.precision
    )


_DATA_DIGESTS: dict[int, tuple[Dataset, str]] = {}


def data_digest(data: Dataset) -> str:
    """A hash of the training arrays (what determines a model, whatever code loaded them)."""
    hit = _DATA_DIGESTS.get(id(data))
    if hit is None or hit[0] is not data:
        h = hashlib.sha256()
        for array in (data.x_train, data.y_train):
            h.update(f"{array.dtype}{array.shape}".encode())
            h.update(np.ascontiguousarray(array).data)
        hit = _DATA_DIGESTS[id(data)] = (data, h.hexdigest()[:16])
    return hit[1]


def cache_description(data: Dataset, config: TrainConfig) -> dict:
    """Everything that determines the trained weights: the training data, the config, the source
    of the code that trains, library versions."""
    return {
        "dataset": data.name,
        "data": data_digest(data),
        **asdict(config),
        "code": code_fingerprint(__name__),
        "versions": versions(),
    }


def cache_key(data: Dataset, config: TrainConfig) -> str:
    """A short stable hash of :func:`cache_description`."""
    return digest(cache_description(data, config))


def _load(path: Path) -> keras.Model:
    return keras.models.load_model(path, compile=False)


def cached(
    name: str,
    build: Callable[[], keras.Model],
    *,
    key: dict | None = None,
    cache: str | os.PathLike | None = None,
    retrain: bool = False,
) -> tuple[keras.Model, float]:
    """Load model ``name`` from the cache, or build it with ``build()`` and save it there.

    The model is stored with a key file (``key``, a checksum, the build time); a damaged entry is
    recomputed with a warning (:func:`prunelib.base.provenance.cached_artifact`).

    Returns:
        The model and the seconds ``build`` took when it ran (as first measured, for a cached one).
    """
    path = Path(cache or cache_dir()) / f"{name}.keras"
    return cached_artifact(
        path,
        key if key is not None else {"name": name},
        build,
        lambda model, tmp: model.save(tmp),
        _load,
        recompute=retrain,
    )


def train_cached(
    data: Dataset,
    config: TrainConfig,
    *,
    retrain: bool = False,
    cache: str | os.PathLike | None = None,
    progress: bool = False,
) -> tuple[keras.Model, float]:
    """The trained model for ``(data, config)`` from the cache, or trained and cached now.

    Returns:
        The model and the seconds its training took (as first measured, for a cached one).

    Raises:
        ValueError: ``config.recipe.epochs`` is 0 (an untrained model is never cached as a trained one).
    """
    if config.recipe.epochs < 1:
        raise ValueError(f"epochs must be at least 1 to train a model, got {config.recipe.epochs}")
    key = cache_description(data, config)
    return cached(
        f"{data.name}-{digest(key)}",
        lambda: train(data, config, progress=progress),
        key=key,
        cache=cache,
        retrain=retrain,
    )


def train_or_load(
    data: Dataset,
    config: TrainConfig,
    retrain: bool = False,
    cache: str | os.PathLike | None = None,
    progress: bool = False,
) -> keras.Model:
    """Return the trained model for ``(data, config)``, from the cache when it is there.

    Args:
        retrain: train even if a cached model exists (and overwrite it).
        cache: directory of cached models (default :func:`prunelib.base.paths.cache_dir`).
        progress: show a tqdm bar over training epochs.
    """
    return train_cached(data, config, retrain=retrain, cache=cache, progress=progress)[0]
