"""Tiny synthetic inputs for fast tests (never used outside tests)."""

import numpy as np

from prunelib.data import Dataset
from prunelib.models.config import Architecture, Recipe, TrainConfig


def tiny_data(n: int = 256, seed: int = 0) -> Dataset:
    """Two linearly separable classes of 28x28 images: class 1 has a bright top half."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.uint8)
    x = rng.random((n, 28, 28), dtype=np.float32) * 0.5
    x[y == 1, :14] += 0.5
    return Dataset("tiny", x, y, x[:64], y[:64])


TINY = TrainConfig(
    Architecture(hidden_sizes=(16, 8), num_classes=2), Recipe(epochs=3, batch_size=32, learning_rate=1e-2)
)


def require_real_data(*names: str):
    """Fetch the real datasets a test needs, or skip it with the reason (returns their folders)."""
    import pytest

    from prunelib.data import DataError, fetch

    try:
        return [fetch(name) for name in names]
    except DataError as err:
        pytest.skip(f"{', '.join(names)} unavailable: {err}")
