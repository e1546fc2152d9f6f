"""A zoo of models "trained the usual way": name -> :class:`TrainConfig`, for post-training pruning.

The challenge's own models are trained with the recipe study's chosen recipe, which makes
magnitude pruning easy (weight decay concentrates the norm in few weights). Post-training methods
must also hold on models a user would train with Keras' defaults; the zoo names those, once:

* ``lenet-300-100`` / ``lenet-300-100-bias``: 784-300-100-10 ReLU, Adam 1e-3, batch 128,
  20 epochs, constant learning rate, float32 (LeCun et al. 1998's sizes, Han et al. 2015's baseline);
* ``challenge-seed-recipe``: the challenge MLP trained with the seed notebook's recipe;
* ``challenge``: the challenge MLP with the default (chosen) recipe, the study's own models.

Models are trained and cached by :func:`prunelib.models.mlp.train_or_load`, like every model.

Example:
    >>> config = zoo_config("lenet-300-100", seed=3)
    >>> config.architecture.hidden_sizes, config.recipe.batch_size, config.seed
    ((300, 100), 128, 3)
"""

from __future__ import annotations

from collections.abc import Callable

from prunelib.models.config import RECIPES, Architecture, Recipe, TrainConfig

KERAS_DEFAULTS = Recipe(
    epochs=20,
    batch_size=128,
    learning_rate=1e-3,
    lr_schedule="constant",
    weight_decay=0.0,
    precision="float32",
    jit_compile=False,
)
"""Adam at Keras' default learning rate, no schedule, no weight decay: "trained the usual way"."""

ZOO: dict[str, Callable[[int], TrainConfig]] = {
    "lenet-300-100": lambda seed: TrainConfig(Architecture((300, 100), use_bias=False), KERAS_DEFAULTS, seed),
    "lenet-300-100-bias": lambda seed: TrainConfig(Architecture((300, 100), use_bias=True), KERAS_DEFAULTS, seed),
    "challenge-seed-recipe": lambda seed: TrainConfig(recipe=RECIPES["b64-lr1e-3-constant-fp32"], seed=seed),
    "challenge": lambda seed: TrainConfig(seed=seed),
}
"""Model name -> the :class:`TrainConfig` that trains it for a seed."""


def zoo_config(name: str, seed: int = 0) -> TrainConfig:
    """The :class:`TrainConfig` of zoo model ``name`` for ``seed``.

    Raises:
        ValueError: ``name`` is not a key of :data:`ZOO`.
    """
    try:
        return ZOO[name](seed)
    except KeyError:
        raise ValueError(f"unknown zoo model {name!r}; choose one of {sorted(ZOO)}") from None
