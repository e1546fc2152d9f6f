"""The whole study end to end: train (or reuse the cache), prune, evaluate, write tidy results.

:func:`run_experiment` is what both the notebook and ``python -m prunelib run`` call. Per dataset
it writes to ``<results>/<dataset>/``:

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from prunelib import analysis, figures, recovery, tables
from prunelib import model as mlp
from prunelib.config import ExperimentConfig
from prunelib.data import load_dataset
from prunelib.paths import atomic_write, cache_dir, digest
from prunelib.provenance import RECIPE_CODE, ANALYSIS_CODE, RECOVERY_CODE, SWEEP_CODE, cached_artifact, fingerprint
from prunelib.evaluate import sweep
from prunelib.reconstruct import calibration_set

TABLES = ("sweep", "sensitivity", "recovery", "recipes", "recipe_layers")


@dataclass
class Results:
    """Tidy tables of a run (all datasets together) and the seconds each phase took."""

    sweep: pd.DataFrame
    sensitivity: pd.DataFrame = field(default_factory=pd.DataFrame)
    recovery: pd.DataFrame = field(default_factory=pd.DataFrame)
    recipes: pd.DataFrame = field(default_factory=pd.DataFrame)
    recipe_layers: pd.DataFrame = field(default_factory=pd.DataFrame)
    distributions: dict[str, pd.DataFrame] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


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


TABLE_CODE = {"recipes": RECIPE_CODE, "sweep": SWEEP_CODE, "retrain-small": ANALYSIS_CODE, "sensitivity": ANALYSIS_CODE,
              "recovery": RECOVERY_CODE, "pruning-aware": RECOVERY_CODE}


SCHEMA_OF = {"sweep": "sweep", "retrain-small": "sweep", "sensitivity": "sensitivity",
             "recovery": "recovery", "pruning-aware": "recovery", "recipes": "recipes"}


def cached_table(phase: str, key: dict, fn: Callable[[], pd.DataFrame], *, cache, retrain: bool,
                 schema: str | None = None) -> pd.DataFrame:
    """``fn()``'s table, cached as CSV under a hash of ``key`` and the code that computes it.

    A cached table is validated when read (:func:`prunelib.tables.validate`); a damaged one is
    recomputed with a warning.
    """
    key = {"phase": phase, **key, "code": fingerprint(TABLE_CODE[phase])}
    path = Path(cache or cache_dir()) / "tables" / f"{phase}-{digest(key)}.csv"
    name = schema or SCHEMA_OF[phase]
    return cached_artifact(path, key, fn, lambda table, tmp: table.to_csv(tmp, index=False),
                           lambda p: tables.read(p, name), recompute=retrain)[0]


def _release() -> None:
    """Free what a finished (dataset, seed) cell leaves behind: Keras' global graph state (traced
    functions and models of every training run) and unreachable Python objects, so memory stays
    flat in the number of seeds. Models the next phase needs come back from the cache."""
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


def run_experiment(config: ExperimentConfig, *, retrain: bool = False,
                   data_dir: str | os.PathLike | None = None, cache: str | os.PathLike | None = None,
                   progress: bool = True) -> Results:
    """Run everything ``config`` asks for on every dataset and seed.

    Trained and recovered models, and the tables computed from them, are cached under hashes of
    everything that determines them, so a second run only reads. ``retrain=True`` recomputes all.
    """
    clock = PhaseClock()
    sweeps, sens, recs, dists = [], [], [], {}
    methods = (*config.methods, *(("global-weight",) if config.baselines else ()))
    for dataset in config.datasets:
        data = clock("load", lambda: load_dataset(dataset, data_dir))
        for seed in tqdm(config.seeds, desc=f"{dataset} seeds", disable=not progress):
            tc = config.train_config(seed)
            model = functools.cache(lambda tc=tc: clock("train", lambda: mlp.train_or_load(
                data, tc, retrain, cache, progress)))
            base = {"dataset": dataset, "model": mlp.cache_key(data, tc), "ks": config.ks}

            def table(phase, key, fn):
                return clock(phase, lambda: cached_table(phase, {**base, **key}, fn, cache=cache, retrain=retrain))

            def one_shot():
                kernels, biases = mlp.get_kernels(model()), mlp.get_biases(model())
                common = dict(dataset=dataset, ks=config.ks, seed=seed, biases=biases, progress=progress)
                parts = [sweep(kernels, data.x_test, data.y_test, methods=config.methods,
                               corrections=config.corrections, calibration=calibration_set(
                                   data.x_train, config.calibration_size, seed), **common)]
                if config.baselines:
                    parts.append(sweep(kernels, data.x_test, data.y_test, methods=("global-weight",), **common))
                return pd.concat(parts, ignore_index=True)

            sweeps.append(table("sweep", {"methods": methods, "corrections": config.corrections,
                                          "calibration": config.calibration_size}, one_shot))
            if config.baselines:
                sweeps.append(table("retrain-small", {}, lambda: analysis.retrain_baseline(
                    data, tc, config.ks, cache=cache, retrain=retrain, progress=progress)))
            if config.sensitivity:
                sens.append(table("sensitivity", {"methods": config.methods}, lambda: analysis.layer_sensitivity(
                    mlp.get_kernels(model()), data.x_test, data.y_test, dataset=dataset,
                    methods=config.methods, ks=config.ks, seed=seed, progress=progress)))
            if seed == config.seeds[0]:
                dists[dataset] = analysis.weight_distributions(mlp.get_kernels(model()))
            if seed in config.recovery_seeds:
                if config.recovery_strategies:
                    strategies = ("one-shot", *config.recovery_strategies)
                    recs.append(table("recovery", {"recovery": asdict(config.recovery), "methods": config.methods,
                                                   "strategies": strategies, "rks": config.recovery_ks},
                                      lambda: recovery.recovery_table(
                        model(), data, methods=config.methods, ks=config.recovery_ks,
                        strategies=strategies, config=config.recovery,
                        seed=seed, base=tc, cache=cache, retrain=retrain, progress=progress)))
                if config.aware_targets:
                    recs.append(table("pruning-aware", {"targets": [recovery.aware_key(data, tc, t)
                                                                    for t in config.aware_targets]},
                                      lambda: recovery.aware_table(
                        data, tc, config.aware_targets, cache=cache, retrain=retrain,
                        progress=progress)))
            del model
            _release()
    concat = lambda frames: pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()  # noqa: E731
    curves = layers = pd.DataFrame()
    if config.recipes:
        from prunelib.config import STUDY

        curves, layers = clock("recipes", lambda: run_recipes(
            {d: STUDY[d] for d in config.datasets if d in STUDY}, retrain=retrain, data_dir=data_dir,
            cache=cache, progress=progress))
    return Results(concat(sweeps), concat(sens), concat(recs), curves, layers, dists, clock.seconds)


def _write_tables(results: Results, out_dir: Path) -> None:
    for name in TABLES:
        table = getattr(results, name)
        if table.empty:
            continue
        for dataset, df in table.groupby("dataset", sort=False):
            out = out_dir / str(dataset)
            out.mkdir(parents=True, exist_ok=True)
            df.to_csv(out / f"{name}.csv", index=False, float_format="%.4f")


KEPT_ACROSS_RUNS = ("benchmarks", "run_times.csv")
"""Entries of ``results/`` a run does not replace: benchmark outputs (written by ``benchmarks/``)
and the log of run times (appended to)."""


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def save_results(results: Results, results_dir: str | os.PathLike = "results", *,
                 run_seconds: float | None = None, command: str | None = None) -> list[Path]:
    """Write every table as ``<results>/<dataset>/<table>.csv``, draw the figures, log the run.

    Everything is written to a staging directory first and then replaces ``results_dir``'s
    contents as a whole (all but :data:`KEPT_ACROSS_RUNS`), so a report never mixes two runs
    and a run that fails half-way leaves the previous results in place.
    """
    import shutil

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    stage = results_dir.parent / f".{results_dir.name}.staging-{os.getpid()}"
    trash = results_dir.parent / f".{results_dir.name}.old-{os.getpid()}"
    for leftover in (stage, trash, *results_dir.parent.glob(f".{results_dir.name}.staging-*")):
        if leftover == stage or not _alive(leftover.name.rsplit("-", 1)[-1]):
            shutil.rmtree(leftover, ignore_errors=True)  # a killed run's half-written staging
    try:
        stage.mkdir()
        _write_tables(results, stage)
        figures.save_all(results, stage)
        if run_seconds is not None:
            from prunelib.report import save_run_times

            if (results_dir / "run_times.csv").is_file():
                shutil.copy(results_dir / "run_times.csv", stage / "run_times.csv")
            save_run_times(results.seconds, run_seconds, command or "", stage)
        trash.mkdir()
        moved = []
        try:
            for old in list(results_dir.iterdir()):
                if old.name not in KEPT_ACROSS_RUNS or (stage / old.name).exists():
                    os.replace(old, trash / old.name)
                    moved.append(old.name)
            for new in list(stage.iterdir()):
                os.replace(new, results_dir / new.name)
        except BaseException:  # put the previous results back rather than leave a mixture
            for name in moved:
                if (results_dir / name).exists():
                    shutil.rmtree(results_dir / name) if (results_dir / name).is_dir() else (results_dir / name).unlink()
                os.replace(trash / name, results_dir / name)
            raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(trash, ignore_errors=True)
    return sorted(p for p in results_dir.rglob("*") if p.is_file())


def load_results(results_dir: str | os.PathLike = "results") -> Results:
    """Read back and validate the tables :func:`save_results` wrote (missing ones come back empty).

    Raises:
        FileNotFoundError: there is no ``*/sweep.csv`` (nothing has run into ``results_dir``).
        prunelib.tables.TableError: a table is damaged (the message names the file).
    """
    from prunelib.data import DATASETS

    order = {name: i for i, name in enumerate(DATASETS)}  # mnist first, as run_experiment writes
    found = {name: tables.read_all(results_dir, name, order) for name in TABLES}
    if found["sweep"].empty:
        raise FileNotFoundError(f"no */sweep.csv under {results_dir}; run `python -m prunelib run` first")
    return Results(**found)


def run_recipes(datasets: dict[str, tuple[str, ...]], *, seed: int = 0, retrain: bool = False,
                data_dir: str | os.PathLike | None = None, cache: str | os.PathLike | None = None,
                progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the recipe study: per dataset, the named recipes of :data:`prunelib.recipes.RECIPES`.

    Both tables are cached (under the models' keys and the study's code), so a re-run only reads.

    Returns:
        ``(curves, layers)`` for all datasets, as :func:`prunelib.recipes.recipe_tables` returns.
    """
    from prunelib import recipes

    curves, layers = [], []
    for dataset, names in datasets.items():
        chosen = {name: recipes.recipe_config(name) for name in names}
        data = load_dataset(dataset, data_dir)
        models = {n: mlp.cache_key(data, replace(c, seed=seed)) for n, c in chosen.items()}
        tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}

        def part(i: int) -> pd.DataFrame:
            if "both" not in tables:  # one computation serves both tables
                tables["both"] = recipes.recipe_tables(data, chosen, seed=seed, cache=cache,
                                                       retrain=retrain, progress=progress)
            return tables["both"][i]

        key = {"dataset": dataset, "seed": seed, "models": models}
        curves.append(cached_table("recipes", key, lambda: part(0), cache=cache, retrain=retrain))
        layers.append(cached_table("recipes", {**key, "part": "layers"}, lambda: part(1), cache=cache,
                                   retrain=retrain, schema="recipe_layers"))
    return pd.concat(curves, ignore_index=True), pd.concat(layers, ignore_index=True)


def save_recipes(curves: pd.DataFrame, layers: pd.DataFrame,
                 results_dir: str | os.PathLike = "results") -> list[Path]:
    """Write ``recipes.csv``, ``recipe_layers.csv`` and ``recipes.png`` per dataset."""
    written = []
    for dataset, df in curves.groupby("dataset", sort=False):
        out = Path(results_dir) / str(dataset)
        out.mkdir(parents=True, exist_ok=True)
        for name, table in (("recipes", df), ("recipe_layers", layers[layers["dataset"] == dataset])):
            atomic_write(out / f"{name}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False, float_format="%.4f"))
            written.append(out / f"{name}.csv")
        written.append(figures.save(figures.recipes(df), out / figures.RECIPES))
    return written


def publish(results: Results, config: ExperimentConfig, results_dir: str | os.PathLike = "results", *,
            command: str, run_seconds: float | None = None) -> list[Path]:
    """Save the tables and figures, write the report from what was saved, then the manifest.

    What both ``python -m prunelib run`` and the notebook call, so ``results/`` always ends with a
    manifest that matches its files.
    """
    from prunelib import provenance, report

    save_results(results, results_dir, run_seconds=run_seconds, command=command)
    written = report.write_report(load_results(results_dir), results_dir)
    written.append(provenance.write_manifest(results_dir, asdict(config), command))
    return written
