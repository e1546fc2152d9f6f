"""The study's cells and the local runner: order, failures, worker recycling, memory, no framework
in the driver."""

import os
import subprocess
import sys
from dataclasses import replace

import pytest

from prunelib.study import local as study
from prunelib.study import tasks as cells
from prunelib.study.config import ExperimentConfig
from prunelib.study.registry import tables_for
from prunelib.study.tasks import Cell


# Cell functions run in spawned workers, which import this module by name (pytest puts tests/ on
# sys.path, and spawn hands the parent's sys.path to the child).
def record(log: str, name: str) -> None:
    with open(log, "a") as handle:
        handle.write(f"{name} {os.getpid()}\n")


def fail(log: str, name: str) -> None:
    record(log, name)
    raise RuntimeError(f"{name} broke")


def die(log: str, name: str) -> None:
    record(log, name)
    os._exit(3)  # a worker killed in the middle of a cell (e.g. by the OOM killer)


def lines(log):
    return [line.split() for line in open(log).read().splitlines()]


def sleep_record(log: str, name: str, seconds: float) -> None:
    import time

    with open(log, "a") as handle:
        handle.write(f"{name} {os.getpid()} start {time.time()}\n")
    time.sleep(seconds)
    with open(log, "a") as handle:
        handle.write(f"{name} {os.getpid()} end {time.time()}\n")


@pytest.mark.parametrize("workers", [1, 2])
def test_cells_run_in_order_failures_are_retried_then_reported_and_dependents_skipped(tmp_path, workers):
    log = str(tmp_path / "log")
    graph = [
        Cell("a", record, (log, "a")),
        Cell("b", fail, (log, "b"), after=("a",)),
        Cell("c", record, (log, "c"), after=("b",)),
        Cell("d", record, (log, "d"), after=("a",)),
    ]
    outcome = study.execute_local(graph, workers=workers, progress=False)
    names = [name for name, _ in lines(log)]
    assert names[0] == "a" and sorted(names) == ["a", "b", "b", "d"]  # b tried twice, c never
    assert set(outcome.seconds) == {"a", "d"}
    assert outcome.failed == {"b": "RuntimeError: b broke"}
    assert outcome.skipped == {"c": "b"}
    assert lines(log)[0][1] != str(os.getpid())  # cells ran in a worker process, not here
    with pytest.raises(cells.CellsFailed, match="b: RuntimeError: b broke; c: skipped, waits for b"):
        cells.raise_failures(outcome)


def test_a_worker_past_its_memory_budget_is_replaced(tmp_path):
    log = str(tmp_path / "log")
    graph = [Cell(str(i), record, (log, str(i))) for i in range(3)]
    outcome = study.execute_local(graph, memory_budget_gb=1e-6, progress=False)  # every worker is over
    assert outcome.ok and outcome.workers == 3
    assert len({pid for _, pid in lines(log)}) == 3
    roomy = study.execute_local(graph, memory_budget_gb=64, progress=False)
    assert roomy.ok and roomy.workers == 1 and roomy.peak_rss > 0


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_that_dies_is_replaced_and_the_cell_reported(tmp_path, workers):
    log = str(tmp_path / "log")
    graph = [Cell("a", record, (log, "a")), Cell("b", die, (log, "b")), Cell("c", record, (log, "c"))]
    outcome = study.execute_local(graph, workers=workers, progress=False)
    assert sorted(name for name, _ in lines(log)) == ["a", "b", "b", "c"]  # tried again in a fresh worker
    assert len({pid for name, pid in lines(log) if name == "b"}) == 2  # each try killed its worker
    assert outcome.failed["b"].startswith("worker process died (exit code 3)")
    assert set(outcome.seconds) == {"a", "c"}


def test_workers_run_independent_cells_at_once_and_respect_dependencies(tmp_path):
    log = str(tmp_path / "log")
    graph = [
        Cell("a", sleep_record, (log, "a", 1.0)),
        Cell("b", sleep_record, (log, "b", 1.0)),
        Cell("c", sleep_record, (log, "c", 0.1), after=("a", "b")),
    ]
    outcome = study.execute_local(graph, workers=2, progress=False)
    assert outcome.ok and outcome.workers == 2
    times = {(name, event): float(t) for name, _, event, t in lines(log)}
    assert times["a", "start"] < times["b", "end"] and times["b", "start"] < times["a", "end"]  # overlapped
    assert times["c", "start"] >= max(times["a", "end"], times["b", "end"])
    alone = study.execute_local(graph, workers=1, progress=False)
    assert alone.ok and alone.workers == 1


def test_a_cell_declaring_every_cpu_runs_alone_while_smaller_cells_go_ahead(tmp_path):
    log = str(tmp_path / "log")
    graph = [
        Cell("a", sleep_record, (log, "a", 1.0)),
        Cell("wide", sleep_record, (log, "wide", 0.5), cpus=2),
        Cell("b", sleep_record, (log, "b", 1.0)),
        Cell("huge", sleep_record, (log, "huge", 0.1), cpus=8),
    ]
    outcome = study.execute_local(graph, workers=2, progress=False)
    assert outcome.ok
    times = {(name, event): float(t) for name, _, event, t in lines(log)}
    spans = {n: (times[n, "start"], times[n, "end"]) for n in ("a", "b", "wide", "huge")}
    assert spans["b"][0] < spans["a"][1]  # b went ahead of wide, beside a
    for wide in ("wide", "huge"):  # huge is capped at the 2 CPUs there are, and runs alone too
        others = [v for k, v in spans.items() if k != wide]
        assert all(end <= spans[wide][0] or start >= spans[wide][1] for start, end in others), wide


@pytest.mark.parametrize("workers", [0, -1, 1.5])
def test_a_bad_worker_count_is_refused(workers):
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        study.execute_local([Cell("a", record, ("/dev/null", "a"))], workers=workers, progress=False)


@pytest.mark.parametrize(
    "graph, message",
    [
        ([Cell("a", record), Cell("a", record)], "unique"),
        ([Cell("a", record, after=("z",))], "unknown cells"),
        ([Cell("b", record, after=("a",)), Cell("a", record)], "comes before"),
    ],
)
def test_bad_graphs_are_refused_before_any_work(graph, message):
    with pytest.raises(ValueError, match=message):
        study.execute_local(graph, progress=False)
    with pytest.raises(ValueError, match="memory_budget_gb"):
        study.execute_local([], memory_budget_gb=0, progress=False)


def test_the_driver_builds_the_study_without_loading_a_framework():
    code = (
        "import sys\n"
        "import prunelib.cli, prunelib.study.tasks, prunelib.study.local, prunelib.reporting.results, prunelib.reporting.report\n"
        "from prunelib.study.config import ExperimentConfig\n"
        "graph = prunelib.study.tasks.study_cells(ExperimentConfig())\n"
        "loaded = [m for m in ('tensorflow', 'keras', 'ray') if m in sys.modules]\n"
        "print(len(graph), loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, loaded = out.stdout.split(" ", 1)
    assert loaded.strip() == "[]"
    assert int(count) > 100  # the full study: every model, table and recipe is a cell


def test_each_table_of_a_seed_is_a_cell_after_the_models_it_reads():
    config = ExperimentConfig.quick(datasets=("mnist",), seeds=(0, 1), recovery_strategies=("finetune",))
    graph = {c.name: c for c in cells.study_cells(config, table_cpus=2)}
    tables = {n: c for n, c in graph.items() if n.endswith(" table")}
    assert sorted(tables) == sorted(
        [
            f"mnist/seed 0/{t} table"
            for t in ("sweep", "best", "retrain-small", "sensitivity", "recovery", "pruning-aware")
        ]
        + [f"mnist/seed 1/{t} table" for t in ("sweep", "best", "retrain-small", "sensitivity")]
    )  # recovery: seed 0 only
    assert tables_for(config, 1) == ("sweep", "best", "retrain-small", "sensitivity")
    assert (
        tables["mnist/seed 0/sweep table"].after
        == tables["mnist/seed 0/best table"].after
        == tables["mnist/seed 0/sensitivity table"].after
        == ("mnist/seed 0/train",)
    )
    assert set(tables["mnist/seed 0/recovery table"].after) == {
        "mnist/seed 0/train",
        "mnist/seed 0/finetune weight k=90",
        "mnist/seed 0/finetune unit k=90",
    }
    assert set(tables["mnist/seed 0/pruning-aware table"].after) == {
        "mnist/seed 0/targeted-dropout weight k=90",
        "mnist/seed 0/targeted-dropout unit k=80",
    }
    assert all(a.startswith("mnist/seed 1/retrain-small k=") for a in tables["mnist/seed 1/retrain-small table"].after)
    assert {c.cpus for c in tables.values()} == {2} and {c.cpus for n, c in graph.items() if n not in tables} == {1}
    cells.check_graph(list(graph.values()))


def test_a_table_the_config_does_not_compute_is_refused():
    from prunelib.study.experiment import seed_tables

    config = ExperimentConfig.quick(recovery_seeds=())
    with pytest.raises(ValueError, match="no 'recovery' table for seed 0"):
        seed_tables(config, None, 0, only=("recovery",))


def peak_tree_rss(argv: list[str]) -> int:
    """Run ``python -m prunelib`` with ``argv``; the peak of its resident memory summed with its
    worker processes', sampled every 0.2 s."""
    import time

    psutil = pytest.importorskip("psutil")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prunelib", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        total = 0
        for p in [root, *root.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, total)
        time.sleep(0.2)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    return peak


@pytest.mark.slow
def test_peak_memory_of_the_study_does_not_grow_with_seeds(tmp_path):
    from tiny import require_real_data

    require_real_data("mnist")
    peaks = {}
    for n in (1, 3):
        peaks[n] = peak_tree_rss(
            [
                "run",
                "--quick",
                "--dataset",
                "mnist",
                "--seeds",
                str(n),
                "--recovery",
                "--no-aware",
                "--no-sensitivity",
                "--no-lstsq",
                "--no-baselines",
                "--ks",
                "0",
                "90",
                "--memory-budget",
                "1.0",
                "--results",
                str(tmp_path / f"results{n}"),
                "--cache",
                str(tmp_path / f"cache{n}"),
                "--no-progress",
            ]
        )
    assert peaks[3] <= 1.10 * peaks[1], {n: round(p / 2**30, 2) for n, p in peaks.items()}


def test_a_worker_refuses_to_run_code_other_than_the_runs(tmp_path, monkeypatch):
    from prunelib.base import fingerprint

    log = str(tmp_path / "log")
    monkeypatch.setattr(fingerprint, "package_fingerprint", lambda: "the code at the start")
    with pytest.raises(study.SourceChanged, match="source changed during the run"):
        study.execute_local([Cell("a", record, (log, "a"))], progress=False)
    assert not os.path.exists(log)  # the worker, with the real source, ran nothing


def test_a_failure_report_is_one_line_however_many_cells_failed():
    outcome = cells.Outcome(failed={f"cell {i}": "RuntimeError: x" for i in range(50)})
    with pytest.raises(cells.CellsFailed) as err:
        cells.raise_failures(outcome)
    message = str(err.value)
    assert "\n" not in message and "and 44 more" in message and len(message) < 600


def test_a_rerun_with_nothing_changed_reads_the_assembled_tables_without_a_worker(tmp_path, monkeypatch):
    import pandas as pd

    from prunelib.data import sources as fetch
    from prunelib.reporting.results import Results

    monkeypatch.setattr(fetch, "fetch", lambda name, data_dir=None: tmp_path)  # data "verified"
    calls = []

    def worker(fn, *args, **kwargs):  # stands in for the spawned worker that reads the tables
        calls.append(kwargs.get("cache_only"))
        return Results(sweep=pd.DataFrame({"accuracy": [97.5]}), seconds={"load": 1.0})

    monkeypatch.setattr(study, "in_worker", worker)
    config = ExperimentConfig.quick(datasets=("mnist",))
    first = study.run_study(config, cache=tmp_path, progress=False)
    assert calls == [True] and first.seconds == {"load": 1.0}
    again = study.run_study(config, cache=tmp_path, progress=False)
    assert calls == [True] and again.seconds == {}  # no worker, nothing computed
    assert again.sweep.equals(first.sweep)
    study.run_study(replace(config, ks=(0, 90)), cache=tmp_path, progress=False)
    assert calls == [True, True]  # another config is another entry
    from prunelib.base import fingerprint

    monkeypatch.setattr(fingerprint, "code_fingerprint", lambda *roots: "edited source")
    study.run_study(config, cache=tmp_path, progress=False)
    assert calls == [True, True, True]  # edited code: the tables are read again


def test_both_runners_schedule_by_one_rule():
    """triage: ready cells wait only for finished cells; a failure skips its dependents, transitively."""
    from prunelib.study import on_ray

    b, c, d = (
        Cell("b", record, after=("a",)),
        Cell("c", record, after=("b",)),
        Cell("d", record, after=("x",)),
    )
    assert cells.triage([b, c, d], cells.Outcome(seconds={"a": 1.0, "x": 1.0})) == ([b, d], {})
    assert cells.triage([b, c, d], cells.Outcome(failed={"a": "boom"}, seconds={"x": 1.0})) == (
        [d],
        {"b": "a", "c": "b"},
    )
    assert cells.triage([c], cells.Outcome(skipped={"b": "a"})) == ([], {"c": "b"})
    assert on_ray.triage is cells.triage and study.triage is cells.triage  # one rule, imported by both
