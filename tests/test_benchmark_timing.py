"""The benchmarks' fair-timing helpers: interleaved order, warm-up, medians with spread, own process."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _timing  # noqa: E402


def test_rounds_rotate_so_no_configuration_is_always_first():
    assert [_timing.rotation("AB", r) for r in range(4)] == [["A", "B"], ["B", "A"], ["A", "B"], ["B", "A"]]
    assert [_timing.rotation("ABC", r) for r in range(3)] == [list("ABC"), list("BCA"), list("CAB")]


def test_interleaved_warms_up_untimed_then_times_each_call_alone():
    calls, ticks = [], iter(range(1000))

    def clock():
        return float(next(ticks))

    def make(name):
        return lambda: calls.append(name) or name.lower()

    seconds, last = _timing.interleaved({"A": make("A"), "B": make("B")}, repeats=3, warmup=1, clock=clock)
    assert calls == ["A", "B", "A", "B", "B", "A", "A", "B"]  # warm-up, then AB BA AB
    assert seconds == {"A": [1.0] * 3, "B": [1.0] * 3}  # two clock reads per call, nothing between
    assert last == {"A": "a", "B": "b"}
    with pytest.raises(ValueError, match="repeats"):
        _timing.interleaved({"A": make("A")}, repeats=0)


def test_spread_and_paired_ratios():
    s = _timing.spread([3.0, 1.0, 2.0, 10.0], prefix="t_")
    assert s["t_median"] == 2.5 and s["t_min"] == 1.0 and s["t_max"] == 10.0 and s["t_n"] == 4
    assert s["t_q1"] == pytest.approx(1.75) and s["t_q3"] == pytest.approx(4.75)
    r = _timing.ratio_spread([2.0, 4.0, 9.0], [1.0, 2.0, 3.0])
    assert (r["ratio_median"], r["ratio_min"], r["ratio_max"]) == (2.0, 2.0, 3.0)
    with pytest.raises(ValueError):
        _timing.ratio_spread([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        _timing.spread([])


def test_in_own_process_returns_the_result_and_that_process_peak():
    import os

    (pid, value), peak_gb = _timing.in_own_process(_pid_and_square, 7)
    assert pid != os.getpid() and value == 49 and 0 < peak_gb < 8


def _pid_and_square(x):
    import os

    return os.getpid(), x * x


def test_pipeline_summary_pairs_rounds_and_reports_spread(monkeypatch, tmp_path, capsys):
    """pipeline.py's bookkeeping with the jobs replaced by fakes: per run the medians with min/max
    of each clock, its own peak, and the paired ratio to prunelib."""
    import pandas as pd
    import pipeline

    calls = []

    def fake(fn, recipe, cache, smoke):
        name = Path(cache).name
        calls.append(name)
        r = 0 if name == "filled" else int(name.split("-", 1)[1])
        total = {"empty": 2.0 + r, "base": 10.0 + r, "filled": 1.0}[name.split("-", 1)[0]]
        return (
            {"train_s": total - 1.0, "sweep_s": 1.0, "total_s": total, "dense_accuracy": 98.0},
            1.5 if recipe else 0.5,
        )

    monkeypatch.setattr(pipeline, "in_own_process", fake)
    out = tmp_path / "pipeline.csv"
    assert pipeline.main(["--baseline", "--repeats", "3", "--warmup", "1", "--out", str(out)]) == 0
    table = pd.read_csv(out).set_index("run")
    assert list(table.index) == ["straightforward", "prunelib", "cached"]
    assert (table["rounds"] == 3).all()
    # the cache is filled first, then 1 warm-up round and 3 timed ones, the order rotating
    assert calls[0] == "filled" and len(calls) == 1 + 4 * 3
    assert calls[1:4] == ["filled", "base--1", "empty--1"] and calls[4:7] == ["base-0", "empty-0", "filled"]
    assert calls[7:10] == ["empty-1", "filled", "base-1"]
    assert table.loc["prunelib", "total_s_median"] == 3.0 and table.loc["prunelib", "total_s_min"] == 2.0
    assert table.loc["straightforward", "total_s_max"] == 12.0 and table.loc["cached", "total_s_median"] == 1.0
    assert table.loc["straightforward", "peak_rss_gb_median"] == 1.5 and table.loc["prunelib", "peak_rss_gb_max"] == 0.5
    assert table.loc["prunelib", "total_vs_prunelib_median"] == 1.0
    # paired by round: 10/2, 11/3, 12/4
    assert table.loc["straightforward", "total_vs_prunelib_min"] == 3.0
    assert table.loc["straightforward", "total_vs_prunelib_max"] == 5.0


def test_latency_rows_time_every_model_alike_and_name_the_speedup_over_dense():
    from _latency import onnx_latency_rows

    calls = []

    class Session:
        def __init__(self, name):
            self.name = name

        def get_inputs(self):
            return [type("Input", (), {"name": "x"})()]

        def run(self, outputs, feeds):
            calls.append((self.name, len(feeds["x"])))

    sessions = {"dense": Session("dense"), "small": Session("small")}
    rows = onnx_latency_rows(sessions, np.zeros((300, 4)), repeats=3, rounds=2, warmup=1, rotate=True)
    assert {(n, b) for n, b in calls} == {(n, b) for n in sessions for b in (1, 256)}
    assert all(sum(c == (n, b) for c in calls) == 1 + 3 * 2 for n in sessions for b in (1, 256))
    timed = [n for n, b in calls if b == 1][2:]  # after one warm-up call each, in the rounds' order
    assert timed == ["dense"] * 3 + ["small"] * 3 + ["small"] * 3 + ["dense"] * 3  # the order rotates
    calls.clear()
    onnx_latency_rows(sessions, np.zeros((300, 4)), repeats=1, rounds=2, warmup=0, rotate=False, batches=(1,))
    assert [n for n, _ in calls] == ["dense", "small", "dense", "small"]  # or stays
    metrics = {(r["model"], r["metric"]) for r in rows}
    assert ("small", "speedup_b256") in metrics and ("dense", "latency_ms_b1_median") in metrics
    assert len(rows) == 2 * 2 * 4
