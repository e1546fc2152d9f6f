"""The recipe study's whole path on tiny data: the `recipes` subcommand, run_recipes, save_recipes,
figures.recipes, the report's recipe section and discussion, report.recipe_summary."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from tiny import TINY, fake_sweep, tiny_data

from prunelib import cli
from prunelib.models.config import DEFAULT_RECIPE, FIRST_RECIPE
from prunelib.reporting import discussion, figures, report
from prunelib.reporting.results import Results
from prunelib.study import experiment, recipes

NAMES = (FIRST_RECIPE, DEFAULT_RECIPE)


@pytest.fixture
def tiny_study(monkeypatch):
    """Every dataset is the tiny one; every recipe trains TINY's network for 1 epoch with the named
    recipe's learning rate, schedule and weight decay (batch 64), so the study runs in seconds."""
    loaded = []

    def load(name, data_dir=None):
        loaded.append((name, data_dir))
        return replace(tiny_data(), name=name)

    def model(name, seed=0):
        r = recipes.get_recipe(name)
        return replace(TINY, recipe=replace(r, epochs=1, batch_size=64), seed=seed)

    monkeypatch.setattr(experiment, "load_dataset", load)
    monkeypatch.setattr(recipes, "recipe_model", model)
    return loaded


@pytest.mark.slow
def test_recipes_subcommand_writes_tables_figure_and_feeds_the_report(tmp_path, tiny_study, capsys):
    results = tmp_path / "results"
    argv = [
        "recipes",
        "--dataset",
        "mnist",
        "--recipes",
        *NAMES,
        "--seed",
        "1",
        "--results",
        str(results),
        "--data-dir",
        str(tmp_path / "data"),
        "--cache",
        str(tmp_path / "cache"),
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert tiny_study == [("mnist", tmp_path / "data")]  # --data-dir reaches the loader
    for name in ("recipes.csv", "recipe_layers.csv", "recipes.png"):
        assert f"wrote {results / 'mnist' / name}" in out
    curves = pd.read_csv(results / "mnist" / "recipes.csv")
    layers = pd.read_csv(results / "mnist" / "recipe_layers.csv")
    assert list(curves.columns) == recipes.RECIPE_COLUMNS and set(curves["recipe"]) == set(NAMES)
    assert (curves["seed"] == 1).all() and set(curves["method"]) == {"weight", "unit"}
    assert len(curves) == 2 * 2 * (1 + len(recipes.AUC_KS))
    assert len(layers) == 2 * len(TINY.architecture.hidden_sizes)
    summary = recipes.summarize(curves)
    for name in NAMES:
        assert name in out  # the summary printed at the end
        row = summary.set_index("recipe").loc[name]
        assert row["train_steps"] == 1 * -(-60_000 // 64)  # counted over the study's 60,000 images
        assert row["train_seconds"] > 0
    # a second run reads the cached tables and writes the same ones
    assert cli.main(argv) == 0
    pd.testing.assert_frame_equal(pd.read_csv(results / "mnist" / "recipes.csv"), curves)
    # --retrain trains again (and still writes a full table)
    assert cli.main([*argv, "--retrain"]) == 0
    assert len(pd.read_csv(results / "mnist" / "recipes.csv")) == len(curves)

    # the report's recipe section and the discussion's paragraph come from these tables
    sweep = fake_sweep()
    res = Results(sweep[sweep["dataset"] == "mnist"], recipes=curves, recipe_layers=layers)
    text = report.discussion(res)
    assert "The recipe decides how much can go" in text and f"`{FIRST_RECIPE}`" in text
    new_95 = curves[(curves["recipe"] == DEFAULT_RECIPE) & (curves["method"] == "weight") & (curves["k"] == 95)]
    assert f"weight 95 keeps {new_95['accuracy'].iloc[0]:.1f} %" in " ".join(text.split())
    written = report.write_report(res, results)
    md = next(p for p in written if p.suffix == ".md").read_text()
    assert "Recipe study (seed 0)" in md and f"| {DEFAULT_RECIPE} |" in md


def _fake_recipe_tables():
    rows, layer_rows = [], []
    for i, name in enumerate(NAMES):
        for method in ("weight", "unit"):
            for k in (0, *recipes.AUC_KS):
                acc = 98.0 if k == 0 else 90.0 - k / 10 - (10 * i if method == "unit" else 0)
                rows.append(
                    {
                        "dataset": "mnist",
                        "recipe": name,
                        "seed": 0,
                        "method": method,
                        "k": float(k),
                        "sparsity": k * 0.99,
                        "accuracy": acc,
                        "dense_accuracy": 98.0,
                        "train_seconds": 40.0 + i,
                        "epochs": 10,
                        "batch_size": 512,
                        "learning_rate": 1e-3,
                        "lr_schedule": "cosine",
                        "precision": "mixed_bfloat16",
                        "weight_decay": float(i),
                    }
                )
        for layer in ("hidden_0", "hidden_1"):
            layer_rows.append(
                {
                    "dataset": "mnist",
                    "recipe": name,
                    "seed": 0,
                    "layer": layer,
                    "drift": 0.5 + i,
                    "top10_weight_share": 30.0 + 60 * i,
                    "top10_unit_share": 20.0 + i,
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(layer_rows)


def test_report_recipe_summary_numbers_come_from_the_tables():
    curves, layers = _fake_recipe_tables()
    table = report.recipe_summary(curves, layers).set_index("recipe")
    assert list(table.index) == list(NAMES)
    new = table.loc[DEFAULT_RECIPE]
    part = curves[curves["recipe"] == DEFAULT_RECIPE]
    area = np.mean(
        [part[(part["method"] == m) & part["k"].isin(recipes.AUC_KS)]["accuracy"].mean() for m in ("weight", "unit")]
    )
    assert new["area"] == f"{area:.1f}" and new["dense (%)"] == "98.00" and new["train (s)"] == "41"
    assert new["weight 95"] == f"{90.0 - 9.5:.1f}" and new["unit 80"] == f"{90.0 - 8 - 10:.1f}"
    assert new["drift"] == "1.50" and new["top-10 % weights (%)"] == "90" and new["top-10 % units (%)"] == "21"
    facts = discussion.recipe_facts(curves, layers)
    assert facts["old_top10"] == 30.0 and facts["new_top10"] == 90.0 and facts["new_decay"] == 1.0
    assert facts["new_steps"] == facts["old_steps"] == (10, 512)
    assert discussion.recipe_facts(curves, layers, dataset="fashion-mnist") == {}
    text = " ".join(report.discussion(Results(fake_sweep(), recipes=curves, recipe_layers=layers)).split())
    assert "takes as many steps, but its weight decay pulls" in text


def test_recipes_figure_has_one_curve_per_recipe_and_method():
    curves, _ = _fake_recipe_tables()
    fig = figures.recipes(curves)
    try:
        axes = fig.axes
        assert len(axes) == 2
        for ax in axes:
            assert len([line for line in ax.get_lines() if len(line.get_xdata()) > 1]) >= len(NAMES)
        assert "mnist" in fig._suptitle.get_text()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
