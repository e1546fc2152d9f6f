"""Writing a user's file so that a failed write never costs them the previous one.

Every file prunelib writes for a user (exports, masks, :class:`~prunelib.inference.sparse.SparseMLP`
files) is written to a temporary file in the target's own directory and renamed onto the target only
once complete: a rename within one directory is atomic, so the target is either the previous file,
byte for byte, or the complete new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def user_path(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`~pathlib.Path` with ``~`` expanded, as a shell would.

    Raises:
        TypeError: ``path`` is not a string or path-like object.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a file path must be a string or path-like object, got {type(path).__name__}")
    return Path(path).expanduser()


def writable_target(path: Path) -> Path:
    """``path``, its directory created, checked not to be a directory itself.

    A symbolic link is written through: the file it points to is replaced (see :func:`replacing`),
    so that file's directory is created too where it is missing.

    Raises:
        ValueError: ``path`` is an existing directory, or a folder on its way is an existing file.
    """
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory; give the path of the file to write")
    for folder in dict.fromkeys([path.parent, _resolved(path).parent]):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            blocking = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
            raise ValueError(f"cannot write {str(path)!r}: {str(blocking)!r} is a file, not a directory") from None
    return path


@contextlib.contextmanager
def creating_folders(path: Path) -> Iterator[Path]:
    """:func:`writable_target` for the block's writes; if the block raises, the folders it created
    are removed again (while empty), so a failed write leaves nothing behind.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> root = Path(tempfile.mkdtemp())
        >>> try:
        ...     with creating_folders(root / "new" / "deeper" / "a.txt"):
        ...         raise RuntimeError("the write failed")
        ... except RuntimeError:
        ...     pass
        >>> list(root.iterdir())
        []
    """
    folders = dict.fromkeys([path.parent, _resolved(path).parent])
    missing = {p for folder in folders for p in [folder, *folder.parents] if not p.exists()}
    try:
        yield writable_target(path)
    except BaseException:
        for folder in sorted(missing, key=lambda p: len(p.parts), reverse=True):  # the deepest first
            with contextlib.suppress(OSError):  # not empty (something else wrote there): it stays
                folder.rmdir()
        raise


def _resolved(path: Path) -> Path:
    """``path``, or the file it finally points to where it is a symbolic link (which need not exist)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _default_mode(target: Path) -> int:
    # mkstemp creates its file 0600; the result should have the permissions an ordinary open()
    # would give it (or the file it replaces keeps its own)
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def replacing(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success, rename it onto ``path``.

    Where ``path`` is a symbolic link, the file it points to is written (the temporary file beside
    that file), and the link is left as it is.

    If the block raises, the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the file to write (its directory must exist).
        suffix: the temporary file's suffix (default ``path``'s own); writers that choose their
            format by suffix (Keras' ``model.save``) need the canonical one, e.g. ``".keras"``.

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> with replacing(target) as tmp:
        ...     _ = tmp.write_text("complete")
        >>> open(target).read()
        'complete'
    """
    # a symbolic link stays: the file it points to is replaced, atomically in that file's directory
    target = _resolved(Path(path))
    suffix = suffix or Path(path).suffix
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before the rename makes it the user's file
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
