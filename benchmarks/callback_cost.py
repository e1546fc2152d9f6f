"""What pruning while training costs: ``fit`` with :class:`prunelib.PruningCallback` against a plain
``fit`` of the same model, same start, same data, same process, rounds in rotating order.

Models: the Keras MNIST MLP (Dense 512-512-10) and the Keras ``mnist_convnet`` CNN, Adam, batch 128,
2 epochs, ``PruningCallback(90)`` (default schedule: cubic to 90 % over the first epoch, masks every
100 steps; the output layer left dense). Each round runs both, the order alternating (AB, BA, ...);
``total`` is the whole ``fit`` (tracing, the mask updates and the masked epoch), ``steady`` the second
epoch alone (masks fixed; what a long training pays per epoch). Ratios are callback / plain, per
round; the table gives their median, min and max. Writes ``results/benchmarks/callback_cost.csv``.

    python benchmarks/callback_cost.py [--rounds 3] [--models mlp cnn] [--cnn-images 20000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

OUT = Path("results/benchmarks/callback_cost.csv")


def build(model: str):
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    if model == "mlp":
        return keras.Sequential(
            [keras.Input((784,)), L.Dense(512, activation="relu"), L.Dense(512, activation="relu"), L.Dense(10)]
        )
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(32, 3, activation="relu"),
            L.MaxPooling2D(2),
            L.Conv2D(64, 3, activation="relu"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dropout(0.5),
            L.Dense(10),
        ]
    )


class EpochClock:
    def __init__(self):
        import keras

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(inner, epoch, logs=None):
                inner.t0 = time.perf_counter()

            def on_epoch_end(inner, epoch, logs=None):
                self.epochs.append(time.perf_counter() - inner.t0)

        self.epochs: list[float] = []
        self.callback = Clock()


def one_fit(model_name: str, weights, x, y, pruned: bool) -> tuple[float, float]:
    import keras

    import prunelib

    model = build(model_name)
    model.set_weights(weights)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clock = EpochClock()
    callbacks = ([prunelib.PruningCallback(90)] if pruned else []) + [clock.callback]
    t0 = time.perf_counter()
    model.fit(x, y, epochs=2, batch_size=128, verbose=0, callbacks=callbacks)
    return time.perf_counter() - t0, clock.epochs[-1]


def run(models: list[str], rounds: int, cnn_images: int) -> pd.DataFrame:
    from prunelib.base.quiet import framework_import
    from prunelib.data import load_dataset

    with framework_import():
        import keras  # noqa: F401

    data = load_dataset("mnist")
    rows = []
    for name in models:
        n = len(data.x_train) if name == "mlp" else cnn_images
        x = data.x_train[:n].reshape(n, 784) if name == "mlp" else data.x_train[:n].reshape(n, 28, 28, 1)
        y = data.y_train[:n].astype("int32")
        weights = build(name).get_weights()
        one_fit(name, weights, x[:1024], y[:1024], True)  # warm up the process (imports, first traces)
        for r in range(rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            times = {pruned: one_fit(name, weights, x, y, pruned) for pruned in order}
            rows.append(
                dict(
                    model=name,
                    round=r,
                    images=n,
                    plain_total_s=times[False][0],
                    callback_total_s=times[True][0],
                    plain_steady_s=times[False][1],
                    callback_steady_s=times[True][1],
                    total_ratio=times[True][0] / times[False][0],
                    steady_ratio=times[True][1] / times[False][1],
                )
            )
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    return table.groupby("model")[["total_ratio", "steady_ratio"]].agg(["median", "min", "max"]).round(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cnn-images", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from prunelib.base import machine

    table = run(args.models, args.rounds, args.cnn_images)
    facts = machine.facts()
    table["cpu"] = facts["cpu"]
    table["isa"] = " ".join(facts["isa"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.4f")
    print(summary(table).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
