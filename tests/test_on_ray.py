"""The study on Ray: cells, failures, retries, scheduling estimates, and equality with serial runs."""

import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from prunelib.study.tasks import Cell, critical_path, estimate_wall

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def ok(path, name):
    Path(path, name).write_text("done")


def boom(path, name):
    raise RuntimeError(f"cell {name} broke on purpose")


def flaky(path, name):
    marker = Path(path, f"{name}.tried")
    if not marker.exists():
        marker.write_text("once")
        raise RuntimeError("first try fails")
    Path(path, name).write_text("done")


def test_a_failing_cell_is_reported_and_the_rest_complete(local_ray, tmp_path):
    from prunelib.study.on_ray import execute

    cells = [
        Cell("a", ok, (str(tmp_path), "a")),
        Cell("bad", boom, (str(tmp_path), "bad")),
        Cell("after-bad", ok, (str(tmp_path), "after-bad"), after=("bad",)),
        Cell("after-a", ok, (str(tmp_path), "after-a"), after=("a",)),
        Cell("flaky", flaky, (str(tmp_path), "flaky")),
    ]
    outcome = execute(cells, progress=False)
    assert set(outcome.seconds) == {"a", "after-a", "flaky"}  # flaky succeeded on its retry
    assert list(outcome.failed) == ["bad"] and "broke on purpose" in outcome.failed["bad"]
    assert outcome.skipped == {"after-bad": "bad"}
    assert {p.name for p in tmp_path.iterdir() if not p.name.endswith(".tried")} == {"a", "after-a", "flaky"}
    assert not outcome.ok


def test_unknown_dependencies_and_duplicate_names_are_rejected(local_ray):
    from prunelib.study.on_ray import execute

    with pytest.raises(ValueError, match="unknown cells"):
        execute([Cell("a", ok, ("/tmp", "x"), after=("nope",))], progress=False)
    with pytest.raises(ValueError, match="unique"):
        execute([Cell("a", ok, ("/tmp", "x")), Cell("a", ok, ("/tmp", "y"))], progress=False)


def test_a_cell_no_node_can_run_is_refused_before_any_work(local_ray, tmp_path):
    from prunelib.study.on_ray import execute

    with pytest.raises(ValueError, match="'wide' declares 3 CPUs.*largest node has 2 CPUs.*--ray-table-cpus"):
        execute(
            [Cell("a", ok, (str(tmp_path), "a")), Cell("wide", ok, (str(tmp_path), "wide"), cpus=3)], progress=False
        )
    assert not list(tmp_path.iterdir())


def test_critical_path_and_list_scheduling_estimate():
    cells = [
        Cell("train", ok),
        Cell("small", ok),
        Cell("recover", ok, after=("train",)),
        Cell("tables", ok, after=("train", "small", "recover")),
    ]
    seconds = {"train": 10.0, "small": 30.0, "recover": 25.0, "tables": 5.0}
    length, path = critical_path(cells, seconds)
    assert length == 40.0 and path == ["train", "recover", "tables"]
    assert estimate_wall(cells, seconds, machines=1) == 70.0  # everything in a row
    assert estimate_wall(cells, seconds, machines=2) == 40.0  # small beside train -> recover
    assert estimate_wall(cells, seconds, machines=10) == 40.0  # never below the critical path
    assert estimate_wall(cells, seconds, machines=1, cpus=2) == 40.0  # two 1-CPU cells share a machine


def test_the_estimate_gives_a_cell_the_cpus_it_declares():
    ok = lambda: None  # noqa: E731
    cells = [Cell("a", ok), Cell("b", ok), Cell("wide", ok, cpus=2), Cell("huge", ok, cpus=8)]
    seconds = {"a": 10.0, "b": 10.0, "wide": 10.0, "huge": 10.0}
    # One 2-CPU machine: a and b together, then wide and huge (capped at 2 CPUs) each alone.
    assert estimate_wall(cells, seconds, machines=1, cpus=2) == 30.0
    # Two: wide and huge on one machine each, then a and b side by side.
    assert estimate_wall(cells, seconds, machines=2, cpus=2) == 20.0


def test_a_run_without_ray_never_imports_it():
    code = (
        "import sys; import prunelib.cli, prunelib.study.experiment, prunelib.study.on_ray; "
        "assert 'ray' not in sys.modules, 'ray was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_quick_study_on_ray_equals_the_serial_study_table_for_table(local_ray):
    from tiny import require_real_data

    from prunelib.models.config import AwareTarget
    from prunelib.study.config import ExperimentConfig
    from prunelib.study.experiment import run_experiment
    from prunelib.study.on_ray import run_study_on_ray

    require_real_data("mnist")
    config = ExperimentConfig.quick(
        datasets=("mnist",),
        ks=(0, 90),
        recovery_strategies=("finetune",),
        recovery_ks=(90,),
        aware_targets=(AwareTarget("weight", 90, 0.9),),
    )
    serial = run_experiment(config, cache=tempfile.mkdtemp(), progress=False)
    on_ray, outcome = run_study_on_ray(config, cache=tempfile.mkdtemp(), progress=False)
    assert outcome.ok and any(name.endswith("/sweep table") for name in outcome.seconds)
    for name in ("sweep", "sensitivity", "recovery"):
        a, b = getattr(serial, name), getattr(on_ray, name)
        timing = [c for c in a.columns if c == "seconds"]  # wall-clock, not a result
        pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing), check_exact=True)
