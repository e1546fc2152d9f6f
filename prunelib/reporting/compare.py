"""Does a run agree with other results? Per point a Welch test over seeds, and bitwise equality.

On one machine the study is deterministic, so a re-run reproduces every table bit for bit. On
another CPU oneDNN and BLAS pick other kernels, the trained models differ in the last bits, and
the tables agree only statistically: :func:`compare` tests each (dataset, method, correction, k)
point's accuracies over seeds with Welch's t-test and names the points that disagree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from prunelib.reporting import tables

POINT = ["dataset", "method", "correction", "k"]
"""The columns that name one point of a sweep table."""
TIMING = ("seconds",)
"""Columns that measure run time, not results: left out when values are compared."""


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` found.

    Attributes:
        points: one row per point in both sweeps: means, seeds and Welch's p on each side.
        disagree: the rows of ``points`` with p < ``alpha``.
        alpha: the test's level.
        identical_files: every table (CSV) both directories hold is byte-identical.
        identical_values: the same, timing columns (:data:`TIMING`) left out.
        only_one_side: points (as text) that one sweep has and the other lacks.
    """

    points: pd.DataFrame
    disagree: pd.DataFrame
    alpha: float
    identical_files: bool
    identical_values: bool
    only_one_side: tuple[str, ...]

    def summary(self, ours: str, other: str) -> str:
        """A few lines for a person: bitwise verdict, then the points that disagree."""
        lines = [
            f"{other} against {ours}: tables "
            + (
                "bit-identical"
                if self.identical_files
                else "identical in every value but run times"
                if self.identical_values
                else "differ (same machine, same code: they should not; another CPU: expected)"
            )
        ]
        tested = int(self.points["p"].notna().sum())
        lines.append(
            f"Welch test per (dataset, method, correction, k) over seeds: {len(self.disagree)} of "
            f"{tested} tested points disagree at p < {self.alpha:g} (by chance alone expect "
            f"about {self.alpha * tested:.1f})"
        )
        for r in self.disagree.itertuples():
            lines.append(
                f"  {r.dataset} {r.method} {r.correction} k={r.k:g}: {r.mean_ours:.2f} "
                f"({r.seeds_ours} seeds) vs {r.mean_other:.2f} ({r.seeds_other} seeds), p = {r.p:.3g}"
            )
        if self.only_one_side:
            lines.append(f"{len(self.only_one_side)} point(s) in one sweep only, e.g. {self.only_one_side[0]}")
        return "\n".join(lines)


def welch_p(a, b) -> float:
    """Two-sided p of Welch's t-test on the means of ``a`` and ``b``.

    Equal constant samples give 1 and different constant samples 0 (the t statistic is 0/0 or
    x/0 there); NaN when a side has fewer than two values.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return float("nan")
    if a.var() == 0 and b.var() == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _tables(results_dir: Path) -> dict[str, Path]:
    # Benchmark CSVs time the machine; they are not the study's tables.
    return {
        p.relative_to(results_dir).as_posix(): p
        for p in sorted(results_dir.glob("*/*.csv"))
        if p.parent.name != "benchmarks"
    }


def compare(ours: str | os.PathLike, other: str | os.PathLike, alpha: float = 0.05) -> Comparison:
    """Compare the sweep tables of ``other`` with ``ours`` point by point, and every table bitwise.

    Raises:
        FileNotFoundError: a directory holds no ``*/sweep.csv``.
        prunelib.reporting.tables.TableError: a table is damaged.
    """
    ours, other = Path(ours), Path(other)
    sweeps = []
    for d in (ours, other):
        sweep = tables.read_all(d, "sweep", {})
        if sweep.empty:
            raise FileNotFoundError(f"no */sweep.csv under {d}; nothing to compare")
        if "correction" not in sweep:
            sweep = sweep.assign(correction="none")
        sweeps.append(sweep)
    groups = [dict(tuple(s.groupby(POINT, sort=False)["accuracy"])) for s in sweeps]
    rows = []
    for key, a in groups[0].items():
        if key in groups[1]:
            b = groups[1][key]
            rows.append(
                {
                    **dict(zip(POINT, key)),
                    "mean_ours": a.mean(),
                    "mean_other": b.mean(),
                    "seeds_ours": a.size,
                    "seeds_other": b.size,
                    "p": welch_p(a, b),
                }
            )
    points = pd.DataFrame(rows, columns=[*POINT, "mean_ours", "mean_other", "seeds_ours", "seeds_other", "p"])
    lone = sorted(
        " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in key) for key in set(groups[0]) ^ set(groups[1])
    )
    mine, theirs = _tables(ours), _tables(other)
    common = sorted(set(mine) & set(theirs))
    same_set = set(mine) == set(theirs)
    identical_files = same_set and all(mine[n].read_bytes() == theirs[n].read_bytes() for n in common)
    identical_values = same_set and all(_values(mine[n]).equals(_values(theirs[n])) for n in common)
    return Comparison(
        points,
        points[points["p"] < alpha].reset_index(drop=True),
        alpha,
        identical_files,
        identical_values,
        tuple(lone),
    )


def _values(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    return df.drop(columns=[c for c in TIMING if c in df])
