"""``python -m prunelib``: reproduce the results and rebuild the report without the notebook.

Every expected error (a bad option, missing data, a damaged table) ends in one line on stderr
and exit status 2, before any work starts where it can be checked up front.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

from prunelib.base.paths import cache_dir, home
from prunelib.base.provenance import MANIFEST
from prunelib.base.quiet import quiet_framework_start
from prunelib.base.strategies import RECOVERY
from prunelib.data import DATASETS, DataError
from prunelib.models.config import Recipe, RecoveryConfig
from prunelib.study.config import DEFAULT_KS, PRESETS, RECIPE_STUDY, ExperimentConfig
from prunelib.study.registry import PARTS

RECOVERY_CHOICES = list(RECOVERY)


class UsageError(ValueError):
    """A command-line mistake; reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _positive(name: str, most: int = 10**6):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text[:40]!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {value}")
        if value > most:  # a typo's huge count would otherwise fill memory before any error
            raise argparse.ArgumentTypeError(f"{name} must be at most {most}, got {str(value)[:40]}")
        return value

    return parse


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be a whole number, got {text[:40]!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"--seed must be in [0, 2**32), got {str(value)[:40]}")
    return value


def _real(name: str, positive: bool):
    """A finite float (positive, or not negative): inf and nan are refused here, not deep in a run."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text[:40]!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(
                f"{name} ({text[:40]}) must be {'positive' if positive else 'not negative'} and finite"
            )
        return value

    return parse


def _check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Fail within ``timeout`` seconds, in one line, when nothing answers at a Ray ``host:port``.

    ``ray.init`` waits minutes on an address where no cluster listens; 'auto' and addresses
    without a port are left to Ray.
    """
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return
    if not 0 < int(port) < 65536:
        raise UsageError(f"--ray {address}: port {port} is not in 1..65535")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as err:
        raise UsageError(
            f"--ray {address}: nothing answers there ({err.strerror or type(err).__name__}); "
            "start the cluster (`ray start --head`) or check the address"
        ) from None


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"k must be a percentage in [0, 100], got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"k must be a percentage in [0, 100], got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m prunelib", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="train, prune, evaluate; write results/ and the report",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train (or load cached) models, run the recipe study, every "
        "sweep, baseline and recovery strategy, write tidy tables and "
        "figures under --results, then rebuild the report and manifest.",
    )
    run.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=None,
        help="challenge: only the challenge's study (both datasets, 5 seeds, weight and "
        "unit pruning one-shot and + lstsq, global pruning; no recipe study, "
        "retrain-from-scratch, sensitivity, recovery or targeted dropout; writes to "
        "a scratch directory unless --results is given); full (the default without --part): "
        "everything; a preset run replaces the results directory",
    )
    run.add_argument(
        "--part",
        nargs="+",
        choices=list(PARTS),
        default=None,
        metavar="PART",
        help="compute only these parts of the study (" + ", ".join(PARTS) + ") and publish them "
        "into --results (default results) beside the parts already there, replacing only their "
        "own rows of the datasets run; the other parts' records and tables stay",
    )
    run.add_argument("--dataset", nargs="+", choices=list(DATASETS), default=list(DATASETS), help="datasets to run")
    run.add_argument(
        "--seeds",
        type=_positive("--seeds", 1000),
        default=None,
        help="number of seeds (0 .. N-1) for every sweep (default 5; --quick: 1)",
    )
    run.add_argument(
        "--epochs",
        type=_positive("--epochs", 100_000),
        default=None,
        help=f"training epochs per model (default {Recipe.epochs}; --quick: 1)",
    )
    run.add_argument(
        "--methods",
        nargs="+",
        default=["weight", "unit"],
        choices=["weight", "unit"],
        help="the challenge's pruning methods",
    )
    run.add_argument(
        "--ks",
        type=_percent,
        nargs="+",
        default=None,
        help=f"pruning percentages (default {' '.join(f'{k:g}' for k in DEFAULT_KS)})",
    )
    run.add_argument(
        "--no-lstsq", action="store_true", help="skip the least-squares reconstruction of the one-shot survivors"
    )
    run.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip global magnitude pruning and the retrain-from-scratch baseline",
    )
    run.add_argument("--no-sensitivity", action="store_true", help="skip one-layer-at-a-time pruning")
    run.add_argument("--no-recipes", action="store_true", help="skip the recipe study")
    run.add_argument(
        "--recovery",
        nargs="*",
        default=RECOVERY_CHOICES,
        choices=RECOVERY_CHOICES,
        help="recovery strategies (give none to skip recovery)",
    )
    run.add_argument(
        "--recovery-epochs",
        type=_positive("--recovery-epochs", 100_000),
        default=None,
        help=f"fine-tuning / gradual pruning epochs (default {RecoveryConfig().recipe.epochs})",
    )
    run.add_argument(
        "--recovery-ks",
        type=_percent,
        nargs="+",
        default=None,
        help="pruning percentages for recovery (default 90 95 99; --quick: 90)",
    )
    run.add_argument(
        "--recovery-seeds",
        type=_positive("--recovery-seeds", 1000),
        default=1,
        help="number of seeds (0 .. N-1) that also run recovery and pruning-aware training",
    )
    run.add_argument("--no-aware", action="store_true", help="skip targeted-dropout training")
    run.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 epoch on 2,000 images, small grids; explicit options still "
        "apply; writes to a scratch directory unless --results is given",
    )
    run.add_argument(
        "--retrain", action="store_true", help="ignore cached models and train again (runs in this process)"
    )
    run.add_argument(
        "--in-process",
        action="store_true",
        help="compute everything in this process instead of in short-lived worker "
        "processes (less start-up time, but memory grows with every model trained)",
    )
    run.add_argument(
        "--workers",
        type=_positive("--workers", 1024),
        default=None,
        metavar="N",
        help="worker processes computing cells at the same time, as far as the CPUs the "
        "cells declare fit in N (a training 1, a table 2; default 1); peak memory "
        "grows with N; the tables are the same",
    )
    run.add_argument(
        "--memory-budget",
        type=_real("--memory-budget", positive=True),
        default=None,
        metavar="GB",
        help="replace a worker process once it holds more than this many GB (default 1.5)",
    )
    run.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run the study's cells as Ray tasks: on the cluster at ADDRESS (or 'auto', "
        "or $RAY_ADDRESS), or without ADDRESS on a local runtime",
    )
    run.add_argument(
        "--ray-cpus", type=_real("--ray-cpus", positive=True), default=1.0, help="CPUs each Ray training cell declares"
    )
    run.add_argument(
        "--ray-table-cpus",
        type=_real("--ray-table-cpus", positive=True),
        default=2.0,
        help="CPUs each Ray table cell declares (their BLAS keeps every core of a small node busy)",
    )
    run.add_argument(
        "--ray-gpus", type=_real("--ray-gpus", positive=False), default=0.0, help="GPUs each training cell declares"
    )
    run.add_argument(
        "--results", type=Path, default=None, help="output directory (default results; --quick: a scratch directory)"
    )
    run.add_argument("--data-dir", type=Path, default=None, help="dataset directory (default: cache)")
    run.add_argument("--cache", type=Path, default=None, help="model cache directory")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")

    rec = sub.add_parser(
        "recipes",
        help="the recipe study: one-shot curves per training recipe",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train one model per named recipe (cached), sweep one-shot weight "
        "and unit pruning, measure drift from initialization and norm "
        "concentration; write recipes.csv, recipe_layers.csv, recipes.png.",
    )
    rec.add_argument("--dataset", nargs="+", choices=list(DATASETS), default=list(DATASETS), help="datasets")
    rec.add_argument(
        "--recipes",
        nargs="+",
        default=None,
        metavar="NAME",
        help="recipes to run on every dataset (default: the study's list per dataset)",
    )
    rec.add_argument("--seed", type=_seed, default=0, help="training seed")
    rec.add_argument("--retrain", action="store_true", help="ignore cached models and tables")
    rec.add_argument(
        "--results",
        type=Path,
        default=None,
        help="output directory, not one of published results (default: a scratch directory; "
        "results/' recipe tables are the recipes part: run --part recipes)",
    )
    rec.add_argument("--data-dir", type=Path, default=None, help="dataset directory (default: cache)")
    rec.add_argument("--cache", type=Path, default=None, help="model cache directory")
    rec.add_argument("--no-progress", action="store_true", help="hide progress bars")

    report = sub.add_parser(
        "report",
        help="rebuild REPORT.md and report.docx from the result tables",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    report.add_argument("--results", type=Path, default=Path("results"), help="results directory")
    report.add_argument(
        "--check",
        action="store_true",
        help="only check that results/ was produced by the checked-out code "
        "(manifest.json); exit 1 and list the problems if not",
    )
    report.add_argument(
        "--compare",
        type=Path,
        default=None,
        metavar="OTHER_DIR",
        help="compare OTHER_DIR's tables with --results': per (dataset, method, "
        "correction, k) a Welch test over seeds, naming the points that disagree "
        "at p < 0.05, and whether the tables are bit-identical; exit 1 if any "
        "point disagrees",
    )
    report.add_argument(
        "--readme",
        type=Path,
        default=None,
        metavar="README",
        help="rewrite README's generated headline rows (one per dataset) from --results' sweep tables",
    )
    return parser


def _unique(values, option: str):
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise UsageError(f"{option} lists {seen[0]!r} more than once; give each value once")
    return tuple(values)


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The :class:`ExperimentConfig` that ``run``'s options describe.

    ``--quick`` sets the smoke-run defaults; any option given explicitly overrides them;
    ``--preset challenge`` then drops every part beyond the challenge's study; ``--part`` keeps
    the parts it names.
    """
    base = ExperimentConfig.quick() if args.quick else ExperimentConfig()
    seeds = args.seeds if args.seeds is not None else len(base.seeds)
    train = base.train.with_recipe(epochs=args.epochs) if args.epochs is not None else base.train
    rec = base.recovery.with_recipe(epochs=args.recovery_epochs) if args.recovery_epochs is not None else base.recovery
    ks = _unique(args.ks, "--ks") if args.ks is not None else base.ks
    rks = _unique(args.recovery_ks, "--recovery-ks") if args.recovery_ks is not None else base.recovery_ks
    return replace(
        base,
        datasets=_unique(args.dataset, "--dataset"),
        methods=_unique(args.methods, "--methods"),
        ks=ks,
        seeds=tuple(range(seeds)),
        train=train,
        baselines=not args.no_baselines,
        corrections=("none",) if args.no_lstsq else base.corrections,
        sensitivity=not args.no_sensitivity,
        recipes=base.recipes and not args.no_recipes,
        recovery=rec,
        recovery_strategies=_unique(args.recovery, "--recovery"),
        recovery_ks=rks,
        recovery_seeds=tuple(range(min(args.recovery_seeds, seeds))),
        aware_targets=() if args.no_aware else base.aware_targets,
        parts=_unique(args.part, "--part") if args.part else None,
    ).with_preset(args.preset or "full")


def _writable_dir(path: Path, option: str) -> Path:
    """Check up front that ``path`` is (or can become) a writable directory."""
    path = path.expanduser()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{option} {path}: {probe} is a file, not a directory; choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: {probe} is not writable; choose another path")
    return path


def default_results(preset: str | None = "full", quick: bool = False) -> Path:
    """Where a run publishes without ``--results``: ``results/`` for the full study and for a run
    of parts (``preset`` None), which join the parts already there; a quick or challenge run goes
    to a scratch directory."""
    if quick:
        return home() / "quick-results"
    return Path("results") if preset in ("full", None) else home() / f"{preset}-results"


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    # Nothing here imports TensorFlow before the cells have run in their worker processes.
    if args.ray not in (None, "local") or (args.ray == "local" and os.environ.get("RAY_ADDRESS")):
        _check_ray_address(os.environ["RAY_ADDRESS"] if args.ray == "local" else args.ray)  # fail fast
    from prunelib.study import local as study
    from prunelib.study import parts as study_parts
    from prunelib.study.registry import parts_for

    if args.part and args.preset:
        raise UsageError(
            "--part and --preset choose what to run in two ways; give --part alone (it publishes beside "
            "the other parts) or --preset alone (it replaces the results directory)"
        )
    preset = None if args.part else args.preset or "full"
    config = config_from_args(args)
    idle = [p for p in args.part or () if p not in parts_for(config)]
    if idle:
        raise UsageError(
            f"--part {idle[0]} computes nothing with these options; drop the option that turns it off "
            "(--no-baselines, --no-sensitivity, --no-recipes, --recovery without strategies, --no-aware) or the part"
        )
    results_dir = args.results or default_results(preset, args.quick)
    results_dir = _writable_dir(results_dir, "--results")
    from prunelib.reporting.results import check_replaceable

    check_replaceable(results_dir)  # a run replaces the directory: refuse one holding a user's files
    if args.part:
        study_parts.check_prerequisites(config, results_dir)
    if args.cache is not None:
        _writable_dir(args.cache, "--cache")
    if results_dir != Path("results") and args.results is None:
        print(
            f"{'quick' if args.quick else preset} run: writing to {results_dir} (pass --results to choose)",
            file=sys.stderr,
        )
    if args.ray is not None and args.retrain:
        raise UsageError(
            "--retrain cannot be combined with --ray: delete the cache directory (or the "
            "entries to recompute) instead, so every node sees the same cache"
        )
    if args.ray_cpus <= 0 or args.ray_table_cpus <= 0 or args.ray_gpus < 0:
        raise UsageError(
            f"--ray-cpus ({args.ray_cpus:g}) and --ray-table-cpus ({args.ray_table_cpus:g}) must be "
            f"positive and --ray-gpus ({args.ray_gpus:g}) not negative"
        )
    if args.memory_budget is not None and not args.memory_budget > 0:
        raise UsageError(f"--memory-budget must be a positive number of GB, got {args.memory_budget:g}")
    for flag, value in (("--memory-budget", args.memory_budget), ("--workers", args.workers)):
        if value is not None and (args.in_process or args.retrain or args.ray is not None):
            raise UsageError(f"{flag} applies to worker processes; drop it or drop --in-process / --retrain / --ray")
    t0 = time.perf_counter()
    if args.ray is not None:
        address = None if args.ray == "local" else args.ray
        from prunelib.study.on_ray import run_study_on_ray

        results, _ = run_study_on_ray(
            config,
            address=address,
            cpus=args.ray_cpus,
            gpus=args.ray_gpus,
            table_cpus=args.ray_table_cpus,
            data_dir=args.data_dir,
            cache=args.cache,
            progress=not args.no_progress,
        )
    else:
        results = study.run_study(
            config,
            retrain=args.retrain,
            data_dir=args.data_dir,
            cache=args.cache,
            isolate=not args.in_process,
            workers=args.workers or 1,
            memory_budget_gb=args.memory_budget or study.DEFAULT_MEMORY_BUDGET_GB,
            progress=not args.no_progress,
        )
    from prunelib.reporting.results import publish

    command = "python -m prunelib " + shlex.join(sys.argv[1:] if argv is None else argv)
    figure_cache = Path(args.cache or cache_dir()) / "figures"
    seconds = time.perf_counter() - t0
    entries = study_parts.run_entries(config, command=command, preset=preset, seconds=seconds)
    for path in publish(
        results,
        config,
        results_dir,
        command=command,
        run_seconds=seconds,
        figure_cache=figure_cache,
        preset=preset,
        parts=entries,
        parts_table=study_parts.parts_table(entries),
        # A run of parts joins the parts already published, under the directory's lock.
        combine=study_parts.combiner(results, config, entries) if args.part else None,
    ):
        print(f"wrote {path}")
    if preset == "challenge" or args.part:
        table = study_parts.parts_table(study_parts.published(results_dir))
        missing = table.loc[table["missing (command)"] != "-", "part"]
        if len(missing):
            print(
                f"{results_dir} lacks (some datasets of) the parts {', '.join(missing)}: `python -m prunelib "
                f"report --check --results {results_dir}` names the command of each; `make study` runs them all"
            )
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from prunelib.reporting.results import save_recipes
    from prunelib.study import recipes
    from prunelib.study.experiment import run_recipes

    names = {
        d: _unique(args.recipes, "--recipes") if args.recipes else RECIPE_STUDY[d]
        for d in _unique(args.dataset, "--dataset")
    }
    for chosen in names.values():
        for name in chosen:
            recipes.get_recipe(name)  # unknown names fail before any training
    results_dir = _writable_dir(args.results or home() / "recipes-results", "--results")
    if (results_dir / MANIFEST).exists():
        # Published results change only under their lock, part by part, with a record per part.
        raise UsageError(
            f"--results {results_dir} holds published results ({MANIFEST}); its recipe tables are the "
            "'recipes' part: `python -m prunelib run --part recipes`, or give recipes a folder of its own"
        )
    curves, layers = run_recipes(
        names,
        seed=args.seed,
        retrain=args.retrain,
        data_dir=args.data_dir,
        cache=args.cache,
        progress=not args.no_progress,
    )
    for path in save_recipes(curves, layers, results_dir):
        print(f"wrote {path}")
    print(recipes.summarize(curves).to_string(index=False, float_format="%.2f"))
    return 0


def _recorded_preset(results_dir: Path) -> str | None:
    """The preset ``results_dir``'s manifest records (None: no manifest, or not a preset run)."""
    import json

    try:
        return json.loads((results_dir / "manifest.json").read_text()).get("config", {}).get("preset")
    except (OSError, ValueError, AttributeError):
        return None


def update_readme(path: Path, sweep) -> Path:
    """Replace the README's generated headline rows (:data:`prunelib.reporting.report.HEADLINE_ROW`)
    by those of ``sweep``, in order; the rest of the file is kept byte for byte.

    Raises:
        UsageError: the file has no such rows, or another number of them than datasets.
    """
    from prunelib.reporting.report import HEADLINE_ROW, headline_rows

    new = headline_rows(sweep)
    lines = path.read_text().splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if HEADLINE_ROW.match(line)]
    if len(at) != len(new):
        raise UsageError(
            f"{path} has {len(at)} generated headline rows, the tables give {len(new)}; "
            "add or remove rows of the form '| <dataset>, prunelib one-shot (+ lstsq) | ...'"
        )
    for i, row in zip(at, new):
        lines[i] = row + "\n"
    path.write_text("".join(lines))
    return path


def _report(args: argparse.Namespace) -> int:
    from prunelib.base import provenance
    from prunelib.reporting import report
    from prunelib.reporting.results import load_results

    if args.readme is not None:
        if args.check or args.compare is not None:
            raise UsageError("--readme rewrites a file; give it without --check or --compare")
        print(f"wrote {update_readme(args.readme, load_results(args.results).sweep)}")
        return 0
    if args.compare is not None:
        if args.check:
            raise UsageError("--compare and --check are separate questions; give one")
        from prunelib.reporting.compare import compare

        found = compare(args.results, args.compare)
        print(found.summary(str(args.results), str(args.compare)))
        return 1 if len(found.disagree) else 0
    if args.check:
        from prunelib.study import parts as study_parts

        problems = provenance.check_manifest(args.results, legacy=study_parts.legacy_records)
        for problem in problems:
            print(problem)
        held = study_parts.published(args.results)
        if held:
            for row in study_parts.parts_table(held).itertuples(index=False):
                print(f"part {row[0]}: present for {row[2]}; missing: {row[3].replace('`', '')}")
        print(
            f"{args.results}: "
            + (
                "current for the checked-out code"
                if not problems
                else f"{len(problems)} problem(s); "
                + ("recompute what they name" if held else "re-run `python -m prunelib run`")
            )
        )
        return 1 if problems else 0
    if not Path(args.results).is_dir():  # one line, not a manifest warning followed by an error
        raise UsageError(
            f"--results {args.results} is not a directory of results; run `python -m prunelib "
            "run` first or pass the directory it wrote"
        )
    stale = provenance.check_manifest(args.results)
    if stale:
        print(
            f"warning: {args.results} does not match its manifest ({stale[0]}; "
            f"{len(stale)} problem(s)); the report shows the tables as they are",
            file=sys.stderr,
        )
    from prunelib.study import parts as study_parts

    held = study_parts.published(args.results)
    table = study_parts.parts_table(held) if held else None
    preset = _recorded_preset(Path(args.results))  # the report names it, as the run's report did
    for path in report.write_report(load_results(args.results), args.results, preset=preset, parts=table):
        print(f"wrote {path}")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the driver so that it ends its workers as on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user mistake, with one line on stderr;
    130 on Ctrl-C and 143 on SIGTERM, after ending the run's worker processes).

    TensorFlow's C++ start-up lines are no output of ours: wherever the framework loads (this
    process for ``recipes``, ``--in-process`` and ``--retrain``; worker processes otherwise, which
    arrange the same for themselves and inherit ``TF_CPP_MIN_LOG_LEVEL``), it loads silenced
    (:func:`prunelib.base.quiet.quiet_framework_start`)."""
    import signal
    import threading

    quiet_framework_start()
    # Python's default SIGTERM ends the driver without unwinding, orphaning its workers.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    try:
        args = parser().parse_args(argv)
        command = {"run": lambda: _run(args, argv), "recipes": lambda: _recipes(args), "report": lambda: _report(args)}[
            args.command
        ]
        return command()
    except (
        UsageError,
        ValueError,
        DataError,
        RuntimeError,
        OSError,  # a missing file, a folder where a file belongs, no permission, no network
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print(
            f"{'terminated' if terminated else 'interrupted'}; worker processes ended, finished cache "
            "entries are kept, results/ is unchanged",
            file=sys.stderr,
        )
        return 143 if terminated else 130


if __name__ == "__main__":
    raise SystemExit(main())
