"""Bad input and faults: each ends in a clear error or a correct result, never a silent wrong one.

Each case reproduces a finding of the fault hunt (issue 11) and asserts the clean outcome.
"""

import os
import stat

import numpy as np
import pytest

from prunelib.base import paths
from prunelib.core import pruning
from tiny import require_real_data
from prunelib.data import DATASETS, DataError, fetch
from prunelib.inference.sparse import SparseMLP


def kernels(seed=0, sizes=(10, 10, 8, 3)):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]


# -- silent wrong results in pruning ----------------------------------------------------------

@pytest.mark.parametrize("method", ["weight", "unit", "global-weight"])
@pytest.mark.parametrize("nans", [5, 100])
def test_nan_weights_raise_instead_of_breaking_the_count_rule(method, nans):
    ws = kernels()
    ws[0] = ws[0].copy()
    ws[0].ravel()[:nans] = np.nan
    with pytest.raises(ValueError, match="kernel 0 contains"):
        pruning.compute_masks(ws, 96, method)


def test_int8_kernel_prunes_the_true_smallest_magnitudes():
    w = np.array([[-128, 1, 2], [3, -4, 5]], dtype=np.int8)
    out = pruning.weight_prune([w, np.ones((3, 2), np.int8)], 50)[0]
    assert out[0, 0] == -128 and np.count_nonzero(out) == 3


@pytest.mark.parametrize("bad", [np.zeros(10), np.zeros((2, 2, 2))])
def test_wrong_rank_kernels_are_rejected(bad):
    with pytest.raises(ValueError, match="must be 2-D"):
        pruning.weight_prune([bad, np.zeros((2, 2))], 50)


def test_unchained_kernels_are_rejected():
    with pytest.raises(ValueError, match="kernel 1 takes 5 inputs but kernel 0 has 4 units"):
        pruning.weight_prune([np.ones((3, 4)), np.ones((5, 2))], 50)


# -- data directory faults --------------------------------------------------------------------

def test_data_dir_that_is_a_file_is_a_data_error(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DataError, match="must be a directory"):
        fetch("mnist", a_file)


def test_directory_where_a_data_file_belongs_is_a_data_error(tmp_path):
    name = next(iter(DATASETS["mnist"].sha256))
    (tmp_path / "mnist" / name).mkdir(parents=True)
    with pytest.raises(DataError, match="is a directory where a data file belongs"):
        fetch("mnist", tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_data_dir_is_a_data_error(tmp_path):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist").chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(DataError, match="not writable"):
        fetch("mnist", tmp_path)


def test_empty_and_tilde_environment_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNELIB_HOME", "~/somewhere")
    monkeypatch.setenv("PRUNELIB_DATA", "")
    assert paths.home() == paths.Path.home() / "somewhere"  # ~ expanded
    assert paths.data_dir() == paths.home() / "data"  # empty means unset, not the current dir


def test_fetched_files_are_world_readable(tmp_path, monkeypatch):
    from prunelib.data import sources as fetching

    [source] = require_real_data("fashion-mnist")
    monkeypatch.setattr(fetching, "DEBIAN_DIR", source)  # install from a local copy, as from Debian's
    old = os.umask(0o022)
    try:
        root = fetch("fashion-mnist", tmp_path)
    finally:
        os.umask(old)
    for name in DATASETS["fashion-mnist"].sha256:
        assert (root / name).stat().st_mode & 0o777 == 0o644


# -- atomic writes ----------------------------------------------------------------------------

def test_atomic_write_leaves_no_temporary_file_on_error(tmp_path):
    def failing(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        paths.atomic_write(tmp_path / "table.csv", failing)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_gives_normal_permissions(tmp_path):
    paths.atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


# -- sparse save / load -----------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    ws = kernels()
    ws = pruning.weight_prune(ws, 80)
    path = SparseMLP(ws).save(tmp_path / "m.npz")
    with np.load(path) as f:
        arrays = dict(f)
    return path, arrays


def rewrite(path, arrays, **changes):
    np.savez(path, **{**arrays, **changes})
    return path


@pytest.mark.parametrize("change, match", [
    (lambda a: {"0_indices": a["0_indices"] + 10_000}, "indices must number"),
    (lambda a: {"0_indices": -a["0_indices"] - 1}, "indices must number"),
    (lambda a: {"0_indptr": a["0_indptr"][::-1].copy()}, "indptr must rise"),
    (lambda a: {"0_indptr": a["0_indptr"][:-1]}, "indptr must rise"),
    (lambda a: {"0_shape": np.array([1000, 1000])}, "indptr must rise|do not chain|takes"),
    (lambda a: {"1_shape": np.array([7, 8])}, "indptr|indices|takes"),
    (lambda a: {"n_layers": np.array(2)}, "do not match"),
    (lambda a: {"n_layers": np.array(4)}, "do not match"),
    (lambda a: {"0_data": a["0_data"].astype(np.int64)}, "finite floats"),
    (lambda a: {"0_data": np.full_like(a["0_data"], np.nan)}, "finite floats"),
])
def test_damaged_sparse_files_raise_instead_of_crashing(saved, change, match):
    path, arrays = saved
    rewrite(path, arrays, **change(arrays))
    with pytest.raises(ValueError, match=match):
        SparseMLP.load(path)


@pytest.mark.parametrize("content", [b"", b"\x00\x01binary garbage", None])
def test_foreign_files_raise_a_clear_error(tmp_path, content):
    path = tmp_path / "foreign.npz"
    if content is None:
        np.savez(path, something=np.arange(3))
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="SparseMLP"):
        SparseMLP.load(path)


def test_good_file_still_round_trips(saved):
    path, _ = saved
    model = SparseMLP.load(path)
    x = np.random.default_rng(0).random((5, 10)).astype(np.float32)
    ws = pruning.weight_prune(kernels(), 80)
    h = x
    for i, w in enumerate(ws):
        h = h @ w
        if i < len(ws) - 1:
            h = np.maximum(h, 0)
    np.testing.assert_allclose(model.predict(x), h, rtol=1e-4, atol=1e-5)


def test_a_damaged_figure_leaves_report_and_docx_as_they_were(tmp_path):
    import pandas as pd

    from prunelib.reporting import report
    from prunelib.reporting.results import Results

    rows = [{"dataset": "mnist", "method": m, "correction": "none", "k": float(k), "seed": 0,
             "sparsity": float(k), "prunable_sparsity": float(k), "accuracy": 98.0 - k / 10, "loss": 0.1,
             "effective_params": 100.0, "norm_kept": 50.0, "seconds": 0.0}
            for m in ("weight", "unit") for k in (0, 50, 80, 90, 95, 99)]
    results = Results(sweep=pd.DataFrame(rows))
    (tmp_path / "mnist").mkdir()
    report.write_report(results, tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "REPORT.md", tmp_path / "report.docx")}
    (tmp_path / "mnist" / "sparsity_vs_accuracy.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="may be damaged"):
        report.write_report(results, tmp_path)
    after = {p.name: p.read_bytes() for p in (tmp_path / "REPORT.md", tmp_path / "report.docx")}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["REPORT.md", "mnist", "report.docx"]


@pytest.mark.slow
def test_sigkill_mid_run_leaves_the_previous_results_and_a_usable_cache(tmp_path):
    """A run killed at any point never leaves results/ or the cache in a state the next run trusts
    wrongly: the previous results stay intact and current, and the next run completes."""
    import signal
    import subprocess
    import sys
    import time

    from prunelib.base import provenance

    require_real_data("mnist")
    results, cache = tmp_path / "results", tmp_path / "cache"
    # The smallest study that still trains, sweeps and publishes: what matters is where it is killed.
    argv = [sys.executable, "-m", "prunelib", "run", "--quick", "--dataset", "mnist", "--no-progress",
            "--no-baselines", "--no-sensitivity", "--recovery", "--no-aware",
            "--results", str(results), "--cache", str(cache)]
    subprocess.run(argv, check=True, capture_output=True)
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    assert provenance.check_manifest(results) == []
    killed = [*argv[:-1], str(tmp_path / "cache-killed")]  # from an empty cache: slow enough to kill
    for delay in (8.0, 16.0):  # killed while training, then while sweeping / recovering
        proc = subprocess.Popen(killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if finished:  # the run beat the clock: its results replaced the old ones as a whole
            before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
        after = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
        assert after == before and provenance.check_manifest(results) == []
    done = subprocess.run(killed, capture_output=True, text=True)  # the killed runs' cache is usable
    assert done.returncode == 0, done.stderr[-2000:]
    assert provenance.check_manifest(results) == []
    assert not list(tmp_path.glob(".results.staging-*"))  # a killed run's staging is cleaned up
