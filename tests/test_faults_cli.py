"""CLI faults (issue 24): each mistake is one line on stderr with exit status 2 (1 for `report
--check`'s "not current"), never a traceback or a hang."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from prunelib import cli
from prunelib.base import provenance

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys, argv, status=2):
    assert cli.main(argv) == status
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--memory-budget", "inf", "must be positive and finite"),
        ("--memory-budget", "nan", "must be positive and finite"),
        ("--memory-budget", "-1", "must be positive and finite"),
        ("--seeds", "9" * 30, "at most 1000"),
        ("--recovery-seeds", "9" * 30, "at most 1000"),
        ("--workers", "9" * 12, "at most 1024"),
        ("--epochs", "9" * 30, "at most"),
        ("--ray-cpus", "nan", "must be positive and finite"),
        ("--ray-gpus", "inf", "must be not negative and finite"),
    ],
)
def test_absurd_numbers_are_one_line(capsys, tmp_path, option, value, words):
    err = one_line_error(capsys, ["run", "--quick", "--results", str(tmp_path / "r"), option, value])
    assert words in err


def test_recipes_seed_out_of_range_is_one_line(capsys):
    assert "--seed must be in" in one_line_error(capsys, ["recipes", "--seed", "-1"])


@pytest.mark.parametrize("address", ["127.0.0.1:1", "localhost:1"])
def test_unreachable_ray_address_fails_fast_in_one_line(capsys, tmp_path, address):
    t0 = time.monotonic()
    err = one_line_error(capsys, ["run", "--quick", "--results", str(tmp_path / "r"), "--ray", address])
    assert time.monotonic() - t0 < 15 and "nothing answers" in err and address in err


def test_ray_address_with_an_impossible_port_is_one_line(capsys, tmp_path):
    assert "not in 1..65535" in one_line_error(
        capsys, ["run", "--quick", "--results", str(tmp_path / "r"), "--ray", "127.0.0.1:70000"]
    )


@pytest.mark.parametrize("content", ["null", "[]", "3", '"text"'])
def test_cache_key_file_holding_a_non_object_means_recompute(tmp_path, content):
    path = tmp_path / "entry.txt"
    calls = []

    def build():
        calls.append(1)
        return "x"

    def run():
        return provenance.cached_artifact(path, {"a": 1}, build, lambda v, p: p.write_text(v), lambda p: p.read_text())[
            0
        ]

    assert run() == "x"
    provenance.key_path(path).write_text(content)
    assert run() == "x" and len(calls) == 2  # rebuilt, no AttributeError


def manifest_dir(tmp_path, manifest):
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


@pytest.mark.parametrize(
    "manifest, words",
    [
        ([], "not an object"),
        (None, "not an object"),
        ({"code": None, "files": {}}, "field 'code'"),
        ({"code": {}, "files": None}, "field 'files'"),
        ({"code": {}, "files": {"x.csv": 3}}, "field 'files'"),
        ({"code": {}, "files": {"../outside.csv": "00"}}, "not inside the results directory"),
        ({"code": {}, "files": {"/etc/passwd": "00"}}, "not inside the results directory"),
    ],
)
def test_report_check_of_a_malformed_manifest_is_not_current(capsys, tmp_path, manifest, words):
    directory = manifest_dir(tmp_path, manifest)
    assert cli.main(["report", "--results", str(directory), "--check"]) == 1
    out = capsys.readouterr()
    assert words in out.out + out.err and "Traceback" not in out.err


# -- signals: the driver ends its workers, and a worker never outlives its driver ---------------

DRIVER = textwrap.dedent("""
    import signal, sys, time
    import workers
    from prunelib import cli
    from prunelib.study import local as study
    from prunelib.study.tasks import Cell
    # Ctrl-C as a terminal-started process has it: the test runner's worker may pass on an ignored
    # or blocked SIGINT (seen in the full suite), which a shell would not.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGTERM, cli._on_sigterm)
    try:
        study.execute_local([Cell("cell", {cell})], progress=False)
    except KeyboardInterrupt as err:
        print("stopped " + type(err).__name__, file=sys.stderr)
        sys.exit(143)
""")


def children(pid):
    out = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(status.parent.name))
    return out


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_driver(cell: str = "time.sleep, (120,)"):
    """A driver running one cell (``fn, args`` as source; ``workers`` is tests/workers.py)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER.replace("{cell}", cell)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _workers(driver.pid):
        time.sleep(0.2)
    workers = _workers(driver.pid)
    assert workers, "the driver started no worker"
    time.sleep(3)  # let the worker start its cell
    return driver, workers


def _workers(pid):
    """The driver's live worker processes (spawned interpreters), not multiprocessing's resource
    tracker, which the driver starts first and which ignores Ctrl-C by design."""
    out = []
    for c in children(pid):
        try:
            cmdline = Path(f"/proc/{c}/cmdline").read_bytes()
        except OSError:
            continue
        if alive(c) and b"spawn_main" in cmdline:
            out.append(c)
    return out


def gone(pids, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    return not any(alive(p) for p in pids)


@pytest.mark.slow
def test_sigterm_ends_the_driver_and_its_workers_in_one_line():
    driver, workers = start_driver()
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=30)
    assert driver.returncode == 143 and err.strip() == "stopped Terminated", err
    assert gone(workers, 10)


@pytest.mark.slow
def test_a_worker_exits_when_its_driver_is_killed():
    driver, workers = start_driver()
    driver.kill()
    driver.communicate(timeout=120)
    assert gone(workers, 10)


@pytest.mark.parametrize("name", ["missing", "a-file"])
def test_report_of_a_missing_or_file_results_directory_is_one_line(capsys, tmp_path, name):
    (tmp_path / "a-file").write_text("x")
    assert "is not a directory of results" in one_line_error(capsys, ["report", "--results", str(tmp_path / name)])


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_ends_all_without_worker_tracebacks():
    driver, workers = start_driver()
    os.killpg(driver.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = driver.communicate(timeout=120)  # ends promptly alone; a loaded 2-core CI machine is slower
    assert err.strip() == "stopped KeyboardInterrupt", f"exit status {driver.returncode}, stderr {err!r}"
    assert gone(workers, 10)


@pytest.mark.slow
def test_sigterm_during_in_worker_does_not_wait_for_the_call():
    script = textwrap.dedent("""
        import signal, sys, time
        from prunelib import cli
        from prunelib.study import local as study
        signal.signal(signal.SIGTERM, cli._on_sigterm)
        try:
            study.in_worker(time.sleep, 120)
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
            sys.exit(143)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len([c for c in children(driver.pid) if alive(c)]) < 2:
        time.sleep(0.2)  # the pool's worker (and its resource tracker)
    time.sleep(3)
    workers = [c for c in children(driver.pid) if alive(c)]
    t0 = time.monotonic()
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=60)
    assert time.monotonic() - t0 < 15 and err.strip() == "stopped", err
    assert gone(workers, 10)
