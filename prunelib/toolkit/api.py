"""Prune your own Keras model: the model-level functions of prunelib's public face.

:func:`prune_model` and the masks' functions take any Keras 3 model's kernel layers (Dense, Conv,
depthwise, separable, transposed, EinsumDense, Embedding: :mod:`prunelib.toolkit.kernels`); the
re-fits, compaction and the Predictor take models whose weighted layers are Dense (see
:mod:`prunelib.toolkit.chain`). All return new models and never mutate their inputs. Masks are
dicts ``{layer name: bool array}`` shaped like the kernels (``True`` keeps a weight).
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from numbers import Real

import numpy as np

from prunelib.base.files import creating_folders, replacing, user_path
from prunelib.core import forward, pruning
from prunelib.core import tensor_masks as tm
from prunelib.core.reconstruct import reconstruct_with_biases
from prunelib.toolkit import chain as ch
from prunelib.toolkit import kernels as kl

keras = ch.keras
MaskDict = dict[str, np.ndarray]


def _assign(layer, kernel: np.ndarray, bias: np.ndarray | None) -> None:
    layer.kernel.assign(np.asarray(kernel, dtype=layer.kernel.dtype))
    if layer.bias is not None and bias is not None:
        layer.bias.assign(np.asarray(bias, dtype=layer.bias.dtype))


def _kernel_layers(model, what: str) -> list[keras.layers.Layer]:
    """Every layer of ``model`` holding a kernel prunelib prunes, in order.

    Raises:
        ValueError: there is none, or two of them share a name (in nested sub-models), which would
            make the masks' names ambiguous.
    """
    found = [layer for layer in kl.flat_layers(model) if isinstance(layer, kl.KERNEL_TYPES)]
    if not found:
        raise ValueError(
            f"model {model.name!r} has no Dense, Conv or other kernel layer for {what}; kernel layers are "
            f"{list(kl.KERNEL_LAYERS)}"
        )
    return kl.unique_names(found, model)


def _specs(model, what: str) -> list[kl.PrunableLayer]:
    """:func:`prunelib.toolkit.kernels.describe` of every kernel layer prunelib can read (one it
    refuses, e.g. a LoRA-enabled layer, was never pruned by prunelib and holds no masks)."""
    out = []
    for layer in _kernel_layers(model, what):
        try:
            spec = kl.describe(layer)
        except ValueError:
            continue
        if spec is not None:
            out.append(spec)
    return out


def _mask_keys(spec: kl.PrunableLayer) -> list[str]:
    """The names of a layer's kernel masks: the layer's name for a single kernel (as ever), else
    ``"<layer>/<variable>"`` (a SeparableConv's ``"<layer>/depthwise_kernel"`` and
    ``"<layer>/pointwise_kernel"``, as :func:`prunelib.toolkit.kernels.key` names them)."""
    if len(spec.kernels) == 1:
        return [spec.name]
    return [spec.key(kernel.variable) for kernel in spec.kernels]


def _parse_method(method: object, k: float | None) -> tuple[tuple[int, int] | None, float]:
    """``(n, m)`` of an N:M method (``None`` for weight/unit) and the percent ``k`` to prune.

    Raises:
        ValueError: an unknown method, N:M with N >= M, a bad ``k``, or a ``k`` that contradicts N:M.
    """
    if method in ("weight", "unit"):
        if k is None:
            raise ValueError(f"method={method!r} needs k, the percent of each layer's weights (or units) to prune")
        return None, pruning.validate_k(k)
    if not (isinstance(method, str) and ":" in method):
        raise ValueError(f"unknown pruning method {method!r}; choose 'weight', 'unit' or an N:M ratio such as '2:4'")
    n, m = tm.parse_nm(method, names=("weight", "unit"))  # N >= M, or no N:M: its message says why
    implied = 100.0 * (m - n) / m
    if k is not None and pruning.validate_k(k) != implied:
        raise ValueError(f"method={method!r} prunes {implied:g} % of each kernel itself; pass k=None (or {implied:g})")
    return (n, m), implied


def _nonfinite(spec: kl.PrunableLayer) -> None:
    for variable in [kernel.variable for kernel in spec.kernels] + ([spec.bias] if spec.bias is not None else []):
        bad = int(np.sum(~np.isfinite(np.asarray(variable.numpy()))))
        if bad:
            raise ValueError(
                f"layer {spec.name!r} holds {bad} NaN or infinite values in {variable.name!r}; its "
                "smallest weights are undefined (check the training run, or skip it)"
            )


def _check_prunable(specs: Sequence[kl.PrunableLayer], nm: tuple[int, int] | None, method: str) -> None:
    """Refuse, before any work, a layer the method cannot prune exactly."""
    for spec in specs:
        _nonfinite(spec)
        if nm is not None:
            kl.check_nm([spec], nm)
        if method == "unit":
            kl.check_unit_bias(spec)


def _layer_masks(spec: kl.PrunableLayer, values: Sequence[np.ndarray], k: float, method: str, nm) -> list[np.ndarray]:
    """One keep-mask per kernel of ``spec`` (:mod:`prunelib.core.tensor_masks`, one k convention)."""
    out = []
    for kernel, value in zip(spec.kernels, values):
        if nm is not None:
            keep = None if kernel.input_axis is None else tm.nm_mask(value, nm[0], nm[1], kernel.input_axis)
        elif method == "unit":
            keep = tm.unit_mask(value, k, kernel.unit_axes) if kernel.units_of_layer else None
        else:
            keep = tm.weight_mask(value, k)
        out.append(np.ones(value.shape, bool) if keep is None else keep)
    return out


def _copy(model):
    """A new model computing what ``model`` does, with copies of its weights (checked on a probe
    batch where the model has one input of a known shape).

    Raises:
        ValueError: the model cannot be copied, or its copy predicts something else (a layer whose
            config does not hold all that it computes).
    """
    try:
        twin = ch.clone(model)
    except Exception as err:  # Keras raises many types for a model it cannot rebuild
        raise ch.rebuild_error(model, err, "prunelib never modifies the model it is given") from None
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if inputs and len(inputs) == 1 and None not in tuple(inputs[0].shape[1:]) and ch.input_dtype(model) is not None:
        probe = ch.probe_batch(model, tuple(inputs[0].shape[1:]), 4)
        try:
            want = [ch.keras_numpy(t) for t in keras.tree.flatten(ch.run(model, probe))]
        except Exception:  # noqa: BLE001 - the model refuses the probe (ids it has no entry for): no check
            return twin
        got = [ch.keras_numpy(t) for t in keras.tree.flatten(ch.run(twin, probe))]
        if any(
            a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True) for a, b in zip(got, want)
        ):
            raise ValueError(
                f"model {model.name!r} cannot be copied exactly: a copy rebuilt from its layers' configs predicts "
                "something else (a layer whose get_config() does not hold all that it computes)"
            )
    return twin


def _twin_specs(model, twin, specs: Sequence[kl.PrunableLayer]) -> dict[str, kl.PrunableLayer]:
    """The twin's layers standing for ``specs`` (by position in the flattened layers, names checked)."""
    pairs = dict(zip((layer.name for layer in kl.flat_layers(model)), kl.flat_layers(twin)))
    out = {}
    for spec in specs:
        other = pairs.get(spec.name)
        if other is None or other.name != spec.name:
            raise ValueError(f"the copy of model {model.name!r} does not have layer {spec.name!r} in its place")
        out[spec.name] = kl.describe(other)
    return out


def _write(spec: kl.PrunableLayer, kernels: Sequence[np.ndarray], bias: np.ndarray | None) -> None:
    for kernel, value in zip(spec.kernels, kernels):
        kernel.variable.assign(np.asarray(value, dtype=kernel.variable.dtype))
    if spec.bias is not None and bias is not None:
        spec.bias.assign(np.asarray(bias, dtype=spec.bias.dtype))


def _masked(value: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    return value if keep is None else np.where(keep, value, np.zeros((), value.dtype))


_FRACTION = "k is a percent: k={k} prunes {k} %, not {pct:g} %; for {pct:g} % pass k={pct:g}"
"""The warning for a k below 1, which tfmot and Keras users write as a fraction."""


def prune_model(
    model,
    k: float | None,
    method: str = "weight",
    *,
    skip: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    include_output: bool = False,
):
    """A new model with each layer holding a kernel pruned by ``method`` at ``k`` percent.

    Every kernel layer is pruned: Dense, EinsumDense, Conv1D/2D/3D, DepthwiseConv1D/2D,
    SeparableConv1D/2D (both kernels), Conv1D/2D/3DTranspose and Embedding. Each pruned kernel loses
    exactly ``round(k/100 * n)`` weights (``method="weight"``, smallest |w|) or units
    (``"unit"``, smallest L2 norm: a Dense column, a conv filter, a depthwise ``(channel,
    multiplier)``; a SeparableConv loses pointwise filters), with the unit's bias entry zeroed too,
    so a removed unit of a ReLU/tanh layer outputs 0 — of any layer, the constant ``act(0)``. An
    N:M ratio such as ``"2:4"`` keeps the N largest |w| of every M consecutive inputs of each kernel
    (a Dense kernel's rows, a conv's input channels); a kernel without an input axis (depthwise) stays
    dense. The model's output layers (the last kernel layer before each output) are not pruned
    unless ``include_output=True`` or ``layers=`` names them.

    Args:
        model: a built Keras 3 model; left untouched. A subclassed model has no graph to tell its
            output layers from: name the layers to prune (``layers=``) or pass ``include_output=True``.
        k: percent in [0, 100]; ``None`` (or the ratio's own percent) with N:M.
        method: ``"weight"``, ``"unit"`` or ``"N:M"`` with ``0 < N < M``.
        skip: names of layers not to prune.
        layers: names of the only layers to prune (output layers included when named).
        include_output: prune the output layers too.

    Raises:
        ValueError, before any work: a bad ``k`` or ``method``, an unbuilt model, a subclassed model
            without ``layers=``, no kernel layer, an unknown name in ``skip``/``layers``, one in both,
            a named layer holding no kernel, a kernel N:M cannot group (inputs not a multiple of M),
            a bias unit pruning cannot lay out, NaN or infinite weights, or a layer prunelib cannot
            read exactly (quantized, LoRA-enabled, own ``call``: skip it).

    Warns:
        UserWarning: ``0 < k < 1``: ``k`` is a percent, so 0.8 prunes 0.8 %, not 80 %; and weighted
            layers that are not kernel layers (normalization aside), which are left untouched.

    Example:
        >>> import keras, prunelib
        >>> model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(300, activation="relu"),
        ...                           keras.layers.Dense(10, activation="softmax")])
        >>> pruned = prunelib.prune_model(model, 90)
        >>> round(float((pruned.layers[0].kernel.numpy() == 0).mean()), 3)
        0.9
    """
    ch.check_built(model)
    nm, k = _parse_method(method, k)
    if nm is None and 0 < k < 1:
        # tfmot and Keras callbacks take fractions: a user writing 0.8 most likely means 80 %
        warnings.warn(_FRACTION.format(k=k, pct=k * 100), stacklevel=2)
    if not isinstance(include_output, (bool, np.bool_)):
        raise ValueError(f"include_output must be True or False, got {include_output!r}")
    # read once here: a generator would be used up by the first check and skip nothing after it
    skip, layers = kl.layer_names("skip", skip), kl.layer_names("layers", layers)
    for arg, names in (("layers", layers), ("skip", skip)):
        twice = sorted({n for n in names or () if names.count(n) > 1})
        if twice:
            raise ValueError(f"{arg}= names {twice} more than once; name each layer once")
    every = _kernel_layers(model, "prune_model")
    specs = kl.prunable_layers(model, layers=layers, skip=skip, include_output=bool(include_output))
    _check_prunable(specs, nm, method)
    kl.warn_untouched(model, every)
    twin = _copy(model)
    twins = _twin_specs(model, twin, specs)
    for spec in specs:
        values = [np.array(kernel.variable.numpy()) for kernel in spec.kernels]
        keeps = _layer_masks(spec, values, k, method, nm)
        bias = None
        if spec.bias is not None and method == "unit":
            bias = _masked(np.array(spec.bias.numpy()), kl.alive_units(spec, keeps))
        _write(twins[spec.name], [_masked(v, keep) for v, keep in zip(values, keeps)], bias)
    return twin


BIAS = "/bias"
"""Suffix of a bias-mask key: ``"<layer>/bias"`` (Keras layer names cannot contain ``/``)."""


def model_masks(pruned) -> MaskDict:
    """The keep-masks of a pruned model's kernel layers: ``True`` where a weight is nonzero.

    Keyed by layer name (``{"conv2d": bool array shaped like its kernel}``); a SeparableConv's two
    kernels by ``"<layer>/depthwise_kernel"`` and ``"<layer>/pointwise_kernel"``. Every kernel layer
    but the output layers has an entry; an output layer has one only where it holds a zero (it was
    pruned, ``include_output=True``). A unit with no kept weight (a Dense column, a conv filter)
    counts as removed, and :func:`apply_model_masks` zeroes its bias as unit pruning does. Where a
    pruned model keeps the nonzero bias of such a unit (weight pruning can empty a column), a
    ``"<layer>/bias"`` entry (``True`` = bias kept) says so, so applying the masks reproduces the
    pruned model exactly in every case.

    Raises:
        ValueError: an unbuilt or subclassed model, one without kernel layers, or a quantized one
            (named: take the masks before ``model.quantize``).

    Example:
        >>> import keras, prunelib
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
        >>> masks = prunelib.model_masks(prunelib.prune_model(model, 50))
        >>> {name: int(m.sum()) for name, m in masks.items()} == {model.layers[0].name: 16}
        True
    """
    ch.check_graph(pruned)
    for layer in _kernel_layers(pruned, "model_masks"):
        if getattr(layer, "quantization_mode", None):
            kl.describe(layer)  # quantized after pruning: its zeros are int8 values with scales, refused by name
    specs = _specs(pruned, "model_masks")
    outputs = {id(layer) for layer in kl.output_layers(pruned)}
    out: MaskDict = {}
    for spec in specs:
        keeps = [np.array(kernel.variable.numpy()) != 0 for kernel in spec.kernels]
        if id(spec.layer) in outputs and all(keep.all() for keep in keeps):
            continue
        out.update(zip(_mask_keys(spec), keeps))
        alive = kl.alive_units(spec, keeps)
        if alive is not None:
            kept_bias = np.array(spec.bias.numpy()) != 0
            if np.any(~alive & kept_bias):
                out[spec.name + BIAS] = alive | kept_bias
    return out


def _mask_table(model) -> dict[str, tuple[kl.PrunableLayer, int | None]]:
    """Every mask name ``model`` takes: ``(layer, kernel index)``, or ``(layer, None)`` for its bias.

    The names :func:`model_masks` writes, and :class:`prunelib.PruningCallback`'s
    ``"<layer>/<variable>"`` names as well (``"dense/kernel"``), so its masks apply too.
    """
    table: dict[str, tuple[kl.PrunableLayer, int | None]] = {}
    for spec in _specs(model, "masks"):
        for i, (name, kernel) in enumerate(zip(_mask_keys(spec), spec.kernels)):
            table[name] = (spec, i)
            table[spec.key(kernel.variable)] = (spec, i)
        if spec.bias is not None:
            table[spec.name + BIAS] = (spec, None)
    return table


def _check_masks(model, masks: Mapping[str, np.ndarray], source: str = "") -> MaskDict:
    if not isinstance(masks, Mapping):
        raise ValueError(f"masks must be a dict {{layer name: boolean array}}, got {type(masks).__name__}")
    ch.check_built(model)
    table = _mask_table(model)
    out: MaskDict = {}
    seen: dict[tuple[str, int | None], str] = {}
    for key, mask in masks.items():
        if not isinstance(key, str):
            raise ValueError(
                f"mask names must be strings (a layer's name, or '<layer>/<kernel>'), got {key!r}{source} "
                f"({type(key).__name__})"
            )
        if key not in table:
            name = key[: -len(BIAS)] if isinstance(key, str) and key.endswith(BIAS) else key
            if name != key and name in {spec.name for spec, _ in table.values()}:
                raise ValueError(f"bias mask {key!r}{source} for layer {name!r}, which has no bias")
            specs = {spec.name: spec for spec, _ in table.values()}
            layer = next((la for la in kl.flat_layers(model) if la.name == name.split("/")[0]), None)
            if layer is not None and name.split("/")[0] not in specs:
                kl.describe(layer)  # a kernel layer prunelib cannot read (quantized, LoRA): its reason
            if name in specs:  # a layer of two kernels (a SeparableConv) named alone
                keys = _mask_keys(specs[name])
                raise ValueError(
                    f"mask for {key!r}{source}: layer {name!r} has {len(keys)} kernels; name their masks {keys}"
                )
            names = sorted(specs)
            raise ValueError(
                f"mask for {key!r}{source}, which is not a kernel layer of model {model.name!r}; its kernel "
                f"layers are {names} (a SeparableConv's kernels are '<layer>/depthwise_kernel' and "
                "'<layer>/pointwise_kernel')"
            )
        spec, i = table[key]
        if (spec.name, i) in seen:
            raise ValueError(f"masks {seen[(spec.name, i)]!r} and {key!r}{source} are for the same weights; give one")
        seen[(spec.name, i)] = key
        mask = np.asarray(mask)
        shape = tuple(spec.bias.shape) if i is None else spec.kernels[i].shape
        if mask.dtype != bool or mask.shape != shape:
            raise ValueError(
                f"mask for {key!r}{source} must be a boolean array of shape {shape}, got {mask.dtype} {mask.shape}"
            )
        out[key] = mask
    return out


def _layer_entries(model, masks: MaskDict) -> dict[str, tuple[kl.PrunableLayer, list, np.ndarray | None]]:
    """Checked masks gathered by layer: ``{layer name: (layer, kernel masks or None, bias mask or None)}``."""
    table = _mask_table(model)
    out: dict[str, tuple[kl.PrunableLayer, list, np.ndarray | None]] = {}
    for key, mask in masks.items():
        spec, i = table[key]
        _, kernel_masks, bias_mask = out.get(spec.name, (spec, [None] * len(spec.kernels), None))
        if i is None:
            bias_mask = mask
        else:
            kernel_masks[i] = mask
        out[spec.name] = (spec, kernel_masks, bias_mask)
    return out


def save_masks(masks: Mapping[str, np.ndarray] | object, path: str | os.PathLike) -> None:
    """Save masks (a dict, or a pruned model's :func:`model_masks`) to a ``.npz`` file.

    The file is written beside ``path`` and renamed onto it once complete, so a failed save leaves a
    previous file as it was; ``~`` is expanded. Any layer name is a key (``file`` and
    ``allow_pickle`` too, which :func:`numpy.savez` would take as its own arguments).

    Raises:
        ValueError: not masks, no mask at all, ``path`` is a directory, or a folder on its way is a
            file. A symbolic link is kept: the file it points to is written.

    Example:
        >>> import keras, prunelib, tempfile, os
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
        >>> path = os.path.join(tempfile.mkdtemp(), "masks.npz")
        >>> prunelib.save_masks(prunelib.prune_model(model, 50), path)
        >>> int(sum(m.sum() for m in prunelib.load_masks(path, model).values()))
        16
    """
    if isinstance(masks, keras.Model):
        masks = model_masks(masks)
    if not isinstance(masks, Mapping) or not all(
        isinstance(n, str) and np.asarray(m).dtype == bool for n, m in masks.items()
    ):
        raise ValueError("masks must be a dict {layer name: boolean array} or a pruned Keras model")
    if not masks:
        raise ValueError(
            "there are no masks to save (the dict is empty, or the model has no kernel layer besides its output layers)"
        )
    path = user_path(path)
    with creating_folders(path), replacing(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        # the .npz layout np.savez_compressed writes, without its keyword arguments in the way
        for name, mask in masks.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(mask), allow_pickle=False)


def load_masks(path: str | os.PathLike, model=None) -> MaskDict:
    """Masks saved by :func:`save_masks`, checked (boolean; against ``model``'s layers and shapes if given).

    Raises:
        ValueError: the file is missing or is not a mask file (a model, a single array, a truncated
            or corrupted file, one with no masks), or the masks do not fit ``model``.
    """
    path = user_path(path)
    where = repr(str(path))
    masks: MaskDict = {}
    if not path.is_file():
        raise ValueError(f"{where} is not a mask file: no such file")
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("it is not a .npz archive, or a truncated one")
        with zipfile.ZipFile(path) as zf:
            members = zf.namelist()
        others = [m for m in members if not m.endswith(".npy")]
        if others or not members:
            raise ValueError(f"it holds {others[:3]}" if others else "it holds no masks")
        with np.load(path, allow_pickle=False) as data:
            for name in data.files:
                masks[name] = data[name]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{where} is not a mask file written by save_masks: {reason}") from None
    for name, mask in masks.items():
        if mask.dtype != bool:
            raise ValueError(f"mask {name!r} in {where} is {mask.dtype}, not boolean")
    return _check_masks(model, masks, f" in {where}") if model is not None else masks


def apply_model_masks(model, masks: Mapping[str, np.ndarray]):
    """A new model with ``masks`` applied (masked weights set to exactly zero; e.g. after fine-tuning).

    ``masks`` are :func:`model_masks`' (or :class:`prunelib.PruningCallback`'s
    ``"<layer>/<variable>"`` ones), for any kernel layer, output layers included. A unit whose
    weights are all masked (a Dense column, a conv filter) is removed, so its bias is set to zero
    too, as unit pruning does (a ``"<layer>/bias"`` mask from :func:`model_masks` overrides that):
    masks saved from a pruned model reproduce it.

    Raises:
        ValueError: a mask that fits no kernel of ``model`` (name, shape or dtype), two masks for the
            same kernel, or a model that cannot be copied.

    Example:
        >>> import keras, prunelib
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
        >>> masks = prunelib.model_masks(prunelib.prune_model(model, 50))
        >>> again = prunelib.apply_model_masks(model, masks)
        >>> prunelib.model_masks(again)[model.layers[0].name].sum()
        np.int64(16)
    """
    masks = _check_masks(model, masks)
    entries = _layer_entries(model, masks)
    twin = _copy(model)
    twins = _twin_specs(model, twin, [spec for spec, _, _ in entries.values()])
    for name, (spec, kernel_masks, bias_mask) in entries.items():
        values = [np.array(kernel.variable.numpy()) for kernel in spec.kernels]
        bias = None
        if spec.bias is not None:
            if bias_mask is None:
                full = [np.ones(v.shape, bool) if m is None else m for v, m in zip(values, kernel_masks)]
                bias_mask = kl.alive_units(spec, full)
            bias = _masked(np.array(spec.bias.numpy()), bias_mask)
        _write(twins[name], [_masked(v, m) for v, m in zip(values, kernel_masks)], bias)
    return twin


def reconstruct_model(
    model,
    pruned,
    x_calib: np.ndarray,
    *,
    masks: Mapping[str, np.ndarray] | None = None,
    damping: float = 0.01,
    logit_targets: bool = True,
    exact: bool = False,
):
    """Re-fit the kept weights and biases of ``pruned`` so its layers match the dense ``model``'s.

    Closed-form least squares, layer by layer (:func:`prunelib.core.reconstruct.reconstruct_with_biases`),
    on the calibration inputs ``x_calib``; pruned weights stay exactly zero, the output layer is
    unchanged. The activations are the model's own. A model with convolutions is read through
    Keras, each layer fitted over its input patches (:mod:`prunelib.toolkit.layerwise`; there an
    output layer that was pruned is re-fitted too, and ``logit_targets`` does not apply).

    Args:
        model: the dense model ``pruned`` came from.
        pruned: the pruned model (its zeros are the masks unless ``masks`` is given).
        x_calib: calibration inputs of exactly the model's input shape ``(n, *input_shape)``, real
            and finite, at least as many as the widest Dense layer's inputs (+1 for its bias). They
            are never reshaped: channels-first images of the same size as a channels-last input
            would be scrambled silently.
        masks: masks overriding :func:`model_masks` of ``pruned`` for the layers they name; a hidden
            layer they do not name keeps ``pruned``'s zeros as its mask (it is never re-fitted
            dense). ``"<layer>/bias"`` entries are ignored: biases are fitted.
        damping: a positive real number, as in :func:`prunelib.core.reconstruct.reconstruct`.
        logit_targets, exact: ``True`` or ``False``, as in :func:`prunelib.core.reconstruct.reconstruct`
            (logit targets can hurt when the last hidden layer keeps about as many units as there are
            outputs: on a 1-epoch LeNet-300-100 at unit 90, 38.7 % pruned, 27.0 % with them, 46.4 %
            without).

    Raises:
        ValueError: the models differ in architecture or look swapped (``model`` has more zero weights
            than ``pruned``), a layer of ``pruned`` computing another activation than ``model``'s
            (named), a pruned kernel layer that is neither Dense nor a convolution, a
            non-elementwise hidden activation (Dense models), a non-float32 model, calibration data of the wrong shape, not real, not
            finite or too few rows, a bad option, a LoRA-enabled layer in ``pruned``, or a result that
            does not predict what the fit computed (named).

    Example:
        >>> import keras, numpy as np, prunelib
        >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="tanh"),
        ...                           keras.layers.Dense(3, activation="softmax")])
        >>> x = np.random.default_rng(0).random((64, 8), dtype=np.float32)
        >>> fixed = prunelib.reconstruct_model(model, prunelib.prune_model(model, 50), x)
        >>> int((fixed.layers[0].kernel.numpy() == 0).sum())
        24
    """
    damping = _damping(damping)
    for name, value in (("logit_targets", logit_targets), ("exact", exact)):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    c = _chain_or_none(model, "reconstruct_model")
    _warn_unrelated(model, pruned)
    if c is None:
        return _reconstruct_graph(model, pruned, x_calib, masks, damping, bool(exact))
    cp = ch.chain(pruned, "reconstruct_model")
    shapes = [tuple(layer.kernel.shape) for layer in c.layers]
    if shapes != [tuple(layer.kernel.shape) for layer in cp.layers]:
        raise ValueError(
            "pruned does not have the Dense layers of model (shapes differ); pass the model it was pruned from"
        )
    _check_same_activations(c, cp)
    zeros = [int(sum(np.sum(w == 0) for w in m.kernels[:-1])) for m in (c, cp)]
    if zeros[0] > zeros[1]:
        raise ValueError(
            f"model has {zeros[0]} zero weights in its hidden layers and pruned only {zeros[1]}: are they "
            "swapped? Call reconstruct_model(dense_model, pruned_model, x_calib)"
        )
    ch.check_writable(cp, "reconstruct_model")
    x = _calibration(x_calib, c.input_shape, [shape[0] + 1 for shape in shapes[:-1]], biases_counted=True)
    ch.verify(c, model, x, "reconstruct_model")
    ch.verify(cp, pruned, x, "reconstruct_model")
    names = [layer.name for layer in cp.layers]
    # the masks given override the pruned model's own zeros, layer by layer: a layer they leave out
    # keeps its zeros rather than being re-fitted dense
    mask_dict = model_masks(pruned)
    if masks is not None:
        for name, (_, kernel_masks, _) in _layer_entries(pruned, _check_masks(pruned, masks)).items():
            if kernel_masks[0] is not None:  # Dense layers: one kernel, keyed by the layer's name
                mask_dict[name] = kernel_masks[0]
    out_mask = mask_dict.get(names[-1])
    if out_mask is not None and np.any(~out_mask & (c.kernels[-1] != 0)):
        raise ValueError(
            f"the output layer {names[-1]!r} is pruned (in pruned or by masks=); reconstruct_model re-fits the "
            "hidden layers and keeps model's output layer, which would undo that: prune without include_output"
        )
    mask_list = [mask_dict.get(n, np.ones(s, bool)) for n, s in zip(names[:-1], shapes[:-1])]
    mask_list.append(np.ones(shapes[-1], bool))
    # the dense biases give the targets; a unit with no kept input keeps its bias in pruned
    # (zeroed by unit pruning); every other unit's bias is fitted with its weights
    with _solvable(damping, "reconstruct_model"):
        kernels, new_biases = reconstruct_with_biases(
            c.kernels,
            c.biases,
            mask_list,
            x,
            damping=damping,
            pruned_biases=cp.biases,
            acts=c.acts,
            logit_targets=bool(logit_targets),
            exact=bool(exact),
        )
    return _result(pruned, c, kernels, new_biases, x, "reconstruct_model")


_UNRELATED = 0.1
"""Below this correlation between a pruned layer's kept weights and the dense model's same weights,
the two models look unrelated (pruning keeps them equal; fine-tuning keeps them close)."""


def _warn_unrelated(model, pruned) -> None:
    """Warn where ``pruned``'s kept weights do not follow ``model``'s: a model of the same shapes that
    was not pruned from it. Not refused: masks moved onto another model's weights, or weights
    rewound and retrained (lottery tickets), are legitimate and may correlate weakly."""
    try:
        theirs = _kernel_layers(pruned, "reconstruct_model")
        ours = _kernel_layers(model, "reconstruct_model")
    except ValueError:
        return  # the paths below refuse it with their reason
    if len(ours) != len(theirs):
        return
    far = []
    for layer, other in zip(ours, theirs):  # in place, as the re-fits pair them
        if len(other.weights) != len(layer.weights):
            return
        w, v = np.asarray(layer.weights[0].numpy(), np.float64), np.asarray(other.weights[0].numpy(), np.float64)
        kept = v != 0
        if w.shape != v.shape or kept.all() or kept.sum() < 20:
            continue
        with np.errstate(all="ignore"):
            r = float(np.corrcoef(w[kept], v[kept])[0, 1])
        if not r >= _UNRELATED:  # NaN too (constant weights)
            far.append(f"{layer.name} (r = {r:.2f})")
    if far:
        warnings.warn(
            f"pruned's kept weights do not follow model's in layers {far}: was pruned pruned from another model? "
            "reconstruct_model fits pruned's masks to model's outputs, starting from model's weights",
            stacklevel=3,
        )


def _check_same_activations(c: ch.Chain, cp: ch.Chain) -> None:
    """Refuse a pruned model whose layers compute other activations than the dense model's: the
    re-fit computes the dense model's, which the pruned model would not apply.

    Each layer's activation (with the elementwise layers after it) is run on the same values in
    both: ``Dense(activation="relu")`` and ``Dense`` + ``ReLU()`` compute the same, so they agree.

    Raises:
        ValueError: naming the first layer whose activations differ, and what each computes.
    """
    rng = np.random.default_rng(0)
    for i, (a, b) in enumerate(zip(c.layers, cp.layers)):
        z = (3 * rng.standard_normal((4, a.kernel.shape[1]))).astype(np.float32)
        with np.errstate(all="ignore"):
            got = [np.asarray(forward.relu(z) if f is None else f(z), np.float64) for f in (c.acts[i], cp.acts[i])]
        if got[0].shape == got[1].shape and np.allclose(*got, rtol=1e-5, atol=1e-6, equal_nan=True):
            continue
        steps = [" then ".join(ch.describe_step(layer, after)) for layer, after in ((a, c.post[i]), (b, cp.post[i]))]
        raise ValueError(
            f"model's layer {a.name!r} computes {steps[0]} but pruned's layer {b.name!r} computes {steps[1]}: "
            "pruned was not pruned from model (pass the model it was pruned from, or prune this one)"
        )


def _result(model, c: ch.Chain, kernels, biases, x: np.ndarray, what: str):
    """A copy of ``model`` holding ``kernels`` and ``biases``, checked on the first rows of ``x`` to
    predict what they compute with ``c``'s activations (:func:`prunelib.toolkit.chain.verify_result`)."""
    twin = ch.clone(model)
    for layer, w, b in zip(ch.dense_layers(twin), kernels, biases):
        _assign(layer, w, b)
    probe = x[:64]
    k32 = [np.asarray(w, np.float32) for w in kernels]
    b32 = [None if b is None else np.asarray(b, np.float32) for b in biases]
    with np.errstate(all="ignore"):
        want = ch.predict_chain(c, probe, k32, b32)
    ch.verify_result(twin, probe, want, what)
    return twin


def post_training_methods() -> dict[str, str]:
    """The registered post-training methods, each with one line on when to use it.

    Example:
        >>> import prunelib
        >>> methods = prunelib.post_training_methods()
        >>> "per-unit-obs-gradual" in methods and "unit-obs+lstsq" in methods
        True
    """
    from prunelib.core.post_training import WHEN

    return dict(WHEN)


def post_training_model(model, k: float, x_calib: np.ndarray, *, method: str = "per-unit-obs-gradual", damping=0.01):
    """A new model pruned at ``k`` percent by a post-training method and re-fitted in closed form.

    The library's best methods (:func:`post_training_methods`) on a Keras model: which weights (or
    units, ``unit-*``) go is chosen from the calibration inputs, and the survivors and biases are
    re-fitted by least squares; no gradient step. The output layer is never pruned. The output
    activation may be anything elementwise or softmax: the fits match pre-activations. A ReLU MLP
    runs every method on numpy matrices. A model with convolutions, or with another hidden
    activation (tanh, a function of the user's own, ...), is read through Keras layer by layer with
    its own activations (:mod:`prunelib.toolkit.layerwise`): there the weight methods with layer
    targets and any allocation run (greedy supports included), and ``unit-norm+lstsq``; the network
    targets and the unit selections that read the next Dense layer (they assume ReLU, or read MLP
    layers only) are refused with the list of those that run.

    Args:
        model: a Keras 3 model of Dense layers, or a Sequential or functional model with
            convolutions; left untouched.
        k: percent in [0, 100] of each hidden layer's weights (units for ``unit-*``; of all hidden
            weights together under the ``global``, ``per-unit``, ``owl`` and ``search`` allocations).
        x_calib: calibration inputs of exactly the model's input shape, at least as many as the
            widest hidden layer's inputs (+1 with biases).
        method: a name of :func:`post_training_methods`.
        damping: ridge strength relative to each layer's mean input energy (a positive real number).

    Raises:
        ValueError: a bad ``k``, method, damping or calibration data (too few rows included), a hidden activation other than
            Keras' ReLU, a LoRA-enabled layer, a model :func:`reconstruct_model` cannot read either,
            or a result that does not predict what the fit computed (named).

    Example:
        >>> import keras, numpy as np, prunelib
        >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="relu"),
        ...                           keras.layers.Dense(3, activation="softmax")])
        >>> x = np.random.default_rng(0).random((64, 8), dtype=np.float32)
        >>> pruned = prunelib.post_training_model(model, 50, x, method="obs-gradual")
        >>> int((pruned.layers[0].kernel.numpy() == 0).sum())
        24
    """
    from prunelib.core.post_training import get_method, post_training_prune_with_biases

    k = pruning.validate_k(k)
    if 0 < k < 1:
        warnings.warn(_FRACTION.format(k=k, pct=k * 100), stacklevel=2)
    damping = _damping(damping)
    if isinstance(method, str):
        get_method(method)  # an unknown name: the message lists the methods
    c = _chain_or_none(model, "post_training_model")
    if c is None:
        return _post_training_graph(model, k, x_calib, get_method(method), damping)
    for layer, after, act in zip(c.layers[:-1], c.post[:-1], c.acts[:-1]):
        if act is None:  # chain reads Keras' own ReLU (on the Dense or a layer after it) as None
            continue
        spec = get_method(method)
        if not _graph_method_problems(spec):
            # the methods' MLP code assumes ReLU; read through Keras, the model's own activations count
            return _post_training_graph(model, k, x_calib, spec, damping)
        raise ValueError(
            f"post_training_model's method {method!r} computes ReLU hidden layers; layer {layer.name!r} computes "
            f"{' then '.join(ch.describe_step(layer, after))}: with this activation it runs {_graph_methods()} (the "
            "model's own activations), or use prune_model + reconstruct_model"
        )
    ch.check_writable(c, "post_training_model")
    hidden = [(layer.kernel.shape[0], layer.bias is not None) for layer in c.layers[:-1]]
    x = _calibration(
        x_calib, c.input_shape, [n + has_bias for n, has_bias in hidden], biases_counted=any(b for _, b in hidden)
    )
    ch.verify(c, model, x, "post_training_model")
    flat = x.reshape(len(x), -1)
    with _solvable(damping, "post_training_model"):
        kernels, biases, _ = post_training_prune_with_biases(
            c.kernels, c.biases, k, flat, method=method, damping=damping
        )
    return _result(model, c, kernels, biases, x, "post_training_model")


def _chain_or_none(model, what: str) -> ch.Chain | None:
    """``model`` read as a chain of Dense layers (numpy matrices), or ``None`` where it holds another
    kernel layer (a convolution) and is read through Keras instead (:mod:`prunelib.toolkit.layerwise`,
    :mod:`prunelib.toolkit.channels`).

    Raises:
        ValueError: why the chain cannot read a model of Dense layers.
    """
    ch.check_built(model)
    if not all(ch.is_dense(layer) for layer in _kernel_layers(model, what)):
        return None
    return ch.chain(model, what)


def _first_called_elsewhere(model) -> bool:
    """Whether a layer of ``model`` was first called in another model's graph (model surgery re-calls
    a trained model's layers): Keras reads a layer's input and output from its first call, so the
    graph re-fits and compaction would read the other model."""
    nodes = {id(node) for m in kl.nested_models(model) for node in kl.graph_nodes(m)}
    return any(
        (calls := getattr(layer, "_inbound_nodes", None) or []) and id(calls[0]) not in nodes
        for layer in kl.flat_layers(model)
    )


def _read_here(model, layers, outputs, what: str):
    """``(model, layers, outputs)`` of :func:`_graph_layers`, or those of a copy of ``model`` where a
    layer was first called elsewhere (:func:`_first_called_elsewhere`)."""
    if not _first_called_elsewhere(model):
        return model, layers, outputs
    model = _copy(model)
    return (model, *_graph_layers(model, what))


def _graph_layers(model, what: str) -> tuple[list[keras.layers.Layer], set[int]]:
    """The kernel layers of a model read through Keras, in the order it applies them, and the ids of
    its output layers; the model checked to be one whose layer inputs can be read.

    Raises:
        ValueError: no graph (subclassed), more than one input, a shared layer, a layer prunelib
            cannot read exactly, or a dtype other than float32.
    """
    ch.check_graph(model)
    if len(model.inputs) != 1:
        raise ValueError(f"{what} takes models of one input; model {model.name!r} has {len(model.inputs)}")
    ch.check_applied_once(model, what)
    ch.check_dtypes(model, what)
    layers = _kernel_layers(model, what)
    for layer in layers:
        kl.describe(layer)  # LoRA, quantized, own call(): refused by name
    return layers, {id(layer) for layer in kl.output_layers(model)}


def _same_architecture(model, pruned, what: str) -> None:
    """Refuse a ``pruned`` that is not ``model``'s architecture (layers, types, weight shapes) or whose
    layers apply other activations (named)."""
    a, b = list(kl.flat_layers(model)), list(kl.flat_layers(pruned))
    shapes = [[(type(la).__name__, la.name, tuple(w.shape)) for w in la.weights] or [(type(la).__name__,)] for la in a]
    if len(a) != len(b) or shapes != [
        [(type(la).__name__, la.name, tuple(w.shape)) for w in la.weights] or [(type(la).__name__,)] for la in b
    ]:
        raise ValueError(
            "pruned does not have the layers of model (types, names or shapes differ); pass the model it was pruned from"
        )
    for la, lb in zip(a, b):
        ca, cb = la.get_config().get("activation"), lb.get_config().get("activation")
        if ca != cb:
            raise ValueError(
                f"model's layer {la.name!r} computes activation {ca!r} but pruned's computes {cb!r}: pruned was not "
                "pruned from model (pass the model it was pruned from, or prune this one)"
            )


def _graph_result(twin, x: np.ndarray, masks: Mapping[str, np.ndarray], paths: Mapping[str, object], what: str):
    """``twin`` checked: every masked weight exactly zero, finite outputs on the first calibration rows."""
    for path, mask in masks.items():
        value = np.asarray(paths[path].numpy())
        if np.any(value[~mask] != 0):
            raise ValueError(f"{what}: a pruned weight of {path!r} came back nonzero; this is a bug in prunelib")
    out = [ch.keras_numpy(t) for t in keras.tree.flatten(ch.run(twin, x[:64]))]
    if not all(np.isfinite(o).all() for o in out):
        raise ValueError(
            f"{what}: the re-fitted model predicts NaN or infinity on the calibration inputs (weights too large "
            "for float32?); scale the inputs, e.g. to [0, 1], or raise damping"
        )
    return twin


def _reconstruct_graph(model, pruned, x_calib, masks, damping: float, exact: bool):
    """:func:`reconstruct_model` of a model with convolutions (any layer of
    :data:`prunelib.toolkit.layerwise.FITTED`): each pruned kernel layer, and every one after the
    first change but the unpruned output layers, re-fitted in order."""
    from prunelib.toolkit import layerwise as lw

    what = "reconstruct_model"
    layers, outputs = _graph_layers(model, what)
    _graph_layers(pruned, what)
    model, layers, outputs = _read_here(model, layers, outputs, what)
    _same_architecture(model, pruned, what)
    zeros = [  # kernels only: a zero-initialized bias is no pruned weight
        sum(int(np.sum(np.asarray(k.variable.numpy()) == 0)) for spec in _specs(m, what) for k in spec.kernels)
        for m in (model, pruned)
    ]
    if zeros[0] > zeros[1]:
        raise ValueError(
            f"model has {zeros[0]} zero weights in its kernel layers and pruned only {zeros[1]}: are they swapped? "
            "Call reconstruct_model(dense_model, pruned_model, x_calib)"
        )
    kernel_masks = {
        spec.name: [np.asarray(k.variable.numpy()) != 0 for k in spec.kernels] for spec in _specs(pruned, what)
    }
    if masks is not None:
        for name, (_, given, _) in _layer_entries(pruned, _check_masks(pruned, masks)).items():
            kernel_masks[name] = [m if g is None else g for m, g in zip(kernel_masks[name], given)]
    plans, names = {}, []
    for layer in layers:
        pruned_here = any(not m.all() for m in kernel_masks.get(layer.name, []))
        if id(layer) in outputs and not pruned_here:
            continue  # the model's outputs stay as they are unless they were pruned
        if type(layer).__name__ not in lw.FITTED and not any(
            isinstance(layer, getattr(keras.layers, t)) for t in lw.FITTED
        ):
            if pruned_here:
                lw.stages(layer)  # refused by name
            continue
        names.append(layer.name)
        for stage, mask in zip(lw.stages(layer), kernel_masks[layer.name]):
            if not mask.all():
                plans[stage.variable.path] = lw.Plan(mask=mask)
    x = _calibration(x_calib, tuple(model.inputs[0].shape[1:]))
    lw.check_rows([la for la in layers if la.name in names], len(x))
    twin = _copy(pruned)
    with _solvable(damping, what):
        done = lw.fit_model(model, twin, x, names, plans, damping, exact=exact)
    return _graph_result(twin, x, _twin_paths(model, twin, done), _path_variables(twin), what)


def _path_variables(model) -> dict[str, object]:
    return {v.path: v for v in model.weights}


def _twin_paths(model, twin, masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``masks`` keyed by ``model``'s variable paths, re-keyed by the twin's variables in the same place."""
    pairs = dict(zip((v.path for v in model.weights), (v.path for v in twin.weights)))
    return {pairs[path]: mask for path, mask in masks.items()}


_GRAPH_METHODS = {
    "selection": ("magnitude", "wanda", "obs", "greedy"),
    "allocation": ("uniform", "per-unit", "search", "global", "owl"),
}


def _graph_method_problems(method) -> list[str]:
    """What in ``method`` the layer-by-layer reading through Keras cannot run (empty: it can)."""
    if method.granularity == "unit":
        return [] if method.selection == "norm" else [f"unit selection {method.selection!r}"]
    problems = [
        f"{name}={getattr(method, name)!r}"
        for name, allowed in _GRAPH_METHODS.items()
        if getattr(method, name) not in allowed
    ]
    return problems + ([f"targets={method.targets!r}"] if method.targets != "layer" else [])


def _graph_methods() -> list[str]:
    """The registered methods the layer-by-layer reading through Keras runs."""
    from prunelib.core.post_training import POST_TRAINING_METHODS

    return [name for name, m in POST_TRAINING_METHODS.items() if not _graph_method_problems(m)]


def _ranked_counts(model, names, stage_list, x: np.ndarray, k: float, method, damping: float) -> list[int]:
    """Per-stage counts of a ``global`` (one pooled ranking of the scores, each normalized by its
    layer's mean) or ``owl`` (outlier-weighted shares) allocation, from the dense model's inputs."""
    from prunelib.core import allocation
    from prunelib.core.post_training import weight_scores
    from prunelib.toolkit import layerwise as lw

    grams = lw.dense_grams(model, names, x)
    values = lw.kernel_values(model)
    flats = [st.flat(values[st.variable.path]).astype(np.float64) for st in stage_list]
    if method.allocation == "owl":
        ratios = []
        for w, gram in zip(flats, grams):
            norms = np.sqrt(np.maximum(np.einsum("gii->gi", gram), 0.0))
            scores = np.abs(w) * norms[:, :, None]
            ratios.append(float(np.mean(scores > 5.0 * scores.mean())))
        return allocation.owl_counts(ratios, [w.size for w in flats], k)
    pooled = []
    for w, gram in zip(flats, grams):
        scores = np.stack([weight_scores(method.selection, w[g], gram[g], damping) for g in range(len(w))])
        mean = float(scores.mean())
        pooled.append((scores / (mean if mean > 0 else 1.0)).ravel())
    flat = np.concatenate(pooled)
    chosen = pruning.smallest(flat, pruning.count_to_prune(flat.size, k))
    return [int(p.sum()) for p in np.split(chosen, np.cumsum([w.size for w in flats])[:-1])]


def _post_training_graph(model, k: float, x_calib, method, damping: float):
    """:func:`post_training_model` of a model with convolutions: each hidden kernel's weights
    selected and re-fitted from the Gram matrix of its patches (layer targets)."""
    from prunelib.core import allocation
    from prunelib.core.post_training import gradual_levels
    from prunelib.toolkit import layerwise as lw

    what = "post_training_model"
    model, layers, outputs = _read_here(model, *_graph_layers(model, what), what)
    names = [la.name for la in layers if id(la) not in outputs]
    problems = _graph_method_problems(method)
    if problems:
        raise ValueError(
            f"on a model with convolutions, post_training_model runs {_graph_methods()}; this method has "
            f"{', '.join(problems)}, which reads ReLU MLP layers only"
        )
    if method.granularity == "unit":
        return _reconstruct_graph(model, prune_model(model, k, "unit"), x_calib, None, damping, False)
    every = {la.name: la for la in layers}
    for name in names:
        if not isinstance(every[name], tuple(getattr(keras.layers, t) for t in lw.FITTED)):
            raise ValueError(
                f"post_training_model prunes Dense and convolution layers, and layer {name!r} is a "
                f"{type(every[name]).__name__}: prune it with prune_model (skip=[...] there), then reconstruct_model"
            )
    kl.warn_untouched(model, layers, "post_training_model", lw.FITTED, depth=4)
    stage_list = [st for name in names for st in lw.stages(every[name])]
    x = _calibration(x_calib, tuple(model.inputs[0].shape[1:]))
    lw.check_rows([every[n] for n in names], len(x))
    shapes = [st.flat(np.zeros(st.variable.shape, np.float32)).shape for st in stage_list]
    stand_ins = [np.empty((s[1], s[0] * s[2]), np.float32) for s in shapes]  # (fan-in, units): the allocation's view
    if method.allocation == "uniform":
        candidates = [[pruning.count_to_prune(int(np.prod(s)), k) for s in shapes]]
    elif method.allocation == "per-unit":
        candidates = [allocation.power_counts(stand_ins, k, 0.0)]
    elif method.allocation == "search":
        tried = [allocation.power_counts(stand_ins, k, a) for a in allocation.SEARCH_ALPHAS]
        candidates = [c for i, c in enumerate(tried) if c not in tried[:i]]
    else:
        candidates = [_ranked_counts(model, names, stage_list, x, k, method, damping)]
    dense = _heads(model, x) if len(candidates) > 1 else None
    best = None
    for counts in candidates:
        plans = {}
        for st, shape, count in zip(stage_list, shapes, counts):
            size = int(np.prod(shape))
            levels = [100.0 * count / size]
            if method.schedule == "gradual" and count:
                levels = gradual_levels(levels[0], method.keep)
            steps = tuple(count if lv == levels[-1] else min(count, round(lv / 100 * size)) for lv in levels)
            if count:  # a stage losing nothing is left as it is until the inputs before it change
                plans[st.variable.path] = lw.Plan(
                    counts=steps, selection=method.selection, refit=method.update == "lstsq"
                )
        twin = _copy(model)
        with _solvable(damping, what):
            done = lw.fit_model(model, twin, x, names, plans, damping, bias_always=True)
        result = _graph_result(twin, x, _twin_paths(model, twin, done), _path_variables(twin), what)
        if dense is None:
            return result
        pairs = list(zip(_heads(result, x), dense, strict=True))  # every head of a model with several
        score = (
            float(np.mean([np.mean(got.argmax(-1) != want.argmax(-1)) for got, want in pairs])),
            float(np.mean([np.mean(np.square(got - want)) for got, want in pairs])),
        )
        if best is None or score < best[0]:
            best = (score, result)
    return best[1]


def _heads(model, x: np.ndarray) -> list[np.ndarray]:
    """``model``'s outputs on ``x``, one array per output (a model may have several, of any widths)."""
    return [ch.keras_numpy(t) for t in keras.tree.flatten(ch.run(model, x))]


@contextmanager
def _solvable(damping: float, what: str):
    """Turn a singular system (a damping too small to regularize a unit or input that the calibration
    data never moves) into a one-line error that says what to change."""
    try:
        yield
    except np.linalg.LinAlgError:
        raise ValueError(
            f"{what}: the least-squares systems are singular at damping={damping:g} (an input or unit the "
            "calibration data never moves leaves nothing to fit): raise damping, e.g. to 1e-6 or the default 0.01"
        ) from None


def _damping(damping: object) -> float:
    """``damping`` as a float, checked to be a positive real number that a float holds.

    Raises:
        ValueError: not a real number (a bool included), not positive, NaN, infinite, or too large
            for a float (``10**400``).
    """
    value = None
    if isinstance(damping, Real) and not isinstance(damping, (bool, np.bool_)):
        try:
            value = float(damping)
        except (OverflowError, ValueError, TypeError):
            value = None
    if value is None or not (np.isfinite(value) and value > 0):
        raise ValueError(f"damping must be a positive real number such as 0.01, got {_short(damping)}")
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({type(value).__name__})"


def _calibration(
    x_calib: object, input_shape: tuple[int, ...], fan_ins: Sequence[int] = (), *, biases_counted: bool = False
) -> np.ndarray:
    """Calibration inputs as float32, of exactly ``(n, *input_shape)``, real and finite, with at least
    as many rows as the largest of ``fan_ins`` (the inputs of each layer to be fitted).

    Raises:
        ValueError: naming what is wrong (shape, dtype, too few rows, NaN or infinity, float32 overflow).
    """
    if None in tuple(input_shape):
        raise ValueError(
            f"the model takes inputs of unknown size {tuple(input_shape)}, and the re-fit counts each layer's "
            "inputs from a fixed shape: rebuild the model on keras.Input(...) of your data's size and copy the "
            "weights over (new.set_weights(model.get_weights()))"
        )
    want = f"(n, {', '.join(map(str, input_shape))})"
    if isinstance(x_calib, Iterator) or (not hasattr(x_calib, "__len__") and not hasattr(x_calib, "__array__")):
        raise ValueError(f"x_calib must be an array {want}, got {type(x_calib).__name__} (pass np.asarray(list(...)))")
    if isinstance(x_calib, tuple) and len(x_calib) == 2:
        # Keras' fit takes (x, y); calibration is the inputs alone, and stacking the pair would
        # either fail inside numpy or pass the labels off as a second input row
        raise ValueError(f"x_calib must be the inputs alone, an array {want}; got a pair (pass x, not (x, y))")
    try:
        x = np.asarray(x_calib)
    except ValueError:  # ragged nested lists
        raise ValueError(f"x_calib must be one array {want}, got a {type(x_calib).__name__} of ragged rows") from None
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"x_calib must hold real numbers (float or integer), got dtype {x.dtype}")
    if tuple(x.shape) == tuple(input_shape):
        raise ValueError(f"x_calib is one input of shape {x.shape}; pass a batch {want} (x[None] for one row)")
    if x.ndim < 2 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"x_calib has shape {x.shape}, the model takes rows of shape {tuple(input_shape)}: pass {want} "
            "(prunelib does not reshape by size, which would scramble e.g. channels-first images)"
        )
    need = max(fan_ins, default=0)
    if len(x) < need:  # the message of prunelib.core.reconstruct.check_calibration
        raise ValueError(
            f"{len(x)} calibration samples are too few: a hidden layer has {need} inputs"
            f"{' (its bias counted as one)' if biases_counted else ''}, so pass at least {need} samples"
        )
    if not len(x):
        raise ValueError("0 calibration samples are too few: pass at least 1 sample")
    if not np.isfinite(x).all():
        raise ValueError(f"x_calib contains {int(np.sum(~np.isfinite(x)))} NaN or infinite values; drop those rows")
    x32 = x.astype(np.float32)
    if not np.isfinite(x32).all():
        raise ValueError("x_calib has values beyond float32's range (about 3.4e38); scale the inputs")
    return x32


def compact_kernels_folded(
    kernels: Sequence[np.ndarray], biases: Sequence[np.ndarray | None], acts: Sequence
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Remove every hidden unit that cannot change the output, folding constant units into biases.

    A unit whose incoming column is all zero outputs the constant ``act(b)`` (``act(0)`` without a
    bias); that constant times its outgoing row is added to the next layer's bias, then the unit is
    removed. A unit whose outgoing row is all zero is removed outright. Repeated to a fixed point.
    The output layer's units and the input features are never removed.

    Returns:
        ``(kernels, biases)`` in float64 for the folded biases (``None`` stays ``None`` where no
        constant was folded into that layer).
    """
    from prunelib.core import forward

    ws = [np.array(w, dtype=np.float64) for w in kernels]
    bs = [None if b is None else np.array(b, dtype=np.float64) for b in biases]
    changed = True
    while changed:
        changed = False
        for i in range(len(ws) - 1):
            w, nxt = ws[i], ws[i + 1]
            no_input = ~np.any(w != 0, axis=0)
            no_output = ~np.any(nxt != 0, axis=1)
            drop = no_input | no_output
            placeholder = w.shape[1] == 1 and not np.any(w) and not np.any(nxt) and (bs[i] is None or not np.any(bs[i]))
            if not drop.any() or placeholder:
                continue
            const_units = drop & no_input & ~no_output
            if const_units.any():
                b = np.zeros(w.shape[1]) if bs[i] is None else bs[i]
                z = b[const_units][None, :].astype(np.float32)
                act = acts[i]
                c = (forward.relu(z) if act is None else forward.apply(act, z)).astype(np.float64)[0]
                fold = c @ nxt[const_units]
                if np.any(fold != 0):
                    bs[i + 1] = (np.zeros(nxt.shape[1]) if bs[i + 1] is None else bs[i + 1]) + fold
            if drop.all():
                # no unit left: one placeholder with no weights keeps the shapes valid; it adds nothing
                ws[i] = np.zeros((w.shape[0], 1))
                bs[i] = None if bs[i] is None else np.zeros(1)
                ws[i + 1] = np.zeros((1, nxt.shape[1]))
            else:
                keep = ~drop
                ws[i] = w[:, keep]
                if bs[i] is not None:
                    bs[i] = bs[i][keep]
                ws[i + 1] = nxt[keep]
            changed = True
    return ws, bs


def compact_model(pruned):
    """A physically smaller model computing what ``pruned`` computes, without its removed units.

    Removed units (no kept incoming weight) output a constant ``act(b)``, which is folded into the
    next layer's bias; units with no outgoing weight are dropped. The result is a Sequential model:
    the input shape, a Flatten if needed, then the Dense layers (own activations, and the elementwise
    layers that followed them) with fewer units; dropout is left out (it is the identity at
    inference). A model with convolutions keeps its graph and loses its dead filters and Dense
    units with the input channels that read them, where what reads them can take their constant
    into its bias (:mod:`prunelib.toolkit.channels`: through normalization, activations and pooling
    into a Dense or a valid-padded convolution; a channel reaching an Add, a Concatenate or a
    depthwise layer stays).

    Raises:
        ValueError: a model of Dense layers with a layer that is neither reshape, dropout nor
            elementwise (Softmax after the output layer), a non-elementwise hidden activation, a
            layer :mod:`prunelib.toolkit.chain` cannot read exactly (applied twice, own ``call``,
            quantized), or a result that does not predict what ``pruned`` does on a probe batch
            (named: NaN or infinity, dtype, shape, or the layer that differs).

    Example:
        >>> import keras, numpy as np, prunelib
        >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="sigmoid"),
        ...                           keras.layers.Dense(3, activation="softmax")])
        >>> pruned = prunelib.prune_model(model, 50, "unit")
        >>> small = prunelib.compact_model(pruned)
        >>> small.layers[-2].units if len(small.layers) > 2 else small.layers[0].units
        3
        >>> x = np.random.default_rng(0).random((4, 8), dtype=np.float32)
        >>> bool(np.allclose(small.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6))
        True
    """
    c = _chain_or_none(pruned, "compact_model")
    if c is None:
        return _compact_graph(pruned)
    probe = ch.probe_batch(pruned, c.input_shape)
    ch.verify(c, pruned, probe, "compact_model")
    kernels, biases = compact_kernels_folded(c.kernels, c.biases, c.acts)
    layers: list = [keras.Input(c.input_shape, dtype=pruned.inputs[0].dtype)]  # an integer input stays one
    if len(c.input_shape) != 1:
        layers.append(keras.layers.Flatten())
    dense = []
    for layer, after, w, b in zip(c.layers, c.post, kernels, biases):
        config = layer.get_config()
        config.update(units=w.shape[1], use_bias=b is not None, dtype="float32")
        for key in (
            "kernel_constraint",
            "bias_constraint",
            "kernel_regularizer",
            "bias_regularizer",
            "activity_regularizer",
            "lora_rank",
        ):
            config.pop(key, None)
        try:
            new = ch.rebuild(layer, config, keras.layers.Dense)
        except Exception as err:  # Keras raises many types for a config it cannot rebuild
            raise ch.rebuild_error(pruned, err, "compact_model") from None
        dense.append((new, w, b))
        layers.append(new)
        layers.extend(ch.rebuild(a) for a in after)
    small = keras.Sequential(layers, name=f"{pruned.name}_compact")
    for new, w, b in dense:
        new.kernel.assign(w.astype(np.float32))
        if b is not None:
            new.bias.assign(b.astype(np.float32))
    # the compact model must predict what the pruned one does (the constants folded, nothing else)
    ch.verify_result(small, probe, ch.keras_numpy(ch.run(pruned, probe)), "compact_model")
    return small


def _compact_graph(pruned):
    """:func:`compact_model` of a model with convolutions (:mod:`prunelib.toolkit.channels`), checked
    to predict what ``pruned`` does on a probe batch."""
    from prunelib.toolkit import channels

    what = "compact_model"
    _graph_layers(pruned, what)
    shape = tuple(pruned.inputs[0].shape[1:])
    if None in shape:
        raise ValueError(f"{what} needs a fixed input shape to check its result; model {pruned.name!r} takes {shape}")
    small = channels.compact_graph(_copy(pruned) if _first_called_elsewhere(pruned) else pruned)
    probe = ch.probe_batch(pruned, shape)
    wants = [ch.keras_numpy(t) for t in keras.tree.flatten(ch.run(pruned, probe))]
    gots = [ch.keras_numpy(t) for t in keras.tree.flatten(ch.run(small, probe))]
    for got, want in zip(gots, wants, strict=True):  # every head of a model with several outputs
        scale = 1.0 + float(np.abs(want).max()) if want.size else 1.0
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-5 * scale):
            raise ValueError(
                f"{what}'s result predicts something else than {pruned.name!r} on a probe batch; this is a bug in "
                "prunelib, please report it"
            )
    return small


def predictor_from_model(model, **kwargs):
    """A :class:`prunelib.inference.predictor.Predictor` computing what the Keras ``model`` computes.

    Any model of Dense layers :mod:`prunelib.toolkit.chain` reads: ReLU hidden layers and linear
    outputs run on every path of the Predictor (the sparse ones too); other elementwise hidden
    activations and an elementwise or softmax output (probabilities, as ``model.predict`` gives them)
    run on its ``blas`` and ``csr`` paths, the removed units' constants folded first. A model it
    cannot compute exactly is refused rather than approximated.

    Raises:
        ValueError: a layer other than Dense holds weights (a convolution: export the model and run
            it with ONNX Runtime), a layer :mod:`prunelib.toolkit.chain` cannot read exactly, or a
            reading that does not reproduce the model's predictions on a probe batch.

    Example:
        >>> import keras, numpy as np, prunelib
        >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, "tanh"),
        ...                           keras.layers.Dense(3, "softmax")])
        >>> fast = prunelib.predictor_from_model(model)
        >>> x = np.ones((2, 8), np.float32)
        >>> bool(np.allclose(fast.predict(x), model.predict(x, verbose=0), atol=1e-5))
        True
    """
    from prunelib.inference.predictor import Predictor

    ch.check_built(model)
    other = [la for la in _kernel_layers(model, "predictor_from_model") if not ch.is_dense(la)]
    if other:
        raise ValueError(
            f"predictor_from_model computes Dense layers with numpy; model {model.name!r} has layer "
            f"{other[0].name!r} ({type(other[0]).__name__}): export it (prunelib.export(model, 'model.onnx')) and run "
            "it with ONNX Runtime"
        )
    c = ch.chain(model, "predictor_from_model")
    probe = ch.probe_batch(model, c.input_shape)
    ch.verify(c, model, probe, "predictor_from_model")
    linear = ch.keras_activation(c.layers[-1].activation) == "linear" and not c.post[-1]
    if all(a is None for a in c.acts[:-1]) and linear:
        predictor = Predictor(c.kernels, biases=c.biases, **kwargs)
    else:
        kernels, biases = compact_kernels_folded(c.kernels, c.biases, c.acts)
        acts = [*c.acts[:-1], None if linear else c.acts[-1]]
        predictor = Predictor(kernels, biases=biases, acts=acts, **kwargs)
    want = ch.keras_numpy(ch.run(model, probe))
    with np.errstate(all="ignore"):
        got = predictor.run(predictor.paths[0], probe)
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-4 * (1 + np.abs(want).max())):
        raise ValueError(
            f"predictor_from_model: the Predictor's logits differ from model {model.name!r}'s own predictions "
            "on a probe batch; this is a bug in prunelib, please report it"
        )
    return predictor
