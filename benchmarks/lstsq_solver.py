"""Seconds and accuracy of least-squares reconstruction: the default solver against ``exact=True``.

The default solver (:func:`prunelib.core.reconstruct.reconstruct`) solves columns that share a
support with one factorization, small columns exactly, and the rest (both kept and pruned sets
large, as in weight pruning around k = 50) by batched conjugate gradients; ``exact=True`` factorizes
every column, as every version before did. Per (dataset, seed, method, k) of the challenge grid, on
the cached challenge model, both run once untimed (warm-up) and then ``--repeats`` rounds in an
order that rotates each round. The clock holds the call to ``reconstruct`` alone (masks, calibration
set and the accuracy evaluations are outside it). Writes ``results/benchmarks/lstsq_solver.csv``:
accuracy of each, their difference, seconds as median / min / max per solver, and the paired
speed-up per round.

    python benchmarks/lstsq_solver.py [--datasets mnist fashion-mnist] [--seeds 0] [--repeats 3]
    python benchmarks/lstsq_solver.py --smoke   # a random network, seconds, writes nothing
    python benchmarks/lstsq_solver.py --write-docs   # the README line and the docs table from the CSV

README.md and docs/least-squares.md quote the CSV between ``<!-- lstsq-solver -->`` markers;
tests/test_docs.py checks that they are what :func:`docs_blocks` makes of the committed CSV.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from prunelib.core import pruning
from prunelib.core.evaluate import evaluate_kernels
from prunelib.core.reconstruct import calibration_set, reconstruct

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _docs  # noqa: E402
from _timing import interleaved, ratio_spread, spread  # noqa: E402

SOLVERS = {"default": False, "exact": True}


def _inputs(dataset: str, seed: int, smoke: bool):
    """(kernels, calibration, x_test, y_test): the cached challenge model, or a random one."""
    if smoke:
        rng = np.random.default_rng(seed)
        sizes = (784, 400, 300, 10)
        kernels = [rng.normal(scale=a**-0.5, size=(a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
        x = rng.random((1000, 784), dtype=np.float32)
        return kernels, x, x[:300], rng.integers(0, 10, 300)
    from prunelib.data import load_dataset
    from prunelib.models import mlp
    from prunelib.study.config import ExperimentConfig

    config, data = ExperimentConfig(), load_dataset(dataset)
    kernels = mlp.get_kernels(mlp.train_or_load(data, config.train_config(seed)))
    return kernels, calibration_set(data.x_train, config.calibration_size, seed), data.x_test, data.y_test


def measure(kernels, calibration, x_test, y_test, grid, *, repeats: int = 3) -> pd.DataFrame:
    """One row per (method, k): both solvers' accuracy and seconds, and the paired speed-up."""
    rows = []
    for method, k in grid:
        masks = pruning.compute_masks(kernels, k, method)
        calls = {
            name: (lambda exact=exact: reconstruct(kernels, masks, calibration, exact=exact))
            for name, exact in SOLVERS.items()
        }
        seconds, fitted = interleaved(calls, repeats=repeats)
        accuracy = {name: evaluate_kernels(fitted[name], x_test, y_test)[0] for name in SOLVERS}
        rows.append(
            {
                "method": method,
                "k": k,
                "default_accuracy": accuracy["default"],
                "exact_accuracy": accuracy["exact"],
                "accuracy_difference": accuracy["default"] - accuracy["exact"],
                **{key: v for name in SOLVERS for key, v in spread(seconds[name], f"{name}_seconds_").items()},
                **ratio_spread(seconds["exact"], seconds["default"], "speedup_"),
            }
        )
        print(
            {
                key: round(rows[-1][key], 3) if isinstance(rows[-1][key], float) else rows[-1][key]
                for key in ("method", "k", "accuracy_difference", "default_seconds_median", "exact_seconds_median")
            },
            flush=True,
        )
    keep = [c for c in rows[0] if not c.endswith(("_q1", "_q3", "_n"))]
    return pd.DataFrame(rows)[keep].assign(repeats=repeats)


DOCS = {"README.md": "headline", "docs/least-squares.md": "table"}
BLOCK = "lstsq-solver"  # the marker name in both pages (benchmarks/_docs.py)


def docs_blocks(table: pd.DataFrame) -> dict[str, str]:
    """The README line and the docs' per-k table, from a CSV this script wrote."""
    per_k = table.groupby(["method", "k"]).agg(
        exact=("exact_seconds_median", "mean"),
        default=("default_seconds_median", "mean"),
        worst=("accuracy_difference", lambda d: float(np.max(np.abs(d)))),
    )
    where = f"{', '.join(table['dataset'].unique())}, seed{'s' if table['seed'].nunique() > 1 else ''} "
    where += f"{', '.join(map(str, sorted(table['seed'].unique())))}, median of {int(table['repeats'].max())} interleaved rounds"
    worst = table.loc[table["exact_seconds_median"].idxmax()]
    headline = (
        f"Least squares takes at most {table['default_seconds_median'].max():.2f} s per (method, k) "
        f"(`exact=True`, the previous solver: up to {worst['exact_seconds_median']:.1f} s, {worst['dataset']} "
        f"{worst['method']} {worst['k']:g}); the test accuracy moves by at most "
        f"{table['accuracy_difference'].abs().max():.2f} points ({where}; `benchmarks/lstsq_solver.py`)."
    )
    lines = [
        f"Seconds per call of `reconstruct` ({where}; the mean over datasets of the medians):",
        "",
        "| k | weight: exact | weight: default | unit: exact | unit: default | largest accuracy change |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for k in sorted(table["k"].unique()):
        w, u = per_k.loc[("weight", k)], per_k.loc[("unit", k)]
        worst = max(w["worst"], u["worst"])
        lines.append(
            f"| {k:g} | {w['exact']:.2f} | {w['default']:.2f} | {u['exact']:.2f} | {u['default']:.2f} | {worst:.2f} |"
        )
    return {"headline": headline, "table": "\n".join(lines)}


def write_docs(csv: Path, root: Path = Path(".")) -> None:
    """Replace the text between the markers in each page of :data:`DOCS` with :func:`docs_blocks`."""
    blocks = docs_blocks(pd.read_csv(csv))
    for page, block in DOCS.items():
        _docs.write(root / page, BLOCK, blocks[block])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per solver (after one warm-up)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/lstsq_solver.csv"))
    parser.add_argument("--smoke", action="store_true", help="a random network, 2 rounds; writes nothing")
    parser.add_argument("--write-docs", action="store_true", help="only rewrite the docs' blocks from --out")
    args = parser.parse_args(argv)
    if args.write_docs:
        write_docs(args.out)
        return 0
    if args.smoke:
        grid = [("weight", 50), ("unit", 50)]
        print(measure(*_inputs("smoke", 0, True), grid, repeats=2).to_string(index=False))
        return 0
    from prunelib.core.pruning import DEFAULT_KS

    grid = [(m, k) for m in ("weight", "unit") for k in DEFAULT_KS if k > 0]
    t0, tables = time.perf_counter(), []
    for dataset in args.datasets:
        for seed in args.seeds:
            table = measure(*_inputs(dataset, seed, False), grid, repeats=args.repeats)
            tables.append(table.assign(dataset=dataset, seed=seed))
    out = pd.concat(tables, ignore_index=True)
    out = out[["dataset", "seed", *[c for c in out.columns if c not in ("dataset", "seed")]]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(args.out, index=False, float_format="%.4f")
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
