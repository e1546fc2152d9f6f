"""Running the study locally: its cells in short-lived worker processes, memory bounded.

Why processes: every Keras training leaves 50-200 MB behind that neither
``keras.backend.clear_session`` nor ``gc`` nor ``malloc_trim`` returns (measured: 3 trainings, 2
fine-tunings, 2 gradual prunings and 2 targeted-dropout trainings in one process grow it from
0.84 to 1.75 GB), and the full study trains about 170 models. :func:`execute_local` runs the
cells (:func:`prunelib.cells.study_cells`) in order in a child process and starts a fresh one
whenever the child's resident memory passes a budget, so peak memory is bounded by the budget,
whatever the number of seeds. :func:`run_study` never loads a deep-learning framework in the
calling process: the final reading of the tables also happens in a worker, and its results come
back pickled.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

from prunelib.cells import Cell, Outcome, raise_failures, study_cells
from prunelib.config import ExperimentConfig


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
