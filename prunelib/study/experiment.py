"""The whole study in one process: train (or reuse the cache), prune, evaluate, into tidy tables.

:func:`run_experiment` computes (or reads from the cache) every table of a config;
:func:`prunelib.study.local.run_study` calls it after computing the cells in worker processes, and
:mod:`prunelib.reporting.results` writes what it returns. Per dataset, ``<results>/<dataset>/`` holds:

* ``sweep.csv`` - one row per (method, k, seed): weight, unit, and (with baselines) global-weight
  pruning and ``retrain-small``, dense networks trained from scratch at unit pruning's sizes;
* ``sensitivity.csv`` - one hidden layer pruned at a time;
* ``recovery.csv`` - fine-tuning, gradual pruning, IMP and targeted-dropout training;
* the figures drawn from those tables (:func:`save_figures`).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from prunelib.base.fingerprint import code_fingerprint, fingerprint
from prunelib.base.paths import cache_dir, digest
from prunelib.base.provenance import cached_artifact
from prunelib.data import Dataset, load_dataset
from prunelib.models import mlp
from prunelib.reporting import tables
from prunelib.reporting.results import Results
from prunelib.study import analysis
from prunelib.study.config import ExperimentConfig
from prunelib.study.registry import (
    STUDY_CODE,
    TABLES,
    RunContext,
    SeedInputs,
    Table,
    builder_and_schema,
    dataset_tables_for,
    tables_for,
)


class PhaseClock:
    """Accumulate wall-clock seconds per phase, exclusive of phases nested inside it.

    A sweep that first has to train its model books the training under ``train`` only.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._nested: list[float] = []

    def __call__(self, phase: str, fn: Callable):
        self._nested.append(0.0)
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            elapsed = time.perf_counter() - t0
            inner = self._nested.pop()
            self.seconds[phase] = self.seconds.get(phase, 0.0) + elapsed - inner
            if self._nested:
                self._nested[-1] += elapsed


def cached_table(
    phase: str, key: dict, fn: Callable[[], pd.DataFrame], *, cache, retrain: bool, schema: str | None = None
) -> pd.DataFrame:
    """``fn()``'s table, cached as CSV under a hash of ``key`` and the code that computes it.

    A cached table is validated when read (:func:`prunelib.reporting.tables.validate`); a damaged one is
    recomputed with a warning.
    """
    code, default_schema = builder_and_schema(phase)
    key = {"phase": phase, **key, "code": code_fingerprint(code), "study": fingerprint(STUDY_CODE)}
    path = Path(cache or cache_dir()) / "tables" / f"{phase}-{digest(key)}.csv"
    name = schema or default_schema
    return cached_artifact(
        path,
        key,
        fn,
        lambda table, tmp: table.to_csv(tmp, index=False),
        lambda p: tables.read(p, name),
        recompute=retrain,
    )[0]


def _release() -> None:
    """Drop Keras' global graph state and unreachable Python objects after a (dataset, seed).

    This does not keep an in-process run flat in memory: each training leaks 50-200 MB that
    neither this nor ``malloc_trim`` returns (measured; see :mod:`prunelib.study.local`, whose worker
    processes are what bounds memory). Models the next phase needs come back from the cache."""
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


def seed_model(
    data: Dataset,
    config: ExperimentConfig,
    seed: int,
    *,
    retrain: bool = False,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    clock: PhaseClock | None = None,
) -> Callable[[], object]:
    """The seed's trained model, trained or loaded from the cache on the first call only (the
    time booked under ``train``)."""
    clock = clock or PhaseClock()
    tc = config.train_config(seed)
    return functools.cache(lambda: clock("train", lambda: mlp.train_or_load(data, tc, retrain, cache, progress)))


def seed_tables(
    config: ExperimentConfig,
    data: Dataset,
    seed: int,
    *,
    only: tuple[str, ...] | None = None,
    model: Callable[[], object] | None = None,
    retrain: bool = False,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    clock: PhaseClock | None = None,
) -> dict[str, pd.DataFrame]:
    """The cached tables of one (dataset, seed): those ``tables_for(config, seed)`` names, or just ``only``.

    Each table is read from the cache or computed; the seed's model is trained or loaded only if a
    table needs it. A cell of the study computes one table; :func:`run_experiment` all of them.

    Args:
        data: the dataset the tables are of.
        only: a subset of ``tables_for(config, seed)``.
        model: returns the seed's trained model (default: :func:`seed_model`).
        clock: books each table's seconds under its phase.

    Returns:
        Phase -> table, in ``tables_for(config, seed)``'s order.

    Raises:
        ValueError: ``only`` names a table ``config`` does not compute for ``seed``.
    """
    parts = tables_for(config, seed)
    if only is not None:
        unknown = [p for p in only if p not in parts]
        if unknown:
            raise ValueError(f"the config computes no {unknown[0]!r} table for seed {seed}; it computes {list(parts)}")
        parts = tuple(p for p in parts if p in only)
    clock = clock or PhaseClock()
    run = RunContext(cache=cache, retrain=retrain, progress=progress)
    model = model or seed_model(data, config, seed, retrain=retrain, cache=cache, progress=progress, clock=clock)
    inputs = SeedInputs(config, data, seed, model, run)
    base = {"dataset": data.name, "model": mlp.cache_key(data, inputs.train), "ks": config.ks}

    def table(spec: Table) -> pd.DataFrame:
        key = {**base, **spec.key(inputs)}
        return clock(
            spec.name, lambda: cached_table(spec.name, key, lambda: spec.compute(inputs), cache=cache, retrain=retrain)
        )

    return {p: table(TABLES[p]) for p in parts}


def run_experiment(
    config: ExperimentConfig,
    *,
    retrain: bool = False,
    data_dir: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> Results:
    """Run everything ``config`` asks for on every dataset and seed.

    Trained and recovered models, and the tables computed from them, are cached under hashes of
    everything that determines them, so a second run only reads. ``retrain=True`` recomputes all.
    """
    clock = PhaseClock()
    found: dict[str, list[pd.DataFrame]] = {"sweep": [], "sensitivity": [], "recovery": []}
    dists = {}
    for dataset in config.datasets:
        data = clock("load", lambda: load_dataset(dataset, data_dir))
        for seed in tqdm(config.seeds, desc=f"{dataset} seeds", disable=not progress):
            model = seed_model(data, config, seed, retrain=retrain, cache=cache, progress=progress, clock=clock)
            for phase, table in seed_tables(
                config, data, seed, model=model, retrain=retrain, cache=cache, progress=progress, clock=clock
            ).items():
                found[TABLES[phase].joins].append(table)
            # The weight distributions are the challenge's figure, drawn from the seed's model: a run
            # of other parts only need not train it.
            if seed == config.seeds[0] and "sweep" in tables_for(config, seed):
                dists[dataset] = analysis.weight_distributions(mlp.get_kernels(model()))
            del model
            _release()
    concat = lambda frames: pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()  # noqa: E731
    curves = layers = pd.DataFrame()
    if "recipes" in dataset_tables_for(config):
        from prunelib.study.config import RECIPE_STUDY

        curves, layers = clock(
            "recipes",
            lambda: run_recipes(
                {d: RECIPE_STUDY[d] for d in config.datasets if d in RECIPE_STUDY},
                retrain=retrain,
                data_dir=data_dir,
                cache=cache,
                progress=progress,
            ),
        )
    return Results(
        concat(found["sweep"]),
        concat(found["sensitivity"]),
        concat(found["recovery"]),
        curves,
        layers,
        dists,
        clock.seconds,
    )


def run_recipes(
    datasets: dict[str, tuple[str, ...]],
    *,
    seed: int = 0,
    retrain: bool = False,
    data_dir: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the recipe study: per dataset, the named recipes of :data:`prunelib.study.recipes.RECIPES`.

    Both tables are cached (under the models' keys and the study's code), so a re-run only reads.

    Returns:
        ``(curves, layers)`` for all datasets, as :func:`prunelib.study.recipes.recipe_tables` returns.
    """
    from prunelib.study import recipes

    curves, layers = [], []
    for dataset, names in datasets.items():
        chosen = {name: recipes.recipe_model(name, seed) for name in names}
        data = load_dataset(dataset, data_dir)
        models = {n: mlp.cache_key(data, c) for n, c in chosen.items()}
        tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}

        def part(i: int) -> pd.DataFrame:
            if "both" not in tables:  # one computation serves both tables
                tables["both"] = recipes.recipe_tables(
                    data, chosen, seed=seed, cache=cache, retrain=retrain, progress=progress
                )
            return tables["both"][i]

        key = {"dataset": dataset, "seed": seed, "models": models}
        curves.append(cached_table("recipes", key, lambda: part(0), cache=cache, retrain=retrain))
        layers.append(
            cached_table(
                "recipes",
                {**key, "part": "layers"},
                lambda: part(1),
                cache=cache,
                retrain=retrain,
                schema="recipe_layers",
            )
        )
    return pd.concat(curves, ignore_index=True), pd.concat(layers, ignore_index=True)
