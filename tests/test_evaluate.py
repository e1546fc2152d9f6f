import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from prunelib.core import pruning
from prunelib.core.evaluate import SWEEP_COLUMNS, evaluate_kernels, sweep
from prunelib.models import mlp
from prunelib.reporting.plotting import plot_sparsity_vs_accuracy
from prunelib.reporting.results import Results, load_results, save_results
from prunelib.reporting.stats import summary_table


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    kernels = [rng.normal(size=s).astype(np.float32) for s in [(20, 16), (16, 12), (12, 3)]]
    x = rng.random((50, 4, 5), dtype=np.float32)
    y = rng.integers(0, 3, 50)
    return kernels, x, y


def test_evaluate_matches_numpy_forward(tiny):
    kernels, x, y = tiny
    h = x.reshape(len(x), -1)
    for w in kernels[:-1]:
        h = np.maximum(h @ w, 0)
    logits = h @ kernels[-1]
    accuracy, loss = evaluate_kernels(kernels, x, y, batch_size=16)
    assert accuracy == pytest.approx(100 * np.mean(logits.argmax(1) == y))
    shifted = logits - logits.max(1, keepdims=True)
    ce = -(shifted[np.arange(len(y)), y] - np.log(np.exp(shifted).sum(1)))
    assert loss == pytest.approx(ce.mean(), rel=1e-4)


def test_sweep_is_tidy_and_measures_sparsity(tiny):
    kernels, x, y = tiny
    ks = [0, 50, 90, 100]
    df = sweep(kernels, x, y, dataset="tiny", ks=ks, seed=3, progress=False)
    assert list(df.columns) == SWEEP_COLUMNS
    assert len(df) == 2 * len(ks) and set(df["seed"]) == {3}
    total = sum(w.size for w in kernels)
    hidden = total - kernels[-1].size
    for _, row in df.iterrows():
        pruned = pruning.prune(kernels, row.k, row.method)
        zeros = sum(np.count_nonzero(w == 0) for w in pruned)
        assert row.sparsity == pytest.approx(100 * zeros / total)
        assert row.prunable_sparsity == pytest.approx(100 * (zeros) / hidden)
    dense = df[df.k == 0].accuracy.unique()
    assert len(dense) == 1  # k = 0 is the same dense model for both methods
    # at k = 100 the hidden layers are empty: every input gives the same logits (all zero)
    assert (df[df.k == 100].prunable_sparsity == 100).all()


def test_sparsity_at_99_is_98_92_for_the_challenge_network():
    shapes = [(784, 1000), (1000, 1000), (1000, 500), (500, 200), (200, 10)]
    kernels = [np.ones(s, np.float32) for s in shapes]
    pruned = pruning.weight_prune(kernels, 99)
    assert pruning.sparsity(pruned) == pytest.approx(98.917, abs=1e-3)
    assert pruning.sparsity(pruning.unit_prune(kernels, 99)) == pytest.approx(98.917, abs=1e-3)


def test_prune_model_returns_new_model_and_zeroes_unit_biases():
    model = mlp.build_mlp((6, 5), 3, input_shape=(4,), use_bias=True)
    for layer in mlp.dense_layers(model):
        layer.bias.assign(np.ones(layer.bias.shape))
    before = mlp.get_kernels(model)
    pruned = mlp.prune_model(model, 50, "unit")
    kernels, biases = mlp.get_kernels(pruned), mlp.get_biases(pruned)
    dead = np.all(kernels[0] == 0, axis=0)
    assert dead.sum() == 3
    np.testing.assert_array_equal(biases[0][dead], 0)
    np.testing.assert_array_equal(biases[-1], 1)
    assert kernels[-1].tobytes() == before[-1].tobytes()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, mlp.get_kernels(model)))
    # a dead unit outputs exactly zero
    acts = np.maximum(np.random.default_rng(0).random((5, 4)) @ kernels[0] + biases[0], 0)
    assert (acts[:, dead] == 0).all()
    weight = mlp.prune_model(model, 50, "weight")
    np.testing.assert_array_equal(mlp.get_biases(weight)[0], 1)


def test_plot_returns_axes_with_one_curve_per_method(tiny, tmp_path):
    kernels, x, y = tiny
    df = pd.concat([sweep(kernels, x, y, dataset="tiny", ks=[0, 50, 90], seed=s, progress=False) for s in (0, 1)])
    ax = plot_sparsity_vs_accuracy(df)
    assert isinstance(ax, matplotlib.axes.Axes)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "weight" in labels and "unit" in labels and any(lbl.startswith("dense") for lbl in labels)
    written = save_results(Results(sweep=df), tmp_path)
    assert {p.name for p in written} == {"sweep.csv", "sparsity_vs_accuracy.png"}
    pd.testing.assert_frame_equal(load_results(tmp_path).sweep, df.reset_index(drop=True), atol=1e-4)
    summary = summary_table(df)
    assert (summary.seeds == 2).all() and len(summary) == 6
    assert summary["ci95"].notna().all()


def test_confidence_band_is_the_t_interval_over_seeds(tiny):
    from prunelib.reporting.stats import ci95_interval

    kernels, x, y = tiny
    df = pd.concat(
        [
            sweep(kernels, x, y, dataset="tiny", methods=["weight"], ks=[0, 50], seed=s, progress=False).assign(
                accuracy=lambda d, s=s: d["accuracy"] + 2 * s
            )
            for s in (0, 1, 2)
        ]
    )
    ax = plot_sparsity_vs_accuracy(df)
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    lo, hi = ci95_interval(df.loc[df.k == 50, "accuracy"])
    assert band.min() == pytest.approx(min(lo, ci95_interval(df.loc[df.k == 0, "accuracy"])[0]))
    assert band.max() == pytest.approx(max(hi, ci95_interval(df.loc[df.k == 0, "accuracy"])[1]))


def test_main_figure_plots_weights_remaining_on_a_log_axis(tiny):
    """The challenge's figure gives k = 90 ... 99 room: x = 100 - sparsity, log, dense on the left."""
    from prunelib.reporting import figures

    kernels, x, y = tiny
    df = pd.concat([sweep(kernels, x, y, dataset="tiny", ks=[0, 50, 90, 99], seed=s, progress=False) for s in (0, 1)])
    ax = figures.sparsity_vs_accuracy(df, "tiny").axes[0]
    assert ax.get_xscale() == "log" and "remaining" in ax.get_xlabel()
    left, right = ax.get_xlim()
    assert left > 100 and right < 100 - df["sparsity"].max()  # dense on the left, k = 99 inside
    drawn = np.concatenate([line.get_xdata() for line in ax.get_lines() if len(line.get_xdata()) > 2])
    np.testing.assert_allclose(sorted(set(np.round(drawn, 6))), sorted(set(np.round(100 - df["sparsity"], 6))))


def test_sweep_reads_methods_and_ks_once_so_generators_give_every_row(tiny):
    kernels, x, y = tiny
    from_lists = sweep(kernels, x, y, dataset="tiny", ks=[50, 90], progress=False)
    from_generators = sweep(
        kernels, x, y, dataset="tiny", methods=iter(["weight", "unit"]), ks=(k for k in (50, 90)), progress=False
    )
    assert len(from_lists) == 4
    pd.testing.assert_frame_equal(from_generators, from_lists)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"methods": ["weight", "wieght"]}, "unknown pruning method 'wieght'"),
        ({"ks": [50, 101]}, "101"),
        ({"y": np.full(50, 3)}, "labels must lie in"),
        ({"x": np.zeros((50, 19), np.float32)}, "flattening to the first kernel's 20 inputs"),
        ({"biases": [np.zeros(16)]}, "3 kernels but 1 biases"),
        ({"biases": [np.zeros(1), None, None]}, r"bias 0 has shape \(1,\)"),  # would broadcast
        ({"biases": [np.full(16, np.nan), None, None]}, "bias 0 contains 16 NaN"),
    ],
)
def test_sweep_checks_every_argument_before_any_pruning(tiny, monkeypatch, bad, match):
    kernels, x, y = tiny
    monkeypatch.setattr(pruning, "compute_masks", lambda *a, **k: pytest.fail("pruning started"))
    args = {"x": x, "y": y, "methods": ("weight", "unit"), "ks": (50,), "biases": None, **bad}
    with pytest.raises(ValueError, match=match):
        sweep(kernels, args.pop("x"), args.pop("y"), dataset="tiny", progress=False, **args)
