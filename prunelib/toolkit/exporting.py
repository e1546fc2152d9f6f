"""Export a (pruned, compacted) Keras model to the formats deployment uses, chosen by file suffix."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

FORMATS = {".keras": "keras", ".onnx": "onnx", ".tflite": "tflite"}


def export(model, path: str | os.PathLike, *, include_optimizer: bool = False) -> Path:
    """Write ``model`` to ``path`` in the format its suffix names: ``.keras``, ``.onnx`` or ``.tflite``.

    ONNX goes through Keras' own exporter (``model.export(..., format="onnx")``, tf2onnx underneath);
    TFLite/LiteRT through TensorFlow's converter from a SavedModel. Pruned zeros are stored as
    zeros: a weight-pruned file is only smaller once compressed; a compacted model
    (:func:`prunelib.compact_model`) is smaller and faster as it is.

    A ``.keras`` file holds the model and its weights only, unless ``include_optimizer=True``: a
    model fine-tuned with Adam carries two more copies of every weight in its optimizer, which a
    deployment never reads (``model.save`` keeps them; ONNX and TFLite never hold them).

    The file is written to a temporary file beside ``path`` and renamed onto it only once complete,
    so a failed export leaves a previous file at ``path`` as it was. ``~`` is expanded; the suffix
    is read case-insensitively (``"M.KERAS"`` is a ``.keras`` file).

    Returns:
        The path written.

    Raises:
        ValueError: an unknown suffix, ``path`` is a directory, an unbuilt model, or a TFLite
            conversion that fails (its first error line quoted).
        TypeError: ``model`` is not a Keras 3 model.

    Example:
        >>> import keras, prunelib, tempfile, os
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> path = prunelib.export(model, os.path.join(tempfile.mkdtemp(), "m.onnx"))
        >>> path.stat().st_size > 0
        True
    """
    from prunelib.toolkit.chain import check_built
    from prunelib.toolkit.files import replacing, user_path, writable_target

    check_built(model)
    if not isinstance(include_optimizer, bool):
        raise ValueError(f"include_optimizer must be True or False, got {include_optimizer!r}")
    path = user_path(path)
    suffix = path.suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise ValueError(
            f"cannot tell the export format from {path.name!r}; end the path with one of {sorted(FORMATS)}"
        )
    writable_target(path)
    # a subclassed model has no symbolic inputs (it has run once to be built, which is enough)
    inputs = getattr(model, "inputs", None) or []
    if fmt != "keras" and len(inputs) == 1 and None not in inputs[0].shape[1:]:
        import numpy as np

        # Keras' exporters need a model that has run once (a freshly built compact model has not)
        model(np.zeros((1, *inputs[0].shape[1:]), np.float32), training=False)
    # the temporary file carries the lower-case suffix, which Keras' own writers check for
    with replacing(path, suffix) as tmp:
        if fmt == "keras":
            _without_optimizer(model, include_optimizer).save(tmp)
        elif fmt == "onnx":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # Keras' tf2onnx patch probes np.object
                model.export(str(tmp), format="onnx", verbose=False)
        else:
            tmp.write_bytes(_tflite_bytes(model))
    return path


def _without_optimizer(model, include_optimizer: bool):
    """``model`` itself, or an uncompiled copy holding its weights (no optimizer state to save)."""
    if include_optimizer or getattr(model, "optimizer", None) is None:
        return model
    try:  # from its config, not clone_model: Keras compiles a clone of a compiled model
        copy = type(model).from_config(model.get_config())
    except Exception:  # a subclassed model without get_config cannot be rebuilt
        warnings.warn(
            f"model {model.name!r} cannot be cloned without its optimizer; the .keras file keeps the "
            "optimizer state (export .onnx or .tflite for a file without it)",
            stacklevel=3,
        )
        return model
    copy.set_weights(model.get_weights())
    return copy


def _tflite_bytes(model) -> bytes:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        try:
            return tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
        except Exception as err:  # the converter's message is pages of MLIR: quote its first error line
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            first = next((line for line in lines if "error" in line.lower()), lines[0] if lines else repr(err))
            raise ValueError(
                f"TFLite conversion of model {model.name!r} failed ({first[:300]}); export it as .onnx or .keras instead"
            ) from None


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session for ``path`` (``threads`` intra-op threads if given)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_predict(path_or_session, x):
    """Outputs of an exported ``.onnx`` model on ``x`` (float32), via onnxruntime."""
    import numpy as np

    session = path_or_session if hasattr(path_or_session, "run") else onnx_session(path_or_session)
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.asarray(x, np.float32)})[0]


def tflite_predict(path: str | os.PathLike, x):
    """Outputs of an exported ``.tflite`` model on ``x`` (float32), via TensorFlow's interpreter."""
    import numpy as np
    import tensorflow as tf

    x = np.asarray(x, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TF's notice that LiteRT will take over
        interpreter = tf.lite.Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
