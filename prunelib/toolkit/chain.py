"""Reading a Keras model as a chain of Dense layers: which layers, which activations, which weights.

Any Keras 3 model whose weighted layers are Dense qualifies (Sequential, functional, nested
sub-models); weightless layers that act elementwise or only reshape pass through, and a Softmax layer
may follow the output layer. The output layer is the last Dense layer in the model's (flattened,
topological) layer order. A layer that would be read as something else than what it computes is
refused by name: a layer or sub-model applied more than once, a Dense (or activation layer) with its
own ``call``, a quantized layer. Nothing here mutates a model.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

from prunelib.core import forward  # noqa: E402
from prunelib.core.forward import Activation  # noqa: E402
from prunelib.toolkit import kernels as kl  # noqa: E402
from prunelib.toolkit.kernels import _own_call  # noqa: E402

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

OUTPUT_LAYERS = (keras.layers.Softmax,)
"""Weightless layers that may follow the output layer only (they act across its units)."""


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


def dense_layers(model: keras.Model) -> list[keras.layers.Dense]:
    """The model's Dense layers in order, the output layer last.

    Raises:
        ValueError: the model has no Dense layer, or two Dense layers share a name.
    """
    layers = [layer for layer in flat_layers(check_model(model)) if is_dense(layer)]
    if not layers:
        raise ValueError(f"model {model.name!r} has no Dense layer; prunelib prunes Dense layers only")
    return kl.unique_names(layers, model, "Dense layer")


def _clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """``layer`` rebuilt from its config, keeping its activation function itself: a user's function
    is saved by its name, so ``from_config`` would turn a function named ``relu`` into Keras' relu."""
    return rebuild(layer)


def rebuild(layer: keras.layers.Layer, config: dict | None = None, cls: type | None = None) -> keras.layers.Layer:
    """A new layer of ``cls`` (``layer``'s class) from ``config`` (``layer``'s), with ``layer``'s own
    activation function: a function of the user's own, which its config names only, resolves to
    itself while the config is read (registered with Keras or not)."""
    fn = getattr(layer, "activation", None)
    own = callable(fn) and not isinstance(fn, keras.layers.Layer) and keras_activation(fn) is None
    with keras.saving.custom_object_scope({activation_name(fn): fn} if own else {}):
        new = (cls or layer.__class__).from_config(layer.get_config() if config is None else config)
    return keep_activation(new, layer)


def keep_activation(new: keras.layers.Layer, old: keras.layers.Layer) -> keras.layers.Layer:
    """``new`` (built from ``old``'s config) given ``old``'s own activation function where that is
    not one of Keras' (its config holds only the function's name)."""
    fn = getattr(old, "activation", None)
    if callable(fn) and not isinstance(fn, keras.layers.Layer) and keras_activation(fn) is None:
        new.activation = fn
    return new


def rebuild_error(model: keras.Model, err: BaseException, what: str) -> ValueError:
    """The one-line error for a model Keras cannot rebuild from its config (prunelib copies models
    rather than modifying them), naming a function of the user's own where that is the cause."""
    import re

    text = str(err)
    found = re.search(r"Could not locate (?:function|class) '([^']+)'", text)
    if found:
        return ValueError(
            f"{what}: model {model.name!r} uses {found.group(1)!r}, a function or class of your own that Keras "
            "cannot rebuild from the model's config, and prunelib copies a model rather than modifying it: "
            "decorate it with @keras.saving.register_keras_serializable()"
        )
    if "Lambda" in text and "unsafe" in text.lower():
        return ValueError(
            f"{what}: model {model.name!r} has a Lambda layer holding a Python lambda, which Keras will not rebuild "
            "from its config unless told it is safe: replace it with a layer (or a named, registered function), or "
            "call keras.config.enable_unsafe_deserialization() if you trust the model"
        )
    reason = text.splitlines()[0] if text else type(err).__name__
    if len(reason) > 200:
        reason = reason[:200] + "..."
    fix = (
        "give it get_config() and from_config(), or rebuild it as Sequential or functional"
        if not (isinstance(model, keras.Sequential) or hasattr(model, "_nodes_by_depth"))
        else "a layer's get_config() does not rebuild it"
    )
    return ValueError(
        f"{what}: keras.models.clone_model cannot copy model {model.name!r} ({type(model).__name__}): {fix} ({reason})"
    )


def clone(model: keras.Model) -> keras.Model:
    """A new model of the same architecture holding copies of the weights (``model`` untouched); the
    layers of Sequential and functional models (nested ones too) keep their own activation functions."""
    graph = isinstance(model, keras.Sequential) or hasattr(model, "_nodes_by_depth")
    if graph:
        twin = keras.models.clone_model(model, clone_function=_clone_layer, recursive=True)
    else:
        twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    for layer, copy in zip(kl.flat_layers(model), kl.flat_layers(twin)):
        _copy_state(layer, copy)
    return twin


def _copy_state(layer: keras.layers.Layer, copy: keras.layers.Layer) -> None:
    """What ``set_weights`` leaves behind and Keras' own loading restores: the state a layer derives
    from its variables on load (an adapted ``Normalization``'s mean and variance) and its assets (a
    ``StringLookup``'s or ``IntegerLookup``'s vocabulary, kept in a table, not in variables)."""
    if type(layer).load_own_variables is not keras.layers.Layer.load_own_variables:
        store: dict = {}
        layer.save_own_variables(store)
        copy.load_own_variables(store)
    if hasattr(layer, "save_assets") and hasattr(copy, "load_assets"):
        with tempfile.TemporaryDirectory() as folder:
            layer.save_assets(folder)
            copy.load_assets(folder)


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


def check_applied_once(model: keras.Model, what: str) -> None:
    """Refuse a model in which a layer or a nested sub-model is applied more than once.

    The chain reads each layer as one step; a shared layer (``d(d(x))``, a block used twice, a
    layer used inside a sub-model and beside it) would be read once where the model applies it twice.

    Raises:
        ValueError: naming the first such layer or sub-model.
    """
    seen: set[int] = set()
    for m in kl.nested_models(model):
        counts: dict[int, int] = {}
        for node in kl.graph_nodes(m):
            counts[id(node.operation)] = counts.get(id(node.operation), 0) + 1
        for layer in m.layers:
            if counts.get(id(layer), 1) > 1 or id(layer) in seen:
                kind = "sub-model" if isinstance(layer, keras.Model) else "layer"
                raise ValueError(
                    f"{what} cannot read {kind} {layer.name!r} ({type(layer).__name__}): model {model.name!r} "
                    "applies it more than once (a shared layer), and prunelib reads each layer as one step "
                    "of a chain; give each use a layer of its own"
                )
            seen.add(id(layer))


def _check_readable(layer: keras.layers.Layer, what: str) -> None:
    """Refuse a Dense or activation layer whose ``call`` is its own code, or a quantized layer."""
    mode = getattr(layer, "quantization_mode", None)
    if mode:
        raise ValueError(
            f"{what} cannot read layer {layer.name!r}: it is quantized ({mode}), its weights are integers "
            "with scales, not the float kernel prunelib reads; prune the float model, then quantize"
        )
    for base in (keras.layers.Dense, *ELEMENTWISE_LAYERS, *OUTPUT_LAYERS):
        if isinstance(layer, base) and _own_call(layer, base):
            raise ValueError(
                f"{what} cannot read layer {layer.name!r}: it is a {type(layer).__name__}, a {base.__name__} "
                f"with its own call(), so prunelib cannot tell what it computes; use a plain {base.__name__}"
            )


def keras_activation(fn: object) -> str | None:
    """The name of Keras' own activation function ``fn`` (``"relu"``), ``None`` for any other callable
    (a user's function named ``relu`` included)."""
    name = activation_name(fn)
    try:
        return name if keras.activations.get(name) is fn else None
    except (ValueError, TypeError):
        return None


def describe_activation(fn: object) -> str:
    """``fn``'s name, saying so where it is a user's function that shares a Keras name."""
    name = activation_name(fn)
    if keras_activation(fn) is None and name in ELEMENTWISE | {"softmax", "log_softmax"}:
        module = getattr(fn, "__module__", None) or "?"
        return f"{name} (a function of module {module}, not Keras' {name})"
    return name


def _relu_or_identity(item: object) -> str | None:
    """``"relu"`` or ``"linear"`` where ``item`` (a Dense's activation function or an activation
    layer after it) computes exactly Keras' ReLU or the identity, else ``None``."""
    if isinstance(item, keras.layers.Layer):
        if isinstance(item, keras.layers.ReLU):  # one with its own call() is refused before
            plain = item.max_value is None and float(item.negative_slope) == 0 and float(item.threshold) == 0
            return "relu" if plain else None
        if isinstance(item, keras.layers.Activation):
            item = item.activation
        else:
            return None
    name = keras_activation(item)
    return name if name in ("relu", "linear") else None


def describe_step(layer: keras.layers.Dense, after: list[keras.layers.Layer]) -> list[str]:
    """What a Dense layer and the activation layers after it compute, for messages."""
    names = [describe_activation(layer.activation)]
    for a in after:
        names.append(describe_activation(a.activation) if isinstance(a, keras.layers.Activation) else type(a).__name__)
    return names


def chain(model: keras.Model, what: str) -> Chain:
    """Read ``model`` as a :class:`Chain`, or refuse with the reason.

    A hidden layer's activation is ``None`` (numpy's ReLU, the study's fast path) exactly where it
    computes Keras' own ReLU: ``Dense(activation="relu")``, or a linear Dense followed by ``ReLU()``
    or ``Activation("relu")``. Any other activation, a user's function named ``relu`` too, is
    computed through the function or layer itself.

    Args:
        what: the operation asking (for the error message).

    Raises:
        ValueError: an unbuilt or subclassed model, a layer or sub-model applied more than once, a
            Dense or activation layer with its own ``call``, a quantized layer, a layer computing in
            another dtype than float32 or float64 (or a float16 or bfloat16 input), NaN or infinite weights, a weighted layer that is
            not Dense, a weightless layer that is neither a reshape nor elementwise, a
            non-elementwise hidden activation, or more than one input.
    """
    check_graph(model)
    check_applied_once(model, what)
    for layer in flat_layers(model):
        _check_readable(layer, what)
    check_dtypes(model, what)
    for tensor in getattr(model, "inputs", None) or []:
        dtype = str(tensor.dtype)
        if "float" in dtype and dtype not in FLOAT_DTYPES:  # integers reach the layers exactly
            raise ValueError(
                f"{what} computes in float32, but input {tensor.name!r} is {dtype}; rebuild the model "
                "with a float32 input and copy its weights over"
            )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"{what} needs a model with one input and one output; {model.name!r} has "
            f"{len(model.inputs)} and {len(model.outputs)}"
        )
    dense = dense_layers(model)
    post: list[list[keras.layers.Layer]] = []
    seen_dense = False
    for layer in flat_layers(model):
        after_output = len(post) == len(dense)
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
                _check_elementwise(layer.activation, layer.name, post_output=after_output, what=what)
            post[-1].append(layer)
        elif isinstance(layer, OUTPUT_LAYERS) and after_output:
            axis = np.atleast_1d(np.asarray(layer.axis)).tolist()
            if axis not in ([-1], [1]):
                raise ValueError(
                    f"{what} cannot handle layer {layer.name!r} (Softmax over axis {layer.axis}): only a softmax "
                    "over the output units (axis=-1) follows the output layer"
                )
            post[-1].append(layer)
        else:
            where = " before the output layer" if isinstance(layer, OUTPUT_LAYERS) else ""
            raise ValueError(
                f"{what} cannot handle layer {layer.name!r} ({type(layer).__name__}){where}: only "
                "Dense layers, reshapes, dropout and elementwise activations are supported (Softmax after "
                "the output layer)"
            )
    acts: list[Activation | None] = []
    for i, (layer, after) in enumerate(zip(dense, post)):
        last = i == len(dense) - 1
        _check_elementwise(layer.activation, layer.name, post_output=last, what=what)
        steps = [_relu_or_identity(item) for item in [layer.activation, *after]]
        if not last and None not in steps and "relu" in steps:
            acts.append(None)  # Keras' ReLU: numpy's gives the same numbers, and is the study's fast path
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


def check_writable(c: Chain, what: str) -> None:
    """Refuse, before any work, a Dense layer whose kernel cannot be written (LoRA-enabled: its
    kernel is ``kernel + lora_a @ lora_b``, computed, not a variable)."""
    for layer in c.layers:
        if getattr(layer, "lora_enabled", False):
            raise ValueError(
                f"{what} cannot write layer {layer.name!r}: it has LoRA enabled, so its effective kernel is "
                "kernel + lora_a @ lora_b and not one variable; merge LoRA into the kernel first"
            )


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
        mode = getattr(layer, "quantization_mode", None) or getattr(policy, "quantization_mode", None)
        if mode:
            raise ValueError(
                f"{what} cannot read layer {layer.name!r}: it is quantized ({mode}), its weights are integers "
                "with scales, not the float kernel prunelib reads; prune the float model, then quantize"
            )
        dtypes = {str(policy.compute_dtype), str(policy.variable_dtype)}
        if not dtypes <= set(FLOAT_DTYPES):
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


def acts_elementwise(fn) -> bool:
    """Whether a function of the user's own acts on each value alone, judged on a probe: each entry
    of ``fn(z)`` must be ``fn`` of that entry by itself (a softmax, a normalization or anything
    mixing the units fails). Keras' own activations are known by name instead."""
    z = np.linspace(-3.0, 3.0, 15, dtype=np.float32).reshape(3, 5)
    try:
        with np.errstate(all="ignore"):
            whole = np.asarray(keras.ops.convert_to_numpy(fn(z)), np.float64)
            alone = np.array(
                [
                    [
                        np.asarray(keras.ops.convert_to_numpy(fn(z[i : i + 1, j : j + 1])), np.float64).item()
                        for j in range(5)
                    ]
                    for i in range(3)
                ]
            )
    except Exception:  # noqa: BLE001 - a function that cannot run on one value is no elementwise one
        return False
    return whole.shape == alone.shape and np.allclose(whole, alone, rtol=1e-5, atol=1e-6, equal_nan=True)


def _check_elementwise(fn, name: str, *, post_output: bool, what: str) -> None:
    act = activation_name(fn)
    if act in ELEMENTWISE or (post_output and act in ("softmax", "log_softmax")):
        return
    if keras_activation(fn) is None and acts_elementwise(fn):
        return  # a function of the user's own, computed as itself
    raise ValueError(
        f"{what} cannot handle activation {act!r} of layer {name!r}: it is not elementwise (each unit's output "
        f"depends on other units, checked on a probe), so one unit cannot be removed or re-fitted alone; Keras' "
        f"elementwise ones are {sorted(ELEMENTWISE)} (softmax only on the output)"
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


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and bool(
        np.allclose(got, want, rtol=1e-4, atol=1e-4 * (1 + float(np.abs(want).max(initial=0.0))))
    )


def _off_by(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max(initial=0.0))


def run(model: keras.Model, x) -> object:
    """``model(x)`` at inference, ``x`` wrapped in a list where the model was built on a list of one
    input (``keras.Model([inp], out)``), which Keras otherwise warns about at every call."""
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, list | tuple) and len(struct) == 1 and not isinstance(x, list | tuple):
        x = [x]
    return model(x, training=False)


def input_dtype(model: keras.Model) -> np.dtype | None:
    """The dtype of ``model``'s single input as numpy names it (None: several inputs, or none numpy has)."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        return None
    try:
        return np.dtype(str(inputs[0].dtype))
    except TypeError:  # a string input, or bfloat16
        return None


def _integral(dtype: np.dtype | None) -> bool:
    return dtype is not None and (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.bool_))


def random_batch(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A seeded array of ``shape`` in ``dtype``: standard normal for a float dtype, else the
    integers 0 and 1 (valid ids and pixel values alike)."""
    rng = np.random.default_rng(0)
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(0, 2, shape).astype(dtype)


def probe_batch(model: keras.Model, shape: tuple[int, ...], n: int = 16) -> np.ndarray:
    """:func:`random_batch` of ``n`` inputs of ``shape``: in the model's input dtype where it is an
    integer one, else float32."""
    dtype = input_dtype(model)
    return random_batch((n, *shape), dtype if _integral(dtype) else np.float32)


def keras_numpy(out) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(out))


def _first_misread_layer(c: Chain, x: np.ndarray) -> str | None:
    """Where the numpy reading and Keras part: each Dense layer (and the activations after it) run
    by Keras on the numpy reading's own input to it, against the reading's output; the first layer
    that differs, described, or ``None`` where every layer computes what it is read as."""
    h = x.reshape(len(x), -1)
    with np.errstate(all="ignore"):
        steps = list(forward.activations(c.kernels, x, c.biases, acts=c.acts))
    for layer, after, out in zip(c.layers, c.post, steps):
        try:
            z = layer(h, training=False)
            for a in after:
                z = a(z)
            own = keras_numpy(z)
        except Exception as err:  # noqa: BLE001 - Keras raises many types; the layer is what matters
            return (
                f"layer {layer.name!r} ({type(layer).__name__}) cannot be run alone on its input ({type(err).__name__})"
            )
        if not np.isfinite(out).all() and np.isfinite(own).all():
            return (
                f"layer {layer.name!r} overflows float32 in prunelib's reading (its outputs reach "
                f"{float(np.abs(own).max()):.3g}); scale the inputs"
            )
        if not _close(out, own):
            return (
                f"layer {layer.name!r} ({type(layer).__name__}, {' then '.join(describe_step(layer, after))}) "
                f"computes something else than its kernel, bias and activation say (off by {_off_by(out, own):.3g})"
            )
        h = out
    return None


def verify(c: Chain, model: keras.Model, x: np.ndarray, what: str, *, result: bool = False) -> None:
    """Check the numpy reading of ``model`` against Keras' own predict on ``x``.

    Args:
        result: ``model`` is the operation's result (the messages say so).

    Raises:
        ValueError: naming the cause: inputs or Keras' own predictions that are NaN or infinite,
            predictions of another dtype or shape, the first layer whose Keras call differs from
            its reading, or, where every layer computes what it is read as, a model that does not
            chain its layers in order (a branch or skip connection).
    """
    whose = f"{what}'s result {model.name!r}" if result else f"model {model.name!r}"
    if _integral(dtype := input_dtype(model)):
        x = np.asarray(x).astype(dtype)  # what Keras feeds the model: the reading gets the same values
    x = np.asarray(x, np.float32)[:64]
    if not np.isfinite(x).all():
        raise ValueError(f"{what} got inputs that contain NaN or infinity (or values beyond float32's range)")
    want = keras_numpy(run(model, x))
    if str(want.dtype) not in FLOAT_DTYPES:
        raise ValueError(f"{what}: {whose} predicts in {want.dtype}, not float32; rebuild it in float32")
    if not np.isfinite(want).all():
        cause = "its fitted weights overflow (raise damping)" if result else "check the training run"
        raise ValueError(
            f"{what}: {whose}'s own predictions on finite inputs contain NaN or infinity "
            f"(its weights or activations overflow; scale the inputs or {cause})"
        )
    with np.errstate(all="ignore"):
        got = predict_chain(c, x)
    if got.shape != want.shape:
        raise ValueError(
            f"{what} reads {whose} as a chain of its Dense layers, whose outputs have shape {got.shape[1:]}, "
            f"but the model's have {want.shape[1:]}: its output is not its last Dense layer's"
        )
    if _close(got, want):
        return
    cause = _first_misread_layer(c, x)
    if cause is None:
        cause = (
            "each Dense layer computes what prunelib reads, but the model does not apply them one after the "
            "other (a branch or skip connection); only plain chains are supported"
        )
    raise ValueError(
        f"{what} reads {whose} as a chain of its Dense layers, which differs from its predictions by "
        f"{_off_by(got, want):.3g}: {cause}"
    )


def verify_result(result: keras.Model, x: np.ndarray, want: np.ndarray, what: str) -> None:
    """Check an operation's result model on the probe batch ``x``: it reads as a chain reproducing
    its own predictions (:func:`verify`), and those are ``want``, what the operation computed.

    Raises:
        ValueError: ``{what}'s result ...`` naming the cause (NaN or infinite weights, dtype, shape,
            the first layer that differs, or how far the result is from what was computed).
    """
    for layer in dense_layers(result):
        values = [layer.kernel] + ([] if layer.bias is None else [layer.bias])
        bad = int(sum(np.sum(~np.isfinite(keras_numpy(v))) for v in values))
        if bad:
            raise ValueError(
                f"{what}'s result has {bad} NaN or infinite weights in layer {layer.name!r} (float32 overflow: "
                "raise damping or check the calibration data)"
            )
    verify(chain(result, what), result, x, what, result=True)
    x = np.asarray(x, np.float32)[:64]
    got = keras_numpy(run(result, x))
    want = np.asarray(want)[:64]
    if not _close(got, want):
        detail = (
            f"shape {got.shape[1:]}, not {want.shape[1:]}"
            if got.shape != want.shape
            else f"by {_off_by(got, want):.3g}"
        )
        raise ValueError(
            f"{what}'s result {result.name!r} predicts something else than {what} computed on a probe batch "
            f"(off {detail}); this is a bug in prunelib, please report it"
        )
