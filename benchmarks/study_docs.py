"""The study's numbers in the docs, generated from the committed results/, never typed in.

Each block below is written between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` of its page
(:mod:`_docs`) from the study's tables (``results/<dataset>/*.csv``, read and validated by
:func:`prunelib.reporting.results.load_results`) and the manifest's per-part records
(``results/manifest.json``): the sweep at the headline points with its goals, the least-squares
seconds, least squares against fine-tuning, the recovery tables and goals, the recipe study and the
seconds each part took. The summaries are :mod:`prunelib.reporting`'s own (the ones REPORT.md
shows). A part that results/ does not hold yet is named in its block with the command that computes
it (:func:`prunelib.study.registry.recompute_command`); once it is published, running this script
again fills the block in. tests/test_docs.py checks that every block is what this script writes.

    python benchmarks/study_docs.py            # rewrite every block from results/
    python benchmarks/study_docs.py --check    # exit 1 naming each stale block
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _docs  # noqa: E402

from prunelib.reporting.recipe_summary import MAX_STEPS, choose, summarize  # noqa: E402
from prunelib.reporting.results import Results, load_results  # noqa: E402
from prunelib.reporting.stats import summary_table  # noqa: E402
from prunelib.reporting.summaries import (  # noqa: E402
    best_rows,
    challenge_rows,
    lstsq_rows,
    lstsq_seconds,
    lstsq_vs_finetune,
    markdown_table,
    recipe_summary,
    recovery_summary,
)
from prunelib.study.registry import entry_name, part_rows, recompute_command  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = Path("results/benchmarks/recipe_candidates.csv")
"""Further recipes of issue 22, measured by benchmarks/recipe_candidates.py (the study's columns)."""


@dataclass
class Study:
    """What the blocks are written from: the study's tables, the manifest's per-part records and the
    recipe candidates' curves (empty where results/ lacks them)."""

    results: Results
    parts: dict[str, dict] = field(default_factory=dict)
    candidates: pd.DataFrame = field(default_factory=pd.DataFrame)
    datasets: tuple[str, ...] = ("mnist", "fashion-mnist")


def load(root: Path = ROOT) -> Study:
    """The committed study under ``root/results``."""
    from prunelib.data import DATASETS
    from prunelib.study.parts import published

    results_dir = root / "results"
    try:
        results = load_results(results_dir)
    except FileNotFoundError:
        results = Results(sweep=pd.DataFrame())
    candidates = root / CANDIDATES
    return Study(
        results=results,
        parts=published(results_dir),
        candidates=pd.read_csv(candidates) if candidates.is_file() else pd.DataFrame(),
        datasets=tuple(DATASETS),
    )


# --- helpers ----------------------------------------------------------------------------------------


def missing(part: str, datasets) -> str:
    """The sentence a block holds where results/ lacks ``part`` of ``datasets``."""
    commands = "; ".join(f"`{recompute_command(part, d)}`" for d in datasets)
    return f"The `{part}` part of {', '.join(datasets)} is not in results/ yet; it is computed by {commands}."


def _of(table: pd.DataFrame, dataset: str) -> pd.DataFrame:
    return table[table["dataset"] == dataset] if len(table) else table


def _held(table: pd.DataFrame, part: str, schema: str, dataset: str) -> pd.DataFrame:
    """The rows of ``table`` that ``part`` computed for ``dataset``."""
    table = _of(table, dataset)
    return table[part_rows(part, schema, table)] if len(table) else table


def _mean_ci(mean: float, ci: float) -> str:
    return f"{mean:.2f}" if np.isnan(ci) else f"{mean:.2f} ± {ci:.2f}"


def _seeds(table: pd.DataFrame) -> str:
    seeds = sorted(int(s) for s in table["seed"].unique())
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"mean over seeds {', '.join(map(str, seeds))}"


# --- the sweep (docs/benchmarks.md) -----------------------------------------------------------------

WEIGHT_KS = (90, 95, 97, 99)
UNIT_KS = (70, 80, 90, 95, 97)
SWEEP_ROWS = (  # label, the sweep's rows, the method of its weight columns, of its unit columns
    ("one-shot", "none", "weight", "unit"),
    ("one-shot + lstsq", "lstsq", "weight", "unit"),
    ("best post-training method (`prunelib.core.best`)", "best", "weight", "unit"),
    ("global magnitude (`global-weight`), one-shot", "none", "global-weight", None),
    ("dense of unit pruning's sizes from scratch (`retrain-small`)", "none", None, "retrain-small"),
)


def _summaries(sweep: pd.DataFrame) -> dict[str, pd.DataFrame]:
    out = {"none": summary_table(challenge_rows(sweep))}
    if len(lstsq_rows(sweep)):
        out["lstsq"] = summary_table(lstsq_rows(sweep))
    if len(best_rows(sweep)):
        out["best"] = summary_table(best_rows(sweep))
    return {c: s.set_index(["method", "k"]) for c, s in out.items()}


def sweep_block(study: Study) -> str:
    """Per dataset: mean ± 95 % CI at the headline points, one-shot, + lstsq and the two baselines."""
    sweep = study.results.sweep
    lines: list[str] = []
    for d in study.datasets:
        df = _held(sweep, "challenge", "sweep", d)
        if df.empty:
            lines += [missing("challenge", [d]), ""]
            continue
        sums = _summaries(pd.concat([df, _held(sweep, "retrain-small", "sweep", d)]))
        seeds = df["seed"].nunique()
        columns = ["dense", *(f"weight {k}" for k in WEIGHT_KS), *(f"unit {k}" for k in UNIT_KS)]
        lines += [
            f"| {d}, test accuracy (%), mean ± 95 % CI over {seeds} seeds | " + " | ".join(columns) + " |",
            "|---|" + "---:|" * len(columns),
        ]
        for label, correction, weight, unit in SWEEP_ROWS:
            s = sums.get(correction)
            cells = []
            for method, k in [(weight or unit, 0), *((weight, k) for k in WEIGHT_KS), *((unit, k) for k in UNIT_KS)]:
                key = (method, float(k))
                cells.append(
                    _mean_ci(s.loc[key, "accuracy"], s.loc[key, "ci95"]) if s is not None and key in s.index else ""
                )
            if any(cells):
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        one = sums["none"]
        lines += [
            "",
            "Measured sparsity (all kernels, logits included; mean over seeds): weight "
            f"{' / '.join(f'{k:g}' for k in WEIGHT_KS)}: "
            + " / ".join(f"{one.loc[('weight', float(k)), 'sparsity']:.2f}" for k in WEIGHT_KS)
            + " %; unit "
            + f"{' / '.join(f'{k:g}' for k in UNIT_KS)}: "
            + " / ".join(f"{one.loc[('unit', float(k)), 'sparsity']:.2f}" for k in UNIT_KS)
            + " %.",
            "",
        ]
    return "\n".join(lines).rstrip()


SWEEP_GOALS = (  # the recipe-and-reconstruction issue's goals: (what, dataset, rows, ((method, k, at least), ...))
    ("dense", "mnist", "none", (("weight", 0, 98.4),)),
    (
        "one-shot weight",
        "mnist",
        "none",
        (("weight", 90, 97.5), ("weight", 95, 94.0), ("weight", 97, 80), ("weight", 99, 35)),
    ),
    ("one-shot unit", "mnist", "none", (("unit", 70, 97.5), ("unit", 80, 91), ("unit", 90, 60))),
    ("lstsq weight", "mnist", "lstsq", (("weight", 95, 98.0), ("weight", 97, 97.0), ("weight", 99, 85))),
    ("lstsq unit", "mnist", "lstsq", (("unit", 80, 97.5), ("unit", 90, 85))),
    ("one-shot weight / unit", "fashion-mnist", "none", (("weight", 90, 83), ("unit", 90, 40))),
    ("lstsq weight / unit", "fashion-mnist", "lstsq", (("weight", 95, 88), ("unit", 80, 80))),
    # the results issue's goals for unit pruning with a re-fit: + lstsq, and the best post-training method
    ("lstsq unit (results issue)", "mnist", "lstsq", (("unit", 95, 85), ("unit", 97, 70))),
    ("best unit (results issue)", "mnist", "best", (("unit", 95, 85), ("unit", 97, 70))),
    ("lstsq unit (results issue)", "fashion-mnist", "lstsq", (("unit", 95, 70),)),
    ("best unit (results issue)", "fashion-mnist", "best", (("unit", 95, 70),)),
)
LSTSQ_SECONDS_GOAL = 5.0
"""The same issue's goal for the least-squares correction: seconds per (method, k), calibration included."""


def _verdict(misses: list[str]) -> str:
    return "met" if not misses else "missed: " + "; ".join(misses)


def sweep_goals_block(study: Study) -> str:
    """The recipe-and-reconstruction issue's goals against the sweep's means over seeds."""
    sweep = study.results.sweep
    lines = ["| goal | dataset | k | at least (%) | measured (%) | |", "|---|---|---|---:|---:|---|"]
    absent = []
    for what, d, correction, points in SWEEP_GOALS:
        df = _held(sweep, "challenge", "sweep", d)
        if df.empty:
            absent.append(d)
            continue
        s = _summaries(df).get(correction)
        if s is None:  # a correction the committed sweep does not hold
            lines.append(f"| {what} | {d} | | | | not in results/ |")
            continue
        if any((m, float(k)) not in s.index for m, k, _ in points):  # a k the committed rows do not hold
            lines.append(f"| {what} | {d} | | | | not in results/ |")
            continue
        got = [s.loc[(m, float(k)), "accuracy"] for m, k, _ in points]
        misses = [f"{m} {k:g} by {goal - g:.2f}" for (m, k, goal), g in zip(points, got) if g < goal]
        lines.append(
            f"| {what} | {d} | {' / '.join(f'{k:g}' for _, k, _ in points)} "
            f"| {' / '.join(f'{goal:g}' for *_, goal in points)} | {' / '.join(f'{g:.2f}' for g in got)} "
            f"| {_verdict(misses)} |"
        )
    df = lstsq_rows(_held(sweep, "challenge", "sweep", "mnist"))
    if len(df):
        seconds = df.groupby(["method", "k"])["seconds"].mean()
        over = int((seconds > LSTSQ_SECONDS_GOAL).sum())
        worst = seconds.idxmax()
        lines.append(
            f"| lstsq seconds per (method, k), calibration included (mean over seeds) | mnist | every k "
            f"| ≤ {LSTSQ_SECONDS_GOAL:g} s | at most {seconds.max():.1f} s ({worst[0]} {worst[1]:g}) "
            f"| {_verdict([f'over at {over} of {len(seconds)} (method, k)'] if over else [])} |"
        )
    lines = lines if len(lines) > 2 else []
    if absent:
        lines += ["", missing("challenge", sorted(set(absent), key=study.datasets.index))]
    return "\n".join(lines).strip()


def lstsq_seconds_block(study: Study) -> str:
    """Seconds of the least-squares correction per (method, k), mean over seeds, both datasets."""
    frames, absent = [], []
    for d in study.datasets:
        df = _held(study.results.sweep, "challenge", "sweep", d)
        if len(lstsq_rows(df)) == 0:
            absent.append(d)
            continue
        t = lstsq_seconds(df).set_index("k (%)")
        frames.append(t.rename(columns={c: f"{d} {c} (s)" for c in t.columns}))
    lines = []
    if frames:
        table = pd.concat(frames, axis=1).reset_index()
        seeds = study.results.sweep["seed"].nunique()
        lines = [
            f"Mean over {seeds} seeds, forward passes over the calibration images included, as the challenge part "
            "measured them (its machine and command are under [run time](#run-time-of-the-full-study)):",
            "",
            markdown_table(table),
        ]
    if absent:
        lines += ["", missing("challenge", absent)]
    return "\n".join(lines).strip()


# --- least squares against fine-tuning (docs/least-squares.md) --------------------------------------


def lstsq_vs_finetune_block(study: Study) -> str:
    lines: list[str] = []
    for d in study.datasets:
        sweep = _held(study.results.sweep, "challenge", "sweep", d)
        rec = _held(study.results.recovery, "recovery", "recovery", d)
        if sweep.empty or rec.empty:
            lines += [missing("challenge" if sweep.empty else "recovery", [d]), ""]
            continue
        table = lstsq_vs_finetune(sweep, rec)
        tuned = rec[rec["strategy"] == "finetune"]
        lines += [f"{d}, {_seeds(tuned)} (accuracy %, seconds):", "", markdown_table(table), ""]
    return "\n".join(lines).rstrip()


# --- recovery (docs/recovery.md, docs/benchmarks.md) ------------------------------------------------


def recovery_block(study: Study) -> str:
    """Per dataset: accuracy per (method, k) and strategy (REPORT.md's recovery table), dense beside it."""
    table = study.results.recovery
    lines: list[str] = []
    for d in study.datasets:
        rec = _held(table, "recovery", "recovery", d)
        aware = _held(table, "aware", "recovery", d)
        if rec.empty and aware.empty:
            lines += [missing("recovery", [d]), missing("aware", [d]), ""]
            continue
        both = pd.concat([rec, aware])
        dense = rec["dense_accuracy"].mean() if len(rec) else np.nan
        head = f"{d}, {_seeds(both)}" + (
            "" if np.isnan(dense) else f"; the dense network before pruning: {dense:.2f} %"
        )
        lines += [f"{head}:", "", markdown_table(recovery_summary(both)), ""]
        for part, rows in (("recovery", rec), ("aware", aware)):
            if rows.empty:
                lines += [missing(part, [d]), ""]
    return "\n".join(lines).rstrip()


RECOVERY_GOALS = (  # earlier goals for recovery, MNIST: (method, k, at least %, epochs at most, the strategies)
    ("weight", 95, 98.5, 2, "recovery"),
    ("weight", 99, 98.0, 2, "recovery"),
    ("unit", 95, 97.0, 2, "recovery"),
    ("weight", 95, 98.0, None, "aware"),
    ("weight", 97, 97.5, None, "aware"),
    ("unit", 80, 97.5, None, "aware"),
    ("unit", 90, 95.0, None, "aware"),
)


def _best(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "-"
    best = rows.loc[rows["accuracy"].idxmax()]
    return f"{best['accuracy']:.2f} ({best['strategy']}, {int(best['epochs'])} ep.)"


def recovery_goals_block(study: Study, dataset: str = "mnist") -> str:
    """Earlier goals for recovery against ``dataset``'s recovery table (seed 0 by default)."""
    table = study.results.recovery
    held = {p: _held(table, p, "recovery", dataset) for p in ("recovery", "aware")}
    lines = [
        f"| {dataset} | at least (%) | within | best within the epochs | best of any strategy | |",
        "|---|---:|---|---:|---:|---|",
    ]
    for method, k, goal, epochs, part in RECOVERY_GOALS:
        rows = held[part]
        label = "targeted dropout, then one-shot" if part == "aware" else "pruned, then recovered"
        within = "any epochs" if epochs is None else f"≤ {epochs} epochs"
        if rows.empty:
            lines.append(f"| {label}: {method} {k:g} | {goal:g} | {within} | | | `{part}` not in results/ yet |")
            continue
        rows = rows[(rows["method"] == method) & (rows["k"] == k)]
        fits = rows if epochs is None else rows[rows["epochs"] <= epochs]
        met = len(fits) and fits["accuracy"].max() >= goal
        lines.append(
            f"| {label}: {method} {k:g} | {goal:g} | {within} | {_best(fits)} | {_best(rows)} "
            f"| {'met' if met else 'missed'} |"
        )
    for part, rows in held.items():
        if rows.empty:
            lines += ["", missing(part, [dataset])]
    return "\n".join(lines)


# --- the recipe study (docs/least-squares.md) -------------------------------------------------------

DENSE_GOAL = 89.5
"""Issue 22's dense accuracy for Fashion-MNIST's chosen recipe (with an area at least the default's)."""


def _recipe_line(summary: pd.DataFrame, dataset: str, default: str) -> str:
    chosen = choose(summary, dataset=dataset, max_steps=MAX_STEPS)
    s = summary.set_index("recipe")

    def facts(name: str) -> str:
        return f"dense {s.loc[name, 'dense_accuracy']:.2f} %, area {s.loc[name, 'area']:.1f}"

    line = f"On {dataset} the rule picks `{chosen}` ({facts(chosen)})"
    if chosen == default:
        return line + ", the default `Recipe()`."
    if default in s.index:
        return line + f"; the default `Recipe()`, `{default}`: {facts(default)}."
    return line + f"; the default `Recipe()`, `{default}`, is not among {dataset}'s recipes."


def _issue_22(summary: pd.DataFrame, candidates: pd.DataFrame, default: str) -> str:
    """Which recipes of the study and of the candidates meet each half of issue 22's goal."""
    d = "fashion-mnist"
    rows = summary[summary["dataset"] == d]
    if default not in set(rows["recipe"]):
        return ""
    area = rows.loc[rows["recipe"] == default, "area"].iloc[0]
    if len(candidates):
        rows = pd.concat([rows, summarize(candidates[candidates["dataset"] == d])], ignore_index=True)
    rows = rows.drop_duplicates("recipe")

    def named(part: pd.DataFrame) -> str:
        return (
            ", ".join(f"`{r.recipe}` (dense {r.dense_accuracy:.2f} %, area {r.area:.1f})" for r in part.itertuples())
            or "none"
        )

    dense, prunable = rows["dense_accuracy"] >= DENSE_GOAL, rows["area"] >= area
    source = f"the study's {d} recipes" + (f" and those of `{CANDIDATES.as_posix()}`" if len(candidates) else "")
    return (
        f"Issue 22's goal on {d}, dense ≥ {DENSE_GOAL:g} % and an area at least the default's ({area:.1f}), "
        f"among {source}: dense ≥ {DENSE_GOAL:g} %: {named(rows[dense])}; area ≥ {area:.1f}: "
        f"{named(rows[prunable])}; both: {named(rows[dense & prunable])}."
    )


def recipes_block(study: Study) -> str:
    """Per dataset of the recipe study: REPORT.md's recipe table, the recipe the rule picks, issue 22's goal."""
    from prunelib.models.config import DEFAULT_RECIPE
    from prunelib.study.config import RECIPE_STUDY

    curves, layers = study.results.recipes, study.results.recipe_layers
    lines: list[str] = []
    absent = []
    for d in (d for d in study.datasets if d in RECIPE_STUDY):
        mine = _of(curves, d)
        if mine.empty or _of(layers, d).empty:
            absent.append(d)
            continue
        summary = summarize(mine)
        lines += [
            f"{d}, {_seeds(mine)} (one-shot accuracy %; area = mean over k = 70 … 99 of both methods):",
            "",
            markdown_table(recipe_summary(mine, _of(layers, d))),
            "",
            _recipe_line(summary, d, DEFAULT_RECIPE),
            "",
        ]
        if d == "fashion-mnist":
            lines += [_issue_22(summary, study.candidates, DEFAULT_RECIPE), ""]
    if absent:
        lines += [missing("recipes", absent)]
    return "\n".join(lines).strip()


# --- run time per part (docs/benchmarks.md) ---------------------------------------------------------


def _machine(machine: dict) -> str:
    if not isinstance(machine, dict):
        return ""
    isa = machine.get("isa") or []
    level = "AVX512-BF16" if "avx512_bf16" in isa else "AVX2" if "avx2" in isa else ""
    return ", ".join(str(x) for x in (machine.get("cpu"), f"{machine.get('cpus')} CPUs", level) if x)


def run_times_block(study: Study) -> str:
    """Each run's wall-clock seconds, command, commit and machine, as the manifest records them, with
    the parts and datasets it published (one row per run: a run that computed several parts at once
    has no seconds of each part, so its seconds are not repeated as if it had)."""
    from prunelib.study.parts import datasets_of
    from prunelib.study.registry import PARTS

    lines = ["| parts | datasets | seconds | command | commit | machine |", "|---|---|---:|---|---|---|"]
    absent = []
    runs: dict[tuple, dict[str, list[str]]] = {}
    for part in PARTS:
        for d in datasets_of(part, study.datasets):
            entry = study.parts.get(entry_name(part, d))
            if entry is None:
                absent.append((part, d))
                continue
            key = (entry.get("seconds"), entry.get("command"), entry.get("commit"), _machine(entry.get("machine")))
            runs.setdefault(key, {}).setdefault(part, []).append(d)
    for (seconds, command, commit, machine), parts in runs.items():
        secs = "" if seconds is None else f"{seconds:,.0f}"
        datasets = list(dict.fromkeys(d for ds in parts.values() for d in ds))
        lines.append(
            f"| {', '.join(parts)} | {', '.join(datasets)} | {secs} | `{command}` | `{str(commit)[:7]}` | {machine} |"
        )
    for part in dict.fromkeys(p for p, _ in absent):
        lines += ["", missing(part, [d for p, d in absent if p == part])]
    return "\n".join(lines)


BLOCKS: dict[str, tuple[str, Callable[[Study], str]]] = {
    "study-sweep": ("docs/benchmarks.md", sweep_block),
    "study-sweep-goals": ("docs/benchmarks.md", sweep_goals_block),
    "study-lstsq-seconds": ("docs/benchmarks.md", lstsq_seconds_block),
    "study-recovery-goals": ("docs/benchmarks.md", recovery_goals_block),
    "study-run-times": ("docs/benchmarks.md", run_times_block),
    "study-recovery": ("docs/recovery.md", recovery_block),
    "study-recipes": ("docs/least-squares.md", recipes_block),
    "study-lstsq-vs-finetune": ("docs/least-squares.md", lstsq_vs_finetune_block),
}
"""Block name -> (the page that holds it, the function that writes it from the study)."""


def render(study: Study) -> dict[str, tuple[str, str]]:
    """Every block: name -> (page, text)."""
    return {name: (page, block(study)) for name, (page, block) in BLOCKS.items()}


def stale(root: Path = ROOT, study: Study | None = None) -> list[str]:
    """The blocks whose page does not hold what :func:`render` writes (``page: name``)."""
    blocks = render(study or load(root))
    return [
        f"{page}: {name}"
        for name, (page, text) in blocks.items()
        if not _docs.quoted((root / page).read_text(), name, text)
    ]


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each stale block")
    args = parser.parse_args(argv)
    study = load(root)
    if args.check:
        behind = stale(root, study)
        for line in behind:
            print(f"stale: {line} (run python benchmarks/study_docs.py)")
        return 1 if behind else 0
    for name, (page, text) in render(study).items():
        _docs.write(root / page, name, text)
        print(f"{page}: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
