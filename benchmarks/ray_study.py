"""The study on Ray: overhead on this machine, and the full study's wall time on N machines.

1. The quick study (``--quick``'s config) in one process, as the default run (cells in one worker
   process at a time), with ``--workers 2``, on a local Ray runtime with 2 CPUs (training cells
   two at a time, table cells alone) and on Ray one cell at a time, each from an empty cache:
   seconds of each and whether every table is identical. The last run, against the first, gives
   Ray's overhead per cell (start-up, imports, loading what one process would keep).
2. An estimate for the full default study: its cells (:func:`prunelib.study.tasks.study_cells`)
   with the seconds each took in the full run that filled ``--cache``, read from the cache's key
   files (every cached model and table records the seconds its build took and when it was
   written), plus the per-cell overhead of step 1; then the critical path and a list-scheduling
   estimate of the wall time on 1, 2, 5, 10 and 20 machines of ``--cpus`` CPUs each, every cell
   taking the CPUs it declares (Ray's defaults: 1 per training cell, 2 per table cell). The
   seconds should come from a run that shared the cores the same way (``run --workers 2``).

Writes ``results/benchmarks/ray.csv`` (step 1) and ``results/benchmarks/ray_estimate.csv`` (step 2).

    python benchmarks/ray_study.py [--cache ~/.cache/prunelib/models] [--skip-quick] [--cpus 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from prunelib.base.fingerprint import code_fingerprint
from prunelib.base.paths import cache_dir, digest
from prunelib.data import load_dataset
from prunelib.models import mlp
from prunelib.models.config import recipe_model
from prunelib.models.recovery import aware_key
from prunelib.study import analysis
from prunelib.study.config import ExperimentConfig
from prunelib.study.experiment import run_experiment
from prunelib.study.local import run_study
from prunelib.study.on_ray import run_study_on_ray
from prunelib.study.registry import builder_and_schema
from prunelib.study.tasks import critical_path, estimate_wall, study_cells


def quick(out: Path) -> float:
    """The quick study in one process (in-process run), as the default run (one worker process at a
    time), with two local workers, and on Ray with 2 CPUs (training cells two at a time, table
    cells alone) and with one cell at a time, each from an empty cache; returns the per-cell
    overhead of Ray (seconds): the one-cell-at-a-time run's wall time beyond the in-process run's,
    per cell (start-up, imports and loading that one process does once)."""
    import ray

    config = ExperimentConfig.quick()

    def timed(fn):
        t0 = time.perf_counter()
        value = fn()
        return value, time.perf_counter() - t0

    serial, serial_s = timed(lambda: run_experiment(config, cache=tempfile.mkdtemp(), progress=False))
    default, default_s = timed(lambda: run_study(config, cache=tempfile.mkdtemp(), progress=False))
    two, two_s = timed(lambda: run_study(config, cache=tempfile.mkdtemp(), workers=2, progress=False))
    (on_ray, outcome), ray_s = timed(
        lambda: run_study_on_ray(config, cache=tempfile.mkdtemp(), num_cpus=2, progress=False)
    )
    ray.shutdown()
    (one_ray, one_outcome), one_s = timed(
        lambda: run_study_on_ray(config, cache=tempfile.mkdtemp(), num_cpus=2, cpus=2, progress=False)
    )
    ray.shutdown()

    def same(a, b):
        return all(
            getattr(a, n)
            .drop(columns=["seconds"], errors="ignore")
            .equals(getattr(b, n).drop(columns=["seconds"], errors="ignore"))
            for n in ("sweep", "sensitivity", "recovery")
        )

    nan = float("nan")
    rows = [
        {
            "run": "in-process",
            "seconds": serial_s,
            "cells": 0,
            "cell_seconds": nan,
            "tables_identical_to_in_process": True,
        },
        {
            "run": "default (worker processes)",
            "seconds": default_s,
            "cells": 0,
            "cell_seconds": nan,
            "tables_identical_to_in_process": same(serial, default),
        },
        {
            "run": "--workers 2",
            "seconds": two_s,
            "cells": 0,
            "cell_seconds": nan,
            "tables_identical_to_in_process": same(serial, two),
        },
        {
            "run": "ray-local-2cpu",
            "seconds": ray_s,
            "cells": len(outcome.seconds),
            "cell_seconds": sum(outcome.seconds.values()),
            "tables_identical_to_in_process": same(serial, on_ray),
        },
        {
            "run": "ray-local-one-cell-at-a-time",
            "seconds": one_s,
            "cells": len(one_outcome.seconds),
            "cell_seconds": sum(one_outcome.seconds.values()),
            "tables_identical_to_in_process": same(serial, one_ray),
        },
    ]
    table = pd.DataFrame(rows).assign(
        vs_in_process=lambda t: t.seconds / serial_s - 1, vs_default=lambda t: t.seconds / default_s - 1
    )
    table.to_csv(out, index=False, float_format="%.3f")
    print(table.to_string(index=False))
    return max(0.0, (one_s - serial_s) / len(one_outcome.seconds))


def previous_overhead(path: Path) -> float:
    """The per-cell overhead :func:`quick` measured, from the table it wrote."""
    runs = pd.read_csv(path).set_index("run")
    one = runs.loc["ray-local-one-cell-at-a-time"]
    return max(0.0, (one["seconds"] - runs.loc["in-process", "seconds"]) / one["cells"])


def _entries(cache: Path) -> list[dict]:
    out = []
    for path in cache.rglob("*.key.json"):
        meta = json.loads(path.read_text())
        meta["written"] = datetime.datetime.fromisoformat(meta["written"]).timestamp()
        out.append(meta)
    return out


def measured_seconds(config: ExperimentConfig, cache: Path) -> dict[str, float]:
    """Seconds per cell of ``config``'s study as the serial run spent them (from the key files).

    A table's build time includes the models first built inside it; those are subtracted, since
    on Ray they are cells of their own.
    """
    entries = _entries(cache)
    models = {digest(e["key"]): e for e in entries if "architecture" in e["key"]}
    aware = {digest(e["key"]): e for e in entries if "aware" in e["key"]}
    recovered = [e for e in entries if "strategy" in e["key"]]
    tables = [e for e in entries if "phase" in e["key"]]

    def model_seconds(data, tc) -> dict:
        return models.get(mlp.cache_key(data, tc), {"seconds": float("nan"), "written": float("nan")})

    def inside(entry: dict, table: dict) -> bool:  # built during that table's computation
        return table["written"] - table["seconds"] - 1 <= entry["written"] <= table["written"] + 1

    seconds = {}
    loaded = {}
    for cell in study_cells(config):
        d = cell.name.split("/")[0]
        if d not in loaded:
            loaded[d] = load_dataset(d)
        data = loaded[d]
        if cell.name.endswith(" table"):
            exp, s, phase = cell.args[1], cell.args[2], cell.args[3]
            key = mlp.cache_key(data, exp.train_config(s))
            code = code_fingerprint(builder_and_schema(phase)[0])
            part = [
                t
                for t in tables
                if t["key"]["phase"] == phase
                and t["key"].get("model") == key
                and t["key"].get("dataset") == d
                and t["key"].get("code") == code
            ]
            nested = [*models.values(), *recovered]
            latest = max(part, key=lambda t: t["written"], default=None)
            seconds[cell.name] = (
                float("nan")
                if latest is None
                else latest["seconds"] - sum(e["seconds"] for e in nested if inside(e, latest))
            )
        elif "/recipe " in cell.name and not cell.name.endswith("tables"):
            seconds[cell.name] = model_seconds(data, cell.args[1])["seconds"]
        elif cell.name.endswith("/train"):
            seconds[cell.name] = model_seconds(data, cell.args[1])["seconds"]
        elif "retrain-small" in cell.name:
            tc, k = cell.args[1], cell.args[2]
            arch = tc.architecture
            small = replace(tc, architecture=replace(arch, hidden_sizes=analysis.units_left(arch.hidden_sizes, k)))
            seconds[cell.name] = model_seconds(data, small)["seconds"]
        elif "targeted-dropout" in cell.name:
            exp, s, target = cell.args[1], cell.args[2], cell.args[3]
            hit = aware.get(digest(aware_key(data, exp.train_config(s), target)), {"seconds": float("nan")})
            seconds[cell.name] = hit["seconds"]
        elif cell.name.endswith("recipe tables"):
            code = code_fingerprint(builder_and_schema("recipes")[0])
            part = [
                t
                for t in tables
                if t["key"]["phase"] == "recipes" and t["key"].get("dataset") == d and t["key"].get("code") == code
            ]  # the curves and the layers table of this code
            recipe_models = [model_seconds(data, recipe_model(n)) for n in cell.args[1]]
            seconds[cell.name] = sum(
                t["seconds"] - sum(m["seconds"] for m in recipe_models if inside(m, t)) for t in part
            )
        else:  # a recovery strategy
            exp, s, strategy, method, k = cell.args[1:6]
            base = mlp.cache_key(data, exp.train_config(s))
            hit = [
                e
                for e in recovered
                if e["key"]["base"] == base
                and e["key"]["strategy"] == strategy
                and e["key"]["method"] == method
                and float(e["key"]["k"]) == float(k)
                and e["key"]["seed"] == s
                and all(e["key"].get(f) == v for f, v in asdict(exp.recovery).items())
            ]
            seconds[cell.name] = hit[0]["seconds"] if hit else float("nan")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=cache_dir())
    parser.add_argument("--skip-quick", action="store_true")
    parser.add_argument(
        "--cpus",
        type=float,
        default=2.0,
        help="CPUs per machine: training cells take 1 each (two share a 2-CPU machine, as "
        "in `run --workers 2`), table cells 2; the cache's seconds should come from "
        "a run that shared the cores the same way",
    )
    parser.add_argument(
        "--overhead",
        type=float,
        default=None,
        metavar="S",
        help="per-cell overhead to add (default: measured by the quick step, or read "
        "from its ray.csv with --skip-quick)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    overhead = args.overhead
    if overhead is None:
        overhead = previous_overhead(args.out / "ray.csv") if args.skip_quick else quick(args.out / "ray.csv")
    config = ExperimentConfig()
    cells = study_cells(config)
    seconds = measured_seconds(config, args.cache)
    missing = [n for n, v in seconds.items() if v != v]
    if missing:
        print(f"no measured time for {len(missing)} cells (not in the cache), e.g. {missing[:3]}")
    seconds = {n: (0.0 if v != v else v) + overhead for n, v in seconds.items()}
    length, path = critical_path(cells, seconds)
    rows = [
        {"machines": n, "estimated_seconds": estimate_wall(cells, seconds, n, cpus=args.cpus)}
        for n in (1, 2, 5, 10, 20)
    ]
    table = pd.DataFrame(rows).assign(
        cells=len(cells),
        cpus_per_machine=args.cpus,
        per_cell_overhead_s=overhead,
        critical_path_s=length,
        critical_path=" -> ".join(path),
        serial_cell_seconds=sum(seconds.values()),
    )
    table.to_csv(args.out / "ray_estimate.csv", index=False, float_format="%.1f")
    print(table.drop(columns=["critical_path"]).to_string(index=False))
    print("critical path:", " -> ".join(f"{p} ({seconds[p]:.0f} s)" for p in path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
