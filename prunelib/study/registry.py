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

from prunelib.core.best import CORRECTION as BEST_CORRECTION

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
        rows: the column and values that mark its rows in the joined table, where it shares that
            table with another (None: the rows no other table marks).
    """

    name: str
    builder: str
    joins: str
    reads: str
    cost: float
    wanted: Callable[[ExperimentConfig, int], bool]
    key: Callable[[SeedInputs], dict]
    compute: Callable[[SeedInputs], pd.DataFrame]
    rows: tuple[str, tuple[str, ...]] | None = None


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


def _best(i: SeedInputs) -> pd.DataFrame:
    from prunelib.core.best import sweep_best
    from prunelib.core.reconstruct import calibration_set
    from prunelib.models import mlp

    config, data, model = i.config, i.data, i.model()
    return sweep_best(
        mlp.get_kernels(model),
        data.x_test,
        data.y_test,
        dataset=data.name,
        calibration=calibration_set(data.x_train, config.calibration_size, i.seed),
        methods=config.methods,
        ks=config.best_ks,
        seed=i.seed,
        biases=mlp.get_biases(model),
        progress=i.run.progress,
    )


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
            "best",
            "prunelib.core.best",
            "sweep",
            "model",
            30.0,
            lambda c, s: bool(c.best_ks),
            lambda i: {
                "methods": i.config.methods,
                "best_ks": i.config.best_ks,
                "calibration": i.config.calibration_size,
            },
            _best,
            rows=("correction", (BEST_CORRECTION,)),
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
            rows=("method", ("retrain-small",)),
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
            rows=("strategy", ("targeted-dropout",)),
        ),
    )
}
"""Every table computed per (dataset, seed), in the order a run computes and reports them."""


def tables_for(config: ExperimentConfig, seed: int) -> tuple[str, ...]:
    """The cached tables ``config`` computes for each dataset at ``seed``, in the order a run
    computes them (:data:`TABLES`), within the parts it selects (``config.parts``)."""
    return tuple(
        name for name, table in TABLES.items() if table.wanted(config, seed) and _selected(config, part_of(name))
    )


DATASET_TABLES: dict[str, tuple[str, str]] = {
    "recipes": ("prunelib.study.recipes", "recipes"),
}
"""Tables computed once per dataset (the recipe study's): name -> (builder module, schema)."""

DATASET_TABLE_FILLS: dict[str, tuple[str, ...]] = {"recipes": ("recipes", "recipe_layers")}
"""The results tables each of :data:`DATASET_TABLES` fills (the recipe study writes two)."""


def dataset_tables_for(config: ExperimentConfig) -> tuple[str, ...]:
    """The tables of :data:`DATASET_TABLES` that ``config`` computes for each dataset of the
    recipe study (:data:`prunelib.study.config.RECIPE_STUDY`)."""
    wanted = {"recipes": config.recipes}
    return tuple(name for name in DATASET_TABLES if wanted[name] and _selected(config, part_of(name)))


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


@dataclass(frozen=True)
class Part:
    """A named share of the study that one command computes and publishes on its own.

    Attributes:
        name: what ``python -m prunelib run --part`` takes.
        tables: the table kinds (of :data:`TABLES` or :data:`DATASET_TABLES`) it computes.
        about: one line for the report.
    """

    name: str
    tables: tuple[str, ...]
    about: str


PARTS: dict[str, Part] = {
    p.name: p
    for p in (
        Part(
            "challenge",
            ("sweep", "best"),
            "the challenge's sweeps: weight and unit pruning, one-shot, + lstsq and the best post-training method, global",
        ),
        Part("recipes", ("recipes",), "the recipe study: one-shot curves per training recipe (seed 0)"),
        Part("retrain-small", ("retrain-small",), "dense networks of unit pruning's sizes trained from scratch"),
        Part("sensitivity", ("sensitivity",), "one hidden layer pruned at a time"),
        Part("recovery", ("recovery",), "fine-tuning, gradual pruning and IMP after pruning"),
        Part("aware", ("pruning-aware",), "targeted-dropout training, then one-shot pruning"),
    )
}
"""Every table kind of the study belongs to exactly one part (checked below); the CLI's
``--part``, the manifest's per-part provenance and the report's list of parts all read this."""

_OWNER = {table: part.name for part in PARTS.values() for table in part.tables}
if sorted(_OWNER) != sorted([*TABLES, *DATASET_TABLES]) or len(_OWNER) != sum(len(p.tables) for p in PARTS.values()):
    raise AssertionError(f"PARTS must hold every table kind exactly once: {sorted(_OWNER)}")


def part_of(table: str) -> str:
    """The part table kind ``table`` belongs to.

    Raises:
        ValueError: no table has that name.
    """
    builder_and_schema(table)  # names an unknown table
    return _OWNER[table]


def _selected(config: ExperimentConfig, part: str) -> bool:
    return config.parts is None or part in config.parts


def check_parts(names) -> tuple[str, ...]:
    """``names`` as a tuple, each a part of :data:`PARTS`, none repeated.

    Raises:
        ValueError: naming the unknown or repeated part and the choices.
    """
    if isinstance(names, str) or not isinstance(names, tuple):
        raise ValueError(f"parts must be a tuple of part names, got {names!r}")
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        raise ValueError(f"unknown part {unknown[0]!r}; choose from {list(PARTS)}")
    seen = [n for i, n in enumerate(names) if n in names[:i]]
    if seen or not names:
        raise ValueError(f"parts must name each part once and at least one, got {names!r}")
    return names


def parts_for(config: ExperimentConfig) -> tuple[str, ...]:
    """The parts ``config`` computes something of (at any dataset and seed), in :data:`PARTS` order."""
    tables = {t for s in config.seeds for t in tables_for(config, s)} | set(dataset_tables_for(config))
    return tuple(name for name, part in PARTS.items() if tables & set(part.tables))


STUDY_CODE = ("prunelib.study.experiment", "prunelib.study.registry")
"""The study's own code between the builders (this module's compute functions, the experiment's
order of them): each source file alone, not its imports, keys every cached table and is recorded
for every part, so an edit of how a table is computed recomputes it while the parts stay separate."""


def part_code(part: str) -> tuple[str, ...]:
    """The modules whose import closure determines ``part``'s tables: its tables' builders and the
    training of the models they read."""
    return tuple(sorted({builder_and_schema(t)[0] for t in PARTS[part].tables} | {"prunelib.models.mlp"}))


def recompute_command(part: str, dataset: str) -> str:
    """The command that computes ``part`` of ``dataset`` and publishes it into results/."""
    return f"python -m prunelib run --part {part} --dataset {dataset}"


def entry_name(part: str, dataset: str) -> str:
    """The manifest's name for ``part`` of ``dataset`` (the unit a run publishes)."""
    return f"{part}/{dataset}"


def part_rows(part: str, schema: str, table: pd.DataFrame) -> pd.Series:
    """Which rows of the results table ``schema`` belong to ``part`` (a boolean mask)."""
    mask = pd.Series(False, index=table.index)
    for name in PARTS[part].tables:
        if name in DATASET_TABLES:
            if schema in DATASET_TABLE_FILLS[name]:
                mask[:] = True
            continue
        spec = TABLES[name]
        if spec.joins != schema:
            continue
        if spec.rows is not None:
            column, values = spec.rows
            mask |= table[column].isin(values) if column in table else False
        else:  # the rows no other table of this schema marks
            others = pd.Series(False, index=table.index)
            for other in TABLES.values():
                if other.joins == schema and other.rows is not None and other.rows[0] in table:
                    others |= table[other.rows[0]].isin(other.rows[1])
            mask |= ~others
    return mask
