"""Least squares layer by layer on any functional model: Dense and convolution layers read through Keras.

The chain reading of :mod:`prunelib.toolkit.chain` turns a model of Dense layers into numpy
matrices; a convolution is not a matrix product of the layer's input, but it is one of its
*patches*. Each kernel here is a :class:`Stage`: ``rows`` turns the stage's input into rows of
patches (``(groups, rows, d)``) and ``flat`` its kernel into the matching ``(groups, d, units)``
stack, so that ``rows @ flat`` is the stage's output before bias and activation. The patches come
from Keras' own convolution applied to a one-hot kernel (an identity of ``d`` channels), so padding,
strides, dilation and groups are exactly what the layer computes, with no index arithmetic of ours.

A fit reads each layer's input from the models themselves (``keras.Model(model.inputs,
layer.input)``): the pruned model's, as re-fitted so far, and the dense model's for the targets.
The normal equations are accumulated over batches of calibration inputs, so memory does not grow
with the calibration set; the solve is :func:`prunelib.core.reconstruct.fit_normal`. Nothing here
mutates the models it is given: it writes into the copy it is handed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

from prunelib.core.pruning import smallest  # noqa: E402
from prunelib.core.reconstruct import fit_normal  # noqa: E402
from prunelib.toolkit import kernels as kl  # noqa: E402

L = keras.layers
ops = keras.ops

_CONV = (L.Conv1D, L.Conv2D, L.Conv3D)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
_TRANSPOSE = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
FITTED = ("Dense", *(c.__name__ for c in _CONV + _DEPTHWISE + _SEPARABLE + _TRANSPOSE))
"""The layer types whose kernels are re-fitted here."""

_BATCH_FLOATS = 2**24  # patches per batch: about 64 MB of float32 for each model's rows


def _numpy(t) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(t), np.float32)


def _channels_last(layer, x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, -1) if getattr(layer, "data_format", None) == "channels_first" else x


def _padded(layer, x: np.ndarray) -> tuple[np.ndarray, str]:
    """``x`` and the padding to give Keras' op: causal padding is left padding, then valid."""
    if layer.padding != "causal":
        return x, layer.padding
    left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
    return np.pad(x, ((0, 0), (left, 0), (0, 0))), "valid"


@dataclass
class Stage:
    """One kernel of a layer as a matrix product of patches.

    Attributes:
        layer: the layer (of the model being fitted).
        variable: its kernel variable.
        bias: its bias variable, or ``None`` (a SeparableConv's depthwise stage has none).
        groups: independent problems (conv groups, or a depthwise kernel's input channels).
        rows: ``rows(x, kernels)``: the stage's patches ``(groups, n, d)`` from the layer's input
            ``x``; ``kernels`` maps a variable's path to the value to compute earlier stages with.
        flat: the kernel as ``(groups, d, units)``; ``unflat`` the inverse.
        bias_flat: the bias as ``(groups, units)``.
    """

    layer: keras.layers.Layer
    variable: object
    bias: object | None
    groups: int
    rows: Callable[[np.ndarray, dict], np.ndarray]
    flat: Callable[[np.ndarray], np.ndarray]
    unflat: Callable[[np.ndarray], np.ndarray]

    def bias_flat(self, b: np.ndarray) -> np.ndarray:
        return np.asarray(b).reshape(self.groups, -1)


def _conv_rows(layer, kernel_shape, groups: int):
    *ks, cin_g, _ = kernel_shape
    d = int(np.prod(ks)) * cin_g
    eye = np.eye(d, dtype=np.float32).reshape(*ks, cin_g, d)

    def rows(x, _kernels):
        x, padding = _padded(layer, _channels_last(layer, x))
        out = []
        for g in range(groups):
            part = x[..., g * cin_g : (g + 1) * cin_g]
            p = ops.conv(
                part, eye, strides=layer.strides, padding=padding, data_format="channels_last",
                dilation_rate=layer.dilation_rate,
            )  # fmt: skip
            out.append(_numpy(p).reshape(-1, d))
        return np.stack(out)

    return rows, d


def _depthwise_rows(layer, kernel_shape):
    *ks, cin, _ = kernel_shape
    k = int(np.prod(ks))
    eye = np.broadcast_to(np.eye(k, dtype=np.float32).reshape(*ks, 1, k), (*ks, cin, k)).copy()

    def patches(x):
        x, padding = _padded(layer, _channels_last(layer, x))
        p = ops.depthwise_conv(
            x, eye, strides=layer.strides, padding=padding, data_format="channels_last",
            dilation_rate=layer.dilation_rate,
        )  # fmt: skip
        return _numpy(p).reshape(-1, cin, k).transpose(1, 0, 2)  # (cin, n, k): channel c * k + j

    return patches, k, cin


def _depthwise_apply(layer, x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """A SeparableConv's depthwise stage on ``x`` with ``kernel``, channels last."""
    x, padding = _padded(layer, _channels_last(layer, x))
    return _numpy(
        ops.depthwise_conv(
            x, kernel, strides=layer.strides, padding=padding, data_format="channels_last",
            dilation_rate=layer.dilation_rate,
        )
    )  # fmt: skip


def stages(layer: keras.layers.Layer) -> list[Stage]:
    """The stages of a Dense or convolution layer, in the order they are applied.

    Raises:
        ValueError: a kernel layer of another type (EinsumDense, Embedding), named.
    """
    spec = kl.describe(layer)
    if isinstance(layer, L.Dense):
        w = layer.kernel

        def dense_rows(x, _kernels):
            return np.asarray(x, np.float32).reshape(1, -1, w.shape[0])

        return [Stage(layer, spec.kernels[0].variable, layer.bias, 1, dense_rows, lambda a: a[None], lambda f: f[0])]
    if isinstance(layer, _TRANSPOSE):
        shape = tuple(layer.kernel.shape)
        *ks, cout, cin = shape
        k = int(np.prod(ks))
        d = k * cin
        basis = np.zeros((k, d, cin), np.float32)
        basis[np.repeat(np.arange(k), cin), np.arange(d), np.tile(np.arange(cin), k)] = 1
        basis = basis.reshape(*ks, d, cin)

        def transpose_rows(x, _kernels):
            p = ops.conv_transpose(
                _channels_last(layer, x), basis, strides=layer.strides, padding=layer.padding,
                output_padding=layer.output_padding, data_format="channels_last", dilation_rate=layer.dilation_rate,
            )  # fmt: skip
            return _numpy(p).reshape(1, -1, d)

        return [
            Stage(
                layer, layer.kernel, layer.bias, 1, transpose_rows,
                lambda a: a.reshape(k, cout, cin).transpose(0, 2, 1).reshape(1, d, cout),
                lambda f: f[0].reshape(k, cin, cout).transpose(0, 2, 1).reshape(shape),
            )
        ]  # fmt: skip
    if isinstance(layer, _DEPTHWISE + _SEPARABLE):
        variable = layer.kernel if isinstance(layer, _DEPTHWISE) else layer.depthwise_kernel
        shape = tuple(variable.shape)
        patches, k, cin = _depthwise_rows(layer, shape)
        depthwise = Stage(
            layer, variable, layer.bias if isinstance(layer, _DEPTHWISE) else None, cin,
            lambda x, _kernels: patches(x),
            lambda a: a.reshape(k, cin, -1).transpose(1, 0, 2),
            lambda f: f.transpose(1, 0, 2).reshape(shape),
        )  # fmt: skip
        if isinstance(layer, _DEPTHWISE):
            return [depthwise]
        point = tuple(layer.pointwise_kernel.shape)
        inner = point[-2]

        def pointwise_rows(x, kernels):
            z = _depthwise_apply(layer, x, kernels[layer.depthwise_kernel.path])
            return z.reshape(1, -1, inner)

        pointwise = Stage(
            layer, layer.pointwise_kernel, layer.bias, 1, pointwise_rows,
            lambda a: a.reshape(1, inner, -1), lambda f: f.reshape(point),
        )  # fmt: skip
        return [depthwise, pointwise]
    if isinstance(layer, _CONV):
        shape = tuple(layer.kernel.shape)
        groups = int(getattr(layer, "groups", 1) or 1)
        rows, d = _conv_rows(layer, shape, groups)
        return [
            Stage(
                layer, layer.kernel, layer.bias, groups, rows,
                lambda a: a.reshape(d, groups, -1).transpose(1, 0, 2),
                lambda f: f.transpose(1, 0, 2).reshape(shape),
            )
        ]  # fmt: skip
    raise ValueError(
        f"layer {layer.name!r} is a {type(layer).__name__}; least squares re-fits {', '.join(FITTED)} (skip it, "
        "or prune it without a re-fit with prune_model)"
    )


@dataclass
class Normal:
    """One stage's normal equations over the calibration set, per group: ``gram`` ``(g, d', d')`` and
    ``cross`` ``(g, d', units)`` with ``d' = d + 1`` where the bias is fitted (a constant input)."""

    gram: np.ndarray
    cross: np.ndarray


def extractor(model: keras.Model, layer: keras.layers.Layer) -> keras.Model:
    """A model from ``model``'s input to ``layer``'s input (sharing ``model``'s layers and weights).

    Raises:
        ValueError: the layer's input cannot be reached from the model's graph (a layer inside a
            nested sub-model, a subclassed model).
    """
    try:
        return keras.Model(model.inputs[0], layer.input)
    except Exception as err:  # Keras raises several types for a tensor outside the graph
        raise ValueError(
            f"cannot read the input of layer {layer.name!r} from model {model.name!r}'s graph ({type(err).__name__}); "
            "re-fits read through Keras layer by layer (models with convolutions, or hidden activations other "
            "than ReLU) need a Sequential or functional model whose kernel layers are not inside nested sub-models"
        ) from None


def batches(n: int, floats_per_row: int) -> list[slice]:
    """Slices of ``n`` calibration rows, each holding about ``_BATCH_FLOATS`` patch values."""
    size = max(1, min(n, _BATCH_FLOATS // max(1, floats_per_row)))
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def accumulate(
    stage: Stage,
    dense_stage: Stage,
    source: keras.Model,
    dense_source: keras.Model,
    x: np.ndarray,
    kernels: dict,
    dense_kernels: dict,
    fit_bias: bool,
    rows_per_sample: int,
) -> Normal:
    """The normal equations of ``stage``: its inputs as the model being fitted computes them
    (``source``), its targets the dense stage's outputs on the dense model's inputs (``dense_source``)."""
    w = stage.flat(dense_kernels[dense_stage.variable.path]).astype(np.float32)
    b = None if dense_stage.bias is None else stage.bias_flat(dense_kernels[dense_stage.bias.path]).astype(np.float32)
    g, d, units = w.shape
    width = d + fit_bias
    gram = np.zeros((g, width, width))
    cross = np.zeros((g, width, units))
    for part in batches(len(x), rows_per_sample * g * d):
        p = stage.rows(_numpy(source(x[part], training=False)), kernels)
        target = np.matmul(dense_stage.rows(_numpy(dense_source(x[part], training=False)), dense_kernels), w)
        if b is not None:
            target += b[:, None, :]
        if fit_bias:
            p = np.concatenate([p, np.ones((*p.shape[:2], 1), np.float32)], axis=2)
        gram += np.matmul(p.transpose(0, 2, 1), p)
        cross += np.matmul(p.transpose(0, 2, 1), target)
    return Normal(gram, cross)


def solve(
    normal: Normal,
    w0: np.ndarray,
    mask: np.ndarray,
    damping: float,
    *,
    b0: np.ndarray | None = None,
    bias_mask: np.ndarray | None = None,
    fallback: np.ndarray | None = None,
    exact: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The kept weights of a stage re-fitted per group (and its biases, when ``b0`` is given).

    Args:
        w0: ``(g, d, units)`` the dense weights, which the ridge pulls the kept ones toward.
        mask: ``(g, d, units)`` boolean.
        b0: ``(g, units)`` the dense biases (fitted as the weight of a constant input), or ``None``.
        bias_mask: ``(g, units)`` which biases are fitted (default: every unit keeping a weight);
            the others take ``fallback`` (default ``b0``).

    Returns:
        ``(kernel, bias)`` flat, float64; a kept weight never comes back exactly zero.
    """
    out = np.zeros(w0.shape)
    out_b = None
    if b0 is not None:
        bias_mask = mask.any(axis=1) if bias_mask is None else bias_mask
        out_b = np.array(b0 if fallback is None else fallback, np.float64)
    for g in range(w0.shape[0]):
        m, start = mask[g], w0[g] * mask[g]
        if b0 is not None:
            m, start = np.vstack([m, bias_mask[g]]), np.vstack([start, b0[g]])
        fitted = fit_normal(normal.gram[g], normal.cross[g], start, m, damping=damping, exact=exact)
        new = np.where(mask[g], fitted[: w0.shape[1]], 0.0)
        collapsed = mask[g] & (new == 0) & (w0[g] != 0)
        new[collapsed] = w0[g][collapsed]
        out[g] = new
        if b0 is not None:
            out_b[g] = np.where(bias_mask[g], fitted[-1], out_b[g])
    return out, out_b


@dataclass(frozen=True)
class Plan:
    """What happens to one stage: a given ``mask`` (kernel-shaped) kept and re-fitted, or ``count``
    weights removed by ``selection`` through the gradual ``counts`` (the last is ``count``)."""

    mask: np.ndarray | None = None
    counts: tuple[int, ...] = ()
    selection: str = "magnitude"
    refit: bool = True


def dense_grams(model: keras.Model, names: Sequence[str], x: np.ndarray) -> list[np.ndarray]:
    """Every stage's input Gram matrices ``(groups, d, d)`` on the dense ``model``, in the order of
    ``names``' stages: what a global or outlier-weighted allocation ranks the weights by."""
    layers = {layer.name: layer for layer in kl.flat_layers(model)}
    values = kernel_values(model)
    out = []
    for name in names:
        layer = layers[name]
        source, per = extractor(model, layer), rows_per_sample(layer)
        for stage in stages(layer):
            out.append(accumulate(stage, stage, source, source, x, values, values, False, per).gram)
    return out


def check_reading(
    model: keras.Model, layer: keras.layers.Layer, x: np.ndarray, source: keras.Model, values: dict
) -> None:
    """Refuse a layer whose Keras output is not what its stages compute from its weights (patches
    times kernel, plus bias, then its activation) on the calibration rows ``x``: a fit of those
    weights would then fit something the model does not compute.

    Args:
        source: :func:`extractor` of ``layer`` in ``model``; ``values``: :func:`kernel_values` of ``model``.

    Raises:
        ValueError: naming the layer and how far its output is from its reading.
    """
    z = np.asarray(source(x, training=False), np.float32)
    h = None
    for stage in stages(layer):
        w = stage.flat(values[stage.variable.path]).astype(np.float32)
        h = np.matmul(stage.rows(z, values), w)
        if stage.bias is not None:
            h = h + stage.bias_flat(values[stage.bias.path]).astype(np.float32)[:, None, :]
    h = h.transpose(1, 0, 2).reshape(h.shape[1], -1)  # (rows, channels): group-major channel order
    got = _numpy(layer.activation(h))
    out = _channels_last(layer, _numpy(keras.Model(model.inputs[0], layer.output)(x, training=False)))
    want = out.reshape(-1, out.shape[-1])
    scale = 1.0 + float(np.abs(want).max()) if want.size else 1.0
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-4 * scale):
        off = float(np.abs(got - want).max()) if got.shape == want.shape else float("nan")
        raise ValueError(
            f"layer {layer.name!r} ({type(layer).__name__}) does not compute what its kernel and bias give by "
            f"its definition (off by {off:.3g} on the calibration inputs): Keras computes it otherwise (its own "
            "call, or a Keras issue such as a channels_first Conv2D adding its bias along the last axis), so it "
            "cannot be re-fitted exactly"
        )


def fit_model(
    model: keras.Model,
    twin: keras.Model,
    x: np.ndarray,
    names: Sequence[str],
    plans: dict[str, Plan],
    damping: float,
    *,
    exact: bool = False,
    bias_always: bool = False,
) -> dict[str, np.ndarray]:
    """Prune and re-fit ``twin``'s layers ``names`` in order toward the dense ``model``'s outputs.

    Each stage is fitted on the inputs the twin computes once the layers before it are done, toward
    what the dense model's same stage computes on its own inputs. A layer with no plan whose inputs
    already changed is re-fitted with all its weights kept; before the first change, one is left as is.

    Args:
        model: the dense model (read only).
        twin: a copy of it (or of a pruned model of it), written in place.
        names: the layers to fit, in the order the model applies them.
        plans: by stage variable path *in model*: its :class:`Plan`.
        bias_always: fit every unit's bias, even one keeping no weight (the post-training
            methods); otherwise such a unit keeps the twin's bias (zero after unit pruning).

    Returns:
        The kernel masks by stage variable path in ``model``.
    """
    dense_layers = {layer.name: layer for layer in kl.flat_layers(model)}
    twin_layers = {layer.name: layer for layer in kl.flat_layers(twin)}
    dense_values = kernel_values(model)
    out: dict[str, np.ndarray] = {}
    changed = False
    for name in names:
        dense_layer, layer = dense_layers[name], twin_layers[name]
        pairs = list(zip(stages(layer), stages(dense_layer)))
        if not changed and all(sd.variable.path not in plans for _, sd in pairs):
            continue
        source, dense_source = extractor(twin, layer), extractor(model, dense_layer)
        check_reading(model, dense_layer, x[:8], dense_source, dense_values)
        per = rows_per_sample(dense_layer)
        for st, sd in pairs:
            plan = plans.get(sd.variable.path, Plan())
            values = kernel_values(twin) if isinstance(layer, _SEPARABLE) else {}
            w = st.flat(dense_values[sd.variable.path]).astype(np.float64)
            b = None if sd.bias is None else st.bias_flat(dense_values[sd.bias.path]).astype(np.float64)
            fit_bias = b is not None and plan.refit
            normal = accumulate(st, sd, source, dense_source, x, values, dense_values, fit_bias, per)
            mask = np.ones(w.shape, bool) if plan.mask is None else st.flat(plan.mask)
            every = np.ones(b.shape, bool) if bias_always and b is not None else None
            fallback = None if st.bias is None else st.bias_flat(np.array(st.bias.numpy()))
            current = w
            for i, count in enumerate(plan.counts):
                mask = select(plan.selection, current, normal, mask, count, damping, fit_bias)
                if plan.refit and i < len(plan.counts) - 1:  # a gradual step re-selects on re-fitted weights
                    current, _ = solve(normal, w, mask, damping, b0=b, bias_mask=every, fallback=fallback)
            if plan.refit:
                new, new_b = solve(normal, w, mask, damping, b0=b, bias_mask=every, fallback=fallback, exact=exact)
            else:
                new, new_b = w * mask, None
            write(st, new, new_b)
            out[sd.variable.path] = st.unflat(mask)
            changed = True
        # The dense layer read right can still apply new weights otherwise (a zero bias hides Keras
        # adding a channels_first layer's bias along the last axis): the result must be what was fitted.
        check_reading(twin, layer, x[:8], source, kernel_values(twin))
    return out


def rows_per_sample(layer: keras.layers.Layer) -> int:
    """How many patch rows one calibration sample gives ``layer`` (its output positions)."""
    shape = tuple(layer.output.shape[1:])
    if isinstance(layer, L.Dense):
        return int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    spatial = shape[1:] if getattr(layer, "data_format", None) == "channels_first" else shape[:-1]
    return int(np.prod(spatial, dtype=np.int64))


def select(
    selection: str, current: np.ndarray, normal: Normal, mask: np.ndarray, count: int, damping: float, fit_bias: bool
) -> np.ndarray:
    """The mask removing ``count`` weights of a stage (never un-pruning one of ``mask``'s), ranked over
    all its groups by :func:`prunelib.core.post_training.weight_scores`; ``"greedy"``: each group's
    supports grown by forward greedy least squares on its normal equations
    (:func:`prunelib.core.greedy.greedy_supports`), the kept count split evenly over the groups; it
    reads the normal equations only, never ``current``, and runs once, on a dense stage (greedy
    methods are one-shot)."""
    from prunelib.core.post_training import weight_scores

    if selection == "greedy":
        return _greedy(normal, mask, count, damping, fit_bias)
    scores = []
    for g in range(current.shape[0]):
        w = current[g]
        if fit_bias:  # the bias row ranks nothing but shapes the OBS inverse, as the MLP methods do
            w = np.vstack([w, np.zeros((1, w.shape[1]))])
        s = weight_scores(selection, w, normal.gram[g], damping)[: current.shape[1]]
        scores.append(s)
    scores = np.stack(scores)
    scores[~mask] = -np.inf
    return ~smallest(scores.ravel(), count).reshape(mask.shape)


def _greedy(normal: Normal, mask: np.ndarray, count: int, damping: float, fit_bias: bool) -> np.ndarray:
    from prunelib.core.greedy import greedy_supports
    from prunelib.core.layer_fit import ridge

    if not mask.all():
        raise ValueError("greedy supports are chosen once, from a dense stage; this is a bug in prunelib")
    groups, d, units = mask.shape
    keep = mask.size - count
    shares = [keep // groups + (g < keep % groups) for g in range(groups)]
    return np.stack(
        [
            greedy_supports(normal.gram[g], normal.cross[g], shares[g], ridge(normal.gram[g], damping), int(fit_bias))[
                :d
            ]
            for g in range(groups)
        ]
    )


def kernel_values(model: keras.Model) -> dict:
    """Every variable's value by path, as numpy."""
    return {v.path: np.array(v.numpy()) for v in model.weights}


def write(stage: Stage, kernel_flat: np.ndarray, bias_flat: np.ndarray | None) -> None:
    stage.variable.assign(stage.unflat(kernel_flat).astype(np.float32))
    if stage.bias is not None and bias_flat is not None:
        stage.bias.assign(bias_flat.reshape(-1).astype(np.float32))


def check_rows(layers: Sequence[keras.layers.Layer], n: int) -> None:
    """Refuse, before any work, a calibration set giving a stage fewer rows than its inputs (+1 bias).

    Raises:
        ValueError: naming the layer and how many samples it needs.
    """
    for layer in layers:
        per = rows_per_sample(layer)
        for stage in stages(layer):
            need = int(stage.flat(np.zeros(stage.variable.shape, np.float32)).shape[1]) + (stage.bias is not None)
            if n * per < need:
                raise ValueError(
                    f"{n} calibration samples are too few for layer {layer.name!r}: each gives {per} rows of "
                    f"{need} inputs{' (its bias counted as one)' if stage.bias is not None else ''}, so pass at "
                    f"least {-(-need // per)} samples"
                )
