"""Why the last hidden layer needs non-negative logit targets under unit pruning: test accuracy
through the frozen logit kernel when only a few units of the challenge MLP's last hidden layer are
kept (the largest column norms, as ``unit-norm`` keeps them) and their activations are

* ``kept as they are``: the dense network's own activations of the kept units;
* ``minimum-norm, clipped``: :func:`prunelib.core.reconstruct.logit_matching_targets` (the dense
  activations plus the minimum-norm change that restores the logits), clipped at 0 as a ReLU would;
* ``non-negative fit``: the targets ``prunelib.core.post_training`` fits that layer to.

Targets are computed from the dense network's activations on the test images, so each number is the
best that layer could do were its fit exact. Prints a table; writes nothing.

    python benchmarks/unit_logit_targets.py --seeds 0 1 2 3 4 --kept 10 20
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from prunelib.core import forward
from prunelib.core.reconstruct import logit_matching_targets
from prunelib.core.unit_selection import logit_targets


def rows(seed: int, kept: list[int], model: str = "challenge", dataset: str = "mnist") -> list[dict]:
    from prunelib.data import load_dataset
    from prunelib.models import mlp
    from prunelib.models.zoo import zoo_config

    data = load_dataset(dataset)
    net = mlp.train_or_load(data, zoo_config(model, seed))
    kernels = [w.astype(np.float64) for w in mlp.get_kernels(net)]
    h = data.x_test.reshape(len(data.x_test), -1).astype(np.float64)
    for w in kernels[:-1]:
        h = forward.relu(h @ w)
    v, out = kernels[-1], []
    for m in kept:
        keep = np.zeros(v.shape[0], dtype=bool)
        keep[np.argsort(-np.linalg.norm(kernels[-2], axis=0), kind="stable")[:m]] = True
        acts = {
            "kept as they are": np.where(keep, h, 0.0),
            "minimum-norm, clipped": forward.relu(logit_matching_targets(h, keep, v, np.float64)),
            "non-negative fit": logit_targets(h, keep, v),
        }
        for name, a in acts.items():
            accuracy = 100 * float(np.mean(np.argmax(a @ v, axis=1) == data.y_test))
            out.append({"seed": seed, "kept": m, "activations": name, "accuracy": accuracy})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--kept", nargs="+", type=int, default=[10, 20])
    args = parser.parse_args(argv)
    table = pd.DataFrame([r for seed in args.seeds for r in rows(seed, args.kept)])
    summary = table.pivot_table(index=["kept", "activations"], columns="seed", values="accuracy")
    summary["mean"] = summary.mean(axis=1)
    print(summary.round(2).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
