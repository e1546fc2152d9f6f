"""Run the study's cells (:func:`prunelib.study.tasks.study_cells`) as Ray tasks.

Cells write into the shared cache (atomically, under a per-entry lock); the driver finally calls
:func:`prunelib.study.experiment.run_experiment`, which finds every model and table cached. The
tables are therefore the serial run's, whatever the number of workers or the order in which
cells finish. A cell that raises is retried once; if it fails again it is reported by name, the
cells that depend on it are skipped, and every other cell still completes (its work stays cached).

Ray is imported only here, and only when a run asks for it. On a cluster the cache and the data
directory must be on a file system every node sees, at the same path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from tqdm.auto import tqdm

from prunelib.study.config import ExperimentConfig
from prunelib.study.local import assemble
from prunelib.study.tasks import Cell, Outcome, check_graph, raise_failures, study_cells, triage

# Ray caps OMP_NUM_THREADS at a task's CPUs, and BLAS's LU (in the least-squares correction) then
# rounds differently than in a serial run. The cells use the machine's cores as a serial run does,
# so tables stay bit-identical to it (on the same kind of machine).
_THREADS = {"env_vars": {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}}

# Ray ends a worker that idles for a second, e.g. while a table cell holds both CPUs of a 2-CPU
# node; the next training then waits for a fresh worker to import TensorFlow again (the churn it
# caused is measured in docs/benchmarks.md, "Ray"). A local runtime keeps idle workers for 10
# minutes; a cluster's nodes take the same setting from the environment of `ray start`
# (docs/ray.md).
KEEP_WORKERS = {"idle_worker_killing_time_threshold_ms": 600_000}


def _connect(address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        # Ray retries an address that answers but is no Ray cluster for ~20 s (once per second);
        # 5 tries keep a mistyped address to one short failure. An operator's own setting wins.
        wait = "RAY_gcs_server_port_wait_time_s"
        override = wait not in os.environ
        if override:
            os.environ[wait] = "5"
        try:
            ray.init(address=address, log_to_driver=False)
        finally:
            if override:
                os.environ.pop(wait, None)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, _system_config=KEEP_WORKERS)


def _check_fits(cells: Sequence[Cell]) -> None:
    """Refuse cells no node of the cluster can run (Ray would queue them forever)."""
    import ray

    alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    largest = max((r.get("CPU", 0.0) for r in alive), default=0.0)
    gpus = max((r.get("GPU", 0.0) for r in alive), default=0.0)
    for cell in cells:
        if cell.cpus > largest or cell.gpus > gpus:
            raise ValueError(
                f"cell {cell.name!r} declares {cell.cpus:g} CPUs and {cell.gpus:g} GPUs, but the "
                f"largest node has {largest:g} CPUs and {gpus:g} GPUs; declare less "
                "(--ray-cpus, --ray-table-cpus, --ray-gpus) or add a larger node"
            )


def execute(
    cells: Sequence[Cell],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    retries: int = 1,
    progress: bool = True,
    desc: str = "cells",
) -> Outcome:
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

    check_graph(cells, ordered=False)  # Ray resolves the order itself
    by_name = {c.name: c for c in cells}
    names = list(by_name)
    _connect(address, num_cpus)
    _check_fits(cells)

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
        ready, blocked = triage([by_name[n] for n in pending], outcome)
        for name, waits_for in blocked.items():  # cells waiting for a failed or skipped cell never run
            pending.remove(name)
            outcome.skipped[name] = waits_for
            bar.update()
        for cell in ready:
            pending.remove(cell.name)
            tries[cell.name] += 1
            ref = run.options(num_cpus=cell.cpus, num_gpus=cell.gpus, max_retries=0, runtime_env=_THREADS).remote(
                cell.fn, cell.args
            )
            running[ref] = cell.name

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


def run_study_on_ray(
    config: ExperimentConfig,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus: float = 1.0,
    gpus: float = 0.0,
    table_cpus: float = 2.0,
    data_dir=None,
    cache=None,
    progress: bool = True,
):
    """Compute every cell of the study on Ray, then assemble the results from the cache (in a
    Ray task too, so the driver never loads a deep-learning framework).

    Args:
        cpus, gpus, table_cpus: what each training / table cell declares
            (:func:`prunelib.study.tasks.study_cells`).

    Returns:
        ``(results, outcome)``: the :class:`prunelib.reporting.results.Results` the serial run would
        return, and the cells' :class:`Outcome` (with each cell's seconds).

    Raises:
        CellsFailed: a cell failed twice (the message names every failed and skipped cell).
    """
    import ray

    cells = study_cells(config, data_dir=data_dir, cache=cache, cpus=cpus, gpus=gpus, table_cpus=table_cpus)
    outcome = execute(cells, address=address, num_cpus=num_cpus, progress=progress, desc="study cells")
    raise_failures(outcome)
    # Every table is cached by now: reading them back takes one CPU, on a worker that has
    # imported the framework already.
    results = ray.get(
        ray.remote(assemble).options(num_cpus=1, max_retries=1, runtime_env=_THREADS).remote(config, data_dir, cache)
    )
    results.seconds = {**results.seconds, "ray_cells": outcome.wall}
    return results, outcome
