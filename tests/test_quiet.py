"""No TensorFlow C++ log line reaches a user: the framework's start-up in the CLI's worker processes
(and wherever else it loads) is silenced at the file-descriptor level, while real warnings and
errors still show (prunelib.base.quiet)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tiny import FRAMEWORK_LOG, require_real_data

from prunelib.base import quiet

ROOT = Path(__file__).resolve().parents[1]


def _env(**values: str) -> dict[str, str]:
    """This environment without TF_CPP_MIN_LOG_LEVEL (what prunelib must set itself), plus ``values``."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **values}


def _no_framework_lines(text: str) -> None:
    found = FRAMEWORK_LOG.search(text)
    assert found is None, f"framework log line shown: {text[max(found.start() - 200, 0) : found.end() + 200]!r}"


FAKE_INIT = "import os\nos.write(2, b'I0000 00:00:1.0  1 port.cc:153] start-up line\\n')\nfrom . import config\n"
FAKE_CONFIG = textwrap.dedent("""
    import os
    probes = []

    def list_physical_devices():
        probes.append(1)
        os.write(2, b"E0000 00:00:2.0  1 cuda_platform.cc:52] failed call to cuInit\\n")
        return []
""")


@pytest.mark.parametrize("level, kept", [(None, "3"), ("1", "1")])
def test_the_first_import_and_device_probe_are_silenced_later_lines_show(tmp_path, monkeypatch, capfd, level, kept):
    """A stand-in framework that logs while it loads and at its (lazy) first device probe."""
    (tmp_path / "fakeframework").mkdir()
    (tmp_path / "fakeframework" / "__init__.py").write_text(FAKE_INIT)
    (tmp_path / "fakeframework" / "config.py").write_text(FAKE_CONFIG)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(quiet, "FRAMEWORK", "fakeframework")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", level or "")  # restored afterwards, whatever happens
    if level is None:
        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    try:
        quiet.quiet_framework_start()
        quiet.quiet_framework_start()  # again: no second hook
        assert sum(isinstance(f, quiet._QuietFinder) for f in sys.meta_path) == 1
        import fakeframework

        assert fakeframework.config.probes == [1]  # probed once, inside the silenced import
        print("a Python line", file=sys.stderr)
        os.write(2, b"a later C-level line\n")
        fakeframework.config.list_physical_devices()  # a later probe's error is a real one: it shows
        err = capfd.readouterr().err
        assert "start-up line" not in err and err.count("cuInit") == 1
        assert "a Python line" in err and "a later C-level line" in err
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == kept  # a value the user set is kept
        assert not any(isinstance(f, quiet._QuietFinder) for f in sys.meta_path)  # one import only
        assert type(fakeframework.__loader__).__name__ == "SourceFileLoader"  # its real loader again
        assert fakeframework.__spec__.loader is fakeframework.__loader__
    finally:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, quiet._QuietFinder)]
        for name in [m for m in sys.modules if m.split(".")[0] == "fakeframework"]:
            del sys.modules[name]


def test_a_missing_framework_still_raises_import_error(monkeypatch):
    monkeypatch.setattr(quiet, "FRAMEWORK", "no_such_framework_here")
    try:
        quiet.quiet_framework_start()
        with pytest.raises(ImportError):
            import no_such_framework_here  # noqa: F401
    finally:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, quiet._QuietFinder)]


DRIVER = textwrap.dedent("""
    import os
    from prunelib.study import local
    from prunelib.study.tasks import Cell
    import workers

    # TF_CPP_MIN_LOG_LEVEL=2 (prunelib.models.mlp's default) passes the lazy cuInit error: only the
    # silenced first probe keeps it away.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    outcome = local.execute_local([Cell("framework", workers.load_framework_and_warn)], progress=False)
    assert outcome.ok, outcome.failed
    del os.environ["TF_CPP_MIN_LOG_LEVEL"]
    print("in_worker level", local.in_worker(workers.load_framework_and_warn))
""")


def test_worker_processes_load_tensorflow_quietly_and_still_show_real_problems():
    """Both kinds of worker (execute_local's cells, in_worker's calls) load TensorFlow and run an
    op with no C++ log line; a cell's Python warning and C-level stderr line still show."""
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "in_worker level 3" in proc.stdout  # prunelib's default where nothing was set
    _no_framework_lines(proc.stdout + proc.stderr)
    assert proc.stderr.count("UserWarning: a real warning from the cell") == 2, proc.stderr
    assert proc.stderr.count("a real C-level line from the cell") == 2, proc.stderr


@pytest.mark.slow  # an end-to-end run on the real MNIST (about 30 s on 2 cores)
def test_a_quick_run_and_its_report_print_no_framework_log_lines(tmp_path):
    """``python -m prunelib run`` trains and assembles in worker processes that load TensorFlow
    (three of them, one probing the devices); nothing of TensorFlow's C++ logging shows."""
    require_real_data("mnist")
    results = tmp_path / "results"
    run = [
        *("run", "--quick", "--dataset", "mnist", "--preset", "challenge", "--ks", "50"),
        *("--no-lstsq", "--no-baselines", "--no-progress", "--results", str(results), "--cache", str(tmp_path)),
    ]
    for argv in (run, ["report", "--results", str(results)]):
        proc = subprocess.run(
            [sys.executable, "-m", "prunelib", *argv], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "wrote" in proc.stdout
        _no_framework_lines(proc.stdout + proc.stderr)
