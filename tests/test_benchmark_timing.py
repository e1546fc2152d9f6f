"""The benchmarks' fair-timing helpers: interleaved order, warm-up, medians with spread, own process."""

import sys
from pathlib import Path

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
