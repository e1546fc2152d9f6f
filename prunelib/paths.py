"""Where prunelib keeps downloaded data and cached models.

Both default under ``$PRUNELIB_HOME`` (``~/.cache/prunelib``); ``$PRUNELIB_DATA`` and
``$PRUNELIB_CACHE`` override each one alone.
"""

from __future__ import annotations

import os
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
