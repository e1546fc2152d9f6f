"""Tiny synthetic inputs for fast tests (never used outside tests)."""

import re

import numpy as np
import pandas as pd

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


FRAMEWORK_LOG = re.compile(
    r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN custom operations|cudart_stub|cuda_platform|cuInit|"
    r"cuda_executor|This TensorFlow binary is optimized|rebuild TensorFlow",
    re.M,
)
"""TensorFlow's C++ log lines (glog-style ``I0000 00:00:... file.cc:N]`` lines, absl's
pre-initialization notice, the CUDA probes, the CPU-feature notice): none may reach a user."""


def require_real_data(*names: str):
    """Fetch the real datasets a test needs, or skip it with the reason (returns their folders)."""
    import pytest

    from prunelib.data import DataError, fetch

    try:
        return [fetch(name) for name in names]
    except DataError as err:
        pytest.skip(f"{', '.join(names)} unavailable: {err}")


def fake_sweep(acc_weight_90=91.0, seeds=(0, 1, 2)) -> pd.DataFrame:
    """A sweep table of both datasets and all four methods, shaped like the study's; weight 90's
    accuracy is ``acc_weight_90`` (plus 0.1 per seed), so tests can tell two tables apart."""
    rows = []
    for dataset in ("mnist", "fashion-mnist"):
        for seed in seeds:
            for method in ("weight", "unit", "global-weight", "retrain-small"):
                for k in (0, 50, 80, 90, 95, 99):
                    acc = 98.0 - (k / 100) ** 3 * (20 if method == "weight" else 60) + seed * 0.1
                    if method == "weight" and k == 90:
                        acc = acc_weight_90 + seed * 0.1
                    rows.append(
                        {
                            "dataset": dataset,
                            "method": method,
                            "k": k,
                            "seed": seed,
                            "sparsity": k * 0.99,
                            "prunable_sparsity": k,
                            "accuracy": acc,
                            "loss": 0.1,
                            "effective_params": 1000 * (100 - k),
                            "norm_kept": 100 - k / 2,
                        }
                    )
    return pd.DataFrame(rows)
