from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from tiny import TINY, fake_sweep, tiny_data

from prunelib.core import pruning
from prunelib.core.evaluate import SWEEP_COLUMNS, evaluate_kernels, sweep
from prunelib.models import mlp
from prunelib.models.config import Architecture
from prunelib.reporting import report, stats
from prunelib.reporting.results import Results
from prunelib.study import analysis


def kernels(seed=0, sizes=(12, 9, 7, 3)):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(a, b)).astype(np.float32) for a, b in zip(sizes, sizes[1:])]


@pytest.mark.parametrize("values", [[1.0, 2.0], [97.1, 97.5, 96.9, 97.3, 97.0], np.arange(10.0)])
def test_ci95_matches_the_t_interval(values):
    x = np.asarray(values)
    lo, hi = sps.t.interval(0.95, x.size - 1, loc=x.mean(), scale=sps.sem(x))
    assert stats.ci95(x) == pytest.approx((hi - lo) / 2)
    assert stats.ci95_interval(x) == pytest.approx((lo, hi))


def test_ci95_of_one_value_is_nan_and_interval_a_point():
    assert np.isnan(stats.ci95([3.0]))
    assert stats.ci95_interval([3.0]) == (3.0, 3.0)


def test_sensitivity_reads_methods_and_ks_once_and_checks_them_before_any_pruning(monkeypatch):
    x = np.random.default_rng(1).normal(size=(20, 12)).astype(np.float32)
    y = np.zeros(20, dtype=np.int32)
    from_lists = analysis.layer_sensitivity(kernels(), x, y, dataset="t", ks=[0, 50])
    from_generators = analysis.layer_sensitivity(
        kernels(), x, y, dataset="t", methods=iter(["weight", "unit"]), ks=(k for k in (0, 50))
    )
    assert len(from_lists) == 2 * 2 * 2  # methods x hidden layers x ks
    pd.testing.assert_frame_equal(from_generators, from_lists)
    monkeypatch.setattr(pruning, "compute_masks", lambda *a, **k: pytest.fail("pruning started"))
    with pytest.raises(ValueError, match="'wieght'"):
        analysis.layer_sensitivity(kernels(), x, y, dataset="t", methods=["weight", "wieght"])
    with pytest.raises(ValueError, match="labels must lie in"):
        analysis.layer_sensitivity(kernels(), x, np.full(20, 3), dataset="t")


@pytest.mark.parametrize("method", ["weight", "unit"])
def test_sensitivity_prunes_exactly_one_layer(method):
    ks_ = kernels()
    x = np.random.default_rng(1).normal(size=(20, 12)).astype(np.float32)
    y = np.zeros(20, dtype=np.int32)
    table = analysis.layer_sensitivity(ks_, x, y, dataset="t", methods=[method], ks=[0, 50], seed=3)
    assert list(table.columns) == analysis.SENSITIVITY_COLUMNS
    assert len(table) == 2 * 2  # two hidden layers x two k
    total = sum(w.size for w in ks_)
    for _, row in table.iterrows():
        i = int(row["layer"].split("_")[1])
        w = ks_[i]
        n = pruning.count_to_prune(w.size if method == "weight" else w.shape[1], row["k"])
        zeros = n if method == "weight" else n * w.shape[0]
        assert row["sparsity"] == pytest.approx(100 * zeros / total)
        expected = list(ks_)
        expected[i] = pruning.prune([w, np.zeros((w.shape[1], 1), w.dtype)], row["k"], method)[0]
        assert row["accuracy"] == pytest.approx(evaluate_kernels(expected, x, y)[0])


def test_weight_distributions_cover_every_hidden_layer_and_unit():
    table = analysis.weight_distributions(kernels(), max_per_layer=50)
    norms = table[table["quantity"] == "unit L2 norm"]
    assert norms.groupby("layer").size().to_dict() == {"hidden_0": 9, "hidden_1": 7}
    mags = table[table["quantity"] == "|weight|"]
    assert mags.groupby("layer").size().to_dict() == {"hidden_0": 50, "hidden_1": 50}
    assert (mags["value"] >= 0).all()


@pytest.mark.parametrize("k", [0, 25, 50, 90, 99])
def test_units_left_matches_unit_pruning(k):
    ks_ = kernels(sizes=(30, 1000, 500, 200, 10))
    left = analysis.units_left((1000, 500, 200), k)
    pruned = pruning.prune(ks_, k, "unit")
    assert left == tuple(int(np.any(w != 0, axis=0).sum()) for w in pruned[:-1])


def test_retrain_baseline_trains_the_sizes_unit_pruning_leaves(tmp_path):
    data = tiny_data()
    table = analysis.retrain_baseline(data, TINY, [0, 50], cache=tmp_path)
    assert list(table.columns) == SWEEP_COLUMNS
    assert list(table["method"]) == ["retrain-small"] * 2
    full = 784 * 16 + 16 * 8 + 8 * 2
    small = 784 * 8 + 8 * 4 + 4 * 2
    assert table["effective_params"].tolist() == [full, small]
    assert table["sparsity"].tolist() == pytest.approx([0.0, 100 * (1 - small / full)])
    # Same effective parameters as unit pruning at that k: the axes line up.
    dense = mlp.train_or_load(data, TINY, cache=tmp_path)
    swept = sweep(
        mlp.get_kernels(dense), data.x_test, data.y_test, dataset="tiny", methods=["unit"], ks=[50], progress=False
    )
    assert swept["effective_params"].iloc[0] <= small


def test_retrain_baseline_answers_a_k_that_leaves_zero_units_without_training(tmp_path):
    # A last hidden layer of 2 units keeps round(0.25 * 2) = 0 at k = 75 (and nothing is left at k = 100).
    data = tiny_data()
    config = replace(TINY, architecture=Architecture(hidden_sizes=(16, 2), num_classes=3))
    assert analysis.units_left((16, 2), 75) == (4, 0)
    analysis.retrain_baseline(data, config, [0], cache=tmp_path)
    cached = sorted(p.name for p in tmp_path.rglob("*"))
    table = analysis.retrain_baseline(data, config, [0, 75, 100], cache=tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == cached  # no network trained or cached for 75, 100
    assert table["k"].tolist() == [0, 75, 100]  # one row per requested k, none missing
    assert list(table["method"]) == ["retrain-small"] * 3
    full = 784 * 16 + 16 * 2 + 2 * 3
    small = {75: 784 * 4 + 4 * 0 + 0 * 3, 100: 0}
    # Its output does not depend on the input: all-zero logits, so class 0 and a loss of ln(3).
    expected_accuracy = 100.0 * np.mean(np.asarray(data.y_test) == 0)
    for k in (75, 100):
        row = table[table["k"] == k].iloc[0]
        assert row["accuracy"] == pytest.approx(expected_accuracy)
        assert row["loss"] == pytest.approx(np.log(3))
        assert row["effective_params"] == 0  # as unit pruning's at that k: no weight reaches the logits
        assert row["sparsity"] == pytest.approx(100 * (1 - small[k] / full))
        assert row["prunable_sparsity"] == pytest.approx(100 * (1 - small[k] / (784 * 16 + 16 * 2)))


def test_discussion_numbers_come_from_the_table():
    a, b = report.discussion(Results(fake_sweep(91.0))), report.discussion(Results(fake_sweep(93.5)))
    assert "91.10 ± 0.25 %" in a and "93.60 ± 0.25 %" in b
    assert 150 <= len(a.split()) <= 330  # about 200 words of prose
    assert "from scratch" in a  # the retrain-from-scratch baseline is discussed when present
    assert "least squares" not in " ".join(a.split())  # no lstsq rows, no lstsq claim
    fixed = fake_sweep(91.0)
    lstsq = fixed[fixed["method"].isin(["weight", "unit"])].assign(correction="lstsq", accuracy=97.25, seconds=1.5)
    with_lstsq = pd.concat([fixed.assign(correction="none", seconds=0.0), lstsq], ignore_index=True)
    c = " ".join(report.discussion(Results(with_lstsq)).split())
    assert "least squares" in c and "97.25 ± 0.00 %" in c
    assert "91.10 ± 0.25 %" in c  # the challenge's numbers still come from the uncorrected rows
    summary = report.sweep_summary(with_lstsq[with_lstsq["dataset"] == "mnist"])
    assert summary.loc[3, "weight + lstsq (%)"] == "97.25 ± 0.00"


def test_sweep_summary_has_mean_and_ci_per_method():
    summary = report.sweep_summary(fake_sweep()[lambda d: d["dataset"] == "mnist"])
    assert list(summary["k (%)"]) == ["0", "50", "80", "90", "95", "99"]
    assert summary.loc[3, "weight acc. (%)"] == "91.10 ± 0.25"
    assert "retrain-small acc. (%)" in summary.columns


def test_write_report_makes_markdown_and_docx(tmp_path):
    import docx

    (tmp_path / "mnist").mkdir()
    results = Results(sweep=fake_sweep())
    paths = report.write_report(results, tmp_path)
    assert [p.name for p in paths] == ["REPORT.md", "report.docx"]
    md = paths[0].read_text()
    assert "## Discussion" in md and "| 90 |" in md
    text = "\n".join(p.text for p in docx.Document(paths[1]).paragraphs)
    assert "Do the curves differ?" in text and "91.10 ± 0.25 %" in text
    assert len(docx.Document(paths[1]).tables) == 2  # one sweep table per dataset


def test_recipe_paragraph_comes_from_the_recipe_tables():
    from prunelib.models.config import DEFAULT_RECIPE, FIRST_RECIPE

    curves, layers = [], []
    for recipe, acc, share, decay in ((FIRST_RECIPE, 59.5, 33.0, 0.0), (DEFAULT_RECIPE, 97.2, 96.0, 1.0)):
        for method in ("weight", "unit"):
            for k in (0, 80, 95):
                curves.append(
                    {
                        "dataset": "mnist",
                        "recipe": recipe,
                        "seed": 0,
                        "method": method,
                        "k": float(k),
                        "sparsity": float(k),
                        "accuracy": acc if k else 98.5,
                        "dense_accuracy": 98.5,
                        "train_seconds": 20.0,
                        "epochs": 10,
                        "batch_size": 512,
                        "weight_decay": decay,
                    }
                )
        layers.append(
            {
                "dataset": "mnist",
                "recipe": recipe,
                "seed": 0,
                "layer": "hidden_0",
                "drift": 0.5,
                "top10_weight_share": share,
                "top10_unit_share": share / 2,
            }
        )
    results = Results(fake_sweep(), recipes=pd.DataFrame(curves), recipe_layers=pd.DataFrame(layers))
    text = " ".join(report.discussion(results).split())
    assert f"`{FIRST_RECIPE}` the top 10 % of weights held 33 %" in text and "gave 59.5 %" in text
    assert "weight decay pulls" in text and "96 % of the norm" in text and "keeps 97.2 %" in text
    no_decay = results.recipes.assign(weight_decay=0.0)
    assert "weight decay" not in " ".join(
        report.discussion(Results(fake_sweep(), recipes=no_decay, recipe_layers=results.recipe_layers)).split()
    )


def test_figures_drawn_from_identical_tables_are_reused(tmp_path, monkeypatch):
    from prunelib.reporting import figures

    cache, first, second = tmp_path / "cache", tmp_path / "a", tmp_path / "b"
    results = Results(sweep=fake_sweep())
    written = figures.save_all(results, first, cache=cache)
    assert {p.name for p in written} == {figures.MAIN, figures.BASELINES}
    drawn = []
    real = figures.sparsity_vs_accuracy
    monkeypatch.setattr(figures, "sparsity_vs_accuracy", lambda *a: drawn.append(a) or real(*a))
    again = figures.save_all(results, second, cache=cache)
    assert drawn == []  # nothing drawn: the same tables, the same code
    for a, b in zip(written, again):
        assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 10_000
    changed = figures.save_all(Results(sweep=fake_sweep(93.5)), tmp_path / "c", cache=cache)
    assert len(drawn) == 2  # another table: both datasets' main figures drawn afresh
    assert changed[0].read_bytes() != written[0].read_bytes()
    figures.save_all(results, tmp_path / "d")  # no cache: draws everything, writes nothing to it
    assert len(drawn) == 4 and len(list(cache.glob("*.png"))) == 2 * 2 + 2 * 2


def _two_methods(weight_acc, unit_acc, dataset="mnist", seeds=(0, 1, 2), spread=0.5):
    rows = []
    for seed in seeds:
        noise = (seed - 1) * spread
        for k in (0, 50, 90):
            for method, acc in (("weight", weight_acc), ("unit", unit_acc)):
                rows.append(
                    {
                        "dataset": dataset,
                        "method": method,
                        "k": k,
                        "seed": seed,
                        "correction": "none",
                        "accuracy": (98.0 if k == 0 else acc[k]) + noise,
                    }
                )
    return pd.DataFrame(rows)


def test_the_curves_differ_only_where_the_intervals_do_not_overlap():
    apart = _two_methods({50: 97.0, 90: 90.0}, {50: 96.8, 90: 60.0})
    assert report.differ_verdict(apart).startswith("Yes on mnist") and "weight above unit at k = 90." in (
        report.differ_verdict(apart)
    )
    assert report.separated(apart) == {90.0: 1}  # at k = 50 the intervals overlap
    close = _two_methods({50: 97.0, 90: 90.0}, {50: 96.8, 90: 89.9})
    assert report.differ_verdict(close).startswith("Not beyond noise on mnist")
    one_seed = _two_methods({50: 97.0, 90: 90.0}, {50: 96.8, 90: 60.0}, seeds=(0,))
    assert "no confidence interval" in report.differ_verdict(one_seed)


def test_cross_dataset_agreement_is_checked_not_asserted():
    mnist = _two_methods({50: 97.0, 90: 90.0}, {50: 96.8, 90: 60.0})
    same = _two_methods({50: 90.0, 90: 85.0}, {50: 89.9, 90: 50.0}, dataset="fashion-mnist")
    flipped = _two_methods({50: 90.0, 90: 50.0}, {50: 89.9, 90: 85.0}, dataset="fashion-mnist")
    assert "fashion-mnist agrees" in report.differ_verdict(pd.concat([mnist, same]))
    verdict = report.differ_verdict(pd.concat([mnist, flipped]))
    assert "fashion-mnist differs: unit above weight at k = 90" in verdict
    overlapping = _two_methods({50: 90.0, 90: 85.0}, {50: 89.9, 90: 84.9}, dataset="fashion-mnist")
    assert "fashion-mnist differs: the CIs overlap at every k" in report.differ_verdict(pd.concat([mnist, overlapping]))


def test_no_machine_fact_is_written_into_the_report(tmp_path):
    (tmp_path / "mnist").mkdir()
    text = report.write_report(Results(sweep=fake_sweep()), tmp_path)[0].read_text()
    assert "CPU" not in text and "cores" not in text
