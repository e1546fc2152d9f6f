"""Where prunelib keeps downloaded data and cached models.

Both default under ``$PRUNELIB_HOME`` (``~/.cache/prunelib``); ``$PRUNELIB_DATA`` and
``$PRUNELIB_CACHE`` override each one alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path


def home() -> Path:
    """Root of prunelib's on-disk state."""
    return Path(os.environ.get("PRUNELIB_HOME", Path.home() / ".cache" / "prunelib"))


def data_dir() -> Path:
    """Parent directory of the per-dataset IDX folders."""
    return Path(os.environ.get("PRUNELIB_DATA", home() / "data"))


def cache_dir() -> Path:
    """Directory of trained models, keyed by their config."""
    return Path(os.environ.get("PRUNELIB_CACHE", home() / "models"))


def digest(obj: object) -> str:
    """A short stable hash of a JSON-able description (the cache key of what it determines)."""
    blob = json.dumps(obj, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` fill a temporary sibling of ``path``, then move it into place.

    A killed run never leaves a half-written file in the cache. The temporary name keeps
    ``path``'s suffix, for writers (like Keras) that choose the format by it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{path.suffix}")
    write(tmp)
    os.replace(tmp, path)
