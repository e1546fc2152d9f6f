"""A run's results on disk: tidy tables per dataset, their figures, the run log, the report and the
manifest, written as a whole or not at all.

Nothing here imports a deep-learning framework: a driver that computed its tables in worker
processes publishes them without loading TensorFlow.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from prunelib.base.paths import atomic_write
from prunelib.reporting import figures, tables

if TYPE_CHECKING:  # the study's config is only read (asdict) here
    from prunelib.study.config import ExperimentConfig

TABLES = ("sweep", "sensitivity", "recovery", "recipes", "recipe_layers")


@dataclass
class Results:
    """Tidy tables of a run (all datasets together) and the seconds each phase took."""

    sweep: pd.DataFrame
    sensitivity: pd.DataFrame = field(default_factory=pd.DataFrame)
    recovery: pd.DataFrame = field(default_factory=pd.DataFrame)
    recipes: pd.DataFrame = field(default_factory=pd.DataFrame)
    recipe_layers: pd.DataFrame = field(default_factory=pd.DataFrame)
    distributions: dict[str, pd.DataFrame] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _write_tables(results: Results, out_dir: Path) -> None:
    for name in TABLES:
        table = getattr(results, name)
        if table.empty:
            continue
        for dataset, df in table.groupby("dataset", sort=False):
            out = out_dir / str(dataset)
            out.mkdir(parents=True, exist_ok=True)
            df.to_csv(out / f"{name}.csv", index=False, float_format="%.4f")


KEPT_ACROSS_RUNS = ("benchmarks", "run_times.csv")
"""Entries of ``results/`` a run does not replace: benchmark outputs (written by ``benchmarks/``)
and the log of run times (appended to)."""

PRODUCTS = ("REPORT.md", "report.docx", "manifest.json", "run_times.csv")
"""Top-level files a run writes besides ``<dataset>/`` folders of tables and figures."""


class ResultsDirError(ValueError):
    """A results directory holds files that no prunelib run wrote, so it will not be replaced."""


def _is_product(rel: Path) -> bool:
    """Whether a path relative to a results directory is one a run (or a benchmark) writes."""
    from prunelib.data import DATASETS

    parts = rel.parts
    if parts[0] in KEPT_ACROSS_RUNS:
        return True
    if len(parts) == 1:
        return parts[0] in PRODUCTS
    return (
        len(parts) == 2
        and parts[0] in DATASETS
        and (parts[1] in {f"{name}.csv" for name in TABLES} or parts[1] in figures.FILE_NAMES)
    )


def _is_product_dir(rel: Path) -> bool:
    """Whether a folder relative to a results directory is one a run (or a benchmark) writes."""
    from prunelib.data import DATASETS

    return rel.parts[0] in KEPT_ACROSS_RUNS or (len(rel.parts) == 1 and rel.parts[0] in DATASETS)


def foreign_files(results_dir: str | os.PathLike) -> list[Path]:
    """Entries under ``results_dir`` that a run would not have written (empty: safe to replace).

    A run writes its tables, figures, report, manifest and run log; ``benchmarks/`` belongs to the
    benchmark scripts. Anything else (a user's notes, a package's source, a folder of theirs, empty
    or not, a symbolic link) is foreign.
    """
    results_dir = Path(results_dir)
    if not results_dir.exists():
        return []
    if not results_dir.is_dir():
        raise ResultsDirError(f"{results_dir} is a file, not a directory; choose another results directory")
    foreign = []
    for path in results_dir.rglob("*"):
        rel = path.relative_to(results_dir)
        if path.is_symlink():  # no run writes one; a link to a folder of the user's is theirs
            product = rel.parts[0] in KEPT_ACROSS_RUNS
        elif path.is_dir():
            product = _is_product_dir(rel)
        else:
            product = _is_product(rel)
        if not product:
            foreign.append(path)
    return sorted(foreign)


def check_replaceable(results_dir: str | os.PathLike) -> None:
    """Refuse a results directory that holds anything a run did not write.

    Raises:
        ResultsDirError: naming the first foreign files and the fix.
    """
    foreign = foreign_files(results_dir)
    if foreign:
        names = ", ".join(str(p) for p in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ResultsDirError(
            f"{results_dir} holds files no prunelib run wrote ({names}); "
            "a run replaces its results directory, so give an empty or new one"
        )


@contextmanager
def _publish_lock(results_dir: Path) -> Iterator[None]:
    """One publisher at a time per results directory (others wait their turn)."""
    import fcntl

    results_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(results_dir.parent / f".{results_dir.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_JOURNAL = ".journal.json"
"""In a swap's trash folder, written before anything moves: the names moving out (the previous
entries the new ones replace), the names moving in, and the phase (``out``, ``in``, ``done``), so
that whoever finds the trash knows what to undo, and can undo it again if it is killed too."""


def _sync(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a machine taken away must not reorder them)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_journal(trash: Path, out: list[str], incoming: list[str], phase: str) -> None:
    import json

    tmp = trash / f"{_JOURNAL}.tmp"
    with open(tmp, "w") as handle:
        handle.write(json.dumps([out, incoming, phase]))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, trash / _JOURNAL)
    _sync(trash)


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _siblings(results_dir: Path, kind: str) -> list[Path]:
    """``results_dir``'s own ``.<name>.<kind>-<pid>`` folders (exactly: not another folder's whose
    name begins with this one's, nor a glob pattern made of its name)."""
    pattern = re.compile(re.escape(f".{results_dir.name}.{kind}-") + r"\d+")
    return sorted(p for p in results_dir.parent.iterdir() if pattern.fullmatch(p.name))


def _restore(trash: Path, results_dir: Path) -> None:
    """Put the previous results back from a swap's ``trash`` (an interrupted swap of this process, or
    that of a publisher killed in the middle of it, found under the lock by the next), unless the
    swap was complete. Safe to run again after it is itself killed: an entry moving in is new unless
    a previous one of its name moved out and is back already (no longer in the trash).

    Raises:
        ResultsDirError: a trash whose journal cannot be read but which holds entries (they are the
            previous results: nothing is deleted, the user decides).
    """
    import json

    try:
        out, incoming, phase = json.loads((trash / _JOURNAL).read_text())
    except (OSError, ValueError):
        held = [p.name for p in trash.iterdir() if not p.name.startswith(".")]
        if not held:
            return  # killed before the journal: nothing had moved
        raise ResultsDirError(
            f"{trash} holds {', '.join(held[:3])} from an interrupted publish of {results_dir} and no readable "
            f"journal: they are previous results; move them back into {results_dir} or delete {trash}"
        ) from None
    if phase == "done":
        return
    if phase == "in":
        for name in incoming:
            if name not in out or (trash / name).exists():
                _remove(results_dir / name)
    for name in out:
        if (trash / name).exists() or (trash / name).is_symlink():
            os.replace(trash / name, results_dir / name)
    _sync(results_dir)


def _discard(trash: Path) -> None:
    """Delete a swap's trash: renamed first, in one step, so that a deletion killed half-way never
    leaves a trash that looks like an unfinished swap (whatever order the file system lists it in)."""
    import shutil

    head, _, pid = trash.name.rpartition(".old-")
    gone = trash.with_name(f"{head}.discard-{pid}")
    shutil.rmtree(gone, ignore_errors=True)
    os.replace(trash, gone)
    shutil.rmtree(gone, ignore_errors=True)


def _swap_in(stage: Path, results_dir: Path, trash: Path) -> None:
    """Replace ``results_dir``'s entries by ``stage``'s; on any failure put the previous ones back.

    Every step is a rename recorded in the trash's journal, so a publisher killed at any point
    (SIGKILL, the machine taken away) leaves what the next one undoes (:func:`_restore`) before it
    starts; a swap that completed is only deleted."""
    check_replaceable(results_dir)  # again: a file of the user's may have appeared while the stage filled
    trash.mkdir()
    incoming = sorted(p.name for p in stage.iterdir())
    out = sorted(p.name for p in results_dir.iterdir() if p.name not in KEPT_ACROSS_RUNS or p.name in incoming)
    _write_journal(trash, out, incoming, "out")
    try:
        for name in out:
            os.replace(results_dir / name, trash / name)
        _sync(trash)
        _write_journal(trash, out, incoming, "in")
        for name in incoming:
            os.replace(stage / name, results_dir / name)
        _sync(results_dir)
        _write_journal(trash, out, incoming, "done")
    except BaseException:  # put the previous results back rather than leave a mixture
        _restore(trash, results_dir)  # if this is interrupted too, the trash stays for the next publisher
        _discard(trash)
        raise
    _discard(trash)


def _stage_and_swap(results_dir: str | os.PathLike, fill: Callable[[Path], None]) -> list[Path]:
    """Have ``fill`` write a complete results directory into a staging folder, then swap it in.

    Holds the directory's publish lock throughout and checks, under it, that the directory holds
    nothing a run did not write; a failure at any point leaves the previous results whole.
    """
    import shutil

    given = Path(results_dir)
    # the lock, stage and trash go beside the folder itself ('.' has no name; a link's target
    # may be on another file system, where a rename cannot reach)
    results_dir = given.resolve()
    if results_dir.exists() and not results_dir.is_dir():
        raise ResultsDirError(f"{results_dir} is a file, not a directory; choose another results directory")
    with _publish_lock(results_dir):
        for leftover in _siblings(results_dir, "staging") + _siblings(results_dir, "discard"):
            shutil.rmtree(leftover, ignore_errors=True)  # a killed publisher's (we hold the lock)
        for trash in _siblings(results_dir, "old"):  # a killed publisher's swap: undo it unless complete
            results_dir.mkdir(parents=True, exist_ok=True)  # moved away meanwhile: the trash holds part of it
            _restore(trash, results_dir)
            _discard(trash)
        check_replaceable(results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        stage = results_dir.parent / f".{results_dir.name}.staging-{os.getpid()}"
        trash = results_dir.parent / f".{results_dir.name}.old-{os.getpid()}"
        try:
            stage.mkdir()
            fill(stage)
            _swap_in(stage, results_dir, trash)
        finally:
            shutil.rmtree(stage, ignore_errors=True)  # what had not moved in: new, never needed back
    return sorted(p for p in given.rglob("*") if p.is_file())


def _fill(
    results: Results,
    results_dir: Path,
    stage: Path,
    *,
    run_seconds: float | None,
    command: str | None,
    figure_cache: str | os.PathLike | None,
) -> None:
    import shutil

    _write_tables(results, stage)
    figures.save_all(results, stage, cache=figure_cache)
    if run_seconds is not None:
        from prunelib.reporting.report import save_run_times

        if (results_dir / "run_times.csv").is_file():
            shutil.copy(results_dir / "run_times.csv", stage / "run_times.csv")
        save_run_times(results.seconds, run_seconds, command or "", stage)


def save_results(
    results: Results,
    results_dir: str | os.PathLike = "results",
    *,
    run_seconds: float | None = None,
    command: str | None = None,
    figure_cache: str | os.PathLike | None = None,
) -> list[Path]:
    """Write every table as ``<results>/<dataset>/<table>.csv``, draw the figures, log the run.

    ``figure_cache``: reuse figures drawn before from identical tables
    (:func:`prunelib.reporting.figures.save_all`).

    Everything is written to a staging directory first and then replaces ``results_dir``'s
    contents as a whole (all but :data:`KEPT_ACROSS_RUNS`), so a report never mixes two runs
    and a run that fails half-way leaves the previous results in place. A directory holding
    files no run wrote is refused (:class:`ResultsDirError`), never emptied.
    """
    return _stage_and_swap(
        results_dir,
        lambda stage: _fill(
            results, Path(results_dir), stage, run_seconds=run_seconds, command=command, figure_cache=figure_cache
        ),
    )


def load_results(results_dir: str | os.PathLike = "results") -> Results:
    """Read back and validate the tables :func:`save_results` wrote (missing ones come back empty).

    Raises:
        FileNotFoundError: there is no ``*/sweep.csv`` (nothing has run into ``results_dir``).
        prunelib.reporting.tables.TableError: a table is damaged (the message names the file).
    """
    from prunelib.data import DATASETS

    order = {name: i for i, name in enumerate(DATASETS)}  # mnist first, as run_experiment writes
    found = {name: tables.read_all(results_dir, name, order) for name in TABLES}
    if found["sweep"].empty:
        raise FileNotFoundError(f"no */sweep.csv under {results_dir}; run `python -m prunelib run` first")
    return Results(**found)


def save_recipes(curves: pd.DataFrame, layers: pd.DataFrame, results_dir: str | os.PathLike = "results") -> list[Path]:
    """Write ``recipes.csv``, ``recipe_layers.csv`` and ``recipes.png`` per dataset."""
    written = []
    for dataset, df in curves.groupby("dataset", sort=False):
        out = Path(results_dir) / str(dataset)
        out.mkdir(parents=True, exist_ok=True)
        for name, table in (("recipes", df), ("recipe_layers", layers[layers["dataset"] == dataset])):
            atomic_write(out / f"{name}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False, float_format="%.4f"))
            written.append(out / f"{name}.csv")
        written.append(figures.save(figures.recipes(df), out / figures.RECIPES))
    return written


def publish(
    results: Results,
    config: ExperimentConfig,
    results_dir: str | os.PathLike = "results",
    *,
    command: str,
    run_seconds: float | None = None,
    figure_cache: str | os.PathLike | None = None,
    preset: str | None = None,
    parts: dict[str, dict] | None = None,
    parts_table: pd.DataFrame | None = None,
    combine: Callable[[Path], tuple[Results, dict[str, dict], pd.DataFrame | None]] | None = None,
) -> list[Path]:
    """Save the tables and figures, write the report from what was saved, then the manifest.

    What both ``python -m prunelib run`` and the notebook call, so ``results/`` always ends with a
    manifest that matches its files. All of it is staged and swapped in as one step under the
    directory's lock: a failure anywhere leaves the previous results whole, and two publishers
    into one directory take turns. ``preset`` (``"challenge"``, ``"full"``; None = not a preset)
    is named in the report and recorded in the manifest's config.

    Args:
        parts: each part's provenance (:func:`prunelib.base.provenance.part_record`), recorded in
            the manifest; None writes a manifest without parts.
        parts_table: the report's list of parts, present and missing (None: no such section).
        combine: a run of some parts: called with ``results_dir`` under its lock, returns the
            tables, parts and parts table to publish (the previous results' other parts with this
            run's); the previous figures this publish does not draw (the weight distributions,
            drawn from a model) are kept.
    """
    from prunelib.base import provenance
    from prunelib.reporting import report

    def fill(stage: Path) -> None:
        import shutil

        tables_, parts_, table_ = combine(Path(results_dir)) if combine else (results, parts, parts_table)
        _fill(tables_, Path(results_dir), stage, run_seconds=run_seconds, command=command, figure_cache=figure_cache)
        if combine is not None:
            # The one figure drawn from a model rather than the tables (the weight distributions)
            # is not redrawn by a run of other parts: the previous one stays, for the datasets whose
            # distributions this run has not; every other figure is drawn from the tables or goes.
            held = set(tables_.sweep["dataset"]) if not tables_.sweep.empty else set()
            for old in Path(results_dir).glob(f"*/{figures.DISTRIBUTIONS}"):
                new = stage / old.relative_to(results_dir)
                dataset = old.parent.name
                if old.is_file() and dataset in held and dataset not in tables_.distributions and not new.exists():
                    new.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(old, new)
        report.write_report(load_results(stage), stage, preset=preset, parts=table_)
        provenance.write_manifest(stage, {**asdict(config), "preset": preset}, command, parts=parts_)

    _stage_and_swap(results_dir, fill)
    return sorted(p for p in Path(results_dir).rglob("*") if p.is_file() and p.parts[-2:-1] != ("benchmarks",))
