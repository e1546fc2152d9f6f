"""Prune your own Keras model: the model-level functions of prunelib's public face.

All of them take a Keras 3 model whose weighted layers are Dense (see :mod:`prunelib.toolkit.chain`),
return new models, and never mutate their inputs. Masks are dicts ``{layer name: bool array}``
shaped like the kernels (``True`` keeps a weight).
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from numbers import Real

import numpy as np

from prunelib.core import pruning
from prunelib.core.reconstruct import reconstruct_with_biases
from prunelib.toolkit import chain as ch
from prunelib.toolkit.files import replacing, user_path, writable_target

keras = ch.keras
MaskDict = dict[str, np.ndarray]


def _assign(layer, kernel: np.ndarray, bias: np.ndarray | None) -> None:
    layer.kernel.assign(np.asarray(kernel, dtype=layer.kernel.dtype))
    if layer.bias is not None and bias is not None:
        layer.bias.assign(np.asarray(bias, dtype=layer.bias.dtype))


def _twin_layers(model, twin) -> dict[str, object]:
    return {a.name: b for a, b in zip(ch.dense_layers(model), ch.dense_layers(twin))}


def prune_model(
    model, k: float, method: str = "weight", *, skip: Sequence[str] | None = None, layers: Sequence[str] | None = None
):
    """A new model with each hidden Dense layer pruned by ``method`` at ``k`` percent.

    Each pruned layer loses exactly ``round(k/100 * n)`` weights (``method="weight"``, smallest
    |w|) or units (``"unit"``, smallest kernel-column L2 norm; the unit's bias is zeroed too, so a
    removed unit of a ReLU/tanh layer outputs 0 — of any layer, the constant ``act(0)``). The output
    layer (the last Dense) is never pruned. Non-Dense weighted layers are left untouched, with a
    warning.

    Args:
        model: a Keras 3 model; left untouched.
        k: percent in [0, 100].
        method: ``"weight"`` or ``"unit"``.
        skip: names of Dense layers not to prune.
        layers: names of the only layers to prune (default: every hidden Dense layer).

    Raises:
        ValueError: bad ``k`` or ``method``, an unbuilt or subclassed model, no Dense layer, an
            unknown name in ``skip``/``layers`` or one in both, or ``layers`` naming a non-Dense
            layer or the output layer.

    Warns:
        UserWarning: ``0 < k < 1``: ``k`` is a percent, so 0.8 prunes 0.8 %, not 80 %.

    Example:
        >>> import keras, prunelib
        >>> model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(300, activation="relu"),
        ...                           keras.layers.Dense(10, activation="softmax")])
        >>> pruned = prunelib.prune_model(model, 90)
        >>> round(float((pruned.layers[0].kernel.numpy() == 0).mean()), 3)
        0.9
    """
    k = pruning.validate_k(k)
    if 0 < k < 1:
        # tfmot and Keras callbacks take fractions: a user writing 0.8 most likely means 80 %
        warnings.warn(
            f"k is a percent: k={k} prunes {k} %, not {k * 100:g} %; for {k * 100:g} % pass k={k * 100:g}", stacklevel=2
        )
    if method not in ("weight", "unit"):
        raise ValueError(f"unknown pruning method {method!r}; choose 'weight' or 'unit'")
    # read once here: a generator would be used up by the first check and skip nothing after it
    skip, layers = ch.layer_names("skip", skip), ch.layer_names("layers", layers)
    chosen = ch.prunable(model, skip, layers)
    ch.warn_untouched(model)
    twin = ch.clone(model)
    twins = _twin_layers(model, twin)
    for layer in chosen:
        kernel = np.array(layer.kernel.numpy())
        # the library's mask functions, so one k convention: a dummy logit kernel follows
        mask = pruning.compute_masks([kernel, np.zeros((kernel.shape[1], 1), kernel.dtype)], k, method)[0]
        bias = None if layer.bias is None else np.array(layer.bias.numpy())
        if bias is not None and method == "unit":
            bias = np.where(mask.any(axis=0), bias, np.zeros((), bias.dtype))
        _assign(twins[layer.name], np.where(mask, kernel, np.zeros((), kernel.dtype)), bias)
    return twin


BIAS = "/bias"
"""Suffix of a bias-mask key: ``"<layer>/bias"`` (Keras layer names cannot contain ``/``)."""


def _removed_units(mask: np.ndarray) -> np.ndarray:
    """Units with no kept weight: removed units, whose bias goes too (as unit pruning does)."""
    return ~np.asarray(mask).any(axis=0)


def model_masks(pruned) -> MaskDict:
    """The keep-masks of a pruned model's hidden Dense layers: ``True`` where a weight is nonzero.

    A unit with no kept weight counts as removed, and :func:`apply_model_masks` zeroes its bias as
    unit pruning does. Where a pruned model keeps the nonzero bias of such a unit (weight pruning
    can empty a column), a ``"<layer>/bias"`` entry (``True`` = bias kept) says so, so applying the
    masks reproduces the pruned model exactly in every case.

    Raises:
        ValueError: an unbuilt or subclassed model, or one without Dense layers.

    Example:
        >>> import keras, prunelib
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
        >>> masks = prunelib.model_masks(prunelib.prune_model(model, 50))
        >>> {name: int(m.sum()) for name, m in masks.items()} == {model.layers[0].name: 16}
        True
    """
    out: MaskDict = {}
    for layer in ch.dense_layers(pruned)[:-1]:
        mask = np.array(layer.kernel.numpy()) != 0
        out[layer.name] = mask
        if layer.bias is not None:
            kept_bias = np.array(layer.bias.numpy()) != 0
            if np.any(_removed_units(mask) & kept_bias):
                out[layer.name + BIAS] = ~_removed_units(mask) | kept_bias
    return out


def _check_masks(model, masks: Mapping[str, np.ndarray], source: str = "") -> MaskDict:
    if not isinstance(masks, Mapping):
        raise ValueError(f"masks must be a dict {{layer name: boolean array}}, got {type(masks).__name__}")
    dense = {layer.name: layer for layer in ch.dense_layers(model)}
    out_name = ch.dense_layers(model)[-1].name
    out = {}
    for key, mask in masks.items():
        name = key[: -len(BIAS)] if isinstance(key, str) and key.endswith(BIAS) else key
        if name not in dense:
            raise ValueError(
                f"mask for {key!r}{source}, which is not a Dense layer of model {model.name!r}; "
                f"its Dense layers are {sorted(dense)}"
            )
        mask = np.asarray(mask)
        layer = dense[name]
        if name != key and layer.bias is None:
            raise ValueError(f"bias mask {key!r}{source} for layer {name!r}, which has no bias")
        shape = tuple(layer.kernel.shape) if name == key else (layer.kernel.shape[1],)
        if mask.dtype != bool or mask.shape != shape:
            raise ValueError(
                f"mask for {key!r}{source} must be a boolean array of shape {shape}, got {mask.dtype} {mask.shape}"
            )
        if name == out_name and not mask.all():
            raise ValueError(f"mask for the output layer {name!r}{source} prunes weights; it is never pruned")
        out[key] = mask
    return out


def save_masks(masks: Mapping[str, np.ndarray] | object, path: str | os.PathLike) -> None:
    """Save masks (a dict, or a pruned model's :func:`model_masks`) to a ``.npz`` file.

    The file is written beside ``path`` and renamed onto it once complete, so a failed save leaves a
    previous file as it was; ``~`` is expanded. Any layer name is a key (``file`` and
    ``allow_pickle`` too, which :func:`numpy.savez` would take as its own arguments).

    Raises:
        ValueError: not masks, no mask at all, or ``path`` is a directory.

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
        raise ValueError("there are no masks to save (the dict is empty, or the model has no hidden Dense layer)")
    path = writable_target(user_path(path))
    with replacing(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
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

    A unit whose kernel column is entirely masked is removed, so its bias is set to zero too, as
    unit pruning does (a ``"<layer>/bias"`` mask from :func:`model_masks` overrides that): masks
    saved from a pruned model reproduce it.

    Raises:
        ValueError: a mask that fits no hidden Dense layer of ``model`` or prunes its output layer.

    Example:
        >>> import keras, prunelib
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
        >>> masks = prunelib.model_masks(prunelib.prune_model(model, 50))
        >>> again = prunelib.apply_model_masks(model, masks)
        >>> prunelib.model_masks(again)[model.layers[0].name].sum()
        np.int64(16)
    """
    masks = _check_masks(model, masks)
    twin = ch.clone(model)
    twins = _twin_layers(model, twin)
    for layer in ch.dense_layers(model):
        kernel_mask, bias_mask = masks.get(layer.name), masks.get(layer.name + BIAS)
        if kernel_mask is None and bias_mask is None:
            continue
        kernel = np.array(layer.kernel.numpy())
        if kernel_mask is not None:
            kernel = np.where(kernel_mask, kernel, np.zeros((), kernel.dtype))
        bias = None
        if layer.bias is not None:
            if bias_mask is None:
                bias_mask = ~_removed_units(kernel_mask)
            bias = np.array(layer.bias.numpy())
            bias = np.where(bias_mask, bias, np.zeros((), bias.dtype))
        _assign(twins[layer.name], kernel, bias)
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
    unchanged. The activations are the model's own.

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
            than ``pruned``), a layer that is not Dense holds weights, a non-elementwise hidden
            activation, a non-float32 model, calibration data of the wrong shape, not real, not
            finite or too few rows, or a bad option.

    Example:
        >>> import keras, numpy as np, prunelib
        >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="tanh"),
        ...                           keras.layers.Dense(3, activation="softmax")])
        >>> x = np.random.default_rng(0).random((64, 8), dtype=np.float32)
        >>> fixed = prunelib.reconstruct_model(model, prunelib.prune_model(model, 50), x)
        >>> int((fixed.layers[0].kernel.numpy() == 0).sum())
        24
    """
    if (
        isinstance(damping, (bool, np.bool_))
        or not isinstance(damping, Real)
        or not (np.isfinite(damping) and damping > 0)
    ):
        raise ValueError(f"damping must be a positive real number such as 0.01, got {damping!r}")
    for name, value in (("logit_targets", logit_targets), ("exact", exact)):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    c = ch.chain(model, "reconstruct_model")
    cp = ch.chain(pruned, "reconstruct_model")
    shapes = [tuple(layer.kernel.shape) for layer in c.layers]
    if shapes != [tuple(layer.kernel.shape) for layer in cp.layers]:
        raise ValueError(
            "pruned does not have the Dense layers of model (shapes differ); pass the model it was pruned from"
        )
    zeros = [int(sum(np.sum(w == 0) for w in m.kernels[:-1])) for m in (c, cp)]
    if zeros[0] > zeros[1]:
        raise ValueError(
            f"model has {zeros[0]} zero weights in its hidden layers and pruned only {zeros[1]}: are they "
            "swapped? Call reconstruct_model(dense_model, pruned_model, x_calib)"
        )
    x = _calibration(x_calib, c.input_shape)
    ch.verify(c, model, x, "reconstruct_model")
    ch.verify(cp, pruned, x, "reconstruct_model")
    names = [layer.name for layer in cp.layers]
    # the masks given override the pruned model's own zeros, layer by layer: a layer they leave out
    # keeps its zeros rather than being re-fitted dense
    mask_dict = model_masks(pruned)
    if masks is not None:
        mask_dict.update(_check_masks(pruned, masks))
    mask_list = [mask_dict.get(n, np.ones(s, bool)) for n, s in zip(names[:-1], shapes[:-1])]
    mask_list.append(np.ones(shapes[-1], bool))
    # the dense biases give the targets; a unit with no kept input keeps its bias in pruned
    # (zeroed by unit pruning); every other unit's bias is fitted with its weights
    kernels, new_biases = reconstruct_with_biases(
        c.kernels,
        c.biases,
        mask_list,
        x,
        damping=float(damping),
        pruned_biases=cp.biases,
        acts=c.acts,
        logit_targets=bool(logit_targets),
        exact=bool(exact),
    )
    twin = ch.clone(pruned)
    for layer, w, b in zip(ch.dense_layers(twin), kernels, new_biases):
        _assign(layer, w, b)
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

    The library's best methods (:func:`post_training_methods`) on a Keras model of Dense layers:
    which weights (or units, ``unit-*``) go is chosen from the calibration inputs, and the survivors
    and biases are re-fitted by least squares; no gradient step. The output layer is never pruned.
    The methods compute ReLU hidden layers: a model with another hidden activation is refused by
    name (use :func:`prune_model` + :func:`reconstruct_model`, which compute any elementwise one).
    The output activation may be anything elementwise or softmax: the fits match pre-activations.

    Args:
        model: a Keras 3 model of Dense layers with ReLU hidden layers; left untouched.
        k: percent in [0, 100] of each hidden layer's weights (units for ``unit-*``; of all hidden
            weights together under the ``global``, ``per-unit``, ``owl`` and ``search`` allocations).
        x_calib: calibration inputs of exactly the model's input shape, at least as many as the
            widest hidden layer's inputs (+1 with biases).
        method: a name of :func:`post_training_methods`.
        damping: ridge strength relative to each layer's mean input energy.

    Raises:
        ValueError: a bad ``k``, method, damping or calibration data, a hidden activation other than
            ReLU, or a model :func:`reconstruct_model` cannot read either.

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
    if isinstance(method, str):
        get_method(method)  # an unknown name: the message lists the methods
    c = ch.chain(model, "post_training_model")
    for layer, act in zip(c.layers[:-1], c.acts[:-1]):
        if act is not None:  # chain reads a plain ReLU Dense as None: the numpy fast path
            names = [ch.activation_name(layer.activation), *(type(a).__name__ for a in c.post[c.layers.index(layer)])]
            raise ValueError(
                f"post_training_model's methods compute ReLU hidden layers; layer {layer.name!r} computes "
                f"{' then '.join(names)}: use prune_model + reconstruct_model, which use the model's own activations"
            )
    x = _calibration(x_calib, c.input_shape)
    ch.verify(c, model, x, "post_training_model")
    flat = x.reshape(len(x), -1)
    kernels, biases, _ = post_training_prune_with_biases(c.kernels, c.biases, k, flat, method=method, damping=damping)
    twin = ch.clone(model)
    for layer, w, b in zip(ch.dense_layers(twin), kernels, biases):
        _assign(layer, w, b)
    return twin


def _calibration(x_calib: object, input_shape: tuple[int, ...]) -> np.ndarray:
    """Calibration inputs as float32, of exactly ``(n, *input_shape)``, real and finite.

    Raises:
        ValueError: naming what is wrong (shape, dtype, NaN or infinity, float32 overflow).
    """
    want = f"(n, {', '.join(map(str, input_shape))})"
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
    if x.ndim < 2 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"x_calib has shape {x.shape}, the model takes rows of shape {tuple(input_shape)}: pass {want} "
            "(prunelib does not reshape by size, which would scramble e.g. channels-first images)"
        )
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
    inference).

    Raises:
        ValueError: a weighted layer that is not Dense, a layer that is neither reshape, dropout nor
            elementwise, or a non-elementwise hidden activation.

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
    c = ch.chain(pruned, "compact_model")
    probe = np.random.default_rng(0).standard_normal((16, *c.input_shape)).astype(np.float32)
    ch.verify(c, pruned, probe, "compact_model")
    kernels, biases = compact_kernels_folded(c.kernels, c.biases, c.acts)
    layers: list = [keras.Input(c.input_shape)]
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
        new = keras.layers.Dense.from_config(config)
        dense.append((new, w, b))
        layers.append(new)
        layers.extend(type(a).from_config(a.get_config()) for a in after)
    small = keras.Sequential(layers, name=f"{pruned.name}_compact")
    for new, w, b in dense:
        new.kernel.assign(w.astype(np.float32))
        if b is not None:
            new.bias.assign(b.astype(np.float32))
    return small


def predictor_from_model(model, **kwargs):
    """A :class:`prunelib.inference.predictor.Predictor` computing what the Keras ``model`` computes.

    The Predictor runs a ReLU MLP with biases and linear outputs; a model it cannot compute
    exactly is refused rather than approximated.

    Raises:
        ValueError: the model has a hidden activation other than ReLU or an output activation
            (the Predictor returns logits).

    Example:
        >>> import keras, numpy as np, prunelib
        >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, "relu"), keras.layers.Dense(3)])
        >>> fast = prunelib.predictor_from_model(model)
        >>> x = np.ones((2, 8), np.float32)
        >>> bool(np.allclose(fast.predict(x), model.predict(x, verbose=0), atol=1e-5))
        True
    """
    from prunelib.inference.predictor import Predictor

    c = ch.chain(model, "predictor_from_model")
    names = [ch.activation_name(layer.activation) for layer in c.layers]
    if any(a is not None for a in c.acts[:-1]) or names[-1] != "linear" or c.post[-1]:
        raise ValueError(
            f"Predictor computes ReLU hidden layers and linear outputs; model {model.name!r} "
            f"has activations {names} (use model.predict, or export it)"
        )
    return Predictor(c.kernels, biases=c.biases, **kwargs)
