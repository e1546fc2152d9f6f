"""Paths no other test ran: every `run` flag reaching the study (success paths), every option in
--help, the tables' documented error paths, 0-epoch training, a fault test that also runs as root,
and the all-zero logits at k = 100."""

import argparse
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prunelib import cli
from prunelib.core import pruning
from prunelib.core.evaluate import evaluate_kernels, sweep
from prunelib.reporting import tables

# -- the command line: every option documented and exercised --------------------------------------


def _subcommands():
    parser = cli.parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def _options(subparser):
    return [opt for action in subparser._actions for opt in action.option_strings if opt not in ("-h", "--help")]


def test_help_documents_every_option_of_every_subcommand(capsys):
    subs = _subcommands()
    assert set(subs) == {"run", "recipes", "report"}
    for name, sub in subs.items():
        with pytest.raises(SystemExit):
            cli.main([name, "--help"])
        text = capsys.readouterr().out
        for option in _options(sub):
            assert option in text, (name, option)
            [action] = [a for a in sub._actions if option in a.option_strings]
            assert action.help and action.help != argparse.SUPPRESS, (name, option)
    # the ones an earlier list skipped, named so a rename shows up here
    for option in (
        "--no-lstsq",
        "--no-recipes",
        "--in-process",
        "--workers",
        "--memory-budget",
        "--ray",
        "--ray-cpus",
        "--ray-table-cpus",
        "--ray-gpus",
    ):
        assert option in _options(subs["run"])


class _Calls:
    """Stands in for the study, the Ray study and publish: records what the CLI passed."""

    def __init__(self, monkeypatch):
        from prunelib.reporting import results
        from prunelib.study import local as study
        from prunelib.study import on_ray as distributed

        self.study, self.ray, self.published = [], [], []
        monkeypatch.setattr(study, "run_study", lambda config, **kw: self.study.append((config, kw)) or "R")
        monkeypatch.setattr(
            distributed, "run_study_on_ray", lambda config, **kw: self.ray.append((config, kw)) or ("R", None)
        )
        monkeypatch.setattr(
            results,
            "publish",
            lambda res, config, results_dir, **kw: (
                self.published.append((res, config, results_dir, kw)) or [Path(results_dir) / "REPORT.md"]
            ),
        )


# Each case: argv after "run", then what the study must receive. Together they pass every flag.
RUN_CASES = [
    (
        ["--workers", "3", "--memory-budget", "2.5", "--data-dir", "D", "--cache", "C", "--no-progress"],
        dict(
            isolate=True,
            workers=3,
            memory_budget_gb=2.5,
            data_dir=Path("D"),
            cache=Path("C"),
            progress=False,
            retrain=False,
        ),
    ),
    (["--in-process"], dict(isolate=False, workers=1, retrain=False, progress=True)),
    (["--retrain"], dict(isolate=True, workers=1, retrain=True)),
]


@pytest.mark.parametrize("argv, expected", RUN_CASES)
def test_run_flags_reach_the_study(tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    calls = _Calls(monkeypatch)
    results = tmp_path / "out"
    assert cli.main(["run", *argv, "--results", str(results)]) == 0
    assert not calls.ray and len(calls.study) == 1 and len(calls.published) == 1
    config, kw = calls.study[0]
    for key, value in expected.items():
        assert kw[key] == value, key
    if "--memory-budget" not in argv:
        from prunelib.study import local as study

        assert kw["memory_budget_gb"] == study.DEFAULT_MEMORY_BUDGET_GB
    res, published_config, results_dir, pkw = calls.published[0]
    assert res == "R" and published_config == config and Path(results_dir) == results
    assert pkw["command"].startswith("python -m prunelib run") and pkw["run_seconds"] >= 0


def test_config_flags_map_onto_the_experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = _Calls(monkeypatch)
    argv = [
        "run",
        "--dataset",
        "fashion-mnist",
        "--seeds",
        "2",
        "--epochs",
        "3",
        "--methods",
        "unit",
        "--ks",
        "0",
        "95",
        "--no-lstsq",
        "--no-baselines",
        "--no-sensitivity",
        "--no-recipes",
        "--recovery",
        "finetune",
        "--recovery-epochs",
        "4",
        "--recovery-ks",
        "95",
        "--recovery-seeds",
        "2",
        "--no-aware",
        "--quick",
        "--results",
        str(tmp_path / "out"),
    ]
    assert cli.main(argv) == 0
    config, _ = calls.study[0]
    assert config.datasets == ("fashion-mnist",) and config.seeds == (0, 1) and config.train.recipe.epochs == 3
    assert config.methods == ("unit",) and config.ks == (0.0, 95.0) and config.corrections == ("none",)
    assert not config.baselines and not config.sensitivity and not config.recipes
    assert config.recovery_strategies == ("finetune",) and config.recovery.recipe.epochs == 4
    assert config.recovery_ks == (95.0,) and config.recovery_seeds == (0, 1) and config.aware_targets == ()
    assert config.train.train_subset == 2000  # --quick's subset
    default = cli.config_from_args(cli.parser().parse_args(["run"]))
    assert default.methods == ("weight", "unit") and default.baselines and default.sensitivity and default.recipes
    assert "none" in default.corrections and len(default.corrections) > 1


@pytest.mark.parametrize("ray, address", [([], None), (["auto"], "auto"), (["ray://head:10001"], "ray://head:10001")])
def test_ray_flags_reach_the_ray_study(tmp_path, monkeypatch, ray, address):
    monkeypatch.chdir(tmp_path)
    calls = _Calls(monkeypatch)
    checked = []  # the address's fail-fast TCP check has its own tests (test_faults_cli)
    monkeypatch.setattr(cli, "_check_ray_address", checked.append)
    argv = [
        "run",
        "--ray",
        *ray,
        "--ray-cpus",
        "1.5",
        "--ray-table-cpus",
        "3",
        "--ray-gpus",
        "0.5",
        "--data-dir",
        "D",
        "--cache",
        "C",
        "--results",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    assert not calls.study and len(calls.ray) == 1
    _, kw = calls.ray[0]
    assert kw == dict(
        address=address, cpus=1.5, gpus=0.5, table_cpus=3.0, data_dir=Path("D"), cache=Path("C"), progress=False
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ray", "--retrain"], "--retrain cannot be combined with --ray"),
        (["--ray-gpus", "-1"], "--ray-gpus (-1) must be not negative and finite"),
        (["--memory-budget", "0"], "--memory-budget (0) must be positive and finite"),
        (["--memory-budget", "1", "--retrain"], "--memory-budget applies to worker processes"),
        (["--workers", "2", "--ray"], "--workers applies to worker processes"),
    ],
)
def test_run_flag_conflicts_stop_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    calls = _Calls(monkeypatch)
    assert cli.main(["run", *argv, "--results", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not calls.study and not calls.ray and not calls.published


def test_quick_without_results_writes_to_the_scratch_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRUNELIB_HOME", str(tmp_path / "home"))
    calls = _Calls(monkeypatch)
    assert cli.main(["run", "--quick", "--no-progress"]) == 0
    assert f"writing to {tmp_path / 'home' / 'quick-results'}" in capsys.readouterr().err
    assert Path(calls.published[0][2]) == tmp_path / "home" / "quick-results"


# -- tables: the error paths the README promises ----------------------------------------------------


def _sweep_table(**changes):
    rows = [
        {
            "dataset": "mnist",
            "method": "weight",
            "correction": "none",
            "k": k,
            "seed": 0,
            "sparsity": k,
            "prunable_sparsity": k,
            "accuracy": 98.0 - k / 10,
            "loss": 0.1,
        }
        for k in (0.0, 50.0, 90.0)
    ]
    table = pd.DataFrame(rows)
    for column, value in changes.items():
        table.loc[1, column] = value
    return table


def test_a_valid_table_passes_unchanged():
    table = _sweep_table()
    assert tables.validate(table, "sweep") is table


@pytest.mark.parametrize(
    "table, message",
    [
        (_sweep_table().iloc[:0], "has no rows"),
        (_sweep_table(accuracy=100.5), "column 'accuracy' has values outside [0, 100]"),
        (_sweep_table(accuracy=-0.1), "column 'accuracy' has values outside [0, 100]"),
        (_sweep_table(sparsity=101.0), "column 'sparsity' has values outside [0, 100]"),
        (_sweep_table(k=-5.0), "column 'k' has values outside [0, 100]"),
        (_sweep_table(k=0.0), "repeats 1 row(s) of the same dataset, method, correction, k, seed"),
        (_sweep_table(loss=math.nan), "column 'loss' has 1 missing or non-numeric"),
        (_sweep_table().drop(columns=["dataset"]), "lacks column(s) ['dataset']"),
    ],
)
def test_damaged_tables_are_rejected_naming_the_fault(table, message):
    with pytest.raises(tables.TableError, match=None) as err:
        tables.validate(table, "sweep", "sweep.csv")
    assert str(err.value).startswith("sweep.csv") and message in str(err.value)


def test_edges_of_the_percent_range_are_accepted_and_files_are_read_and_validated(tmp_path):
    tables.validate(_sweep_table(accuracy=100.0, sparsity=0.0), "sweep")
    path = tmp_path / "sweep.csv"
    _sweep_table(accuracy=100.5).to_csv(path, index=False)
    with pytest.raises(tables.TableError, match="outside"):
        tables.read(path, "sweep")
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(tables.TableError, match="cannot be read as a table"):
        tables.read(path, "sweep")
    path.write_text("")
    with pytest.raises(tables.TableError, match="cannot be read as a table"):
        tables.read(path, "sweep")


# -- training: zero epochs is refused --------------------------------------------------------------


def test_caching_a_zero_epoch_model_is_refused_before_any_work(tmp_path):
    from tiny import TINY, tiny_data

    from prunelib.models import mlp

    with pytest.raises(ValueError, match="epochs must be at least 1 to train a model, got 0"):
        mlp.train_cached(tiny_data(), TINY.with_recipe(epochs=0), cache=tmp_path)
    with pytest.raises(ValueError, match="got 0"):
        mlp.train_or_load(tiny_data(), TINY.with_recipe(epochs=0), cache=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no untrained model cached as a trained one


# -- a data directory nobody may write (runs as root too) -----------------------------------------


def test_unwritable_data_dir_is_a_data_error_even_as_root(tmp_path, monkeypatch):
    """The chmod-based test in test_faults is skipped as root (root writes anywhere); here the
    permission check itself answers "no", so the same error path runs under CI's root too."""
    from prunelib.data import DataError, fetch
    from prunelib.data import sources as fetching

    real_access = os.access
    denied = tmp_path / "ro"
    denied.mkdir()
    monkeypatch.setattr(
        fetching.os,
        "access",
        lambda p, mode, **kw: False if Path(p) == denied and mode & os.W_OK else real_access(p, mode, **kw),
    )
    with pytest.raises(DataError, match=f"missing and {denied}.* is not writable"):
        fetch("mnist", denied)
    assert list(denied.iterdir()) == []  # nothing half-written


def test_a_write_that_fails_midway_is_a_data_error_and_leaves_nothing(tmp_path, monkeypatch):
    import hashlib

    from prunelib.data import DataError
    from prunelib.data import sources as fetching

    source = tmp_path / "src.gz"
    source.write_bytes(b"payload")
    digest = hashlib.sha256(b"payload").hexdigest()

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fetching.os, "replace", refuse)
    target = tmp_path / "data" / "file.gz"
    with pytest.raises(DataError, match=f"cannot write {target} \\(Permission denied\\)"):
        fetching.install_verified(source, target, digest)
    assert list(target.parent.iterdir()) == []  # the temporary file is gone, no target


# -- k = 100: all-zero logits ---------------------------------------------------------------------


def test_k_100_leaves_all_zero_logits_so_accuracy_is_class_0s_share_and_loss_is_log_classes():
    rng = np.random.default_rng(0)
    kernels = [rng.normal(size=s).astype(np.float32) for s in [(20, 16), (16, 12), (12, 3)]]
    x = rng.random((50, 4, 5), dtype=np.float32)
    y = rng.integers(0, 3, 50)
    df = sweep(kernels, x, y, dataset="tiny", ks=[100], seed=0, progress=False)
    assert len(df) == 2
    for method in ("weight", "unit"):
        pruned = pruning.prune(kernels, 100, method)
        h = x.reshape(len(x), -1).astype(np.float64)
        for w in pruned[:-1]:
            h = np.maximum(h @ w, 0)
        np.testing.assert_array_equal(h @ pruned[-1], 0.0)  # every logit exactly zero
        row = df[df["method"] == method].iloc[0]
        assert row["accuracy"] == pytest.approx(100 * np.mean(y == 0))  # argmax of ties is class 0
        assert row["loss"] == pytest.approx(math.log(3), rel=1e-6)
        assert evaluate_kernels(pruned, x, y) == (pytest.approx(100 * np.mean(y == 0)), pytest.approx(math.log(3)))
