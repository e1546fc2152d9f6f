"""Reading a Keras model as a chain of Dense layers: which layers, which activations, which weights.

Any Keras 3 model whose weighted layers are Dense qualifies (Sequential, functional, nested
sub-models); weightless layers that act elementwise or only reshape pass through. The output layer
is the last Dense layer in the model's (flattened, topological) layer order. Nothing here mutates
a model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

from prunelib.core.forward import Activation  # noqa: E402

ELEMENTWISE = frozenset(
    {
        "linear",
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "celu",
        "gelu",
        "silu",
        "swish",
        "mish",
        "tanh",
        "sigmoid",
        "hard_sigmoid",
        "hard_silu",
        "hard_swish",
        "hard_tanh",
        "softplus",
        "softsign",
        "exponential",
        "log_sigmoid",
        "sparse_plus",
        "squareplus",
        "tanh_shrink",
        "soft_shrink",
        "hard_shrink",
        "threshold",
    }
)
"""Keras activations that act on each unit alone, so a unit can be removed or re-fitted alone."""

PASS_THROUGH = (
    keras.layers.InputLayer,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.Identity,
)
"""Weightless layers that do nothing at inference time but reshape (or drop out while training)."""

ELEMENTWISE_LAYERS = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU)


def flat_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of ``model`` in order, the layers of nested sub-models in place of them.

    Raises:
        ValueError: ``model`` or a nested sub-model is unbuilt or subclassed (see :func:`check_graph`).
    """
    for layer in check_graph(model).layers:
        if isinstance(layer, keras.Model):
            yield from flat_layers(layer)
        else:
            yield layer


def is_dense(layer: keras.layers.Layer) -> bool:
    return type(layer) is keras.layers.Dense or (
        isinstance(layer, keras.layers.Dense) and not isinstance(layer, keras.layers.EinsumDense)
    )


def check_model(model: object) -> keras.Model:
    """``model``, checked to be a Keras 3 model.

    Raises:
        TypeError: it is not a ``keras.Model``.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a Keras 3 model (keras.Model), got {type(model).__name__}")
    return model


def check_built(model: object) -> keras.Model:
    """``model``, checked to be a Keras 3 model that has weights (is built).

    Raises:
        TypeError: it is not a ``keras.Model``.
        ValueError: it is not built yet.
    """
    check_model(model)
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built (it has no weights yet); start it with keras.Input(shape) "
            "or call it once on a batch"
        )
    return model


def check_graph(model: object) -> keras.Model:
    """``model``, checked to be a built Sequential or functional model: one whose layer graph says
    which layer feeds which.

    A subclassed model's ``layers`` are in attribute order, not call order, so its output layer
    cannot be told from its layers; it is refused rather than guessed at.

    Raises:
        TypeError: it is not a ``keras.Model``.
        ValueError: it is not built, or it is subclassed (its ``call`` is its own code).
    """
    check_built(model)
    try:
        model.inputs  # noqa: B018 - Sequential and functional models have them, subclassed ones do not
    except AttributeError:
        raise ValueError(
            f"model {model.name!r} is a subclassed keras.Model ({type(model).__name__}), whose layer order "
            "need not be its call order; rebuild it as keras.Sequential or keras.Model(inputs, outputs)"
        ) from None
    return model


def layer_names(arg: str, names: object) -> list[str] | None:
    """``skip=`` / ``layers=`` read once into a list (a generator or numpy array included).

    Raises:
        ValueError: a single string, something that is not a collection of names, or a name that is
            not a string.
    """
    if names is None:
        return None
    if isinstance(names, (str, bytes)):
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


def dense_layers(model: keras.Model) -> list[keras.layers.Dense]:
    """The model's Dense layers in order, the output layer last.

    Raises:
        ValueError: the model has no Dense layer, or two Dense layers share a name.
    """
    layers = [layer for layer in flat_layers(check_model(model)) if is_dense(layer)]
    if not layers:
        raise ValueError(f"model {model.name!r} has no Dense layer; prunelib prunes Dense layers only")
    names = [layer.name for layer in layers]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(
            f"Dense layer names {twice} occur more than once (in nested sub-models); give the layers unique names"
        )
    return layers


def clone(model: keras.Model) -> keras.Model:
    """A new model of the same architecture holding copies of the weights (``model`` untouched)."""
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def activation_name(fn: object) -> str:
    name = keras.activations.serialize(fn)
    return name if isinstance(name, str) else str(name.get("config", name)) if isinstance(name, dict) else repr(fn)


def _numpy(fn) -> Activation:
    def act(z: np.ndarray) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(fn(z)))

    act.__name__ = getattr(fn, "__name__", repr(fn))
    return act


@dataclass
class Chain:
    """A model read as ``act_i(h @ W_i + b_i)`` layer after layer: what prunelib's numpy code runs."""

    layers: list[keras.layers.Dense]
    acts: list[Activation | None]  # None = ReLU (the numpy fast path); the last is the output's
    post: list[list[keras.layers.Layer]]  # the elementwise layers following each Dense
    input_shape: tuple[int, ...]

    @property
    def kernels(self) -> list[np.ndarray]:
        return [np.array(layer.kernel.numpy()) for layer in self.layers]

    @property
    def biases(self) -> list[np.ndarray | None]:
        return [None if layer.bias is None else np.array(layer.bias.numpy()) for layer in self.layers]


def chain(model: keras.Model, what: str) -> Chain:
    """Read ``model`` as a :class:`Chain`, or refuse with the reason.

    Args:
        what: the operation asking (for the error message).

    Raises:
        ValueError: an unbuilt or subclassed model, a layer computing in another dtype than float32
            or float64, NaN or infinite weights, a weighted layer that is not Dense, a weightless
            layer that is neither a reshape nor elementwise, a non-elementwise hidden activation, or
            more than one input.
    """
    check_graph(model)
    check_dtypes(model, what)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"{what} needs a model with one input and one output; {model.name!r} has "
            f"{len(model.inputs)} and {len(model.outputs)}"
        )
    dense = dense_layers(model)
    post: list[list[keras.layers.Layer]] = []
    seen_dense = False
    for layer in flat_layers(model):
        if is_dense(layer):
            post.append([])
            seen_dense = True
        elif layer.weights:
            raise ValueError(
                f"{what} cannot handle layer {layer.name!r} ({type(layer).__name__}): it "
                "holds weights and is not Dense, so its inputs cannot be re-fitted or its "
                f"units removed ({what} takes Dense layers only; prune_model prunes conv layers)"
            )
        elif isinstance(layer, PASS_THROUGH):
            if seen_dense and isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)):
                raise ValueError(
                    f"{what} cannot handle {type(layer).__name__} layer {layer.name!r} between Dense layers"
                )
        elif isinstance(layer, ELEMENTWISE_LAYERS) and seen_dense:
            if isinstance(layer, keras.layers.Activation):
                _check_elementwise(layer.activation, layer.name, post_output=len(post) == len(dense), what=what)
            post[-1].append(layer)
        else:
            raise ValueError(
                f"{what} cannot handle layer {layer.name!r} ({type(layer).__name__}): only "
                "Dense layers, reshapes, dropout and elementwise activations are supported"
            )
    acts: list[Activation | None] = []
    for i, (layer, after) in enumerate(zip(dense, post)):
        last = i == len(dense) - 1
        _check_elementwise(layer.activation, layer.name, post_output=last, what=what)
        name = activation_name(layer.activation)
        if not after and name == "relu" and not last:
            acts.append(None)  # numpy's ReLU: the same numbers, and the study's fast path
            continue
        fns = [layer.activation] + [a for a in after]
        acts.append(_numpy(_compose(fns)))
    in_shape = tuple(model.inputs[0].shape[1:])
    if None in in_shape or int(np.prod(in_shape)) != dense[0].kernel.shape[0]:
        raise ValueError(
            f"{what} needs the input {in_shape} to flatten into the first Dense layer's "
            f"{dense[0].kernel.shape[0]} inputs"
        )
    for a, b in zip(dense[:-1], dense[1:]):
        if a.kernel.shape[1] != b.kernel.shape[0]:
            raise ValueError(f"Dense layers {a.name!r} and {b.name!r} do not chain")
    c = Chain(dense, acts, post, in_shape)
    for layer, w, b in zip(dense, c.kernels, c.biases):
        bad = int(np.sum(~np.isfinite(w))) + (0 if b is None else int(np.sum(~np.isfinite(b))))
        if bad:
            raise ValueError(
                f"{what} cannot use layer {layer.name!r}: it holds {bad} NaN or infinite weights (check the training run)"
            )
    return c


FLOAT_DTYPES = ("float32", "float64")
"""The dtypes prunelib's numpy reading reproduces within its tolerance (it computes in float32)."""


def check_dtypes(model: keras.Model, what: str) -> None:
    """Refuse a model with a layer that stores or computes in another dtype than float32/float64.

    The numpy reading computes in float32, so a float16 or bfloat16 model (mixed precision too) would
    differ from Keras' own predictions by its rounding, and a quantized layer is not its float kernel.

    Raises:
        ValueError: naming the first such layer and its dtype policy.
    """
    for layer in flat_layers(model):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        policy = layer.dtype_policy
        dtypes = {str(policy.compute_dtype), str(policy.variable_dtype)}
        if not dtypes <= set(FLOAT_DTYPES) or getattr(policy, "quantization_mode", None):
            raise ValueError(
                f"{what} computes in float32, but layer {layer.name!r} has dtype policy {policy.name!r}; "
                "rebuild the model in float32 (dtype='float32') and copy its weights over"
            )


def _compose(fns):
    def composed(z):
        for fn in fns:
            z = fn(z)
        return z

    return composed


def _check_elementwise(fn, name: str, *, post_output: bool, what: str) -> None:
    act = activation_name(fn)
    if act in ELEMENTWISE or (post_output and act in ("softmax", "log_softmax")):
        return
    raise ValueError(
        f"{what} cannot handle activation {act!r} of layer {name!r}: it is not elementwise, "
        f"so one unit cannot be removed or re-fitted alone; elementwise ones are "
        f"{sorted(ELEMENTWISE)} (softmax only on the output)"
    )


def predict_chain(c: Chain, x: np.ndarray, kernels=None, biases=None) -> np.ndarray:
    """The chain's outputs (output activation included) in numpy, float32."""
    from prunelib.core import forward

    acts = list(c.acts)
    return forward.logits(
        c.kernels if kernels is None else kernels,
        np.asarray(x, np.float32),
        c.biases if biases is None else biases,
        acts=acts,
    )


def verify(c: Chain, model: keras.Model, x: np.ndarray, what: str) -> None:
    """Check the numpy reading of ``model`` against Keras' own predict on ``x``.

    Raises:
        ValueError: Keras' own predictions are NaN or infinite (named as such), or they differ: the
            model is not the plain chain it looks like (branches, skips).
    """
    x = np.asarray(x, np.float32)[:64]
    if not np.isfinite(x).all():
        raise ValueError(f"{what} got inputs that contain NaN or infinity (or values beyond float32's range)")
    want = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    if not np.isfinite(want).all():
        raise ValueError(
            f"{what}: model {model.name!r}'s own predictions on finite inputs contain NaN or infinity "
            "(its weights or activations overflow); scale the inputs or check the training run"
        )
    got = predict_chain(c, x)
    if want.shape != got.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-4 * (1 + np.abs(want).max())):
        raise ValueError(
            f"{what} reads model {model.name!r} as a chain of its Dense layers, but that chain "
            "does not reproduce the model's predictions (branches, skip connections or "
            "shared layers?); only plain chains are supported"
        )
