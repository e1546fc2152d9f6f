"""Execute the notebook top to bottom in quick mode and check what it produced."""

from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from tiny import require_real_data

pytestmark = pytest.mark.slow  # executes the whole notebook on the real datasets

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    require_real_data("mnist", "fashion-mnist")
    out = tmp_path_factory.mktemp("nb")
    mp = pytest.MonkeyPatch()
    mp.setenv("PRUNELIB_QUICK", "1")
    mp.setenv("PRUNELIB_RESULTS", str(out / "results"))
    mp.setenv("PRUNELIB_CACHE", str(out / "cache"))
    nb = nbformat.read(ROOT / "pruning_challenge.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    mp.undo()
    return nb, out / "results"


def test_notebook_writes_tables_figures_and_report(executed):
    _, results = executed
    for dataset in ("mnist", "fashion-mnist"):
        df = pd.read_csv(results / dataset / "sweep.csv")
        assert set(df["method"]) == {"weight", "unit", "global-weight", "retrain-small"}
        assert len(df) == 6 * 4  # quick mode: 4 values of k, one seed; weight and unit also + lstsq
        assert df.loc[(df.k == 99) & (df.method == "weight"), "sparsity"].round(2).eq(98.92).all()
        assert set(df["correction"]) == {"none", "lstsq"}
        rec = pd.read_csv(results / dataset / "recovery.csv")
        assert {"one-shot", "finetune", "gradual", "imp", "targeted-dropout"} <= set(rec["strategy"])
        assert len(pd.read_csv(results / dataset / "sensitivity.csv")) == 2 * 4 * 4
        for figure in ("sparsity_vs_accuracy", "baselines", "sensitivity", "distributions", "recovery"):
            assert (results / dataset / f"{figure}.png").stat().st_size > 10_000
    report = (results / "REPORT.md").read_text()
    assert "## Discussion" in report and "mnist/sparsity_vs_accuracy.png" in report
    assert (results / "report.docx").stat().st_size > 50_000
    from prunelib.base.provenance import check_manifest
    assert check_manifest(results) == []  # the notebook publishes with a matching manifest


def test_notebook_cells_ran_without_errors_and_show_a_plot(executed):
    nb, _ = executed
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
