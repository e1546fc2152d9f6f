"""Least-squares reconstruction: masks kept exactly, logits untouched, exact where it can be."""

import numpy as np
import pytest

from prunelib.core import pruning
from prunelib.core.evaluate import evaluate_kernels
from prunelib.core.reconstruct import calibration_set, reconstruct

SIZES = (12, 10, 8, 6, 3)


def kernels(seed=0, sizes=SIZES):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]


def calib(n=64, d=SIZES[0], seed=1):
    return np.random.default_rng(seed).random((n, d)).astype(np.float32)


def forward(ws, x):
    h = x.reshape(len(x), -1).astype(np.float64)
    for i, w in enumerate(ws):
        h = h @ w
        if i < len(ws) - 1:
            h = np.maximum(h, 0)
    return h


@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("k", [0, 25, 50, 70, 90, 99])
@pytest.mark.parametrize("logit_targets", [False, True])
def test_masks_are_preserved_exactly_and_logits_are_bit_identical(method, k, logit_targets):
    ws = kernels()
    before = [w.copy() for w in ws]
    masks = pruning.compute_masks(ws, k, method)
    out = reconstruct(ws, masks, calib(), logit_targets=logit_targets)
    for w, b in zip(ws, before):  # inputs untouched
        assert w.tobytes() == b.tobytes()
    assert out[-1].tobytes() == ws[-1].tobytes()
    for w, m, o in zip(ws[:-1], masks[:-1], out[:-1]):
        assert o.dtype == w.dtype and o.shape == w.shape
        assert np.all(o[~m] == 0)  # pruned stay zero
        assert np.all(o[m] != 0)  # kept stay kept, so the measured sparsity is the mask's
        assert np.count_nonzero(~m) == (
            pruning.count_to_prune(w.size, k)
            if method == "weight"
            else pruning.count_to_prune(w.shape[1], k) * w.shape[0]
        )
    assert pruning.sparsity(out) == pytest.approx(pruning.sparsity(pruning.apply_masks(ws, masks)))


def test_identity_at_k0():
    ws = kernels()
    out = reconstruct(ws, pruning.compute_masks(ws, 0, "weight"), calib())
    for w, o in zip(ws, out):
        assert o.tobytes() == w.tobytes()


def test_exact_when_dense_weights_live_on_the_kept_support():
    """A layer whose dense weights are already zero off the mask is reproduced (to solver accuracy),
    and so is the whole network's output."""
    ws = kernels(seed=3)
    masks = pruning.compute_masks(ws, 60, "weight")
    ws = pruning.apply_masks(ws, masks)  # dense network representable by the kept support
    ws = [w.astype(np.float64) for w in ws]
    out = reconstruct(ws, masks, calib(n=200), damping=1e-6, logit_targets=False)
    for w, o in zip(ws, out):
        np.testing.assert_allclose(o, w, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(forward(out, calib()), forward(ws, calib()), rtol=1e-3, atol=1e-3)


def test_reduces_the_output_error_of_plain_pruning():
    ws = kernels(seed=5, sizes=(20, 30, 30, 4))
    x = calib(n=400, d=20)
    for method, k in [("weight", 70), ("unit", 50)]:
        masks = pruning.compute_masks(ws, k, method)
        plain = pruning.apply_masks(ws, masks)
        fixed = reconstruct(ws, masks, x)
        dense_out = forward(ws, x)
        assert np.linalg.norm(forward(fixed, x) - dense_out) < 0.8 * np.linalg.norm(forward(plain, x) - dense_out)


def test_both_solver_paths_agree_with_a_direct_solve():
    """Columns keeping few weights are solved on their support, columns keeping many by projection;
    both must equal the textbook ridge solution on the support."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(10, 6))
    mask = rng.random((10, 6)) < np.linspace(0.1, 0.95, 6)  # few to many kept per column
    mask[0] = True
    x = rng.random((50, 10))
    y = x @ rng.normal(size=(10, 6))
    out = reconstruct([w, np.ones((6, 2))], [mask, np.ones((6, 2), bool)], x, damping=0.01, logit_targets=False)[0]
    gram = x.T @ x
    lam = 0.01 * np.mean(np.diag(gram))
    target = x @ w
    for j in range(6):
        s = mask[:, j]
        a = gram[np.ix_(s, s)] + lam * np.eye(s.sum())
        expected = np.linalg.solve(a, x[:, s].T @ target[:, j] + lam * w[s, j])
        np.testing.assert_allclose(out[s, j], expected, rtol=2e-3, atol=2e-4)
    del y


def test_logit_targets_help_unit_pruning_of_the_last_hidden_layer():
    ws = kernels(seed=2, sizes=(16, 24, 24, 5))
    x = calib(n=300, d=16)
    masks = pruning.compute_masks(ws, 50, "unit")
    dense_out = forward(ws, x)
    err = {t: np.linalg.norm(forward(reconstruct(ws, masks, x, logit_targets=t), x) - dense_out) for t in (False, True)}
    assert err[True] < err[False]


def test_accuracy_on_evaluate_kernels_path_runs():
    ws = kernels()
    x = calib(n=64)
    y = np.argmax(forward(ws, x), axis=1).astype(np.int32)
    out = reconstruct(ws, pruning.compute_masks(ws, 50, "unit"), x)
    acc, _ = evaluate_kernels(out, x, y)
    assert 0 <= acc <= 100


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(x=np.zeros((5, 12), np.float32)), "too few"),
        (dict(x=np.zeros((64, 11), np.float32)), "features"),
        (dict(x=np.full((64, 12), np.nan, np.float32)), "NaN"),
        (dict(damping=0.0), "damping"),
        (dict(damping=float("nan")), "damping"),
        (dict(masks="wrong-count"), "masks"),
        (dict(masks="wrong-shape"), "shape"),
        (dict(masks="not-bool"), "boolean"),
    ],
)
def test_bad_input_raises_a_clear_error(bad, match):
    ws = kernels()
    masks = pruning.compute_masks(ws, 50, "weight")
    if bad.get("masks") == "wrong-count":
        masks = masks[:-1]
    elif bad.get("masks") == "wrong-shape":
        masks = [m.T for m in masks]
    elif bad.get("masks") == "not-bool":
        masks = [m.astype(np.float32) for m in masks]
    kwargs = {k: v for k, v in bad.items() if k not in ("x", "masks")}
    with pytest.raises(ValueError, match=match):
        reconstruct(ws, masks, bad.get("x", calib()), **kwargs)


def test_kernels_that_do_not_chain_are_rejected():
    ws = kernels()
    ws[1] = ws[1][:-1]
    with pytest.raises(ValueError, match="kernel 1 takes"):
        reconstruct(ws, [np.ones(w.shape, bool) for w in ws], calib())


def test_calibration_set_is_seeded_and_validated():
    images = np.arange(100 * 4, dtype=np.float32).reshape(100, 2, 2)
    a, b = calibration_set(images, 10, seed=1), calibration_set(images, 10, seed=1)
    assert a.shape == (10, 2, 2) and np.array_equal(a, b)
    assert not np.array_equal(a, calibration_set(images, 10, seed=2))
    for n in (0, 101, 2.5, True):
        with pytest.raises(ValueError, match="calibration size"):
            calibration_set(images, n)


@pytest.mark.parametrize("k", [0, 50, 90, 99])
def test_obs_selection_prunes_exact_counts_and_keeps_logits(k):
    from prunelib.core.reconstruct import obs_weight_masks

    ws = kernels()
    masks = obs_weight_masks(ws, k, calib())
    for w, m in zip(ws[:-1], masks[:-1]):
        assert m.shape == w.shape and np.count_nonzero(~m) == pruning.count_to_prune(w.size, k)
    assert masks[-1].all()
    # With an identity-like Hessian (whitened inputs) OBS saliency is magnitude.
    x = np.eye(SIZES[0], dtype=np.float32).repeat(20, axis=0)
    first = obs_weight_masks(ws, k, x)[0]
    np.testing.assert_array_equal(first, pruning.weight_masks(ws, k)[0])


def _reference_reconstruct(ws, masks, x, damping, biases=None):
    """An independent float64 rendering of the layer-wise ridge fit (logit_targets=False): each hidden
    layer's kept weights, column by column, solve min ||h_pruned w_s - h_dense w||^2 + lam ||w_s - w||^2
    on the mask's support with np.linalg.lstsq on the stacked system."""
    biases = biases or [np.zeros(w.shape[1]) for w in ws]
    h_dense = h_pruned = x.reshape(len(x), -1).astype(np.float64)
    out = []
    for w, m, b in zip(ws[:-1], masks[:-1], biases[:-1]):
        w = w.astype(np.float64)
        target = h_dense @ w
        lam = damping * np.mean(np.sum(h_pruned**2, axis=0))
        new = np.zeros_like(w)
        for j in range(w.shape[1]):
            s = m[:, j]
            if not s.any():
                continue
            a = np.vstack([h_pruned[:, s], np.sqrt(lam) * np.eye(s.sum())])
            rhs = np.concatenate([target[:, j], np.sqrt(lam) * w[s, j]])
            new[s, j] = np.linalg.lstsq(a, rhs, rcond=None)[0]
        out.append(new)
        h_dense = np.maximum(h_dense @ w + b, 0)
        h_pruned = np.maximum(h_pruned @ new + b, 0)
    return out + [ws[-1]]


@pytest.mark.parametrize("method, k", [("weight", 50), ("weight", 90), ("unit", 50)])
@pytest.mark.parametrize("with_biases", [False, True])
def test_every_layer_matches_an_independent_float64_lstsq(method, k, with_biases):
    ws = [w.astype(np.float64) for w in kernels(seed=7)]
    x = calib(n=120).astype(np.float64)
    rng = np.random.default_rng(8)
    biases = [rng.normal(size=w.shape[1]) for w in ws] if with_biases else None
    masks = pruning.compute_masks(ws, k, method)
    out = reconstruct(ws, masks, x, damping=1e-3, biases=biases, logit_targets=False)
    ref = _reference_reconstruct(ws, masks, x, 1e-3, biases)
    for o, r in zip(out, ref):
        np.testing.assert_allclose(o, r, rtol=2e-3, atol=2e-3)


def test_first_layer_strictly_beats_the_masked_kernel_and_equals_lstsq_per_column():
    """Not a no-op: on dense (not already sparse) kernels every partly pruned column of the first
    layer moves to the least-squares solution on its support, and its error drops strictly."""
    ws = [w.astype(np.float64) for w in kernels(seed=11)]
    x = calib(n=200).astype(np.float64)
    masks = pruning.compute_masks(ws, 60, "weight")
    out = reconstruct(ws, masks, x, damping=1e-8, logit_targets=False)
    masked = pruning.apply_masks(ws, masks)
    target = x @ ws[0]
    for j in range(ws[0].shape[1]):
        s = masks[0][:, j]
        if not s.any() or s.all():
            continue
        expected = np.linalg.lstsq(x[:, s], target[:, j], rcond=None)[0]
        np.testing.assert_allclose(out[0][s, j], expected, rtol=1e-4, atol=1e-5)
        err_new = np.linalg.norm(x @ out[0][:, j] - target[:, j])
        err_masked = np.linalg.norm(x @ masked[0][:, j] - target[:, j])
        assert err_new < err_masked - 1e-6  # lstsq is optimal; strictly better when it moved
    assert not np.allclose(out[0], masked[0])


def test_accuracy_is_that_of_an_independent_forward_pass_and_exact_on_the_support():
    ws = kernels()
    x = calib(n=64)
    y = np.argmax(forward(ws, x), axis=1).astype(np.int32)
    out = reconstruct(ws, pruning.compute_masks(ws, 50, "unit"), x)
    acc, _ = evaluate_kernels(out, x, y)
    assert acc == pytest.approx(100.0 * np.mean(np.argmax(forward(out, x), axis=1) == y))
    # a network already living on the kept support is reconstructed to itself: every label right
    masks = pruning.compute_masks(ws, 60, "weight")
    on_support = [w.astype(np.float64) for w in pruning.apply_masks(ws, masks)]
    x = calib(n=200)
    y = np.argmax(forward(on_support, x), axis=1).astype(np.int32)
    fixed = reconstruct(on_support, masks, x, damping=1e-8, logit_targets=False)
    assert evaluate_kernels(fixed, x, y)[0] == 100.0


@pytest.mark.parametrize(
    "x", [np.array([["a"] * 12] * 64), np.array([[object()] * 12] * 64, dtype=object), np.zeros(12, np.float32)]
)
def test_non_numeric_or_one_dimensional_calibration_inputs_are_rejected(x):
    ws = kernels()
    with pytest.raises(ValueError, match="numeric array"):
        reconstruct(ws, pruning.compute_masks(ws, 50, "weight"), x)


def test_a_wrong_number_of_biases_is_rejected():
    ws = kernels()
    masks = pruning.compute_masks(ws, 50, "weight")
    with pytest.raises(ValueError, match=f"{len(ws)} kernels but {len(ws) - 1} biases"):
        reconstruct(ws, masks, calib(), biases=[None] * (len(ws) - 1))


def _force_conjugate_gradients(monkeypatch, tolerance=None, iterations=None):
    """Send every column of these tiny layers to conjugate gradients (they are all below the
    exact-solve size); the list returned collects (columns given, columns left unconverged)."""
    from prunelib.core import reconstruct as module

    solved = []
    inner = module._cg_columns

    def spy(hessian, rhs, start, mask, cols, out):
        left = inner(hessian, rhs, start, mask, cols, out)
        solved.append((cols.size, left.size))
        return left

    monkeypatch.setattr(module, "_EXACT_SIZE", 0)
    monkeypatch.setattr(module, "_cg_columns", spy)
    if tolerance is not None:
        monkeypatch.setattr(module, "_CG_TOLERANCE", tolerance)
    if iterations is not None:
        monkeypatch.setattr(module, "_CG_MAX_ITERATIONS", iterations)
    return solved


@pytest.mark.parametrize("method, k", [("weight", 25), ("weight", 50), ("weight", 80), ("global-weight", 60)])
@pytest.mark.parametrize("with_biases", [False, True])
def test_conjugate_gradients_converge_to_the_independent_lstsq(monkeypatch, method, k, with_biases):
    ws = [w.astype(np.float64) for w in kernels(seed=7)]
    x = calib(n=120).astype(np.float64)
    biases = [np.random.default_rng(8).normal(size=w.shape[1]) for w in ws] if with_biases else None
    masks = pruning.compute_masks(ws, k, method)
    solved = _force_conjugate_gradients(monkeypatch, tolerance=1e-9)
    out = reconstruct(ws, masks, x, damping=1e-3, biases=biases, logit_targets=False)
    assert sum(given for given, _ in solved) > 0 and all(left == 0 for _, left in solved)
    for o, r in zip(out, _reference_reconstruct(ws, masks, x, 1e-3, biases)):
        np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-4)  # float32 arithmetic


def test_conjugate_gradients_at_their_default_tolerance_stay_close_to_the_exact_solve(monkeypatch):
    ws, x = kernels(seed=3), calib(n=200, seed=4)
    masks = pruning.weight_masks(ws, 50)
    exact = reconstruct(ws, masks, x, exact=True)
    solved = _force_conjugate_gradients(monkeypatch)
    approx = reconstruct(ws, masks, x)
    assert sum(given for given, _ in solved) > 0 and all(left == 0 for _, left in solved)
    for a, e, m in zip(approx, exact, masks):
        assert np.array_equal(a != 0, m)  # zero exactly where pruned, nonzero where kept
        assert np.linalg.norm(a - e) <= 1e-2 * np.linalg.norm(e)


def test_columns_conjugate_gradients_leave_unconverged_are_solved_exactly(monkeypatch):
    ws, x = kernels(seed=5), calib(n=200, seed=6)
    masks = pruning.weight_masks(ws, 50)
    exact = reconstruct(ws, masks, x, exact=True)
    solved = _force_conjugate_gradients(monkeypatch, iterations=0)
    fallback = reconstruct(ws, masks, x)
    assert all(given == left > 0 for given, left in solved)
    for f, e in zip(fallback, exact):
        np.testing.assert_allclose(f, e, rtol=1e-5, atol=1e-6)


def test_columns_with_one_support_share_one_solve():
    from prunelib.core.reconstruct import _same_support

    mask = np.array([[1, 1, 0, 1, 0], [0, 0, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=bool)
    groups = _same_support(mask, np.arange(5))
    assert sorted(map(list, groups)) == [[0, 1, 3], [2], [4]]
    assert _same_support(mask, np.array([], dtype=np.intp)) == []


def test_unit_pruning_is_solved_by_shared_factorizations(monkeypatch):
    """Unit pruning keeps the same inputs for every kept unit of a layer: no column needs the
    per-column solvers, and the answer is the independent lstsq's."""
    from prunelib.core import reconstruct as module

    ws = [w.astype(np.float64) for w in kernels(seed=7)]
    x = calib(n=120).astype(np.float64)
    masks = pruning.unit_masks(ws, 50)
    per_column = []
    monkeypatch.setattr(module, "_exact_columns", lambda h, r, m, cols, out: per_column.append(cols.size))
    out = reconstruct(ws, masks, x, damping=1e-3, logit_targets=False)
    assert sum(per_column) == 0
    for o, r in zip(out, _reference_reconstruct(ws, masks, x, 1e-3)):
        np.testing.assert_allclose(o, r, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("exact", [1, "yes", None])
def test_exact_must_be_a_bool(exact):
    with pytest.raises(ValueError, match="exact must be True or False"):
        reconstruct(kernels(), pruning.weight_masks(kernels(), 50), calib(), exact=exact)


def test_fit_layer_is_reconstructs_first_layer_and_validates():
    from prunelib.core.reconstruct import fit_layer

    ws, x = kernels(seed=2), calib(n=100, seed=3)
    masks = pruning.weight_masks(ws, 60)
    whole = reconstruct(ws, masks, x, logit_targets=False)
    alone = fit_layer(x, x @ ws[0], ws[0], masks[0])
    np.testing.assert_allclose(alone, whole[0], rtol=1e-6, atol=1e-7)
    assert alone.dtype == np.float64 and np.all(alone[~masks[0]] == 0)
    with pytest.raises(ValueError, match="must be boolean"):
        fit_layer(x, x @ ws[0], ws[0], masks[0].astype(int))
    with pytest.raises(ValueError, match=r"kernel \(12, 10\) and mask \(12, 9\)"):
        fit_layer(x, x @ ws[0], ws[0], masks[0][:, :9])
    with pytest.raises(ValueError, match="same rows"):
        fit_layer(x[:50], x @ ws[0], ws[0], masks[0])
    with pytest.raises(ValueError, match="damping"):
        fit_layer(x, x @ ws[0], ws[0], masks[0], damping=0)


def test_conjugate_gradients_converge_within_the_support_size(monkeypatch):
    """Conjugate gradients solve an s-dimensional system in at most s steps (up to rounding): a
    slower method (steepest descent, a lost search direction) would be left unconverged here."""
    ws, x = kernels(seed=11), calib(n=400, seed=12)
    masks = pruning.weight_masks(ws, 50)
    solved = _force_conjugate_gradients(monkeypatch, iterations=max(w.shape[0] for w in ws))
    reconstruct(ws, masks, x)
    assert sum(given for given, _ in solved) > 0 and all(left == 0 for _, left in solved)


def _routing(monkeypatch):
    """Spies on the per-column solvers: the calls record which columns conjugate gradients get (and
    leave unconverged), which the exact solver gets, and the size of every batched system."""
    from prunelib.core import reconstruct as module

    calls = {"cg": [], "exact": [], "sizes": []}
    cg, exact, batched = module._cg_columns, module._exact_columns, module._batched_solve

    def cg_spy(hessian, rhs, start, mask, cols, out):
        left = cg(hessian, rhs, start, mask, cols, out)
        calls["cg"].append((set(cols.tolist()), set(left.tolist())))
        return left

    def exact_spy(hessian, rhs, mask, cols, out):
        calls["exact"].append(set(cols.tolist()))
        return exact(hessian, rhs, mask, cols, out)

    def batched_spy(matrix, sets, counts, rhs):
        calls["sizes"].append(sets.shape[1])
        return batched(matrix, sets, counts, rhs)

    monkeypatch.setattr(module, "_cg_columns", cg_spy)
    monkeypatch.setattr(module, "_exact_columns", exact_spy)
    monkeypatch.setattr(module, "_batched_solve", batched_spy)
    return calls


def _staircase(d=8, seed=0):
    """A layer whose column j keeps its first j + 1 inputs (every support different): the smaller
    side min(kept, pruned) runs 1, 2, .., d/2, .., 1, 0."""
    rng = np.random.default_rng(seed)
    mask = np.arange(d)[:, None] <= np.arange(d)[None, :]
    x = rng.random((60, d))
    return x, x @ rng.normal(size=(d, d)), rng.normal(size=(d, d)), mask


def _lstsq_columns(x, target, w, mask, damping):
    lam = damping * np.mean(np.sum(x**2, axis=0))
    out = np.zeros(mask.shape)
    for j in range(mask.shape[1]):
        s = mask[:, j]
        a = np.vstack([x[:, s], np.sqrt(lam) * np.eye(s.sum())])
        out[s, j] = np.linalg.lstsq(a, np.concatenate([target[:, j], np.sqrt(lam) * w[s, j]]), rcond=None)[0]
    return out


@pytest.mark.parametrize("exact", [False, True, None])
@pytest.mark.parametrize("threshold", [2, 3])
def test_columns_reach_the_solver_their_smaller_side_calls_for(monkeypatch, exact, threshold):
    """Columns whose smaller side exceeds the exact-solve size go to conjugate gradients, the rest
    (and, with exact=True, all) to factorizations of min(kept, pruned) rows, never larger."""
    from prunelib.core import reconstruct as module
    from prunelib.core.reconstruct import fit_layer

    monkeypatch.setattr(module, "_EXACT_SIZE", threshold)
    calls = _routing(monkeypatch)
    x, target, w, mask = _staircase()
    kwargs = {} if exact is None else {"exact": exact}
    out = fit_layer(x, target, w, mask, damping=1e-3, **kwargs)
    kept = mask.sum(axis=0)
    smaller = np.minimum(kept, len(mask) - kept)
    large = set() if exact else set(np.flatnonzero(smaller > threshold).tolist())
    assert [given for given, _ in calls["cg"]] == ([large] if large else [])
    left = set().union(*(left for _, left in calls["cg"]))
    assert calls["exact"] == [(set(range(mask.shape[1])) - large) | left]
    assert max(calls["sizes"]) == max(smaller[sorted(calls["exact"][0])])
    expected = _lstsq_columns(x, target, w, mask, 1e-3)
    solved_exactly = sorted(calls["exact"][0])
    np.testing.assert_allclose(out[:, solved_exactly], expected[:, solved_exactly], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("entry", ["reconstruct", "reconstruct_with_biases"])
@pytest.mark.parametrize("exact", [False, True, None])
def test_exact_reaches_the_solver_from_every_entry_point(monkeypatch, entry, exact):
    from prunelib.core import reconstruct as module

    monkeypatch.setattr(module, "_EXACT_SIZE", 0)
    calls = _routing(monkeypatch)
    x, _, w, mask = _staircase()
    ws, masks = [w, np.ones((8, 2))], [mask, np.ones((8, 2), bool)]
    kwargs = {} if exact is None else {"exact": exact}
    if entry == "reconstruct":
        module.reconstruct(ws, masks, x, **kwargs)
    else:
        module.reconstruct_with_biases(ws, [np.zeros(8), None], masks, x, **kwargs)
    assert bool(calls["cg"]) == (not exact)


def _whitened_then_mixed(d=8, units=6, reps=10, seed=0):
    """Inputs whose first d/2 features are orthogonal (a scaled identity repeated: the Gram block
    is diagonal, its entries unequal) and whose other features are random mixtures."""
    rng = np.random.default_rng(seed)
    half = d // 2
    x = np.zeros((half * reps, d))
    x[:, :half] = np.eye(half).repeat(reps, axis=0) * np.arange(1, half + 1)  # a diagonal Gram of unequal scales
    x[:, half:] = rng.random((half * reps, d - half))
    return x, rng.normal(size=(half * reps, units)), rng.normal(size=(d, units))


@pytest.mark.parametrize("cap", [0, 1, 2])
def test_conjugate_gradients_stop_at_the_iteration_cap(monkeypatch, cap):
    """Jacobi-preconditioned CG solves a column whose kept inputs are orthogonal in one step, one
    with correlated inputs not: a cap of 0 leaves every column to the exact solver, a cap of 1 only
    the correlated ones, and the answer is the exact one regardless."""
    from prunelib.core import reconstruct as module
    from prunelib.core.reconstruct import fit_layer

    monkeypatch.setattr(module, "_EXACT_SIZE", 0)
    monkeypatch.setattr(module, "_CG_MAX_ITERATIONS", cap)
    calls = _routing(monkeypatch)
    x, target, w = _whitened_then_mixed()
    mask = np.zeros((8, 6), bool)
    for j in range(3):  # orthogonal supports: 2, 3 and 4 of the first four inputs
        mask[: j + 2, j] = True
    for j in range(3, 6):  # supports mixing all the correlated inputs in
        mask[: j - 2, j] = mask[4:, j] = True
    out = fit_layer(x, target, w, mask, damping=1e-3)
    ((given, left),) = calls["cg"]
    assert given == set(range(6))
    assert left == ({0, 1, 2, 3, 4, 5} if cap == 0 else {3, 4, 5} if cap == 1 else left & {3, 4, 5})
    np.testing.assert_allclose(out, _lstsq_columns(x, target, w, mask, 1e-3), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "n, fit_biases, message",
    [
        (11, False, "^11 calibration samples are too few: a hidden layer has 12 inputs, so pass at least 12 samples$"),
        (
            12,
            True,
            r"^12 calibration samples are too few: a hidden layer has 13 inputs \(its bias counted as one\), "
            "so pass at least 13 samples$",
        ),
    ],
)
def test_the_fewest_samples_are_the_largest_fan_in(n, fit_biases, message):
    from prunelib.core.reconstruct import reconstruct_with_biases

    ws = kernels()
    masks = pruning.weight_masks(ws, 50)

    def run(x):
        if fit_biases:
            return reconstruct_with_biases(ws, [np.zeros(w.shape[1]) for w in ws], masks, x)[0]
        return reconstruct(ws, masks, x)

    with pytest.raises(ValueError, match=message):
        run(calib(n=n))
    assert all(np.all(o[~m] == 0) for o, m in zip(run(calib(n=n + 1)), masks))


def test_a_network_without_hidden_layers_needs_one_sample_and_comes_back_as_it_was():
    w = np.ones((3, 2), np.float32)
    (out,) = reconstruct([w], [np.ones((3, 2), bool)], np.zeros((1, 3)))
    assert out.tobytes() == w.tobytes() and out is not w


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(x=np.zeros((64, 11), np.float32)), "^calibration inputs have 11 features, the first kernel takes 12$"),
        (dict(x=np.full((64, 12), np.inf, np.float32)), "^calibration inputs contain NaN or infinity$"),
        (
            dict(logit_pruned=2),
            "^the logit mask prunes 2 weights, but the logit layer is never pruned or re-fitted; "
            "pass an all-True mask for it$",
        ),
        (dict(acts=[None, None]), "^4 kernels but 2 activations; give one per kernel"),
        (
            dict(acts=["relu", None, None, None]),
            r"^activations must be callables on numpy arrays \(or None for ReLU\)$",
        ),
        (
            dict(x=calib().astype(np.float64) * 1e300),
            r"^reconstruction is not finite even in float64: the calibration inputs or weights are too large "
            r"\(scale the inputs, e.g. to \[0, 1\]\)$",
        ),
    ],
    ids=["features", "infinity", "logit-mask", "activation-count", "activation-type", "not-finite"],
)
def test_error_messages_name_the_bad_value(change, message):
    ws = kernels()
    masks = pruning.weight_masks(ws, 50)
    change = dict(change)  # the parameter is shared between runs
    masks[-1].ravel()[: change.pop("logit_pruned", 0)] = False
    x = change.pop("x", calib())
    with pytest.raises(ValueError, match=message):
        reconstruct(ws, masks, x, **change)


def _reference_obs_masks(ws, k, x, damping):
    """OBS saliency w_ij^2 / [H^-1]_ii, H = X^T X + lam I on the dense float32 forward pass, ranked in
    float64: the count_to_prune smallest per layer masked out, ties by position."""
    h, masks = x.astype(np.float32), []
    for w in ws[:-1]:
        gram = h.T.astype(np.float64) @ h.astype(np.float64)
        hinv = np.linalg.inv(gram + damping * np.mean(np.diag(gram)) * np.eye(len(gram)))
        scores = (w.astype(np.float64) ** 2 / np.diag(hinv)[:, None]).ravel()
        mask = np.ones(w.size, bool)
        mask[np.argsort(scores, kind="stable")[: pruning.count_to_prune(w.size, k)]] = False
        masks.append(mask.reshape(w.shape))
        h = np.maximum(h @ w.astype(np.float32), 0)
    return masks + [np.ones(ws[-1].shape, bool)]


@pytest.mark.parametrize("damping", [None, 0.01, 3.0])
def test_obs_masks_rank_by_the_saliency_of_their_definition(damping):
    from prunelib.core.reconstruct import obs_weight_masks

    ws = kernels(seed=4)
    x = np.random.default_rng(5).normal(size=(80, SIZES[0])).astype(np.float32) @ np.triu(np.ones((12, 12)))
    masks = obs_weight_masks(ws, 60, x) if damping is None else obs_weight_masks(ws, 60, x, damping)
    expected = _reference_obs_masks(ws, 60, x, 0.01 if damping is None else damping)
    for m, e in zip(masks, expected):
        assert m.dtype == bool
        np.testing.assert_array_equal(m, e)
    assert not np.array_equal(masks[0], pruning.weight_masks(ws, 60)[0])  # not plain magnitude


def test_calibration_set_takes_any_size_from_one_to_all_and_defaults_to_4096_with_seed_0():
    images = np.arange(5000, dtype=np.float32).reshape(5000, 1)
    for n in (1, 5000):
        chosen = calibration_set(images, n)
        assert chosen.shape == (n, 1) and len(np.unique(chosen)) == n
    np.testing.assert_array_equal(calibration_set(images), calibration_set(images, 4096, seed=0))
    assert len(calibration_set(images)) == 4096


@pytest.mark.parametrize("sizes, n", [((4, 6, 3, 2), 5), ((4, 3, 8, 2), 3)])
def test_the_largest_fan_in_of_any_hidden_layer_sets_the_fewest_samples(sizes, n):
    """The largest hidden fan-in may be a later layer's; the logit layer's is not counted."""
    ws = kernels(sizes=sizes)
    masks = pruning.weight_masks(ws, 50)
    need = max(sizes[:-2])
    with pytest.raises(ValueError, match=f"^{n} calibration samples are too few: a hidden layer has {need} inputs,"):
        reconstruct(ws, masks, calib(n=n, d=sizes[0]))
    reconstruct(ws, masks, calib(n=need, d=sizes[0]))


def test_check_calibration_flattens_samples_and_names_what_is_wrong():
    from prunelib.core.reconstruct import check_calibration

    ws = [np.ones((6, 2)), np.ones((2, 1))]
    x = np.arange(7 * 6, dtype=np.float32).reshape(7, 2, 3)
    np.testing.assert_array_equal(check_calibration(x, ws, [6]), x.reshape(7, 6))
    with pytest.raises(ValueError, match="^4 calibration samples are too few: a hidden layer has 6 inputs, so pass"):
        check_calibration(x[:4], ws, [6])
    with pytest.raises(ValueError, match=r"^calibration inputs must be a numeric array \(n, ...\), got shape \(7,\)$"):
        check_calibration(np.zeros(7), ws, [6])


def test_batches_of_stacked_systems_stay_within_the_memory_budget(monkeypatch):
    """Every batch of s x s systems holds at most _CHUNK_BYTES of float64 matrices; however the
    columns are batched, each is its own exact ridge solution."""
    from itertools import combinations

    from prunelib.core import reconstruct as module
    from prunelib.core.reconstruct import fit_layer

    d, budget = 8, 8 * 3**2 * 5  # five 3 x 3 systems
    rng = np.random.default_rng(0)
    supports = [set(c) for c in combinations(range(d), 3)]  # 56 columns keep 3 rows, 56 prune 3
    mask = np.array([[i in s for s in supports] + [i not in s for s in supports] for i in range(d)])
    x, w = rng.random((30, d)), rng.normal(size=mask.shape)
    target = x @ rng.normal(size=mask.shape)
    calls = _routing(monkeypatch)
    monkeypatch.setattr(module, "_CHUNK_BYTES", budget)
    out = fit_layer(x, target, w, mask, damping=1e-3, exact=True)
    assert len(calls["sizes"]) >= 2 * 56 // 5
    batched = module._batched_solve

    def check(matrix, sets, counts, rhs):
        assert 8 * sets.shape[0] * sets.shape[1] ** 2 <= budget
        return batched(matrix, sets, counts, rhs)

    monkeypatch.setattr(module, "_batched_solve", check)
    np.testing.assert_array_equal(fit_layer(x, target, w, mask, damping=1e-3, exact=True), out)
    np.testing.assert_allclose(out, _lstsq_columns(x, target, w, mask, 1e-3), rtol=1e-4, atol=1e-5)
