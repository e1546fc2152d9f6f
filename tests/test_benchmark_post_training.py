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


def test_replace_reruns_keys_and_keeps_one_row_each(tmp_path, monkeypatch):
    calls = []

    def fake_run_model(model, dataset, seed, methods, *args, done=(), **kwargs):
        key = (model, dataset, seed, "magnitude", 90.0, 0, 8192)
        calls.append(key in done)
        if key in done:
            return []
        row = dict(zip(post_training.KEY, key))
        return [{**row, "granularity": "weight", "sparsity": 90.0, "accuracy": float(len(calls)), "seconds": 1.0}]

    monkeypatch.setattr(post_training, "run_model", fake_run_model)
    out, fig = tmp_path / "pt.csv", tmp_path / "pt.png"
    args = ["--models", "m", "--seeds", "0", "--out", str(out), "--figure", str(fig)]
    post_training.main(args)
    post_training.main(args)  # resumed: the key is done, nothing re-runs
    assert calls == [False, True] and pd.read_csv(out)["accuracy"].tolist() == [1.0]
    post_training.main([*args, "--replace"])
    assert calls[-1] is False and pd.read_csv(out)["accuracy"].tolist() == [3.0]
