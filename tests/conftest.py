"""How the suite runs in parallel (the Makefile's ``test`` and ``test-fast``, pytest-xdist).

Each test file's tests stay on one worker (``--dist loadgroup`` with a group per file), so a
module's expensive fixture (the executed notebook, a trained model) is built once. The files that
start a local Ray runtime are marked ``ray`` and run after the parallel pass, alone: Ray's start-up
times out when another worker keeps the two cores busy."""

import pytest

RAY_FILES = {"test_on_ray.py", "test_on_ray_workers.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(item.path.name))
        if item.path.name in RAY_FILES:
            item.add_marker(pytest.mark.ray)


@pytest.fixture
def scratch_code(monkeypatch, tmp_path):
    """Fingerprints read a scratch copy of the package; returns an editor of its modules."""
    import shutil

    from prunelib.base import fingerprint

    copy = tmp_path / "src" / "prunelib"
    shutil.copytree(fingerprint.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint, "PACKAGE_DIR", copy)

    def edit(module):
        with open(fingerprint.module_path(module), "a") as handle:
            handle.write("# a one-line change\n")
        fingerprint._hashes_in.cache_clear()

    return edit
