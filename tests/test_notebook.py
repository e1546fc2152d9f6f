"""Execute the notebook top to bottom in quick mode and check what it produced."""

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from tiny import FRAMEWORK_LOG, require_real_data

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "pruning_challenge.ipynb"


def _measured_sparsity_at_99() -> float:
    """Weight pruning at k = 99 of the quick network, counted by hand: round(0.99 n) of each hidden
    kernel's n weights, none of the logit kernel's."""
    from prunelib.study.config import QUICK_HIDDEN_SIZES

    fans = [784, *QUICK_HIDDEN_SIZES]
    hidden = [a * b for a, b in zip(fans, fans[1:])]
    total = sum(hidden) + fans[-1] * 10
    return round(100 * sum(round(0.99 * n) for n in hidden) / total, 4)


QUICK_SPARSITY_AT_99 = _measured_sparsity_at_99()


def test_parameters_cell_defaults_to_the_challenge():
    """papermill's convention: one code cell tagged ``parameters``, here ``preset = "challenge"``."""
    nb = nbformat.read(ROOT / "pruning_challenge.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    namespace: dict = {}
    exec(tagged[0].source, namespace)
    assert namespace["preset"] == "challenge"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code is tagged[0]  # set before anything reads it


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    require_real_data("mnist", "fashion-mnist")
    out = tmp_path_factory.mktemp("nb")
    mp = pytest.MonkeyPatch()
    mp.setenv("PRUNELIB_QUICK", "1")
    mp.setenv("PRUNELIB_RESULTS", str(out / "results"))
    mp.setenv("PRUNELIB_CACHE", str(out / "cache"))
    # The full preset, set the way `papermill -p preset full` sets it, so every section runs.
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(
        load_notebook_node(str(ROOT / "pruning_challenge.ipynb")),
        {"preset": "full"},
        kernel_name="python3",
        language="python",
    )
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    mp.undo()
    return nb, out / "results"


@pytest.mark.slow  # executes the whole notebook on the real datasets
def test_notebook_writes_tables_figures_and_report(executed):
    _, results = executed
    for dataset in ("mnist", "fashion-mnist"):
        df = pd.read_csv(results / dataset / "sweep.csv")
        assert set(df["method"]) == {"weight", "unit", "global-weight", "retrain-small"}
        # quick mode: 4 values of k, one seed; weight and unit also + lstsq, and best at k = 99
        assert len(df) == 6 * 4 + 2
        best = df["correction"] == "best"
        assert set(df.loc[best, "k"]) == {99.0} and set(df.loc[best, "method"]) == {"weight", "unit"}
        same_masks = (df.k == 99) & (df.method == "weight") & ~best
        assert df.loc[same_masks, "sparsity"].round(4).eq(QUICK_SPARSITY_AT_99).all()
        assert set(df["correction"]) == {"none", "lstsq", "best"}
        rec = pd.read_csv(results / dataset / "recovery.csv")
        assert {"one-shot", "finetune", "refit-finetune", "gradual", "imp", "targeted-dropout"} <= set(rec["strategy"])
        assert len(pd.read_csv(results / dataset / "sensitivity.csv")) == 2 * 4 * 4
        for figure in ("sparsity_vs_accuracy", "baselines", "sensitivity", "distributions", "recovery"):
            assert (results / dataset / f"{figure}.png").stat().st_size > 10_000
    report = (results / "REPORT.md").read_text()
    assert "## Discussion" in report and "mnist/sparsity_vs_accuracy.png" in report
    assert (results / "report.docx").stat().st_size > 50_000
    from prunelib.base.provenance import check_manifest

    assert check_manifest(results) == []  # the notebook publishes with a matching manifest
    import json

    assert json.loads((results / "manifest.json").read_text())["config"]["preset"] == "full"


@pytest.mark.slow
def test_notebook_cells_ran_without_errors_and_show_a_plot(executed):
    nb, _ = executed
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    shown = _outputs_text(nb)  # the kernel's and its worker processes' stderr land in the outputs
    assert not FRAMEWORK_LOG.search(shown), FRAMEWORK_LOG.search(shown).group(0)


def _outputs_text(nb) -> str:
    texts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
            texts.extend("".join(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(texts)


def test_the_committed_notebook_shows_no_framework_log_lines():
    nb = json.loads(NOTEBOOK.read_text())
    assert not FRAMEWORK_LOG.search(_outputs_text(nb))
    for line in (
        "I0000 00:00:17 cudart_stub.cc:31] Could not find cuda drivers",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796634427.696646    5464 port.cc:153] oneDNN custom operations are on.",
        "E0000 00:00:1796634439.633007    5464 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
    ):
        fake = {"cells": [{"outputs": [{"text": ["progress\n", line + "\n"]}]}]}
        assert FRAMEWORK_LOG.search(_outputs_text(fake)), line  # the check sees each kind of log line


def test_every_figure_has_a_caption_after_it():
    nb = json.loads(NOTEBOOK.read_text())
    cells = nb["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and "figures." in "".join(cell["source"]):
            after = cells[i + 1] if i + 1 < len(cells) else None
            assert after and after["cell_type"] == "markdown" and "What to look at" in "".join(after["source"]), i
