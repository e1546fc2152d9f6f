"""The docs quote benchmark CSVs through generated blocks, never by hand.

A block sits between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in a Markdown page; each
benchmark script (or :data:`BLOCKS` here, for the CSVs whose scripts import a framework) turns its
committed CSV into the block's text, and tests/test_docs.py checks that every page quotes exactly
what the committed CSV gives. Rewrite the blocks after a benchmark run:

    python benchmarks/_docs.py            # every block of BLOCKS from results/benchmarks/
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import any_model  # noqa: E402  (its render: pandas only)
import cnn_compact  # noqa: E402  (its render: pandas only)
import fit_pruning  # noqa: E402  (its render: pandas only)
import pipeline  # noqa: E402  (the accuracy columns its CSV has)
import quantized_export  # noqa: E402  (its render: pandas only)

ROOT = Path(__file__).resolve().parents[1]


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def quoted(text: str, name: str, block: str) -> bool:
    """Whether ``text`` holds ``block`` between the markers of ``name``."""
    begin, end = markers(name)
    return f"{begin}\n{block}\n{end}" in text


def write(page: Path, name: str, block: str) -> None:
    """Replace what ``page`` holds between the markers of ``name`` with ``block``."""
    begin, end = markers(name)
    text = page.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{page} has no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    page.write_text(f"{head}{begin}\n{block}\n{end}{rest.split(end, 1)[1]}")


def _range(row: pd.Series, column: str, digits: int = 1) -> str:
    """``median (min–max)`` of a spread this repository's scripts wrote."""
    m, lo, hi = (row[f"{column}_{s}"] for s in ("median", "min", "max"))
    return f"{m:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


PIPELINE_RUNS = {
    "straightforward": "straightforward (the seed notebook's: Adam 1e-3, batch 64, float32)",
    "prunelib": "prunelib default",
    "cached": "prunelib, model from the cache",
}


def pipeline_block(table: pd.DataFrame) -> str:
    """docs/benchmarks.md's training-pipeline table and verdict, from results/benchmarks/pipeline.csv."""
    rounds = int(table["rounds"].min())
    lines = [
        f"Median (min–max) over {rounds} rounds, each configuration in a fresh process, the order rotating "
        f"every round; {int(table['cores'].iloc[0])} cores:",
        "",
        "| run | train (s) | sweep (s) | total (s) | total ÷ prunelib's (paired) | peak RSS (GB) "
        "| dense | " + " | ".join(f"{m} {k}" for m, k in pipeline.ACCURACIES) + " |",
        "|---|" + "---:|" * (6 + len(pipeline.ACCURACIES)),
    ]
    accuracies = ["dense_accuracy"] + [f"{m}_{k}_accuracy" for m, k in pipeline.ACCURACIES]
    for _, row in table.iterrows():
        cells = [PIPELINE_RUNS.get(row["run"], row["run"])]
        cells += [_range(row, c) for c in ("train_s", "sweep_s", "total_s")]
        cells += [_range(row, "total_vs_prunelib", 2), _range(row, "peak_rss_gb", 2)]
        cells += [f"{row[c]:.2f}" for c in accuracies]
        lines.append("| " + " | ".join(cells) + " |")
    runs = table.set_index("run")
    if "straightforward" in runs.index:
        ratio = runs.loc["straightforward"]
        # total_vs_prunelib is straightforward ÷ prunelib per round; its reciprocal is prunelib's share.
        share = 1 / ratio["total_vs_prunelib_median"]
        lo, hi = 1 / ratio["total_vs_prunelib_max"], 1 / ratio["total_vs_prunelib_min"]
        goal = "meets the goal of ≤ 0.5 x in every round" if hi <= 0.5 else "misses the goal of ≤ 0.5 x"
        if lo <= 0.5 < hi:
            goal = "meets the goal of ≤ 0.5 x in some rounds only"
        lines += [
            "",
            f"The default's training and sweep took {share:.2f} x the straightforward recipe's time "
            f"(round by round {lo:.2f}–{hi:.2f} x), which {goal}; "
            f"its training alone took {runs.loc['prunelib', 'train_s_median']:.0f} s (median) against the "
            f"goal's 45 s.",
        ]
    return "\n".join(lines)


TFMOT_NAMES = {
    ("tfmot", "float32"): "tfmot (float32)",
    ("prunelib", "float32"): "prunelib (float32, same recipe)",
    ("prunelib", "default (bf16 + distill)"): "prunelib defaults (bf16 + distillation)",
}


def tfmot_block(table: pd.DataFrame) -> str:
    """docs/benchmarks.md's side-by-side table and verdict, from results/benchmarks/tfmot.csv."""
    rounds, epochs = int(table["rounds"].min()), int(table["epochs"].iloc[0])
    lines = [
        f"Gradual weight pruning for {epochs} epochs from the same trained MNIST model; median (min–max) "
        f"over {rounds} rounds, each run a fresh process, the order rotating every round. A plain dense "
        f"float32 epoch with the same batch took {table['plain_epoch_s_float32_median'].iloc[0]:.1f} s "
        "(median):",
        "",
        "| target | run | accuracy | seconds | first epoch (s, with tracing) | later epochs (s) "
        "| seconds ÷ tfmot's (paired) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for k, group in table.groupby("k", sort=True):
        for _, row in group.iterrows():
            name = TFMOT_NAMES.get((row["tool"], row["recipe"]), f"{row['tool']} ({row['recipe']})")
            lines.append(
                f"| {k:g} % | {name} | {row['accuracy']:.2f} | {_range(row, 'seconds')} "
                f"| {_range(row, 'first_epoch_s')} | {_range(row, 'steady_epoch_s')} "
                f"| {_range(row, 'seconds_vs_tfmot', 2)} |"
            )
        alike = group[(group["tool"] == "prunelib") & (group["recipe"] == "float32")].iloc[0]
        if alike["seconds_vs_tfmot_max"] < 1:
            verdict = "faster in every round"
        elif alike["seconds_vs_tfmot_min"] > 1:
            verdict = "slower in every round"
        else:
            verdict = "neither faster nor slower in every round"
        verdicts.append(f"{k:g} %: {verdict} ({_range(alike, 'seconds_vs_tfmot', 2)} x tfmot's seconds)")
    lines += ["", "Like for like (float32, same recipe), prunelib was " + "; ".join(verdicts) + "."]
    return "\n".join(lines)


INFERENCE_GOALS = (  # issue 12's goals: (method, k, batch, what, the speedup or size ratio asked for)
    ("unit", 90, "throughput", "speedup", 15.0),
    ("unit", 90, "latency", "speedup", 1.0),
    ("weight", 99, "throughput", "speedup", 5.0),
    ("weight", 99, "latency", "speedup", 3.0),
    ("weight", 80, "throughput", "speedup", 1.0),
    ("weight", 99, "throughput", "bytes_ratio", 20.0),
)
INFERENCE_PATHS = ("blas", "sparse", "csr", "sparse-mlp", "compact-tf", "dense-numpy")


def inference_block(table: pd.DataFrame) -> str:
    """docs/benchmarks.md's inference goals and per-path times, from results/benchmarks/inference.csv."""
    runs = sorted(table["run"].unique())
    auto = table[table["path"] == "auto"].set_index(["method", "k", "batch", "run"])
    dense = table[(table["k"] == 0) & table["path"].str.startswith("dense")].groupby(["batch", "run"])["seconds"].min()
    per_run = " / ".join(f"{dense[('throughput', r)]:.3f}" for r in runs)
    one = " / ".join(f"{1e3 * dense[('latency', r)]:.2f}" for r in runs)
    lines = [
        f"`Predictor.predict` against the fastest dense path at k = 0 of the same run ({per_run} s for "
        f"10,000 images, {one} ms for one; runs {' / '.join(map(str, runs))}):",
        "",
        "| | MAC ratio (limit) | " + " | ".join(f"run {r}" for r in runs) + " | path chosen | goal (issue 12) |",
        "|---|---:|" + "---:|" * len(runs) + "---|---|",
    ]
    for method, k, batch, what, goal in INFERENCE_GOALS:
        rows = [auto.loc[(method, k, batch, r)] for r in runs]
        label = f"{method} {k:g} %, {'throughput' if batch == 'throughput' else 'batch 1'}"
        if what == "bytes_ratio":
            label = f"size on disk, {method} {k:g} % (`.npz` CSR against the dense `.keras`)"
            cells, mac = [f"1/{rows[0]['bytes_ratio']:.0f}"] + [""] * (len(runs) - 1), ""
        else:
            cells, mac = [f"{row['speedup']:.2f}x" for row in rows], f"{rows[0]['mac_ratio']:.1f}x"
        met = all(row[what] >= goal for row in rows)
        target = f"≤ 1/{goal:.0f}" if what == "bytes_ratio" else (f"≥ {goal:g}x" if goal > 1 else "beats dense")
        chosen = "" if what == "bytes_ratio" else " / ".join(row["chosen"] for row in rows)
        lines.append(
            f"| {label} | {mac} | {' | '.join(cells)} | {chosen} | {target} ({'met' if met else 'not met'} here) |"
        )
    for method, k in (("weight", 99), ("unit", 90)):
        for batch, unit, scale in (("throughput", "s for 10,000 images", 1), ("latency", "ms for one", 1e3)):
            got = table[(table["method"] == method) & (table["k"] == k) & (table["batch"] == batch)]
            times = got.set_index(["path", "run"])["seconds"]
            paths = ", ".join(
                f"{p} {' / '.join(f'{scale * times[(p, r)]:.3g}' for r in runs)}"
                for p in INFERENCE_PATHS
                if (p, runs[0]) in times.index
            )
            chosen = " / ".join(auto.loc[(method, k, batch, r), "chosen"] for r in runs)
            lines += ["", f"{method} {k:g} %, {unit} (runs {' / '.join(map(str, runs))}): {paths}; chosen: {chosen}."]
    return "\n".join(lines)


MEMORY_MODES = {"worker processes": "worker processes (default)", "in-process": "`--in-process`"}


def memory_block(table: pd.DataFrame) -> str:
    """docs/benchmarks.md's memory-in-the-seeds table, from results/benchmarks/memory.csv."""
    seeds = sorted(table["seeds"].unique())
    lines = [
        f"Median (min–max) over {int(table['rounds'].min())} rotating rounds, each from an empty cache; peak "
        "resident memory summed over the process tree:",
        "",
        "| "
        + str(table["study"].iloc[0])
        + " | "
        + " | ".join(f"peak, {n} seed{'s' if n > 1 else ''}" for n in seeds)
        + " | growth | "
        + " | ".join(f"seconds, {n} seed{'s' if n > 1 else ''}" for n in seeds)
        + " |",
        "|---|" + "---:|" * (2 * len(seeds) + 1),
    ]
    for mode, group in table.groupby("mode", sort=False):
        rows = group.set_index("seeds")
        peaks = [f"{rows.loc[n, 'peak_tree_rss_gb_median']:.2f} GB" for n in seeds]
        growth = f"{100 * rows.loc[seeds[-1], 'growth_vs_first']:+.1f} %"
        seconds = [_range(rows.loc[n], "seconds", 0) for n in seeds]
        lines.append(f"| {MEMORY_MODES.get(mode, mode)} | {' | '.join(peaks)} | {growth} | {' | '.join(seconds)} |")
    return "\n".join(lines)


def unit_refit_targets_block(table: pd.DataFrame) -> str:
    """Unit + lstsq's test accuracy with each last-layer target: mean ± 95 % CI over seeds."""
    from prunelib.reporting.stats import ci95

    lines = [
        "| dataset | unit k | minimum-norm (former) | non-negative (now) | seeds |",
        "|---|---:|---:|---:|---:|",
    ]
    for (dataset, k), rows in table.groupby(["dataset", "k"], sort=False):
        cells = []
        for target in ("minimum-norm", "non-negative"):
            acc = rows.loc[rows["target"] == target, "accuracy"]
            cells.append(f"{acc.mean():.2f} ± {ci95(acc):.2f}")
        lines.append(f"| {dataset} | {k:g} | {cells[0]} | {cells[1]} | {rows['seed'].nunique()} |")
    return "\n".join(lines)


def callback_cost_block(table: pd.DataFrame) -> str:
    """fit with PruningCallback / a plain fit, per model: median (min–max) of the rounds' ratios, and
    the ratio of each side's fastest round (slow rounds only add time, so the fastest is the least
    disturbed)."""
    lines = [
        "| model | whole fit | second epoch (masks fixed) | fastest ÷ fastest (whole, second epoch) | rounds | CPU |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for model, rows in table.groupby("model", sort=False):
        cells = [
            f"{rows[c].median():.2f}x ({rows[c].min():.2f}–{rows[c].max():.2f})"
            for c in ("total_ratio", "steady_ratio")
        ]
        fastest = ", ".join(
            f"{rows[f'callback_{c}_s'].min() / rows[f'plain_{c}_s'].min():.2f}x" for c in ("total", "steady")
        )
        bf16 = "AVX512-BF16" if "avx512_bf16" in str(rows["isa"].iloc[0]) else "AVX2"
        lines.append(f"| {model} | {cells[0]} | {cells[1]} | {fastest} | {len(rows)} | {rows['cpu'].iloc[0]}, {bf16} |")
    return "\n".join(lines)


def recovery_switch_block(table: pd.DataFrame) -> str:
    """Recovery's test accuracy with masked layers (before) and on the pruning callback (after)."""
    lines = [
        "| dataset | strategy | method | k | masked layers | callback | difference |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in table.itertuples():
        lines.append(
            f"| {row.dataset} | {row.strategy} | {row.method} | {row.k:g} | {row.accuracy_masked_layers:.2f} | "
            f"{row.accuracy_callback:.2f} | {row.difference:+.2f} |"
        )
    diff = table["difference"]
    lines.append("")
    lines.append(
        f"{len(table)} rows (seed {', '.join(map(str, sorted(table['seed'].unique())))}): mean difference "
        f"{diff.mean():+.2f} points, largest {diff.abs().max():.2f}."
    )
    return "\n".join(lines)


BLOCKS: dict[str, tuple[str, str, Callable[[pd.DataFrame], str]]] = {
    "pipeline": ("results/benchmarks/pipeline.csv", "docs/benchmarks.md", pipeline_block),
    "tfmot": ("results/benchmarks/tfmot.csv", "docs/benchmarks.md", tfmot_block),
    "inference": ("results/benchmarks/inference.csv", "docs/benchmarks.md", inference_block),
    "memory": ("results/benchmarks/memory.csv", "docs/benchmarks.md", memory_block),
    "fit-pruning": ("results/benchmarks/fit_pruning.csv", "docs/benchmarks.md", fit_pruning.render),
    "any-model": ("results/benchmarks/any_model.csv", "docs/own-model.md", any_model.render),
    "cnn-compact": ("results/benchmarks/cnn_compact.csv", "docs/own-model.md", cnn_compact.render),
    "quantized-export": (
        "results/benchmarks/quantized_export.csv",
        "docs/own-model.md",
        quantized_export.render,
    ),
    "callback-cost": ("results/benchmarks/callback_cost.csv", "docs/training.md", callback_cost_block),
    "recovery-switch": ("results/benchmarks/recovery_switch.csv", "docs/recovery.md", recovery_switch_block),
    "unit-refit-targets": (
        "results/benchmarks/unit_refit_targets.csv",
        "docs/least-squares.md",
        unit_refit_targets_block,
    ),
}
"""Block name -> (the CSV it quotes, the page that holds it, the function that writes it)."""


def main(root: Path = ROOT) -> int:
    for name, (csv, page, block) in BLOCKS.items():
        write(root / page, name, block(pd.read_csv(root / csv)))
        print(f"{page}: {name} from {csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
