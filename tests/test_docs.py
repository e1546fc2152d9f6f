"""The docs stay true: every fenced Python block in README.md and docs/ runs, every relative link
and image resolves.

Blocks of one page run in order in one namespace (a page reads top to bottom), in a scratch working
directory with prunelib's cache and data under it, so they never touch the repository's results.
"""

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
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PRUNELIB_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{page.name}: {done.stderr[-3000:]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_images_resolve(page):
    broken = [t for t in relative_links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert broken == [], f"{page.name} links to missing files: {broken}"


def test_the_link_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("See [the guide](docs/nowhere.md), ![a figure](img.png) and [a site](https://example.org).")
    assert relative_links(page) == ["docs/nowhere.md", "img.png"]
    assert python_blocks(page) == []
