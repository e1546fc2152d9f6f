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
