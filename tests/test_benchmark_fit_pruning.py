"""benchmarks/fit_pruning.py: its targets and pquant's mapping, the docs table, and the prunelib side end to end."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fit_pruning  # noqa: E402


def test_targets_follow_the_schedules_of_the_docstring():
    ramp = fit_pruning.target_spec("90", "mlp", 938, 469, 100)
    assert (ramp["initial"], ramp["final"], ramp["end_step"], ramp["skip"]) == (0.0, 90.0, 469, [])
    trial = fit_pruning.target_spec("50-80", "cnn", 938, 469, 100)
    assert (trial["initial"], trial["final"], trial["end_step"]) == (50.0, 80.0, 938)
    nm = fit_pruning.target_spec("2:4", "cnn", 938, 469, 100)
    assert (nm["nm"], nm["final"], nm["skip"]) == ("2:4", 50.0, ["conv_1"])
    assert fit_pruning.target_spec("2:4", "mlp", 938, 469, 100)["skip"] == []
    for bad in ("4:4", "0:4", "80-50", "101"):
        with pytest.raises(ValueError):
            fit_pruning.target_spec(bad, "mlp", 938, 469, 100)


def test_pquant_epochs_divide_an_epoch_and_its_ramp_is_the_nearest():
    spec = fit_pruning.target_spec("90", "mlp", 938, 469, 100)
    per, epsilon = spec["pquant_epoch_steps"], spec["pquant_epsilon"]
    assert per == 67 and 469 % per == 0  # 469 = 7 * 67: the divisor nearest 100 steps
    k = fit_pruning.schedule_k(spec, np.arange(938))
    assert k[0] == 0 and k[468] < 90 and k[469] == 90 and k[-1] == 90  # cubic, masks every 100 steps, end on 469
    epoch = np.arange(938) // per

    def gap(e):
        return np.sum((np.minimum(1, e * (epoch + 1)) * 90 - k) ** 2)

    assert all(gap(epsilon) <= gap(e) + 1e-9 for e in (epsilon * 0.9, epsilon * 1.1, 1 / 7, 1 / 14, 1.0))
    assert 1 / 14 < epsilon < 1  # reaches 90 % within the ramp's 7 short epochs, not at the first


def _rows():
    rows = []
    for tool, shift in (("tfmot", 0.0), ("prunelib", 0.5), ("pquant", -0.5)):
        for target in ("90", "2:4", "50-80"):
            for seed, acc in enumerate((97.0, 98.0, 99.0)):
                rows.append(
                    {
                        "tool": tool, "model": "mlp", "dataset": "mnist", "target": target, "seed": seed,
                        "accuracy": acc + shift, "dense_accuracy": 98.4, "sparsity": 90.0, "exact": seed != 2 or tool != "pquant",
                        "fit_s": 10.0 + seed, "plain_fit_s": 10.0, "fit_ratio": 1.0 + seed / 10, "export_gz_bytes": 2e6,
                        "plain_keras_gz_bytes": 8e5, "epochs": 2, "train_images": 60000,
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_table_is_mean_and_t_interval_over_seeds_in_a_fixed_order():
    text = fit_pruning.render(_rows())
    lines = [line for line in text.splitlines() if line.startswith("| mlp")]
    # 97, 98, 99: mean 98, half-width t(0.975, 2) * 1 / sqrt(3) = 2.48
    assert (
        "| mlp | mnist | 90 | tfmot | 98.00 ± 2.48 | 98.40 | 90.00 | yes | 1.10 (1.00–1.20) | 11.0 | 2000 | 800 |"
        in lines
    )
    order = [(line.split(" | ")[2], line.split(" | ")[3]) for line in lines]
    assert order[:3] == [("50-80", "prunelib"), ("50-80", "tfmot"), ("50-80", "pquant")]
    assert [t for t, _ in order[::3]] == ["50-80", "90", "2:4"]
    assert "| pquant | 97.50 ± 2.48 | 98.40 | 90.00 | some |" in text
    assert "over 3 seeds" in text and "60,000 images" in text


def test_docs_section_is_added_once_then_replaced(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nbefore\n")
    fit_pruning.write_docs(page, "first")
    fit_pruning.write_docs(page, "second\ntable")
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nbefore\n") and text.count("<!-- fit-pruning:begin -->") == 1
    assert "<!-- fit-pruning:begin -->\nsecond\ntable\n<!-- fit-pruning:end -->" in text and "first" not in text


def _tiny(name):
    rng = np.random.default_rng(0)
    images = rng.random((320, 28, 28), dtype=np.float32)
    labels = (images[:, 14, :10].argmax(1)).astype(np.uint8)  # learnable from the pixels
    return fit_pruning_dataset(name, images[:256], labels[:256], images[256:], labels[256:])


def fit_pruning_dataset(name, x_train, y_train, x_test, y_test):
    from prunelib.data import Dataset

    return Dataset(name, x_train, y_train, x_test, y_test)


def test_prunelib_side_runs_end_to_end_and_is_exact(tmp_path):
    """The --smoke path for prunelib alone on 256 random images (a Keras process of its own, about 15 s)."""
    out = tmp_path / "fit.csv"
    argv = ["--tools", "prunelib", "--models", "mlp", "--datasets", "mnist", "--targets", "90", "2:4"]
    argv += ["--epochs", "1", "--frequency", "1", "--seeds", "0", "--out", str(out)]
    assert fit_pruning.main(argv, load=_tiny) == 0
    table = pd.read_csv(out)
    assert list(table["target"].astype(str)) == ["90", "2:4"] and table["exact"].all()
    assert table.loc[0, "sparsity"] == pytest.approx(90, abs=1e-3) and table.loc[1, "sparsity"] == 50
    assert (table["fit_s"] > 0).all() and (table["plain_keras_gz_bytes"] > 0).all()
    assert fit_pruning.main(argv, load=_tiny) == 0  # resumed: nothing re-runs, no row added
    assert len(pd.read_csv(out)) == 2
