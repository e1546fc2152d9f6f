"""tfmot's gradual magnitude pruning of a given dense MLP (run by compare_tfmot.py in a subprocess).

Needs ``TF_USE_LEGACY_KERAS=1`` and tf-keras + tensorflow-model-optimization on ``PYTHONPATH``.
Reads the dense kernels and the recipe from an ``.npz``/JSON pair, writes one JSON line per target.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

keras = tf.keras  # tf_keras under TF_USE_LEGACY_KERAS=1

from _timing import epoch_timer_class  # noqa: E402

EpochTimer = epoch_timer_class(keras.callbacks.Callback)


def build(kernels: list[np.ndarray]) -> keras.Model:
    inputs = keras.Input((28, 28))
    x = keras.layers.Flatten()(inputs)
    for i, w in enumerate(kernels[:-1]):
        x = keras.layers.Dense(w.shape[1], activation="relu", use_bias=False, name=f"hidden_{i}")(x)
    outputs = keras.layers.Dense(kernels[-1].shape[1], use_bias=False, name="logits")(x)
    model = keras.Model(inputs, outputs)
    for layer, w in zip([l for l in model.layers if isinstance(l, keras.layers.Dense)], kernels):
        layer.set_weights([w])
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", required=True, help="npz with kernels k0..kn, x_train, y_train, x_test, y_test")
    parser.add_argument(
        "--recipe", required=True, help="JSON: targets, epochs, batch_size, learning_rate, ramp_fraction, every, seed"
    )
    args = parser.parse_args()
    recipe = json.loads(args.recipe)
    arrays = np.load(args.inputs)
    kernels = [arrays[f"k{i}"] for i in range(sum(name.startswith("k") for name in arrays.files))]
    x, y = arrays["x_train"], arrays["y_train"].astype(np.int32)
    steps = recipe["epochs"] * math.ceil(len(x) / recipe["batch_size"])
    for target in recipe["targets"]:
        keras.utils.set_random_seed(recipe["seed"])
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=target / 100,
            begin_step=0,
            end_step=round(recipe["ramp_fraction"] * steps),
            power=3,
            frequency=recipe["every"],
        )

        def wrap(layer):  # the logit layer is never pruned, as in prunelib
            if isinstance(layer, keras.layers.Dense) and layer.name != "logits":
                return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
            return layer

        model = keras.models.clone_model(build(kernels), clone_function=wrap)
        model.get_layer("logits").set_weights([kernels[-1]])
        model.get_layer("logits").trainable = recipe["train_logits"]
        lr = keras.optimizers.schedules.CosineDecay(recipe["learning_rate"], decay_steps=steps)
        model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        data = (
            tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=recipe["seed"])
            .batch(recipe["batch_size"])
            .prefetch(tf.data.AUTOTUNE)
        )
        timer = EpochTimer()
        t0 = time.perf_counter()
        model.fit(data, epochs=recipe["epochs"], verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), timer])
        seconds = time.perf_counter() - t0
        stripped = tfmot.sparsity.keras.strip_pruning(model)
        pruned = [l.get_weights()[0] for l in stripped.layers if isinstance(l, keras.layers.Dense)]
        logits = stripped.predict(arrays["x_test"], batch_size=10_000, verbose=0)
        accuracy = 100.0 * float(np.mean(logits.argmax(1) == arrays["y_test"]))
        zeros = sum(int(np.sum(w == 0)) for w in pruned)
        print(
            json.dumps(
                {
                    "tool": "tfmot",
                    "k": target,
                    "accuracy": accuracy,
                    "seconds": seconds,
                    "epoch_seconds": timer.times,
                    "sparsity": 100.0 * zeros / sum(w.size for w in pruned),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
