"""The command line: options map onto the config, and a quick run writes tables and the report."""

import pandas as pd
import pytest

from prunelib import cli
from prunelib.data import DataError, fetch


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    for option in ("--dataset", "--seeds", "--epochs", "--methods", "--ks", "--no-baselines",
                   "--no-sensitivity", "--recovery", "--recovery-epochs", "--recovery-ks",
                   "--recovery-seeds", "--no-aware", "--quick", "--retrain", "--results",
                   "--data-dir", "--cache", "--no-progress"):
        assert option in text


def test_options_build_the_config():
    args = cli._parser().parse_args(["run", "--dataset", "mnist", "--seeds", "3", "--epochs", "4",
                                     "--ks", "0", "90", "--recovery", "finetune", "--no-aware",
                                     "--recovery-seeds", "5"])
    config = cli.config_from_args(args)
    assert config.datasets == ("mnist",) and config.seeds == (0, 1, 2) and config.train.epochs == 4
    assert config.ks == (0.0, 90.0) and config.recovery_strategies == ("finetune",)
    assert config.aware_targets == () and config.recovery_seeds == (0, 1, 2)  # capped at --seeds


def test_bad_k_is_rejected_by_name():
    args = cli._parser().parse_args(["run", "--ks", "150"])
    with pytest.raises(ValueError, match="150"):
        cli.config_from_args(args)


def test_quick_run_then_report(tmp_path):
    try:
        fetch("mnist")
    except DataError as err:
        pytest.skip(f"MNIST unavailable: {err}")
    results = tmp_path / "results"
    argv = ["run", "--quick", "--dataset", "mnist", "--seeds", "2", "--no-sensitivity", "--recovery",
            "--no-aware", "--results", str(results), "--cache", str(tmp_path / "cache"), "--no-progress"]
    assert cli.main(argv) == 0
    sweep = pd.read_csv(results / "mnist" / "sweep.csv")
    assert sorted(sweep["seed"].unique()) == [0, 1]
    assert set(sweep["method"]) == {"weight", "unit", "global-weight", "retrain-small"}
    times = pd.read_csv(results / "run_times.csv")
    assert len(times) == 1 and times["total_s"].iloc[0] > 0
    assert times["command"].iloc[0].startswith("python -m prunelib run")
    assert cli.main(argv) == 0  # a cached re-run appends its own row
    assert len(pd.read_csv(results / "run_times.csv")) == 2
    (results / "REPORT.md").unlink()
    assert cli.main(["report", "--results", str(results)]) == 0
    assert "## Discussion" in (results / "REPORT.md").read_text()


def test_report_without_results_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m prunelib run"):
        cli.main(["report", "--results", str(tmp_path)])


def test_clock_books_nested_phases_once():
    import time

    from prunelib.experiment import _Clock

    clock = _Clock()
    clock("outer", lambda: (time.sleep(0.05), clock("inner", lambda: time.sleep(0.1))))
    assert clock.seconds["inner"] >= 0.1
    assert 0.05 <= clock.seconds["outer"] < 0.1
