"""The study as a graph of cells: what each computes, what it waits for, what it costs.

The study is a graph of cells, each of which computes one cached artifact through exactly the
functions :func:`prunelib.study.experiment.run_experiment` calls (so with exactly the same cache keys):

* ``train``: one model per (dataset, seed); ``recipe``: one model per recipe of the study;
* ``retrain-small``: the small network of unit pruning's sizes per (dataset, seed, k);
* ``recovery``: one recovered model per (dataset, seed, strategy, method, k);
* ``aware``: one targeted-dropout model per (dataset, seed, target);
* ``... table``: per (dataset, seed), each of that seed's tables (:meth:`ExperimentConfig.tables`:
  the sweep with least-squares reconstruction, the retrain-from-scratch baseline, sensitivity,
  recovery, targeted dropout), once the models it reads exist;
* ``recipe tables``: per dataset, the recipe study's tables.

Training cells declare ``cpus`` (default 1: a small MLP's training keeps about one core busy) and
table cells ``table_cpus`` (default 2: their BLAS calls keep every core of a small machine busy, so
two of them side by side each run much slower; measured in docs/benchmarks.md, "Ray").

Cells write into the shared cache (atomically, under a per-entry lock), so whoever computes them
(:mod:`prunelib.study.local` in local worker processes, :mod:`prunelib.study.on_ray` on Ray), a final
:func:`~prunelib.study.experiment.run_experiment` finds every model and table cached and returns the
in-process run's tables. Building the graph loads no deep-learning framework.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prunelib.models.config import recipe_model
from prunelib.study.config import RECIPE_STUDY, ExperimentConfig
from prunelib.study.registry import TABLES, dataset_tables_for, tables_for


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


# Typical seconds of a task of each kind that trains (the tables' are in the table registry); only
# their ratios matter, to weigh the progress bar.
WEIGHTS = {
    "recipe": 40.0,
    "recipe tables": 40.0,
    "train": 21.0,
    "retrain-small": 7.0,
    "recovery": 21.0,
    "targeted-dropout": 150.0,
}


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
    from prunelib.models import mlp

    mlp.train_cached(_data(dataset, data_dir), config, cache=cache)


def retrain_small_cell(dataset: str, config, k: float, data_dir, cache) -> None:
    from prunelib.study import analysis

    analysis.retrain_baseline(_data(dataset, data_dir), config, [k], cache=cache)


def recovery_cell(
    dataset: str, config: ExperimentConfig, seed: int, strategy: str, method: str, k: float, data_dir, cache
) -> None:
    from prunelib.models import mlp, recovery

    data = _data(dataset, data_dir)
    tc = config.train_config(seed)
    model = mlp.train_or_load(data, tc, cache=cache)
    recovery.recovery_table(
        model,
        data,
        methods=[method],
        ks=[k],
        strategies=[strategy],
        config=config.recovery,
        seed=seed,
        base=tc,
        cache=cache,
        progress=False,
    )


def aware_cell(dataset: str, config: ExperimentConfig, seed: int, target, data_dir, cache) -> None:
    from prunelib.models import recovery

    recovery.aware_table(_data(dataset, data_dir), config.train_config(seed), [target], cache=cache, progress=False)


def table_cell(dataset: str, config: ExperimentConfig, seed: int, phase: str, data_dir, cache) -> None:
    from prunelib.study.experiment import seed_tables

    seed_tables(config, _data(dataset, data_dir), seed, only=(phase,), cache=cache, progress=False)


def recipe_tables_cell(dataset: str, names: tuple[str, ...], data_dir, cache) -> None:
    from prunelib.study.experiment import run_recipes

    run_recipes({dataset: names}, data_dir=data_dir, cache=cache, progress=False)


def study_cells(
    config: ExperimentConfig,
    *,
    data_dir=None,
    cache=None,
    cpus: float = 1.0,
    gpus: float = 0.0,
    table_cpus: float = 2.0,
) -> list[Cell]:
    """The cells of ``config``'s study, in an order that respects their dependencies.

    Args:
        cpus, gpus: resources each training cell declares.
        table_cpus: CPUs each table cell declares (a runner gives a cell at most what it has).
    """
    cache = os.fspath(cache) if cache is not None else None
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    out: list[Cell] = []
    for d in config.datasets:
        if "recipes" in dataset_tables_for(config) and d in RECIPE_STUDY:
            names = RECIPE_STUDY[d]
            recipe_cells = [
                Cell(
                    f"{d}/recipe {n}",
                    train_cell,
                    (d, recipe_model(n), data_dir, cache),
                    cpus=cpus,
                    gpus=gpus,
                    weight=WEIGHTS["recipe"],
                )
                for n in names
            ]
            out += recipe_cells
            out.append(
                Cell(
                    f"{d}/recipe tables",
                    recipe_tables_cell,
                    (d, names, data_dir, cache),
                    after=tuple(c.name for c in recipe_cells),
                    cpus=table_cpus,
                    weight=WEIGHTS["recipe tables"],
                )
            )
        for s in config.seeds:
            tc = config.train_config(s)
            train = Cell(
                f"{d}/seed {s}/train",
                train_cell,
                (d, tc, data_dir, cache),
                cpus=cpus,
                gpus=gpus,
                weight=WEIGHTS["train"],
            )
            models: dict[str, list[Cell]] = {"model": [train], "retrain-small": [], "recovery": [train], "aware": []}
            if "retrain-small" in tables_for(config, s):
                models["retrain-small"] = [
                    Cell(
                        f"{d}/seed {s}/retrain-small k={k:g}",
                        retrain_small_cell,
                        (d, tc, k, data_dir, cache),
                        cpus=cpus,
                        gpus=gpus,
                        weight=WEIGHTS["retrain-small"],
                    )
                    for k in config.ks
                    if k < 100
                ]
            if s in config.recovery_seeds:
                models["recovery"] += [
                    Cell(
                        f"{d}/seed {s}/{st} {m} k={k:g}",
                        recovery_cell,
                        (d, config, s, st, m, k, data_dir, cache),
                        after=(train.name,),
                        cpus=cpus,
                        gpus=gpus,
                        weight=WEIGHTS["recovery"],
                    )
                    for st in config.recovery_strategies
                    for m in config.methods
                    for k in config.recovery_ks
                ]
                models["aware"] = [
                    Cell(
                        f"{d}/seed {s}/targeted-dropout {t.method} k={t.k:g}",
                        aware_cell,
                        (d, config, s, t, data_dir, cache),
                        cpus=cpus,
                        gpus=gpus,
                        weight=WEIGHTS["targeted-dropout"],
                    )
                    for t in config.aware_targets
                ]
            tables = [TABLES[p] for p in tables_for(config, s)]
            out += {c.name: c for t in tables for c in models[t.reads]}.values()  # trainings first, so they overlap
            out += [
                Cell(
                    f"{d}/seed {s}/{t.name} table",
                    table_cell,
                    (d, config, s, t.name, data_dir, cache),
                    after=tuple(c.name for c in models[t.reads]),
                    cpus=table_cpus,
                    weight=t.cost,
                )
                for t in tables
            ]
    return out


def triage(waiting: Sequence[Cell], outcome: Outcome) -> tuple[list[Cell], dict[str, str]]:
    """The one scheduling rule both runners follow: of the cells not started yet, those ready now
    (every cell they wait for has finished), and those that never will run, each with the failed
    or skipped cell it waits for (directly, or through another cell of ``waiting`` it skips).

    Example:
        >>> a, b, c = Cell("a", print), Cell("b", print, after=("a",)), Cell("c", print, after=("b",))
        >>> ready, blocked = triage([b, c], Outcome(failed={"a": "boom"}))
        >>> ready, blocked
        ([], {'b': 'a', 'c': 'b'})
    """
    blocked: dict[str, str] = {}
    changed = True
    while changed:  # a cell waiting for a cell skipped in this pass is skipped too
        changed = False
        for cell in waiting:
            if cell.name not in blocked:
                stuck = next(
                    (a for a in cell.after if a in outcome.failed or a in outcome.skipped or a in blocked), None
                )
                if stuck is not None:
                    blocked[cell.name] = stuck
                    changed = True
    ready = [c for c in waiting if c.name not in blocked and all(a in outcome.seconds for a in c.after)]
    return ready, blocked


def critical_path(cells: Sequence[Cell], seconds: dict[str, float]) -> tuple[float, list[str]]:
    """The longest chain of dependent cells by measured seconds: the wall time of the study on
    unlimited machines. Returns its length and its cells in order."""
    best: dict[str, tuple[float, list[str]]] = {}
    for cell in cells:  # cells come in dependency order
        before = max((best[a] for a in cell.after), default=(0.0, []), key=lambda b: b[0])
        best[cell.name] = (before[0] + seconds.get(cell.name, 0.0), [*before[1], cell.name])
    return max(best.values(), key=lambda b: b[0]) if best else (0.0, [])


def estimate_wall(cells: Sequence[Cell], seconds: dict[str, float], machines: int, cpus: float = 1.0) -> float:
    """Wall time of the cells on ``machines`` machines of ``cpus`` CPUs each, by list scheduling:
    whenever CPUs are free, the longest ready cell that fits on one machine starts there (a cell
    takes its declared CPUs, at most a machine's)."""
    import heapq

    free = [float(cpus)] * machines
    finish: dict[str, float] = {}
    remaining = list(cells)
    running: list[tuple[float, str, int, float]] = []
    clock = 0.0
    while remaining or running:
        ready = sorted(
            (c for c in remaining if all(a in finish for a in c.after)), key=lambda c: -seconds.get(c.name, 0.0)
        )
        for cell in ready:
            need = min(float(cell.cpus), float(cpus))
            m = next((m for m, f in enumerate(free) if f >= need - 1e-9), None)
            if m is None:
                continue
            free[m] -= need
            remaining.remove(cell)
            heapq.heappush(running, (clock + seconds.get(cell.name, 0.0), cell.name, m, need))
        if not running:
            break
        clock, name, m, need = heapq.heappop(running)
        finish[name] = clock
        free[m] += need
    return clock


def check_graph(cells: Sequence[Cell], *, ordered: bool = True) -> None:
    """Refuse a malformed graph before any work: repeated names, waits for unknown cells, and (if
    ``ordered``, as a runner that walks the list needs) a cell listed before a cell it waits for.

    Raises:
        ValueError: naming the problem.
    """
    names = [c.name for c in cells]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"cell names must be unique; repeated: {repeated}")
    known = set(names)
    unknown = sorted({a for c in cells for a in c.after if a not in known})
    if unknown:
        raise ValueError(f"cells wait for unknown cells {unknown}")
    if ordered:
        seen: set[str] = set()
        for cell in cells:
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
    shown = "; ".join(lines[:MAX_REPORTED]) + (
        f"; and {len(lines) - MAX_REPORTED} more" if len(lines) > MAX_REPORTED else ""
    )
    raise CellsFailed(
        f"{len(outcome.failed)} cell(s) failed and {len(outcome.skipped)} were skipped "
        f"({len(outcome.seconds)} finished and are cached): {shown}"
    )


MAX_REPORTED = 6
"""Failed or skipped cells named in a :class:`CellsFailed` message (one line, not one per cell)."""
