"""A results directory is the project's or it is refused; publishing is whole or not at all.

Reproduces the fault hunt's data-loss findings (issue 24): ``--results`` pointed at a folder of
someone's files must never empty it, a failure while publishing must leave the previous results
whole, and concurrent publishers must never leave a manifest that names other tables.
"""

import json
import multiprocessing
from pathlib import Path

import pandas as pd
import pytest
from tiny import fake_sweep
from workers import publish_fake

from prunelib import cli
from prunelib.base.provenance import check_manifest
from prunelib.reporting import results as results_io
from prunelib.reporting.results import Results, ResultsDirError, check_replaceable, foreign_files, publish
from prunelib.study.config import ExperimentConfig


def _sweep(accuracy: float) -> pd.DataFrame:
    return fake_sweep(accuracy, seeds=(0, 1)).assign(correction="none", seconds=0.0)


def _publish(directory: Path, accuracy: float, command: str = "test") -> None:
    publish_fake(str(directory), accuracy, command)


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """One published results directory, copied per test (publishing draws every figure)."""
    directory = tmp_path_factory.mktemp("published") / "results"
    _publish(directory, 91.0)
    return directory


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_folder_of_user_files_is_refused_and_kept(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "module.py").write_text("x = 1\n")
    (package / "notes.txt").write_text("mine")
    with pytest.raises(ResultsDirError, match=r"module\.py.*notes\.txt.*give an empty or new one"):
        results_io.save_results(Results(sweep=fake_sweep()), package)
    assert sorted(p.name for p in package.iterdir()) == ["module.py", "notes.txt"]


def test_cli_refuses_before_any_work_with_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    status = cli.main(["run", "--quick", "--dataset", "mnist", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "notes.txt" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_empty_string_results_is_refused_up_front(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "setup.py").write_text("")
    assert cli.main(["run", "--quick", "--dataset", "mnist", "--results", ""]) == 2
    assert "setup.py" in capsys.readouterr().err and (tmp_path / "setup.py").exists()


def test_a_user_file_inside_a_previous_run_is_refused_too(published, tmp_path):
    directory = _copy(published, tmp_path / "results")
    (directory / "mnist" / "my_plot.png").write_bytes(b"png")
    assert foreign_files(directory) == [directory / "mnist" / "my_plot.png"]
    with pytest.raises(ResultsDirError, match="my_plot.png"):
        _publish(directory, 93.5)
    assert (directory / "mnist" / "my_plot.png").exists() and check_manifest(directory) != []


def test_a_previous_run_and_benchmarks_are_replaceable(published, tmp_path):
    directory = _copy(published, tmp_path / "results")
    (directory / "benchmarks").mkdir()
    (directory / "benchmarks" / "timing.csv").write_text("a\n1\n")
    check_replaceable(directory)
    _publish(directory, 93.5)
    assert check_manifest(directory) == []
    assert (directory / "benchmarks" / "timing.csv").read_text() == "a\n1\n"
    assert "| 90 | 89.10 | 93.55 ± 0.64 |" in (directory / "REPORT.md").read_text()  # the new run's table


def test_a_failure_while_writing_the_manifest_leaves_the_previous_results_whole(published, tmp_path, monkeypatch):
    from prunelib.base import provenance

    directory = _copy(published, tmp_path / "results")
    before = {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(provenance, "write_manifest", broken)
    with pytest.raises(OSError, match="disk full"):
        _publish(directory, 93.5)
    after = {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    assert after == before and check_manifest(directory) == []
    assert not list(tmp_path.glob(".results.*-*"))  # no staging left behind


def test_a_repeated_row_fails_before_the_previous_results_are_touched(published, tmp_path):
    directory = _copy(published, tmp_path / "results")
    before = (directory / "manifest.json").read_bytes()
    sweep = _sweep(93.5)
    with pytest.raises(ValueError, match="repeats 1 row"):
        publish(Results(sweep=pd.concat([sweep, sweep.iloc[:1]])), ExperimentConfig.quick(), directory, command="test")
    assert (directory / "manifest.json").read_bytes() == before and check_manifest(directory) == []


@pytest.mark.slow
def test_concurrent_publishers_take_turns_and_the_manifest_matches_the_tables(tmp_path):
    directory = tmp_path / "results"
    accuracies = [90.0, 91.0, 92.0, 93.0]
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=publish_fake, args=(str(directory), a, f"run {a}")) for a in accuracies]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    assert check_manifest(directory) == []
    command = json.loads((directory / "manifest.json").read_text())["command"]
    sweep = pd.read_csv(directory / "mnist" / "sweep.csv")
    winner = float(command.split()[-1])
    weight90 = sweep[(sweep.method == "weight") & (sweep.k == 90) & (sweep.seed == 0)]["accuracy"].item()
    assert weight90 == pytest.approx(winner)  # the manifest names the run whose tables are there
    assert len(pd.read_csv(directory / "run_times.csv")) == len(accuracies)  # every run logged once
