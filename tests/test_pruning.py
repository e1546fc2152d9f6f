import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from prunelib.core import pruning
from prunelib.study.config import DEFAULT_KS

METHODS = ["weight", "unit"]
ALL_METHODS = list(pruning.METHODS)


def tiny_kernels(seed: int = 0, sizes=(12, 9, 7, 5, 3)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]


def prune_fn(method):
    return {"weight": pruning.weight_prune, "unit": pruning.unit_prune}[method]


@pytest.mark.parametrize("k", DEFAULT_KS)
def test_weight_prune_zeroes_exactly_round_k_per_layer(k):
    kernels = tiny_kernels()
    pruned = pruning.weight_prune(kernels, k)
    for before, after in zip(kernels[:-1], pruned[:-1]):
        assert np.count_nonzero(after == 0) == round(k / 100 * before.size)
        # survivors keep their values, and every survivor is at least as large as every victim
        kept = after != 0
        np.testing.assert_array_equal(after[kept], before[kept])
        if kept.any() and (~kept).any():
            assert np.abs(before[~kept]).max() <= np.abs(before[kept]).min()


@pytest.mark.parametrize("k", DEFAULT_KS)
def test_unit_prune_zeroes_whole_columns_of_smallest_norm(k):
    kernels = tiny_kernels()
    pruned = pruning.unit_prune(kernels, k)
    for before, after in zip(kernels[:-1], pruned[:-1]):
        dead = np.all(after == 0, axis=0)
        assert dead.sum() == round(k / 100 * before.shape[1])
        # a column is either entirely zero or entirely the original
        np.testing.assert_array_equal(after[:, ~dead], before[:, ~dead])
        norms = np.linalg.norm(before, axis=0)
        if dead.any() and (~dead).any():
            assert norms[dead].max() <= norms[~dead].min()


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("k", DEFAULT_KS)
def test_logits_bit_identical_and_inputs_untouched(method, k):
    kernels = tiny_kernels()
    kernels[-1][0, 0] = -0.0  # a signed zero must survive too
    copies = [w.copy() for w in kernels]
    pruned = pruning.prune(kernels, k, method)
    assert pruned[-1].tobytes() == copies[-1].tobytes()
    assert pruned[-1] is not kernels[-1]
    for original, copy in zip(kernels, copies):
        assert original.tobytes() == copy.tobytes()


@pytest.mark.parametrize("method", ALL_METHODS)
def test_k_zero_is_identity(method):
    kernels = tiny_kernels()
    for before, after in zip(kernels, pruning.prune(kernels, 0, method)):
        assert before.tobytes() == after.tobytes()
        assert after.dtype == before.dtype


@pytest.mark.parametrize("method", ALL_METHODS)
def test_k_hundred_empties_every_hidden_layer(method):
    pruned = pruning.prune(tiny_kernels(), 100, method)
    assert all(np.count_nonzero(w) == 0 for w in pruned[:-1])
    assert np.count_nonzero(pruned[-1]) == pruned[-1].size


@pytest.mark.parametrize("bad", [-1, -0.001, 100.0001, 150, math.nan, math.inf, "50", None, True, [50]])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_bad_k_raises_value_error_naming_it(bad, method):
    with pytest.raises(ValueError, match=repr(bad).replace("[", r"\[").replace("]", r"\]")):
        pruning.prune(tiny_kernels(), bad, method)


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="unknown pruning method 'bogus'"):
        pruning.compute_masks(tiny_kernels(), 50, "bogus")


def test_ties_break_by_position():
    kernel = np.ones((2, 4), dtype=np.float32)
    pruned = pruning.weight_prune([kernel, np.ones((4, 1), np.float32)], 50)[0]
    np.testing.assert_array_equal(pruned.ravel(), [0, 0, 0, 0, 1, 1, 1, 1])
    units = pruning.unit_prune([kernel, np.ones((4, 1), np.float32)], 50)[0]
    np.testing.assert_array_equal(units[0], [0, 0, 1, 1])


def test_round_convention_uses_python_round():
    # 2.5 rounds to 2 (banker's rounding), as round() does; one convention everywhere.
    assert pruning.count_to_prune(10, 25) == round(2.5) == 2
    assert pruning.count_to_prune(7, 50) == round(3.5) == 4


def test_masks_and_apply_are_separate_steps():
    kernels = tiny_kernels()
    masks = pruning.weight_masks(kernels, 60)
    assert all(m.dtype == bool and m.shape == w.shape for m, w in zip(masks, kernels))
    assert masks[-1].all()
    np.testing.assert_array_equal(pruning.apply_masks(kernels, masks)[0], np.where(masks[0], kernels[0], 0))
    with pytest.raises(ValueError):
        pruning.apply_masks(kernels, masks[:-1])


def test_global_weight_prunes_round_k_of_all_hidden_weights():
    kernels = tiny_kernels()
    n = sum(w.size for w in kernels[:-1])
    pruned = pruning.prune(kernels, 70, "global-weight")
    assert sum(np.count_nonzero(w == 0) for w in pruned[:-1]) == round(0.7 * n)


def test_sparsity_counts_all_arrays():
    assert pruning.sparsity([np.zeros(3), np.ones(1)]) == 75.0


def test_sparsity_of_a_generator_counts_every_array():
    assert pruning.sparsity(w for w in [np.zeros(3), np.ones(1)]) == 75.0
    assert pruning.sparsity(iter([np.zeros((2, 2))])) == 100.0


@pytest.mark.parametrize("k", [10**400, -(10**400), float("nan"), np.float64("nan"), 100.0000001])
def test_k_out_of_range_is_a_value_error_however_large(k):
    with pytest.raises(ValueError, match=r"k must be a percentage in \[0, 100\]"):
        pruning.validate_k(k)


shapes = st.lists(st.integers(1, 9), min_size=2, max_size=4)


@settings(max_examples=60, deadline=None)
@given(sizes=shapes, k=st.floats(0, 100), method=st.sampled_from(ALL_METHODS), data=st.data())
def test_properties_on_random_kernels(sizes, k, method, data):
    kernels = [
        data.draw(hnp.arrays(np.float32, (a, b), elements=st.floats(-4, 4, width=32)))
        for a, b in zip(sizes[:-1], sizes[1:])
    ]
    copies = [w.copy() for w in kernels]
    masks = pruning.compute_masks(kernels, k, method)
    pruned = pruning.apply_masks(kernels, masks)
    pruned_count = sum(int((~m).sum()) for m in masks)
    if method == "weight":
        assert pruned_count == sum(round(k / 100 * w.size) for w in kernels[:-1])
    elif method == "unit":
        assert pruned_count == sum(round(k / 100 * w.shape[1]) * w.shape[0] for w in kernels[:-1])
        assert all((m == m[:1]).all() for m in masks)
    else:
        assert pruned_count == round(k / 100 * sum(w.size for w in kernels[:-1]))
    assert pruned[-1].tobytes() == kernels[-1].tobytes()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(kernels, copies))
    # at least the nominal count of weights is zero (some may have been zero already)
    assert sum(np.count_nonzero(w == 0) for w in pruned) >= pruned_count


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_rejected_naming_the_layer(method, bad):
    kernels = tiny_kernels()
    kernels[1] = kernels[1].copy()
    kernels[1][2, 3] = bad
    with pytest.raises(ValueError, match="kernel 1 contains 1 NaN or infinite"):
        pruning.compute_masks(kernels, 50, method)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_kernels_of_wrong_rank_or_unchained_shapes_are_rejected(method):
    kernels = tiny_kernels()
    for broken, match in [
        ([kernels[0].ravel(), *kernels[1:]], "2-D"),
        ([kernels[0][..., None], *kernels[1:]], "2-D"),
        ([kernels[0], kernels[2], *kernels[3:]], "takes"),
        ([k.astype(bool) for k in kernels], "real numbers"),
        ([k.astype(np.complex64) for k in kernels], "real numbers"),
    ]:
        with pytest.raises(ValueError, match=match):
            pruning.compute_masks(broken, 50, method)
    with pytest.raises(ValueError, match="list of 2-D arrays"):
        pruning.compute_masks(np.zeros((3, 3)), 50, method)


def test_int8_minimum_ranks_as_the_largest_magnitude():
    w = np.array([[1, -128], [3, 2]], dtype=np.int8)
    logits = np.ones((2, 1), np.int8)
    masks = pruning.weight_masks([w, logits], 75)
    assert masks[0].tolist() == [[False, True], [False, False]]  # -128 survives, not pruned first
    pruned = pruning.weight_prune([w, logits], 75)
    assert pruned[0].dtype == np.int8 and pruned[0][0, 1] == -128


def _reference_masks(kernels, k, method):
    """Independent reference: sort every score with a stable sort (ties keep position order) and
    drop the first round(k/100 * n); float64 scores, so int8's -128 ranks by its true magnitude."""

    def drop_first(scores, n):
        order = np.argsort(scores, kind="stable")
        keep = np.ones(scores.size, bool)
        keep[order[:n]] = False
        return keep

    hidden = kernels[:-1]
    if method == "weight":
        masks = [
            drop_first(np.abs(w.astype(np.float64)).ravel(), round(k / 100 * w.size)).reshape(w.shape) for w in hidden
        ]
    elif method == "unit":
        masks = [
            np.broadcast_to(
                drop_first(np.sqrt((w.astype(np.float64) ** 2).sum(axis=0)), round(k / 100 * w.shape[1])), w.shape
            )
            for w in hidden
        ]
    else:
        pooled = np.concatenate([np.abs(w.astype(np.float64)).ravel() for w in hidden])
        keep = drop_first(pooled, round(k / 100 * pooled.size))
        masks, start = [], 0
        for w in hidden:
            masks.append(keep[start : start + w.size].reshape(w.shape))
            start += w.size
    return [np.asarray(m) for m in masks] + [np.ones(kernels[-1].shape, bool)]


DTYPES = [np.float32, np.float64, np.int8, np.int32]


@st.composite
def networks(draw):
    """Kernels with at least one hidden layer, values from a small pool (ties and zeros are
    common), in float32, float64, int8 (with -128) or int32."""
    dtype = draw(st.sampled_from(DTYPES))
    sizes = draw(st.lists(st.integers(1, 7), min_size=3, max_size=5))
    if np.issubdtype(dtype, np.integer):
        pool = st.sampled_from([0, 1, -1, 2, -3, 5, 127, -128] if dtype == np.int8 else [0, 1, -1, 2, -3, 70000])
    else:
        pool = st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5]), st.floats(-4, 4, width=32))
    return [draw(hnp.arrays(dtype, (a, b), elements=pool)) for a, b in zip(sizes[:-1], sizes[1:])]


@settings(max_examples=150, deadline=None)
@given(
    kernels=networks(),
    k=st.one_of(st.sampled_from([0.0, 50.0, 100.0, 12.5]), st.floats(0, 100)),
    method=st.sampled_from(ALL_METHODS),
)
def test_selected_set_and_tie_rule_match_an_independent_reference(kernels, k, method):
    copies = [w.copy() for w in kernels]
    masks = pruning.compute_masks(kernels, k, method)
    expected = _reference_masks(kernels, k, method)
    assert len(masks) == len(kernels)
    for m, e, w in zip(masks, expected, kernels):
        assert m.dtype == bool and m.shape == w.shape
        np.testing.assert_array_equal(m, e)
    pruned = pruning.apply_masks(kernels, masks)
    for p, w, m in zip(pruned, kernels, masks):
        assert p.dtype == w.dtype
        np.testing.assert_array_equal(p, np.where(m, w, 0))
        # zeros after pruning: exactly the pruned ones plus the kept ones that were zero already
        assert np.count_nonzero(p == 0) == np.count_nonzero(~m) + np.count_nonzero((w == 0) & m)
    assert pruned[-1].tobytes() == kernels[-1].tobytes()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(kernels, copies))
    assert pruning.sparsity(pruned) == pytest.approx(
        100.0 * sum(np.count_nonzero(p == 0) for p in pruned) / sum(p.size for p in pruned)
    )


@pytest.mark.parametrize(
    "scores, n, expected",
    [
        ([3.0, 1.0, 1.0, 1.0, 2.0], 2, [False, True, True, False, False]),  # ties: earlier positions first
        ([1.0, 1.0, 1.0], 1, [True, False, False]),
        ([0.0, 5.0, 0.0, 5.0], 3, [True, True, True, False]),
        ([2.0, 1.0], 0, [False, False]),
        ([2.0, 1.0], -1, [False, False]),
        ([2.0, 1.0], 2, [True, True]),
        ([2.0, 1.0], 5, [True, True]),
        ([4.0, 3.0, 2.0, 1.0], 1, [False, False, False, True]),
        ([4.0, 3.0, 2.0, 1.0], 3, [False, True, True, True]),
    ],
)
def test_smallest_selects_exactly_n_with_ties_by_position(scores, n, expected):
    assert pruning.smallest(np.array(scores), n).tolist() == expected


def test_sparsity_of_nothing_is_zero_and_counts_exactly():
    assert pruning.sparsity([]) == 0.0
    assert pruning.sparsity([np.zeros((0, 3))]) == 0.0
    assert pruning.sparsity([np.array([0, 1, 2, 0]), np.array([[0.0, 3.0]])]) == 50.0


def test_count_to_prune_is_round_of_k_percent():
    assert [pruning.count_to_prune(10, k) for k in (0, 14, 15, 16, 100)] == [0, 1, 2, 2, 10]
    assert pruning.count_to_prune(3, 50) == 2 and pruning.count_to_prune(0, 50) == 0
    assert (
        pruning.validate_k(0) == 0.0 and pruning.validate_k(100) == 100.0 and pruning.validate_k(np.float32(5)) == 5.0
    )
    assert isinstance(pruning.validate_k(7), float)


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("k", [0, 50, 100])
def test_a_network_of_only_the_logit_layer_has_nothing_to_prune(method, k):
    logits = tiny_kernels()[-1]
    masks = pruning.compute_masks([logits], k, method)
    assert len(masks) == 1 and masks[0].dtype == bool and masks[0].shape == logits.shape and masks[0].all()
    assert pruning.prune([logits], k, method)[0].tobytes() == logits.tobytes()


def test_prune_biases_zeroes_exactly_the_removed_units_of_unit_pruning():
    kernels = tiny_kernels()
    biases = [np.arange(1, w.shape[1] + 1, dtype=np.float32) for w in kernels]
    biases[1] = None  # a layer without bias stays without
    masks = pruning.unit_masks(kernels, 50)
    out = pruning.prune_biases(biases, masks, "unit")
    assert len(out) == len(biases) and out[1] is None
    for b, m, o in zip(biases, masks, out):
        if b is None:
            continue
        removed = ~m.any(axis=0)
        assert o.dtype == b.dtype and o is not b
        np.testing.assert_array_equal(o, np.where(removed, 0, b))
    assert np.count_nonzero(out[0] == 0) == pruning.count_to_prune(kernels[0].shape[1], 50) > 0
    np.testing.assert_array_equal(out[-1], biases[-1])  # the logit layer loses no unit
    # weight pruning leaves every bias alone, even of a column it happens to empty
    emptied = [m.copy() for m in masks]
    emptied[0][:, 0] = False
    kept = pruning.prune_biases(biases, emptied, "weight")
    assert all(a is b for a, b in zip(kept, biases)) and isinstance(kept, list)
    assert pruning.prune_biases(biases, masks, "global-weight") == biases


def test_kernels_must_come_as_a_sequence_and_not_be_empty():
    kernels = tiny_kernels()
    for not_a_list in (iter(kernels), {i: w for i, w in enumerate(kernels)}, np.stack([np.eye(3)] * 2)):
        with pytest.raises(ValueError, match="kernels must be a list of 2-D arrays in layer order"):
            pruning.compute_masks(not_a_list, 50, "weight")
    for empty in ([], ()):
        with pytest.raises(ValueError, match="^need at least the logit layer's kernel$"):
            pruning.compute_masks(empty, 50, "unit")
        with pytest.raises(ValueError, match="^need at least the logit layer's kernel$"):
            pruning.split_logits(empty)
    hidden, logits = pruning.split_logits(tuple(kernels))
    assert isinstance(hidden, list) and len(hidden) == len(kernels) - 1 and logits is kernels[-1]


@pytest.mark.parametrize("size, pool", [(997, 1000), (1000, 7), (64, 3)])
def test_smallest_matches_a_stable_sort_for_every_n_on_larger_arrays(size, pool):
    """Partition-based selection must equal the stable-sort reference for every n, on arrays large
    enough for numpy's quickselect (not only its small-array path), with and without many ties."""
    scores = np.random.default_rng(size).integers(0, pool, size).astype(np.float64)
    order = np.argsort(scores, kind="stable")
    for n in range(0, size + 1, max(1, size // 97)):
        expected = np.zeros(size, bool)
        expected[order[:n]] = True
        np.testing.assert_array_equal(pruning.smallest(scores, n), expected, err_msg=f"n={n}")


def test_kernel_errors_name_the_layers_and_the_numbers_exactly():
    import re

    k = tiny_kernels()  # shapes 12x9, 9x7, 7x5, 5x3
    cases = [
        ([k[0], k[2], k[3]], "kernel 1 takes 7 inputs but kernel 0 has 9 units; kernels must be in layer order"),
        (iter(k), "kernels must be a list of 2-D arrays in layer order, one per Dense layer; got list_iterator"),
    ]
    bad = [w.copy() for w in k]
    bad[2][0, 0] = np.inf
    cases.append(
        (bad, "kernel 2 contains 1 NaN or infinite values; magnitude pruning cannot rank them (check the training run)")
    )
    for kernels, message in cases:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            pruning.compute_masks(kernels, 50, "weight")
