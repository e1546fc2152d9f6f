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
