"""Caches keyed on code and data, damaged entries recomputed, and the results manifest."""

import json
import shutil

import pandas as pd
import pytest

from prunelib import model as mlp
from prunelib import provenance
from prunelib.experiment import cached_table
from tiny import TINY, tiny_data


@pytest.fixture
def edit_module(monkeypatch, tmp_path):
    """Simulate a one-line change to a module's source (a copy with one more line)."""
    real = provenance.module_path

    def edit(module):
        copy = tmp_path / f"{module}.py"
        shutil.copy(real(module), copy)
        with open(copy, "a") as handle:
            handle.write("# a one-line change\n")
        monkeypatch.setattr(provenance, "module_path", lambda m: copy if m == module else real(m))
    return edit


def build_all(data, cache, counts):
    """A model, a sweep table and a recovery table, counting what actually gets computed."""
    def train():
        counts["model"] += 1
        return mlp.train(data, TINY)

    key = mlp.cache_description(data, TINY)
    mlp.cached(f"tiny-{provenance.digest(key)}", train, key=key, cache=cache)
    model_key = mlp.cache_key(data, TINY)
    for phase in ("sweep", "recovery"):
        def table(phase=phase):
            counts[phase] += 1
            return pd.DataFrame({"x": [1.0]})
        cached_table(phase, {"model": model_key}, table, cache=cache, retrain=False)


@pytest.mark.parametrize("module, rebuilt", [
    ("prunelib.evaluate", {"sweep", "recovery"}),  # both tables evaluate accuracy through it
    ("prunelib.recovery", {"recovery"}),
    ("prunelib.reconstruct", {"sweep"}),
    ("prunelib.model", {"model", "sweep", "recovery"}),  # a new model invalidates its tables
    ("prunelib.report", set()),  # the report is rebuilt from tables; nothing cached depends on it
])
def test_a_one_line_change_invalidates_exactly_what_it_determines(tmp_path, edit_module, module, rebuilt):
    data = tiny_data()
    counts = {"model": 0, "sweep": 0, "recovery": 0}
    build_all(data, tmp_path / "cache", counts)
    build_all(data, tmp_path / "cache", counts)
    assert counts == {"model": 1, "sweep": 1, "recovery": 1}  # second pass only reads
    edit_module(module)
    build_all(data, tmp_path / "cache", counts)
    assert {name for name, n in counts.items() if n == 2} == rebuilt


def test_data_enters_model_keys_by_content():
    assert mlp.cache_key(tiny_data(), TINY) == mlp.cache_key(tiny_data(), TINY)
    assert mlp.cache_key(tiny_data(), TINY) != mlp.cache_key(tiny_data(seed=1), TINY)


def test_damaged_model_entries_are_recomputed_with_a_warning(tmp_path):
    data = tiny_data()
    model, _ = mlp.train_cached(data, TINY, cache=tmp_path)
    [path] = tmp_path.glob("*.keras")
    good = path.read_bytes()
    for damage in ("truncate", "flip", "key", "no-key"):
        path.write_bytes(good)
        key = provenance.key_path(path)
        if damage == "truncate":
            path.write_bytes(good[: len(good) // 2])
        elif damage == "flip":
            path.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
        elif damage == "key":
            key.write_text(key.read_text()[:20])
        else:
            key.unlink()
        with pytest.warns(UserWarning, match=f"cache entry {path}"):
            again, _ = mlp.train_cached(data, TINY, cache=tmp_path)
        for a, b in zip(mlp.get_kernels(model), mlp.get_kernels(again)):
            assert a.tobytes() == b.tobytes()
        meta = json.loads(key.read_text())
        assert meta["sha256"] == provenance.sha256_file(path) and meta["key"]["dataset"] == "tiny"


def test_damaged_tables_are_recomputed(tmp_path):
    calls = []

    def fn():
        calls.append(1)
        return pd.DataFrame({"a": [1.0, 2.0]})

    cached_table("sweep", {"m": 1}, fn, cache=tmp_path, retrain=False)
    [path] = (tmp_path / "tables").glob("*.csv")
    path.write_text("a\n1.0\n")  # truncated by hand
    with pytest.warns(UserWarning, match="checksum"):
        out = cached_table("sweep", {"m": 1}, fn, cache=tmp_path, retrain=False)
    assert len(calls) == 2 and out["a"].tolist() == [1.0, 2.0]


def test_manifest_says_whether_results_are_current(tmp_path, edit_module):
    results = tmp_path / "results"
    (results / "mnist").mkdir(parents=True)
    (results / "mnist" / "sweep.csv").write_text("a\n1\n")
    (results / "REPORT.md").write_text("# report\n")
    provenance.write_manifest(results, {"seeds": [0]}, "python -m prunelib run")
    assert provenance.check_manifest(results) == []
    manifest = json.loads((results / "manifest.json").read_text())
    assert set(manifest["files"]) == {"mnist/sweep.csv", "REPORT.md"}
    assert manifest["config"] == {"seeds": [0]} and "numpy" in manifest["versions"]

    (results / "mnist" / "sweep.csv").write_text("a\n2\n")
    (results / "stray.csv").write_text("x\n")
    problems = provenance.check_manifest(results)
    assert any("sweep.csv differs" in p for p in problems)
    assert any("stray.csv was not written" in p for p in problems)
    edit_module("prunelib.pruning")
    assert any("prunelib.pruning changed" in p for p in provenance.check_manifest(results))
    assert "missing" in provenance.check_manifest(tmp_path / "nowhere")[0]


def test_every_fingerprinted_module_exists():
    for group in (provenance.MODEL_CODE, provenance.SWEEP_CODE, provenance.ANALYSIS_CODE,
                  provenance.RECOVERY_CODE, provenance.RECIPE_CODE):
        assert len(provenance.fingerprint(group)) == 16
    with pytest.raises(ValueError, match="no source file"):
        provenance.module_path("prunelib.nothing_here")
