"""The study as a graph of cells, and the runner that computes them in short-lived processes.

The study is a graph of cells, each of which computes one cached artifact through exactly the
functions :func:`prunelib.experiment.run_experiment` calls (so with exactly the same cache keys):

* ``train``: one model per (dataset, seed); ``recipe``: one model per recipe of the study;
* ``retrain-small``: the small network of unit pruning's sizes per (dataset, seed, k);
* ``recovery``: one recovered model per (dataset, seed, strategy, method, k);
* ``aware``: one targeted-dropout model per (dataset, seed, target);
* ``tables``: per (dataset, seed), every table of that seed (sweeps with least-squares
  reconstruction, baselines, sensitivity, recovery), once its models exist;
* ``recipe-tables``: per dataset, the recipe study's tables.

Cells write into the shared cache (atomically, under a per-entry lock); :func:`run_study` then
calls :func:`prunelib.experiment.run_experiment`, which finds every model and table cached, so the
tables are the in-process run's, whoever computed the cells.

Why processes: every Keras training leaves 50-200 MB behind that neither
``keras.backend.clear_session`` nor ``gc`` nor ``malloc_trim`` returns (measured: 3 trainings, 2
fine-tunings, 2 gradual prunings and 2 targeted-dropout trainings in one process grow it from
0.84 to 1.75 GB), and the full study trains about 170 models. :func:`execute_local` runs the
cells in order in a child process and starts a fresh one whenever the child's resident memory
passes a budget, so peak memory is bounded by the budget, whatever the number of seeds. The
parent imports no deep-learning framework while cells run. :mod:`prunelib.distributed` runs the
same cells on Ray.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from tqdm.auto import tqdm

from prunelib.config import STUDY, ExperimentConfig, recipe_config

@dataclass(frozen=True)
class Cell:
    """One unit of work: a named call with the cells it waits for and the resources it needs."""

    name: str
    fn: Callable[..., object]
    args: tuple = ()
    after: tuple[str, ...] = ()
    cpus: float = 1.0
    gpus: float = 0.0
    weight: float = 1.0  # relative cost, for the progress bar's estimate of the time left


# Seconds per cell of each kind in the full study on the 2-core reference machine (phase times in
# results/run_times.csv divided by their cells); only their ratios matter, to weigh the bar.
WEIGHTS = {"recipe": 40.0, "recipe tables": 40.0, "train": 21.0, "retrain-small": 7.0, "recovery": 21.0,
           "targeted-dropout": 150.0, "tables": 67.0}


@dataclass
class Outcome:
    """What happened to every cell of a run."""

    seconds: dict[str, float] = field(default_factory=dict)  # finished cells, wall-clock each
    failed: dict[str, str] = field(default_factory=dict)  # cell -> error, after the retry
    skipped: dict[str, str] = field(default_factory=dict)  # cell -> the failed cell it waited for
    wall: float = 0.0
    workers: int = 0  # worker processes started (local runs)
    peak_rss: int = 0  # the largest peak resident memory (bytes) of a local worker

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped


class CellsFailed(RuntimeError):
    """Some cells failed twice; the message names them (finished cells stay cached)."""


# -- the cells' work: module-level functions, so Ray ships them by reference --------------------

@functools.lru_cache(maxsize=2)
def _data(dataset: str, data_dir):
    """The dataset, loaded once per worker process (workers run many cells)."""
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


def aware_cell(dataset: str, config: ExperimentConfig, seed: int, target, data_dir, cache) -> None:
    from prunelib import recovery

    recovery.aware_table(_data(dataset, data_dir), config.train_config(seed), [target], cache=cache,
                         progress=False)


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
    cache = os.fspath(cache) if cache is not None else None
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    out: list[Cell] = []
    for d in config.datasets:
        if config.recipes and d in STUDY:
            names = STUDY[d]
            recipe_cells = [Cell(f"{d}/recipe {n}", train_cell, (d, replace(recipe_config(n), seed=0), data_dir, cache),
                                 cpus=cpus, gpus=gpus, weight=WEIGHTS["recipe"]) for n in names]
            out += recipe_cells
            out.append(Cell(f"{d}/recipe tables", recipe_tables_cell, (d, names, data_dir, cache),
                            after=tuple(c.name for c in recipe_cells), cpus=cpus, weight=WEIGHTS["recipe tables"]))
        for s in config.seeds:
            tc = config.train_config(s)
            train = Cell(f"{d}/seed {s}/train", train_cell, (d, tc, data_dir, cache), cpus=cpus, gpus=gpus,
                         weight=WEIGHTS["train"])
            seed_cells = [train]
            if config.baselines:
                seed_cells += [Cell(f"{d}/seed {s}/retrain-small k={k:g}", retrain_small_cell,
                                    (d, tc, k, data_dir, cache), cpus=cpus, gpus=gpus,
                                    weight=WEIGHTS["retrain-small"]) for k in config.ks
                               if k < 100]
            recovered = s in config.recovery_seeds
            if recovered:
                seed_cells += [Cell(f"{d}/seed {s}/{st} {m} k={k:g}", recovery_cell,
                                    (d, config, s, st, m, k, data_dir, cache), after=(train.name,),
                                    cpus=cpus, gpus=gpus, weight=WEIGHTS["recovery"])
                               for st in config.recovery_strategies for m in config.methods
                               for k in config.recovery_ks]
                seed_cells += [Cell(f"{d}/seed {s}/targeted-dropout {t.method} k={t.k:g}", aware_cell,
                                    (d, config, s, t, data_dir, cache), cpus=cpus, gpus=gpus,
                                    weight=WEIGHTS["targeted-dropout"])
                               for t in config.aware_targets]
            one = replace(config, datasets=(d,), seeds=(s,), recipes=False,
                          recovery_seeds=(s,) if recovered else ())
            out += seed_cells
            out.append(Cell(f"{d}/seed {s}/tables", tables_cell, (one, data_dir, cache),
                            after=tuple(c.name for c in seed_cells), cpus=cpus, weight=WEIGHTS["tables"]))
    return out


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


# -- running the cells in short-lived local processes ------------------------------------------

DEFAULT_MEMORY_BUDGET_GB = 1.5
"""A worker process that has grown past this after a cell is replaced by a fresh one. A fresh
worker holding one dataset and one trained model is about 1.3 GB, and no cell adds more than about
0.5 GB while it runs, so the study peaks near 2 GB."""


def peak_resident_bytes() -> int:
    """This process's largest resident memory so far."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def resident_bytes() -> int:
    """This process's resident memory now (Linux), or its peak so far elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_resident_bytes()


def _failure(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {(lines[-1] if lines else '')[:300]}"


class SourceChanged(RuntimeError):
    """prunelib's source changed while a run was computing its cells."""


def _worker(cells: Sequence[Cell], dead: frozenset[str], budget: int, retries: int, conn,
            source: str | None = None) -> None:
    """Child process: run ``cells`` in order, one message per cell, until done or over ``budget``.

    A worker whose prunelib source differs from ``source`` (the run's at its start) runs nothing:
    a run never mixes artifacts of two versions of the code.

    Messages: ``(name, "ok", seconds, peak)``, ``(name, "failed", error, peak)``,
    ``(name, "skipped", dependency, peak)`` with the worker's peak resident bytes so far; ``None``
    when the worker stops on its own.
    """
    from prunelib.provenance import fingerprint, package_modules

    if source is not None and fingerprint(package_modules()) != source:
        conn.send(("source changed",))
        conn.close()
        return
    dead = set(dead)
    for cell in cells:
        blocked = [a for a in cell.after if a in dead]
        if blocked:
            dead.add(cell.name)
            conn.send((cell.name, "skipped", blocked[0], peak_resident_bytes()))
            continue
        for attempt in range(retries + 1):
            t0 = time.perf_counter()
            try:
                cell.fn(*cell.args)
                message = (cell.name, "ok", time.perf_counter() - t0)
                break
            except Exception as err:  # noqa: BLE001 - any failure of the cell's code
                message = (cell.name, "failed", _failure(err))
        if message[1] == "failed":
            dead.add(cell.name)
        conn.send((*message, peak_resident_bytes()))
        if resident_bytes() > budget:
            break
    conn.send(None)
    conn.close()


def execute_local(cells: Sequence[Cell], *, memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
                  retries: int = 1, progress: bool = True, desc: str = "cells") -> Outcome:
    """Run ``cells`` in order in child processes, each replaced once it grows past the budget.

    Args:
        cells: in an order that respects their dependencies (as :func:`study_cells` makes them).
        memory_budget_gb: resident memory after which a worker is replaced by a fresh one.
        retries: extra tries of a cell that raised; a cell whose worker dies (e.g. killed for
            memory) is also tried again in a fresh worker.
        progress: one bar over cells.

    Returns:
        Per cell: seconds, or the error after its last try, or the failed cell it waited for;
        ``peak_rss`` holds the largest peak resident memory of a worker.
    """
    import multiprocessing

    _check_graph(cells)
    if memory_budget_gb <= 0:
        raise ValueError(f"memory_budget_gb must be positive, got {memory_budget_gb!r}")
    from prunelib.provenance import fingerprint, package_modules

    source = fingerprint(package_modules())  # workers start later and must see this same code
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited
    outcome = Outcome()
    remaining = list(cells)
    deaths: dict[str, int] = {}
    t0 = time.perf_counter()
    # The bar advances by each cell's weight, so its estimate of the time left weighs a
    # targeted-dropout training (minutes) against a small retraining (seconds).
    done = 0
    with tqdm(total=sum(c.weight for c in cells), desc=desc, disable=not progress,
              bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}") as bar:
        while remaining:
            dead = frozenset((*outcome.failed, *outcome.skipped))
            receive, send = ctx.Pipe(duplex=False)
            worker = ctx.Process(target=_worker, args=(remaining, dead, int(memory_budget_gb * 2**30),
                                                       retries, send, source), daemon=True)
            worker.start()
            send.close()
            outcome.workers += 1
            while True:
                try:
                    message = receive.recv()
                except EOFError:  # the worker died in the middle of remaining[0]
                    name = remaining[0].name
                    deaths[name] = deaths.get(name, 0) + 1
                    worker.join()
                    if deaths[name] > retries:
                        outcome.failed[name] = f"worker process died (exit code {worker.exitcode})"
                        done += 1
                        bar.update(remaining.pop(0).weight)
                    break
                if message is None:
                    break
                if message == ("source changed",):
                    worker.join()
                    raise SourceChanged(
                        f"prunelib's source changed during the run ({len(outcome.seconds)} cells finished "
                        "and are cached); run again to compute the rest with the new code")
                name, status, value, peak = message
                cell = remaining.pop(0)
                outcome.peak_rss = max(outcome.peak_rss, peak)
                {"ok": outcome.seconds, "failed": outcome.failed, "skipped": outcome.skipped}[status][name] = value
                done += 1
                bar.set_postfix_str(f" {done}/{len(cells)} cells, last: {name}", refresh=False)
                bar.update(cell.weight)
            receive.close()
            worker.join()
    outcome.wall = time.perf_counter() - t0
    return outcome


def _check_graph(cells: Sequence[Cell]) -> None:
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ValueError("cell names must be unique")
    seen: set[str] = set()
    known = set(names)
    for cell in cells:
        unknown = [a for a in cell.after if a not in known]
        if unknown:
            raise ValueError(f"cells wait for unknown cells {sorted(unknown)}")
        late = [a for a in cell.after if a not in seen]
        if late:
            raise ValueError(f"cell {cell.name!r} comes before the cells it waits for: {late}")
        seen.add(cell.name)


def raise_failures(outcome: Outcome) -> None:
    """Raise :class:`CellsFailed` naming every failed and skipped cell, if any."""
    if outcome.ok:
        return
    lines = [f"{n}: {e}" for n, e in outcome.failed.items()]
    lines += [f"{n}: skipped, waits for {w}" for n, w in outcome.skipped.items()]
    shown = "; ".join(lines[:MAX_REPORTED]) + (f"; and {len(lines) - MAX_REPORTED} more"
                                                if len(lines) > MAX_REPORTED else "")
    raise CellsFailed(f"{len(outcome.failed)} cell(s) failed and {len(outcome.skipped)} were skipped "
                      f"({len(outcome.seconds)} finished and are cached): {shown}")


MAX_REPORTED = 6
"""Failed or skipped cells named in a :class:`CellsFailed` message (one line, not one per cell)."""


def assemble(config: ExperimentConfig, data_dir=None, cache=None, *, cache_only: bool = False,
             source: str | None = None):
    """Run :func:`prunelib.experiment.run_experiment` (in a worker process).

    Args:
        cache_only: only read the cache; return ``None`` as soon as anything would have to be
            computed.
        source: the run's source fingerprint; a worker with other code raises
            :class:`SourceChanged`.

    Returns:
        The :class:`prunelib.results.Results`, or ``None`` (``cache_only`` and something missing).
    """
    from prunelib import provenance
    from prunelib.experiment import run_experiment

    if source is not None and provenance.fingerprint(provenance.package_modules()) != source:
        raise SourceChanged("prunelib's source changed during the run; run again")
    if not cache_only:
        return run_experiment(config, data_dir=data_dir, cache=cache, progress=False)
    try:
        with provenance.cache_only():
            return run_experiment(config, data_dir=data_dir, cache=cache, progress=False)
    except provenance.NotCached:
        return None


def _in_worker(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a fresh spawned process, its return value pickled back."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def run_study(config: ExperimentConfig, *, data_dir=None, cache=None, retrain: bool = False,
              isolate: bool = True, memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
              progress: bool = True):
    """The whole study: compute its cells in short-lived processes, then assemble the results.

    With ``isolate`` (the default) this process never loads a deep-learning framework: a worker
    first checks whether every table is already cached (then it only reads, and the run takes
    seconds); otherwise the cells run in workers (:func:`execute_local`) and a last worker reads
    the tables back.

    Args:
        isolate: ``False`` runs everything in this process, as
            :func:`prunelib.experiment.run_experiment` does (memory grows with every model trained).
        retrain: recompute every cached artifact (in this process: implies ``isolate=False``).
        memory_budget_gb: see :func:`execute_local`.
        progress: one bar over cells (with ``isolate``), else the in-process bars.

    Returns:
        The :class:`prunelib.results.Results`; with ``isolate``, ``seconds["cells"]`` is the cells'
        wall time (absent when everything was cached).

    Raises:
        CellsFailed: a cell failed twice (the message names the failed and skipped cells).
        SourceChanged: prunelib's source changed while the run was going.
    """
    if not isolate or retrain:
        from prunelib.experiment import run_experiment

        return run_experiment(config, retrain=retrain, data_dir=data_dir, cache=cache, progress=progress)
    from prunelib.provenance import fingerprint, package_modules

    source = fingerprint(package_modules())
    results = _in_worker(assemble, config, data_dir, cache, cache_only=True, source=source)
    if results is not None:
        return results
    outcome = execute_local(study_cells(config, data_dir=data_dir, cache=cache),
                            memory_budget_gb=memory_budget_gb, progress=progress, desc="study cells")
    raise_failures(outcome)
    results = _in_worker(assemble, config, data_dir, cache, source=source)
    results.seconds = {**results.seconds, "cells": outcome.wall}
    return results
