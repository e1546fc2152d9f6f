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


def _env_path(name: str) -> Path | None:
    """An environment variable as a path with ``~`` expanded; unset or empty means not set."""
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def home() -> Path:
    """Root of prunelib's on-disk state."""
    return _env_path("PRUNELIB_HOME") or Path.home() / ".cache" / "prunelib"


def data_dir() -> Path:
    """Parent directory of the per-dataset IDX folders."""
    return _env_path("PRUNELIB_DATA") or home() / "data"


def cache_dir() -> Path:
    """Directory of trained models, keyed by their config."""
    return _env_path("PRUNELIB_CACHE") or home() / "models"


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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # temporary files may be created 0600; results are for everyone to read
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
