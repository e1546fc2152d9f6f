"""Frozen configuration of what trains a model, split along what determines what.

* :class:`Architecture`: the network (layer widths, classes, biases).
* :class:`Recipe`: the optimizer recipe that trains it (epochs, batch, learning rate, schedule,
  weight decay, precision). The recipe study varies only this.
* :class:`TrainConfig`: one trained model = architecture + recipe + seed + training subset; its
  fields are the model's cache key.
* :class:`RecoveryConfig`, :class:`AwareTarget`: recovery training after (or while) pruning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from numbers import Real

from prunelib.core.pruning import validate_k


@dataclass(frozen=True)
class Architecture:
    """The MLP: ReLU hidden layers of ``hidden_sizes`` units, then ``num_classes`` linear logits."""

    hidden_sizes: tuple[int, ...] = (1000, 1000, 500, 200)
    num_classes: int = 10
    use_bias: bool = False

    def __post_init__(self) -> None:
        for size in (*self.hidden_sizes, self.num_classes):  # int() would turn 1.5 into 1 unnoticed
            try:
                _check_whole("a layer size", size, 1)
            except ValueError:
                raise ValueError(
                    f"invalid architecture: hidden_sizes={self.hidden_sizes}, num_classes="
                    f"{self.num_classes}; every size must be a positive integer, got {size!r}"
                ) from None
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        if not self.hidden_sizes or min(self.hidden_sizes) < 1 or self.num_classes < 1:
            raise ValueError(
                f"invalid architecture: hidden_sizes={self.hidden_sizes}, "
                f"num_classes={self.num_classes}; every size must be a positive integer"
            )


def _check_whole(name: str, value: object, low: int, high: int | None = None) -> None:
    """Raise ValueError unless ``value`` is a whole number (an int, or a float like 300.0) in
    [low, high)."""
    whole = (
        not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value) and float(value).is_integer()
    )
    if not whole or value < low or (high is not None and value >= high):
        span = f"[{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be a whole number {span}, got {value!r}")


@dataclass(frozen=True)
class Recipe:
    """How a model is trained: Adam(W) over ``epochs`` with a learning-rate schedule.

    The defaults are the recipe study's choice on MNIST (:data:`DEFAULT_RECIPE`): the largest area
    under both one-shot curves among the recipes within 1,180 optimizer steps (10 epochs of 512)
    whose dense accuracy is within 0.5 points of the best of them.
    """

    epochs: int = 10
    batch_size: int = 512
    learning_rate: float = 6e-3
    lr_schedule: str = "cosine"  # "cosine" (decay to 0 over training) or "constant"
    weight_decay: float = 1.0  # decoupled weight decay (AdamW) on the kernels; 0 = plain Adam
    precision: str = "mixed_bfloat16"  # bf16 matmuls, float32 weights; or "float32"
    jit_compile: bool = False  # XLA measured no faster on CPU here, and slower with bf16

    def __post_init__(self) -> None:
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.precision not in ("mixed_bfloat16", "float32"):
            raise ValueError(f"precision must be 'mixed_bfloat16' or 'float32', got {self.precision!r}")
        _check_whole("epochs", self.epochs, 0)
        _check_whole("batch_size", self.batch_size, 1)
        for name in ("learning_rate", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.epochs < 0 or self.batch_size < 1 or not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError(
                f"invalid recipe: {self}; need epochs >= 0, batch_size >= 1, learning_rate > 0, weight_decay >= 0"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model (and so its cache key).

    Attributes:
        architecture: the network.
        recipe: the optimizer recipe.
        seed: initialization and data-order seed.
        train_subset: train on the first n training images; None = all.
    """

    architecture: Architecture = field(default_factory=Architecture)
    recipe: Recipe = field(default_factory=Recipe)
    seed: int = 0
    train_subset: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.architecture, Architecture) or not isinstance(self.recipe, Recipe):
            raise ValueError(
                f"architecture and recipe must be Architecture and Recipe instances, got "
                f"{type(self.architecture).__name__} and {type(self.recipe).__name__}"
            )
        _check_whole("seed", self.seed, 0, 2**32)
        if self.train_subset is not None:
            _check_whole("train_subset", self.train_subset, 1)
        if self.train_subset is not None and self.train_subset < 1:
            raise ValueError(f"train_subset must be a positive number of images or None, got {self.train_subset}")

    def with_recipe(self, **changes) -> TrainConfig:
        """This config with some recipe fields changed (``with_recipe(epochs=1)``)."""
        return replace(self, recipe=replace(self.recipe, **changes))


@dataclass(frozen=True)
class AwareTarget:
    """Pruning-aware training from scratch for one pruning target (Gomez et al. 2019).

    During training, each hidden layer's ``gamma`` fraction of smallest weights (or units, by column
    L2 norm) is dropped with probability ``rate`` at every step, so the network learns not to rely
    on what one-shot pruning at ``k`` will remove; the model is then pruned one-shot at ``k``.

    Attributes:
        method: ``"weight"`` or ``"unit"`` (the targeted dropout variant and the pruning method).
        k: the pruning percentage the model is pruned to after training.
        gamma: targeted fraction of each hidden layer, in [0, 1].
        rate: targeted dropout's alpha, the drop probability of a targeted weight or unit.
        l1: L1 penalty on the hidden kernels (0 for none).
        batch_size: training batch (smaller than the dense recipe's: the random drops need many
            updates).
    """

    method: str
    k: float
    gamma: float
    rate: float = 0.75
    l1: float = 0.0
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.method not in ("weight", "unit"):
            raise ValueError(f"pruning-aware method must be 'weight' or 'unit', got {self.method!r}")
        object.__setattr__(self, "k", validate_k(self.k))
        if not (0 <= self.gamma <= 1 and 0 <= self.rate <= 1 and self.l1 >= 0 and self.batch_size >= 1):
            raise ValueError(f"invalid pruning-aware settings: {self}")

    def train_config(self, base: TrainConfig) -> TrainConfig:
        """The model this target trains: ``base`` with this target's batch size."""
        return base.with_recipe(batch_size=self.batch_size)


# -- the recipe study's named recipes (plain data: importing them loads no framework) -----

# Every field spelled out: a change of Recipe's defaults must never move a recipe of the study.
_B512 = Recipe(
    epochs=10,
    batch_size=512,
    learning_rate=1e-3,
    lr_schedule="cosine",
    weight_decay=0.0,
    precision="mixed_bfloat16",
    jit_compile=False,
)

RECIPES: dict[str, Recipe] = {
    # The recipe of the first version: few large-batch steps at a small learning rate.
    "b512-lr1e-3-cosine": _B512,
    "b512-lr2e-3-cosine": replace(_B512, learning_rate=2e-3),
    "b512-lr4e-3-cosine": replace(_B512, learning_rate=4e-3),
    "b512-lr8e-3-cosine": replace(_B512, learning_rate=8e-3),
    "b512-lr4e-3-constant": replace(_B512, learning_rate=4e-3, lr_schedule="constant"),
    "b512-lr4e-3-cosine-fp32": replace(_B512, learning_rate=4e-3, precision="float32"),
    "b512-lr4e-3-cosine-20ep": replace(_B512, learning_rate=4e-3, epochs=20),
    "b512-lr4e-3-cosine-wd0.1": replace(_B512, learning_rate=4e-3, weight_decay=0.1),
    "b512-lr4e-3-cosine-wd0.3": replace(_B512, learning_rate=4e-3, weight_decay=0.3),
    "b512-lr4e-3-cosine-wd1": replace(_B512, learning_rate=4e-3, weight_decay=1.0),
    "b512-lr4e-3-cosine-wd2": replace(_B512, learning_rate=4e-3, weight_decay=2.0),
    "b512-lr4e-3-cosine-wd3": replace(_B512, learning_rate=4e-3, weight_decay=3.0),
    "b512-lr4e-3-cosine-wd1-20ep": replace(_B512, learning_rate=4e-3, weight_decay=1.0, epochs=20),
    "b512-lr6e-3-cosine-wd1": replace(_B512, learning_rate=6e-3, weight_decay=1.0),
    "b512-lr8e-3-cosine-wd1": replace(_B512, learning_rate=8e-3, weight_decay=1.0),
    "b128-lr1e-3-constant": replace(_B512, batch_size=128, lr_schedule="constant"),
    "b128-lr2e-3-cosine": replace(_B512, batch_size=128, learning_rate=2e-3),
    # The seed notebook's recipe (shuffled): Adam 1e-3, batch 64, float32.
    "b64-lr1e-3-constant-fp32": replace(_B512, batch_size=64, lr_schedule="constant", precision="float32"),
}
"""Named recipes of the study; every field is spelled out, so defaults elsewhere cannot move them."""

FIRST_RECIPE = "b512-lr1e-3-cosine"
"""The recipe of the first version (few large-batch steps at a small learning rate)."""
DEFAULT_RECIPE = "b512-lr6e-3-cosine-wd1"
"""The recipe :class:`Recipe` defaults to, chosen by :func:`prunelib.study.recipes.choose` on the
study's MNIST results, and used on every dataset (on Fashion-MNIST the rule picks
``b512-lr4e-3-cosine``: 1.1 points more accurate dense, 10 points less one-shot area; see
docs/least-squares.md)."""


def get_recipe(name: str) -> Recipe:
    """The :class:`Recipe` named ``name`` in :data:`RECIPES`.

    Raises:
        ValueError: ``name`` is not a key of :data:`RECIPES`.
    """
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}") from None


def recipe_model(name: str, seed: int = 0) -> TrainConfig:
    """The model the recipe study trains for recipe ``name``: the challenge's architecture on all
    training images.

    Raises:
        ValueError: ``name`` is not a key of :data:`RECIPES`.
    """
    return TrainConfig(recipe=get_recipe(name), seed=seed)


@dataclass(frozen=True)
class RecoveryConfig:
    """The budget and recipe of recovery training after (or while) pruning.

    Attributes:
        recipe: the optimizer recipe of recovery training: ``epochs`` of fine-tuning or gradual
            pruning at Adam's peak ``learning_rate`` decaying to 0 along a cosine, no weight decay
            (stated here: recovery never follows the dense models' recipe).
        ramp_fraction: share of the budget over which gradual pruning ramps to the target; the rest
            trains at the target sparsity.
        every: optimizer steps between mask updates of gradual pruning (Zhu & Gupta's delta t).
        imp_epochs: training epochs per round of iterative magnitude pruning.
        imp_rounds: rounds of iterative magnitude pruning; round r prunes to
            ``100 * (1 - (1 - k/100) ** (r / rounds))`` percent.
        imp_rewind: ``"lr"`` keeps the trained weights and restarts the learning rate each round
            (Renda et al. 2020); ``"init"`` rewinds surviving weights to their initialization
            (Frankle & Carbin 2019).
        train_logits: let recovery training update the logit layer. Off by default: the challenge
            never touches the weights into the logits, so recovery only retrains hidden layers.
        distill: weight of knowledge distillation from the dense model (0 = labels only, 1 = teacher
            only); the dense model's logits are the teacher (Hinton et al. 2015).
        temperature: distillation temperature.
        train_subset: first n training images (None = all).
    """

    recipe: Recipe = field(
        default_factory=lambda: Recipe(
            epochs=2,
            batch_size=128,
            learning_rate=1e-2,
            lr_schedule="cosine",
            weight_decay=0.0,
            precision="mixed_bfloat16",
            jit_compile=False,
        )
    )
    ramp_fraction: float = 0.5
    every: int = 20
    imp_rounds: int = 3
    imp_epochs: int = 1
    imp_rewind: str = "lr"
    train_logits: bool = False
    distill: float = 0.7
    temperature: float = 4.0
    train_subset: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.recipe, Recipe):
            raise ValueError(f"recipe must be a Recipe, got {type(self.recipe).__name__}")
        if self.recipe.epochs < 1 or not 0 < self.ramp_fraction <= 1 or self.imp_rounds < 1 or self.imp_epochs < 1:
            raise ValueError(f"invalid recovery config: {self}")
        if not 0 <= self.distill <= 1 or self.temperature <= 0:
            raise ValueError(f"invalid distillation settings: {self}")
        if self.imp_rewind not in ("lr", "init"):
            raise ValueError(f"imp_rewind must be 'lr' or 'init', got {self.imp_rewind!r}")

    def with_recipe(self, **changes) -> RecoveryConfig:
        """This config with some recipe fields changed (``with_recipe(epochs=1)``)."""
        return replace(self, recipe=replace(self.recipe, **changes))
