"""Every Keras layer that holds a kernel, and what its axes mean: which index its units, which its inputs.

Pruning while training (:mod:`prunelib.toolkit.masking`) works on any of them the same way: a
layer is a list of :class:`Kernel` variables (a SeparableConv has two) and maybe a bias. A
:class:`Kernel` says which axes index the layer's *units* (its output channels: what unit pruning
removes whole) and which axis its *inputs* (what N:M groups run along), so the numpy masks of
:mod:`prunelib.core.tensor_masks` need to know nothing about Keras.

Layers prunelib cannot read exactly (a quantized layer, a LoRA-enabled one) are refused by name,
never read as something else.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

L = keras.layers

KERNEL_LAYERS = (
    "Dense",
    "EinsumDense",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "Embedding",
)
"""The Keras layer types whose kernels prunelib prunes while training (and their subclasses that
keep the parent's ``call``)."""

KERNEL_TYPES = tuple(getattr(keras.layers, name) for name in KERNEL_LAYERS)

NORMALIZATION = tuple(
    getattr(keras.layers, name)
    for name in ("BatchNormalization", "LayerNormalization", "GroupNormalization", "RMSNormalization")
    if hasattr(keras.layers, name)
)
"""Layers whose weights scale and shift activations: pruning leaves them alone without a word."""


def warn_untouched(
    model,
    kernel_layers: Sequence[keras.layers.Layer],
    what: str = "prune_model",
    prunes: Sequence[str] = (),
    depth: int = 3,
) -> None:
    """Warn once about trainable weights ``what`` does not prune (normalization layers aside): a
    wrapper such as ``TimeDistributed``, a recurrent or attention layer."""
    prunes = prunes or KERNEL_LAYERS
    kernel_ids = {id(layer) for layer in kernel_layers}
    others = [
        layer
        for layer in flat_layers(model)
        if id(layer) not in kernel_ids and layer.trainable_weights and not isinstance(layer, NORMALIZATION)
    ]
    if others:
        warnings.warn(
            f"layers {[f'{layer.name} ({type(layer).__name__})' for layer in others]} hold weights that "
            f"{what} does not prune (it prunes {', '.join(prunes)}); they are left untouched",
            stacklevel=depth,
        )


@dataclass(frozen=True)
class Kernel:
    """One pruned weight variable of a layer.

    Attributes:
        variable: the Keras variable (its ``path`` names it).
        unit_axes: the axes indexing the layer's units (output channels).
        input_axis: the axis N:M groups run along (``None``: the kernel has no input-channel axis,
            e.g. a depthwise kernel, and N:M leaves it dense).
        units_of_layer: whether removing one of this kernel's units removes one of the layer's
            outputs (its bias entry goes too); a SeparableConv's depthwise kernel has not.
    """

    variable: object
    unit_axes: tuple[int, ...]
    input_axis: int | None
    units_of_layer: bool = True

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.variable.shape)


def key(layer: keras.layers.Layer, variable) -> str:
    """A variable's name in masks: ``"<layer name>/<variable name>"`` (e.g. ``"conv2d/kernel"``), which
    survives saving and loading (a variable's ``path`` takes the enclosing model's name scope)."""
    return f"{layer.name}/{variable.name}"


@dataclass(frozen=True)
class PrunableLayer:
    """A layer's prunable kernels and its bias (``None`` without one)."""

    layer: keras.layers.Layer
    kernels: tuple[Kernel, ...]
    bias: object | None

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def size(self) -> int:
        return int(sum(np.prod(k.shape) for k in self.kernels))

    def key(self, variable) -> str:
        """:func:`key` of one of this layer's variables."""
        return key(self.layer, variable)


def _einsum_axes(layer) -> tuple[tuple[int, ...], int | None]:
    """An EinsumDense kernel's unit axes (letters it shares with the output) and input axis."""
    equation = layer.equation.replace(" ", "")
    inputs, output = equation.split("->")
    kernel_spec = inputs.split(",")[1]
    units = tuple(i for i, c in enumerate(kernel_spec) if c in output)
    reduced = [i for i, c in enumerate(kernel_spec) if c not in output]
    return units, (reduced[-1] if reduced else None)


def units_in_bias_order(layer: keras.layers.Layer) -> bool:
    """Whether the layer's units, flattened in kernel order, line up with its bias.

    Always for every layer but an EinsumDense, whose bias follows the output's axis order: there
    only when the kernel's unit axes run in that order too (``"ab,bdc->adc"`` does not).
    """
    if not isinstance(layer, L.EinsumDense):
        return True
    inputs, output = layer.equation.replace(" ", "").split("->")
    kernel_spec = inputs.split(",")[1]
    shared = [c for c in kernel_spec if c in output]
    return shared == [c for c in output if c in shared]


def _own_call(layer, base: type) -> bool:
    """Whether ``layer``'s class overrides the ``call`` of the Keras class it derives from."""
    return type(layer).call is not base.call


def _base_type(layer) -> type | None:
    for name in KERNEL_LAYERS:
        cls = getattr(L, name)
        if isinstance(layer, cls):
            # the most specific Keras class (Conv2DTranspose is not a Conv2D, but check exact first)
            return next((getattr(L, n) for n in KERNEL_LAYERS if type(layer) is getattr(L, n)), cls)
    return None


def _refuse_unreadable(layer, base: type) -> None:
    if getattr(layer, "quantization_mode", None):
        raise ValueError(
            f"layer {layer.name!r} is quantized ({layer.quantization_mode}); its weights are integers with "
            "scales, which prunelib does not prune: prune the float model, then quantize"
        )
    if getattr(layer, "lora_enabled", False):
        raise ValueError(
            f"layer {layer.name!r} has LoRA enabled: its effective kernel is kernel + lora_a @ lora_b, which "
            "masking the kernel alone would not make sparse; merge or disable LoRA first, or skip the layer"
        )
    if _own_call(layer, base):
        raise ValueError(
            f"layer {layer.name!r} is a {type(layer).__name__}, a {base.__name__} with its own call(); prunelib "
            "cannot tell what it computes with its kernel: skip it (skip=[...]) or prune a plain "
            f"{base.__name__}"
        )


def describe(layer: keras.layers.Layer) -> PrunableLayer | None:
    """The prunable kernels of ``layer`` (``None``: it holds no kernel prunelib prunes).

    Raises:
        ValueError: a kernel layer prunelib cannot read exactly (quantized, LoRA, own ``call``).
    """
    base = _base_type(layer)
    if base is None or not layer.built:
        return None
    _refuse_unreadable(layer, base)
    bias = getattr(layer, "bias", None)
    if base is L.Dense:
        return PrunableLayer(layer, (Kernel(layer._kernel, (1,), 0),), bias)
    if base is L.EinsumDense:
        units, inputs = _einsum_axes(layer)
        return PrunableLayer(layer, (Kernel(layer._kernel, units, inputs),), bias)
    if base is L.Embedding:
        return PrunableLayer(layer, (Kernel(layer._embeddings, (1,), 0),), None)
    if base in (L.SeparableConv1D, L.SeparableConv2D):
        depthwise = Kernel(layer.depthwise_kernel, (-2, -1), None, units_of_layer=False)
        pointwise = Kernel(layer.pointwise_kernel, (-1,), -2)
        return PrunableLayer(layer, (depthwise, pointwise), bias)
    if base in (L.DepthwiseConv1D, L.DepthwiseConv2D):
        # (..., in, multiplier): output channel c * multiplier + m, as the bias is laid out
        return PrunableLayer(layer, (Kernel(layer.kernel, (-2, -1), None),), bias)
    if base in (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose):
        return PrunableLayer(layer, (Kernel(layer.kernel, (-2,), -1),), bias)
    return PrunableLayer(layer, (Kernel(layer.kernel, (-1,), -2),), bias)  # Conv1D/2D/3D


def alive_units(spec: PrunableLayer, masks: Sequence[np.ndarray]) -> np.ndarray | None:
    """Which of ``spec``'s outputs keep a weight under ``masks`` (one per kernel), laid out like its
    bias: the one rule for which biases a unit pruning removes. ``None`` without a bias, or where the
    bias is not one entry per unit in the kernel's order (a SeparableConv's depthwise stage holds no
    unit of the layer and does not count)."""
    if spec.bias is None or not units_in_bias_order(spec.layer):
        return None
    shape = tuple(spec.bias.shape)
    alive = np.ones(shape, bool)
    for kernel, mask in zip(spec.kernels, masks):
        if not kernel.units_of_layer:
            continue
        units = {u % mask.ndim for u in kernel.unit_axes}
        kept = np.any(mask, axis=tuple(a for a in range(mask.ndim) if a not in units))
        if kept.size != alive.size:
            return None
        alive &= kept.reshape(shape)
    return alive


def check_unit_bias(spec: PrunableLayer) -> None:
    """Refuse, before any work, unit pruning of a layer whose bias is not one entry per unit.

    Raises:
        ValueError: naming the layer, its bias shape and the fix.
    """
    if spec.bias is not None and alive_units(spec, [np.ones(k.shape, bool) for k in spec.kernels]) is None:
        raise ValueError(
            f"layer {spec.name!r}: its bias {tuple(spec.bias.shape)} is not one entry per unit in the kernel's "
            f"order, so unit pruning cannot tell which bias goes with a unit; skip it (skip=[{spec.name!r}])"
        )


def layer_names(arg: str, names: object) -> list[str] | None:
    """``skip=`` / ``layers=`` read once into a list (a generator or numpy array included).

    Raises:
        ValueError: a single string, something that is not a collection of names, or a name that is
            not a string.
    """
    if names is None:
        return None
    if isinstance(names, str | bytes):
        raise ValueError(f"{arg} must be a list of layer names, got the string {names!r}; write {arg}=[{names!r}]")
    if isinstance(names, np.ndarray):
        names = names.ravel().tolist()
    if not isinstance(names, Iterable):
        raise ValueError(f"{arg} must be a list of layer names, got {type(names).__name__}")
    out = list(names)
    bad = [n for n in out if not isinstance(n, str)]
    if bad:
        raise ValueError(f"{arg} must hold layer names (strings), got {bad[:3]!r}")
    return out


def unique_names(layers: list, model: keras.Model, what: str = "layer") -> list:
    """``layers`` (layers or :class:`PrunableLayer`), refused if two share a name: masks are keyed by
    it, so one would be lost (two layers of nested sub-models can share one)."""
    names = [layer.name for layer in layers]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(
            f"{what} names {twice} occur more than once in model {model.name!r} (in nested sub-models); "
            "give the layers unique names"
        )
    return layers


def check_nm(specs: list[PrunableLayer], nm: tuple[int, int]) -> None:
    """Refuse, before any work, a kernel whose input count N:M cannot group (``nm`` = (N, M))."""
    n, m = nm
    for spec in specs:
        for kernel in spec.kernels:
            if kernel.input_axis is not None and kernel.shape[kernel.input_axis] % m:
                raise ValueError(
                    f"layer {spec.name!r}: {n}:{m} groups {m} consecutive inputs, but its kernel "
                    f"{kernel.shape} has {kernel.shape[kernel.input_axis]} inputs along axis "
                    f"{kernel.input_axis % len(kernel.shape)}, not a multiple of {m}; skip it "
                    f"(skip=[{spec.name!r}])"
                )


def nested_models(model: keras.Model) -> Iterator[keras.Model]:
    """``model``, then every sub-model nested in it (depth first, in layer order)."""
    yield model
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from nested_models(layer)


def graph_nodes(model: keras.Model) -> list:
    """The calls (nodes) of ``model``'s own graph, its nested sub-models' not included."""
    graph = getattr(model, "_functional", None) or model  # a Sequential's graph is its functional twin
    return [node for nodes in (getattr(graph, "_nodes_by_depth", None) or {}).values() for node in nodes]


def flat_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of ``model`` in order, the layers of nested models in place of them (each once)."""
    seen: set[int] = set()

    def walk(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                yield from walk(layer)
            elif id(layer) not in seen:
                seen.add(id(layer))
                yield layer

    yield from walk(model)


def _producers(tensor) -> list[tuple[keras.layers.Layer, int, int]]:
    """The layer that computed ``tensor``, which of its calls did (a layer used twice has two), and
    which of that call's outputs ``tensor`` is (a sub-model may return several)."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return []
    return [(history[0], history[1], history[2])]


def output_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The kernel layers whose units are the model's outputs: for each output, the last kernel layer
    before it (through weightless layers such as Activation, Softmax or Reshape, following the call
    that computed each tensor, so a weightless layer used twice is followed back the right way).

    Raises:
        ValueError: the model has no graph to read its outputs from (a subclassed model).
    """
    outputs = _graph_outputs(model)
    found: list[keras.layers.Layer] = []
    for tensor in outputs:
        todo = _producers(tensor)
        while todo:
            layer, call, index = todo.pop()
            if isinstance(layer, keras.Model):  # only the sub-model's output that this tensor is
                todo.extend(_producers(keras.tree.flatten(layer.outputs)[index]))
                continue
            if _base_type(layer) is not None:
                if layer not in found:
                    found.append(layer)
                continue
            nodes = getattr(layer, "_inbound_nodes", None) or []
            if call < len(nodes):
                todo.extend(p for t in nodes[call].input_tensors for p in _producers(t))
    return found


def _graph_outputs(model: keras.Model) -> list:
    try:
        outputs = model.outputs
    except AttributeError:
        outputs = None
    if not outputs:
        raise ValueError(
            f"model {model.name!r} ({type(model).__name__}) has no graph to tell its output layer from (a "
            "subclassed model's layers are in attribute order, not call order); name the layers to prune "
            "with layers=[...], or pass include_output=True to prune every kernel layer"
        )
    return list(outputs)


def prunable_layers(
    model: keras.Model,
    *,
    layers: Iterable[str] | None = None,
    skip: Iterable[str] | None = None,
    include_output: bool = False,
) -> list[PrunableLayer]:
    """The layers to prune: every kernel layer of ``model`` but its output layers, or just ``layers``.

    Args:
        layers: names of the only layers to prune (output layers allowed when named).
        skip: names of layers not to prune.
        include_output: prune the output layers too (the default leaves the model's outputs alone,
            as :func:`prunelib.prune_model` does).

    Raises:
        ValueError: an unknown or non-kernel layer name, a name in both ``layers`` and ``skip``, no
            layer left to prune, or a layer prunelib cannot read exactly.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a Keras 3 model (keras.Model), got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet; call it once or give it an Input first")
    names = {}
    for arg, value in (("layers", layers), ("skip", skip)):
        if value is not None:
            names[arg] = layer_names(arg, value)
    flat = list(flat_layers(model))
    every = {layer.name: layer for layer in flat}
    all_names = [layer.name for layer in flat]
    ambiguous = sorted({n for value in names.values() for n in value if all_names.count(n) > 1})
    if ambiguous:
        raise ValueError(
            f"layers and skip name {ambiguous}, which more than one layer of model {model.name!r} is called; "
            "give the layers unique names"
        )
    for arg, value in names.items():
        unknown = [n for n in value if n not in every]
        if unknown:
            raise ValueError(
                f"{arg} names {unknown}, which are not layers of model {model.name!r}; its layers are {sorted(every)}"
            )
    both = sorted(set(names.get("layers", ())) & set(names.get("skip", ())))
    if both:
        raise ValueError(f"layers {both} are named in both layers= and skip=; name each in one of them")
    skipped = set(names.get("skip", ()))
    if "layers" in names:
        chosen = []
        for name in names["layers"]:
            spec = describe(every[name])
            if spec is None:
                raise ValueError(
                    f"layer {name!r} is a {type(every[name]).__name__}, which holds no kernel prunelib prunes; "
                    f"kernel layers are {list(KERNEL_LAYERS)}"
                )
            chosen.append(spec)
        return unique_names(chosen, model)
    outputs = set() if include_output else {id(layer) for layer in output_layers(model)}
    chosen = []
    for layer in flat_layers(model):
        if layer.name in skipped or id(layer) in outputs:
            continue
        spec = describe(layer)
        if spec is not None:
            chosen.append(spec)
    if not chosen:
        raise ValueError(
            f"model {model.name!r} has no kernel layer to prune besides its output layers; pass "
            "include_output=True to prune those"
        )
    return unique_names(chosen, model)
