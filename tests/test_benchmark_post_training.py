"""benchmarks/post_training.py runs: its smoke mode end to end, and its figure for many panels."""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import post_training  # noqa: E402


def test_smoke_run_prints_a_row_per_method_and_k(capsys):
    assert post_training.main(["--smoke", "--methods", "magnitude", "obs+lstsq", "--sparsities", "50", "90"]) == 0
    out = capsys.readouterr().out
    assert out.count("magnitude ") >= 2 and out.count("obs+lstsq") >= 2


def test_figure_wraps_panels_into_rows(tmp_path):
    rows = [
        {"model": f"m{i}", "dataset": "d", "granularity": "weight", "method": "magnitude", "seed": s, "k": k,
         "finetune_epochs": 0, "sparsity": k, "accuracy": 90.0 - k / 10 + s}
        for i in range(6) for s in (0, 1) for k in (50.0, 90.0)
    ]  # fmt: skip
    path = tmp_path / "figure.png"
    post_training.figure(pd.DataFrame(rows), path)
    from matplotlib.image import imread

    height, width = imread(path).shape[:2]
    assert path.stat().st_size > 0 and height > width / 3  # 6 panels: two rows of at most 4, not one strip
