"""onnxruntime latency of several models on the same inputs, as the export benchmarks measure it."""

from __future__ import annotations

import time

import numpy as np
from _timing import rotation


def onnx_latency_rows(
    sessions: dict, x: np.ndarray, *, repeats: int, rounds: int, warmup: int, rotate: bool, batches=(1, 256)
) -> list[dict]:
    """Latency rows per model and batch: median and quartiles in ms, and the speed-up over ``"dense"``.

    Every model runs ``warmup`` times first, then ``rounds`` rounds of ``repeats`` runs each,
    interleaved so that drift hits every model alike (``rotate``: the order rotating per round).
    """
    rows = []
    for batch in batches:
        xb = x[:batch].astype(np.float32)
        feeds = {n: {s.get_inputs()[0].name: xb} for n, s in sessions.items()}
        times: dict[str, list[float]] = {n: [] for n in sessions}
        for n, s in sessions.items():
            for _ in range(warmup):
                s.run(None, feeds[n])
        for r in range(rounds):
            for n in rotation(list(sessions), r) if rotate else list(sessions):
                for _ in range(repeats):
                    t = time.perf_counter()
                    sessions[n].run(None, feeds[n])
                    times[n].append(time.perf_counter() - t)
        dense_median = float(np.median(times["dense"]))
        for n, ts in times.items():
            q25, med, q75 = np.percentile(np.array(ts) * 1e3, [25, 50, 75])
            rows += [
                {"model": n, "format": "onnx", "metric": f"latency_ms_b{batch}_median", "value": med},
                {"model": n, "format": "onnx", "metric": f"latency_ms_b{batch}_q25", "value": q25},
                {"model": n, "format": "onnx", "metric": f"latency_ms_b{batch}_q75", "value": q75},
                {"model": n, "format": "onnx", "metric": f"speedup_b{batch}", "value": dense_median / (med / 1e3)},
            ]
    return rows
