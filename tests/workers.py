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


def logged_step(directory: str, name: str, wait: float) -> None:
    """A cell's work: a cache entry ``name`` whose build logs ``started``/``built`` with its pid
    and takes ``wait`` seconds."""
    import os

    from prunelib.base.provenance import cached_artifact

    log = Path(directory) / "log"

    def build():
        with open(log, "a") as handle:
            handle.write(f"started {name} {os.getpid()}\n")
        time.sleep(wait)
        with open(log, "a") as handle:
            handle.write(f"built {name}\n")
        return name

    cached_artifact(Path(directory) / name, {"name": name}, build, lambda v, tmp: tmp.write_text(v), lambda p: p)


def run_two_cells(directory: str, wait: float) -> None:
    """A study of two cells, the second after the first, run as ``python -m prunelib run`` runs
    them: in worker processes, SIGTERM ending the driver and its workers (prunelib.cli.main)."""
    import signal

    from prunelib import cli
    from prunelib.study.local import execute_local
    from prunelib.study.tasks import Cell, raise_failures

    signal.signal(signal.SIGTERM, cli._on_sigterm)
    cells = [
        Cell("first", logged_step, (directory, "first", 0.0)),
        Cell("second", logged_step, (directory, "second", wait), after=("first",)),
    ]
    raise_failures(execute_local(cells, progress=False))


def train_many_models(n: int) -> None:
    """``n`` separate tiny models, each fitted once (as a worker running ``n`` cells does), then a
    real TensorFlow warning, which must still show."""
    import numpy as np

    from prunelib.models import mlp

    x, y = np.zeros((8, 3), np.float32), np.zeros((8, 2), np.float32)
    for _ in range(n):
        model = mlp.keras.Sequential([mlp.keras.Input((3,)), mlp.keras.layers.Dense(2)])
        model.compile("sgd", "mse")
        model.fit(x, y, epochs=1, verbose=0)
    mlp.tf.get_logger().warning("a real tensorflow warning from the cell")


def hold_a_semaphore(seconds: float) -> None:
    """A cell that makes a multiprocessing semaphore (as tqdm's lock does), then works on."""
    import multiprocessing
    import time

    lock = multiprocessing.get_context("spawn").Lock()
    with lock:
        time.sleep(seconds)


def deaf_to_sigterm(flag_dir: str) -> None:
    """A cell stuck where SIGTERM cannot reach it (as a long native call is): it marks that it has
    started, then ignores SIGTERM and waits."""
    import os
    import signal
    import time

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(os.path.join(flag_dir, f"started-{os.getpid()}"), "w").close()
    time.sleep(120)
