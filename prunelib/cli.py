"""``python -m prunelib``: reproduce the results and rebuild the report without the notebook."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from prunelib.config import DEFAULT_KS, ExperimentConfig, RecoveryConfig, TrainConfig
from prunelib.data import DATASETS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prunelib", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train, prune, evaluate; write results/ and the report",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                         description="Train (or load cached) models, run every sweep, baseline and "
                                     "recovery strategy, write tidy tables and figures under "
                                     "--results, then rebuild the report.")
    run.add_argument("--dataset", nargs="+", choices=DATASETS, default=list(DATASETS),
                     help="datasets to run")
    run.add_argument("--seeds", type=int, default=5, help="number of seeds (0 .. N-1) for every sweep")
    run.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="training epochs per model")
    run.add_argument("--methods", nargs="+", default=["weight", "unit"], choices=["weight", "unit"],
                     help="the challenge's pruning methods")
    run.add_argument("--ks", type=float, nargs="+", default=list(DEFAULT_KS), help="pruning percentages")
    run.add_argument("--no-baselines", action="store_true",
                     help="skip global magnitude pruning and the retrain-from-scratch baseline")
    run.add_argument("--no-sensitivity", action="store_true", help="skip one-layer-at-a-time pruning")
    run.add_argument("--recovery", nargs="*", default=["finetune", "gradual", "imp"],
                     choices=["finetune", "gradual", "imp"],
                     help="recovery strategies (give none to skip recovery)")
    run.add_argument("--recovery-epochs", type=int, default=RecoveryConfig.epochs,
                     help="fine-tuning / gradual pruning epochs (per round for imp)")
    run.add_argument("--recovery-ks", type=float, nargs="+", default=[90, 95, 99],
                     help="pruning percentages for recovery")
    run.add_argument("--recovery-seeds", type=int, default=1,
                     help="number of seeds (0 .. N-1) that also run recovery and pruning-aware training")
    run.add_argument("--no-aware", action="store_true", help="skip targeted-dropout training")
    run.add_argument("--quick", action="store_true",
                     help="smoke run: 1 epoch on 2,000 images, small recovery grid")
    run.add_argument("--retrain", action="store_true", help="ignore cached models and train again")
    run.add_argument("--results", type=Path, default=Path("results"), help="output directory")
    run.add_argument("--data-dir", type=Path, default=None, help="dataset directory (default: cache)")
    run.add_argument("--cache", type=Path, default=None, help="model cache directory")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")

    rec = sub.add_parser("recipes", help="the recipe study: one-shot curves per training recipe",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                         description="Train one model per named recipe (cached), sweep one-shot weight "
                                     "and unit pruning, measure drift from initialization and norm "
                                     "concentration; write recipes.csv, recipe_layers.csv, recipes.png.")
    rec.add_argument("--dataset", nargs="+", choices=DATASETS, default=list(DATASETS), help="datasets")
    rec.add_argument("--recipes", nargs="+", default=None, metavar="NAME",
                     help="recipes to run on every dataset (default: the study's list per dataset)")
    rec.add_argument("--seed", type=int, default=0, help="training seed")
    rec.add_argument("--retrain", action="store_true", help="ignore cached models and tables")
    rec.add_argument("--results", type=Path, default=Path("results"), help="output directory")
    rec.add_argument("--data-dir", type=Path, default=None, help="dataset directory (default: cache)")
    rec.add_argument("--cache", type=Path, default=None, help="model cache directory")
    rec.add_argument("--no-progress", action="store_true", help="hide progress bars")

    report = sub.add_parser("report", help="rebuild REPORT.md and report.docx from the result tables",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    report.add_argument("--results", type=Path, default=Path("results"), help="results directory")
    return parser


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The :class:`ExperimentConfig` that ``run``'s options describe."""
    base = ExperimentConfig.quick() if args.quick else ExperimentConfig()
    train = replace(base.train, epochs=args.epochs) if not args.quick else base.train
    rec = replace(base.recovery, epochs=args.recovery_epochs) if not args.quick else base.recovery
    return replace(
        base, datasets=tuple(args.dataset), methods=tuple(args.methods), ks=tuple(args.ks),
        seeds=tuple(range(args.seeds)), train=train, baselines=not args.no_baselines,
        sensitivity=not args.no_sensitivity, recovery=rec, recovery_strategies=tuple(args.recovery),
        recovery_ks=tuple(args.recovery_ks) if not args.quick else base.recovery_ks,
        recovery_seeds=tuple(range(min(args.recovery_seeds, args.seeds))),
        aware_targets=() if args.no_aware else base.aware_targets)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from prunelib import report
    from prunelib.experiment import load_results, run_experiment, save_results

    if args.command == "recipes":
        from prunelib import recipes
        from prunelib.experiment import run_recipes, save_recipes

        names = {d: tuple(args.recipes) if args.recipes else recipes.STUDY[d] for d in args.dataset}
        for chosen in names.values():
            for name in chosen:
                recipes.recipe_config(name)  # unknown names fail before any training
        curves, layers = run_recipes(names, seed=args.seed, retrain=args.retrain, data_dir=args.data_dir,
                                     cache=args.cache, progress=not args.no_progress)
        for path in save_recipes(curves, layers, args.results):
            print(f"wrote {path}")
        print(recipes.summarize(curves).to_string(index=False, float_format="%.2f"))
        return 0
    if args.command == "run":
        config = config_from_args(args)
        t0 = time.perf_counter()
        results = run_experiment(config, retrain=args.retrain, data_dir=args.data_dir, cache=args.cache,
                                 progress=not args.no_progress)
        save_results(results, args.results)
        command = "python -m prunelib " + shlex.join(sys.argv[1:] if argv is None else argv)
        report.save_run_times(results.seconds, time.perf_counter() - t0, command, args.results)
        results = load_results(args.results)
    else:
        results = load_results(args.results)
    for path in report.write_report(results, args.results):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
