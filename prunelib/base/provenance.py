"""Where every artifact comes from: code fingerprints, verified cache entries, the results manifest.

A cached artifact (a trained model, a computed table) is stored beside a readable key file
``<name>.key.json`` holding the description that determines it, the fingerprint of the source
modules that computed it, and a SHA-256 of the artifact. An entry whose key file is missing,
unreadable or whose checksum does not match is recomputed with a warning naming the file, so a
killed run or a damaged disk never feeds a wrong artifact into a result.

``results/manifest.json`` records the commit, the fingerprint of every prunelib module, library
versions, the run's config and a SHA-256 of every file under ``results/``;
:func:`check_manifest` says whether ``results/`` is current for the checked-out code.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import json
import os
import subprocess
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TypeVar

from prunelib.base.paths import atomic_write, digest

T = TypeVar("T")
PACKAGE_DIR = Path(__file__).resolve().parent

# Which source modules determine which artifacts. A change to one of these files invalidates
# exactly the cached artifacts listed against it (configs enter keys by value, not by source).
MODEL_CODE = ("prunelib.models.mlp",)  # data enters by the hash of its arrays
AWARE_CODE = ("prunelib.models.mlp", "prunelib.models.masked", "prunelib.models.recovery")  # pruning-aware training
SWEEP_CODE = ("prunelib.core.pruning", "prunelib.core.forward", "prunelib.core.evaluate", "prunelib.core.compact",
              "prunelib.core.reconstruct")
ANALYSIS_CODE = ("prunelib.core.pruning", "prunelib.core.forward", "prunelib.core.evaluate", "prunelib.study.analysis")
RECOVERY_CODE = ("prunelib.core.pruning", "prunelib.core.forward", "prunelib.core.evaluate", "prunelib.models.recovery",
                 "prunelib.models.masked")
RECIPE_CODE = ("prunelib.core.pruning", "prunelib.core.forward", "prunelib.core.evaluate", "prunelib.study.recipes")
LIBRARIES = ("tensorflow", "keras", "numpy", "scipy", "pandas")


def module_path(module: str) -> Path:
    """The source file of a prunelib module, without importing it."""
    if not module.startswith("prunelib."):
        raise ValueError(f"only prunelib modules are fingerprinted, got {module!r}")
    path = PACKAGE_DIR / (module.split(".", 1)[1].replace(".", "/") + ".py")
    if not path.is_file():
        raise ValueError(f"no source file for {module!r} at {path}")
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(modules: Iterable[str]) -> str:
    """A short hash of the source text of ``modules`` (order-independent)."""
    return digest({m: sha256_file(module_path(m)) for m in sorted(set(modules))})


def versions(libraries: Iterable[str] = LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries whose numerics a result depends on."""
    out = {}
    for lib in libraries:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "absent"
    return out


def key_path(path: Path) -> Path:
    """The key file beside a cached artifact."""
    return path.with_name(path.name + ".key.json")


def _write_json(path: Path, obj: object) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str)))


def _try_load(path: Path, key: dict, load: Callable[[Path], T]) -> tuple[bool, T | None, float, str | None]:
    """``(ok, artifact, seconds, problem)`` for the entry at ``path``; ``problem`` is None when the
    entry is simply absent."""
    if not path.exists():
        return False, None, float("nan"), None
    kpath = key_path(path)
    try:
        meta = json.loads(kpath.read_text())
        if meta.get("sha256") != sha256_file(path):
            return False, None, float("nan"), "its checksum does not match (damaged or replaced)"
        if meta.get("key") != json.loads(json.dumps(key, sort_keys=True, default=str)):
            return False, None, float("nan"), "its key file describes a different artifact"
    except (OSError, ValueError) as err:
        return False, None, float("nan"), f"its key file {kpath.name} is missing or unreadable ({type(err).__name__})"
    try:
        return True, load(path), float(meta.get("seconds", float("nan"))), None
    except Exception as err:  # noqa: BLE001 - any failure to read means recompute
        return False, None, float("nan"), f"it cannot be read ({type(err).__name__}: {err})"


@contextmanager
def _entry_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on one cache entry, so two runs sharing a cache build it once."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class NotCached(LookupError):
    """Raised inside :func:`cache_only` where an artifact would have to be computed."""


_CACHE_ONLY: list[bool] = []


@contextmanager
def cache_only() -> Iterator[None]:
    """Within this block :func:`cached_artifact` only reads: a missing or untrusted entry raises
    :class:`NotCached` instead of being computed (how a run checks cheaply that nothing is left
    to compute)."""
    _CACHE_ONLY.append(True)
    try:
        yield
    finally:
        _CACHE_ONLY.pop()


def cached_artifact(path: Path, key: dict, build: Callable[[], T], save: Callable[[T, Path], object],
                    load: Callable[[Path], T], *, recompute: bool = False) -> tuple[T, float]:
    """Load the artifact at ``path`` if its key file matches ``key`` and its checksum holds,
    else build it, save it atomically, and write the key file.

    Building holds a lock on the entry; a run that waited for it reads what the other built.

    Returns:
        The artifact and the seconds ``build`` took when it ran (as first measured for a cached
        one; NaN if unknown).
    """
    if not recompute:
        ok, artifact, seconds, _ = _try_load(path, key, load)
        if ok:
            return artifact, seconds
    if _CACHE_ONLY:
        raise NotCached(str(path))
    with _entry_lock(path):
        if not recompute:
            ok, artifact, seconds, problem = _try_load(path, key, load)
            if ok:
                return artifact, seconds
            if problem is not None:
                warnings.warn(f"cache entry {path} is not trusted: {problem}; recomputing it", stacklevel=2)
        t0 = time.perf_counter()
        artifact = build()
        seconds = time.perf_counter() - t0
        atomic_write(path, lambda tmp: save(artifact, tmp))
        _write_json(key_path(path), {"key": key, "sha256": sha256_file(path), "seconds": seconds,
                                     "written": datetime.datetime.now().isoformat(timespec="seconds")})
    return artifact, seconds


def package_modules() -> list[str]:
    """Every prunelib module, by name."""
    return sorted(f"prunelib.{p.stem}" for p in PACKAGE_DIR.glob("*.py") if p.stem != "__main__")


_SOURCE_AT_START: dict[str, str] = {}


def _snapshot() -> dict[str, str]:
    """The package source as this process found it when prunelib was first imported: a run that
    lasts an hour records the code it ran, not whatever is on disk when it finishes."""
    if not _SOURCE_AT_START:
        _SOURCE_AT_START.update({m: sha256_file(module_path(m)) for m in package_modules()})
    return dict(_SOURCE_AT_START)


def git_commit(cwd: Path = PACKAGE_DIR) -> tuple[str | None, bool]:
    """The checked-out commit and whether the package source differs from it (None if no git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", str(PACKAGE_DIR)], cwd=cwd,
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        return commit, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return None, False


MANIFEST = "manifest.json"
NOT_RECORDED = ("benchmarks",)
"""Top-level entries of ``results/`` that the manifest leaves out: benchmark scripts write them,
each row with the command that produced it, and a study run neither reads nor rewrites them."""


def _recorded_files(results_dir: Path) -> list[Path]:
    return [p for p in sorted(results_dir.rglob("*"))
            if p.is_file() and p.name != MANIFEST
            and p.relative_to(results_dir).parts[0] not in NOT_RECORDED
            and not any(part.startswith(".") for part in p.relative_to(results_dir).parts)]


def write_manifest(results_dir: str | os.PathLike, config: dict, command: str) -> Path:
    """Record what produced ``results_dir``: code, libraries, config and every file's hash."""
    results_dir = Path(results_dir)
    commit, dirty = git_commit()
    files = {p.relative_to(results_dir).as_posix(): sha256_file(p) for p in _recorded_files(results_dir)}
    code = _snapshot()
    edited = sorted(m for m in package_modules() if code.get(m) != sha256_file(module_path(m)))
    manifest = {"commit": commit, "source_differs_from_commit": dirty, "command": command,
                "code": code, "source_edited_during_run": edited,
                "versions": versions(), "config": config, "files": files}
    path = results_dir / MANIFEST
    _write_json(path, manifest)
    return path


def check_manifest(results_dir: str | os.PathLike) -> list[str]:
    """Problems that make ``results_dir`` not current for the checked-out code (empty = current).

    Checks that every prunelib module is byte-identical to the one that produced the results
    and that every recorded file is present with its recorded hash, and no unrecorded one exists.
    """
    results_dir = Path(results_dir)
    path = results_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return [f"{path} is missing; run `python -m prunelib run`"]
    except (OSError, ValueError) as err:
        return [f"{path} is unreadable ({err}); run `python -m prunelib run`"]
    problems = []
    recorded = manifest.get("code", {})
    for module in sorted(set(package_modules()) | set(recorded)):
        try:
            now = sha256_file(module_path(module))
        except ValueError:
            now = None
        if recorded.get(module) != now:
            problems.append(f"{module} changed since the results were produced")
    files = manifest.get("files", {})
    for name, sha in sorted(files.items()):
        p = results_dir / name
        if not p.is_file():
            problems.append(f"{p} is recorded in the manifest but missing")
        elif sha256_file(p) != sha:
            problems.append(f"{p} differs from the file the run wrote")
    for p in _recorded_files(results_dir):
        if p.relative_to(results_dir).as_posix() not in files:
            problems.append(f"{p} was not written by the recorded run")
    return problems


def import_all() -> None:
    """Import every module (used by tests to prove the fingerprint list names real modules)."""
    for module in package_modules():
        importlib.import_module(module)


_snapshot()
