"""The command line: options map onto the config, and a quick run writes tables and the report."""

import json
from pathlib import Path

import pandas as pd
import pytest
from tiny import require_real_data

from prunelib import cli
from prunelib.study.config import ExperimentConfig
from prunelib.study.registry import tables_for
from prunelib.study.tasks import study_cells


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--dataset",
        "--seeds",
        "--epochs",
        "--methods",
        "--ks",
        "--no-baselines",
        "--no-sensitivity",
        "--recovery",
        "--recovery-epochs",
        "--recovery-ks",
        "--recovery-seeds",
        "--no-aware",
        "--quick",
        "--retrain",
        "--results",
        "--data-dir",
        "--cache",
        "--no-progress",
        "--preset",
    ):
        assert option in text


def test_options_build_the_config():
    args = cli.parser().parse_args(
        [
            "run",
            "--dataset",
            "mnist",
            "--seeds",
            "3",
            "--epochs",
            "4",
            "--ks",
            "0",
            "90",
            "--recovery",
            "finetune",
            "--no-aware",
            "--recovery-seeds",
            "5",
        ]
    )
    config = cli.config_from_args(args)
    assert config.datasets == ("mnist",) and config.seeds == (0, 1, 2) and config.train.recipe.epochs == 4
    assert config.ks == (0.0, 90.0) and config.recovery_strategies == ("finetune",)
    assert config.aware_targets == () and config.recovery_seeds == (0, 1, 2)  # capped at --seeds


@pytest.mark.slow
def test_quick_run_then_report(tmp_path):
    """A challenge run, then the full run on its cache (which recomputes nothing of it), then report."""
    require_real_data("mnist")
    results, cache = tmp_path / "results", tmp_path / "cache"
    argv = [
        "run",
        "--quick",
        "--dataset",
        "mnist",
        "--seeds",
        "2",
        "--no-sensitivity",
        "--recovery",
        "--no-aware",
        "--results",
        str(results),
        "--cache",
        str(cache),
        "--no-progress",
    ]
    assert cli.main([*argv, "--preset", "challenge", "--results", str(tmp_path / "challenge")]) == 0
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file() and not p.name.startswith("results-")}
    assert cli.main(argv) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # the presets share their cache
    assert not [p for p in cache.rglob("sweep-*") if p not in before]  # the full run read the challenge's sweeps
    sweep = pd.read_csv(results / "mnist" / "sweep.csv")
    challenge = pd.read_csv(tmp_path / "challenge" / "mnist" / "sweep.csv")
    assert set(challenge["method"]) == {"weight", "unit", "global-weight"}
    pd.testing.assert_frame_equal(challenge, sweep[sweep["method"] != "retrain-small"].reset_index(drop=True))
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (tmp_path / "challenge", results)]
    assert [m["config"]["preset"] for m in manifests] == ["challenge", "full"]
    assert manifests[0]["machine"]["usable_cpus"] >= 1
    assert "challenge preset" in (tmp_path / "challenge" / "REPORT.md").read_text()
    assert sorted(sweep["seed"].unique()) == [0, 1]
    assert set(sweep["method"]) == {"weight", "unit", "global-weight", "retrain-small"}
    assert set(sweep["correction"]) == {"none", "lstsq", "best"}
    assert set(sweep.loc[sweep["correction"] == "best", "k"]) == {99.0}  # the quick config's best_ks
    assert cli.main(["report", "--results", str(results), "--check"]) == 0
    times = pd.read_csv(results / "run_times.csv")
    assert len(times) == 1 and times["total_s"].iloc[0] > 0
    assert times["command"].iloc[0].startswith("python -m prunelib run")
    assert cli.main(argv) == 0  # a cached re-run appends its own row
    assert len(pd.read_csv(results / "run_times.csv")) == 2
    (results / "REPORT.md").unlink()
    assert cli.main(["report", "--results", str(results)]) == 0
    assert "## Discussion" in (results / "REPORT.md").read_text()


def test_report_without_results_says_what_to_run(tmp_path, capsys):
    assert cli.main(["report", "--results", str(tmp_path)]) == 2
    assert "python -m prunelib run" in capsys.readouterr().err
    assert cli.main(["report", "--results", str(tmp_path), "--check"]) == 1


def test_clock_books_nested_phases_once():
    import time

    from prunelib.study.experiment import PhaseClock

    clock = PhaseClock()
    clock("outer", lambda: (time.sleep(0.05), clock("inner", lambda: time.sleep(0.1))))
    assert clock.seconds["inner"] >= 0.1
    assert 0.05 <= clock.seconds["outer"] < 0.1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--seeds", "0"], "--seeds must be at least 1"),
        (["run", "--ks", "150"], "k must be a percentage in [0, 100], got 150"),
        (["run", "--ks", "abc"], "k must be a percentage"),
        (["run", "--recovery-epochs", "0"], "--recovery-epochs must be at least 1"),
        (["run", "--epochs", "0"], "--epochs must be at least 1"),
        (["run", "--dataset", "mnist", "mnist"], "--dataset lists 'mnist' more than once"),
        (["run", "--ks", "90", "90"], "--ks lists 90.0 more than once"),
        (["run", "--dataset", "cifar"], "invalid choice"),
        (["recipes", "--recipes", "nope"], "unknown recipe 'nope'"),
        (["frobnicate"], "invalid choice"),
        (["run", "--workers", "0"], "--workers must be at least 1"),
        (["run", "--workers", "2", "--in-process"], "--workers applies to worker processes"),
        (["run", "--memory-budget", "1", "--ray"], "--memory-budget applies to worker processes"),
        (["run", "--ray", "--ray-table-cpus", "0"], "--ray-table-cpus (0) must be positive"),
        (["run", "--ray", "--ray-cpus", "-1"], "--ray-cpus (-1)"),
    ],
)
def test_user_mistakes_print_one_line_and_exit_2(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_output_locations_are_checked_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for option in ("--results", "--cache"):
        assert cli.main(["run", option, str(a_file / "sub"), "--no-progress"]) == 2
        assert "is a file, not a directory" in capsys.readouterr().err


def test_quick_composes_with_explicit_options():
    args = cli.parser().parse_args(
        ["run", "--quick", "--epochs", "3", "--recovery-ks", "95", "--recovery-epochs", "2", "--seeds", "2"]
    )
    config = cli.config_from_args(args)
    assert config.train.recipe.epochs == 3 and config.train.train_subset == 2000  # quick's subset stays
    assert config.recovery_ks == (95.0,) and config.recovery.recipe.epochs == 2 and config.seeds == (0, 1)
    plain = cli.config_from_args(cli.parser().parse_args(["run", "--quick"]))
    assert plain.train.recipe.epochs == 1 and plain.seeds == (0,)


def test_damaged_tables_stop_the_report_with_one_line(tmp_path, capsys):
    d = tmp_path / "mnist"
    d.mkdir()
    (d / "sweep.csv").write_text(
        "dataset,method,correction,k,seed,sparsity,prunable_sparsity,loss\nmnist,weight,none,0,0,0,0,0.1\n"
    )  # accuracy column removed
    assert cli.main(["report", "--results", str(tmp_path)]) == 2
    assert "lacks column(s) ['accuracy']" in capsys.readouterr().err
    (d / "sweep.csv").write_text(
        "dataset,method,correction,k,seed,sparsity,prunable_sparsity,accuracy,loss\n"
        "mnist,weight,none,0,0,0,0,98.1,0.1\nmnist,weight,none,50,0,49"
    )  # cut mid-row
    assert cli.main(["report", "--results", str(tmp_path)]) == 2
    assert "missing or non-numeric" in capsys.readouterr().err


def test_challenge_preset_is_the_challenge_alone():
    full = cli.config_from_args(cli.parser().parse_args(["run"]))
    challenge = cli.config_from_args(cli.parser().parse_args(["run", "--preset", "challenge"]))
    assert full == ExperimentConfig() and full.with_preset("full") == full
    # The same sweeps (datasets, seeds, ks, methods, least squares, global pruning) ...
    fields = (
        "datasets",
        "seeds",
        "ks",
        "methods",
        "corrections",
        "calibration_size",
        "best_from",
        "train",
        "baselines",
    )
    for field in fields:
        assert getattr(challenge, field) == getattr(full, field)
    # ... and nothing else.
    assert all(tables_for(challenge, s) == ("sweep", "best") for s in challenge.seeds)
    assert not challenge.recipes and not challenge.sensitivity and not challenge.retrain_small
    assert {c.name.split("/")[-1] for c in study_cells(challenge)} == {"train", "sweep table", "best table"}
    assert cli.default_results("challenge") != cli.default_results("full") == Path("results")
    with pytest.raises(ValueError, match="unknown preset"):
        full.with_preset("tiny")
