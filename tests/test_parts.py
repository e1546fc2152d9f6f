"""The study in parts: one registry, a run of some parts publishes beside the others, the manifest
judges each part by its own code, and a killed run resumes where it stopped."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from tiny import fake_sweep
from workers import run_two_cells

from prunelib import cli
from prunelib.base import provenance
from prunelib.reporting.results import Results, publish
from prunelib.study import parts as study_parts
from prunelib.study.config import ExperimentConfig
from prunelib.study.registry import DATASET_TABLES, PARTS, TABLES, dataset_tables_for, part_of, parts_for, tables_for
from prunelib.study.tasks import study_cells

TESTS = Path(__file__).parent


def test_every_table_kind_belongs_to_exactly_one_part():
    owned = [t for part in PARTS.values() for t in part.tables]
    assert sorted(owned) == sorted([*TABLES, *DATASET_TABLES])
    assert part_of("pruning-aware") == "aware" and part_of("sweep") == "challenge"
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        part_of("nope")


def test_a_part_computes_its_tables_only():
    recovery = replace(ExperimentConfig.quick(), parts=("recovery",))
    assert tables_for(recovery, 0) == ("recovery",) and parts_for(recovery) == ("recovery",)
    names = [c.name for c in study_cells(recovery)]
    assert not [n for n in names if "sweep" in n or "sensitivity" in n or "targeted-dropout" in n]
    recipes = ExperimentConfig(parts=("recipes",))
    assert dataset_tables_for(recipes) == ("recipes",) and tables_for(recipes, 0) == ()
    assert all("recipe" in c.name for c in study_cells(recipes))
    assert parts_for(ExperimentConfig()) == tuple(PARTS)
    assert parts_for(ExperimentConfig().with_preset("challenge")) == ("challenge",)
    for bad, message in ((("nope",), "unknown part 'nope'"), (("aware", "aware"), "each part once"), ((), "once")):
        with pytest.raises(ValueError, match=message):
            ExperimentConfig(parts=bad)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--part", "nope"], "invalid choice: 'nope'"),
        (["--part", "recovery", "--preset", "full"], "give --part alone"),
        (["--part", "aware", "--no-aware"], "--part aware computes nothing"),
        (["--part", "recovery", "--dataset", "mnist"], "--part challenge --dataset mnist"),
    ],
)
def test_a_bad_part_is_refused_in_one_line_before_any_work(tmp_path, capsys, argv, message):
    results = tmp_path / "results"
    assert cli.main(["run", "--quick", *argv, "--results", str(results), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not results.exists()


def _config(*parts):
    return replace(ExperimentConfig.quick(), datasets=("mnist", "fashion-mnist"), parts=parts or None)


def _publish_part(directory: Path, sweep: pd.DataFrame, *parts: str, command: str = "test") -> None:
    config = _config(*parts)
    entries = study_parts.run_entries(config, command=command, preset=None, seconds=1.0)
    results = Results(sweep=sweep)
    publish(
        results,
        config,
        directory,
        command=command,
        run_seconds=1.0,
        parts=entries,
        combine=study_parts.combiner(results, config, entries),
    )


def _sweeps(accuracy: float = 91.0):
    sweep = fake_sweep(accuracy, seeds=(0, 1)).assign(correction="none", seconds=0.0)
    small = sweep["method"] == "retrain-small"
    return sweep[~small].reset_index(drop=True), sweep[small].reset_index(drop=True)


def test_a_part_publishes_beside_the_others_and_is_judged_by_its_own_code(tmp_path, scratch_code):
    directory = tmp_path / "results"
    challenge, small = _sweeps()
    _publish_part(directory, challenge, "challenge", command="run challenge")
    before = {p: p.read_bytes() for p in directory.glob("*/*.csv")}
    _publish_part(directory, small, "retrain-small", command="run retrain-small")
    for path, old in before.items():  # the challenge's rows stay as they were written
        assert path.read_bytes().startswith(old)
    sweep = pd.read_csv(directory / "mnist" / "sweep.csv")
    assert set(sweep["method"]) == {"weight", "unit", "global-weight", "retrain-small"}
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["parts"]["challenge/mnist"]["command"] == "run challenge"
    assert manifest["parts"]["retrain-small/mnist"]["command"] == "run retrain-small"
    assert {"cpu", "isa", "cpus"} <= set(manifest["parts"]["challenge/mnist"]["machine"])
    assert provenance.check_manifest(directory) == []
    report = (directory / "REPORT.md").read_text()
    assert "## Parts" in report and "`python -m prunelib run --part recovery --dataset mnist`" in report

    # Again, other numbers, one dataset: its rows are replaced, the other dataset's kept.
    _, again = _sweeps(50.0)
    config = replace(_config("retrain-small"), datasets=("mnist",))
    entries = study_parts.run_entries(config, command="again", preset=None, seconds=1.0)
    results = Results(sweep=again[again["dataset"] == "mnist"])
    combine = study_parts.combiner(results, config, entries)
    publish(results, config, directory, command="again", run_seconds=1.0, combine=combine)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["parts"]["retrain-small/mnist"]["command"] == "again"
    assert manifest["parts"]["retrain-small/fashion-mnist"]["command"] == "run retrain-small"
    assert len(pd.read_csv(directory / "mnist" / "sweep.csv")) == len(sweep)  # replaced, not added

    scratch_code("prunelib.study.analysis")  # retrain-small's code, not the challenge's
    problems = provenance.check_manifest(directory)
    assert len(problems) == 2 and all(p.startswith("part retrain-small/") for p in problems)
    assert "python -m prunelib run --part retrain-small --dataset mnist" in problems[0] + problems[1]


def test_a_manifest_written_before_parts_is_read_as_its_presets_parts(tmp_path):
    directory = tmp_path / "results"
    (directory / "mnist").mkdir(parents=True)
    (directory / "mnist" / "sweep.csv").write_text("a\n1\n")
    provenance.write_manifest(directory, {"preset": "challenge", "datasets": ["mnist"]}, "old run")
    assert "parts" not in json.loads((directory / "manifest.json").read_text())
    assert list(study_parts.published(directory)) == ["challenge/mnist"]
    assert provenance.check_manifest(directory, legacy=study_parts.legacy_records) == []
    assert provenance.check_manifest(directory) == []


def test_a_killed_run_computes_only_what_it_had_not_finished(tmp_path):
    """SIGTERM after the first cell: the driver ends its worker; the next run builds the second
    cell only."""
    code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); from workers import run_two_cells; "
    child = subprocess.Popen([sys.executable, "-c", code + f"run_two_cells({str(tmp_path)!r}, 120)"])
    log = tmp_path / "log"
    deadline = time.monotonic() + 120
    while "started second" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) != 0
    worker = int(log.read_text().split("started second ")[1].split()[0])
    for _ in range(50):  # the worker computing the second cell ends with the driver
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"worker {worker} outlived its killed driver")
    assert not (tmp_path / "second").exists()
    run_two_cells(str(tmp_path), 0.0)
    lines = log.read_text().splitlines()
    assert sum(line.startswith("built first") for line in lines) == 1  # not computed again
    assert sum(line.startswith("started second") for line in lines) == 2 and lines[-1] == "built second"
