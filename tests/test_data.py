import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from prunelib import data
from prunelib.base import paths
from prunelib.data import sources as fetch


@pytest.fixture
def images():
    return np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_idx_roundtrip_raw_and_gz(tmp_path, images, name):
    path = tmp_path / name
    data.write_idx(path, images)
    np.testing.assert_array_equal(data.read_idx(path), images)
    if name.endswith(".gz"):
        assert gzip.open(path).read(2) == b"\x00\x00"


def test_idx_truncated(tmp_path, images):
    path = tmp_path / "x-idx3-ubyte"
    data.write_idx(path, images)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(path)


def test_idx_truncated_gz(tmp_path, images):
    path = tmp_path / "x-idx3-ubyte.gz"
    data.write_idx(path, images)
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(data.DataError, match="cannot be read|truncated"):
        data.read_idx(path)


def test_idx_bad_magic(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(data.DataError, match="bad magic number"):
        data.read_idx(path)


def test_idx_missing(tmp_path):
    with pytest.raises(data.DataError, match="missing.*fetch"):
        data.read_idx(tmp_path / "nope")


def test_verify_file_rejects_wrong_hash(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    data.verify_file(path, data.sha256_of(path))
    with pytest.raises(data.DataError, match="corrupt.*prunelib.data fetch"):
        data.verify_file(path, "0" * 64)


def test_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(data.DataError, match="unknown dataset 'cifar'.*fashion-mnist"):
        data.load_dataset("cifar", tmp_path)


def _fake_spec(tmp_path, monkeypatch, n_train=5, n_test=3):
    """Register a tiny dataset whose source files live in a fake 'Debian' directory."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    files = {role: f"{role}.gz" for role in arrays}
    for role, fname in files.items():
        data.write_idx(src / fname, arrays[role])
    spec = data.DatasetSpec(
        "fashion-mnist", files, {f: data.sha256_of(src / f) for f in files.values()}, "fashion_mnist"
    )
    monkeypatch.setitem(data.DATASETS, "fashion-mnist", spec)
    monkeypatch.setattr(fetch, "DEBIAN_DIR", src)
    monkeypatch.setattr(fetch, "from_keras", lambda *a: None)  # stay offline in tests
    monkeypatch.setattr(fetch, "run_command", lambda *a: False)
    return arrays, src


def test_fetch_copies_verified_files_and_loads_scaled(tmp_path, monkeypatch):
    arrays, _ = _fake_spec(tmp_path, monkeypatch)
    ds = data.load_dataset("fashion-mnist", tmp_path / "data")
    assert ds.x_train.dtype == np.float32 and ds.x_train.shape == (5, 28, 28)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    np.testing.assert_allclose(ds.x_test * 255, arrays["test_images"], atol=1e-4)
    assert ds.y_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    leftovers = [p for p in (tmp_path / "data" / "fashion-mnist").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_fetch_refuses_corrupt_source_with_fix_instructions(tmp_path, monkeypatch):
    _, src = _fake_spec(tmp_path, monkeypatch)
    (src / "test_labels.gz").write_bytes(b"garbage")
    with pytest.raises(data.DataError, match=r"test_labels.gz.*python -m prunelib.data fetch fashion-mnist"):
        data.fetch("fashion-mnist", tmp_path / "data")
    assert not (tmp_path / "data" / "fashion-mnist" / "test_labels.gz").exists()


def test_corrupt_file_in_data_dir_is_replaced(tmp_path, monkeypatch):
    _fake_spec(tmp_path, monkeypatch)
    root = data.fetch("fashion-mnist", tmp_path / "data")
    (root / "train_images.gz").write_bytes(b"half a file")
    data.fetch("fashion-mnist", tmp_path / "data")
    data.verify_file(root / "train_images.gz", data.DATASETS["fashion-mnist"].sha256["train_images.gz"])


def test_interrupted_copy_leaves_no_partial_file(tmp_path, monkeypatch):
    _, src = _fake_spec(tmp_path, monkeypatch)

    def boom(a, b):
        Path(b).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch.shutil, "copyfile", boom)
    with pytest.raises(KeyboardInterrupt):
        data.fetch("fashion-mnist", tmp_path / "data")
    root = tmp_path / "data" / "fashion-mnist"
    assert not root.exists() or os.listdir(root) == []


def test_cli_reports_error_and_exit_code(tmp_path, monkeypatch, capsys):
    _, src = _fake_spec(tmp_path, monkeypatch)
    for f in src.iterdir():
        f.unlink()
    assert data.main(["fetch", "fashion-mnist", "--data-dir", str(tmp_path / "d")]) == 1
    assert "apt-get download dataset-fashion-mnist" in capsys.readouterr().err


def test_pinned_hashes_cover_every_file():
    for spec in data.DATASETS.values():
        assert set(spec.files.values()) == set(spec.sha256)
        assert all(len(h) == 64 for h in spec.sha256.values())


@pytest.mark.skipif(not (paths.data_dir() / "mnist").is_dir(), reason="real MNIST not fetched")
def test_real_mnist_label_counts():
    ds = data.load_dataset("mnist")
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
