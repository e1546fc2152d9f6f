"""Post-training pruning (prunelib.core.post_training): the contract of every registered method, and
value checks that can fail (hand-computed selections, OBS against brute force, orderings of error)."""

import numpy as np
import pytest

from prunelib.core import allocation, layer_fit, network_targets, unit_selection
from prunelib.core import post_training as pt
from prunelib.core.forward import logits
from prunelib.core.pruning import count_to_prune
from prunelib.core.reconstruct import fit_layer, logit_matching_targets

METHODS = list(pt.POST_TRAINING_METHODS)


def _net(seed=0, sizes=(24, 16, 12, 4), n=96, bias=False):
    rng = np.random.default_rng(seed)
    ws = [rng.normal(0, a**-0.5, (a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [rng.normal(0, 0.1, b).astype(np.float32) for b in sizes[1:]] if bias else None
    return ws, bs, rng.random((n, sizes[0]), dtype=np.float32)


def _run(name, ws, bs, k, x):
    if bs is None:
        new, masks = pt.post_training_prune(ws, k, x, method=name)
        return new, None, masks
    return pt.post_training_prune_with_biases(ws, bs, k, x, method=name)


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("name", METHODS)
def test_contract_of_every_method(name, bias):
    ws, bs, x = _net(bias=bias)
    copies = [w.copy() for w in ws], None if bs is None else [b.copy() for b in bs], x.copy()
    spec = pt.POST_TRAINING_METHODS[name]
    for k in (50, 90):
        new, new_b, masks = _run(name, ws, bs, k, x)
        assert all(m.dtype == bool and m.shape == w.shape for m, w in zip(masks, ws))
        assert all(np.all(w[~m] == 0) for w, m in zip(new, masks))
        assert np.array_equal(new[-1], ws[-1]) and new[-1].dtype == ws[-1].dtype and masks[-1].all()
        assert all(np.isfinite(w).all() and w.dtype == np.float32 for w in new)
        pruned = [int((~m).sum()) for m in masks[:-1]]
        if spec.granularity == "unit":
            assert [int((~m.any(axis=0)).sum()) for m in masks[:-1]] == [count_to_prune(w.shape[1], k) for w in ws[:-1]]
            if bs is not None:  # removed units output exactly 0
                assert all(np.all(b[~m.any(axis=0)] == 0) for b, m in zip(new_b[:-1], masks[:-1]))
        elif spec.allocation != "uniform":
            assert sum(pruned) == count_to_prune(sum(w.size for w in ws[:-1]), k)
        else:
            assert pruned == [count_to_prune(w.size, k) for w in ws[:-1]]
        if bs is not None:
            assert np.array_equal(new_b[-1], bs[-1])
    assert all(np.array_equal(a, b) for a, b in zip(ws, copies[0]))
    assert bs is None or all(np.array_equal(a, b) for a, b in zip(bs, copies[1]))
    assert np.array_equal(x, copies[2])


@pytest.mark.parametrize("name", METHODS)
def test_identity_at_k0(name):
    ws, bs, x = _net(bias=True)
    new, masks = pt.post_training_prune(ws, 0, x, method=name)
    assert all(np.array_equal(a, b) for a, b in zip(new, ws)) and all(m.all() for m in masks)
    new, new_b, _ = pt.post_training_prune_with_biases(ws, bs, 0, x, method=name)
    assert all(np.array_equal(a, b) for a, b in zip(new, ws)) and all(np.array_equal(a, b) for a, b in zip(new_b, bs))


def test_bad_inputs_raise():
    ws, _, x = _net()
    with pytest.raises(ValueError, match="101"):
        pt.post_training_prune(ws, 101, x)
    with pytest.raises(ValueError, match="nope.*obs-gradual"):
        pt.post_training_prune(ws, 50, x, method="nope")
    with pytest.raises(ValueError, match="damping"):
        pt.post_training_prune(ws, 50, x, damping=0)
    with pytest.raises(ValueError, match="damping"):
        pt.post_training_prune(ws, 50, x, damping=float("nan"))
    with pytest.raises(ValueError, match="too few.*24"):
        pt.post_training_prune(ws, 50, x[:10])
    with pytest.raises(ValueError, match="features"):
        pt.post_training_prune(ws, 50, x[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        pt.post_training_prune(ws, 50, np.where(x > 0.5, np.nan, x))
    with pytest.raises(ValueError, match="needs update='lstsq'"):
        pt.PostTrainingMethod(update="none", schedule="gradual")
    with pytest.raises(ValueError, match="selection"):
        pt.PostTrainingMethod(granularity="unit", selection="wanda")
    with pytest.raises(ValueError, match="biases"):
        pt.post_training_prune_with_biases(ws, None, 50, x)


def test_wanda_selection_on_a_hand_computed_3x2_example():
    w = np.array([[1.0, -4.0], [3.0, 0.5], [-2.0, 2.0]])
    x = np.array([[3.0, 0.0, 1.0], [4.0, 1.0, 0.0]])  # input norms 5, 1, 1
    # |w| * norm: [[5, 20], [3, 0.5], [2, 2]]; the three smallest: 0.5, then 2 and 2
    scores = pt.wanda_scores(w, x)
    assert scores.tolist() == [[5.0, 20.0], [3.0, 0.5], [2.0, 2.0]]
    ws = [w, np.ones((2, 1))]
    _, masks = pt.post_training_prune(ws, 50, x.repeat(2, axis=0), method="wanda")
    assert (~masks[0]).tolist() == [[False, False], [False, True], [True, True]]


def test_obs_score_is_the_error_of_removing_one_weight_and_refitting():
    rng = np.random.default_rng(3)
    x, w = rng.random((40, 5)), rng.standard_normal((5, 2))
    damping = 0.05
    lam = damping * np.mean(np.diag(x.T @ x))
    scores = pt.obs_scores(w, x, damping)
    for i in range(5):
        for j in range(2):
            mask = np.ones(w.shape, bool)
            mask[i, j] = False
            v = fit_layer(x, x @ w, w, mask, damping=damping, exact=True)
            d = v[:, j] - w[:, j]
            brute = np.sum((x @ d) ** 2) + lam * np.sum(d**2)
            assert scores[i, j] == pytest.approx(brute, rel=1e-3)


def test_gradual_levels():
    assert pt.gradual_levels(0) == [0.0]
    assert pt.gradual_levels(50) == [50.0]
    assert pt.gradual_levels(98)[:3] == [50.0, 75.0, 87.5] and pt.gradual_levels(98)[-1] == 98.0


def _teacher():
    """A network whose calibration inputs are known; errors are measured on the dense logits."""
    ws, _, x = _net(seed=5, sizes=(32, 24, 16, 6), n=400)
    return ws, x


def _logit_error(name, k, ws, x):
    new, _ = pt.post_training_prune(ws, k, x, method=name)
    return float(np.mean((logits(new, x) - logits(ws, x)) ** 2))


@pytest.mark.parametrize("k", [70, 90])
def test_obs_beats_magnitude_and_gradual_beats_one_shot(k):
    ws, x = _teacher()
    magnitude, fitted = _logit_error("magnitude", k, ws, x), _logit_error("magnitude+lstsq", k, ws, x)
    obs, gradual = _logit_error("obs+lstsq", k, ws, x), _logit_error("obs-gradual", k, ws, x)
    assert fitted < magnitude
    assert obs <= fitted
    assert gradual <= obs


def test_activation_aware_unit_selection_beats_column_norm():
    ws, x = _teacher()
    # the inputs' scale differs by feature, so column norms mislead
    x = x * np.linspace(0.05, 2.0, x.shape[1], dtype=np.float32)
    norm, activation = (_logit_error(n, 50, ws, x) for n in ("unit-norm+lstsq", "unit-activation+lstsq"))
    assert activation < norm


def test_normal_equations_factor_keeps_the_fit():
    rng = np.random.default_rng(0)
    x, y, w = rng.random((50, 6)), rng.standard_normal((50, 3)), rng.standard_normal((6, 3))
    x[:, 2] = 0.0  # an always-zero input makes the Gram matrix singular
    mask = rng.random((6, 3)) > 0.4
    direct = fit_layer(x, y, w, mask, exact=True)
    assert np.allclose(layer_fit.Normal(x, x.T @ x).fit(y, w, mask, 0.01), direct, atol=1e-4)


def test_per_unit_allocation_spreads_the_kept_weights_by_units():
    ws = [np.ones((100, 30)), np.ones((30, 10)), np.ones((10, 2))]
    counts = allocation.power_counts(ws[:-1], 90)  # 3,300 weights, 330 kept over 40 units
    assert sum(counts) == 2970 and [w.size - c for w, c in zip(ws, counts)] == [248, 82]
    # a layer that would keep more than it has keeps everything
    assert allocation.power_counts([np.ones((100, 30)), np.ones((2, 10))], 50) == [1510, 0]


@pytest.mark.parametrize("seed", range(20))
def test_every_allocation_removes_the_exact_total_and_no_layer_more_than_it_has(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 400, rng.integers(1, 5)).tolist()
    k = float(rng.choice([0, 12.5, 50, 90, 99, 99.9, 100, rng.uniform(0, 100)]))
    weights = rng.uniform(0.01, 5, len(sizes))
    for counts in (
        allocation.spread_counts(sizes, k, weights),
        allocation.owl_counts(rng.random(len(sizes)), sizes, k, lam=0.5),
    ):
        assert sum(counts) == count_to_prune(sum(sizes), k)
        assert all(0 <= c <= n for c, n in zip(counts, sizes))


def test_power_and_owl_allocations_keep_more_where_they_should():
    ws = [np.ones((100, 30)), np.ones((30, 10))]
    uniform = allocation.power_counts(ws, 90, alpha=1.0)
    assert uniform == [count_to_prune(w.size, 90) for w in ws]  # alpha = 1 keeps the same fraction
    assert allocation.power_counts(ws, 90, alpha=-0.5)[1] < allocation.power_counts(ws, 90)[1] < uniform[1]
    sizes = [w.size for w in ws]
    assert allocation.owl_counts([0.02, 0.02], sizes, 90) == uniform  # equal outlier ratios: uniform
    first_more, second_more = (
        allocation.owl_counts([0.05, 0.01], sizes, 90),
        allocation.owl_counts([0.01, 0.05], sizes, 90),
    )
    assert first_more[0] < uniform[0] < second_more[0]  # the layer with more outliers removes fewer
    with pytest.raises(ValueError, match="weights"):
        allocation.spread_counts([10, 10], 50, [1.0, 0.0])
    with pytest.raises(ValueError, match="lam"):
        allocation.owl_counts([0.1, 0.2], [10, 10], 50, lam=0.51)


@pytest.mark.parametrize("alpha", [-120.0, -30.0, 30.0, 105.0, 110.0])
def test_extreme_exponents_neither_overflow_nor_remove_more_than_a_layer_has(alpha):
    ws = [np.ones((784, 300)), np.ones((300, 100))]
    counts = allocation.power_counts(ws, 90, alpha)
    assert sum(counts) == count_to_prune(265_200, 90) and all(0 <= c <= w.size for c, w in zip(counts, ws))
    assert allocation.spread_counts([10, 10], 50, [1e308, 1e308]) == [5, 5]


def test_bad_allocation_arguments_raise():
    with pytest.raises(ValueError, match="alpha must be"):
        allocation.power_counts([np.ones((4, 2))], 50, "x")
    for ratios in ([0.1], [0.1, 0.2, 0.3], [0.1, float("nan")], []):
        with pytest.raises(ValueError, match="ratios must be"):
            allocation.owl_counts(ratios, [10, 20], 50)
    with pytest.raises(ValueError, match="lam must"):
        allocation.owl_counts([0, 1, 1, 1, 1], [100] * 5, 90, lam=0.9)  # a factor would be negative
    assert sum(allocation.owl_counts([0, 1, 1, 1, 1], [100] * 5, 90, lam=0.5)) == 450
    with pytest.raises(ValueError, match="sizes must be"):
        allocation.spread_counts([], 50, [])
    with pytest.raises(ValueError, match="global allocation"):
        pt.PostTrainingMethod(selection="greedy", allocation="global")


def test_outlier_ratio_counts_scores_above_m_times_the_mean():
    w = np.ones((10, 10))
    w[0, 0] = 100.0  # mean score 1.99: one weight above 5x
    assert allocation.outlier_ratio(w, np.ones((4, 10))) == 0.01
    assert allocation.outlier_ratio(np.ones((10, 10)), np.ones((4, 10))) == 0.0


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_search_keeps_the_tried_allocation_that_agrees_most_with_the_dense_predictions(bias):
    ws, bs, x = _net(seed=1, bias=bias)
    searched = _run("search-obs-gradual", ws, bs, 90, x)
    errors = {}
    for alpha in allocation.SEARCH_ALPHAS:
        counts = allocation.power_counts(ws[:-1], 90, alpha)
        spec = pt.PostTrainingMethod(selection="obs", schedule="gradual", allocation="per-unit")
        xs = x.astype(np.float64)
        trial = pt._prune_layers(spec, ws[:-1], bs or [None] * len(ws), xs, counts, None, ws[-1], 0.01)
        dense = pt._dense_logits(ws[:-1], bs or [None] * len(ws), ws[-1], xs)
        z = logits([*trial[0], ws[-1]], xs, None if bs is None else [*trial[1], bs[-1]])
        errors[alpha] = ((np.mean(z.argmax(1) != dense.argmax(1)), np.mean((z - dense) ** 2)), trial[2])
    best = min(errors, key=lambda a: errors[a][0])
    assert all(np.array_equal(a, b) for a, b in zip(searched[2], errors[best][1]))  # the best one's masks
    # here agreement and the logit error disagree, and neither picks per-unit: the choice is tested
    assert best != 0.0 and best != min(errors, key=lambda a: errors[a][0][1])


def test_nonnegative_rows_match_scipy_nnls():
    from scipy.optimize import nnls

    rng = np.random.default_rng(0)
    v, z = rng.standard_normal((4, 6)), rng.standard_normal((20, 6)) * 3
    ours = unit_selection.nonnegative_rows(z, v, iters=2000)
    exact = np.array([nnls(v.T, row)[0] for row in z])
    assert (ours >= 0).all() and np.allclose(ours, exact, atol=1e-6)
    batched = unit_selection.nonnegative_rows(z, np.stack([v, v[::-1]]), iters=2000)  # one problem per batch entry
    assert np.allclose(batched[0], exact, atol=1e-6) and np.allclose(batched[1], exact[:, ::-1], atol=1e-6)


def _detector_layer(rng, n=400):
    """A last hidden layer of 8 units over 3 classes: units 5, 6, 7 each raise one class (small rows
    of the logit kernel), units 0-4 have large rows that raise every class alike (no effect on the
    softmax, every effect on a score of each unit alone)."""
    v = np.vstack([np.repeat(np.arange(5.0, 10.0)[:, None], 3, axis=1), 0.5 * np.eye(3)])
    h = rng.random((n, 8))
    h[:, 5:] *= 4.0 * rng.random((n, 1))
    return h, v


def test_logit_targets_are_nonnegative_and_reproduce_reachable_logits():
    h, v = _detector_layer(np.random.default_rng(1))
    keep = np.array([False, True, False, False, False, True, True, True])
    t = unit_selection.logit_targets(h, keep, v, iters=3000)
    assert (t >= 0).all() and np.all(t[:, ~keep] == 0)
    # the detectors span every centred logit vector with non-negative weights: the fit is exact
    centred = lambda a: a - a.mean(axis=1, keepdims=True)  # noqa: E731
    assert np.allclose(centred(t @ v), centred(h @ v), atol=1e-6)


def test_logit_targets_keep_predictions_the_clipped_minimum_norm_change_loses():
    rng = np.random.default_rng(3)
    v = np.vstack([np.eye(3), [-2.0, -1.0, -2.0]])  # the removed unit lowers every class
    h, keep = rng.random((200, 4)) * [1, 1, 1, 3], np.array([True, True, True, False])
    dense = np.argmax(h @ v, axis=1)
    ours = unit_selection.logit_targets(h, keep, v, iters=3000)
    assert np.array_equal(np.argmax(ours @ v, axis=1), dense)
    minimum_norm = logit_matching_targets(h, keep, v, np.float64)
    assert (minimum_norm < 0).any()  # it ignores the ReLU, and clipping changes predictions
    assert not np.array_equal(np.argmax(np.maximum(minimum_norm, 0) @ v, axis=1), dense)


def test_greedy_logit_units_find_the_class_detectors_a_score_per_unit_misses():
    h, v = _detector_layer(np.random.default_rng(2))
    keep = unit_selection.greedy_logit_units(h, v, None, 3)
    assert np.flatnonzero(keep).tolist() == [5, 6, 7]
    activation = np.linalg.norm(h, axis=0) * np.linalg.norm(v, axis=1)
    assert not set(np.argsort(-activation)[:3]) & {5, 6, 7}
    # beyond one unit per class the rest come by the activation score
    assert np.flatnonzero(unit_selection.greedy_logit_units(h, v, None, 5)).tolist() == sorted(
        [5, 6, 7, *np.argsort(-activation)[:2]]
    )


@pytest.mark.parametrize("k", [70, 90])
def test_network_targets_bring_the_logits_closer_than_layer_targets(k):
    ws, x = _teacher()
    layer = _logit_error("per-unit-obs-gradual", k, ws, x)
    assert _logit_error("per-unit-obs-gradual+network", k, ws, x) < layer


def test_network_targets_keep_masks_and_need_a_refit():
    ws, bs, x = _net(bias=True)
    layer = pt.post_training_prune_with_biases(ws, bs, 80, x, method="per-unit-obs-gradual")
    network = pt.post_training_prune_with_biases(ws, bs, 80, x, method="per-unit-obs-gradual+network")
    assert all(np.array_equal(a, b) for a, b in zip(layer[2], network[2]))  # same masks, new values
    assert not np.array_equal(layer[0][0], network[0][0]) and not np.array_equal(layer[1][0], network[1][0])
    with pytest.raises(ValueError, match="update='lstsq'"):
        pt.PostTrainingMethod(update="none", targets="network")
    with pytest.raises(ValueError, match="rounds"):
        pt.PostTrainingMethod(targets="network", rounds=0)


def test_network_rounds_never_raise_their_objective():
    ws, bs, x = _net(bias=True, sizes=(20, 16, 12, 5), n=400)
    x = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)  # centred inputs
    spec = pt.POST_TRAINING_METHODS["per-unit-obs-gradual"]
    new, new_b, masks = pt.post_training_prune_with_biases(ws, bs, 80, x, method=spec)
    h = x.astype(np.float64)
    for w, b in zip(ws[:-1], bs[:-1]):
        h = np.maximum(h @ w + b, 0)
    dense = h @ ws[-1] + bs[-1]
    history = []
    network_targets.network_rounds(
        new[:-1], new_b[:-1], masks[:-1], ws[-1], bs[-1], x.astype(np.float64), dense, 12, 0.01, history
    )
    assert len(history) == 12 and all(b <= a * (1 + 1e-9) for a, b in zip(history, history[1:]))


def test_greedy_logit_units_judge_predictions_with_the_logit_bias():
    # the bias makes class 1 the dense prediction; unit 0 alone keeps it, unit 1 alone (the closer
    # fit of the centred logits, chosen when the bias is left out) turns it into class 0
    h, v = np.array([[1.0, 1.0, 0.0]] * 10), np.array([[1.0, 0.8, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert np.flatnonzero(unit_selection.greedy_logit_units(h, v, np.array([0.0, 1.5, 0.0]), 1)).tolist() == [0]
    assert np.flatnonzero(unit_selection.greedy_logit_units(h, v, None, 1)).tolist() == [1]
