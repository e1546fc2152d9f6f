"""Prune a Keras 3 model while it trains, in the user's own ``model.fit``: :class:`PruningCallback`.

The mechanism (masks as variable constraints, the schedules, the granularities, every kernel layer)
is :class:`prunelib.toolkit.masking.MaskingCallback`'s; this class adds ``start=``: prune and
re-fit in closed form with one of the library's post-training methods
(:func:`prunelib.post_training_model`) when ``fit`` starts, then fine-tune with those masks fixed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from prunelib.toolkit import api
from prunelib.toolkit import kernels as kl
from prunelib.toolkit.masking import MaskingCallback, percent
from prunelib.toolkit.schedules import ConstantSparsity, PolynomialDecay


class PruningCallback(MaskingCallback):
    """Prune a compiled Keras model during its own ``model.fit``, with its own optimizer, loss and data.

    ``model.fit(x, y, epochs=2, callbacks=[prunelib.PruningCallback(90)])`` ramps each pruned layer
    from dense to 90 % along Zhu & Gupta's cubic over the first half of the ``fit``, updating the
    masks every 100 steps, and trains on with the masks fixed. At the end of the schedule each
    pruned kernel has exactly ``round(k/100 * n)`` zeros (``"unit"``: that many whole units,
    ``"global"``: that many weights over all pruned kernels together, ``"N:M"``: every group of M
    inputs keeps N). A pruned weight is exactly zero after every optimizer step.

    Args:
        k: the final percent in [0, 100] (a fraction below 1 warns: k is a percent). Leave it out
            when ``schedule`` says it, for N:M, or to fine-tune with ``masks`` fixed.
        granularity: ``"weight"`` (smallest |w| per kernel), ``"unit"`` (whole units or filters of
            smallest L2 norm, their biases too), ``"global"`` (one |w| threshold over all pruned
            kernels) or an N:M ratio such as ``"2:4"`` (along each kernel's input channels).
        schedule: a :mod:`prunelib.schedules` schedule; default ``PolynomialDecay(0, k, b, None)``
            with frequency 100, ``b`` the step where the training's epoch 0 began (the optimizer's
            step when ``fit`` starts, less ``initial_epoch`` epochs) and its ``end_step`` half-way
            through the training's ``epochs``. N:M masks are set at the schedule's ``begin_step``
            (default 0) and kept.
        layers: names of the only layers to prune (output layers allowed when named).
        skip: names of layers not to prune.
        include_output: prune the model's output layers too (by default they are left dense, as
            :func:`prunelib.prune_model` leaves them).
        masks: masks to start from, ``{"<layer>/<variable>": bool array}`` (:attr:`masks` of an earlier
            run, or :func:`prunelib.load_masks` of what :func:`prunelib.save_masks` wrote): a run
            resumed from a checkpoint keeps exactly the masks it had. With neither ``k`` nor
            ``schedule``, the masks stay fixed for the whole ``fit`` (fine-tuning a pruned model;
            ``"unit"`` then zeroes the bias of a unit with no kept weight).
        start: a post-training method (:func:`prunelib.post_training_methods`, e.g.
            ``"per-unit-obs-gradual"``; ``unit-*`` with ``granularity="unit"``): when ``fit`` starts,
            every kernel layer but the outputs (Dense and convolutions) is pruned at ``k`` and
            re-fitted in closed form from ``x`` (:func:`prunelib.post_training_model`), then trained
            with those masks fixed.
        x: calibration inputs for ``start``.

    Every layer holding a kernel is pruned: Dense, EinsumDense, Conv1D/2D/3D, DepthwiseConv1D/2D,
    SeparableConv1D/2D (both kernels; unit pruning removes pointwise filters), Conv1D/2D/3DTranspose
    and Embedding. ``logs`` gain ``prune_k`` (the schedule's k now) every batch and
    ``sparsity/<layer>`` (percent of the layer's kernel weights at zero) every epoch; put the
    callback before TensorBoard or CSVLogger in ``callbacks`` so that they record them.

    Raises:
        ValueError: at construction, a bad ``k``, granularity or schedule (a ``ConstantSparsity``
            whose ``k`` an N:M granularity contradicts); when ``fit`` starts, before any step, an
            unknown layer name, a kernel that N:M cannot group, ``EarlyStopping(restore_best_weights=True)``
            or ``BackupAndRestore`` after this callback in ``callbacks``, or ``SwapEMAWeights`` before
            it (each would undo the masks), another pruning callback of the same ``fit`` pruning one
            of the same layers; at a mask update, weights that turned NaN or infinite (a diverged
            ``fit``).

    Warns:
        When ``fit`` starts, about layers holding weights it does not prune (a kernel inside a
        wrapper such as ``TimeDistributed``, a recurrent layer); when it ends, if the schedule had
        not reached ``k`` (or, for N:M, had not begun).

    Example:
        >>> import keras, numpy as np, prunelib
        >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
        ...                           keras.layers.Dense(4)])
        >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> x, y = np.random.default_rng(0).random((256, 16), dtype=np.float32), np.arange(256) % 4
        >>> _ = model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[prunelib.PruningCallback(75)])
        >>> int((model.layers[0].kernel.numpy() == 0).sum())  # round(0.75 * 16 * 32)
        384
    """

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
        start: str | None = None,
        x: np.ndarray | None = None,
    ) -> None:
        self.start, self.x = start, x
        if start is None:
            super().__init__(
                k, granularity, schedule=schedule, layers=layers, skip=skip, include_output=include_output, masks=masks
            )
            return
        self._check_start(k, granularity, schedule, layers, skip, include_output, masks)
        # the masks come from the closed-form prune when fit starts, then stay fixed
        super().__init__(None, granularity, masks={})
        self.start_k = percent(k)

    def _check_start(self, k, granularity, schedule, layers, skip, include_output, masks) -> None:
        """``start=``: a post-training method prunes every kernel layer but the outputs at ``k``, then the
        masks stay fixed; refuse what would contradict that, before any work."""
        from prunelib.core.post_training import get_method

        spec = get_method(self.start)  # an unknown name: the message lists the methods
        if k is None:
            raise ValueError(f"start={self.start!r} prunes to k percent first: give k")
        if spec.granularity != granularity:
            raise ValueError(
                f"start={self.start!r} prunes {spec.granularity}s; pass granularity={spec.granularity!r} "
                f"(it is {granularity!r})"
            )
        if schedule is not None or masks is not None:
            raise ValueError(f"start={self.start!r} sets the masks once and keeps them: leave schedule and masks out")
        if layers is not None or skip is not None or include_output:
            raise ValueError(
                f"start={self.start!r} prunes every kernel layer but the outputs: leave layers, skip and include_output out"
            )
        if self.x is None:
            raise ValueError(f"start={self.start!r} needs calibration inputs: pass x=<a few thousand training inputs>")

    def _before_masks(self) -> None:
        """Prune and re-fit the model in place with the ``start`` method; its zeros are the masks."""
        if self.start is None or self._same:  # pruned once; a later fit goes on with those masks
            return
        pruned = api.post_training_model(self.model, self.start_k, self.x, method=self.start)
        self.model.set_weights(pruned.get_weights())
        # the layers the method prunes: every kernel layer but the outputs (Dense and convolutions),
        # those the mechanism prunes with no layer names given (this model's, on every new model)
        specs = kl.prunable_layers(self.model)
        self._start_masks = {
            spec.key(kernel.variable): np.asarray(kernel.variable.numpy()) != 0
            for spec in specs
            for kernel in spec.kernels
        }
