"""The recipe study: diagnostics, areas, the choice of recipe."""

import numpy as np
import pandas as pd
import pytest

from prunelib.study import recipes
from prunelib.models.config import Recipe, TrainConfig
from tiny import TINY, tiny_data


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


def test_summarize_and_choose():
    rows = []
    for recipe, dense, secs, acc in [("slow", 99.0, 100.0, 90.0), ("good", 98.6, 30.0, 80.0),
                                     ("bad", 97.0, 10.0, 95.0), ("meh", 98.5, 20.0, 50.0)]:
        for method in ("weight", "unit"):
            for k in (0, *recipes.AUC_KS):
                rows.append({"dataset": "mnist", "recipe": recipe, "method": method, "k": float(k),
                             "accuracy": dense if k == 0 else acc, "dense_accuracy": dense,
                             "train_seconds": secs})
    summary = recipes.summarize(pd.DataFrame(rows))
    assert summary.set_index("recipe").loc["good", "area"] == pytest.approx(80.0)
    assert recipes.choose(summary) == "slow"
    assert recipes.choose(summary, max_seconds=45) == "good"  # the accurate-enough fast one
    with pytest.raises(ValueError, match="no recipe"):
        recipes.choose(summary, min_dense=99.5)


def test_every_study_recipe_is_defined():
    for names in recipes.STUDY.values():
        for name in names:
            assert isinstance(recipes.get_recipe(name), Recipe)
            assert recipes.recipe_model(name, seed=2) == TrainConfig(recipe=recipes.get_recipe(name), seed=2)
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        recipes.get_recipe("nope")


def test_the_default_recipe_is_the_studys_choice():
    from pathlib import Path

    assert recipes.RECIPES[recipes.DEFAULT_RECIPE] == Recipe() == TrainConfig().recipe
    assert recipes.DEFAULT_RECIPE in recipes.STUDY["mnist"] and recipes.DEFAULT_RECIPE in recipes.STUDY["fashion-mnist"]
    committed = Path(__file__).resolve().parents[1] / "results" / "mnist" / "recipes.csv"
    if not committed.is_file():
        pytest.skip("no committed recipe study")
    summary = recipes.summarize(pd.read_csv(committed))
    assert recipes.choose(summary, min_dense=98.4, max_seconds=45) == recipes.DEFAULT_RECIPE


def test_recipes_do_not_depend_on_recipe_defaults():
    base = recipes.RECIPES[recipes.FIRST_RECIPE]
    assert (base.learning_rate, base.batch_size, base.weight_decay, base.lr_schedule) == (1e-3, 512, 0.0, "cosine")
    for name, config in recipes.RECIPES.items():
        assert (config.weight_decay > 0) == ("-wd" in name), name
        assert f"b{config.batch_size}-" in name and (config.precision == "float32") == ("fp32" in name), name
        assert (config.epochs == 20) == ("20ep" in name), name
