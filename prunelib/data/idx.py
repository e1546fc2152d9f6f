"""The IDX file format (MNIST's and Fashion-MNIST's), and checking files against pinned hashes."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np

_IDX_DTYPES = {0x08: np.uint8}


class DataError(RuntimeError):
    """A dataset file is missing, corrupt or of the wrong format; the message says how to fix it."""


def sha256_of(path: Path) -> str:
    """Return the hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str) -> None:
    """Raise DataError unless ``path`` exists and hashes to ``expected_sha256``."""
    if path.is_dir():
        raise DataError(
            f"{path} is a directory where a data file belongs; remove it and run `python -m prunelib.data fetch`"
        )
    if not path.is_file():
        raise DataError(f"{path} is missing")
    try:
        actual = sha256_of(path)
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror or err}); check its permissions") from err
    if actual != expected_sha256:
        raise DataError(
            f"{path} is corrupt or not the expected file: SHA-256 {actual}, expected "
            f"{expected_sha256}. Delete it and run `python -m prunelib.data fetch`."
        )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed, by the ``.gz`` suffix) into a numpy array.

    Raises:
        DataError: the file is missing, truncated, or has a bad magic number.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing; run `python -m prunelib.data fetch`")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:  # gzip raises these on truncated or non-gzip data
        raise DataError(f"{path} cannot be read ({err}); delete it and fetch it again") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); delete it and fetch it again"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header; delete it and fetch it again")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(
            f"{path} is truncated or padded: {len(raw) - header} data bytes for shape {shape} "
            f"({expected} expected); delete it and fetch it again"
        )
    return np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=header).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip-compressed if the name ends in ``.gz``)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(header + array.tobytes())
