"""The written report, regenerated from the result tables so every number in it stays true.

One list of blocks (headings, paragraphs, tables, figures) renders to ``REPORT.md`` and to
``report.docx`` (the challenge asks for a Word document), so the two never disagree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from prunelib.reporting import figures
from prunelib.reporting.stats import ci95, summary_table
from prunelib.base.strategies import STRATEGIES

Block = tuple  # ("h", level, text) | ("p", markdown) | ("table", DataFrame) | ("img", path, caption)


def challenge_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the challenge's own one-shot pruning (no correction of the survivors)."""
    return df[df["correction"] == "none"] if "correction" in df else df


def lstsq_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows whose survivors were re-fitted by least squares (empty if there are none)."""
    return df[df["correction"] == "lstsq"] if "correction" in df else df.iloc[:0]


def _acc(df: pd.DataFrame, method: str, k: float, column: str = "accuracy") -> float:
    return float(df.loc[(df["method"] == method) & (df["k"] == k), column].mean())


def _ci(df: pd.DataFrame, method: str, k: float) -> float:
    return ci95(df.loc[(df["method"] == method) & (df["k"] == k), "accuracy"])


def largest_safe_sparsity(df: pd.DataFrame, method: str, tolerance: float = 1.0) -> float:
    """Largest measured sparsity (%) at which ``method`` stays within ``tolerance`` points of dense.

    Only the prefix of k values is considered: once a k falls out, larger ones don't count.
    """
    part = summary_table(df[df["method"] == method]).sort_values("k")
    dense = _acc(df, method, 0)
    safe = 0.0
    for _, row in part.iterrows():
        if row["accuracy"] < dense - tolerance:
            break
        safe = row["sparsity"]
    return float(safe)


def facts(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Numbers the discussion quotes, per dataset (means over seeds, 95 % CI half-widths)."""
    out = {}
    for dataset, full in table.groupby("dataset", sort=False):
        df, fixed = challenge_rows(full), lstsq_rows(full)
        f = {"dense": _acc(df, "weight", 0), "dense_ci": _ci(df, "weight", 0),
             "seeds": int(df["seed"].nunique())}
        for method in ("weight", "unit", "global-weight", "retrain-small"):
            if method not in set(df["method"]):
                continue
            f[f"{method}_safe"] = largest_safe_sparsity(df, method)
            for k in (50, 80, 90, 95, 99):
                f[f"{method}_{k}"] = _acc(df, method, k)
                f[f"{method}_{k}_ci"] = _ci(df, method, k)
                f[f"{method}_{k}_sparsity"] = _acc(df, method, k, "sparsity")
                f[f"{method}_{k}_norm"] = _acc(df, method, k, "norm_kept") if "norm_kept" in df else np.nan
                if method in set(fixed["method"]):
                    f[f"lstsq_{method}_{k}"] = _acc(fixed, method, k)
                    f[f"lstsq_{method}_{k}_ci"] = _ci(fixed, method, k)
                    f[f"lstsq_{method}_{k}_seconds"] = _acc(fixed, method, k, "seconds")
        out[str(dataset)] = f
    return out


def _pm(f: dict, key: str) -> str:
    ci = f.get(f"{key}_ci", np.nan)
    return f"{f[key]:.2f} %" if np.isnan(ci) else f"{f[key]:.2f} ± {ci:.2f} %"


def _recovered(recovery: pd.DataFrame | None, dataset: str, method: str, k: float, strategy: str) -> float:
    if recovery is None or recovery.empty:
        return float("nan")
    sel = recovery[(recovery["dataset"] == dataset) & (recovery["method"] == method)
                   & (recovery["k"] == k) & (recovery["strategy"] == strategy)]
    return float(sel["accuracy"].mean()) if len(sel) else float("nan")


def _unit_safe(m: dict) -> str:
    if m["unit_safe"] > 0:
        return f"stays within a point only up to {m['unit_safe']:.0f} %"
    return "loses more than a point already at k = 25,"


def recipe_facts(curves: pd.DataFrame, layers: pd.DataFrame, dataset: str = "mnist") -> dict:
    """Numbers the discussion quotes about the recipe study: the first version's recipe against
    the chosen default, on ``dataset`` (empty if the study did not run there)."""
    from prunelib.models.config import DEFAULT_RECIPE, FIRST_RECIPE

    out = {}
    for tag, name in (("old", FIRST_RECIPE), ("new", DEFAULT_RECIPE)):
        c = curves[(curves["dataset"] == dataset) & (curves["recipe"] == name)]
        lay = layers[(layers["dataset"] == dataset) & (layers["recipe"] == name)]
        if c.empty or lay.empty:
            return {}
        out[f"{tag}_name"] = name
        out[f"{tag}_drift"] = float(lay["drift"].mean())
        out[f"{tag}_top10"] = float(lay["top10_weight_share"].mean())
        out[f"{tag}_top10_units"] = float(lay["top10_unit_share"].mean())
        out[f"{tag}_steps"] = (int(c["epochs"].iloc[0]), int(c["batch_size"].iloc[0]))
        out[f"{tag}_decay"] = float(c["weight_decay"].iloc[0])
        for method, k in (("weight", 95), ("unit", 80)):
            out[f"{tag}_{method}_{k}"] = _acc(c, method, k)
    return out


def discussion(results) -> str:
    """The ~200-word discussion, in markdown, with every number taken from the tables.

    Args:
        results: a :class:`prunelib.reporting.results.Results`; the recipe study and recovery tables add
            their evidence when present.
    """
    fx = facts(results.sweep)
    m = fx.get("mnist") or next(iter(fx.values()))
    f = fx.get("fashion-mnist", m)
    seeds = f"mean ± 95 % CI over {m['seeds']} seeds" if m["seeds"] > 1 else "one seed"
    text = f"""\
**Do the curves differ?** Yes ({seeds}). On MNIST (dense {_pm(m, 'dense')}) weight pruning stays
within a point of dense up to {m['weight_safe']:.0f} % measured sparsity ({_pm(m, 'weight_95')} at
k = 95); unit pruning only to {m['unit_safe']:.0f} % ({_pm(m, 'unit_90')} at k = 90). Fashion-MNIST
(dense {_pm(f, 'dense')}) agrees: {_pm(f, 'weight_90')} against {_pm(f, 'unit_90')} at k = 90.

**Why?** Weight pruning drops the least important weights wherever they sit; unit pruning drops
whole columns, and each removed unit also silences a row of the next layer."""
    if not np.isnan(m.get("weight_90_norm", np.nan)):
        text += f""" At k = 90 the kept weights hold {m['weight_90_norm']:.0f} % of the squared norm,
the kept units {m['unit_90_norm']:.0f} %."""
    r = recipe_facts(results.recipes, results.recipe_layers) if not results.recipes.empty else {}
    if r:
        text += f"""

**The recipe decides how much can go** (seed 0). With the first version's `{r['old_name']}` the top
10 % of weights held {r['old_top10']:.0f} % of the squared norm, and one-shot weight 95 gave
{r['old_weight_95']:.1f} %. The chosen `{r['new_name']}` {'takes as many steps' if r['new_steps'] == r['old_steps'] else 'trains differently'}{
", but its weight decay pulls weights the loss does not need toward zero" if r['new_decay'] > 0 else ""}:
{r['new_top10']:.0f} % of the norm sits in the top 10 %, and weight 95 keeps {r['new_weight_95']:.1f} %."""
    text += """

**Why can so much be deleted?** 2.4 M weights for 60,000 images is far more than the task needs."""
    if "retrain-small_90" in m:
        text += f""" Networks of unit pruning's k = 90 sizes trained from scratch reach
{_pm(m, 'retrain-small_90')}."""
    if "lstsq_weight_99" in m:
        text += f""" Without any gradient step, re-fitting the survivors by least squares on
calibration images lifts weight 99 to {_pm(m, 'lstsq_weight_99')} and unit 90 to
{_pm(m, 'lstsq_unit_90')}: what one-shot pruning loses is mostly the survivors' calibration,
not capacity."""
    return text + "\n"


def _fmt(mean: float, ci: float) -> str:
    return f"{mean:.2f}" if np.isnan(ci) else f"{mean:.2f} ± {ci:.2f}"


def sweep_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per k: measured sparsity of weight and unit pruning and accuracy (mean ± 95 % CI) per method."""
    fixed = summary_table(lstsq_rows(df)).set_index(["method", "k"]) if len(lstsq_rows(df)) else None
    df = challenge_rows(df)
    summary = summary_table(df).set_index(["method", "k"])
    rows = []
    methods = [m for m in ("weight", "unit", "global-weight", "retrain-small") if m in set(df["method"])]
    for k in sorted(df["k"].unique()):
        row = {"k (%)": f"{k:g}"}
        for method in methods:
            s = summary.loc[(method, k)] if (method, k) in summary.index else None
            if method in ("weight", "unit"):
                row[f"{method} sparsity (%)"] = f"{s['sparsity'] if s is not None else np.nan:.2f}"
            row[f"{method} acc. (%)"] = _fmt(s["accuracy"], s["ci95"]) if s is not None else ""
            if fixed is not None and (method, k) in fixed.index:
                r = fixed.loc[(method, k)]
                row[f"{method} + lstsq (%)"] = _fmt(r["accuracy"], r["ci95"])
        rows.append(row)
    return pd.DataFrame(rows)


STRATEGY_ORDER = tuple(STRATEGIES)


def recovery_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per (method, k) for each strategy, with its epochs; unpruned start in brackets."""
    rows = []
    order = {s: i for i, s in enumerate(STRATEGY_ORDER)}
    for (method, k), part in df.groupby(["method", "k"], sort=True):
        row = {"method": method, "k (%)": f"{k:g}"}
        for strategy, s in sorted(part.groupby("strategy"), key=lambda g: order.get(g[0], 99)):
            label = f"{strategy} ({int(s['epochs'].iloc[0])} ep.)"
            row[label] = f"{s['accuracy'].mean():.2f}"
            if strategy == "targeted-dropout":
                row[label] += f" [{s['dense_accuracy'].mean():.2f}]"
        rows.append(row)
    table = pd.DataFrame(rows).fillna("")
    strategies = sorted(table.columns[2:], key=lambda c: order.get(c.split(" (")[0], 99))
    return table[["method", "k (%)", *strategies]]


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of ``df`` (values as they are)."""
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---:" for _ in df.columns) + "|"
    body = ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def recipe_summary(curves: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """Per recipe: dense accuracy, training time, one-shot accuracy at a few k, the areas, and the
    mean drift and norm concentration over the hidden layers."""
    from prunelib.reporting.recipe_summary import summarize

    summary = summarize(curves).set_index("recipe")
    pivot = curves.pivot_table(index="recipe", columns=["method", "k"], values="accuracy")
    diag = layers.groupby("recipe")[["drift", "top10_weight_share", "top10_unit_share"]].mean()
    rows = []
    for recipe in summary.index:
        s = summary.loc[recipe]
        rows.append({"recipe": recipe, "dense (%)": f"{s['dense_accuracy']:.2f}",
                     "train (s)": f"{s['train_seconds']:.0f}",
                     **{f"{m} {k:g}": f"{pivot.loc[recipe, (m, float(k))]:.1f}"
                        for m, ks in (("weight", (90, 95, 97, 99)), ("unit", (70, 80, 90)))
                        for k in ks if (m, float(k)) in pivot.columns},
                     "area": f"{s['area']:.1f}", "drift": f"{diag.loc[recipe, 'drift']:.2f}",
                     "top-10 % weights (%)": f"{diag.loc[recipe, 'top10_weight_share']:.0f}",
                     "top-10 % units (%)": f"{diag.loc[recipe, 'top10_unit_share']:.0f}"})
    return pd.DataFrame(rows)


def lstsq_seconds(df: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds of the least-squares correction per (method, k), calibration included."""
    fixed = lstsq_rows(df)
    table = fixed.pivot_table(index="k", columns="method", values="seconds", aggfunc="mean")
    return table.map(lambda v: f"{v:.2f}").rename_axis(None, axis=1).reset_index().rename(
        columns={"k": "k (%)"}).assign(**{"k (%)": lambda t: t["k (%)"].map(lambda k: f"{k:g}")})


def lstsq_vs_finetune(sweep: pd.DataFrame, recovery: pd.DataFrame) -> pd.DataFrame:
    """Closed-form correction against fine-tuning with the mask fixed, on the seeds and k that
    recovery ran: accuracy (%) and seconds of each."""
    rows = []
    fixed = lstsq_rows(sweep)
    tuned = recovery[recovery["strategy"] == "finetune"]
    for (method, k), part in tuned.groupby(["method", "k"], sort=True):
        seeds = set(part["seed"])
        ls = fixed[(fixed["method"] == method) & (fixed["k"] == k) & fixed["seed"].isin(seeds)]
        if ls.empty:
            continue
        one = challenge_rows(sweep)
        one = one[(one["method"] == method) & (one["k"] == k) & one["seed"].isin(seeds)]
        rows.append({"method": method, "k (%)": f"{k:g}", "one-shot": f"{one['accuracy'].mean():.2f}",
                     "lstsq": f"{ls['accuracy'].mean():.2f}", "lstsq (s)": f"{ls['seconds'].mean():.1f}",
                     f"fine-tune ({int(part['epochs'].iloc[0])} ep.)": f"{part['accuracy'].mean():.2f}",
                     "fine-tune (s)": f"{part['seconds'].mean():.0f}"})
    return pd.DataFrame(rows)


def blocks(results, results_dir: Path) -> list[Block]:
    """The report's content, in order, from a :class:`prunelib.reporting.results.Results`."""
    out: list[Block] = [
        ("h", 1, "Pruning challenge: results"),
        ("p", "Generated by `python -m prunelib report` from the tables under `results/` "
              "(reproduce everything: `python -m prunelib run`; `results/manifest.json` records the "
              "code and versions that produced them). Sparsity is measured: the percent of all "
              "kernel weights, logit layer included, that are zero. Accuracy is on the 10,000 test "
              "images; ± is the 95 % t confidence interval over seeds. `+ lstsq` keeps the same "
              "masks and re-fits the surviving weights in closed form, no gradient step."),
    ]
    for dataset, df in results.sweep.groupby("dataset", sort=False):
        d = Path(str(dataset))
        out += [("h", 2, str(dataset)),
                ("p", f"One-shot pruning of the trained network, {df['seed'].nunique()} seed(s). "
                      "`global-weight` pools all hidden weights before choosing; `retrain-small` "
                      "trains dense networks with unit pruning's surviving unit counts from scratch "
                      "(its sparsity counts the missing weights as zeros)."),
                ("table", sweep_summary(df))]
        if len(lstsq_rows(df)):
            out += [("p", "Seconds of the least-squares correction per (method, k), forward passes "
                          "over the calibration images included (mean over seeds, 2 CPU cores):"),
                    ("table", lstsq_seconds(df))]
        if not results.recipes.empty and dataset in set(results.recipes["dataset"]):
            out += [("p", "Recipe study (seed 0): one-shot accuracy (%) of a model trained with each "
                          "recipe; area = mean accuracy over k = 70 ... 99 of both methods; drift = "
                          "||W - W0|| / ||W0|| and the share of the squared norm in the top 10 % of "
                          "weights and of units, averaged over the hidden layers."),
                    ("table", recipe_summary(results.recipes[results.recipes["dataset"] == dataset],
                                             results.recipe_layers[results.recipe_layers["dataset"] == dataset]))]
        for name, caption in figures.CAPTIONS.items():
            if (results_dir / d / name).is_file():
                out.append(("img", d / name, f"{dataset}: {caption}"))
        if not results.recovery.empty and dataset in set(results.recovery["dataset"]):
            rec = results.recovery[results.recovery["dataset"] == dataset]
            out += [("p", "Recovery (accuracy %, training epochs in brackets; targeted dropout is "
                          "pruned one-shot after training with it, its unpruned accuracy in square "
                          "brackets):"),
                    ("table", recovery_summary(rec))]
            versus = lstsq_vs_finetune(df, rec)
            if not versus.empty:
                out += [("p", "Least-squares correction (no gradient step) against fine-tuning with "
                              "the mask fixed, same seed(s); seconds on 2 CPU cores:"),
                        ("table", versus)]
    out += [("h", 2, "Discussion"), ("p", discussion(results))]
    times = results_dir / "run_times.csv"
    if times.is_file():
        out += [("h", 2, "Run time"),
                ("p", "Wall-clock seconds of each `python -m prunelib run` into this directory "
                      "(2 CPU cores; a re-run reads cached models and tables)."),
                ("table", pd.read_csv(times).astype(object).fillna(""))]
    return out


def _markdown(blocks_: list[Block]) -> str:
    parts = []
    for block in blocks_:
        kind = block[0]
        if kind == "h":
            parts.append("#" * block[1] + " " + block[2])
        elif kind == "p":
            parts.append(block[1].strip())
        elif kind == "table":
            parts.append(markdown_table(block[1]))
        elif kind == "img":
            parts.append(f"![{block[2]}]({block[1].as_posix()})")
    return "\n\n".join(parts) + "\n"


def _docx(blocks_: list[Block], results_dir: Path, path: Path) -> None:
    import docx
    from docx.shared import Inches, Pt

    doc = docx.Document()
    doc.styles["Normal"].font.size = Pt(10)
    for block in blocks_:
        kind = block[0]
        if kind == "h":
            doc.add_heading(block[2], level=block[1] - 1 if block[1] > 1 else 0)
        elif kind == "p":
            for para in re.split(r"\n\s*\n", block[1].strip()):
                p = doc.add_paragraph()
                # **bold** and `code` spans of the markdown become bold and monospace runs
                for piece in re.split(r"(\*\*[^*]+\*\*|`[^`]+`)", " ".join(para.split())):
                    if piece.startswith("**"):
                        p.add_run(piece[2:-2]).bold = True
                    elif piece.startswith("`"):
                        p.add_run(piece[1:-1]).font.name = "Courier New"
                    elif piece:
                        p.add_run(piece)
        elif kind == "table":
            df = block[1]
            table = doc.add_table(rows=1, cols=len(df.columns))
            table.style = "Light Grid Accent 1"
            for cell, name in zip(table.rows[0].cells, df.columns):
                cell.text = str(name)
            for row in df.itertuples(index=False):
                for cell, value in zip(table.add_row().cells, row):
                    cell.text = str(value)
        elif kind == "img":
            doc.add_picture(str(results_dir / block[1]), width=Inches(6.3))
            doc.add_paragraph(block[2]).italic = True
    doc.save(path)


def write_report(results, results_dir: str | os.PathLike = "results") -> list[Path]:
    """Write ``<results>/REPORT.md`` and ``<results>/report.docx`` from ``results``' tables.

    Both are rendered to temporary files first and only then moved into place, so a failure
    (a damaged figure, say) leaves the previous pair untouched and the two never disagree.
    """
    from prunelib.base.paths import atomic_write

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    content = blocks(results, results_dir)
    md, doc = results_dir / "REPORT.md", results_dir / "report.docx"
    staged = results_dir / f".report.{os.getpid()}.docx"
    try:
        try:
            _docx(content, results_dir, staged)
        except Exception as err:  # python-docx / PIL raise many types for a bad image
            raise ValueError(f"cannot build {doc} ({type(err).__name__}: {err}); a figure under "
                             f"{results_dir} may be damaged: re-run `python -m prunelib run`") from err
        atomic_write(md, lambda tmp: tmp.write_text(_markdown(content)))
        os.chmod(staged, 0o644)
        os.replace(staged, doc)
    finally:
        if staged.exists():
            staged.unlink()
    return [md, doc]


def save_run_times(seconds: dict[str, float], total: float, command: str,
                   results_dir: str | os.PathLike = "results") -> Path:
    """Append the last run's wall-clock seconds per phase to ``<results>/run_times.csv``.

    One row per run (a fresh run and a cached re-run both stay on record).
    """
    import datetime

    row = {"finished": datetime.datetime.now().isoformat(timespec="seconds"), "command": command,
           "total_s": round(total, 1), **{f"{k}_s": round(v, 1) for k, v in seconds.items()}}
    path = Path(results_dir) / "run_times.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    pd.concat([old, pd.DataFrame([row])], ignore_index=True).to_csv(path, index=False)
    return path
