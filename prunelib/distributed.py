"""Run the study's independent cells as Ray tasks; the serial run then only reads the cache.

The study is a graph of cells, each of which computes one cached artifact through exactly the
functions the serial run calls (so with exactly the same cache keys):

* ``train``: one model per (dataset, seed); ``recipe``: one model per recipe of the study;
* ``retrain-small``: the small network of unit pruning's sizes per (dataset, seed, k);
* ``recovery``: one recovered model per (dataset, seed, strategy, method, k);
* ``aware``: one targeted-dropout model per (dataset, seed, target);
* ``tables``: per (dataset, seed), every table of that seed (sweeps with least-squares
  reconstruction, baselines, sensitivity, recovery), once its models exist;
* ``recipe-tables``: per dataset, the recipe study's tables.

Cells write into the shared cache (atomically, under a per-entry lock); the driver finally calls
:func:`prunelib.experiment.run_experiment`, which finds every model and table cached. The
tables are therefore the serial run's, whatever the number of workers or the order in which
cells finish. A cell that raises is retried once; if it fails again it is reported by name, the
cells that depend on it are skipped, and every other cell still completes (its work stays cached).

Ray is imported only here, and only when a run asks for it. On a cluster the cache and the data
directory must be on a file system every node sees, at the same path.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from tqdm.auto import tqdm

from prunelib.config import ExperimentConfig


@dataclass(frozen=True)
class Cell:
    """One unit of work: a named call with the cells it waits for and the resources it needs."""

    name: str
    fn: Callable[..., object]
    args: tuple = ()
    after: tuple[str, ...] = ()
    cpus: float = 1.0
    gpus: float = 0.0


@dataclass
class Outcome:
    """What happened to every cell of a run."""

    seconds: dict[str, float] = field(default_factory=dict)  # finished cells, wall-clock each
    failed: dict[str, str] = field(default_factory=dict)  # cell -> error, after the retry
    skipped: dict[str, str] = field(default_factory=dict)  # cell -> the failed cell it waited for
    wall: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped


class CellsFailed(RuntimeError):
    """Some cells failed twice; the message names them (finished cells stay cached)."""


# -- the cells' work: module-level functions, so Ray ships them by reference --------------------

@functools.lru_cache(maxsize=2)
def _data(dataset: str, data_dir):
    """The dataset, loaded once per worker process (Ray reuses workers across cells)."""
    from prunelib.data import load_dataset

    return load_dataset(dataset, data_dir)


def train_cell(dataset: str, config, data_dir, cache) -> None:
    from prunelib import model as mlp

    mlp.train_cached(_data(dataset, data_dir), config, cache=cache)


def retrain_small_cell(dataset: str, config, k: float, data_dir, cache) -> None:
    from prunelib import analysis

    analysis.retrain_baseline(_data(dataset, data_dir), config, [k], cache=cache)


def recovery_cell(dataset: str, config: ExperimentConfig, seed: int, strategy: str, method: str,
                  k: float, data_dir, cache) -> None:
    from prunelib import model as mlp
    from prunelib import recovery

    data = _data(dataset, data_dir)
    tc = config.train_config(seed)
    model = mlp.train_or_load(data, tc, cache=cache)
    recovery.recovery_table(model, data, methods=[method], ks=[k], strategies=[strategy],
                            config=config.recovery, seed=seed, base=tc, cache=cache, progress=False)


def aware_cell(dataset: str, config: ExperimentConfig, seed: int, target: tuple, data_dir, cache) -> None:
    from prunelib import recovery

    aware = replace(config.train_config(seed), batch_size=config.aware_batch_size)
    recovery.aware_table(_data(dataset, data_dir), aware, [target], cache=cache, progress=False)


def tables_cell(config: ExperimentConfig, data_dir, cache) -> None:
    from prunelib.experiment import run_experiment

    run_experiment(config, data_dir=data_dir, cache=cache, progress=False)


def recipe_tables_cell(dataset: str, names: tuple[str, ...], data_dir, cache) -> None:
    from prunelib.experiment import run_recipes

    run_recipes({dataset: names}, data_dir=data_dir, cache=cache, progress=False)


def study_cells(config: ExperimentConfig, *, data_dir=None, cache=None, cpus: float = 1.0,
                gpus: float = 0.0) -> list[Cell]:
    """The cells of ``config``'s study, in an order that respects their dependencies.

    Args:
        cpus, gpus: resources each training cell declares (table cells take ``cpus`` only).
    """
    from prunelib.recipes import STUDY, recipe_config

    cache = os.fspath(cache) if cache is not None else None
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    out: list[Cell] = []
    for d in config.datasets:
        if config.recipes and d in STUDY:
            names = STUDY[d]
            recipe_cells = [Cell(f"{d}/recipe {n}", train_cell, (d, replace(recipe_config(n), seed=0), data_dir, cache),
                                 cpus=cpus, gpus=gpus) for n in names]
            out += recipe_cells
            out.append(Cell(f"{d}/recipe tables", recipe_tables_cell, (d, names, data_dir, cache),
                            after=tuple(c.name for c in recipe_cells), cpus=cpus))
        for s in config.seeds:
            tc = config.train_config(s)
            train = Cell(f"{d}/seed {s}/train", train_cell, (d, tc, data_dir, cache), cpus=cpus, gpus=gpus)
            seed_cells = [train]
            if config.baselines:
                seed_cells += [Cell(f"{d}/seed {s}/retrain-small k={k:g}", retrain_small_cell,
                                    (d, tc, k, data_dir, cache), cpus=cpus, gpus=gpus) for k in config.ks
                               if k < 100]
            recovered = s in config.recovery_seeds
            if recovered:
                seed_cells += [Cell(f"{d}/seed {s}/{st} {m} k={k:g}", recovery_cell,
                                    (d, config, s, st, m, k, data_dir, cache), after=(train.name,),
                                    cpus=cpus, gpus=gpus)
                               for st in config.recovery_strategies for m in config.methods
                               for k in config.recovery_ks]
                seed_cells += [Cell(f"{d}/seed {s}/targeted-dropout {t[0]} k={t[1]:g}", aware_cell,
                                    (d, config, s, t, data_dir, cache), cpus=cpus, gpus=gpus)
                               for t in config.aware_targets]
            one = replace(config, datasets=(d,), seeds=(s,), recipes=False,
                          recovery_seeds=(s,) if recovered else ())
            out += seed_cells
            out.append(Cell(f"{d}/seed {s}/tables", tables_cell, (one, data_dir, cache),
                            after=tuple(c.name for c in seed_cells), cpus=cpus))
    return out


# Ray caps OMP_NUM_THREADS at a task's CPUs, and BLAS's LU (in the least-squares correction) then
# rounds differently than in a serial run. The cells use the machine's cores as a serial run does,
# so tables stay bit-identical to it (on the same kind of machine).
_THREADS = {"env_vars": {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}}


def _connect(address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def execute(cells: Sequence[Cell], *, address: str | None = None, num_cpus: int | None = None,
            retries: int = 1, progress: bool = True, desc: str = "cells") -> Outcome:
    """Run ``cells`` on Ray, each as soon as the cells it waits for have finished.

    Args:
        address: a running cluster (``ray start --head`` prints it; ``"auto"`` finds a local one);
            ``None`` starts a local runtime with ``num_cpus`` CPUs.
        retries: extra tries of a cell that raised.
        progress: one bar over cells.

    Returns:
        Per cell: seconds, or the error after its last try, or the failed cell it waited for.
    """
    import ray

    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ValueError("cell names must be unique")
    by_name = {c.name: c for c in cells}
    unknown = {a for c in cells for a in c.after if a not in by_name}
    if unknown:
        raise ValueError(f"cells wait for unknown cells {sorted(unknown)}")
    _connect(address, num_cpus)

    @ray.remote
    def run(fn, args):
        t0 = time.perf_counter()
        fn(*args)
        return time.perf_counter() - t0

    outcome = Outcome()
    tries = {n: 0 for n in names}
    pending = list(names)
    running: dict[object, str] = {}
    t0 = time.perf_counter()
    bar = tqdm(total=len(cells), desc=desc, disable=not progress)

    def submit_ready() -> None:
        for name in list(pending):
            cell = by_name[name]
            blocked = [a for a in cell.after if a in outcome.failed or a in outcome.skipped]
            if blocked:
                pending.remove(name)
                outcome.skipped[name] = blocked[0]
                bar.update()
            elif all(a in outcome.seconds for a in cell.after):
                pending.remove(name)
                tries[name] += 1
                ref = run.options(num_cpus=cell.cpus, num_gpus=cell.gpus, max_retries=0,
                                  runtime_env=_THREADS).remote(cell.fn, cell.args)
                running[ref] = name

    submit_ready()
    while running or pending:
        if not running:  # everything left waits on something that never finishes
            for name in pending:
                outcome.skipped[name] = "an unfinished dependency"
            break
        done, _ = ray.wait(list(running), num_returns=1)
        name = running.pop(done[0])
        try:
            outcome.seconds[name] = ray.get(done[0])
            bar.update()
        except Exception as err:  # noqa: BLE001 - any failure of the cell's code
            if tries[name] <= retries:
                pending.insert(0, name)
            else:
                outcome.failed[name] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:300]}"
                bar.update()
        submit_ready()
    bar.close()
    outcome.wall = time.perf_counter() - t0
    return outcome


def run_experiment_on_ray(config: ExperimentConfig, *, address: str | None = None,
                          num_cpus: int | None = None, cpus: float = 1.0, gpus: float = 0.0,
                          data_dir=None, cache=None, progress: bool = True):
    """Compute every cell of the study on Ray, then assemble the results from the cache.

    Returns:
        ``(results, outcome)``: the :class:`prunelib.experiment.Results` the serial run would
        return, and the cells' :class:`Outcome` (with each cell's seconds).

    Raises:
        CellsFailed: a cell failed twice (the message names every failed and skipped cell).
    """
    from prunelib.experiment import run_experiment

    cells = study_cells(config, data_dir=data_dir, cache=cache, cpus=cpus, gpus=gpus)
    outcome = execute(cells, address=address, num_cpus=num_cpus, progress=progress, desc="study cells")
    if not outcome.ok:
        lines = [f"{n}: {e}" for n, e in outcome.failed.items()]
        lines += [f"{n}: skipped, waits for {w}" for n, w in outcome.skipped.items()]
        raise CellsFailed(f"{len(outcome.failed)} cell(s) failed and {len(outcome.skipped)} were skipped "
                          f"({len(outcome.seconds)} finished and are cached): " + "; ".join(lines))
    results = run_experiment(config, data_dir=data_dir, cache=cache, progress=False)
    results.seconds = {**results.seconds, "ray_cells": outcome.wall}
    return results, outcome


def critical_path(cells: Sequence[Cell], seconds: dict[str, float]) -> tuple[float, list[str]]:
    """The longest chain of dependent cells by measured seconds: the wall time of the study on
    unlimited machines. Returns its length and its cells in order."""
    best: dict[str, tuple[float, list[str]]] = {}
    for cell in cells:  # cells come in dependency order
        before = max((best[a] for a in cell.after), default=(0.0, []), key=lambda b: b[0])
        best[cell.name] = (before[0] + seconds.get(cell.name, 0.0), [*before[1], cell.name])
    return max(best.values(), key=lambda b: b[0]) if best else (0.0, [])


def estimate_wall(cells: Sequence[Cell], seconds: dict[str, float], workers: int) -> float:
    """Wall time of the cells on ``workers`` one-cell-at-a-time machines, by list scheduling: a
    free machine takes the ready cell with the longest measured time."""
    import heapq

    finish: dict[str, float] = {}
    remaining = list(cells)
    running: list[tuple[float, str]] = []
    clock = 0.0
    while remaining or running:
        ready = sorted((c for c in remaining if all(a in finish for a in c.after)),
                       key=lambda c: -seconds.get(c.name, 0.0))
        while ready and len(running) < workers:
            cell = ready.pop(0)
            remaining.remove(cell)
            heapq.heappush(running, (clock + seconds.get(cell.name, 0.0), cell.name))
        if not running:
            break
        clock, name = heapq.heappop(running)
        finish[name] = clock
    return clock
