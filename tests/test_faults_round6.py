"""Round 6 of the fault hunt: what a user sees when a run is stopped, cannot start its workers, or
trains many models.

Each test fails on the code before its fix: a SIGTERM'd run ending with Python's "leaked semaphore
objects" warning, workers that die while starting respawned forever, TensorFlow's retracing
warning printed by every worker that trains a sixth model.
"""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_faults_cli import gone, start_driver

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}


@pytest.mark.slow
def test_sigterm_mid_cell_leaves_no_leaked_semaphore_warning():
    """The worker's cell holds a multiprocessing semaphore (tqdm's lock is one) when the run is
    stopped: the worker unwinds, releasing it, so the driver's one line is all that shows."""
    driver, workers = start_driver(cell="workers.hold_a_semaphore, (120,)")
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 143 and err.strip() == "stopped Terminated", err
    assert gone(workers, 10)


@pytest.mark.slow
def test_a_worker_that_cannot_start_ends_the_run_with_one_error(tmp_path):
    """A script without a ``__main__`` guard: each spawned worker imports it again and dies while
    starting. The run says so once, instead of starting workers until it is killed."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent("""
            import time
            from prunelib.study import local
            from prunelib.study.tasks import Cell
            local.execute_local([Cell("sleep", time.sleep, (1,))], progress=False)
        """)
    )
    proc = subprocess.run(
        [sys.executable, str(script)], env=_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("prunelib.study.local.WorkerStartFailed: a worker process exited while starting"), last
    assert "if __name__ == '__main__':" in last
    # One worker's import error, not a stream of them.
    assert proc.stderr.count("An attempt has been made to start a new process") == 1, proc.stderr[-2000:]


@pytest.mark.slow
def test_a_worker_training_many_models_shows_no_retracing_warning_but_real_ones():
    driver = textwrap.dedent("""
        from prunelib.study import local
        from prunelib.study.tasks import Cell
        import workers

        if __name__ == "__main__":
            outcome = local.execute_local([Cell("train", workers.train_many_models, (7,))], progress=False)
            assert outcome.ok, outcome.failed
    """)
    proc = subprocess.run([sys.executable, "-c", driver], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "retracing" not in proc.stderr, proc.stderr[-3000:]
    assert "a real tensorflow warning from the cell" in proc.stderr, proc.stderr[-3000:]


def test_the_retracing_filter_drops_only_that_warning():
    """The filter passes every other record of TensorFlow's logger, including other retracing
    warnings (a user's own function traced in a loop)."""
    import logging

    from prunelib.base import quiet

    keep = quiet._ManyModelsRetracing().filter

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("tensorflow", logging.WARNING, __file__, 1, message, None, None)

    trainer = (
        "5 out of the last 5 calls to <function TensorFlowTrainer._make_function.<locals>.multi_step_on_iterator "
        "at 0x7f> triggered tf.function retracing. Tracing is expensive"
    )
    users = "5 out of the last 5 calls to <function my_step at 0x7f> triggered tf.function retracing."
    assert not keep(record(trainer))
    assert keep(record(users)) and keep(record("some other warning"))


def test_recipes_refuses_published_results_and_defaults_to_a_scratch_directory(capsys, tmp_path, monkeypatch):
    """``python -m prunelib recipes`` wrote its tables into results/ (its default), outside the
    publish lock and no part's record: report --check then called results/ edited. A folder
    holding a manifest is refused before any training; without --results it writes elsewhere."""
    from prunelib import cli

    published = tmp_path / "results"
    published.mkdir()
    (published / "manifest.json").write_text("{}")
    assert cli.main(["recipes", "--dataset", "mnist", "--results", str(published)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds published results" in err and "run --part recipes" in err, err
    assert sorted(p.name for p in published.iterdir()) == ["manifest.json"]

    monkeypatch.setenv("PRUNELIB_HOME", str(tmp_path / "home"))
    seen = {}

    def fake_run_recipes(names, **kwargs):
        raise RuntimeError("stop here")

    monkeypatch.setattr("prunelib.study.experiment.run_recipes", fake_run_recipes)
    monkeypatch.setattr(cli, "_writable_dir", lambda path, option: seen.setdefault("path", path))
    assert cli.main(["recipes", "--dataset", "mnist"]) == 2
    assert seen["path"] == tmp_path / "home" / "recipes-results"
