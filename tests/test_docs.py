"""The docs stay true: every fenced Python block in README.md and docs/ runs, every docstring
example (``>>>``) in prunelib runs and prints what it says, every relative link and image resolves.

Blocks of one page run in order in one namespace (a page reads top to bottom), in a scratch working
directory with prunelib's cache and data under it, so they never touch the repository's results.
"""

import doctest
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def python_blocks(page: Path) -> list[str]:
    return FENCE.findall(page.read_text())


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(page.read_text()) if not re.match(r"^[a-z]+:|^#", t)]


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_every_python_block_runs(page, tmp_path):
    program = "\n\n".join(f"# --- block {i} of {page.name}\n{b}" for i, b in enumerate(python_blocks(page)))
    script = tmp_path / "page.py"
    script.write_text(program)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MPLBACKEND": "Agg",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PRUNELIB_CACHE": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{page.name}: {done.stderr[-3000:]}"


PACKAGE = ROOT / "prunelib"
EXAMPLE_MODULES = sorted(
    ".".join(f.relative_to(ROOT).with_suffix("").parts)
    for f in PACKAGE.rglob("*.py")
    if ">>> " in f.read_text() and f.name != "__main__.py"
)


def test_docstring_examples_are_found():
    # The parametrization below would pass vacuously if the search found nothing.
    assert {"prunelib.core.forward", "prunelib.core.pruning", "prunelib.models.zoo"} <= set(EXAMPLE_MODULES)


@pytest.mark.parametrize("module", EXAMPLE_MODULES)
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRUNELIB_CACHE", str(tmp_path / "cache"))
    failed, attempted = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert attempted > 0 and failed == 0, f"{module}: {failed} of {attempted} examples failed (output above)"


def test_a_wrong_docstring_example_fails():
    wrong = type(sys)("wrong")
    wrong.__doc__ = ">>> 1 + 1\n3\n"
    assert doctest.testmod(wrong, report=False).failed == 1


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_images_resolve(page):
    broken = [t for t in relative_links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert broken == [], f"{page.name} links to missing files: {broken}"


def test_the_link_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("See [the guide](docs/nowhere.md), ![a figure](img.png) and [a site](https://example.org).")
    assert relative_links(page) == ["docs/nowhere.md", "img.png"]
    assert python_blocks(page) == []


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", page.read_text(), re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_anchors_of_markdown_links_exist(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target) or "#" not in target:
            continue
        path, anchor = target.split("#", 1)
        linked = page.parent / path if path else page
        if linked.suffix == ".md" and linked.exists() and anchor not in anchors(linked):
            broken.append(target)
    assert broken == [], f"{page.name} links to headings that do not exist: {broken}"


def test_the_anchor_checker_knows_githubs_slugs(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n## Side by side with tfmot\n## Memory, and run time (full)\n")
    assert anchors(page) == {"title", "side-by-side-with-tfmot", "memory-and-run-time-full"}


# --- The package map (docs/package-map.md) is generated from the package's own docstrings ------------------

PACKAGE_MAP = ROOT / "docs" / "package-map.md"
MAP_HEADER = """# The package map

<!-- Generated from the docstrings of prunelib's packages and modules by
     `python tests/test_docs.py --write-package-map`; tests/test_docs.py fails when it is stale.
     Edit the docstrings, not this page. -->

One row per module: its docstring's first paragraph. Layers, top to bottom (each may import only
the ones below it; `lint-imports` checks it, see [contributing](contributing.md)): `cli`, `study`,
`reporting`, `models`, `inference`, `core`, `data`, `base`.
"""


def _summary(path: Path) -> str:
    """The first paragraph of a module's docstring on one line (read with ``ast``: nothing is imported)."""
    import ast

    doc = ast.get_docstring(ast.parse(path.read_text(), str(path))) or ""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    first = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", first)  # Sphinx roles -> code
    return first.replace("``", "`").replace("|", "\\|")


def package_map(package: Path = ROOT / "prunelib") -> str:
    """The Markdown of docs/package-map.md: one section per subpackage, one row per module."""
    lines = [MAP_HEADER]
    dirs = [package, *sorted(p for p in package.iterdir() if (p / "__init__.py").exists())]
    for d in dirs:
        dotted = ".".join(d.relative_to(package.parent).parts)
        lines += [
            f"\n## `{dotted}`\n",
            _summary(d / "__init__.py") or "(no docstring)",
            "",
            "| module | what it does |",
            "|---|---|",
        ]
        for f in sorted(d.glob("*.py")):
            if f.name == "__init__.py":
                continue
            name = f"{dotted}.{f.stem}"
            lines.append(
                f"| [`{name}`](../{f.relative_to(package.parent).as_posix()}) | {_summary(f) or '(no docstring)'} |"
            )
    return "\n".join(lines) + "\n"


def test_package_map_is_current():
    assert PACKAGE_MAP.exists(), "docs/package-map.md is missing: run python tests/test_docs.py --write-package-map"
    assert PACKAGE_MAP.read_text() == package_map(), (
        "docs/package-map.md is stale: run python tests/test_docs.py --write-package-map"
    )


def test_package_map_follows_a_docstring(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Top."""\n')
    (pkg / "sub" / "__init__.py").write_text('"""The sub\npackage.\n\nMore."""\n')
    (pkg / "sub" / "mod.py").write_text('"""Does a | b."""\nimport tensorflow\n')
    text = package_map(pkg)
    assert "The sub package." in text and "More." not in text
    assert "| [`pkg.sub.mod`](../pkg/sub/mod.py) | Does a \\| b. |" in text


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-package-map"]:
        PACKAGE_MAP.parent.mkdir(exist_ok=True)
        PACKAGE_MAP.write_text(package_map())
        print(f"wrote {PACKAGE_MAP.relative_to(ROOT)}")
    else:
        sys.exit("usage: python tests/test_docs.py --write-package-map")


def test_readme_headline_numbers_are_the_committed_tables():
    """Every prunelib number in the README's headline table is generated from results/*/sweep.csv."""
    from prunelib.reporting.report import HEADLINE_ROW, headline_rows
    from prunelib.reporting.results import load_results

    quoted = [line for line in (ROOT / "README.md").read_text().splitlines() if HEADLINE_ROW.match(line)]
    assert quoted == headline_rows(load_results(ROOT / "results").sweep)


def test_report_readme_regenerates_the_headline_rows(tmp_path, capsys):
    from prunelib import cli
    from prunelib.reporting.report import HEADLINE_ROW

    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    stale = "\n".join(
        re.sub(r"\| [\d.]+ \(", "| 12.34 (", line, count=1) if HEADLINE_ROW.match(line) else line
        for line in text.splitlines()
    )
    readme.write_text(stale + "\n")
    assert readme.read_text() != text
    assert cli.main(["report", "--results", str(ROOT / "results"), "--readme", str(readme)]) == 0
    assert readme.read_text() == text  # every generated row back, the rest untouched
    readme.write_text("# no table here\n")
    assert cli.main(["report", "--results", str(ROOT / "results"), "--readme", str(readme)]) == 2
    assert "0 generated headline rows" in capsys.readouterr().err


def test_least_squares_seconds_in_the_docs_are_the_committed_benchmark():
    """README.md and docs/least-squares.md quote results/benchmarks/lstsq_solver.csv through
    benchmarks/lstsq_solver.py's generator, between its markers."""
    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _docs
    import lstsq_solver

    blocks = lstsq_solver.docs_blocks(pd.read_csv(ROOT / "results/benchmarks/lstsq_solver.csv"))
    for page, block in lstsq_solver.DOCS.items():
        assert _docs.quoted((ROOT / page).read_text(), lstsq_solver.BLOCK, blocks[block]), (
            f"{page} does not quote the benchmark; run python benchmarks/lstsq_solver.py --write-docs"
        )


@pytest.mark.parametrize(
    "name", ["pipeline", "tfmot", "inference", "memory", "any-model", "cnn-compact", "quantized-export"]
)
def test_benchmark_tables_in_the_docs_are_the_committed_csvs(name):
    """docs/benchmarks.md quotes the pipeline, tfmot, inference and memory CSVs through benchmarks/_docs.py."""
    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _docs

    csv, page, block = _docs.BLOCKS[name]
    assert _docs.quoted((ROOT / page).read_text(), name, block(pd.read_csv(ROOT / csv))), (
        f"{page} does not quote {csv}; run python benchmarks/_docs.py"
    )


def test_a_docs_block_is_replaced_between_its_markers_only(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _docs

    page = tmp_path / "page.md"
    page.write_text("before\n<!-- t:begin -->\nold\n<!-- t:end -->\nafter\n")
    _docs.write(page, "t", "new\nlines")
    assert page.read_text() == "before\n<!-- t:begin -->\nnew\nlines\n<!-- t:end -->\nafter\n"
    assert _docs.quoted(page.read_text(), "t", "new\nlines") and not _docs.quoted(page.read_text(), "t", "new")
    with pytest.raises(ValueError, match="no <!-- u:begin -->"):
        _docs.write(page, "u", "x")


def test_post_training_tables_are_generated_from_the_committed_benchmark():
    """docs/post-training.md holds every table benchmarks/post_training.py --docs writes, as written."""
    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _docs
    import post_training

    text = (ROOT / "docs/post-training.md").read_text()
    table = pd.read_csv(ROOT / "results/benchmarks/post_training.csv")
    blocks = post_training.docs_blocks(table)
    assert len(blocks) >= 11 and set(re.findall(r"<!-- (pt-[\w.-]+):begin -->", text)) == set(blocks)
    for name, block in blocks.items():
        assert _docs.quoted(text, name, block), f"docs/post-training.md's {name} table is stale: run --docs"


def test_post_training_page_quotes_the_committed_benchmark():
    """Every "mean ± CI" docs/post-training.md quotes is a point of benchmarks/post_training.py's
    summary of results/benchmarks/post_training.csv, in the table row of its method."""
    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import post_training

    points = post_training.summary(pd.read_csv(ROOT / "results/benchmarks/post_training.csv"))
    quoted: dict[tuple[str, str], set[str]] = {}  # two methods can share a mean ± CI to two decimals
    for a, c, m in zip(points["accuracy"], points["ci95"], points["method"]):
        quoted.setdefault((f"{a:.2f}", f"{c:.2f}"), set()).add(m)
    text = (ROOT / "docs/post-training.md").read_text()
    pairs = re.findall(r"(\d+\.\d\d) ± (\d+\.\d\d)", text)
    assert len(pairs) > 50
    for pair in pairs:
        assert pair in quoted, f"docs/post-training.md quotes {pair[0]} ± {pair[1]}, which the CSV does not give"
    for line in text.splitlines():
        if line.startswith("| `"):
            method = line.split("`")[1]
            for pair in re.findall(r"(\d+\.\d\d) ± (\d+\.\d\d)", line):
                assert method in quoted[pair], f"{pair} is quoted for {method}, the CSV has it for {quoted[pair]}"


# --- The study's numbers in the docs come from results/ (benchmarks/study_docs.py) ---------------------------


def _study_docs():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import study_docs

    return study_docs


def test_study_numbers_in_the_docs_are_the_committed_results():
    """Every block benchmarks/study_docs.py writes (sweep, goals, recovery, recipes, run times) is on
    its page exactly as it would write it from the committed results/."""
    study_docs = _study_docs()
    assert len(study_docs.BLOCKS) >= 8
    assert study_docs.stale(ROOT) == [], "the docs' study numbers are stale: run python benchmarks/study_docs.py"


def test_a_part_missing_from_results_is_named_with_its_command():
    """No stale numbers where a part is not published: the block names the part and its command."""
    import dataclasses

    import pandas as pd

    from prunelib.study.registry import recompute_command

    study_docs = _study_docs()
    study = study_docs.load(ROOT)
    study.results = dataclasses.replace(study.results, recovery=pd.DataFrame(), recipes=pd.DataFrame())
    study.parts = {}
    blocks = {name: text for name, (_, text) in study_docs.render(study).items()}
    for name, parts in {
        "study-recovery": ("recovery", "aware"),
        "study-recipes": ("recipes",),
        "study-lstsq-vs-finetune": ("recovery",),
        "study-run-times": ("challenge", "recovery", "aware"),
    }.items():
        for part in parts:
            assert "not in results/ yet" in blocks[name]
            for dataset in ("mnist", "fashion-mnist"):
                assert recompute_command(part, dataset) in blocks[name], (name, part, dataset)
    assert not re.search(r"\d\.\d", blocks["study-recovery"] + blocks["study-recipes"])  # no number of its own


def test_the_recipe_block_fills_in_once_the_tables_are_published():
    import dataclasses

    import pandas as pd

    study_docs = _study_docs()
    study = study_docs.load(ROOT)
    curves = pd.concat(
        [pd.read_csv(ROOT / "tests/data/recipe_study" / f"{d}.csv") for d in ("mnist", "fashion-mnist")],
        ignore_index=True,
    )
    layers = (
        curves[["dataset", "recipe", "seed"]]
        .drop_duplicates()
        .assign(layer="dense_0", drift=0.5, top10_weight_share=50.0, top10_unit_share=40.0)
    )
    study.results = dataclasses.replace(study.results, recipes=curves, recipe_layers=layers)
    block = study_docs.recipes_block(study)
    assert "not in results/ yet" not in block
    assert "On mnist the rule picks `b512-lr6e-3-cosine-wd1`" in block  # the default Recipe()
    assert "On fashion-mnist the rule picks" in block and "Issue 22's goal on fashion-mnist" in block


def test_study_docs_check_names_a_stale_block_and_the_script_rewrites_it(tmp_path, capsys):
    study_docs = _study_docs()
    (tmp_path / "results").symlink_to(ROOT / "results")
    for page in {page for page, _ in study_docs.BLOCKS.values()}:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text((ROOT / page).read_text())
    page = tmp_path / "docs/recovery.md"
    page.write_text(page.read_text().replace("<!-- study-recovery:begin -->\n", "<!-- study-recovery:begin -->\nold\n"))
    assert study_docs.main(["--check"], root=tmp_path) == 1
    assert "docs/recovery.md: study-recovery" in capsys.readouterr().out
    assert study_docs.main([], root=tmp_path) == 0
    assert study_docs.main(["--check"], root=tmp_path) == 0
    assert page.read_text() == (ROOT / "docs/recovery.md").read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_quotes_a_dated_study_run(page):
    """The study tables once typed in from a dated run (or from the README of an old commit) are gone:
    study numbers come from results/ through benchmarks/study_docs.py's blocks."""
    text = page.read_text().lower()
    for phrase in ("last full run", "the last run", "logged from the readme", "as the readme quoted them"):
        assert phrase not in text, f"{page.name} still says {phrase!r}"
