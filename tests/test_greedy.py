"""Forward greedy supports: exact against brute force, the layer's budget spread over its rows."""

import numpy as np
import pytest

from prunelib.core.greedy import _forward, greedy_supports


def _problem(seed, n=40, d=8, units=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x[:, 3] = 0.9 * x[:, 1] + 0.1 * x[:, 2]  # nearly dependent inputs: the orthogonal part matters
    y = rng.standard_normal((n, units))
    return x, y, x.T @ x + 0.05 * np.eye(d), x.T @ y


def _error(h, b, y, support):
    if not support:
        return float(y @ y)
    v = np.linalg.solve(h[np.ix_(support, support)], b[support])
    return float(y @ y - 2 * v @ b[support] + v @ h[np.ix_(support, support)] @ v)


@pytest.mark.parametrize("seed", range(8))
def test_forward_steps_are_the_exact_greedy_choice_and_gain(seed):
    x, y, h, b = _problem(seed)
    order, gains = _forward(h, b.T, 6, 0, 0.05)
    for r in range(y.shape[1]):
        support, before = [], _error(h, b[:, r], y[:, r], [])
        for t in range(6):
            errors = {i: _error(h, b[:, r], y[:, r], [*support, i]) for i in range(h.shape[0]) if i not in support}
            best = min(errors, key=errors.get)
            assert order[r, t] == best
            assert gains[r, t] == pytest.approx(before - errors[best])
            support, before = [*support, best], errors[best]


def test_fixed_inputs_come_first_and_stay_kept():
    x, y, h, b = _problem(1)
    order, _ = _forward(h, b.T, 4, 2, 0.05)  # the last two inputs play a bias's part
    assert not np.isin(order, [6, 7]).any()
    mask = greedy_supports(x.T @ x, b, 7, 0.05, fixed=2)
    assert mask[6:].all() and int(mask[:6].sum()) == 7


@pytest.mark.parametrize("keep", [0, 1, 5, 12, 24])
def test_the_layer_keeps_exactly_its_budget_as_prefixes_of_each_rows_order(keep):
    x, y, h, b = _problem(2, units=3)
    mask = greedy_supports(x.T @ x, b, keep, 0.05)
    assert int(mask.sum()) == keep
    order, _ = _forward(h, b.T, h.shape[0], 0, 0.05)
    for r in range(3):
        n = int(mask[:, r].sum())
        assert set(np.flatnonzero(mask[:, r])) == set(order[r, :n])


def test_a_row_that_needs_more_keeps_more():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 10))
    # unit 0 is a sum of 6 inputs, unit 1 of 1: with 7 weights to keep, 6 go to unit 0
    y = np.stack([x[:, :6].sum(axis=1), x[:, 9]], axis=1)
    mask = greedy_supports(x.T @ x, x.T @ y, 7, 1e-6)
    assert mask[:, 0].sum() == 6 and mask[:, 1].tolist() == [False] * 9 + [True]


def test_bad_budgets_raise():
    x, y, h, b = _problem(0)
    with pytest.raises(ValueError, match="keep must be a whole number in"):
        greedy_supports(x.T @ x, b, 25, 0.05)
    with pytest.raises(ValueError, match="keep must be a whole number in"):
        greedy_supports(x.T @ x, b, -1, 0.05)


def test_duplicated_inputs_get_no_spurious_gain_and_the_budget_is_kept():
    rng = np.random.default_rng(0)
    x = rng.random((60, 4))
    x = np.hstack([x, x])  # every input twice: its orthogonal part cancels to rounding noise
    y = rng.standard_normal((60, 2))
    for ridge in (2e-16, 1e-12, 0.05):
        mask = greedy_supports(x.T @ x, x.T @ y, 12, ridge)
        assert int(mask.sum()) == 12


@pytest.mark.parametrize("ridge", [0.0, -1.0, float("nan"), float("inf"), "0.1", True])
def test_bad_ridges_raise(ridge):
    x, y, h, b = _problem(0)
    with pytest.raises(ValueError, match="ridge must be"):
        greedy_supports(x.T @ x, b, 5, ridge)


def test_a_fractional_budget_raises_and_a_full_one_keeps_everything():
    x, y, h, b = _problem(0)
    with pytest.raises(ValueError, match="whole number"):
        greedy_supports(x.T @ x, b, 2.5, 0.05)
    assert greedy_supports(x.T @ x, b, 24, 0.05).all()
