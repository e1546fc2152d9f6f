"""Quiet framework start-up: TensorFlow writes its C++ start-up lines (absl's pre-initialization
notice, the CUDA stub's probe) to the process's C-level stderr before ``TF_CPP_MIN_LOG_LEVEL``
applies. :func:`framework_import` silences file descriptor 2 only while the framework loads, so
every later warning or error still shows.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def framework_import() -> Iterator[None]:
    """Within this block, C-level stderr goes to /dev/null (Python's ``sys.stderr`` too, flushed).

    Example:
        >>> from prunelib.base.quiet import framework_import
        >>> with framework_import():
        ...     import json  # e.g. ``from prunelib.models import mlp``, which loads TensorFlow
    """
    import sys

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
