"""The library's best post-training method beside the challenge's curves (prunelib.core.best)."""

import numpy as np
import pandas as pd
import pytest
from tiny import fake_sweep

from prunelib.core import pruning
from prunelib.core.best import BEST, sweep_best
from prunelib.core.evaluate import SWEEP_COLUMNS, evaluate_kernels
from prunelib.core.post_training import post_training_prune_with_biases
from prunelib.reporting import report
from prunelib.reporting.results import Results
from prunelib.study.config import ExperimentConfig
from prunelib.study.registry import part_of, part_rows


def _mlp(seed=0):
    rng = np.random.default_rng(seed)
    sizes = (12, 10, 8, 3)
    ws = [rng.normal(scale=a**-0.5, size=(a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [rng.normal(scale=0.1, size=b).astype(np.float32) for b in sizes[1:]]
    x = rng.random((200, 12), dtype=np.float32)
    return ws, bs, x, rng.integers(0, 3, 200)


@pytest.mark.parametrize("k", [0, 50, 90])
def test_best_rows_are_the_post_training_methods_own_results(k):
    ws, bs, x, y = _mlp()
    before = [w.copy() for w in ws] + [b.copy() for b in bs]
    table = sweep_best(ws, x, y, dataset="toy", calibration=x, ks=[k], biases=bs, progress=False)
    assert list(table.columns) == SWEEP_COLUMNS and set(table["correction"]) == {"best"}
    for method, row in table.set_index("method").iterrows():
        new, new_b, masks = post_training_prune_with_biases(ws, bs, k, x, method=BEST[method])
        assert row["accuracy"] == evaluate_kernels(new, x, y, new_b)[0]
        hidden = new[:-1]
        if method == "weight":  # per-unit allocation: one total over the hidden weights
            zeros = sum(int((w == 0).sum()) for w in hidden)
            assert zeros == pruning.count_to_prune(sum(w.size for w in hidden), k)
        else:  # whole units, exactly round(k/100 n) per hidden layer
            assert [int((~w.any(axis=0)).sum()) for w in hidden] == [
                pruning.count_to_prune(w.shape[1], k) for w in hidden
            ]
        np.testing.assert_array_equal(new[-1], ws[-1])  # the logits are never pruned
        assert row["prunable_sparsity"] == pytest.approx(100 * sum(int((w == 0).sum()) for w in hidden) / 200)
    for a, b in zip(ws + bs, before):
        np.testing.assert_array_equal(a, b)  # inputs untouched


def test_best_refuses_an_unknown_method_or_k_before_any_work(monkeypatch):
    from prunelib.core import best

    ws, bs, x, y = _mlp()
    monkeypatch.setattr(best, "post_training_prune_with_biases", lambda *a, **k: pytest.fail("work was done"))
    with pytest.raises(ValueError, match="unknown pruning method 'global-weight'"):
        sweep_best(ws, x, y, dataset="toy", calibration=x, methods=["global-weight"], progress=False)
    with pytest.raises(ValueError, match="150"):
        sweep_best(ws, x, y, dataset="toy", calibration=x, ks=[150], progress=False)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"y": np.full(200, 3)}, "labels must lie in"),  # a class the 3 logits do not have
        ({"y": np.zeros(199, int)}, "one integer label per image"),
        ({"x": np.zeros((200, 11), np.float32)}, "flattening to the first kernel's 12 inputs"),
        ({"calibration": np.zeros((50, 11), np.float32)}, "do not flatten to 12 features"),
        ({"calibration": np.full((50, 12), np.nan, np.float32)}, "NaN or infinite"),
        ({"biases": [np.zeros(10), np.zeros(8)]}, "3 kernels but 2 biases"),
        ({"biases": [np.zeros(10), np.zeros(1), np.zeros(3)]}, r"bias 1 has shape \(1,\)"),
    ],
)
def test_best_checks_images_labels_calibration_and_biases_before_any_work(monkeypatch, bad, match):
    from prunelib.core import best

    ws, bs, x, y = _mlp()
    monkeypatch.setattr(best, "post_training_prune_with_biases", lambda *a, **k: pytest.fail("work was done"))
    args = {"x": x, "y": y, "calibration": x, "biases": bs, "ks": [50], **bad}
    with pytest.raises(ValueError, match=match):
        sweep_best(ws, args.pop("x"), args.pop("y"), dataset="toy", progress=False, **args)


def test_best_reads_ks_and_methods_once_so_a_generator_gives_every_row():
    ws, bs, x, y = _mlp()
    from_lists = sweep_best(ws, x, y, dataset="toy", calibration=x, ks=[50, 90], biases=bs, progress=False)
    from_generators = sweep_best(
        ws,
        x,
        y,
        dataset="toy",
        calibration=x,
        methods=(m for m in ("weight", "unit")),
        ks=(k for k in (50, 90)),
        biases=bs,
        progress=False,
    )
    assert len(from_lists) == 4
    key = ["method", "k", "accuracy", "sparsity"]
    pd.testing.assert_frame_equal(from_generators[key], from_lists[key])


def test_the_config_runs_the_best_method_from_best_from_on():
    assert ExperimentConfig().best_ks == (95.0, 97.0, 99.0)
    assert ExperimentConfig(ks=(0, 50, 96), best_from=90).best_ks == (96.0,)
    assert ExperimentConfig(best_from=None).best_ks == ()
    assert ExperimentConfig.quick().best_ks == (99.0,)
    with pytest.raises(ValueError, match="101"):
        ExperimentConfig(best_from=101)


def _with_best():
    sweep = fake_sweep(91.0).assign(correction="none", seconds=0.0)
    main = sweep[sweep["method"].isin(["weight", "unit"]) & (sweep["k"] >= 95)]
    best = main.assign(correction="best", accuracy=96.5, seconds=12.0)
    return pd.concat([sweep, best], ignore_index=True)


def test_the_best_rows_belong_to_the_challenge_and_reach_the_report():
    table = _with_best()
    assert part_of("best") == "challenge"
    assert part_rows("challenge", "sweep", table)[table["correction"] == "best"].all()
    assert not part_rows("retrain-small", "sweep", table)[table["correction"] == "best"].any()
    summary = report.sweep_summary(table[table["dataset"] == "mnist"]).set_index("k (%)")
    assert summary.loc["99", "weight best (%)"] == "96.50 ± 0.00" and summary.loc["90", "unit best (%)"] == ""
    assert summary.loc["90", "weight acc. (%)"] == "91.10 ± 0.25"  # the challenge's own rows unchanged
    text = " ".join(report.discussion(Results(table)).split())
    assert "keeps 96.50 ± 0.00 % at weight 99 and 96.50 ± 0.00 % at unit 95" in text
    no_best = " ".join(report.discussion(Results(table[table["correction"] != "best"])).split())
    assert "best post-training" not in no_best


def test_the_best_methods_seconds_stand_beside_the_least_squares_ones():
    table = _with_best()
    lstsq = table[table["correction"] == "best"].assign(correction="lstsq", seconds=1.5)
    table = pd.concat([table, lstsq], ignore_index=True)
    seconds = report.lstsq_seconds(table[table["dataset"] == "mnist"]).set_index("k (%)")
    assert seconds.loc["99", "weight"] == "1.50" and seconds.loc["99", "weight best"] == "12.00"
