"""Targeted dropout's masked Dense layer: training that changes the forward pass.

Targeted dropout (Gomez et al. 2019) randomly drops the weights or units that *would* be pruned,
so the network learns not to rely on them (:class:`TargetedDropout` keeps the targeting threshold).
That is a change to what a layer computes while training, which a callback cannot make, so it
trains :class:`MaskedDense` layers. Pruning while training (fine-tuning, gradual pruning, IMP) runs
on :class:`prunelib.PruningCallback` instead, with plain layers.

A masked weight stays exactly zero: the forward pass multiplies the kernel by its mask, so its
gradient is zero, and :func:`set_masks` also zeroes the kernel entries and the optimizer's slot
variables (Adam's moments) at masked positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from prunelib.core import pruning


@keras.saving.register_keras_serializable(package="prunelib")
class MaskedDense(keras.layers.Dense):
    """A Dense layer whose kernel is multiplied by a 0/1 mask, with optional targeted dropout.

    Args:
        units: output size.
        dropout_rate: targeted dropout's alpha, the probability of dropping a targeted weight or unit
            during training (0 disables it).
        dropout_variant: ``"weight"`` (target single weights of small magnitude) or ``"unit"``
            (target whole columns of small L2 norm).
        **kwargs: passed to :class:`keras.layers.Dense`.

    The mask and the targeting threshold are non-trainable variables saved with the model; a unit
    whose kernel column is fully masked also loses its bias.
    """

    def __init__(self, units: int, dropout_rate: float = 0.0, dropout_variant: str = "weight", **kwargs) -> None:
        super().__init__(units, **kwargs)
        if not 0.0 <= dropout_rate <= 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1], got {dropout_rate!r}")
        if dropout_variant not in ("weight", "unit"):
            raise ValueError(f"dropout_variant must be 'weight' or 'unit', got {dropout_variant!r}")
        self.dropout_rate = float(dropout_rate)
        self.dropout_variant = dropout_variant
        self.seed_generator = keras.random.SeedGenerator(0)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self.mask = self.add_weight(
            shape=self.kernel.shape, initializer="ones", trainable=False, name="mask", dtype="float32"
        )
        # Weights (or units) scoring below this are targeted by dropout; set by TargetedDropout.
        self.threshold = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="threshold", dtype="float32"
        )

    def masked_kernel(self):
        """The kernel with pruned entries zeroed (float32)."""
        return self.kernel * self.mask

    def call(self, inputs, training=None):
        kernel = self.masked_kernel()
        if training and self.dropout_rate > 0:
            kernel = self._targeted_dropout(kernel)
        x = ops.matmul(inputs, ops.cast(kernel, self.compute_dtype))
        if self.bias is not None:
            alive = ops.cast(ops.max(self.mask, axis=0) > 0, self.compute_dtype)
            x = ops.add(x, ops.cast(self.bias, self.compute_dtype) * alive)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def _targeted_dropout(self, kernel):
        if self.dropout_variant == "weight":
            targeted = ops.abs(kernel) < self.threshold
            shape = ops.shape(kernel)
        else:
            targeted = ops.sqrt(ops.sum(kernel * kernel, axis=0)) < self.threshold
            shape = ops.shape(targeted)
        drop = ops.logical_and(targeted, keras.random.uniform(shape, seed=self.seed_generator) < self.dropout_rate)
        return ops.where(drop, ops.zeros_like(kernel), kernel)

    # Dense saves only its kernel and bias; the generic Layer routine saves every variable (mask too).
    def save_own_variables(self, store) -> None:
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store) -> None:
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self) -> dict:
        return {**super().get_config(), "dropout_rate": self.dropout_rate, "dropout_variant": self.dropout_variant}


def masked_layers(model: keras.Model) -> list[MaskedDense]:
    """The model's :class:`MaskedDense` layers (the prunable hidden layers) in order."""
    return [layer for layer in model.layers if isinstance(layer, MaskedDense)]


def get_masks(model: keras.Model) -> list[np.ndarray]:
    """Copies of the boolean keep-masks of the masked layers."""
    return [layer.mask.numpy() > 0 for layer in masked_layers(model)]


def effective_kernels(model: keras.Model) -> list[np.ndarray]:
    """All kernels in layer order as the model computes with them (masked ones multiplied out)."""
    return [
        ops.convert_to_numpy(layer.masked_kernel() if isinstance(layer, MaskedDense) else layer.kernel)
        for layer in model.layers
        if isinstance(layer, keras.layers.Dense)
    ]


def optimizer_slots(optimizer: keras.optimizers.Optimizer | None, variable) -> list:
    """The optimizer's per-variable state (e.g. Adam's moments) that shadows ``variable``."""
    if optimizer is None or not optimizer.built:
        return []
    prefix = variable.path.replace("/", "_") + "_"
    return [v for v in optimizer.variables if v.name.startswith(prefix) and v.shape == variable.shape]


def set_masks(model: keras.Model, masks: Sequence[np.ndarray]) -> None:
    """Install keep-masks on the masked layers, zeroing the newly pruned weights everywhere.

    The kernel entries and the optimizer's slot variables at pruned positions become exactly zero,
    so a later gradient step cannot move them (Adam's update is 0 / (0 + eps) there).
    """
    layers = masked_layers(model)
    if len(masks) != len(layers):
        raise ValueError(f"got {len(masks)} masks for {len(layers)} masked layers")
    optimizer = getattr(model, "optimizer", None)
    for layer, mask in zip(layers, masks):
        keep = np.asarray(mask, dtype="float32")
        if keep.shape != tuple(layer.kernel.shape):
            raise ValueError(f"mask shape {keep.shape} does not match kernel {tuple(layer.kernel.shape)}")
        layer.mask.assign(keep)
        layer.kernel.assign(layer.kernel * keep)
        for slot in optimizer_slots(optimizer, layer.kernel):
            slot.assign(slot * keep)


def _copy_weights(source: keras.Model, target: keras.Model, *, strip: bool = False) -> None:
    """Copy every Dense layer's kernel and bias from ``source`` into ``target`` (same layers).

    With ``strip``, masked kernels are copied as the model computes with them (mask multiplied
    out) and a unit whose column is fully masked loses its bias.
    """
    for src, dst in zip(source.layers, target.layers):
        if not isinstance(src, keras.layers.Dense):
            continue
        kernel, bias = src.kernel, src.bias
        if strip and isinstance(src, MaskedDense):
            kernel = src.masked_kernel()
            if bias is not None:
                bias = bias * ops.cast(ops.max(src.mask, axis=0) > 0, bias.dtype)
        dst.kernel.assign(kernel)
        if dst.bias is not None:
            dst.bias.assign(bias)


def masked_mlp(
    model: keras.Model,
    masks: Sequence[np.ndarray] | None = None,
    dropout_rate: float = 0.0,
    dropout_variant: str = "weight",
    l1: float = 0.0,
    precision: str | None = None,
    train_logits: bool = True,
) -> keras.Model:
    """A copy of a trained MLP whose hidden Dense layers are :class:`MaskedDense`.

    The model is cloned layer by layer (``keras.models.clone_model``), so any architecture built of
    Dense layers works; the output layer (named :data:`prunelib.core.pruning.LOGITS`) stays a plain
    Dense layer: it is never masked.

    Args:
        model: the trained model (left untouched).
        masks: keep-masks for the hidden kernels (default: keep everything).
        dropout_rate, dropout_variant: targeted dropout settings of the hidden layers.
        l1: L1 penalty on the hidden kernels (0 for none).
        precision: dtype policy of the hidden layers (default: as in ``model``).
        train_logits: whether training may update the logit layer; ``False`` freezes it, so a pruned
            and fine-tuned model keeps the original logit weights bit for bit.
    """

    def wrap(layer):
        if not isinstance(layer, keras.layers.Dense):
            return layer.__class__.from_config(layer.get_config())
        config = layer.get_config()
        if layer.name == pruning.LOGITS:
            return keras.layers.Dense.from_config({**config, "trainable": train_logits})
        config.update(
            dtype=precision or layer.dtype_policy, kernel_regularizer=keras.regularizers.L1(l1) if l1 > 0 else None
        )
        return MaskedDense(dropout_rate=dropout_rate, dropout_variant=dropout_variant, **config)

    clone = keras.models.clone_model(model, clone_function=wrap)
    if not any(layer.name == pruning.LOGITS for layer in clone.layers):
        raise ValueError(f"the model has no output layer named {pruning.LOGITS!r}")
    _copy_weights(model, clone)
    if masks is not None:
        set_masks(clone, masks)
    return clone


def strip(model: keras.Model) -> keras.Model:
    """A copy of a masked model with plain float32 Dense layers holding the masked weights."""

    def unwrap(layer):
        config = layer.get_config()
        if isinstance(layer, MaskedDense):
            for name in ("dropout_rate", "dropout_variant"):
                config.pop(name)
            config.update(kernel_regularizer=None)
        if isinstance(layer, keras.layers.Dense):
            config.update(dtype="float32", trainable=True)
            return keras.layers.Dense.from_config(config)
        return layer.__class__.from_config(config)

    plain = keras.models.clone_model(model, clone_function=unwrap)
    _copy_weights(model, plain, strip=True)
    return plain


class _EveryNSteps(keras.callbacks.Callback):
    """Run :meth:`update` every ``every`` optimizer steps (checked after each executed batch group)."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = max(int(every), 1)
        self._last = -self.every

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None) -> None:
        self._last = -self.every
        self._maybe_update()

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._maybe_update()

    def on_train_end(self, logs=None) -> None:
        self.update(self._step(), final=True)

    def _maybe_update(self) -> None:
        step = self._step()
        if step - self._last >= self.every:
            self._last = step
            self.update(step, final=False)

    def update(self, step: int, final: bool) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class TargetedDropout(_EveryNSteps):
    """Keep each masked layer's targeting threshold at the ``gamma`` quantile of its scores.

    Weight variant: the score is |w|; unit variant: the column L2 norm. The threshold is refreshed
    every ``every`` steps (a per-step exact quantile would cost as much as the matmuls); between
    refreshes the weights move little.

    Args:
        gamma: targeted fraction in [0, 1] (match it to the pruning k you intend, as a fraction).
        every: steps between refreshes.
        ramp_steps: if > 0, gamma ramps linearly from 0 to ``gamma`` over this many steps.
    """

    def __init__(self, gamma: float, every: int = 20, ramp_steps: int = 0) -> None:
        super().__init__(every)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        self.gamma, self.ramp_steps = float(gamma), int(ramp_steps)

    def update(self, step: int, final: bool) -> None:
        gamma = self.gamma if self.ramp_steps <= 0 else self.gamma * min(step / self.ramp_steps, 1.0)
        for layer in masked_layers(self.model):
            threshold = targeting_threshold(ops.convert_to_numpy(layer.masked_kernel()), gamma, layer.dropout_variant)
            layer.threshold.assign(threshold)


def targeting_threshold(kernel: np.ndarray, gamma: float, variant: str) -> float:
    """The score below which the ``round(gamma * n)`` smallest weights (or units) fall.

    Returns the smallest score *outside* the targeted set, so ``score < threshold`` selects it
    (ties at the boundary included).
    """
    scores = pruning.weight_scores(kernel).ravel() if variant == "weight" else pruning.unit_scores(kernel)
    n = round(gamma * scores.size)
    if n <= 0:
        return 0.0
    if n >= scores.size:
        return float(np.inf)
    return float(np.partition(scores, n)[n])
