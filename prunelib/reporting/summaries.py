"""The tables the report and the notebook show, summarized from the tidy result tables: per k
mean ± 95 % CI per method, recovery, the recipe study, least-squares seconds, the README's
headline rows."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from prunelib.base.strategies import STRATEGIES
from prunelib.core.best import CORRECTION
from prunelib.reporting.stats import summary_table


def challenge_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the challenge's own one-shot pruning (no correction of the survivors)."""
    return df[df["correction"] == "none"] if "correction" in df else df


def lstsq_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows whose survivors were re-fitted by least squares (empty if there are none)."""
    return df[df["correction"] == "lstsq"] if "correction" in df else df.iloc[:0]


def best_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the library's best post-training method per pruning method
    (:mod:`prunelib.core.best`; empty if there are none)."""
    return df[df["correction"] == CORRECTION] if "correction" in df else df.iloc[:0]


def _fmt(mean: float, ci: float) -> str:
    return f"{mean:.2f}" if np.isnan(ci) else f"{mean:.2f} ± {ci:.2f}"


def sweep_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per k: measured sparsity of weight and unit pruning and accuracy (mean ± 95 % CI) per method,
    with + lstsq and the best post-training method where the table holds them."""
    fixed = summary_table(lstsq_rows(df)).set_index(["method", "k"]) if len(lstsq_rows(df)) else None
    best = summary_table(best_rows(df)).set_index(["method", "k"]) if len(best_rows(df)) else None
    best_methods = set(best_rows(df)["method"])
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
            if method in best_methods:
                r = best.loc[(method, k)] if (method, k) in best.index else None
                row[f"{method} best (%)"] = "" if r is None else _fmt(r["accuracy"], r["ci95"])
        rows.append(row)
    return pd.DataFrame(rows)


HEADLINE = (("weight", 90), ("weight", 99), ("unit", 80), ("unit", 90))
"""The (method, k) points the README's headline table quotes."""
HEADLINE_ROW = re.compile(r"^\| [\w-]+, prunelib one-shot \(\+ lstsq\) \|")
"""A generated headline row of the README."""


def headline_rows(sweep: pd.DataFrame) -> list[str]:
    """The README's headline rows, one per dataset: one-shot mean accuracy (+ lstsq in brackets)
    at each point of :data:`HEADLINE`, from the sweep tables (so no README number is typed in)."""
    rows = []
    for dataset, df in sweep.groupby("dataset", sort=False):
        one, fixed = summary_table(challenge_rows(df)), summary_table(lstsq_rows(df)) if len(lstsq_rows(df)) else None
        cells = []
        for method, k in HEADLINE:
            mean = one.loc[(one["method"] == method) & (one["k"] == k), "accuracy"]
            ls = fixed.loc[(fixed["method"] == method) & (fixed["k"] == k), "accuracy"] if fixed is not None else []
            cells.append(("" if mean.empty else f"{mean.iloc[0]:.2f}") + (f" ({ls.iloc[0]:.2f})" if len(ls) else ""))
        rows.append(f"| {dataset}, prunelib one-shot (+ lstsq) | " + " | ".join(cells) + " |")
    return rows


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
        rows.append(
            {
                "recipe": recipe,
                "dense (%)": f"{s['dense_accuracy']:.2f}",
                "train (s)": f"{s['train_seconds']:.0f}",
                **{
                    f"{m} {k:g}": f"{pivot.loc[recipe, (m, float(k))]:.1f}"
                    for m, ks in (("weight", (90, 95, 97, 99)), ("unit", (70, 80, 90)))
                    for k in ks
                    if (m, float(k)) in pivot.columns
                },
                "area": f"{s['area']:.1f}",
                "drift": f"{diag.loc[recipe, 'drift']:.2f}",
                "top-10 % weights (%)": f"{diag.loc[recipe, 'top10_weight_share']:.0f}",
                "top-10 % units (%)": f"{diag.loc[recipe, 'top10_unit_share']:.0f}",
            }
        )
    return pd.DataFrame(rows)


def lstsq_seconds(df: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds of the least-squares correction per (method, k), calibration included; and of the
    best post-training method (columns ``"<method> best"``) where the table holds it."""
    fixed = lstsq_rows(df)
    table = fixed.pivot_table(index="k", columns="method", values="seconds", aggfunc="mean")
    if len(best_rows(df)):
        best = best_rows(df).pivot_table(index="k", columns="method", values="seconds", aggfunc="mean")
        table = table.join(best.rename(columns=lambda m: f"{m} best"), how="left")
    return (
        table.map(lambda v: "" if np.isnan(v) else f"{v:.2f}")
        .rename_axis(None, axis=1)
        .reset_index()
        .rename(columns={"k": "k (%)"})
        .assign(**{"k (%)": lambda t: t["k (%)"].map(lambda k: f"{k:g}")})
    )


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
        rows.append(
            {
                "method": method,
                "k (%)": f"{k:g}",
                "one-shot": f"{one['accuracy'].mean():.2f}",
                "lstsq": f"{ls['accuracy'].mean():.2f}",
                "lstsq (s)": f"{ls['seconds'].mean():.1f}",
                f"fine-tune ({int(part['epochs'].iloc[0])} ep.)": f"{part['accuracy'].mean():.2f}",
                "fine-tune (s)": f"{part['seconds'].mean():.0f}",
            }
        )
    return pd.DataFrame(rows)
