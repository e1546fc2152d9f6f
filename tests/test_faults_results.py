"""Round 5 of the fault hunt, on results/ and its provenance.

Each test fails on the code before its fix: an edit of the study's own code left cached tables and
parts "current", a publisher killed mid-swap lost every earlier part at the next publish, rows no
record vouches for carried into a new manifest, a figure of rows that no longer exist kept, a
rolled-back swap leaving new folders, ``report`` breaking ``report --check`` and dropping the preset,
``--results .`` failing after the work, a user's link or empty folder deleted, a traceback from
``report --readme <folder>``.
"""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from tiny import fake_sweep

from prunelib import cli
from prunelib.base import provenance
from prunelib.reporting import figures
from prunelib.reporting import results as results_io
from prunelib.reporting.results import Results, ResultsDirError, foreign_files, publish
from prunelib.study import experiment
from prunelib.study import parts as study_parts
from prunelib.study.config import ExperimentConfig

TESTS = Path(__file__).parent


def _config(*parts, datasets=("mnist", "fashion-mnist")):
    return replace(ExperimentConfig.quick(), datasets=datasets, parts=parts or None)


def _sweeps():
    sweep = fake_sweep(91.0, seeds=(0, 1)).assign(correction="none", seconds=0.0)
    small = sweep["method"] == "retrain-small"
    return sweep[~small].reset_index(drop=True), sweep[small].reset_index(drop=True)


def _publish_part(directory, sweep, *parts, preset=None, datasets=("mnist", "fashion-mnist")):
    config = _config(*parts, datasets=datasets)
    entries = study_parts.run_entries(config, command=" ".join(parts), preset=preset, seconds=1.0)
    results = Results(sweep=sweep[sweep["dataset"].isin(datasets)].reset_index(drop=True))
    publish(
        results,
        config,
        directory,
        command=" ".join(parts),
        run_seconds=1.0,
        preset=preset,
        parts=entries,
        combine=study_parts.combiner(results, config, entries),
    )


@pytest.fixture
def two_parts(tmp_path):
    directory = tmp_path / "results"
    challenge, small = _sweeps()
    _publish_part(directory, challenge, "challenge")
    _publish_part(directory, small, "retrain-small")
    return directory


def _methods(directory, dataset="mnist"):
    return set(pd.read_csv(directory / dataset / "sweep.csv")["method"])


# --- the study's own code --------------------------------------------------------------------------


def test_an_edit_of_how_a_table_is_computed_recomputes_it_and_stales_every_part(two_parts, tmp_path, scratch_code):
    calls = []

    def compute():
        calls.append(1)
        return fake_sweep(91.0, seeds=(0,)).assign(correction="none", seconds=0.0)

    for _ in range(2):
        experiment.cached_table("sweep", {"dataset": "mnist"}, compute, cache=tmp_path / "cache", retrain=False)
    assert len(calls) == 1
    assert provenance.check_manifest(two_parts) == []
    scratch_code("prunelib.study.registry")  # where the tables' compute functions live
    experiment.cached_table("sweep", {"dataset": "mnist"}, compute, cache=tmp_path / "cache", retrain=False)
    assert len(calls) == 2
    problems = provenance.check_manifest(two_parts)
    assert len(problems) == 4 and all("prunelib.study.registry" in p for p in problems)


# --- publishing -------------------------------------------------------------------------------------

_CHILD = """
import os, sys
from pathlib import Path
from prunelib.reporting import results as R
import test_faults_results as t

where, directory = sys.argv[1], Path(sys.argv[2])
real_replace = os.replace
moved_in = []

def dying(src, dst):
    src, dst = Path(src), Path(dst)
    if where == "out" and ".old-" in dst.parent.name and dst.name == "mnist":
        real_replace(src, dst)
        os._exit(9)  # SIGKILL, out of memory, power loss: no clean-up runs
    if where in ("in", "restore") and dst.parent == directory and ".staging-" in src.parent.name:
        if moved_in:
            os._exit(9)
        moved_in.append(dst)
    if where == "restore" and ".old-" in src.parent.name and dst.parent == directory:
        real_replace(src, dst)
        os._exit(9)  # the next publisher, killed while it undoes the first one's swap
    if where == "done" and ".discard-" in dst.name:
        os._exit(9)  # the swap complete, its trash not deleted yet
    if where == "deleting" and ".discard-" in dst.name:
        real_replace(src, dst)
        os._exit(9)
    real_replace(src, dst)

R.os.replace = dying
challenge, small = t._sweeps()
t._publish_part(directory, challenge, "challenge")
"""


def _child(where, directory):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    child = subprocess.run([sys.executable, "-c", _CHILD, where, str(directory)], env=env, capture_output=True)
    assert child.returncode == 9, child.stderr.decode()[-2000:]


@pytest.mark.parametrize("where", ["out", "in", "restore", "done", "deleting"])
def test_a_publisher_killed_in_the_swap_loses_nothing(two_parts, where):
    before = (two_parts / "mnist" / "sweep.csv").read_text()
    if where == "restore":
        _child("in", two_parts)  # killed as its entries move in; the next one killed undoing that
    _child(where, two_parts)
    challenge, _ = _sweeps()
    _publish_part(two_parts, challenge, "challenge")  # the next publisher, under the lock, finds the trash
    assert sorted(study_parts.published(two_parts)) == sorted(
        f"{p}/{d}" for p in ("challenge", "retrain-small") for d in ("mnist", "fashion-mnist")
    )
    assert provenance.check_manifest(two_parts) == []
    small = pd.read_csv(two_parts / "mnist" / "sweep.csv").query("method == 'retrain-small'")
    assert before.count("retrain-small") == len(small) > 0
    assert not [p.name for p in two_parts.parent.iterdir() if p.name.startswith(".results.") and "lock" not in p.name]


def test_a_failed_swap_removes_the_entries_new_to_it(tmp_path, monkeypatch):
    directory = tmp_path / "results"
    challenge, _ = _sweeps()
    _publish_part(directory, challenge, "challenge", datasets=("mnist",))
    before = {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    real = os.replace

    def failing(src, dst):
        if ".staging-" in Path(src).parent.name and (directory / "fashion-mnist").exists():
            raise KeyboardInterrupt  # Ctrl-C once the new dataset has moved in
        return real(src, dst)

    monkeypatch.setattr(results_io.os, "replace", failing)
    with pytest.raises(KeyboardInterrupt):
        _publish_part(directory, challenge, "challenge")
    monkeypatch.setattr(results_io.os, "replace", real)
    after = {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    assert after == before and not (directory / "fashion-mnist").exists()


def test_rows_no_record_vouches_for_are_refused_under_the_lock_too(two_parts):
    (two_parts / "manifest.json").write_text('{"damaged')
    before = {p.relative_to(two_parts): p.read_bytes() for p in two_parts.rglob("*") if p.is_file()}
    challenge, _ = _sweeps()
    with pytest.raises(ValueError, match="rows of part (challenge|retrain-small) for .* no record of"):
        _publish_part(two_parts, challenge, "challenge", datasets=("mnist",))  # past the check before the run
    assert {p.relative_to(two_parts): p.read_bytes() for p in two_parts.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("manifest", ["damaged", "before parts"])
def test_a_part_run_beside_rows_without_a_record_is_refused_before_any_work(two_parts, manifest):
    if manifest == "damaged":
        (two_parts / "manifest.json").write_text('{"damaged')
    else:  # what the Python API wrote before parts, without a preset: its records say challenge only
        provenance.write_manifest(two_parts, {"preset": None, "datasets": ["mnist", "fashion-mnist"]}, "api")
    config = _config("challenge", datasets=("mnist",))
    with pytest.raises(ValueError, match=r"rows of part (challenge|retrain-small) for .* no record of"):
        study_parts.check_prerequisites(config, two_parts)
    study_parts.check_prerequisites(_config(*study_parts.PARTS), two_parts)  # replacing them all: fine


def test_a_figure_of_rows_that_are_gone_goes_with_them(tmp_path):
    directory = tmp_path / "results"
    challenge, _ = _sweeps()
    _publish_part(directory, challenge, "challenge")
    assert (directory / "mnist" / figures.BASELINES).exists()
    without = challenge[challenge["method"] != "global-weight"].reset_index(drop=True)
    _publish_part(directory, without, "challenge")  # --no-baselines
    assert not (directory / "mnist" / figures.BASELINES).exists()
    assert figures.BASELINES not in (directory / "REPORT.md").read_text()
    assert provenance.check_manifest(directory) == []


# --- the folder ---------------------------------------------------------------------------------------


def _fill(tag, datasets=("mnist",)):
    def fill(stage):
        (stage / "manifest.json").write_text(tag)
        for d in datasets:
            (stage / d).mkdir()
            (stage / d / "sweep.csv").write_text(tag)

    return fill


def _contents(directory):
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


def _killed_swap(directory, tag, datasets):
    """A publisher of ``tag`` into ``directory`` killed as its entries move in (its trash left)."""
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from prunelib.reporting import results as R\n"
        "import test_faults_results as t\n"
        "real = os.replace\n"
        "def dying(src, dst):\n"
        "    real(src, dst)\n"
        "    if '.staging-' in Path(src).parent.name:\n"
        "        os._exit(9)\n"
        "R.os.replace = dying\n"
        f"R._stage_and_swap(Path(sys.argv[1]), t._fill({tag!r}, {datasets!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    child = subprocess.run([sys.executable, "-c", code, str(directory)], env=env, capture_output=True)
    assert child.returncode == 9, child.stderr.decode()[-2000:]


@pytest.mark.parametrize("name", ["results[v2]", "results.old-1"])
def test_a_folder_finds_its_own_trash_and_no_other(tmp_path, name):
    theirs, ours = tmp_path / name, tmp_path / "results"
    results_io._stage_and_swap(theirs, _fill("theirs before", ("mnist", "fashion-mnist")))
    results_io._stage_and_swap(ours, _fill("ours before"))
    _killed_swap(theirs, "theirs new", ("mnist", "fashion-mnist"))
    results_io._stage_and_swap(ours, _fill("ours new"))  # another folder's trash is not ours to undo
    assert set(_contents(ours).values()) == {"ours new"}
    results_io._stage_and_swap(theirs, _fill("theirs next", ("mnist", "fashion-mnist")))
    assert set(_contents(theirs).values()) == {"theirs next"}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted(
        [f".{name}.lock", ".results.lock"]
    )


def test_a_previous_run_moved_away_with_part_of_it_in_a_trash_comes_back_whole(tmp_path):
    directory = tmp_path / "results"
    results_io._stage_and_swap(directory, _fill("before", ("mnist", "fashion-mnist")))
    _killed_swap(directory, "new", ("mnist", "fashion-mnist"))
    directory.rename(tmp_path / "results.broken")  # the user moves the half-swapped folder aside
    seen = {}

    def fill(stage):  # as a part run's combine does: reads the previous results under the lock
        seen.update(_contents(directory))
        _fill("next")(stage)

    results_io._stage_and_swap(directory, fill)
    assert seen == {"fashion-mnist/sweep.csv": "before", "manifest.json": "before", "mnist/sweep.csv": "before"}


def test_a_trash_without_a_journal_that_holds_entries_is_refused_not_deleted(tmp_path):
    directory = tmp_path / "results"
    results_io._stage_and_swap(directory, _fill("before"))
    trash = tmp_path / ".results.old-123"
    (trash / "mnist").mkdir(parents=True)
    (trash / "mnist" / "sweep.csv").write_text("previous")
    with pytest.raises(ResultsDirError, match="no readable journal: they are previous results"):
        results_io._stage_and_swap(directory, _fill("new"))
    assert (trash / "mnist" / "sweep.csv").read_text() == "previous"


def test_a_users_file_that_appears_while_the_stage_fills_is_kept(tmp_path):
    directory = tmp_path / "results"
    results_io._stage_and_swap(directory, _fill("before"))

    def fill(stage):
        _fill("new")(stage)
        (directory / "notes.txt").write_text("mine")

    with pytest.raises(ResultsDirError, match="notes.txt"):
        results_io._stage_and_swap(directory, fill)
    assert (directory / "notes.txt").read_text() == "mine" and _contents(directory)["manifest.json"] == "before"


def test_results_dot_publishes_with_its_lock_beside_the_folder(tmp_path, monkeypatch):
    folder = tmp_path / "here"
    folder.mkdir()
    monkeypatch.chdir(folder)
    challenge, small = _sweeps()
    _publish_part(Path("."), challenge, "challenge")
    _publish_part(Path("."), small, "retrain-small")  # was refused: its own '..lock' inside
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    assert (tmp_path / ".here.lock").exists() and provenance.check_manifest(folder) == []


def test_a_users_link_and_empty_folder_are_foreign_and_kept(two_parts, tmp_path):
    elsewhere = tmp_path / "photos"
    elsewhere.mkdir()
    (two_parts / "photos").symlink_to(elsewhere, target_is_directory=True)
    (two_parts / "drafts").mkdir()
    assert [p.name for p in foreign_files(two_parts)] == ["drafts", "photos"]
    challenge, _ = _sweeps()
    with pytest.raises(ResultsDirError, match="drafts"):
        _publish_part(two_parts, challenge, "challenge")
    assert (two_parts / "photos").is_symlink() and (two_parts / "drafts").is_dir()


# --- the command line ------------------------------------------------------------------------------


def test_report_keeps_the_results_current_and_names_the_preset(tmp_path, capsys):
    directory = tmp_path / "results"
    challenge, _ = _sweeps()
    _publish_part(directory, challenge, "challenge", preset="challenge")
    written = (directory / "REPORT.md").read_text()
    assert "challenge preset" in written
    assert cli.main(["report", "--results", str(directory)]) == 0
    assert (directory / "REPORT.md").read_text() == written
    assert cli.main(["report", "--check", "--results", str(directory)]) == 0
    assert "current for the checked-out code" in capsys.readouterr().out


def test_report_readme_that_is_a_folder_is_one_line(two_parts, tmp_path, capsys):
    assert cli.main(["report", "--results", str(two_parts), "--readme", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")


def test_the_manifest_records_the_studys_own_code_for_every_part(two_parts):
    manifest = json.loads((two_parts / "manifest.json").read_text())
    for entry in manifest["parts"].values():
        assert {"prunelib.study.registry", "prunelib.study.experiment"} <= set(entry["code"])
