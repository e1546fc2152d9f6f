"""Quiet framework start-up: TensorFlow writes its C++ start-up lines to the process's C-level
stderr, where ``TF_CPP_MIN_LOG_LEVEL`` does not reach all of them. :func:`framework_import`
silences file descriptor 2 only while the framework loads; :func:`quiet_framework_start` does so
for a whole process's first ``import tensorflow`` and first device probe, wherever they happen, so
every later warning or error (Python's, and the C++ ones above the log level) still shows.

What each silenced line is:

* while TensorFlow loads: absl's ``WARNING: All log messages before absl::InitializeLog() is called
  are written to STDERR``, then ``port.cc`` (oneDNN) and ``cudart_stub.cc`` (no CUDA driver)
  lines, which absl prints before it is initialized, whatever ``TF_CPP_MIN_LOG_LEVEL`` says;
* at its first device probe, lazily, after the import: ``cuda_platform.cc: failed call to cuInit``
  (an error: ``TF_CPP_MIN_LOG_LEVEL=2``, as :mod:`prunelib.models.mlp` defaults it, still shows it).

The same processes also drop one Python-level warning of TensorFlow's, which a run of many models
raises about no fault (:class:`_ManyModelsRetracing`); every other one still shows.

This module imports no framework: it names TensorFlow only as the module to watch.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import sys
from collections.abc import Iterator

FRAMEWORK = "tensorflow"
"""The top-level module whose import (and first device probe) :func:`quiet_framework_start` silences."""


@contextlib.contextmanager
def framework_import() -> Iterator[None]:
    """Within this block, C-level stderr goes to /dev/null (Python's ``sys.stderr`` too, flushed).

    Example:
        >>> from prunelib.base.quiet import framework_import
        >>> with framework_import():
        ...     import json  # e.g. ``from prunelib.models import mlp``, which loads TensorFlow
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the log lines after start-up
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def quiet_framework_start() -> None:
    """Make this process's framework start-up print nothing: ``TF_CPP_MIN_LOG_LEVEL`` defaults to 3
    (a value set already is kept), and the first ``import tensorflow`` (by whatever module: Keras,
    :mod:`prunelib.models.mlp`) runs inside :func:`framework_import`, followed there by the
    framework's first device probe, whose lazy CUDA line would otherwise come later. TensorFlow's
    warning about retracing, which any process training many models gets, is dropped
    (:class:`_ManyModelsRetracing`).

    Loads nothing itself; call it before the framework loads (a worker process's first line, the
    CLI's start). Calling it again changes nothing more.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logger = logging.getLogger(FRAMEWORK)  # the logger TensorFlow's Python warnings go through
    if not any(isinstance(f, _ManyModelsRetracing) for f in logger.filters):
        logger.addFilter(_ManyModelsRetracing())
    if FRAMEWORK in sys.modules or any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietFinder())


class _ManyModelsRetracing(logging.Filter):
    """Drops TensorFlow's "N out of the last N calls to <function TensorFlowTrainer._make_function
    .<locals>...> triggered tf.function retracing" warning (``make_predict_function`` alike).

    Every model Keras trains (or predicts with) builds its own function once, and TensorFlow counts those
    functions as one, retraced: a process that trains a sixth model (a study worker does, one per
    cell) gets a warning about tracing in a loop that nothing here does.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "<function TensorFlowTrainer." in message)


def _probe_devices(module) -> None:
    """The framework's first device probe (TensorFlow logs its failed ``cuInit`` here, once)."""
    probe = getattr(getattr(module, "config", None), "list_physical_devices", None)
    if probe is None:
        return
    try:
        probe()
    except Exception:  # noqa: BLE001 - best effort: the first real use raises the same error, visibly
        pass


class _QuietLoader(importlib.abc.Loader):
    """The framework's own loader, its ``exec_module`` run inside :func:`framework_import`."""

    def __init__(self, loader, finder: _QuietFinder) -> None:
        self.loader, self.finder = loader, finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            with framework_import():
                self.loader.exec_module(module)
                _probe_devices(module)
        finally:  # the module keeps its real loader (resources, source look-ups)
            module.__loader__ = self.loader
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader
            with contextlib.suppress(ValueError):  # no import is looking through the finders now
                sys.meta_path.remove(self.finder)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``: finds the framework through the other finders and hands back its
    spec with a :class:`_QuietLoader`, once; the loader then takes this finder off the list."""

    def __init__(self) -> None:
        self.used = False

    def find_spec(self, fullname, path, target=None):
        if fullname != FRAMEWORK or self.used:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if finder is not self and find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    self.used = True
                    spec.loader = _QuietLoader(spec.loader, self)
                return spec
        return None
