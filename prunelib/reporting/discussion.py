"""The report's discussion: every number and every verdict read from the tables.

"Do the curves differ?" is answered by where the 95 % confidence intervals of the two methods do
not overlap, and another dataset is said to agree only if its intervals say the same.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prunelib.reporting.stats import ci95, ci95_interval, summary_table
from prunelib.reporting.summaries import best_rows, challenge_rows, lstsq_rows


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
        df, fixed, best = challenge_rows(full), lstsq_rows(full), best_rows(full)
        f = {"dense": _acc(df, "weight", 0), "dense_ci": _ci(df, "weight", 0), "seeds": int(df["seed"].nunique())}
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
                if k in set(best.loc[best["method"] == method, "k"]):
                    f[f"best_{method}_{k}"] = _acc(best, method, k)
                    f[f"best_{method}_{k}_ci"] = _ci(best, method, k)
        out[str(dataset)] = f
    return out


def _pm(f: dict, key: str) -> str:
    ci = f.get(f"{key}_ci", np.nan)
    return f"{f[key]:.2f} %" if np.isnan(ci) else f"{f[key]:.2f} ± {ci:.2f} %"


def _recovered(recovery: pd.DataFrame | None, dataset: str, method: str, k: float, strategy: str) -> float:
    if recovery is None or recovery.empty:
        return float("nan")
    sel = recovery[
        (recovery["dataset"] == dataset)
        & (recovery["method"] == method)
        & (recovery["k"] == k)
        & (recovery["strategy"] == strategy)
    ]
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


def separated(df: pd.DataFrame, a: str = "weight", b: str = "unit") -> dict[float, int]:
    """The ks (> 0) at which the 95 % confidence intervals of methods ``a`` and ``b`` do not
    overlap: k -> +1 where ``a`` is above, -1 where ``b`` is. Empty with fewer than two seeds."""
    out = {}
    for k in sorted(set(df["k"])):
        xa = df.loc[(df["method"] == a) & (df["k"] == k), "accuracy"]
        xb = df.loc[(df["method"] == b) & (df["k"] == k), "accuracy"]
        if k == 0 or len(xa) < 2 or len(xb) < 2:
            continue
        (lo_a, hi_a), (lo_b, hi_b) = ci95_interval(xa), ci95_interval(xb)
        if lo_a > hi_b:
            out[float(k)] = 1
        elif lo_b > hi_a:
            out[float(k)] = -1
    return out


def _ks(ks) -> str:
    return ", ".join(f"{k:g}" for k in ks)


def _separation(sep: dict[float, int]) -> str:
    above = [k for k, s in sep.items() if s > 0]
    below = [k for k, s in sep.items() if s < 0]
    parts = [f"weight above unit at k = {_ks(above)}"] if above else []
    parts += [f"unit above weight at k = {_ks(below)}"] if below else []
    return " and ".join(parts)


def differ_verdict(sweep: pd.DataFrame) -> str:
    """Whether the weight and unit curves differ, per dataset, as the confidence intervals say.

    The first dataset is the reference; every other one is said to agree only if its curves are
    separated in the same direction at some k and in the opposite direction at none.
    """
    rows = challenge_rows(sweep)
    by = {str(d): separated(df) for d, df in rows.groupby("dataset", sort=False)}
    seeds = int(rows["seed"].nunique())
    (first, sep), *others = by.items()
    if seeds < 2:
        return f"With {seeds} seed there is no confidence interval to tell noise from a difference."
    if not sep:
        out = f"Not beyond noise on {first}: the 95 % CIs over {seeds} seeds overlap at every k."
    else:
        out = f"Yes on {first}: the 95 % CIs over {seeds} seeds do not overlap, {_separation(sep)}."
    for name, other in others:
        same = (
            bool(other) == bool(sep)
            and all(sep.get(k, s) == s for k, s in other.items())
            and (not sep or any(sep.get(k) == s for k, s in other.items()))
        )
        detail = _separation(other) if other else "the CIs overlap at every k"
        out += f" {name} {'agrees' if same else 'differs'}: {detail}."
    return out


def _weights(sweep: pd.DataFrame) -> str | None:
    dense = challenge_rows(sweep)
    dense = dense[(dense["k"] == 0) & (dense["method"] == "weight")]
    if "effective_params" not in dense or dense.empty:
        return None
    return f"{float(dense['effective_params'].iloc[0]) / 1e6:.1f} M weights"


def discussion(results) -> str:
    """The ~200-word discussion, in markdown, with every number and verdict taken from the tables.

    Args:
        results: a :class:`prunelib.reporting.results.Results`; the recipe study and recovery tables add
            their evidence when present.
    """
    fx = facts(results.sweep)
    m = fx.get("mnist") or next(iter(fx.values()))
    f = fx.get("fashion-mnist", m)
    text = f"""\
**Do the curves differ?** {differ_verdict(results.sweep)} On MNIST (dense {_pm(m, "dense")}) weight
pruning stays within a point of dense up to {m["weight_safe"]:.0f} % measured sparsity ({_pm(m, "weight_95")}
at k = 95); unit pruning to {m["unit_safe"]:.0f} % ({_pm(m, "unit_90")} at k = 90). Fashion-MNIST
(dense {_pm(f, "dense")}): {_pm(f, "weight_90")} against {_pm(f, "unit_90")} at k = 90.

**Why?** Weight pruning drops the least important weights wherever they sit; unit pruning drops
whole columns, and each removed unit also silences a row of the next layer."""
    if not np.isnan(m.get("weight_90_norm", np.nan)):
        text += f""" At k = 90 the kept weights hold {m["weight_90_norm"]:.0f} % of the squared norm,
the kept units {m["unit_90_norm"]:.0f} %."""
    r = recipe_facts(results.recipes, results.recipe_layers) if not results.recipes.empty else {}
    if r:
        text += f"""

**The recipe decides how much can go** (seed 0). With the first version's `{r["old_name"]}` the top
10 % of weights held {r["old_top10"]:.0f} % of the squared norm, and one-shot weight 95 gave
{r["old_weight_95"]:.1f} %. The chosen `{r["new_name"]}` {
            "takes as many steps" if r["new_steps"] == r["old_steps"] else "trains differently"
        }{", but its weight decay pulls weights the loss does not need toward zero" if r["new_decay"] > 0 else ""}:
{r["new_top10"]:.0f} % of the norm sits in the top 10 %, and weight 95 keeps {r["new_weight_95"]:.1f} %."""
    weights = _weights(results.sweep)
    text += f"""

**Why can so much be deleted?** {weights + " for 60,000 training images" if weights else "The network"} is far
more than the task needs."""
    if "retrain-small_90" in m:
        text += f""" Networks of unit pruning's k = 90 sizes trained from scratch reach
{_pm(m, "retrain-small_90")}."""
    if "lstsq_weight_99" in m:
        text += f""" Without any gradient step, re-fitting the survivors by least squares on
calibration images lifts weight 99 to {_pm(m, "lstsq_weight_99")} and unit 90 to
{_pm(m, "lstsq_unit_90")}: what one-shot pruning loses is mostly the survivors' calibration,
not capacity."""
    if "best_weight_99" in m and "best_unit_95" in m:
        text += f""" Choosing the masks from the calibration images as well (the library's best
post-training method) keeps {_pm(m, "best_weight_99")} at weight 99 and {_pm(m, "best_unit_95")} at unit 95."""
    return text + "\n"
