"""Frozen experiment configuration."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from prunelib.pruning import validate_k

DEFAULT_KS: tuple[float, ...] = (0, 25, 50, 60, 70, 80, 90, 95, 97, 99)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model (and so its cache key)."""

    hidden_sizes: tuple[int, ...] = (1000, 1000, 500, 200)
    num_classes: int = 10
    use_bias: bool = False
    epochs: int = 10
    batch_size: int = 512
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"  # "cosine" (decay to 0 over training) or "constant"
    precision: str = "mixed_bfloat16"  # bf16 matmuls, float32 weights; or "float32"
    seed: int = 0
    jit_compile: bool = False  # XLA measured no faster on CPU here, and slower with bf16
    train_subset: int | None = None  # first n training images; None = all
    # Pruning-aware training (Gomez et al. 2019 targeted dropout; L1 on hidden kernels); off by default.
    targeted_dropout: float = 0.0  # alpha: drop probability of a targeted weight/unit
    targeted_gamma: float = 0.0  # fraction of each hidden layer targeted
    targeted_variant: str = "weight"  # "weight" or "unit"
    l1: float = 0.0  # L1 penalty on hidden kernels

    def __post_init__(self) -> None:
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(f"invalid training config: {self}")
        if not (0 <= self.targeted_dropout <= 1 and 0 <= self.targeted_gamma <= 1 and self.l1 >= 0):
            raise ValueError(f"invalid pruning-aware training settings: {self}")
        if self.targeted_variant not in ("weight", "unit"):
            raise ValueError(f"targeted_variant must be 'weight' or 'unit', got {self.targeted_variant!r}")

    @property
    def pruning_aware(self) -> bool:
        """Whether training uses targeted dropout or an L1 penalty."""
        return (self.targeted_dropout > 0 and self.targeted_gamma > 0) or self.l1 > 0


@dataclass(frozen=True)
class ExperimentConfig:
    """A pruning sweep: datasets x methods x k x seeds on top of a training recipe."""

    datasets: tuple[str, ...] = ("mnist", "fashion-mnist")
    methods: tuple[str, ...] = ("weight", "unit")
    ks: tuple[float, ...] = DEFAULT_KS
    seeds: tuple[int, ...] = (0,)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for k in self.ks:
            validate_k(k)

    @classmethod
    def quick(cls, **overrides) -> "ExperimentConfig":
        """A config for smoke runs: 1 epoch on 2,000 images."""
        base = cls(train=TrainConfig(epochs=1, train_subset=2000))
        return replace(base, **overrides)

    @classmethod
    def from_env(cls, **overrides) -> "ExperimentConfig":
        """The full config, or :meth:`quick` when ``PRUNELIB_QUICK=1`` is set."""
        if os.environ.get("PRUNELIB_QUICK", "") not in ("", "0"):
            return cls.quick(**overrides)
        return cls(**overrides)

    def train_config(self, seed: int) -> TrainConfig:
        """The training recipe with ``seed`` filled in."""
        return replace(self.train, seed=seed)
