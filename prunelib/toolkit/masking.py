"""Pruning while training, the mechanism: :class:`MaskingCallback`, masks on a schedule in ``fit``.

How it keeps pruned weights at exactly zero at no cost per step: each pruned kernel gets a
*constraint* for the duration of ``fit`` (a Keras variable constraint, applied by the optimizer
right after every update, inside the compiled train step, ``jit_compile`` included), which
multiplies the kernel by its mask. Momentum, weight decay or the user's own constraint cannot bring
a pruned weight back: whatever the update did, the constraint zeroes it in the same step. Masks
live in variables the callback owns, so updating them on the schedule costs no retrace; the model
gets no extra layers or variables, and after ``fit`` its constraints are the user's again: nothing
to strip, and ``model.save`` / ``keras.models.load_model`` need no custom objects.

The masks are computed by :mod:`prunelib.core.tensor_masks` on the schedule of
:mod:`prunelib.toolkit.schedules`; which layers, and which axes are units, come from
:mod:`prunelib.toolkit.kernels`. The public :class:`prunelib.PruningCallback`
(:mod:`prunelib.toolkit.callback`) is this class plus ``start=`` (a closed-form prune first); the
challenge's recovery strategies train on this class directly, so what determines their results
stays this module and the ones it names.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import replace

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

from prunelib.core import tensor_masks as tm  # noqa: E402
from prunelib.core.pruning import validate_k  # noqa: E402
from prunelib.toolkit import kernels as kl  # noqa: E402
from prunelib.toolkit.schedules import ConstantSparsity, PolynomialDecay  # noqa: E402

DEFAULT_FREQUENCY = 100
"""Steps between mask updates of the default schedule (tfmot's default)."""

DEFAULT_RAMP = 0.5
"""Share of a ``fit``'s steps over which the default schedule ramps to ``k`` (Zhu & Gupta's cubic)."""


def percent(k: object) -> float:
    """:func:`prunelib.core.pruning.validate_k`, and a warning for a fraction below 1 (tfmot's
    ``0.8`` is prunelib's ``80``)."""
    k = validate_k(k)
    if 0 < k < 1:
        warnings.warn(f"k={k:g} prunes {k:g} % (k is a percent); for {100 * k:g} % write {100 * k:g}", stacklevel=3)
    return k


def _fit_callbacks() -> list:
    """The callbacks of the ``fit`` now starting, from Keras' ``CallbackList`` that calls
    ``on_train_begin`` (Keras gives a callback no other way to see them); ``[]`` if not found."""
    frame = inspect.currentframe()
    try:
        for _ in range(6):
            frame = frame.f_back if frame is not None else None
            owner = frame.f_locals.get("self") if frame is not None else None
            if isinstance(owner, keras.callbacks.CallbackList):
                return list(owner.callbacks)
        return []
    finally:
        del frame


class _Masked(keras.constraints.Constraint):
    """``mask * inner(w)``: the user's constraint (if any), then the mask. Never serialized."""

    def __init__(self, mask, inner=None) -> None:
        self.mask, self.inner = mask, inner

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        return keras.ops.multiply(w, keras.ops.cast(self.mask, w.dtype))


class MaskingCallback(keras.callbacks.Callback):
    """:class:`prunelib.PruningCallback` without ``start=``: the arguments, behaviour and guarantees
    documented there (k, granularity, schedule, layers, skip, include_output, masks)."""

    def __init__(
        self,
        k: float | None = None,
        granularity: str = "weight",
        *,
        schedule: ConstantSparsity | PolynomialDecay | None = None,
        layers: Iterable[str] | None = None,
        skip: Iterable[str] | None = None,
        include_output: bool = False,
        masks: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.nm = tm.parse_nm(granularity)
        self.granularity = granularity
        if k is not None:
            k = percent(k)
        if schedule is not None and not isinstance(schedule, ConstantSparsity | PolynomialDecay):
            raise ValueError(
                f"schedule must be a prunelib.schedules.ConstantSparsity or PolynomialDecay, got {type(schedule).__name__}"
            )
        if self.nm is not None:
            if k is not None:
                raise ValueError(f"granularity {granularity!r} sets the sparsity itself; leave k out")
            if isinstance(schedule, PolynomialDecay):
                raise ValueError("N:M masks are set once, at the schedule's begin_step: use ConstantSparsity or none")
            self.final_k = 100.0 * (self.nm[1] - self.nm[0]) / self.nm[1]
            if schedule is not None and not math.isclose(schedule.k, self.final_k, rel_tol=1e-6, abs_tol=1e-9):
                raise ValueError(
                    f"granularity {granularity!r} prunes {self.final_k:g} %, but the schedule says "
                    f"k={schedule.k:g}; use ConstantSparsity({self.final_k:g}, begin_step=...)"
                )
        elif k is None and schedule is None and masks is not None:
            self.final_k = None  # fine-tuning: the masks given stay as they are
        else:
            final = None if schedule is None else getattr(schedule, "final_k", getattr(schedule, "k", None))
            if k is None and schedule is None:
                raise ValueError("give k (the final percent), a schedule, or masks to keep fixed")
            if k is not None and schedule is not None and not math.isclose(k, final, rel_tol=1e-6, abs_tol=1e-9):
                raise ValueError(f"k={k:g} but the schedule ends at {final:g}; give one of them")
            self.final_k = final if final is not None else k
        self.schedule = schedule
        self.layer_names = kl.layer_names("layers", layers)
        self.skip = kl.layer_names("skip", skip)
        if not isinstance(include_output, bool | np.bool_):
            raise ValueError(f"include_output must be True or False, got {include_output!r}")
        self.include_output = bool(include_output)
        if masks is not None and not isinstance(masks, Mapping):
            raise ValueError(
                f'masks must be a dict {{"<layer>/<variable>": boolean array}}, got {type(masks).__name__}'
            )
        self._start_masks = None if masks is None else {str(n): np.asarray(m) for n, m in masks.items()}
        self._fixed = k is None and schedule is None and masks is not None
        self._specs: list[kl.PrunableLayer] = []
        self._keep: dict[str, np.ndarray] = {}
        self._mask_vars: dict[str, object] = {}
        self._saved_constraints: list[tuple[object, object]] = []
        self.k_now = 0.0
        self.history: list[tuple[int, float]] = []
        self._owner: weakref.ref | None = None
        self._same = False
        self._open_end: PolynomialDecay | None = None
        self._default = False  # the default schedule (begins where the training's epoch 0 began)

    # --- what is pruned --------------------------------------------------------------------------
    @property
    def masks(self) -> dict[str, np.ndarray]:
        """The current keep-masks, ``{"<layer>/<variable>": bool array}`` (copies; biases too under
        ``"unit"``)."""
        return {name: keep.copy() for name, keep in self._keep.items()}

    def _kernels(self) -> list[tuple[str, kl.Kernel]]:
        return [(spec.key(kernel.variable), kernel) for spec in self._specs for kernel in spec.kernels]

    # --- set-up and tear-down ----------------------------------------------------------------------
    def _before_masks(self) -> None:
        """What a subclass does to the model when ``fit`` starts, before the masks are set up
        (``self._same``: this callback pruned this model in an earlier ``fit``)."""

    def detach(self) -> None:
        """Give the model's variables their own constraints back (``fit`` does this at its end).

        A ``fit`` that stops on an exception or a ``KeyboardInterrupt`` never reaches its end, so the
        masks stay attached: later training keeps the pruned weights at zero, as if pruning went on.
        Call this to release them; the next ``fit`` with this callback attaches them again.
        """
        for variable, constraint in self._saved_constraints:
            variable.constraint = constraint
        self._saved_constraints = []
        if self.model is not None:
            self.model.train_function = None  # the next fit traces without our constraints

    def on_train_begin(self, logs=None) -> None:
        model = self.model
        callbacks = _fit_callbacks()
        self._check_order(callbacks)
        self._check_alone(callbacks)
        self.detach()  # still attached if an earlier fit was interrupted
        same = self._owner is not None and self._owner() is model and bool(self._keep)
        if not same:  # a new model: its own masks, from its own schedule
            self.history, self.k_now, self._active, self._keep = [], 0.0, None, {}
            self._default = False
            kernel_layers = [layer for layer in kl.flat_layers(model) if isinstance(layer, kl.KERNEL_TYPES)]
            kl.warn_untouched(model, kernel_layers, type(self).__name__, depth=2)
        self._owner, self._same = weakref.ref(model), same
        previous = dict(self._keep) if same else None
        self._before_masks()
        self._specs = kl.prunable_layers(
            model, layers=self.layer_names, skip=self.skip, include_output=self.include_output
        )
        if self.nm is not None:
            kl.check_nm(self._specs, self.nm)
        if self.granularity == "unit":
            for spec in self._specs:
                kl.check_unit_bias(spec)
        schedule = self.schedule
        if same:  # the same model again: its masks and its schedule go on where they were
            schedule = self._open_end or self._active
        elif self.nm is None and schedule is None and not self._fixed:
            # its begin is the step where the training's epoch 0 began, known at the first epoch
            schedule = PolynomialDecay(0.0, self.final_k, self._step(), None, frequency=DEFAULT_FREQUENCY)
            self._default = True
        self._open_end = None
        if isinstance(schedule, PolynomialDecay) and schedule.end_step is None:
            epochs, steps = self.params.get("epochs"), self.params.get("steps")
            if epochs == 0:
                epochs = steps = 1  # nothing trains; any end will do
            if not epochs or not steps:
                raise ValueError(
                    "this fit does not say how many steps it runs (a dataset of unknown length), so the "
                    "schedule cannot end half-way: give PolynomialDecay(..., end_step=...)"
                )
            # Keras' params give the training's epochs, not the epoch this fit starts at
            # (initial_epoch, a resumed training): the end is set at the first epoch; until then,
            # an end as if the fit began at epoch 0
            self._open_end = schedule
            schedule = self._ended(schedule, self._step(), epochs)
        self._active = None if self._fixed else schedule or ConstantSparsity(self.final_k)
        start = previous if same else self._checked_start(self._start_masks)
        self._install(start)
        step = self._step()
        self._last_checked = step
        if self._active is None:  # fixed masks: a unit with no kept weight loses its bias too
            if self.granularity == "unit":
                self._keep_biases()
                self._assign_all()
            self.k_now = self._pruned_percent()
        elif (start is None or same) and self._open_end is None and step >= self._active.begin_step:
            self._update(step)
        elif start is not None and not same:
            # a resumed run's masks are where an uninterrupted one's are: at the schedule's k of its
            # last update (the next update goes on from there)
            self.k_now = self._k_reached(step)
        # the train step was traced (or will be) without the constraints: trace it again with them
        model.make_train_function(force=True)

    def _ended(self, schedule: PolynomialDecay, origin: int, epochs: int) -> PolynomialDecay:
        """``schedule`` ending :data:`DEFAULT_RAMP` of the way through a training of ``epochs`` epochs
        whose epoch 0 began at step ``origin`` (negative: a fit started at a later epoch with a new
        optimizer); the default schedule also begins there."""
        steps = self.params.get("steps") or 1
        if self._default:
            schedule = replace(schedule, begin_step=max(origin, 0))
        return schedule.with_end(max(origin + int(DEFAULT_RAMP * epochs * steps), schedule.begin_step + 1))

    def _k_reached(self, step: int) -> float:
        """The schedule's k at its last mask update at or before ``step`` (0 before its first)."""
        schedule = self._active
        t = step if schedule.end_step is None else min(step, schedule.end_step)
        while t >= schedule.begin_step and not schedule.updates_at(t):  # at most `frequency` steps back
            t -= 1
        return schedule.k_at(t) if t >= schedule.begin_step else 0.0

    def _check_alone(self, callbacks: list) -> None:
        """Refuse, before any step (and before the first of them touches the model), a layer that
        another pruning callback of this fit prunes too: both masks would hold, so neither
        callback's sparsity would be what it promises, and ending the fit would give the layer one
        callback's mask back as its constraint."""

        def pruned(callback: MaskingCallback) -> set[str]:
            layers = kl.prunable_layers(
                self.model, layers=callback.layer_names, skip=callback.skip, include_output=callback.include_output
            )
            return {spec.name for spec in layers}

        others = [c for c in dict.fromkeys(callbacks) if isinstance(c, MaskingCallback) and c is not self]
        if not others:
            return
        mine = pruned(self)
        for other in others:
            try:
                shared = mine & pruned(other)
            except ValueError:  # the other's own mistake, which it reports itself
                continue
            if shared:
                raise ValueError(
                    f"layer {sorted(shared)[0]!r} is pruned by two callbacks of this fit ({type(self).__name__} "
                    f"and {type(other).__name__}); give each its own layers (layers=, skip=)"
                )

    def _check_order(self, callbacks: list) -> None:
        """Refuse, before any step, the Keras callbacks that would undo the masks from the wrong place in
        ``callbacks``: ``EarlyStopping(restore_best_weights=True)`` after this one restores an earlier
        epoch's weights, less pruned than :attr:`masks`, once this one has applied them at the end of
        ``fit``; ``BackupAndRestore`` after it restores weights after the masks were computed;
        ``SwapEMAWeights`` before it swaps in averages this one has not masked yet."""
        if not any(c is self for c in callbacks):
            return
        me = next(i for i, c in enumerate(callbacks) if c is self)
        name = type(self).__name__
        for i, c in enumerate(callbacks):
            if i > me and isinstance(c, keras.callbacks.EarlyStopping) and c.restore_best_weights:
                raise ValueError(
                    f"EarlyStopping(restore_best_weights=True) comes after {name} in callbacks: it would "
                    f"restore an earlier epoch's weights, less pruned than the masks, after {name} applies "
                    f"them at the end of fit; put it before {name}"
                )
            if i > me and isinstance(c, keras.callbacks.BackupAndRestore):
                raise ValueError(
                    f"BackupAndRestore comes after {name} in callbacks: it would restore the weights and "
                    f"the step of an interrupted fit after {name} computed its masks from the ones before; "
                    f"put it before {name}"
                )
            if i < me and isinstance(c, keras.callbacks.SwapEMAWeights):
                raise ValueError(
                    f"SwapEMAWeights comes before {name} in callbacks: it would evaluate and save the "
                    f"optimizer's averages before {name} masks them; put it after {name}"
                )

    def _mask_averages(self) -> None:
        """Zero the pruned entries of the optimizer's moving averages (``use_ema=True``). Keras averages
        a weight after the update and before the constraint masks it, so a pruned weight's average
        is small, not zero: what ``SwapEMAWeights`` evaluates and saves would be dense."""
        optimizer = getattr(self.model, "optimizer", None)
        while getattr(optimizer, "inner_optimizer", None) is not None:  # a LossScaleOptimizer's (mixed precision)
            optimizer = optimizer.inner_optimizer
        averages = getattr(optimizer, "_model_variables_moving_average", None)
        if not getattr(optimizer, "use_ema", False) or not averages:
            return
        for name, (variable, _) in self._mask_vars.items():
            keep = self._keep[name]
            try:
                average = averages[optimizer._get_variable_index(variable)]
            except (KeyError, IndexError):  # not one of the variables the optimizer trains
                continue
            if average is not None and not keep.all():
                average.assign(np.where(keep, average.numpy(), 0).astype(average.dtype))

    def _checked_start(self, start: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
        """``masks=`` in this callback's naming: ``"<layer>/<variable>"`` (what :attr:`masks` gives,
        biases included) or, for a layer with one kernel, the layer's name (what
        :func:`prunelib.model_masks` and :func:`prunelib.save_masks` give)."""
        if start is None:
            return None
        variables = {}
        for spec in self._specs:
            variables.update({spec.key(k.variable): k.shape for k in spec.kernels})
            if spec.bias is not None:
                variables[spec.key(spec.bias)] = tuple(spec.bias.shape)
        by_layer = {spec.name: spec.key(spec.kernels[0].variable) for spec in self._specs if len(spec.kernels) == 1}
        out: dict[str, np.ndarray] = {}
        for name, mask in start.items():
            key = name if name in variables else by_layer.get(name)
            if key is None:
                raise ValueError(
                    f"masks for {name!r}, which is not a pruned kernel or bias here; they are {sorted(variables)}"
                )
            if key in out:
                raise ValueError(f"two masks for {key!r} (as {name!r} and by its other name); give one")
            if mask.dtype != bool or mask.shape != variables[key]:
                raise ValueError(
                    f"mask for {name!r} must be a boolean array of shape {variables[key]}, got {mask.dtype} {mask.shape}"
                )
            out[key] = mask
        return out

    def _install(self, start: Mapping[str, np.ndarray] | None) -> None:
        self._keep, self._mask_vars, self._saved_constraints = {}, {}, []
        start = start or {}
        for spec in self._specs:
            variables = [kernel.variable for kernel in spec.kernels]
            if spec.bias is not None and (self.granularity == "unit" or spec.key(spec.bias) in start):
                variables.append(spec.bias)
            for v in variables:
                name = spec.key(v)
                self._attach(name, v, start.get(name, np.ones(tuple(v.shape), bool)))
        self._assign_all()

    def _attach(self, name: str, variable, keep: np.ndarray) -> None:
        mask = keras.Variable(keep.astype(variable.dtype), trainable=False, name="prune_mask")
        self._keep[name] = keep.copy()
        self._mask_vars[name] = (variable, mask)
        self._saved_constraints.append((variable, variable.constraint))
        variable.constraint = _Masked(mask, variable.constraint)

    def _assign_all(self) -> None:
        """Write every mask into its variable and zero the variable (and its moving average) where
        it masks."""
        for name, (variable, mask) in self._mask_vars.items():
            keep = self._keep[name]
            mask.assign(keep.astype(mask.dtype))
            if not keep.all():
                variable.assign(np.where(keep, variable.numpy(), 0).astype(variable.dtype))
        self._mask_averages()

    def on_train_end(self, logs=None) -> None:
        # Keras' EMA writes its averages into the weights after the last step; masks come last
        self._assign_all()
        self.detach()
        step = self._step()
        # what the masks are, not what the schedule says now: they change only on its update steps
        if self._active is not None and self.k_now < self.final_k - 1e-9:
            if self.nm is not None:
                reason = f"before its N:M masks were set (at the schedule's begin_step, {self._active.begin_step})"
                advice = "begin the schedule earlier or train longer"
            else:
                reason = f"before the masks reached k={self.final_k:g} (they are at k={self.k_now:g})"
                advice = "end the schedule earlier or train longer"
            warnings.warn(f"training ended at step {step}, {reason}; {advice}", stacklevel=2)

    # --- on the schedule ---------------------------------------------------------------------------
    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _pruned_percent(self) -> float:
        kernels = [self._keep[name] for name, _ in self._kernels()]
        return 100.0 * sum(int((~m).sum()) for m in kernels) / max(sum(m.size for m in kernels), 1)

    def on_epoch_begin(self, epoch, logs=None) -> None:
        # one read of the optimizer's step per epoch; within it, Keras' batch index says the step
        # (reading the variable after every batch would wait for each step to finish)
        self._epoch_first = self._step()
        if self._open_end is not None:  # the fit's first epoch: the training's epoch 0 began epoch steps ago
            steps = self.params.get("steps") or 1
            self._active = self._ended(self._open_end, self._epoch_first - epoch * steps, self.params["epochs"])
            self._open_end = None
            if self._epoch_first >= self._active.begin_step:
                self._update(self._epoch_first)

    def on_test_begin(self, logs=None) -> None:
        self._mask_averages()  # SwapEMAWeights, after this callback, evaluates the averages

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self._active is None:
            if logs is not None:
                logs["prune_k"] = self.k_now
            return
        steps = self.params.get("steps") if self.params else None
        if getattr(self.model.optimizer, "gradient_accumulation_steps", None):
            step = self._step()  # the optimizer counts updates, not batches
        else:  # Keras reports the last group's end index, which may run past a short epoch's end
            step = self._epoch_first + int(batch) + 1
            if steps:
                step = min(step, self._epoch_first + int(steps))
        due = any(self._active.updates_at(t) for t in range(self._last_checked + 1, step + 1))
        self._last_checked = step
        if due:
            self._update(step)
        if logs is not None:
            logs["prune_k"] = self.k_now

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._mask_averages()  # SwapEMAWeights(swap_on_epoch=True), after this one, saves them
        if logs is None:
            return
        logs["prune_k"] = self.k_now
        for spec in self._specs:
            kept = sum(int(self._keep[spec.key(k.variable)].sum()) for k in spec.kernels)
            logs[f"sparsity/{spec.name}"] = 100.0 * (1 - kept / spec.size)

    def _update(self, step: int) -> None:
        names, kernels = zip(*self._kernels())
        values = [np.asarray(k.variable.numpy()) for k in kernels]
        for name, value in zip(names, values):
            if not np.isfinite(value).all():  # a diverged fit: no magnitude to rank, no mask to give
                raise ValueError(
                    f"at step {step}, {name} holds NaN or infinite weights (the training diverged): pruning "
                    "cannot rank them; lower the learning rate, or stop on keras.callbacks.TerminateOnNaN"
                )
        keeps = [self._keep[name] for name in names]
        if self.nm is not None:
            if self.history:
                return  # N:M masks are set once
            n, m = self.nm
            new = [
                keep if kernel.input_axis is None else tm.nm_mask(value, n, m, kernel.input_axis, keep)
                for kernel, value, keep in zip(kernels, values, keeps)
            ]
            k = self.final_k
        else:
            k = self._active.k_at(step)
            if self.history and k <= self.history[-1][1]:
                return
            if self.granularity == "global":
                new = tm.global_weight_masks(values, k, keeps)
            elif self.granularity == "unit":  # a layer's units are its outputs (not a depthwise stage's)
                new = [
                    tm.unit_mask(v, k, kernel.unit_axes, keep) if kernel.units_of_layer else keep
                    for kernel, v, keep in zip(kernels, values, keeps)
                ]
            else:
                new = [tm.weight_mask(v, k, keep) for v, keep in zip(values, keeps)]
        self._keep.update(zip(names, new))
        if self.granularity == "unit":
            self._keep_biases()
        self._assign_all()
        self.k_now = k
        self.history.append((step, k))

    def _keep_biases(self) -> None:
        """Unit pruning's bias masks: a unit with no kept weight loses its bias too
        (:func:`prunelib.toolkit.kernels.alive_units`, the rule ``prune_model`` applies)."""
        for spec in self._specs:
            if spec.bias is not None:
                kernels = [
                    self._keep.get(spec.key(kernel.variable), np.ones(kernel.shape, bool)) for kernel in spec.kernels
                ]
                self._keep[spec.key(spec.bias)] = kl.alive_units(spec, kernels)
