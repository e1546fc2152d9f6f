"""The inference entry point: every path computes the same logits; the fastest is chosen per batch."""

import numpy as np
import pytest

from prunelib.core import pruning
from prunelib.inference.predictor import Predictor


def kernels(seed=0, sizes=(30, 24, 16, 12, 10)):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]


def reference(ks, x):
    h = x.reshape(len(x), -1).astype(np.float64)
    for i, w in enumerate(ks):
        h = h @ w
        if i < len(ks) - 1:
            h = np.maximum(h, 0)
    return h


@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("k", [0, 50, 90])
@pytest.mark.parametrize("n", [1, 17, 100])
@pytest.mark.parametrize("path", Predictor.PATHS)
def test_every_path_gives_the_logits_of_the_pruned_network(method, k, n, path):
    pruned = pruning.prune(kernels(), k, method)
    x = np.random.default_rng(1).random((n, 30), dtype=np.float32)
    before = [w.copy() for w in pruned]
    got = Predictor(pruned).run(path, x)
    assert got.shape == (n, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference(pruned, x), rtol=1e-4, atol=1e-4)
    for a, b in zip(pruned, before):
        np.testing.assert_array_equal(a, b)  # the caller's kernels are untouched


def test_predict_times_each_path_once_per_batch_size_bucket_and_reuses_the_winner():
    predictor = Predictor(pruning.prune(kernels(), 90, "weight"))
    x = np.random.default_rng(2).random((64, 5, 6), dtype=np.float32)  # flattens to 30 features
    np.testing.assert_allclose(predictor.predict(x), reference(predictor.kernels, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(predictor.predict(x[:1]), reference(predictor.kernels, x[:1]), rtol=1e-4, atol=1e-4)
    assert len(predictor.chosen) == 2  # batch 64 and batch 1 fall in different buckets
    assert predictor.path_for(64) in Predictor.PATHS and predictor.path_for(5000) is None
    for bucket, path in predictor.chosen.items():
        assert path == min(predictor.timings[bucket], key=predictor.timings[bucket].get)
        assert set(predictor.timings[bucket]) == set(Predictor.PATHS)
    timings = {b: dict(t) for b, t in predictor.timings.items()}
    predictor.predict(x[:40])
    assert predictor.timings == timings  # same bucket as 64: no new measurement


@pytest.mark.parametrize("slow", [False, True])
def test_each_path_is_probed_several_times_on_a_small_batch_and_once_on_a_slow_one(monkeypatch, slow):
    """The fastest of PROBE_ROUNDS calls decides for a batch whose call lasts microseconds (one
    timing is noise there); a call that outlasts PROBE_SECONDS is timed in one round."""
    import time

    from prunelib.inference import predictor as module

    p = Predictor(pruning.prune(kernels(), 90, "weight"))
    x = np.random.default_rng(2).random((3, 30), dtype=np.float32)
    for path in p.paths:
        p.run(path, x)  # built; every later call is counted
    calls = dict.fromkeys(p.paths, 0)

    def counted(path, fn):
        def call(batch):
            calls[path] += 1
            if slow:
                time.sleep(module.PROBE_SECONDS)
            return fn(batch)

        return call

    p._built = {path: counted(path, fn) for path, fn in p._built.items()}
    if not slow:  # a loaded machine can make even a tiny batch's probes outlast the budget
        monkeypatch.setattr(module, "PROBE_SECONDS", float("inf"))
    p.predict(x)
    rounds = 1 if slow else module.PROBE_ROUNDS
    winner = p.path_for(3)
    assert {path: n - (path == winner) for path, n in calls.items()} == dict.fromkeys(p.paths, 1 + rounds)
    [timings] = p.timings.values()
    assert winner == min(timings, key=timings.get)


def test_dead_units_are_compacted_away():
    pruned = pruning.prune(kernels(sizes=(30, 40, 20, 10)), 50, "unit")
    predictor = Predictor(pruned)
    assert [w.shape for w in predictor.kernels] == [(30, 20), (20, 10), (10, 10)]


def test_bad_inputs_name_the_problem():
    predictor = Predictor(kernels())
    with pytest.raises(ValueError, match="do not flatten to 30 features"):
        predictor.predict(np.zeros((2, 31), np.float32))
    with pytest.raises(ValueError, match="pass a batch"):
        predictor.predict(np.zeros(30, np.float32))
    with pytest.raises(ValueError, match="unknown inference path 'gpu'"):
        Predictor(kernels(), paths=["gpu"])
    with pytest.raises(ValueError, match="not one of"):
        Predictor(kernels(), paths=["blas"]).run("csr", np.zeros((1, 30), np.float32))


def test_other_activations_run_on_blas_and_csr_only_and_are_validated():
    rng = np.random.default_rng(0)
    kernels = [rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)]
    x = rng.random((4, 6), dtype=np.float32)
    fast = Predictor(kernels, acts=[np.tanh, None])
    assert fast.paths == ("blas", "csr")
    want = np.tanh(x @ kernels[0]) @ kernels[1]
    for path in fast.paths:
        np.testing.assert_allclose(fast.run(path, x), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="2 kernels but 1 activations"):
        Predictor(kernels, acts=[np.tanh])
    with pytest.raises(ValueError, match="one numpy function"):
        Predictor(kernels, acts=["tanh", None])
    with pytest.raises(ValueError, match="bias-free ReLU networks only"):
        Predictor(kernels, acts=[np.tanh, None], paths=["sparse"])
