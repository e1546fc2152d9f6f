"""The study's grid: which datasets, methods, ks, seeds and parts run (:class:`ExperimentConfig`).

What trains one model is :mod:`prunelib.models.config`; this module composes those configs into
the study and holds the challenge's default ks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from numbers import Integral

from prunelib.core.pruning import DEFAULT_KS, validate_k
from prunelib.models.config import RECIPES, Architecture, AwareTarget, RecoveryConfig, TrainConfig, _check_whole

RECIPE_STUDY: dict[str, tuple[str, ...]] = {
    "mnist": tuple(RECIPES),
    "fashion-mnist": (
        "b512-lr1e-3-cosine",
        "b512-lr4e-3-cosine",
        "b512-lr8e-3-cosine",
        "b512-lr4e-3-cosine-wd0.1",
        "b512-lr4e-3-cosine-wd1",
        "b512-lr4e-3-cosine-wd3",
        "b512-lr6e-3-cosine-wd1",
        "b128-lr1e-3-constant",
    ),
}
"""The recipes the study runs per dataset (Fashion-MNIST: a subset, to check the MNIST ranking)."""

QUICK_HIDDEN_SIZES: tuple[int, ...] = (100, 100, 100, 100)
"""The smoke run's (:meth:`ExperimentConfig.quick`) hidden layers: the challenge's depth at 100 units
each, so a quick run costs seconds where the challenge's network costs minutes, and unit pruning
at 99 % still keeps a unit in every layer (so retrain-from-scratch has a network to train)."""

PRESETS: tuple[str, ...] = ("challenge", "full")
"""What ``run --preset`` and the notebook's ``preset`` parameter choose between
(:meth:`ExperimentConfig.with_preset`): the challenge's study alone, or everything."""


@dataclass(frozen=True)
class ExperimentConfig:
    """A pruning sweep: datasets x methods x k x seeds on top of a training recipe."""

    datasets: tuple[str, ...] = ("mnist", "fashion-mnist")
    methods: tuple[str, ...] = ("weight", "unit")
    ks: tuple[float, ...] = DEFAULT_KS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    train: TrainConfig = field(default_factory=TrainConfig)
    # One-shot corrections of the challenge's methods: "none" and closed-form "lstsq" reconstruction
    # on calibration_size training images.
    corrections: tuple[str, ...] = ("none", "lstsq")
    calibration_size: int = 4096
    # The library's best post-training method per pruning method (prunelib.core.best.BEST) at every k
    # of ks from best_from on, beside the challenge's curves as one more correction, "best"; None
    # skips it.
    best_from: float | None = 95.0
    # Baselines beside the challenge's two methods: global magnitude pruning and small dense
    # networks trained from scratch with the unit counts unit pruning leaves.
    baselines: bool = True
    # The retrain-from-scratch half of the baselines (with ``baselines``); the challenge preset keeps
    # global pruning but trains no small networks.
    retrain_small: bool = True
    sensitivity: bool = True  # prune one layer at a time
    recipes: bool = True  # the recipe study (prunelib.study.config.RECIPE_STUDY), seed 0
    # Recovery (fine-tuning, gradual, IMP) and pruning-aware training; empty strategies = skip.
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    recovery_strategies: tuple[str, ...] = ("finetune", "refit-finetune", "gradual", "imp")
    recovery_ks: tuple[float, ...] = (90, 95, 99)
    recovery_seeds: tuple[int, ...] = (0,)
    # Targeted-dropout training from scratch, each model pruned one-shot at its k. Gamma a little
    # above k leaves a margin: the weights ranked just inside k were also dropped in training
    # (measured on MNIST, see README).
    aware_targets: tuple[AwareTarget, ...] = (
        AwareTarget("weight", 95, 0.95, 0.75),
        AwareTarget("weight", 97, 0.98, 0.90),
        AwareTarget("unit", 80, 0.80, 0.75),
        AwareTarget("unit", 90, 0.90, 0.90),
    )
    # The parts of the study (prunelib.study.registry.PARTS) to compute; None: every part the
    # fields above enable. A part left out is neither computed nor published.
    parts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        bad = [t for t in self.aware_targets if not isinstance(t, AwareTarget)]
        if bad:
            raise ValueError(f"aware_targets must be AwareTarget instances, got {bad[0]!r}")
        from prunelib.base.strategies import RECOVERY  # the registry imports this module

        unknown = [s for s in self.recovery_strategies if s not in RECOVERY]
        if unknown:
            raise ValueError(f"unknown recovery strategy {unknown[0]!r}; choose from {list(RECOVERY)}")
        unknown = [m for m in self.methods if m not in ("weight", "unit")]
        if unknown:
            raise ValueError(f"unknown pruning method {unknown[0]!r}; choose 'weight' or 'unit'")
        # One spelling of k (float percent), so 90 and 90.0 give the same cache keys.
        object.__setattr__(self, "ks", tuple(validate_k(k) for k in self.ks))
        object.__setattr__(self, "recovery_ks", tuple(validate_k(k) for k in self.recovery_ks))
        if self.best_from is not None:
            object.__setattr__(self, "best_from", validate_k(self.best_from))
        if not self.seeds:
            raise ValueError("need at least one seed")
        if "none" not in self.corrections or not set(self.corrections) <= {"none", "lstsq"}:
            raise ValueError(f"corrections must include 'none' and be among 'none', 'lstsq'; got {self.corrections!r}")
        _check_whole("calibration_size", self.calibration_size, 1)
        if self.calibration_size < 1:
            raise ValueError(f"calibration_size must be positive, got {self.calibration_size}")
        self._check_grid()
        if self.parts is not None:
            from prunelib.study.registry import check_parts  # the registry reads this module's config

            check_parts(self.parts)

    def _check_grid(self) -> None:
        """Refuse what the CLI refuses: unknown datasets, repeated values, seeds that are not
        non-negative ints (a repeated k or seed would write the same table rows twice)."""
        from prunelib.data import DATASETS

        for name in (
            "datasets",
            "methods",
            "ks",
            "seeds",
            "corrections",
            "recovery_strategies",
            "recovery_ks",
            "recovery_seeds",
            "aware_targets",
        ):
            values = getattr(self, name)
            if isinstance(values, str) or not isinstance(values, tuple):
                raise ValueError(f"{name} must be a tuple, got {values!r}")
            seen = [v for i, v in enumerate(values) if v in values[:i]]
            if seen:
                raise ValueError(f"{name} lists {seen[0]!r} more than once; give each value once")
        if not self.datasets or not self.methods or not self.ks:
            raise ValueError("datasets, methods and ks each need at least one value")
        unknown = [d for d in self.datasets if d not in DATASETS]
        if unknown:
            raise ValueError(f"unknown dataset {unknown[0]!r}; choose from {list(DATASETS)}")
        for name in ("seeds", "recovery_seeds"):
            bad = [
                s
                for s in getattr(self, name)
                if isinstance(s, bool) or not isinstance(s, Integral) or not 0 <= s < 2**32
            ]
            if bad:
                raise ValueError(f"{name} must be whole numbers in [0, 2**32), got {bad[0]!r}")
        stray = [s for s in self.recovery_seeds if s not in self.seeds]
        if stray:
            raise ValueError(
                f"recovery seed {stray[0]!r} is not one of the seeds {list(self.seeds)}; "
                "recovery runs on a subset of the seeds"
            )

    def with_preset(self, name: str) -> ExperimentConfig:
        """This config cut to the preset ``name`` of :data:`PRESETS`.

        ``"full"`` leaves it as it is; ``"challenge"`` keeps exactly the challenge's study (the
        sweeps with least squares and global pruning, over the same datasets, seeds and ks) and
        drops the recipe study, retrain-from-scratch, sensitivity, recovery and targeted dropout.
        The parts kept are computed with the same cache keys, so a challenge run followed by a
        full run trains nothing twice.

        Raises:
            ValueError: ``name`` is not a preset.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {list(PRESETS)}")
        if name == "full":
            return self
        return replace(
            self, retrain_small=False, sensitivity=False, recipes=False, recovery_strategies=(), aware_targets=()
        )

    @classmethod
    def quick(cls, **overrides) -> ExperimentConfig:
        """A config for smoke runs: every part exercised, on networks of the challenge's depth but
        :data:`QUICK_HIDDEN_SIZES` wide, trained 1 epoch on 2,000 images, at 4 values of k. Its
        numbers say that the pipeline runs, not how well pruning works."""
        base = cls(
            ks=(0, 50, 90, 99),
            seeds=(0,),
            train=TrainConfig(Architecture(hidden_sizes=QUICK_HIDDEN_SIZES), train_subset=2000).with_recipe(epochs=1),
            recipes=False,
            calibration_size=1000,
            recovery=RecoveryConfig(imp_rounds=2, train_subset=2000).with_recipe(epochs=1),
            recovery_ks=(90,),
            aware_targets=(AwareTarget("weight", 90, 0.9), AwareTarget("unit", 80, 0.8)),
        )
        return replace(base, **overrides)

    @classmethod
    def from_env(cls, **overrides) -> ExperimentConfig:
        """The full config, or :meth:`quick` when ``PRUNELIB_QUICK=1`` is set."""
        if os.environ.get("PRUNELIB_QUICK", "") not in ("", "0"):
            return cls.quick(**overrides)
        return cls(**overrides)

    @property
    def best_ks(self) -> tuple[float, ...]:
        """The ks at which the best post-training method runs: those of ``ks`` from ``best_from`` on."""
        return () if self.best_from is None else tuple(k for k in self.ks if k >= self.best_from)

    def train_config(self, seed: int) -> TrainConfig:
        """The training recipe with ``seed`` filled in."""
        return replace(self.train, seed=seed)
