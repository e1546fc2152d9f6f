"""Reconstruction with biases and activations, and numerics that fail loudly (issues 21, 24)."""

import warnings

import numpy as np
import pytest

from prunelib.core import forward
from prunelib.core.pruning import prune_biases, unit_masks, weight_masks
from prunelib.core.reconstruct import reconstruct, reconstruct_with_biases


def _net(seed=0, sizes=(10, 8, 6, 3)):
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal((a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [rng.standard_normal(b).astype(np.float32) for b in sizes[1:]]
    return ws, bs, rng.random((64, sizes[0]), dtype=np.float32)


def test_large_calibration_inputs_are_redone_in_float64_and_stay_finite():
    ws, _, x = _net()
    masks = weight_masks(ws, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow RuntimeWarning escapes
        big = reconstruct(ws, masks, x * np.float32(1e30))
    assert all(np.isfinite(w).all() for w in big)
    assert all(np.all(w[~m] == 0) for w, m in zip(big, masks))


def test_results_not_finite_even_in_float64_raise():
    ws, _, x = _net()
    with pytest.raises(ValueError, match="not finite even in float64"):
        reconstruct(ws, weight_masks(ws, 50), x.astype(np.float64) * 1e300)


def test_integer_kernels_come_back_as_floats_not_wrapped():
    rng = np.random.default_rng(0)
    ws = [rng.integers(-100, 100, (10, 8)).astype(np.int8), rng.integers(-100, 100, (8, 3)).astype(np.int8)]
    out = reconstruct(ws, weight_masks(ws, 50), rng.random((32, 10)) * 50)
    assert out[0].dtype == np.float32
    np.testing.assert_array_equal(out[1], ws[1])


@pytest.mark.parametrize("bad", ["logit", "float", "shape"])
def test_bad_masks_are_refused(bad):
    ws, _, x = _net()
    masks = weight_masks(ws, 50)
    if bad == "logit":
        masks[-1][0, 0] = False
    elif bad == "float":
        masks[0] = masks[0].astype(np.float32)
    else:
        masks[0] = masks[0][:, :-1]
    with pytest.raises(ValueError, match="logit|boolean|shape"):
        reconstruct(ws, masks, x)


def _error(ws, bs, masks, x, acts):
    """Squared error of the logits up to a shift per row (what softmax and argmax see; the logit
    targets of a layer whose units were removed are defined up to that shift)."""

    def centred(z):
        return z - z.mean(axis=1, keepdims=True)

    dense = centred(forward.logits(ws, x, bs, acts=acts))
    return lambda w, b: float(np.mean((centred(forward.logits(w, x, b, acts=acts)) - dense) ** 2))


@pytest.mark.parametrize("act", [None, np.tanh])
@pytest.mark.parametrize("method", ["weight", "unit"])
def test_fitting_biases_beats_keeping_them(method, act):
    ws, bs, x = _net(1)
    masks = (weight_masks if method == "weight" else unit_masks)(ws, 50)
    acts = None if act is None else [act, act, None]
    pruned_bs = prune_biases(bs, masks, method)
    err = _error(ws, bs, masks, x, acts)
    # Weight pruning: layer targets, since the claim is about fitting biases; on these 8-input
    # layers 50 % can empty a whole column, and the last layer's logit targets (defined up to a
    # shift per row, fitted by both) then decide the end-to-end error instead.
    targets = method == "unit"
    kept = reconstruct(ws, masks, x, biases=pruned_bs, acts=acts, logit_targets=targets)
    new_ws, new_bs = reconstruct_with_biases(
        ws, bs, masks, x, pruned_biases=pruned_bs, acts=acts, logit_targets=targets
    )
    assert all(np.all(w[~m] == 0) for w, m in zip(new_ws, masks))
    np.testing.assert_array_equal(new_bs[-1], bs[-1])
    if method == "unit":  # a removed unit keeps its zeroed bias
        for b, m in zip(new_bs[:-1], masks[:-1]):
            assert np.all(b[~m.any(axis=0)] == 0)
    # layer by layer it fits at least as well; through unit pruning's fixed logit layer the
    # end-to-end error is only about equal
    assert err(new_ws, new_bs) < err(kept, pruned_bs) * (1.0 if method == "weight" else 1.01)


def test_non_elementwise_activation_is_refused():
    ws, bs, x = _net()
    with pytest.raises(ValueError, match="elementwise"):
        reconstruct(ws, weight_masks(ws, 50), x, acts=[lambda z: z.sum(axis=1), None, None])


def _ridge_columns(inputs, target, w0, mask, damping):
    """Per column j on its kept rows S: min ||inputs_S w - target_j||^2 + lam ||w - w0_Sj||^2 by lstsq,
    with lam = damping times the mean diagonal of inputs^T inputs."""
    lam = damping * np.mean(np.sum(inputs**2, axis=0))
    out = np.zeros(mask.shape)
    for j in range(mask.shape[1]):
        s = mask[:, j]
        if s.any():
            a = np.vstack([inputs[:, s], np.sqrt(lam) * np.eye(s.sum())])
            rhs = np.concatenate([target[:, j], np.sqrt(lam) * w0[s, j]])
            out[s, j] = np.linalg.lstsq(a, rhs, rcond=None)[0]
    return out


def _reference(ws, bs, masks, x, damping=1e-3, acts=None, fit_biases=False, logit_targets=False, pruned_bs=None):
    """The layer-wise fit rendered independently in float64: targets are the dense pre-activations
    (minus a bias that is not fitted); a fitted bias is the weight of a constant-1 input; the last
    hidden layer's targets with ``logit_targets`` are the non-negative activations of the kept units
    that best reproduce the dense logits up to a shift per row (scipy's NNLS, row by row)."""
    ws = [np.asarray(w, np.float64) for w in ws]
    bs = bs or [None] * len(ws)
    pruned_bs = pruned_bs or bs
    acts = acts or [None] * len(ws)
    h_dense = h_pruned = x.reshape(len(x), -1).astype(np.float64)
    out_w, out_b, changed = [], [], False
    for i, (w, m) in enumerate(zip(ws[:-1], masks[:-1])):
        act = acts[i] or (lambda z: np.maximum(z, 0))
        b = np.zeros(w.shape[1]) if bs[i] is None else np.asarray(bs[i], np.float64)
        pre_dense = h_dense @ w + b
        if not changed and m.all():
            out_w.append(w)
            out_b.append(bs[i])
            h_dense = h_pruned = act(pre_dense)
            continue
        fit_b = fit_biases and bs[i] is not None
        target = pre_dense
        keep = m.any(axis=0)
        if logit_targets and i == len(ws) - 2 and acts[i] is None and keep.any() and not keep.all():
            from scipy.optimize import nnls

            h, w_out = np.maximum(pre_dense, 0), ws[-1]
            v = w_out - w_out.mean(axis=1, keepdims=True)  # logits up to a shift per row
            wanted = np.zeros_like(h)
            wanted[:, keep] = [nnls(v[keep].T, row)[0] for row in h @ v]
            positive = wanted > 1e-9 * np.abs(wanted).max()  # NNLS leaves ~1e-16 where it means 0
            target = np.where(positive, wanted, np.minimum(pre_dense, 0.0))
        if fit_b:
            fitted = _ridge_columns(
                np.hstack([h_pruned, np.ones((len(x), 1))]),
                target,
                np.vstack([w * m, b]),
                np.vstack([m, keep]),
                damping,
            )
            new, b = fitted[:-1], np.where(keep, fitted[-1], np.asarray(pruned_bs[i], np.float64))
        else:
            new = _ridge_columns(h_pruned, target - b, w * m, m, damping)
        out_w.append(new)
        out_b.append(b if fit_b else bs[i])
        changed = True
        h_dense = act(pre_dense)
        h_pruned = act(h_pruned @ new + b)
    return out_w + [ws[-1]], out_b + [bs[-1]]


def _assert_layers_close(got, want, rtol=2e-3, atol=2e-3):
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("act", [None, np.tanh])
def test_fitted_biases_match_an_independent_lstsq_with_a_constant_input(method, act):
    ws, bs, x = _net(2)
    ws, bs, x = [w.astype(np.float64) for w in ws], [b.astype(np.float64) for b in bs], x.astype(np.float64)
    masks = (weight_masks if method == "weight" else unit_masks)(ws, 50)
    acts = None if act is None else [act, act, None]
    pruned_bs = prune_biases(bs, masks, method)
    new_ws, new_bs = reconstruct_with_biases(
        ws, bs, masks, x, damping=1e-3, pruned_biases=pruned_bs, logit_targets=False, acts=acts
    )
    ref_ws, ref_bs = _reference(ws, bs, masks, x, acts=acts, fit_biases=True, pruned_bs=pruned_bs)
    _assert_layers_close(new_ws, ref_ws)
    _assert_layers_close(new_bs, ref_bs)


@pytest.mark.parametrize("fit_biases", [False, True])
def test_logit_targets_match_an_independent_nnls_rendering(fit_biases):
    """Unit pruning of a small last hidden layer: the kept units are fitted to scipy's non-negative
    least squares of the centred dense logits; where that target is 0 a negative dense
    pre-activation stays the target."""
    ws, bs, x = _net(4, sizes=(6, 5, 4, 3))
    ws, bs, x = [w.astype(np.float64) for w in ws], [b.astype(np.float64) for b in bs], x.astype(np.float64)
    masks = unit_masks(ws, 50)
    if fit_biases:
        new_ws, new_bs = reconstruct_with_biases(ws, bs, masks, x, damping=1e-3, logit_targets=True)
    else:
        new_ws, new_bs = reconstruct(ws, masks, x, damping=1e-3, biases=bs, logit_targets=True), bs
    ref_ws, ref_bs = _reference(ws, bs, masks, x, fit_biases=fit_biases, logit_targets=True)
    _assert_layers_close(new_ws, ref_ws)
    _assert_layers_close(new_bs, ref_bs)
    plain = reconstruct_with_biases(ws, bs, masks, x, damping=1e-3, logit_targets=False)[0]
    assert not np.allclose(plain[1], new_ws[1], rtol=1e-2, atol=1e-2)  # the targets did change the fit


def test_a_fully_kept_layer_after_a_pruned_one_is_refitted_with_its_own_activation():
    """Once a layer changed, the next one's inputs differ from the dense network's: it is re-fitted
    even if its mask keeps everything, and an unchanged first layer passes on its own activation."""
    ws, bs, x = _net(4)
    ws, x = [w.astype(np.float64) for w in ws], x.astype(np.float64)
    acts = [np.tanh, np.tanh, None]
    full = [np.ones(w.shape, bool) for w in ws]
    for masks in ([weight_masks(ws, 50)[0], *full[1:]], [full[0], weight_masks(ws, 50)[1], full[2]]):
        out = reconstruct(ws, masks, x, damping=1e-3, logit_targets=False, acts=acts)
        _assert_layers_close(out, _reference(ws, None, masks, x, acts=acts)[0])
        assert not np.allclose(out[1], ws[1], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "dtype, expected",
    [(np.int8, np.float32), (np.int32, np.float64), (np.float16, np.float16), (np.float64, np.float64)],
)
@pytest.mark.parametrize("k", [0, 50])
def test_kernels_and_biases_come_back_in_a_float_dtype_that_holds_them(dtype, expected, k):
    rng = np.random.default_rng(0)
    ws = [(rng.standard_normal((10, 8)) * 20).astype(dtype), (rng.standard_normal((8, 3)) * 20).astype(dtype)]
    bs = [(rng.standard_normal(8) * 20).astype(dtype), None]
    masks = weight_masks(ws, k)
    x = rng.random((32, 10))
    out = reconstruct(ws, masks, x)
    new_ws, new_bs = reconstruct_with_biases(ws, bs, masks, x)
    assert [w.dtype for w in out[:-1]] == [w.dtype for w in new_ws[:-1]] == [np.dtype(expected)]
    assert new_bs[0].dtype == expected and new_bs[1] is None
    assert out[-1].dtype == new_ws[-1].dtype == dtype
    if k == 0:  # nothing changed: the values as given
        np.testing.assert_array_equal(out[0], ws[0].astype(expected))
        np.testing.assert_array_equal(new_bs[0], bs[0].astype(expected))


@pytest.mark.parametrize("k", [0, 50])
def test_results_share_no_memory_with_the_inputs(k):
    ws, bs, x = _net()
    masks = weight_masks(ws, k)
    out = reconstruct(ws, masks, x, biases=bs)
    new_ws, new_bs = reconstruct_with_biases(ws, bs, masks, x)
    for given, results in [(ws, out), (ws, new_ws), (bs, new_bs)]:
        for i, (a, b) in enumerate(zip(given, results)):
            assert not np.shares_memory(a, b)
            if k == 0 or i == len(given) - 1:  # unchanged: equal values in a copy
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("none_at", [(0,), (1,), (2,), (1, 2), (0, 1, 2)])
@pytest.mark.parametrize("k", [0, 50])
def test_a_layer_without_bias_gets_none_back_and_the_others_their_bias(none_at, k):
    ws, bs, x = _net()
    bs = [None if i in none_at else b for i, b in enumerate(bs)]
    masks = weight_masks(ws, k)
    new_bs = reconstruct_with_biases(ws, bs, masks, x)[1]
    assert [b is None for b in new_bs] == [b is None for b in bs]
    for b, new in zip(bs, new_bs):
        if b is not None:
            assert new.shape == b.shape and new.dtype == b.dtype
    if bs[-1] is not None:
        np.testing.assert_array_equal(new_bs[-1], bs[-1])
    if k == 0 and bs[0] is not None:
        np.testing.assert_array_equal(new_bs[0], bs[0])


def test_biases_must_be_given_to_fit_them():
    ws, _, x = _net()
    with pytest.raises(
        ValueError,
        match=r"^biases must be a list with one bias \(or None\) per kernel; use reconstruct\(\) for a model "
        "without biases$",
    ):
        reconstruct_with_biases(ws, None, weight_masks(ws, 50), x)


@pytest.mark.parametrize("bad", ["short", "none-for-a-bias", "shape"])
def test_pruned_biases_must_match_biases(bad):
    ws, bs, x = _net()
    masks = weight_masks(ws, 50)
    pruned = {"short": bs[:-1], "none-for-a-bias": [bs[0], None, bs[2]], "shape": [bs[0], bs[1][:-1], bs[2]]}[bad]
    with pytest.raises(
        ValueError, match="^pruned_biases must match biases: one per layer, None where biases has None, same shapes$"
    ):
        reconstruct_with_biases(ws, bs, masks, x, pruned_biases=pruned)
    # without pruned_biases the removed units keep the given biases
    new_ws, new_bs = reconstruct_with_biases(ws, bs, masks, x)
    same_ws, same_bs = reconstruct_with_biases(ws, bs, masks, x, pruned_biases=bs)
    for a, b in zip(new_ws + new_bs, same_ws + same_bs):
        np.testing.assert_array_equal(a, b)


def test_logit_targets_are_on_by_default_and_help_when_fitting_biases_too():
    ws, bs, x = _net(2, sizes=(16, 24, 24, 5))
    x = np.random.default_rng(3).random((300, 16), dtype=np.float32)
    masks = unit_masks(ws, 50)
    pruned_bs = prune_biases(bs, masks, "unit")
    dense = forward.logits(ws, x, bs)
    err = {}
    for targets in (None, True, False):
        kwargs = {} if targets is None else {"logit_targets": targets}
        new_ws, new_bs = reconstruct_with_biases(ws, bs, masks, x, pruned_biases=pruned_bs, **kwargs)
        err[targets] = float(np.mean((forward.logits(new_ws, x, new_bs) - dense) ** 2))
    assert err[None] == err[True] < err[False]


def test_fit_layer_redoes_a_float32_overflow_in_float64_silently():
    from prunelib.core.reconstruct import fit_layer

    rng = np.random.default_rng(0)
    x, w = rng.random((40, 6)) * 1e30, rng.standard_normal((6, 3))
    mask = np.abs(w) > 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow RuntimeWarning escapes
        fitted = fit_layer(x, x @ w, w, mask)
    assert np.isfinite(fitted).all() and np.all(fitted[~mask] == 0)
    np.testing.assert_allclose(fitted, fit_layer(x / 1e30, x @ w / 1e30, w, mask), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match=r"^the layer fit is not finite even in float64: scale the inputs \(e.g."):
        fit_layer(x / 1e30 * 1e300, x @ w, w, mask)


@pytest.mark.parametrize("scale", [1e-2, 1.0, 10.0])
@pytest.mark.parametrize("damping", [0.01, 1.0])
def test_fit_layer_damping_is_relative_to_the_mean_gram_diagonal_at_any_scale(scale, damping):
    """The ridge strength is damping * mean(diag(X^T X)), also when that mean is below 1."""
    from prunelib.core.reconstruct import fit_layer

    rng = np.random.default_rng(1)
    x, w = rng.random((20, 6)) * scale, rng.standard_normal((6, 3))
    target = x @ rng.standard_normal((6, 3))
    mask = np.abs(w) > 0.4
    expected = _ridge_columns(x, target, w, mask, damping)
    np.testing.assert_allclose(fit_layer(x, target, w, mask, damping=damping), expected, rtol=2e-3, atol=2e-3 * scale)


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.ones((8, 3)), np.ones(8)), r"^inputs \(8, 3\) and targets \(8,\) must be 2-D with the same rows$"),
        ((np.ones(8), np.ones((8, 2))), r"^inputs \(8,\) and targets \(8, 2\) must be 2-D with the same rows$"),
    ],
)
def test_fit_layer_wants_2d_inputs_and_targets(args, message):
    from prunelib.core.reconstruct import fit_layer

    with pytest.raises(ValueError, match=message):
        fit_layer(*args, np.ones((3, 2)), np.ones((3, 2), bool))


def test_fit_layer_exact_must_be_a_bool():
    from prunelib.core.reconstruct import fit_layer

    with pytest.raises(ValueError, match="^exact must be True or False, got 1$"):
        fit_layer(np.ones((8, 3)), np.ones((8, 2)), np.ones((3, 2)), np.ones((3, 2), bool), exact=1)


def test_a_kept_weight_whose_fit_underflows_keeps_its_dense_value():
    """Weights so small (float32 subnormals) that their fit rounds to zero stay kept: the mask's
    sparsity is what gets measured."""
    ws, _, x = _net(5, sizes=(10, 8, 3))
    x *= np.float32(0.49)  # every product with a subnormal weight rounds to 0: zero targets
    ws[0][:, :4] = np.float32(1e-45)  # the smallest subnormal
    masks = weight_masks(ws, 50)
    masks[0][:5, :4] = True
    out = reconstruct(ws, masks, x)
    assert np.isfinite(out[0]).all()
    assert np.all(out[0][masks[0]] != 0) and np.all(out[0][~masks[0]] == 0)
    tiny = masks[0] & (np.abs(ws[0]) < 1e-40)
    assert tiny.any()
    np.testing.assert_array_equal(out[0][tiny], ws[0][tiny])


def test_fit_layer_with_an_infinite_weight_raises_without_warnings():
    from prunelib.core.reconstruct import fit_layer

    rng = np.random.default_rng(0)
    x, w = rng.random((20, 4)), rng.standard_normal((4, 2))
    mask = np.ones((4, 2), bool)
    w[0, 0], mask[0, 0] = np.inf, False  # even a pruned one: inf * 0 is not a number
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="not finite even in float64"):
            fit_layer(x, x @ np.ones((4, 2)), w, mask)


def test_logit_matching_targets_reproduce_the_dense_logits_through_the_kept_units_only():
    """The public building block: removed units' targets are exactly 0, and where the kept rows of
    the logit kernel have full column rank the kept targets give the dense logits back."""
    from prunelib.core.reconstruct import logit_matching_targets

    rng = np.random.default_rng(3)
    h, w = rng.random((16, 6)), rng.standard_normal((6, 2))
    keep = np.array([True, False, True, True, False, True])
    before = h.copy()
    targets = logit_matching_targets(h, keep, w, np.float64)
    assert np.array_equal(h, before)  # a new array, the input untouched
    assert np.all(targets[:, ~keep] == 0)
    np.testing.assert_allclose(targets[:, keep] @ w[keep], h @ w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [50, 75, 90])
def test_unit_lstsq_of_the_sweep_is_post_trainings_unit_norm_lstsq(k):
    """One last-layer target for both: the sweep's unit masks re-fitted by reconstruct equal the
    post-training method unit-norm+lstsq (same masks, same fit)."""
    from prunelib.core.post_training import post_training_prune

    ws, _, x = _net(3, sizes=(12, 10, 8, 4))
    ours = reconstruct(ws, unit_masks(ws, k), x)
    theirs, masks = post_training_prune(ws, k, x, method="unit-norm+lstsq")
    assert all(np.array_equal(a, b) for a, b in zip(masks, unit_masks(ws, k)))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
