"""The README's worked example, "Prune your own model", runs as a user would run it."""

import pytest
from tiny import require_real_data


@pytest.mark.slow
def test_prune_your_own_model_example_runs():
    require_real_data("mnist")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "prune_your_own_model.py"
    spec = importlib.util.spec_from_file_location("prune_your_own_model", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.main(["--train", "4000"])  # checks onnxruntime against Keras itself
    assert results["dense"] > 0.85
    assert results["weight95+lstsq"] > results["weight95"]
    assert results["weight95 onnx"] == pytest.approx(results["weight95+lstsq"], abs=1e-3)


@pytest.mark.slow
def test_export_benchmark_runs_on_a_tiny_setting(tmp_path):
    require_real_data("mnist")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "export.py"
    spec = importlib.util.spec_from_file_location("export_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    table = bench.main(["--train", "0", "--rounds", "1", "--repeats", "2", "--out", str(tmp_path / "e.csv")])
    assert (tmp_path / "e.csv").exists()
    assert set(table["model"]) == {"dense", "weight95", "weight95-compact", "unit90-compact"}
    assert (table.query("metric == 'max_abs_diff_vs_keras'")["value"] < 1e-5).all()
