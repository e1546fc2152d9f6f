"""The study's tables, each declared once.

A :class:`Table` names what computes it, the module whose import closure keys its cache entry,
the results table it joins (and whose schema validates it), the trained models it reads, whether a
config computes it at a seed, and its typical cost. The config's validation
(:func:`tables_for`), the in-process run
(:func:`~prunelib.study.experiment.seed_tables`), the task graph and its cost model
(:mod:`prunelib.study.tasks`) all read :data:`TABLES`: adding a table touches this file only.

Building the registry loads no deep-learning framework; computing a table does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from prunelib.data import Dataset
    from prunelib.models.config import TrainConfig
    from prunelib.study.config import ExperimentConfig


@dataclass(frozen=True)
class RunContext:
    """What every computation of one run shares.

    Attributes:
        cache: the cache directory (None: :func:`prunelib.base.paths.cache_dir`).
        data_dir: the data directory (None: :func:`prunelib.base.paths.data_dir`).
        retrain: recompute cached models and tables instead of reading them.
        progress: show progress bars.
    """

    cache: str | os.PathLike | None = None
    data_dir: str | os.PathLike | None = None
    retrain: bool = False
    progress: bool = True


@dataclass(frozen=True)
class SeedInputs:
    """What a seed's table is computed from: the config, the data, the seed and its model."""

    config: ExperimentConfig
    data: Dataset
    seed: int
    model: Callable[[], object]  # the seed's trained model, trained or loaded on first call
    run: RunContext

    @property
    def train(self) -> TrainConfig:
        return self.config.train_config(self.seed)


@dataclass(frozen=True)
class Table:
    """One cached table of the study.

    Attributes:
        name: the phase name (cache file prefix, task name, run-time column).
        builder: the module whose import closure keys the cached table.
        joins: the results table (:data:`prunelib.reporting.tables.SCHEMAS`) its rows join; its
            schema validates the cached table.
        reads: the trained models it reads: ``"model"`` (the seed's), or its own models, trained
            in their own tasks (``"retrain-small"``, ``"recovery"`` besides the seed's model,
            ``"aware"``).
        cost: typical seconds of its task on the reference run; only ratios matter (the progress
            bar's weights).
        wanted: whether a config computes it at a seed.
        key: the config's fields that determine it, beside the dataset, the model and the ks.
        compute: computes it.
    """

    name: str
    builder: str
    joins: str
    reads: str
    cost: float
    wanted: Callable[[ExperimentConfig, int], bool]
    key: Callable[[SeedInputs], dict]
    compute: Callable[[SeedInputs], pd.DataFrame]


def _sweep(i: SeedInputs) -> pd.DataFrame:
    from prunelib.core.evaluate import sweep
    from prunelib.core.reconstruct import calibration_set
    from prunelib.models import mlp

    config, data = i.config, i.data
    kernels, biases = mlp.get_kernels(i.model()), mlp.get_biases(i.model())
    common = dict(dataset=data.name, ks=config.ks, seed=i.seed, biases=biases, progress=i.run.progress)
    frames = [
        sweep(
            kernels,
            data.x_test,
            data.y_test,
            methods=config.methods,
            corrections=config.corrections,
            calibration=calibration_set(data.x_train, config.calibration_size, i.seed),
            **common,
        )
    ]
    if config.baselines:
        frames.append(sweep(kernels, data.x_test, data.y_test, methods=("global-weight",), **common))
    return pd.concat(frames, ignore_index=True)


def _sweep_methods(config: ExperimentConfig) -> tuple[str, ...]:
    return (*config.methods, *(("global-weight",) if config.baselines else ()))


def _retrain_small(i: SeedInputs) -> pd.DataFrame:
    from prunelib.study import analysis

    return analysis.retrain_baseline(
        i.data, i.train, i.config.ks, cache=i.run.cache, retrain=i.run.retrain, progress=i.run.progress
    )


def _sensitivity(i: SeedInputs) -> pd.DataFrame:
    from prunelib.models import mlp
    from prunelib.study import analysis

    return analysis.layer_sensitivity(
        mlp.get_kernels(i.model()),
        i.data.x_test,
        i.data.y_test,
        dataset=i.data.name,
        methods=i.config.methods,
        ks=i.config.ks,
        seed=i.seed,
        progress=i.run.progress,
    )


def _strategies(config: ExperimentConfig) -> tuple[str, ...]:
    return ("one-shot", *config.recovery_strategies)


def _recovery(i: SeedInputs) -> pd.DataFrame:
    from prunelib.models import recovery

    c = i.config
    return recovery.recovery_table(
        i.model(),
        i.data,
        methods=c.methods,
        ks=c.recovery_ks,
        strategies=_strategies(c),
        config=c.recovery,
        seed=i.seed,
        base=i.train,
        cache=i.run.cache,
        retrain=i.run.retrain,
        progress=i.run.progress,
    )


def _aware_key(i: SeedInputs) -> dict:
    from prunelib.models import recovery

    return {"targets": [recovery.aware_key(i.data, i.train, t) for t in i.config.aware_targets]}


def _aware(i: SeedInputs) -> pd.DataFrame:
    from prunelib.models import recovery

    return recovery.aware_table(
        i.data, i.train, i.config.aware_targets, cache=i.run.cache, retrain=i.run.retrain, progress=i.run.progress
    )


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "sweep",
            "prunelib.core.evaluate",
            "sweep",
            "model",
            55.0,
            lambda c, s: True,
            lambda i: {
                "methods": _sweep_methods(i.config),
                "corrections": i.config.corrections,
                "calibration": i.config.calibration_size,
            },
            _sweep,
        ),
        Table(
            "retrain-small",
            "prunelib.study.analysis",
            "sweep",
            "retrain-small",
            3.0,
            lambda c, s: c.baselines and c.retrain_small,
            lambda i: {},
            _retrain_small,
        ),
        Table(
            "sensitivity",
            "prunelib.study.analysis",
            "sensitivity",
            "model",
            12.0,
            lambda c, s: c.sensitivity,
            lambda i: {"methods": i.config.methods},
            _sensitivity,
        ),
        Table(
            "recovery",
            "prunelib.models.recovery",
            "recovery",
            "recovery",
            10.0,
            lambda c, s: s in c.recovery_seeds and bool(c.recovery_strategies),
            lambda i: {
                "recovery": asdict(i.config.recovery),
                "methods": i.config.methods,
                "strategies": _strategies(i.config),
                "rks": i.config.recovery_ks,
            },
            _recovery,
        ),
        Table(
            "pruning-aware",
            "prunelib.models.recovery",
            "recovery",
            "aware",
            5.0,
            lambda c, s: s in c.recovery_seeds and bool(c.aware_targets),
            _aware_key,
            _aware,
        ),
    )
}
"""Every table computed per (dataset, seed), in the order a run computes and reports them."""


def tables_for(config: ExperimentConfig, seed: int) -> tuple[str, ...]:
    """The cached tables ``config`` computes for each dataset at ``seed``, in the order a run
    computes them (:data:`TABLES`)."""
    return tuple(name for name, table in TABLES.items() if table.wanted(config, seed))


DATASET_TABLES: dict[str, tuple[str, str]] = {
    "recipes": ("prunelib.study.recipes", "recipes"),
}
"""Tables computed once per dataset (the recipe study's): name -> (builder module, schema)."""


def builder_and_schema(name: str) -> tuple[str, str]:
    """The module that keys table ``name`` and the schema it is read with.

    Raises:
        ValueError: no table has that name.
    """
    if name in TABLES:
        return TABLES[name].builder, TABLES[name].joins
    if name in DATASET_TABLES:
        return DATASET_TABLES[name]
    raise ValueError(f"unknown table {name!r}; the study computes {[*TABLES, *DATASET_TABLES]}")
