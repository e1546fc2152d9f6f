"""Compaction of a model with convolutions: dead filters removed with the input channels that read them.

A filter (or Dense unit) whose kernel slice is all zero outputs a constant, ``act(bias)`` at every
position. Its channel can leave the model when every layer that reads it can take the constant into
its bias instead:

* between the producer and its readers, only *channel-wise* layers (BatchNormalization, activation
  layers, pooling, global pooling, dropout): each maps a constant channel to a constant channel,
  computed here by calling the layer on the constants (its per-channel weights are sliced);
* a reader is a Dense (on the channels, or after a Flatten, whose features of that channel are
  ``position * channels + channel``) or a Conv1D/2D/3D with ``valid`` padding: the constant times the
  sum of its weights on that channel is added to its bias (a bias is added where it had none). A
  ``same``- or ``causal``-padded convolution sees zero padding at the borders, so it takes only a
  channel whose constant is exactly zero;
* anything else that reads the channel (an Add, a Concatenate, a Reshape, a depthwise or transposed
  convolution, the model's output) keeps it: the channel stays, the result stays exact.

Repeated until nothing changes (a reader left with no kept weight is dead in turn). The result is
a copy of the model (``keras.models.clone_model``) with fewer filters and units and the weights sliced;
nothing mutates the model given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

from prunelib.toolkit import kernels as kl  # noqa: E402
from prunelib.toolkit.chain import ELEMENTWISE, keras_activation, rebuild, rebuild_error  # noqa: E402

L = keras.layers

_CONV = (L.Conv1D, L.Conv2D, L.Conv3D)
_POOL = tuple(
    getattr(L, f"{kind}Pooling{d}D") for kind in ("Max", "Average", "GlobalMax", "GlobalAverage") for d in (1, 2, 3)
)
_DROP = (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise, L.GaussianDropout)
_DROP += (L.AlphaDropout, L.Identity, L.ActivityRegularization)
_ACT = (L.Activation, L.ReLU, L.LeakyReLU, L.ELU)
CHANNELWISE = (L.BatchNormalization, *_ACT, *_POOL, *_DROP)
"""Layers that map each channel on its own (and a constant channel to a constant)."""


def _numpy(t) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(t), np.float64)


def _producers(layer) -> list:
    node = layer._inbound_nodes[0]
    return [p for t in node.input_tensors for p, *_ in kl._producers(t)]


def _is_shrinkable(layer) -> bool:
    """A producer whose units can go: a Dense or an ungrouped channels-last Conv1D/2D/3D."""
    if type(layer) is L.Dense:
        return True
    return (
        isinstance(layer, _CONV)
        and type(layer) in _CONV
        and getattr(layer, "groups", 1) == 1
        and layer.data_format == "channels_last"
    )


def _channel_axis_ok(layer) -> bool:
    if isinstance(layer, L.BatchNormalization):
        return layer.axis in (-1, len(layer.input.shape) - 1)
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _elementwise(fn) -> bool:
    """Whether an activation acts on each value alone (Keras' own by name; softmax does not)."""
    return keras_activation(fn) in ELEMENTWISE


def _channelwise(layer) -> bool:
    """Whether ``layer`` maps each channel on its own, in channels-last order."""
    if not isinstance(layer, CHANNELWISE) or not _channel_axis_ok(layer):
        return False
    return not isinstance(layer, L.Activation) or _elementwise(layer.activation)


def _through(layer, const: np.ndarray) -> np.ndarray:
    """The constants a channel-wise layer outputs for constant input channels (NaN: not constant)."""
    shape = tuple(layer.input.shape[1:])
    filled = np.broadcast_to(np.nan_to_num(const, nan=0.0), shape).astype(np.float32)[None]
    out = _numpy(layer(filled, training=False))[0]
    out = out.reshape(-1, out.shape[-1])[0]
    return np.where(np.isnan(const), np.nan, out)


@dataclass
class _Reader:
    """A layer reading a producer's channels: how it sees them (constants after the channel-wise
    layers on the way) and where they sit among its inputs."""

    layer: keras.layers.Layer
    const: np.ndarray  # per producer unit, at the reader's input
    positions: int = 1  # > 1: after a Flatten, feature = position * channels + channel


@dataclass
class _Path:
    readers: list[_Reader] = field(default_factory=list)
    between: list = field(default_factory=list)  # the channel-wise layers on the way
    keep_all: bool = False  # something reads the channels that cannot take a constant


def _follow(layer, const: np.ndarray, consumers: dict, outputs: set) -> _Path:
    """Every reader of ``layer``'s output channels, through channel-wise layers and one Flatten."""
    path = _Path()
    todo = [(layer, const, 1)]
    while todo:
        current, c, positions = todo.pop()
        if id(current) in outputs:
            path.keep_all = True
        for nxt in consumers.get(id(current), []):
            if positions == 1 and _channelwise(nxt):
                if isinstance(nxt, L.BatchNormalization) or isinstance(nxt, _ACT):
                    path.between.append(nxt)
                todo.append((nxt, _through(nxt, c), 1))
            elif (
                positions == 1
                and isinstance(nxt, L.Flatten)
                and len(nxt.input.shape) > 2
                and getattr(nxt, "data_format", "channels_last") == "channels_last"  # channels_first transposes
            ):
                spatial = int(np.prod(nxt.input.shape[1:-1]))
                todo.append((nxt, c, spatial))
            elif isinstance(nxt, _DROP):
                todo.append((nxt, c, positions))
            elif type(nxt) is L.Dense or (positions == 1 and _is_shrinkable(nxt)):
                path.readers.append(_Reader(nxt, c, positions))
            else:
                path.keep_all = True
    return path


def _absorbs(reader: _Reader, c: float) -> bool:
    if type(reader.layer) is L.Dense:
        return True
    return reader.layer.padding == "valid" or c == 0.0


def _dead_units(layer) -> tuple[np.ndarray, np.ndarray]:
    """(dead, constant): units with an all-zero kernel slice, and what each outputs (``act(bias)``)."""
    w = np.asarray(layer.kernel.numpy())
    dead = ~np.any(w.reshape(-1, w.shape[-1]) != 0, axis=0)
    b = np.zeros(w.shape[-1]) if layer.bias is None else np.asarray(layer.bias.numpy(), np.float64)
    out = _numpy(layer.activation(keras.ops.convert_to_tensor(b[None].astype(np.float32))))[0]
    return dead, np.where(dead, out, np.nan)


def _graph(model: keras.Model) -> tuple[list, dict[int, list], set[int]]:
    """``model``'s layers, the layers reading each one's output (by id), and the ids of the layers
    computing its outputs."""
    layers = list(kl.flat_layers(model))
    consumers: dict[int, list] = {}
    for layer in layers:
        if not isinstance(layer, L.InputLayer):
            for p in _producers(layer):
                consumers.setdefault(id(p), []).append(layer)
    # a nested sub-model's outputs leave its graph for readers this graph does not show: they stay
    outputs = {
        id(p) for m in kl.nested_models(model) for t in keras.tree.flatten(m.outputs) for p, *_ in kl._producers(t)
    }
    return layers, consumers, outputs


def plan(model: keras.Model) -> dict[str, np.ndarray]:
    """Which units of each shrinkable layer go: ``{layer name: keep mask}`` for those losing any."""
    layers, consumers, outputs = _graph(model)
    out = {}
    for layer in layers:
        if not _is_shrinkable(layer) or id(layer) in outputs or not _elementwise(layer.activation):
            continue  # a softmax over the channels: no channel is a constant of its own
        dead, const = _dead_units(layer)
        if not dead.any() or dead.all():
            continue
        path = _follow(layer, const, consumers, outputs)
        if path.keep_all or not path.readers:
            continue
        gone = dead & np.array(
            [all(_absorbs(r, float(r.const[u])) for r in path.readers) if dead[u] else False for u in range(dead.size)]
        )
        if gone.any():
            out[layer.name] = ~gone
    return out


def _slice_readers(model, keep: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """New weights of every layer touched by removing the units ``keep`` drops."""
    layers, consumers, outputs = _graph(model)
    weights = {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in layers}
    by_name = {layer.name: layer for layer in layers}
    for name, kept in keep.items():
        layer = by_name[name]
        w = weights[name]
        w[0] = w[0][..., kept]
        if layer.bias is not None:
            w[1] = w[1][kept]
        _, const = _dead_units(layer)
        path = _follow(layer, const, consumers, outputs)
        for between in path.between:
            if isinstance(between, L.BatchNormalization):
                weights[between.name] = [v[kept] for v in weights[between.name]]
        for reader in path.readers:
            rw = weights[reader.layer.name]
            gone = ~kept
            k = rw[0]
            c = np.nan_to_num(reader.const[gone], nan=0.0)
            if type(reader.layer) is L.Dense:
                rows = k.reshape(reader.positions, kept.size, -1)
                fold = np.einsum("pcu,c->u", rows[:, gone].astype(np.float64), c)
                rw[0] = rows[:, kept].reshape(-1, k.shape[-1])
            else:
                fold = k[..., gone, :].astype(np.float64).reshape(-1, int(gone.sum()), k.shape[-1]).sum(axis=0).T @ c
                rw[0] = k[..., kept, :]
            if len(rw) > 1:
                rw[1] = (rw[1].astype(np.float64) + fold).astype(rw[1].dtype)
            elif np.any(fold != 0):
                rw.append(fold.astype(np.float32))
            weights[reader.layer.name] = rw
    return weights


def compact_graph(pruned: keras.Model) -> keras.Model:
    """A copy of ``pruned`` without its removable units (see the module), to a fixed point.

    Raises:
        ValueError: Keras cannot rebuild the model with the new layer sizes (named).
    """
    current = pruned
    for _ in range(len(list(kl.flat_layers(pruned))) + 1):
        keep = plan(current)
        if not keep:
            break
        weights = _slice_readers(current, keep)

        def resize(layer, keep=keep, weights=weights):
            config = layer.get_config()
            if layer.name in keep:
                config["filters" if isinstance(layer, _CONV) else "units"] = int(keep[layer.name].sum())
            if isinstance(layer, (L.Dense, *_CONV)) and len(weights[layer.name]) == 2 and not layer.use_bias:
                config["use_bias"] = True
            return rebuild(layer, config)

        graph = isinstance(current, keras.Sequential) or hasattr(current, "_nodes_by_depth")
        try:
            twin = keras.models.clone_model(current, clone_function=resize, recursive=graph)
        except Exception as err:  # Keras raises many types for a graph it cannot rebuild
            raise rebuild_error(current, err, "compact_model") from None
        for layer in kl.flat_layers(twin):
            if layer.weights:
                layer.set_weights(weights[layer.name])
        current = twin
    return current
