"""Code fingerprints derived from the import graph, so no list of modules can forget one.

An artifact (a trained model, a table, a figure) is determined by the function that builds it and
by every prunelib module that function's module imports, directly or not, at module level or
inside a function (this package imports TensorFlow lazily, so function-level imports count).
:func:`closure` walks that graph from the source text (``ast``, nothing is imported) and
:func:`code_fingerprint` hashes the source of every module in it. Imports under
``if TYPE_CHECKING:`` are annotations only and do not count; neither does the implicit run of a
parent package's ``__init__`` (only a module an import statement names is an edge).

The graph and the source hashes are computed once per process, on first use: a run that lasts an
hour is keyed by the code it started with, not whatever is on disk when it finishes.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

from prunelib.base.paths import digest

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _dir(package_dir: Path | None) -> Path:
    """``package_dir``, or this package (read at call time, so a test can point it at a copy)."""
    return PACKAGE_DIR if package_dir is None else package_dir


def _name(path: Path, package_dir: Path) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources(package_dir: Path | None = None) -> dict[str, Path]:
    return _sources_in(_dir(package_dir))


@functools.cache
def _sources_in(package_dir: Path) -> dict[str, Path]:
    return {
        _name(p, package_dir): p
        for p in sorted(package_dir.rglob("*.py"))
        if p.stem != "__main__" and "__pycache__" not in p.parts
    }


def package_modules(package_dir: Path | None = None) -> list[str]:
    """Every module of the package, by dotted name (packages by their ``__init__``)."""
    return sorted(_sources(package_dir))


def module_path(module: str, package_dir: Path | None = None) -> Path:
    """The source file of a prunelib module, without importing it.

    Raises:
        ValueError: ``module`` is not a module of the package.
    """
    try:
        return _sources(package_dir)[module]
    except KeyError:
        raise ValueError(f"no prunelib module named {module!r}; see package_modules()") from None


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_hashes(package_dir: Path | None = None) -> dict[str, str]:
    """SHA-256 of every module's source, read once per process."""
    return _hashes_in(_dir(package_dir))


@functools.cache
def _hashes_in(package_dir: Path) -> dict[str, str]:
    return {m: sha256_file(p) for m, p in _sources(package_dir).items()}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """The package modules a module's import statements name (anywhere but TYPE_CHECKING blocks)."""
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{a.name}" for a in node.names} & modules
            found.update(submodules)  # `from pkg import submodule` names the submodule...
            if len(submodules) < len(node.names):  # ...and `from module import name` the module
                found.add(node.module)
        stack.extend(ast.iter_child_nodes(node))
    return found & modules


def import_graph(package_dir: Path | None = None) -> dict[str, frozenset[str]]:
    """Each module's direct imports inside the package (from the source text; nothing is run)."""
    return _graph_in(_dir(package_dir))


@functools.cache
def _graph_in(package_dir: Path) -> dict[str, frozenset[str]]:
    sources = _sources_in(package_dir)
    modules = set(sources)
    return {m: frozenset(_imports(ast.parse(p.read_text(), str(p)), modules) - {m}) for m, p in sources.items()}


def closure(roots: Iterable[str], package_dir: Path | None = None) -> frozenset[str]:
    """``roots`` and every package module they import, transitively.

    Raises:
        ValueError: a root is not a module of the package.
    """
    graph = import_graph(package_dir)
    todo = list(roots)
    for root in todo:
        module_path(root, package_dir)  # names the bad root
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    return frozenset(seen)


def fingerprint(modules: Iterable[str], package_dir: Path | None = None) -> str:
    """A short hash of the source text of exactly ``modules`` (order-independent)."""
    hashes = source_hashes(package_dir)
    return digest({m: hashes[m] if m in hashes else module_path(m, package_dir) for m in sorted(set(modules))})


def code_fingerprint(*roots: str, package_dir: Path | None = None) -> str:
    """The fingerprint of the code that determines what ``roots`` build: their import closure.

    Example:
        >>> from prunelib.base.fingerprint import closure, code_fingerprint
        >>> "prunelib.core.forward" in closure(["prunelib.core.evaluate"])
        True
        >>> len(code_fingerprint("prunelib.core.evaluate"))
        16
    """
    return fingerprint(closure(roots, package_dir), package_dir)


def package_fingerprint(package_dir: Path | None = None) -> str:
    """The fingerprint of the whole package (worker processes check they run the driver's code)."""
    return fingerprint(package_modules(package_dir), package_dir)
