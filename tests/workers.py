"""What tests run in spawned processes. This module imports no framework, so a child starts in
a second or two; a test module as the target would load TensorFlow in every child."""

import time
from pathlib import Path


def build_slowly(args):
    """Read ``path`` through the cache, building it (and logging ``built``) if it is missing."""
    path, log = args
    from prunelib.base.provenance import cached_artifact

    def build():
        with open(log, "a") as handle:
            handle.write("built\n")
        time.sleep(0.5)
        return "value"

    return cached_artifact(path, {"k": 1}, build, lambda v, tmp: tmp.write_text(v), lambda p: p.read_text())[0]


def publish_fake(directory: str, accuracy: float, command: str = "test") -> None:
    """Publish a fake sweep (weight 90 at ``accuracy``) into ``directory`` as a quick run would."""
    from tiny import fake_sweep

    from prunelib.reporting.results import Results, publish
    from prunelib.study.config import ExperimentConfig

    sweep = fake_sweep(accuracy, seeds=(0, 1)).assign(correction="none", seconds=0.0)
    publish(Results(sweep=sweep), ExperimentConfig.quick(), Path(directory), command=command, run_seconds=1.0)


def load_framework_and_warn() -> str:
    """A cell's framework start-up (prunelib.models.mlp loads Keras and TensorFlow; an op probes
    the devices), then a real problem: a Python warning and a C-level stderr line, which must still
    show. Returns the worker's TF_CPP_MIN_LOG_LEVEL."""
    import os
    import warnings

    from prunelib.models import mlp

    float((mlp.tf.constant([1.0]) + 1.0)[0])
    warnings.warn("a real warning from the cell", stacklevel=1)
    os.write(2, b"a real C-level line from the cell\n")
    return os.environ["TF_CPP_MIN_LOG_LEVEL"]
