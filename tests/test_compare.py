"""``report --compare``: a Welch test per point names the points that disagree; bitwise equality."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prunelib import cli
from prunelib.reporting.compare import compare, welch_p

ROOT = Path(__file__).resolve().parents[1]


def _results(tmp_path: Path, name: str, shift: float = 0.0, seconds: float = 0.5) -> Path:
    """A results directory with one sweep over 5 seeds; ``shift`` moves weight k=90's accuracies."""
    rng = np.random.default_rng(0)
    rows = []
    for method in ("weight", "unit"):
        for k in (0.0, 90.0):
            for seed in range(5):
                acc = 90.0 - k / 10 + rng.normal(0, 1) + (shift if (method, k) == ("weight", 90.0) else 0)
                rows.append(
                    {
                        "dataset": "mnist",
                        "method": method,
                        "correction": "none",
                        "k": k,
                        "seed": seed,
                        "sparsity": k,
                        "prunable_sparsity": k,
                        "accuracy": acc,
                        "loss": 0.1,
                        "effective_params": 100,
                        "norm_kept": 100.0,
                        "seconds": seconds,
                    }
                )
    out = tmp_path / name / "mnist"
    out.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(out / "sweep.csv", index=False)
    return out.parent


def test_welch_p_edge_cases():
    assert welch_p([1, 1, 1], [1, 1, 1]) == 1.0
    assert welch_p([1, 1, 1], [2, 2, 2]) == 0.0
    assert np.isnan(welch_p([1.0], [1.0, 2.0]))
    assert welch_p([1, 2, 3, 4], [1.1, 2.1, 2.9, 4.2]) > 0.5


def test_a_shifted_point_is_named_and_nothing_else(tmp_path, capsys):
    ours, other = _results(tmp_path, "ours"), _results(tmp_path, "other", shift=10.0)
    found = compare(ours, other)
    assert not found.identical_files and not found.identical_values
    assert found.disagree[["method", "k"]].values.tolist() == [["weight", 90.0]]
    assert len(found.points) == 4
    assert cli.main(["report", "--results", str(ours), "--compare", str(other)]) == 1
    out = capsys.readouterr().out
    assert "1 of 4 tested points disagree" in out and "mnist weight none k=90" in out


def test_run_times_alone_do_not_break_value_identity(tmp_path):
    found = compare(_results(tmp_path, "a"), _results(tmp_path, "b", seconds=0.7))
    assert not found.identical_files and found.identical_values and found.disagree.empty


def test_committed_results_agree_with_themselves(capsys):
    if not (ROOT / "results" / "mnist" / "sweep.csv").is_file():
        pytest.skip("no committed results")
    assert cli.main(["report", "--results", str(ROOT / "results"), "--compare", str(ROOT / "results")]) == 0
    assert "tables bit-identical" in capsys.readouterr().out


def test_compare_without_tables_is_one_line_exit_2(tmp_path, capsys):
    assert cli.main(["report", "--results", str(tmp_path), "--compare", str(tmp_path)]) == 2
    assert "no */sweep.csv" in capsys.readouterr().err


def test_machine_facts_name_the_cpu_and_threads():
    from prunelib.base import machine

    facts = machine.facts()
    assert facts["cpu"] and facts["usable_cpus"] >= 1 and set(facts["isa"]) <= set(machine.ISA_FLAGS)
    assert "TF_ENABLE_ONEDNN_OPTS" in facts["env"]
