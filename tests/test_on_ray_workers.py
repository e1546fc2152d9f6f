"""A local Ray runtime keeps its workers: a cell holding every CPU does not end the idle ones."""

import os
import sys
import time
from pathlib import Path

import pytest

from prunelib.study.tasks import Cell

ray = pytest.importorskip("ray")


def pid_after(path: str, name: str, seconds: float) -> None:
    time.sleep(seconds)
    Path(path, name).write_text(str(os.getpid()))


@pytest.mark.slow
def test_a_cell_holding_both_cpus_does_not_cost_the_other_worker(tmp_path):
    from prunelib.study.on_ray import execute

    assert not ray.is_initialized()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    cells, before = [], ()
    for r in range(3):  # four trainings, two at a time, then a table cell alone, three times
        trainings = [
            Cell(f"train {r}{i}", pid_after, (str(tmp_path), f"train {r}{i}", 1.5), after=before) for i in range(4)
        ]
        table = Cell(
            f"table {r}", pid_after, (str(tmp_path), f"table {r}", 3.0), cpus=2, after=tuple(c.name for c in trainings)
        )
        cells += [*trainings, table]
        before = (table.name,)
    try:
        outcome = execute(cells, num_cpus=2, progress=False)
    finally:
        ray.shutdown()
    assert outcome.ok
    workers = {p.read_text() for p in tmp_path.iterdir()}
    assert len(workers) == 2, f"{len(workers)} worker processes ran 15 cells on 2 CPUs"
