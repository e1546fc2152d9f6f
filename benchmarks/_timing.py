"""Fair timing shared by the benchmark scripts.

* :func:`interleaved`: warm-up, then ``repeats`` rounds in which every configuration runs once, the
  order rotating each round (AB, BA, AB, ...), so drift in the machine's load and caches falls on
  every configuration alike instead of on whichever ran first or last.
* :func:`spread`: the median of the samples with their minimum, maximum and quartiles.
* :func:`ratio_spread`: a ratio of two configurations per round (paired), as median and range.
* :func:`in_own_process`: run a function in a fresh (spawned) process and return its result with
  that process's own peak resident memory, so each configuration reports its own peak.
* :func:`epoch_timer_class`: a per-epoch Keras timer for both sides of compare_tfmot.py.

Each side of compare_tfmot.py has its own Keras (Keras 3 here, tf-keras in tfmot's subprocess), so
the callback base class is passed in rather than imported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np


def epoch_timer_class(callback_base: type) -> type:
    """A Keras callback class, subclassing ``callback_base``, recording seconds per epoch in ``times``."""

    class EpochTimer(callback_base):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._t)

    return EpochTimer


def rotation(names: Sequence[str], round_: int) -> list[str]:
    """The order of ``names`` in round ``round_``: rotated by one each round (AB, BA, AB, ...)."""
    names = list(names)
    shift = round_ % len(names) if names else 0
    return names[shift:] + names[:shift]


def interleaved(
    configs: Mapping[str, Callable[[], object]],
    *,
    repeats: int = 3,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Time each of ``configs`` (name -> zero-argument callable) ``repeats`` times, interleaved.

    Every callable first runs ``warmup`` times untimed (imports, allocations, JIT, caches). The
    clock is read immediately around the call and nothing else, so the callable must hold exactly
    what the column's name says.

    Returns:
        ``(seconds, last)``: per name the list of ``repeats`` timings in round order, and the
        value each callable returned on its last timed run.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        for name in configs:
            configs[name]()
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    last: dict[str, object] = {}
    for r in range(repeats):
        for name in rotation(list(configs), r):
            t0 = clock()
            last[name] = configs[name]()
            seconds[name].append(clock() - t0)
    return seconds, last


def spread(samples: Sequence[float], prefix: str = "") -> dict[str, float]:
    """Median, minimum, maximum and quartiles of ``samples`` (keys prefixed with ``prefix``)."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {
        f"{prefix}median": float(med),
        f"{prefix}min": float(a.min()),
        f"{prefix}max": float(a.max()),
        f"{prefix}q1": float(q1),
        f"{prefix}q3": float(q3),
        f"{prefix}n": int(a.size),
    }


def ratio_spread(numerator: Sequence[float], denominator: Sequence[float], prefix: str = "ratio_") -> dict[str, float]:
    """Round-by-round ratios ``numerator[i] / denominator[i]`` (paired, same round), summarized."""
    if len(numerator) != len(denominator):
        raise ValueError("paired samples must have the same length")
    return spread(np.asarray(numerator, np.float64) / np.asarray(denominator, np.float64), prefix)


def _child(fn, args, kwargs):
    import resource

    result = fn(*args, **kwargs)
    return result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux


def in_own_process(fn: Callable, *args, **kwargs) -> tuple[object, float]:
    """``fn(*args, **kwargs)`` in a fresh spawned process: ``(result, that process's peak RSS in GiB)``.

    ``fn`` must be importable by the child (a module-level function).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_child, fn, args, kwargs).result()
