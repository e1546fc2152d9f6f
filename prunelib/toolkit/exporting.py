"""Export a (pruned, compacted) Keras model to the formats deployment uses, chosen by file suffix."""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path

FORMATS = {".keras": "keras", ".onnx": "onnx", ".tflite": "tflite"}
QUANTIZE = (None, "float16", "int8")
# an exported float file reproduces Keras within this, relative to the outputs' largest magnitude
# (at least 1); a float16 or bfloat16 model within a few of its own epsilons
RTOL = 1e-4
PROBE_BATCH = 8
# TFLite's dynamic-range quantization leaves weight tensors of fewer entries float32 (the
# converter's min_elements_for_weights); onnxruntime's quantize_dynamic has no such floor
TFLITE_MIN_QUANTIZED = 1024


def export(model, path: str | os.PathLike, *, include_optimizer: bool = False, quantize: str | None = None) -> Path:
    """Write ``model`` to ``path`` in the format its suffix names: ``.keras``, ``.onnx`` or ``.tflite``.

    ONNX goes through Keras' own exporter (``model.export(..., format="onnx")``, tf2onnx underneath);
    TFLite/LiteRT through TensorFlow's converter from a SavedModel. Pruned zeros are stored as
    zeros: a weight-pruned file is only smaller once compressed; a compacted model
    (:func:`prunelib.compact_model`) is smaller and faster as it is.

    A ``.keras`` file holds the model and its weights only, unless ``include_optimizer=True``: a
    model fine-tuned with Adam carries two more copies of every weight in its optimizer, which a
    deployment never reads (``model.save`` keeps them; ONNX and TFLite never hold them).

    ``quantize`` stores the weights in fewer bits (activations stay float32, inputs and outputs too):

    * ``"float16"``: ``.tflite`` by the converter's float16 quantization; ``.onnx`` by onnxruntime's
      float16 conversion (``onnxruntime.transformers.float16``, inputs and outputs kept float32).
      A weight beyond float16's range (65504) is refused by name: both converters would clamp it.
    * ``"int8"``: ``.tflite`` by the converter's dynamic-range quantization; ``.onnx`` by onnxruntime's
      dynamic quantization (``quantize_dynamic``, int8 weights). TFLite's converter quantizes only
      weight tensors of 1,024 or more entries: a ``UserWarning`` says how many stayed float32.
    * ``.keras`` files are not quantized (a ``ValueError``): Keras' ``model.quantize`` changes the
      model's own layers, which a user does on a copy of their own and saves.

    Every ``.onnx`` and ``.tflite`` file is verified before it is put in place: onnxruntime, or the
    LiteRT interpreter (``ai-edge-litert``), loads it and runs it on a probe batch of
    ``PROBE_BATCH`` random inputs, and its outputs must equal Keras' within ``RTOL`` of their
    largest magnitude (at least 1; a model that computes in float16 or bfloat16, a mixed-precision
    one included, within a few of that type's epsilons). A quantized file must load, run and give
    outputs of Keras' shapes, finite where Keras' are; its accuracy is measured, not checked
    (docs/own-model.md).
    A model with several inputs, or inputs of unknown size, is only loaded.

    The file is written to a temporary file beside ``path`` and renamed onto it only once complete
    and verified, so a failed export leaves a previous file at ``path`` as it was. ``~`` is
    expanded; the suffix is read case-insensitively (``"M.KERAS"`` is a ``.keras`` file, with a
    warning: ``keras.models.load_model`` reads only ``.keras``). A ``.keras`` file is loaded back
    and compared with the model before it is put in place, as the others are run. A symbolic
    link is kept: the file it points to is written.

    Each input of an ``.onnx`` file is probed in the type the file declares (integer ids 0 and 1 for
    an ``Embedding``). A model never called is run once on zeros first (Keras' exporters need it).

    Returns:
        The path written.

    Raises:
        ValueError: an unknown suffix or ``quantize``, ``quantize`` for a ``.keras`` file, float16
            for weights beyond its range, ``path`` is a directory or under a file, an unbuilt model,
            an ``.onnx`` file of a model never called whose input sizes are unknown, a TFLite
            conversion that fails (the line of its error that says why quoted), or a file that fails
            verification (one line: the model, the runtime's reason and the layer where it can be
            told, e.g. an op that onnxruntime does not have).
        TypeError: ``model`` is not a Keras 3 model.
        ImportError: onnxruntime (for ``.onnx``) or ai-edge-litert (for ``.tflite``) is not installed.
        OSError: the file, or the SavedModel a ``.tflite`` file is converted from, cannot be written
            (a full disk); the error names ``path``.

    Example:
        >>> import keras, prunelib, tempfile, os
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> path = prunelib.export(model, os.path.join(tempfile.mkdtemp(), "m.onnx"))
        >>> path.stat().st_size > 0
        True
    """
    from prunelib.base.files import creating_folders, replacing, user_path
    from prunelib.toolkit.chain import check_built

    if not (quantize is None or isinstance(quantize, str)) or quantize not in QUANTIZE:
        raise ValueError(f'quantize must be None, "float16" or "int8", got {quantize!r}')
    check_built(model)
    if not _is_bool(include_optimizer):
        raise ValueError(f"include_optimizer must be True or False, got {include_optimizer!r}")
    include_optimizer = bool(include_optimizer)
    path = user_path(path)
    suffix = path.suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise ValueError(
            f"cannot tell the export format from {path.name!r}; end the path with one of {sorted(FORMATS)}"
        )
    if quantize and fmt == "keras":
        raise ValueError(
            f"quantize={quantize!r} applies to .onnx and .tflite files; a .keras file holds the float model "
            "(for int8 weights in Keras, call model.quantize('int8') on a copy and save that)"
        )
    if fmt != "keras":
        _runtime(fmt)  # the runtime that verifies the file, before any work
    if quantize == "float16" and fmt == "onnx":
        _float16_converter()  # refused before any work where onnxruntime lacks it
    if quantize == "float16":
        _check_float16_range(model)
    # the temporary file carries the lower-case suffix, which Keras' own writers check for
    if fmt == "keras" and path.suffix != suffix:
        warnings.warn(
            f"{path.name!r} is a .keras file, but keras.models.load_model reads only the lower-case suffix: "
            f"rename it to load it, or export to {path.with_suffix(suffix).name!r}",
            stacklevel=2,
        )
    with creating_folders(path), replacing(path, suffix) as tmp:
        if fmt != "keras":
            _run_once(model, fmt)
        if fmt == "keras":
            _without_optimizer(model, include_optimizer).save(tmp)
            _verify_keras(model, tmp, path)
        elif fmt == "onnx":
            _write_onnx(model, tmp, quantize)
            _verify(model, tmp, path, _onnx_runner, quantize)
        else:
            try:
                data = _tflite_bytes(model, quantize)
                tmp.write_bytes(data)
            except OSError as err:  # a full disk: name the file the user asked for, not a temporary one
                raise OSError(err.errno, f"cannot write the .tflite file ({err.strerror or err})", str(path)) from None
            _verify(model, tmp, path, _tflite_runner, quantize)
    if fmt == "tflite" and quantize == "int8":
        _warn_unquantized(data, path)
    return path


def _own_objects(model) -> dict:
    """The classes and activation functions of the user's own in ``model`` (not Keras'), by the name
    Keras saves them under: what ``keras.models.load_model(..., custom_objects=...)`` needs."""
    from prunelib.toolkit.chain import keras_activation
    from prunelib.toolkit.kernels import flat_layers

    objects = {}
    for item in [model, *flat_layers(model)]:
        cls = type(item)
        if not cls.__module__.startswith("keras"):
            objects[cls.__name__] = cls
        fn = getattr(item, "activation", None)
        if callable(fn) and not isinstance(fn, type) and keras_activation(fn) is None:
            objects[getattr(fn, "__name__", repr(fn))] = fn
    return objects


def _verify_keras(model, tmp: Path, path: Path) -> None:
    """Load ``tmp`` back (``keras.models.load_model``, given the model's own classes and functions)
    and compare it with ``model`` on a probe batch; else a one-line ValueError. A file that loads only
    with those given (nothing registered with Keras) is written with a warning that says so."""
    import keras
    import numpy as np

    own = _own_objects(model)
    try:
        loaded = keras.models.load_model(tmp, compile=False, custom_objects=own)
    except Exception as err:  # Keras raises many types for a file it cannot rebuild
        text = str(err)
        cause = f"Keras cannot load it back ({(text.splitlines() or [type(err).__name__])[0][:200]})"
        raise ValueError(
            f"export of model {model.name!r} to {path.name!r} failed verification: {cause}; no file was written"
        ) from None
    if own:
        try:
            keras.models.load_model(tmp, compile=False)
        except Exception:  # noqa: BLE001 - any failure: the names must be given to load it
            warnings.warn(
                f"{path.name!r} loads only with your own {sorted(own)} given: keras.models.load_model(path, "
                "custom_objects={...}), or decorate them with @keras.saving.register_keras_serializable()",
                stacklevel=3,
            )
    inputs = getattr(model, "inputs", None) or []
    rng = np.random.default_rng(0)
    probes = []
    for tensor in inputs:  # every input: float ones random, integer ones (ids) 0, valid for any vocabulary
        shape, dtype = tuple(tensor.shape[1:]), str(tensor.dtype)
        if None in shape or not ("float" in dtype or "int" in dtype):
            return  # loading it is the check there is
        probes.append(
            rng.standard_normal((PROBE_BATCH, *shape)).astype(np.float32)
            if "float" in dtype
            else np.zeros((PROBE_BATCH, *shape), dtype)
        )
    if not probes:
        return
    from prunelib.toolkit.chain import run

    struct = getattr(model, "_inputs_struct", None)
    try:
        batch = keras.tree.pack_sequence_as(struct, probes) if struct is not None else probes
    except (TypeError, ValueError):
        batch = probes
    batch = batch[0] if isinstance(batch, list) and len(batch) == 1 else batch
    want = [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(run(model, batch))]
    got = [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(run(loaded, batch))]
    for w, g in zip(want, got, strict=True):
        if w.shape != g.shape or not np.allclose(
            g, w, rtol=RTOL, atol=RTOL * max(1.0, float(np.abs(w).max())), equal_nan=True
        ):
            raise ValueError(
                f"export of model {model.name!r} to {path.name!r} failed verification: the file loaded back predicts "
                "something else than the model (a layer whose config does not hold all it computes); no file was "
                "written"
            )


def _is_bool(value: object) -> bool:
    """``True``/``False``, Python's or numpy's (``np.True_``)."""
    import numpy as np

    return isinstance(value, (bool, np.bool_))


def _run_once(model, fmt: str) -> None:
    """Run ``model`` once on zeros: Keras' exporters need a model that has been called (a freshly
    built compact model, or a functional model never called, has not).

    Raises:
        ValueError: an ONNX export of a model never called whose input sizes are unknown.
    """
    import keras

    # a subclassed model has no symbolic inputs (it has run once to be built, which is enough)
    inputs = getattr(model, "inputs", None) or []
    if inputs and all(None not in tuple(i.shape[1:]) for i in inputs):
        zeros = [keras.ops.zeros((1, *i.shape[1:]), dtype=i.dtype) for i in inputs]
        struct = getattr(model, "_inputs_struct", None)  # a functional model's list or dict of inputs
        try:
            batch = keras.tree.pack_sequence_as(struct, zeros) if struct is not None else zeros
        except (TypeError, ValueError):
            batch = zeros
        model(batch[0] if isinstance(batch, list) and len(batch) == 1 else batch, training=False)
    elif fmt == "onnx" and not getattr(model, "_called", True):
        shapes = [tuple(i.shape[1:]) for i in inputs]
        raise ValueError(
            f"model {model.name!r} has never been called, and Keras' ONNX exporter needs a model that has; "
            f"its inputs' sizes {shapes or 'are unknown'} do not say what to call it on: call it once on a batch "
            "(model(x)) and export again"
        )


def _without_optimizer(model, include_optimizer: bool):
    """``model`` itself, or an uncompiled copy holding its weights (no optimizer state to save)."""
    if include_optimizer or getattr(model, "optimizer", None) is None:
        return model
    try:  # from its config, not clone_model: Keras compiles a clone of a compiled model
        copy = type(model).from_config(model.get_config())
        if not copy.weights and model.weights:
            # a subclassed model is rebuilt unbuilt: built as Keras' own loading builds it
            copy.build_from_config(model.get_build_config())
        copy.set_weights(model.get_weights())
    except Exception as err:  # noqa: BLE001 - a subclassed model without get_config cannot be rebuilt
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        warnings.warn(
            f"model {model.name!r} cannot be copied without its optimizer ({reason}); the .keras file keeps "
            "the optimizer state (export .onnx or .tflite for a file without it)",
            stacklevel=3,
        )
        return model
    return copy


def _check_float16_range(model) -> None:
    """Refuse weights that float16 cannot hold: both converters clamp them to 65504, silently."""
    import numpy as np

    big = float(np.finfo(np.float16).max)
    for variable in model.weights:
        values = np.asarray(variable.numpy())
        if np.issubdtype(values.dtype, np.floating) and values.size and np.nanmax(np.abs(values)) > big:
            raise ValueError(
                f"model {model.name!r} has weights beyond float16's range (65504) in {variable.path!r}, which a "
                'float16 file would clamp; export it with quantize="int8" or without quantize'
            )


def _keras_onnx(model, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Keras' tf2onnx patch probes np.object
        model.export(str(path), format="onnx", verbose=False)


def _float16_converter():
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as err:
        raise ValueError(
            f'quantize="float16" for .onnx needs onnxruntime\'s float16 converter, which this onnxruntime '
            f"lacks ({err}); export a float16 .tflite file instead"
        ) from None
    return convert_float_to_float16


class _NoPreprocessingNotice(logging.Filter):
    """onnxruntime's quantizer logs a pre-processing suggestion to the root logger on every call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _write_onnx(model, tmp: Path, quantize: str | None) -> None:
    if quantize is None:
        _keras_onnx(model, tmp)
        return
    with tempfile.TemporaryDirectory() as work:
        full = Path(work) / "float32.onnx"
        _keras_onnx(model, full)
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            notice = _NoPreprocessingNotice()
            logging.getLogger().addFilter(notice)
            try:
                quantize_dynamic(full, tmp, weight_type=QuantType.QInt8)
            finally:
                logging.getLogger().removeFilter(notice)
        else:
            import onnx

            onnx.save(_float16_converter()(onnx.load(str(full)), keep_io_types=True), str(tmp))


def _tflite_bytes(model, quantize: str | None = None) -> bytes:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        try:
            model.export(tmp, format="tf_saved_model", verbose=False)
        except (tf.errors.OutOfRangeError, tf.errors.ResourceExhaustedError) as err:
            # TensorFlow's names for EFBIG and ENOSPC: the disk is full, which is an OSError
            code = errno.EFBIG if isinstance(err, tf.errors.OutOfRangeError) else errno.ENOSPC
            raise OSError(
                code, f"{os.strerror(code)} writing the SavedModel it is converted from, in {tempfile.gettempdir()}"
            ) from None
        try:
            converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
            if quantize:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights, dynamic range
            if quantize == "float16":
                converter.target_spec.supported_types = [tf.float16]
            return converter.convert()
        except Exception as err:  # the converter's message is pages of MLIR: quote the line that says why
            raise ValueError(
                f"TFLite conversion of model {model.name!r} failed ({_converter_reason(err)}); export it as .onnx "
                "or .keras instead"
            ) from None


def _converter_reason(err: Exception) -> str:
    """The line of the TFLite converter's error that says why, rather than where.

    Its first lines with "error" in them are MLIR locations (``loc(callsite(fused[...``); the line
    that says an op is not supported, and the list of the TF Select ops it would need, say why.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return repr(err)[:300]
    why = next((line for line in lines if re.search(r"not supported|failed to legalize|TF Select", line, re.I)), None)
    if why is None:
        return next((line for line in lines if "error" in line.lower()), lines[0])[:300]
    ops = next((line for line in lines if line.startswith("TF Select ops:")), None)
    return (why if ops is None or ops == why else f"{why}; {ops}")[:400]


def _warn_unquantized(data: bytes, path: Path) -> None:
    """Warn where an int8 ``.tflite`` file (``data``) left weight tensors float32: the converter
    quantizes only those of ``TFLITE_MIN_QUANTIZED`` or more entries, so a small model's int8 file
    is its float32 file, which nothing else would tell."""
    total, small, large = _weight_tensors(data)
    left = small + large
    if not left:
        return
    why = f"TFLite's converter quantizes only weight tensors of {TFLITE_MIN_QUANTIZED:,} or more entries"
    if large:
        why += f"; {large} of them that large are in ops it does not quantize"
    what = (
        f"no weight tensor was quantized: all {total} stayed float32"
        if left == total
        else f"{left} of its {total} weight tensors stayed float32"
    )
    warnings.warn(
        f"{path.name!r} was written with quantize='int8', but {what} ({why}); an int8 .onnx file quantizes them all",
        UserWarning,
        stacklevel=3,
    )


TFLITE_WEIGHTED_OPS = (
    "FULLY_CONNECTED",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "TRANSPOSE_CONV",
    "CONV_3D",
    "CONV_3D_TRANSPOSE",
    "BATCH_MATMUL",
    "EMBEDDING_LOOKUP",
    "GATHER",
    "DEQUANTIZE",  # a quantized weight some ops read through a dequantize
)
"""The TFLite ops whose constant inputs are the weights dynamic-range quantization stores in int8."""


def _weight_tensors(data: bytes) -> tuple[int, int, int]:
    """Of the weight tensors in a ``.tflite`` flatbuffer (the constant inputs, of two or more
    dimensions, of :data:`TFLITE_WEIGHTED_OPS`: kernels and tables, not biases or a folded
    normalization's constants, which no converter quantizes): how many there are, and how many
    float32 ones have fewer and how many ``TFLITE_MIN_QUANTIZED`` or more entries."""
    import numpy as np

    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # a LiteRT without the flatbuffer schema: nothing to count by
        return 0, 0, 0
    model = schema.Model.GetRootAs(data, 0)
    weighted = {getattr(schema.BuiltinOperator, name) for name in TFLITE_WEIGHTED_OPS}
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    # TFLite keeps an op's code in one of two fields (the larger is the real one)
    ops = [max(c.BuiltinCode(), c.DeprecatedBuiltinCode()) for c in codes]
    seen, total, small, large = set(), 0, 0, 0
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        inputs = {
            int(t)
            for o in range(graph.OperatorsLength())
            if ops[(op := graph.Operators(o)).OpcodeIndex()] in weighted
            for t in (op.InputsAsNumpy() if op.InputsLength() else [])
            if t >= 0
        }
        for t in sorted(inputs):
            tensor = graph.Tensors(t)
            index = tensor.Buffer()
            buffer = model.Buffers(index) if 0 < index < model.BuffersLength() else None
            # a constant has data: in the buffer, or (a file over 2 GB) at an offset after it
            if buffer is None or not (buffer.DataLength() or buffer.Size()) or index in seen:
                continue
            shape = tensor.ShapeAsNumpy() if tensor.ShapeLength() else np.zeros(0, np.int32)
            if shape.size < 2:
                continue
            seen.add(index)
            total += 1
            if tensor.Type() == schema.TensorType.FLOAT32:
                if int(np.prod(shape)) < TFLITE_MIN_QUANTIZED:
                    small += 1
                else:
                    large += 1
    return total, small, large


# -- verification: the written file, run by the runtime a deployment uses --------------------------


class _Unusable(Exception):
    """The runtime cannot load or run the file: ``args[0]`` says which, ``args[1]`` is its error."""


ONNX_TYPES = {
    f"tensor({onnx_name})": np_name
    for onnx_name, np_name in {
        "float": "float32",
        "double": "float64",
        "float16": "float16",
        "int8": "int8",
        "int16": "int16",
        "int32": "int32",
        "int64": "int64",
        "uint8": "uint8",
        "uint16": "uint16",
        "uint32": "uint32",
        "uint64": "uint64",
        "bool": "bool",
    }.items()
}
"""onnxruntime's input types (``session.get_inputs()[i].type``) as numpy dtype names."""


def _onnx_runner(path: Path):
    """The file's inputs ``[(name, shape, dtype)]`` (a numpy dtype name, ``None`` for a type numpy
    cannot probe) and a function from input arrays to output arrays."""
    try:
        session = onnx_session(path)
    except Exception as err:
        raise _Unusable("onnxruntime cannot load it", err) from None
    # each input in the type the graph declares (an Embedding's int32 ids stay int32); another type
    # (a string) gets no probe: the file is only loaded
    specs = [
        (i.name, tuple(d if isinstance(d, int) else None for d in i.shape), ONNX_TYPES.get(i.type))
        for i in session.get_inputs()
    ]

    def run(arrays):
        try:
            return session.run(None, {name: a for (name, _, _), a in zip(specs, arrays)})
        except Exception as err:
            raise _Unusable("onnxruntime cannot run it", err) from None

    return specs, run


RUNTIMES = {"onnx": ("onnxruntime", "onnxruntime"), "tflite": ("ai_edge_litert.interpreter", "ai-edge-litert")}


def _runtime(fmt: str):
    """The module that runs ``fmt`` files, or an ImportError that says what to install."""
    import importlib

    module, package = RUNTIMES[fmt]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"exporting .{fmt} files verifies them with {package}, which is not installed: pip install {package} "
            "(or pip install prunelib[export])"
        ) from None


def _litert(path: Path):
    return _runtime("tflite").Interpreter(model_path=str(path))


def _tflite_runner(path: Path):
    """As :func:`_onnx_runner`, by the LiteRT interpreter (its serving signature when it has one)."""
    import numpy as np

    try:
        interpreter = _litert(path)
    except Exception as err:
        raise _Unusable("the LiteRT interpreter cannot load it", err) from None
    try:
        interpreter.allocate_tensors()
    except Exception as err:
        # inputs of unknown size are allocated at size 1, where e.g. a kernel-3 Conv1D has no output:
        # such a file is allocated again at the size it is run at (run() resizes first)
        if not any((d["shape_signature"][1:] < 0).any() for d in interpreter.get_input_details()):
            raise _Unusable("the LiteRT interpreter cannot load it", err) from None
    signatures = interpreter.get_signature_list()
    if len(signatures) == 1:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        details = runner.get_input_details()
        names = list(details)
    else:  # a file without signatures: its tensors in the interpreter's order
        runner, details = None, {d["name"]: d for d in interpreter.get_input_details()}
        names = list(details)
    specs = [
        (n, tuple(None if s < 0 else int(s) for s in details[n]["shape_signature"]), np.dtype(details[n]["dtype"]))
        for n in names
    ]

    def run(arrays):
        try:
            if runner is not None:
                out = runner(**dict(zip(names, arrays)))
                return [out[k] for k in sorted(out, key=_output_order)]
            for d, a in zip(details.values(), arrays):
                interpreter.resize_tensor_input(d["index"], a.shape)
            interpreter.allocate_tensors()
            for d, a in zip(details.values(), arrays):
                interpreter.set_tensor(d["index"], a)
            interpreter.invoke()
            return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
        except Exception as err:
            raise _Unusable("the LiteRT interpreter cannot run it", err) from None

    return specs, run


def _output_order(name: str):
    """Keras names a signature's outputs output_0, output_1, ... in its own order (a dict's: its keys)."""
    number = re.fullmatch(r"output_(\d+)", name)
    return (0, int(number.group(1)), "") if number else (1, 0, name)


def _probe(model, specs):
    """A seeded random batch for a single-input file whose size is known, else None."""
    if len(specs) != 1:
        return None
    inputs = getattr(model, "inputs", None) or []
    dims = tuple(inputs[0].shape[1:]) if len(inputs) == 1 else specs[0][1][1:]
    if None in dims:
        return None
    if specs[0][2] is None:
        return None
    from prunelib.toolkit.chain import random_batch

    return random_batch((PROBE_BATCH, *dims), specs[0][2])


def _verify(model, tmp: Path, path: Path, runner, quantize: str | None) -> None:
    """Load and run ``tmp`` as a deployment would, compared with Keras; else a one-line ValueError."""
    import keras
    import numpy as np

    try:
        specs, run = runner(tmp)
        probe = _probe(model, specs)
        if probe is None:
            return  # loading it is the check there is
        got = [np.asarray(o) for o in run([probe])]
    except _Unusable as err:
        what, cause = err.args
        raise ValueError(_failure(model, path, f"{what}: {_reason(cause, tmp, path, model)}")) from None
    from prunelib.toolkit.chain import run
    from prunelib.toolkit.kernels import flat_layers

    want = [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(run(model, probe))]
    policies = [getattr(layer, "dtype_policy", None) for layer in [model, *flat_layers(model)]]
    computed = max((_epsilon(str(getattr(p, "compute_dtype", None))) for p in policies), default=0.0)
    if len(got) != len(want):
        raise ValueError(_failure(model, path, f"the file has {len(got)} outputs where Keras has {len(want)}"))
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            raise ValueError(_failure(model, path, f"output {i} has shape {g.shape} where Keras gives {w.shape}"))
        if np.any(~np.isfinite(g) & np.isfinite(w)):
            raise ValueError(_failure(model, path, f"output {i} is NaN or infinite where Keras' is finite"))
        if quantize:
            continue  # a quantized file's accuracy is measured (docs/own-model.md), not checked
        w = w.astype(np.float64)
        # a float16 or bfloat16 model: a few of its own epsilons, those of the type it computes in
        # (a mixed-precision model's float32 output layer adds float16's rounding, not removes it)
        tol = max(RTOL, 8 * max(_epsilon(str(want[i].dtype)), computed))
        scale = max(1.0, float(np.nanmax(np.abs(w), initial=0.0, where=np.isfinite(w))))
        gap = np.abs(g.astype(np.float64) - w)
        gap = np.where(np.isfinite(w) | np.isfinite(g), gap, 0.0)  # the same NaN in both
        worst = float(np.nanmax(gap, initial=0.0))
        if not worst <= tol * scale:
            raise ValueError(
                _failure(
                    model, path, f"output {i} differs from Keras' by up to {worst:.3g} (tolerance {tol * scale:.3g})"
                )
            )


EPSILON = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
"""Machine epsilons by dtype name (numpy's ``finfo`` does not know bfloat16)."""


def _epsilon(dtype: str) -> float:
    """The machine epsilon of a float dtype's name, 0 for any other."""
    return EPSILON.get(dtype, 0.0)


def _failure(model, path: Path, cause: str) -> str:
    other = ".tflite" if path.suffix.lower() == ".onnx" else ".onnx"
    return (
        f"export of model {model.name!r} to {path.name!r} failed verification: {cause}; no file was written "
        f"(try {other} or .keras)"
    )


def _reason(err: Exception, tmp: Path, path: Path, model) -> str:
    """The runtime's error in one line, the temporary file's name replaced, the layer named if it can be."""
    text = _one_line(str(err).replace(str(tmp), path.name))
    # onnxruntime: 'INVALID_GRAPH : ... In Node, ("seq_1/dense_1/Gelu/Erfc", Erfc, "", -1) : ... No Op registered for Erfc'
    node = re.search(r"""In Node, \(["']([^"']+)["']""", text)
    op = re.search(r"No Op registered for (\S+)", text)
    if node and op:
        text = f"it has no op {op.group(1)} (node {node.group(1)!r})"
    layer = _layer_of(model, node.group(1)) if node else None
    return f"{text[:300]}, in layer {layer!r}" if layer else text[:300]


def _one_line(text: str) -> str:
    """A runtime's error on one line, without onnxruntime's code prefix and the path it repeats."""
    text = " ".join(text.split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", text)
    return re.sub(r"Load model from \S+ failed: ?", "", text)


def _layer_of(model, node: str) -> str | None:
    """The layer that a converted graph node such as ``sequential_1/dense_1/Gelu/Erfc`` came from.

    TensorFlow scopes a node by the model's name and the layer's, and gives each scope a suffix
    (``_1``, ``_2``) when the graph has used its name before: where the model's scope has one, so
    does every layer's. A layer inside a nested model is named ``outer_layer/inner_layer``.
    """
    parts = node.split("/")[:-1]
    if not parts or not parts[0].startswith(model.name):
        return None
    suffixed = parts[0] != model.name
    if suffixed and not re.fullmatch(r"_\d+", parts[0][len(model.name) :]):
        return None
    found, layers = [], getattr(model, "layers", [])
    for part in parts[1:]:
        name = re.sub(r"_\d+$", "", part) if suffixed else part
        layer = next((layer for layer in layers if layer.name == name), None)
        if layer is None:
            break
        found.append(name)
        layers = getattr(layer, "layers", [])
    return "/".join(found) or None


# -- running exported files -----------------------------------------------------------------------


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session for ``path`` (``threads`` intra-op threads if given)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _one_or_all(outputs: list):
    """A model's one output as an array, several as a list in the file's order."""
    return outputs[0] if len(outputs) == 1 else list(outputs)


def _exists(path: str | os.PathLike) -> None:
    """A FileNotFoundError for a missing ``path``, as ``open`` raises (the runtimes raise their own types)."""
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no such file", os.fspath(path))


def onnx_predict(path_or_session, x):
    """The output of an exported single-input ``.onnx`` model on ``x`` (float32), via onnxruntime:
    an array, or a list of arrays for a model of several outputs.

    Raises:
        FileNotFoundError: there is no file at the path.
        ValueError: onnxruntime cannot load the file (not an ONNX file) or run it on ``x`` (a batch
            of another shape than the model's inputs); one line naming the file.
    """
    import numpy as np

    if hasattr(path_or_session, "run"):
        session = path_or_session
        path = getattr(session, "_model_path", None)
        where = repr(path) if path else "the onnxruntime session"
    else:
        _exists(path_or_session)
        where = repr(os.fspath(path_or_session))
        try:
            session = onnx_session(path_or_session)
        except Exception as err:  # onnxruntime's own types (InvalidProtobuf, ...), no ValueError
            raise ValueError(f"{where}: onnxruntime cannot load it ({_one_line(str(err))[:300]})") from err
    try:
        name = session.get_inputs()[0].name
        return _one_or_all(session.run(None, {name: np.asarray(x, np.float32)}))
    except Exception as err:  # InvalidArgument for a batch of the wrong shape, ...
        raise ValueError(f"{where}: onnxruntime cannot run it ({_one_line(str(err))[:300]})") from err


def tflite_predict(path: str | os.PathLike, x):
    """The output of an exported single-input ``.tflite`` model on ``x`` (float32), via the LiteRT
    interpreter (``ai-edge-litert``, which replaces ``tf.lite.Interpreter``): an array, or a list of
    arrays for a model of several outputs. Inputs of unknown size are run at ``x``'s.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        ValueError: the interpreter cannot load the file (not a TFLite file) or run it on ``x`` (a
            batch of another shape than the model's inputs); one line naming the file.
    """
    import numpy as np

    _exists(path)
    try:
        _, run = _tflite_runner(Path(path))
        return _one_or_all(run([np.asarray(x, np.float32)]))
    except _Unusable as err:
        what, cause = err.args
        raise ValueError(f"{os.fspath(path)!r}: {what} ({_one_line(str(cause))[:300]})") from cause
