"""The result tables' schemas, and reading them back with validation.

A table that lost a column, was cut off mid-row, holds NaN where a number is required, or
repeats a row is an error naming the file, never a report with false claims.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class TableError(ValueError):
    """A result table is missing columns or values, or is otherwise damaged."""


@dataclass(frozen=True)
class Schema:
    """What one result table must hold."""

    keys: tuple[str, ...]  # one row per combination of these
    numbers: tuple[str, ...]  # numeric columns that must be present and never NaN
    texts: tuple[str, ...] = ()  # other required columns


SCHEMAS: dict[str, Schema] = {
    "sweep": Schema(
        ("dataset", "method", "correction", "k", "seed"),
        ("k", "seed", "sparsity", "prunable_sparsity", "accuracy", "loss"),
        ("dataset", "method", "correction"),
    ),
    "sensitivity": Schema(
        ("dataset", "method", "layer", "k", "seed"),
        ("k", "seed", "sparsity", "accuracy", "loss"),
        ("dataset", "method", "layer"),
    ),
    "recovery": Schema(
        ("dataset", "method", "k", "strategy", "seed"),
        ("k", "seed", "epochs", "sparsity", "accuracy", "dense_accuracy"),
        ("dataset", "method", "strategy"),
    ),
    "recipes": Schema(
        ("dataset", "recipe", "method", "k", "seed"),
        ("k", "seed", "sparsity", "accuracy", "dense_accuracy", "train_seconds"),
        ("dataset", "recipe", "method"),
    ),
    "recipe_layers": Schema(
        ("dataset", "recipe", "layer", "seed"),
        ("drift", "top10_weight_share", "top10_unit_share"),
        ("dataset", "recipe", "layer"),
    ),
}


def validate(table: pd.DataFrame, name: str, source: str | os.PathLike = "<table>") -> pd.DataFrame:
    """Check ``table`` against :data:`SCHEMAS` ``[name]`` and return it.

    Raises:
        TableError: naming ``source`` and what is wrong.
    """
    schema = SCHEMAS[name]
    if table.empty:
        raise TableError(f"{source} has no rows; re-run `python -m prunelib run`")
    missing = [c for c in (*schema.texts, *schema.numbers) if c not in table.columns]
    if missing:
        raise TableError(
            f"{source} lacks column(s) {missing}; it is damaged or from another "
            "version: re-run `python -m prunelib run`"
        )
    for column in schema.numbers:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = int(values.isna().sum())
        if bad:
            raise TableError(
                f"{source}: column {column!r} has {bad} missing or non-numeric value(s) "
                "(truncated or edited?); re-run `python -m prunelib run`"
            )
    for column in ("k", "accuracy", "sparsity"):
        if column in schema.numbers and not table[column].between(0, 100).all():
            raise TableError(f"{source}: column {column!r} has values outside [0, 100]")
    duplicated = table.duplicated(list(schema.keys)).sum()
    if duplicated:
        raise TableError(f"{source} repeats {duplicated} row(s) of the same {', '.join(schema.keys)}")
    return table


def read(path: str | os.PathLike, name: str) -> pd.DataFrame:
    """Read and validate one result table.

    Raises:
        TableError: the file cannot be parsed or fails :func:`validate`.
    """
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise TableError(f"{path} cannot be read as a table ({err}); re-run `python -m prunelib run`") from err
    return validate(table, name, path)


def read_all(results_dir: str | os.PathLike, name: str, order: dict[str, int]) -> pd.DataFrame:
    """Every ``<results>/<dataset>/<name>.csv``, validated, concatenated in ``order`` of dataset."""
    paths = sorted(Path(results_dir).glob(f"*/{name}.csv"), key=lambda p: (order.get(p.parent.name, 99), p))
    frames = [read(p, name) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
