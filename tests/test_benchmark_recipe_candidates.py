"""benchmarks/recipe_candidates.py: candidates within the study's budget, its table and the rule's pick."""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import recipe_candidates  # noqa: E402

from prunelib.models.config import RECIPES  # noqa: E402
from prunelib.study.recipes import MAX_STEPS, train_steps  # noqa: E402


def test_candidates_are_new_and_within_the_step_budget():
    for name, recipe in recipe_candidates.CANDIDATES.items():
        assert name not in RECIPES and recipe not in RECIPES.values()
        assert train_steps(recipe.epochs, recipe.batch_size) <= MAX_STEPS


def test_main_writes_the_curves_and_prints_the_rules_pick(tmp_path, monkeypatch, capsys):
    committed = pd.read_csv(recipe_candidates.COMMITTED)
    # a candidate as accurate as the best committed recipe and with the largest area: the rule takes it
    best = committed[committed["recipe"] == "b512-lr1e-3-cosine"].copy()
    fake = best.assign(recipe="b512-lr2e-3-cosine-wd1", accuracy=best["accuracy"].clip(lower=99.0))

    def fake_tables(data, recipes, **kwargs):
        assert list(recipes) == ["b512-lr2e-3-cosine-wd1"]
        return fake, None

    monkeypatch.setattr(recipe_candidates, "recipe_tables", fake_tables)
    monkeypatch.setattr("prunelib.data.load_dataset", lambda name: None)
    out = tmp_path / "candidates.csv"
    assert recipe_candidates.main(["--recipes", "b512-lr2e-3-cosine-wd1", "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), fake.reset_index(drop=True), check_dtype=False)
    printed = capsys.readouterr().out
    assert "candidate" in printed and "recipe study" in printed
    assert "the rule picks 'b512-lr2e-3-cosine-wd1'" in printed
