"""The recipe study: diagnostics, areas, the choice of recipe."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny import TINY, tiny_data

from prunelib.models.config import Recipe, TrainConfig
from prunelib.study import recipes
from prunelib.study.config import RECIPE_STUDY

ROOT = Path(__file__).resolve().parents[1]


def test_top_share_of_uniform_and_concentrated_values():
    assert recipes.top_share(np.ones(100)) == pytest.approx(10.0)
    spiky = np.zeros(100)
    spiky[:10] = 1.0
    assert recipes.top_share(spiky) == pytest.approx(100.0)
    assert np.isnan(recipes.top_share(np.zeros(10)))


def test_layer_diagnostics_measure_drift_and_concentration():
    rng = np.random.default_rng(0)
    init = [rng.normal(size=(6, 5)), rng.normal(size=(5, 4)), rng.normal(size=(4, 2))]
    same = recipes.layer_diagnostics(init, init)
    assert same["layer"].tolist() == ["hidden_0", "hidden_1"]  # logits excluded
    assert same["drift"].tolist() == [0.0, 0.0]
    doubled = recipes.layer_diagnostics([2 * w for w in init], init)
    np.testing.assert_allclose(doubled["drift"], 1.0)
    np.testing.assert_allclose(doubled["top10_weight_share"], same["top10_weight_share"])


def test_recipe_tables_train_sweep_and_diagnose(tmp_path):
    data = tiny_data()
    chosen = {"a": TINY, "b": TINY.with_recipe(learning_rate=3e-2)}
    curves, layers = recipes.recipe_tables(data, chosen, ks=(0, 50, 90), cache=tmp_path, progress=False)
    assert list(curves.columns) == recipes.RECIPE_COLUMNS
    assert len(curves) == 2 * 2 * 3 and set(curves["recipe"]) == {"a", "b"}
    assert len(layers) == 2 * len(TINY.architecture.hidden_sizes) and (layers["drift"] > 0).all()
    again, _ = recipes.recipe_tables(data, chosen, ks=(0, 50, 90), cache=tmp_path, progress=False)
    pd.testing.assert_frame_equal(curves, again)  # cached models give the same table


def _fake_curves(specs):
    rows = []
    for recipe, dense, secs, acc, epochs, batch in specs:
        for method in ("weight", "unit"):
            for k in (0, *recipes.AUC_KS):
                rows.append(
                    {
                        "dataset": "mnist",
                        "recipe": recipe,
                        "method": method,
                        "k": float(k),
                        "accuracy": dense if k == 0 else acc,
                        "dense_accuracy": dense,
                        "train_seconds": secs,
                        "epochs": epochs,
                        "batch_size": batch,
                    }
                )
    return pd.DataFrame(rows)


def test_summarize_and_choose():
    # (recipe, dense, seconds, one-shot accuracy, epochs, batch): "slow" does 4x the steps of the
    # others; "quick-in-steps" took long in seconds (a loaded machine) but is within the budget
    curves = _fake_curves(
        [
            ("slow", 99.0, 100.0, 90.0, 20, 256),
            ("good", 98.6, 30.0, 80.0, 10, 512),
            ("bad", 97.0, 10.0, 95.0, 10, 512),
            ("meh", 98.5, 20.0, 50.0, 10, 512),
            ("quick-in-steps", 98.5, 500.0, 85.0, 5, 512),
        ]
    )
    summary = recipes.summarize(curves).set_index("recipe")
    assert summary.loc["good", "area"] == pytest.approx(80.0)
    assert summary.loc["good", "train_steps"] == 10 * 118 and summary.loc["slow", "train_steps"] == 20 * 235
    assert summary.loc["good", "train_seconds"] == 30.0  # wall time reported beside the steps
    summary = summary.reset_index()
    assert recipes.choose(summary) == "slow"
    assert recipes.choose(summary, max_steps=recipes.MAX_STEPS) == "quick-in-steps"
    assert recipes.choose(summary, max_steps=10 * 118 - 1) == "quick-in-steps"  # 5 epochs = 590 steps
    with pytest.raises(ValueError, match="within 589 optimizer steps"):
        recipes.choose(summary, max_steps=589)
    assert recipes.choose(summary, within=0) == "slow"  # only the most accurate recipe qualifies
    assert recipes.choose(summary, within=2.0) == "bad"  # 97.0 is within 2 points of 99.0
    assert recipes.choose(summary, within=1.9) == "slow"
    assert recipes.choose(summary, within=np.int64(2)) == "bad"  # numpy numbers are numbers
    for bad in (-0.1, float("nan"), float("inf"), "0.5", True):
        with pytest.raises(ValueError, match="within must be"):
            recipes.choose(summary, within=bad)
    with pytest.raises(ValueError, match="no recipe on 'cifar'"):
        recipes.choose(summary, dataset="cifar")
    for column in ("dense_accuracy", "area"):
        broken = summary.copy()
        broken.loc[broken["recipe"] == "meh", column] = float("nan")
        with pytest.raises(ValueError, match=r"recipes \['meh'\] on 'mnist' have no dense accuracy"):
            recipes.choose(broken)
    without = recipes.summarize(curves.drop(columns=["epochs", "batch_size"]))
    assert without["train_steps"].isna().all()
    assert recipes.choose(without) == "slow"
    with pytest.raises(ValueError, match="epochs and batch_size"):
        recipes.choose(without, max_steps=recipes.MAX_STEPS)


def test_train_steps_count_like_the_training_loop():
    from prunelib.models.mlp import steps_per_epoch

    assert recipes.MAX_STEPS == 10 * steps_per_epoch(60_000, 512) == 1180
    for n, batch, epochs in [(60_000, 512, 10), (60_000, 128, 10), (60_000, 64, 3), (1000, 7, 2), (5, 10, 1)]:
        assert recipes.train_steps(epochs, batch, n) == epochs * steps_per_epoch(n, batch)


def test_every_study_recipe_is_defined():
    for names in RECIPE_STUDY.values():
        for name in names:
            assert isinstance(recipes.get_recipe(name), Recipe)
            assert recipes.recipe_model(name, seed=2) == TrainConfig(recipe=recipes.get_recipe(name), seed=2)
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        recipes.get_recipe("nope")


def recipe_study(dataset: str) -> Path:
    """The recipe study's table in the committed results/ (the ``recipes`` part; its manifest entry
    says which code computed it)."""
    committed = ROOT / "results" / dataset / "recipes.csv"
    assert committed.is_file(), (
        f"results/ lacks the recipes part: `python -m prunelib run --part recipes --dataset {dataset}`"
    )
    return committed


STUDY_CHOICE = {"mnist": recipes.DEFAULT_RECIPE, "fashion-mnist": "b512-lr4e-3-cosine-wd0.1"}
"""What the rule (dense within 0.5 points of the dataset's best, largest area, within the step
budget) picks on each dataset's committed recipe study. Fashion-MNIST's pick is not the default:
it is more accurate dense and lower in one-shot area than the default on seed 0
(:func:`test_fashion_mnist_trades_area_for_dense_accuracy`); the default stays for both datasets
(decided: the area is worth more than about a point of dense accuracy)."""


def test_fashion_mnist_trades_area_for_dense_accuracy():
    summary = recipes.summarize(pd.read_csv(recipe_study("fashion-mnist"))).set_index("recipe")
    pick, default = summary.loc[STUDY_CHOICE["fashion-mnist"]], summary.loc[recipes.DEFAULT_RECIPE]
    assert pick["dense_accuracy"] > default["dense_accuracy"] and pick["area"] < default["area"]


def test_the_default_recipe_is_the_studys_choice():
    assert recipes.RECIPES[recipes.DEFAULT_RECIPE] == Recipe() == TrainConfig().recipe
    assert recipes.DEFAULT_RECIPE in RECIPE_STUDY["mnist"] and recipes.DEFAULT_RECIPE in RECIPE_STUDY["fashion-mnist"]
    summary = recipes.summarize(pd.read_csv(recipe_study("mnist")))
    assert recipes.choose(summary, max_steps=recipes.MAX_STEPS) == recipes.DEFAULT_RECIPE
    # the rule before it was relative (dense >= 98.4 %, MNIST only) picked the same
    absolute = summary[(summary["dense_accuracy"] >= 98.4) & (summary["train_steps"] <= recipes.MAX_STEPS)]
    assert absolute.loc[absolute["area"].idxmax(), "recipe"] == recipes.DEFAULT_RECIPE


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("scale", [0.6, 1.0, 1.6])
def test_the_choice_on_the_committed_study_does_not_depend_on_measured_time(dataset, scale):
    """The rule picks :data:`STUDY_CHOICE` on each committed table, the most accurate recipe within
    the budget stays within 0.5 points of what it picks, and scaling every measured time leaves the
    choice alone."""
    curves = pd.read_csv(recipe_study(dataset))
    scaled = recipes.summarize(curves.assign(train_seconds=curves["train_seconds"] * scale))
    chosen = recipes.choose(scaled, dataset=dataset, max_steps=recipes.MAX_STEPS)
    assert chosen == STUDY_CHOICE[dataset]
    budget = scaled[scaled["train_steps"] <= recipes.MAX_STEPS].set_index("recipe")
    more_area = budget[budget["area"] > budget.loc[chosen, "area"]]
    assert budget["dense_accuracy"].max() - budget.loc[chosen, "dense_accuracy"] <= 0.5 + 1e-9
    # every recipe with more area is more than 0.5 points less accurate dense than the best
    assert (more_area["dense_accuracy"] < budget["dense_accuracy"].max() - 0.5).all()
    np.testing.assert_allclose(scaled["train_seconds"], recipes.summarize(curves)["train_seconds"] * scale)


def test_recipes_do_not_depend_on_recipe_defaults():
    base = recipes.RECIPES[recipes.FIRST_RECIPE]
    assert (base.learning_rate, base.batch_size, base.weight_decay, base.lr_schedule) == (1e-3, 512, 0.0, "cosine")
    for name, config in recipes.RECIPES.items():
        assert (config.weight_decay > 0) == ("-wd" in name), name
        assert f"b{config.batch_size}-" in name and (config.precision == "float32") == ("fp32" in name), name
        assert (config.epochs == 20) == ("20ep" in name), name
