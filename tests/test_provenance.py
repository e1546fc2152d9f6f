"""Caches keyed on code and data, damaged entries recomputed, and the results manifest."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from tiny import TINY, tiny_data
from workers import build_slowly

from prunelib.base import fingerprint, paths, provenance
from prunelib.models import mlp
from prunelib.study.experiment import cached_table
from prunelib.study.registry import DATASET_TABLES, TABLES


def scratch_package(tmp_path) -> Path:
    """A copy of the package's source, to edit without touching the real one."""
    copy = tmp_path / "src" / "prunelib"
    shutil.copytree(fingerprint.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.fixture
def edit_module(monkeypatch, tmp_path):
    """Make a one-line change to a module of a scratch copy of the package, which fingerprints
    (and so cache keys and the manifest check) then read instead of the real source."""
    copy = scratch_package(tmp_path)
    monkeypatch.setattr(fingerprint, "PACKAGE_DIR", copy)

    def edit(module, *, new_process=True):
        """``new_process``: a later run reads the edit; else this process keeps its first reading."""
        with open(fingerprint.module_path(module), "a") as handle:
            handle.write("# a one-line change\n")
        if new_process:
            fingerprint._hashes_in.cache_clear()

    return edit


def valid_table(phase, accuracy=97.0):
    """A one-row table that passes the schema of ``phase``'s table."""
    row = {
        "dataset": "tiny",
        "method": "weight",
        "correction": "none",
        "strategy": "finetune",
        "k": 90.0,
        "seed": 0,
        "epochs": 1,
        "sparsity": 89.0,
        "prunable_sparsity": 90.0,
        "accuracy": accuracy,
        "loss": 0.1,
        "dense_accuracy": 98.0,
    }
    return pd.DataFrame([row])


def build_all(data, cache, counts):
    """A model, a sweep table and a recovery table, counting what actually gets computed."""

    def train():
        counts["model"] += 1
        return mlp.train(data, TINY)

    key = mlp.cache_description(data, TINY)
    mlp.cached(f"tiny-{paths.digest(key)}", train, key=key, cache=cache)
    model_key = mlp.cache_key(data, TINY)
    for phase in ("sweep", "recovery"):

        def table(phase=phase):
            counts[phase] += 1
            return valid_table(phase)

        cached_table(phase, {"model": model_key}, table, cache=cache, retrain=False)


@pytest.mark.parametrize(
    "module, rebuilt",
    [
        ("prunelib.core.evaluate", {"sweep", "recovery"}),  # both tables evaluate accuracy through it
        ("prunelib.models.recovery", {"recovery"}),
        ("prunelib.models.masked", {"recovery"}),  # masked training never enters a plain model's key
        # Recovery evaluates through prunelib.core.evaluate, which imports reconstruct: the hand-kept
        # list of the old layout forgot it; the derived closure cannot.
        ("prunelib.core.reconstruct", {"sweep", "recovery"}),
        ("prunelib.models.mlp", {"model", "sweep", "recovery"}),  # a new model invalidates its tables
        ("prunelib.reporting.report", set()),  # the report is rebuilt from tables; nothing cached depends on it
    ],
)
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
        return valid_table("sweep", accuracy=97.5)

    cached_table("sweep", {"m": 1}, fn, cache=tmp_path, retrain=False)
    [path] = (tmp_path / "tables").glob("*.csv")
    good = path.read_text()
    path.write_text(good[: len(good) - 20])  # truncated mid-row
    with pytest.warns(UserWarning, match="checksum"):
        out = cached_table("sweep", {"m": 1}, fn, cache=tmp_path, retrain=False)
    assert len(calls) == 2 and out["accuracy"].tolist() == [97.5]
    # A table that hashes right but fails its schema (e.g. written by other code) is recomputed too.
    from prunelib.base.provenance import key_path, sha256_file

    path.write_text("dataset,k\ntiny,90\n")
    meta = json.loads(key_path(path).read_text())
    meta["sha256"] = sha256_file(path)
    key_path(path).write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="lacks column"):
        cached_table("sweep", {"m": 1}, fn, cache=tmp_path, retrain=False)
    assert len(calls) == 3


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
    edit_module("prunelib.core.pruning")
    assert any("prunelib.core.pruning changed" in p for p in provenance.check_manifest(results))
    assert "missing" in provenance.check_manifest(tmp_path / "nowhere")[0]


ARTIFACT_BUILDERS = {
    "model": "prunelib.models.mlp",
    **{name: table.builder for name, table in TABLES.items()},
    **{name: builder for name, (builder, _) in DATASET_TABLES.items()},
    "figures": "prunelib.reporting.figures",
    "results": provenance.RESULTS_CODE,
}


def _roots(builder) -> tuple[str, ...]:
    return (builder,) if isinstance(builder, str) else tuple(builder)


def test_the_import_graph_is_grimps():
    """The closure each artifact is keyed by equals what grimp (import-linter's graph) finds
    upstream of its builder, so no import, however indirect or late, is forgotten."""
    import grimp

    graph = grimp.build_graph("prunelib", exclude_type_checking_imports=True)
    for builder in ARTIFACT_BUILDERS.values():
        roots = _roots(builder)
        upstream = set(roots).union(*(graph.find_upstream_modules(r) for r in roots))
        assert fingerprint.closure(roots) == {m for m in upstream if m in fingerprint.package_modules()}
    with pytest.raises(ValueError, match="no prunelib module named 'prunelib.nothing_here'"):
        fingerprint.closure(["prunelib.nothing_here"])


def test_editing_any_module_invalidates_exactly_the_artifacts_that_import_it(tmp_path, monkeypatch):
    copy = scratch_package(tmp_path)
    monkeypatch.setattr(fingerprint, "PACKAGE_DIR", copy)
    before = {name: fingerprint.code_fingerprint(*_roots(b)) for name, b in ARTIFACT_BUILDERS.items()}
    graph = fingerprint.import_graph()
    for module in fingerprint.package_modules():
        path = fingerprint.module_path(module)
        original = path.read_bytes()
        path.write_bytes(original + b"\n# an edit\n")
        fingerprint._hashes_in.cache_clear()
        stale = {
            name for name, b in ARTIFACT_BUILDERS.items() if fingerprint.code_fingerprint(*_roots(b)) != before[name]
        }
        path.write_bytes(original)
        fingerprint._hashes_in.cache_clear()
        # Expected from the graph alone: an artifact is stale iff its builder reaches the module.
        reaches = set()
        for name, b in ARTIFACT_BUILDERS.items():
            todo, seen = list(_roots(b)), set()
            while todo:
                m = todo.pop()
                if m not in seen:
                    seen.add(m)
                    todo.extend(graph[m])
            if module in seen:
                reaches.add(name)
        assert stale == reaches, module
    assert fingerprint.closure(["prunelib.core.evaluate"]) >= {"prunelib.core.forward", "prunelib.core.reconstruct"}
    assert "prunelib.cli" not in fingerprint.closure(provenance.RESULTS_CODE)  # the CLI determines no result


def test_two_runs_sharing_a_cache_build_an_entry_once(tmp_path):
    import multiprocessing

    log = tmp_path / "log"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        values = pool.map(build_slowly, [(tmp_path / "entry.txt", log)] * 2)
    assert values == ["value", "value"]
    assert log.read_text().count("built") == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries


def test_manifest_records_the_code_a_run_started_with(tmp_path, edit_module):
    results = tmp_path / "results"
    results.mkdir()
    (results / "a.csv").write_text("x\n1\n")
    fingerprint.source_hashes()  # the "run" starts and reads its code
    edit_module("prunelib.core.evaluate", new_process=False)  # edited while the "run" was going
    provenance.write_manifest(results, {}, "run")
    manifest = json.loads((results / "manifest.json").read_text())
    assert manifest["source_edited_during_run"] == ["prunelib.core.evaluate"]
    assert any("prunelib.core.evaluate changed" in p for p in provenance.check_manifest(results))


def test_a_hand_edit_of_any_manifest_field_is_not_current(tmp_path):
    results = tmp_path / "results"
    (results / "mnist").mkdir(parents=True)
    (results / "mnist" / "sweep.csv").write_text("a\n1\n")
    provenance.write_manifest(results, {"seeds": [0, 1]}, "python -m prunelib run")
    assert provenance.check_manifest(results) == []
    path = results / "manifest.json"
    for field, value in (("config", {"seeds": [0, 1, 2]}), ("command", "edited"), ("versions", {})):
        manifest = json.loads(path.read_text())
        manifest[field] = value
        path.write_text(json.dumps(manifest))
        assert any("edited after the run wrote it" in p for p in provenance.check_manifest(results)), field
        provenance.write_manifest(results, {"seeds": [0, 1]}, "python -m prunelib run")
    for bad in ("[]", '{"code": null, "files": {}}', '{"code": {}, "files": {"../x": "00"}}'):
        path.write_text(bad)
        assert len(provenance.check_manifest(results)) == 1  # one line naming the problem, no traceback
