"""Bad input and faults: each ends in a clear error or a correct result, never a silent wrong one.

Each case reproduces a finding of the fault hunt (issue 11) and asserts the clean outcome.
"""

import os
import stat

import numpy as np
import pytest
from tiny import require_real_data

from prunelib.base import paths
from prunelib.core import pruning
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


def test_read_only_data_dir_is_a_data_error(tmp_path, monkeypatch):
    read_only = tmp_path / "mnist"
    read_only.mkdir()
    read_only.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.geteuid() == 0:  # root may write anywhere (CI runs as root): deny it the way the OS denies others
        access = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode: mode != os.W_OK and access(p, mode) if p == read_only else access(p, mode)
        )
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


@pytest.mark.parametrize(
    "change, match",
    [
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
    ],
)
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

    rows = [
        {
            "dataset": "mnist",
            "method": m,
            "correction": "none",
            "k": float(k),
            "seed": 0,
            "sparsity": float(k),
            "prunable_sparsity": float(k),
            "accuracy": 98.0 - k / 10,
            "loss": 0.1,
            "effective_params": 100.0,
            "norm_kept": 50.0,
            "seconds": 0.0,
        }
        for m in ("weight", "unit")
        for k in (0, 50, 80, 90, 95, 99)
    ]
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
    argv = [
        sys.executable,
        "-m",
        "prunelib",
        "run",
        "--quick",
        "--dataset",
        "mnist",
        "--no-progress",
        "--no-baselines",
        "--no-sensitivity",
        "--recovery",
        "--no-aware",
        "--results",
        str(results),
        "--cache",
        str(cache),
    ]
    start = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)
    whole_run = time.monotonic() - start
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    assert provenance.check_manifest(results) == []
    killed = [*argv[:-1], str(tmp_path / "cache-killed")]  # from an empty cache, like the run above
    # Killed a third of the way in (starting up or training), then, resuming from what that left
    # in the cache, two thirds in (sweeping, recovering or publishing), on a machine of any speed.
    for delay in (whole_run / 3, 2 * whole_run / 3):
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


# -- issue 24: library entry points validate like the CLI ---------------------------------------


@pytest.mark.parametrize(
    "mask, match",
    [
        (lambda w: np.ones(w.shape), "mask 0 must be a boolean array"),
        (lambda w: np.full(w.shape, np.nan), "mask 0 must be a boolean array"),
        (lambda w: np.ones(w.shape, np.int8), "mask 0 must be a boolean array"),
        (lambda w: np.ones((w.shape[0] + 1, w.shape[1]), bool), "mask 0 has shape"),
    ],
)
def test_apply_masks_refuses_non_boolean_or_misshaped_masks(mask, match):
    ws = kernels()
    masks = [mask(ws[0]), *(np.ones(w.shape, bool) for w in ws[1:])]
    with pytest.raises(ValueError, match=match):
        pruning.apply_masks(ws, masks)


def test_apply_masks_refuses_a_logit_mask_that_prunes():
    ws = kernels()
    masks = [np.ones(w.shape, bool) for w in ws]
    masks[-1][0, 0] = False
    with pytest.raises(ValueError, match="logit kernel's mask .* prunes 1 weights"):
        pruning.apply_masks(ws, masks)


def test_apply_masks_refuses_a_mask_count_mismatch_and_non_lists():
    ws = kernels()
    with pytest.raises(ValueError, match="3 kernels but 2 masks"):
        pruning.apply_masks(ws, [np.ones(w.shape, bool) for w in ws[:2]])
    with pytest.raises(ValueError, match="masks must be a list with one boolean array per kernel"):
        pruning.apply_masks(ws, np.ones(3, bool))


@pytest.mark.parametrize(
    "ws, biases, match",
    [
        ([np.ones((3, 4)), np.ones((5, 2))], None, "kernel 1 takes 5 inputs"),
        ([np.ones((3, 4)), np.ones((4, 2))], [np.ones(3), None], r"bias 0 has shape \(3,\)"),
        ([np.ones((3, 4)), np.ones((4, 2))], [None], "2 kernels but 1 biases"),
        ([np.ones((3, 4)), np.full((4, 2), np.nan)], None, "kernel 1 contains 8 NaN"),
        ([], None, "at least the logit layer"),
    ],
)
def test_compact_kernels_validates_kernels_and_biases(ws, biases, match):
    from prunelib.core.compact import compact_kernels

    with pytest.raises(ValueError, match=match):
        compact_kernels(ws, biases)


def test_compact_kernels_does_not_modify_its_inputs():
    from prunelib.core.compact import compact_kernels

    ws = pruning.unit_prune(kernels(), 50)
    before = [w.copy() for w in ws]
    compact_kernels(ws, [np.ones(w.shape[1]) for w in ws])
    for a, b in zip(ws, before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "ws, biases, shape, match",
    [
        ([np.ones((30, 4)), np.ones((5, 2))], None, (30,), "kernel 1 takes 5 inputs"),
        ([np.ones((30, 4)), np.ones((4, 2))], [np.ones(3), None], (30,), r"bias 0 has shape"),
        ([np.ones((30, 4)), np.ones((4, 2))], None, (28, 28), "input_shape .* kernel 0's 30 inputs"),
        ([np.ones((30, 4)), np.ones((4, 2))], None, (-30,), "input_shape"),
    ],
)
def test_from_kernels_validates_before_building(ws, biases, shape, match):
    from prunelib.models import mlp

    with pytest.raises(ValueError, match=match):
        mlp.from_kernels(ws, biases, input_shape=shape)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"ks": (50, 50.0)}, "ks lists 50.0 more than once"),
        ({"seeds": (0, 1, 0)}, "seeds lists 0 more than once"),
        ({"datasets": ("mnist", "mnist")}, "datasets lists 'mnist' more than once"),
        ({"methods": ("weight", "weight")}, "methods lists 'weight' more than once"),
        ({"recovery_strategies": ("finetune", "finetune")}, "recovery_strategies lists 'finetune'"),
        ({"datasets": ("mnist", "cifar10")}, "unknown dataset 'cifar10'; choose from"),
        ({"datasets": ()}, "at least one value"),
        ({"datasets": "mnist"}, "datasets must be a tuple"),
        ({"seeds": (-1,)}, r"seeds must be whole numbers in \[0, 2\*\*32\), got -1"),
        ({"seeds": (0.5,)}, "seeds must be whole numbers"),
        ({"seeds": (True,)}, "seeds must be whole numbers"),
        ({"recovery_seeds": (7,)}, "recovery seed 7 is not one of the seeds"),
    ],
)
def test_experiment_config_refuses_what_the_cli_refuses(overrides, match):
    from prunelib.study.config import ExperimentConfig

    with pytest.raises(ValueError, match=match):
        ExperimentConfig.quick(**overrides)


def test_default_and_quick_configs_still_construct():
    from prunelib.study.config import ExperimentConfig

    ExperimentConfig()
    ExperimentConfig.quick(datasets=("mnist",), seeds=(0, 1), recovery_seeds=())


# -- issue 24, own hunt: evaluation, accounting and bias helpers --------------------------------


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.ones((4, 10)), np.array([0.0, 1.0, 2.0, 0.0]), "labels must be integers"),
        (np.ones((4, 10)), np.array(["a"] * 4), "labels must be integers"),
        (np.ones((0, 10)), np.zeros(0, int), "non-empty batch"),
        (np.ones((4, 7)), np.zeros(4, int), "flattening to the first kernel's 10 inputs"),
        (np.ones(10), np.zeros(1, int), "non-empty batch"),
    ],
)
def test_evaluate_kernels_refuses_bad_images_and_labels(x, y, match):
    from prunelib.core.evaluate import evaluate_kernels

    with pytest.raises(ValueError, match=match):
        evaluate_kernels(kernels(), x, y)


def test_evaluate_kernels_refuses_an_array_as_kernels():
    from prunelib.core.evaluate import evaluate_kernels

    with pytest.raises(ValueError, match="list of 2-D arrays"):
        evaluate_kernels(np.ones((10, 3)), np.ones((2, 10)), np.zeros(2, int))


def test_account_and_live_units_refuse_unchained_kernels():
    from prunelib.core.compact import account, live_units

    for fn in (account, live_units):
        with pytest.raises(ValueError, match="kernel 1 takes 5 inputs"):
            fn([np.ones((3, 4)), np.ones((5, 2))])
    with pytest.raises(ValueError, match="bias 0 has shape"):
        live_units([np.ones((3, 4)), np.ones((4, 2))], [np.ones(3), None])


def test_prune_biases_refuses_mismatched_biases():
    with pytest.raises(ValueError, match="bias 0 has shape"):
        pruning.prune_biases([np.ones(3)], [np.ones((2, 2), bool)], "unit")
    with pytest.raises(ValueError, match="1 biases but 2 masks"):
        pruning.prune_biases([None], [np.ones((2, 2), bool)] * 2, "weight")


def test_summary_table_names_missing_columns():
    import pandas as pd

    from prunelib.reporting.stats import summary_table

    with pytest.raises(ValueError, match=r"missing \['dataset'"):
        summary_table(pd.DataFrame({"a": [1]}))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda C: C.Architecture((1.5,)), "every size must be a positive integer, got 1.5"),
        (lambda C: C.Architecture((300.0, 100)), None),  # whole floats still mean their int
        (lambda C: C.Recipe(learning_rate=float("inf")), "learning_rate must be a finite number"),
        (lambda C: C.Recipe(weight_decay=float("nan")), "weight_decay must be a finite number"),
        (lambda C: C.Recipe(epochs=1.5), "epochs must be a whole number"),
        (lambda C: C.TrainConfig(seed=-1), r"seed must be a whole number \[0, 4294967296\)"),
        (lambda C: C.TrainConfig(seed=1.5), "seed must be a whole number"),
        (lambda C: C.TrainConfig(train_subset=1.5), "train_subset must be a whole number"),
        (lambda C: C.ExperimentConfig.quick(calibration_size=1.5), "calibration_size must be a whole number"),
        (lambda C: C.ExperimentConfig.quick(calibration_size=True), "calibration_size must be a whole number"),
    ],
)
def test_configs_refuse_numbers_they_would_silently_round_or_carry(make, match):
    from types import SimpleNamespace

    from prunelib.models import config as model_config
    from prunelib.study import config as study_config

    config = SimpleNamespace(**vars(model_config), **{"ExperimentConfig": study_config.ExperimentConfig})

    if match is None:
        assert make(config).hidden_sizes == (300, 100)
        return
    with pytest.raises(ValueError, match=match):
        make(config)
