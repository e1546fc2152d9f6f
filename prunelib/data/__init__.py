"""MNIST and Fashion-MNIST as arrays: load a dataset, fetching and verifying its files first.

Fetching lives in :mod:`prunelib.data.sources`, the IDX format and hash checks in :mod:`prunelib.data.idx`;
their public names are re-exported here.

Command line: ``python -m prunelib.data fetch [mnist|fashion-mnist|all] [--data-dir DIR]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np

from prunelib.data.idx import DataError, read_idx, sha256_of, verify_file, write_idx  # noqa: F401
from prunelib.data.sources import DATASETS, DatasetSpec, fetch, spec  # noqa: F401


@dataclass(frozen=True)
class Dataset:
    """Train and test split of an image classification dataset.

    Images are float32 in [0, 1] with shape (n, 28, 28); labels are uint8 with shape (n,).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset, fetching and verifying its files first if needed.

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        data_dir: parent directory of the per-dataset folders (default: ``prunelib.base.paths.data_dir()``).

    Returns:
        A Dataset with float32 images in [0, 1] of shape (n, 28, 28) and uint8 labels.
    """
    files = spec(name).files
    root = fetch(name, data_dir)
    arrays = {role: read_idx(root / fname) for role, fname in files.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise DataError(f"{name}: {split} images and labels differ in count")
    scale = np.float32(1.0 / 255.0)
    return Dataset(
        name=name,
        x_train=arrays["train_images"].astype(np.float32) * scale,
        y_train=arrays["train_labels"].copy(),
        x_test=arrays["test_images"].astype(np.float32) * scale,
        y_test=arrays["test_labels"].copy(),
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: ``python -m prunelib.data fetch [NAME|all]``."""
    parser = argparse.ArgumentParser(prog="python -m prunelib.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_p = sub.add_parser("fetch", help="fetch and verify dataset files")
    fetch_p.add_argument("name", nargs="?", default="all", choices=[*DATASETS, "all"])
    fetch_p.add_argument("--data-dir", default=None, help="default: $PRUNELIB_DATA or ~/.cache/prunelib/data")
    args = parser.parse_args(argv)
    names = list(DATASETS) if args.name == "all" else [args.name]
    for name in names:
        try:
            print(f"{name}: {fetch(name, args.data_dir)}")
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
