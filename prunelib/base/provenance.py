"""Where every artifact comes from: code fingerprints, verified cache entries, the results manifest.

A cached artifact (a trained model, a computed table) is stored beside a readable key file
``<name>.key.json`` holding the description that determines it, the fingerprint of the code that
computed it (:func:`prunelib.base.fingerprint.code_fingerprint`), and a SHA-256 of the artifact. An entry whose key file is missing,
unreadable or whose checksum does not match is recomputed with a warning naming the file, so a
killed run or a damaged disk never feeds a wrong artifact into a result.

``results/manifest.json`` records the commit, the source hash of every module that determines
the results (derived from the import graph, :mod:`prunelib.base.fingerprint`), library versions,
the run's config and a SHA-256 of every file under ``results/``;
:func:`check_manifest` says whether ``results/`` is current for the checked-out code.
"""

from __future__ import annotations

import datetime
import hashlib
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

from prunelib.base.fingerprint import PACKAGE_DIR, closure, module_path, sha256_file, source_hashes
from prunelib.base.paths import atomic_write

T = TypeVar("T")

LIBRARIES = ("tensorflow", "keras", "numpy", "scipy", "pandas")

RESULTS_CODE = ("prunelib.study.experiment", "prunelib.reporting.results")
"""Where a run's results are computed (every table) and written (figures, report, manifest): the
code that determines ``results/`` is the import closure of these. The runners that only schedule
the same computations (local workers, Ray) and the CLI are outside it."""

WRITER_CODE = ("prunelib.reporting.results",)
"""What writes ``results/`` from the tables (figures, report, manifest): a manifest with parts
records this closure at its top level and each part's own code in the part's entry."""


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
        if not isinstance(meta, dict):  # e.g. `null` or a list: damaged, so recompute
            raise ValueError(f"it holds {type(meta).__name__}, not an object")
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


def cached_artifact(
    path: Path,
    key: dict,
    build: Callable[[], T],
    save: Callable[[T, Path], object],
    load: Callable[[Path], T],
    *,
    recompute: bool = False,
) -> tuple[T, float]:
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
        _write_json(
            key_path(path),
            {
                "key": key,
                "sha256": sha256_file(path),
                "seconds": seconds,
                "written": datetime.datetime.now().isoformat(timespec="seconds"),
            },
        )
    return artifact, seconds


def git_commit(cwd: Path = PACKAGE_DIR) -> tuple[str | None, bool]:
    """The checked-out commit and whether the package source differs from it (None if no git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", str(PACKAGE_DIR)],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        return commit, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return None, False


MANIFEST = "manifest.json"
NOT_RECORDED = ("benchmarks",)
"""Top-level entries of ``results/`` that the manifest leaves out: benchmark scripts write them,
each row with the command that produced it, and a study run neither reads nor rewrites them."""


def _recorded_files(results_dir: Path) -> list[Path]:
    return [
        p
        for p in sorted(results_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST and p.relative_to(results_dir).parts[0] not in NOT_RECORDED
    ]


def _seal(manifest: dict) -> str:
    """A hash of the manifest's own fields, so a hand edit of any of them shows."""
    body = {k: v for k, v in manifest.items() if k != "sealed"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def results_code() -> dict[str, str]:
    """Source hashes of the modules that determine a run's results (:data:`RESULTS_CODE`'s
    closure), as this process first read them."""
    hashes = source_hashes()
    return {m: hashes[m] for m in sorted(closure(RESULTS_CODE))}


def part_record(
    roots: Iterable[str], *, command: str, recompute: str, preset: str | None, seconds: float | None, config: dict
) -> dict:
    """One part's provenance for the manifest: commit, command, preset, machine, seconds, config and
    the source hashes of ``roots``' import closure (as this process first read them).

    Args:
        roots: the modules whose closure determines the part.
        recompute: the command that computes this part again (what ``report --check`` names).
        seconds: the wall-clock seconds of the run that computed it (None: not measured).
    """
    from prunelib.base import machine

    commit, dirty = git_commit()
    hashes = source_hashes()
    return {
        "commit": commit,
        "source_differs_from_commit": dirty,
        "command": command,
        "recompute": recompute,
        "preset": preset,
        "machine": machine.facts(),
        "seconds": None if seconds is None else round(float(seconds), 1),
        "roots": sorted(roots),
        "code": {m: hashes[m] for m in sorted(closure(roots))},
        "config": config,
    }


def manifest_parts(results_dir: str | os.PathLike, legacy: Callable[[dict], dict[str, dict]]) -> dict[str, dict]:
    """The part entries of ``results_dir``'s manifest (empty: no readable manifest).

    ``legacy`` turns a manifest written before parts existed (one code record for everything) into
    entries, so results published then stay readable.
    """
    try:
        manifest = json.loads((Path(results_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(manifest, dict) or _manifest_field_problems(manifest, Path(results_dir) / MANIFEST):
        return {}
    return dict(manifest["parts"]) if "parts" in manifest else legacy(manifest)


def write_manifest(
    results_dir: str | os.PathLike, config: dict, command: str, parts: dict[str, dict] | None = None
) -> Path:
    """Record what produced ``results_dir``: code, libraries, config and every file's hash.

    ``parts`` (name -> :func:`part_record`): each part's own provenance; the top-level code is then
    the writer's (:data:`WRITER_CODE`) and :func:`check_manifest` judges each part by its own code.
    Without ``parts`` the top level records the code of everything (:data:`RESULTS_CODE`).
    """
    from prunelib.base import machine

    results_dir = Path(results_dir)
    commit, dirty = git_commit()
    files = {p.relative_to(results_dir).as_posix(): sha256_file(p) for p in _recorded_files(results_dir)}
    hashes = source_hashes()
    code = results_code() if parts is None else {m: hashes[m] for m in sorted(closure(WRITER_CODE))}
    edited = sorted(m for m in code if code[m] != sha256_file(module_path(m)))
    manifest = {
        "commit": commit,
        "source_differs_from_commit": dirty,
        "command": command,
        "code": code,
        "source_edited_during_run": edited,
        "versions": versions(),
        "machine": machine.facts(),
        "config": config,
        "files": files,
    }
    if parts is not None:
        manifest["parts"] = parts
    manifest["sealed"] = _seal(json.loads(json.dumps(manifest, default=str)))
    path = results_dir / MANIFEST
    _write_json(path, manifest)
    return path


def _current_hash(module: str) -> str | None:
    try:
        return sha256_file(module_path(module))
    except (ValueError, OSError):
        return None


def _manifest_field_problems(manifest: object, path: Path) -> list[str]:
    """The manifest's own fields, checked before they are used (a hand-edited or damaged manifest
    is "not current", never a traceback): an object whose ``code`` and ``files`` map names to
    hex hashes, file names relative and inside the results directory."""
    fix = "run `python -m prunelib run`"
    if not isinstance(manifest, dict):
        return [f"{path} holds a JSON {type(manifest).__name__}, not an object; {fix}"]
    problems = []
    for field in ("code", "files"):
        value = manifest.get(field)
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            problems.append(f"{path}: field {field!r} must map names to hashes, got {str(value)[:60]}; {fix}")
    entries = manifest.get("parts", {})
    if not isinstance(entries, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("code"), dict) and isinstance(e.get("roots"), list)
        for e in entries.values()
    ):
        problems.append(f"{path}: field 'parts' must map part names to records, got {str(entries)[:60]}; {fix}")
    files = manifest.get("files")
    if isinstance(files, dict):
        for name in files:
            parts = Path(str(name)).parts
            if not parts or Path(str(name)).is_absolute() or ".." in parts:
                problems.append(f"{path}: file name {str(name)[:60]!r} is not inside the results directory; {fix}")
    return problems


def _changed(recorded: dict, roots: Iterable[str]) -> list[str]:
    """Modules of ``roots``' closure (as the code on disk imports now) or of ``recorded`` whose
    source differs from the recorded hash."""
    try:
        now = set(closure(roots))
    except ValueError:  # a root was renamed or removed: it changed
        now = set()
    return [m for m in sorted(now | set(recorded)) if recorded.get(m) != _current_hash(m)]


def _parts_problems(code: dict, entries: dict[str, dict]) -> list[str]:
    """The writer's changed modules (of ``code``, the top-level record), then one line per part
    whose own code changed."""
    again = next((e.get("recompute") for e in entries.values()), "python -m prunelib run")
    writer = {m: h for m, h in code.items() if m in closure(WRITER_CODE)}  # a legacy record holds more
    problems = [
        f"{module} changed since results/ was written (figures, report); publish again, e.g. `{again}`"
        for module in _changed(writer, WRITER_CODE)
    ]
    for name, entry in sorted(entries.items()):
        changed = _changed(entry["code"], entry["roots"])
        if changed:
            more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
            problems.append(
                f"part {name}: {changed[0]}{more} changed since it was computed; "
                f"recompute it: `{entry.get('recompute')}`"
            )
    return problems


def check_manifest(
    results_dir: str | os.PathLike, legacy: Callable[[dict], dict[str, dict]] | None = None
) -> list[str]:
    """Problems that make ``results_dir`` not current for the checked-out code (empty = current).

    Checks the manifest's own fields (types, file names, and a seal over them that a hand edit
    breaks), that every module that determines the results (the import closure of
    :data:`RESULTS_CODE`, as the code on disk now imports) is byte-identical to the one that
    produced them, that every recorded file is present with its recorded hash, and that no
    unrecorded file exists.

    A manifest with parts is judged part by part: the writer's code (:data:`WRITER_CODE`) at the
    top level, then each part's own code, a changed part named with the command that recomputes
    it. ``legacy`` reads a manifest written before parts as parts (as :func:`manifest_parts`), so
    it is judged the same way; without it such a manifest is judged by its one code record.
    """
    results_dir = Path(results_dir)
    path = results_dir / MANIFEST
    rerun = "run `python -m prunelib run`"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return [f"{path} is missing; {rerun}"]
    except (OSError, ValueError) as err:
        return [f"{path} is unreadable ({err}); {rerun}"]
    problems = _manifest_field_problems(manifest, path)
    if problems:
        return problems
    if manifest.get("sealed") != _seal(manifest):
        problems.append(f"{path} was edited after the run wrote it (its fields no longer match its seal)")
    recorded = manifest["code"]
    entries = manifest.get("parts") or (legacy(manifest) if legacy is not None else None)
    if entries:
        problems += _parts_problems(recorded, entries)
    else:  # written before parts, and no reading of it by parts: one record for everything
        for module in sorted(set(closure(RESULTS_CODE)) | set(recorded)):
            if recorded.get(module) != _current_hash(module):
                problems.append(f"{module} changed since the results were produced")
    files = manifest["files"]
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
