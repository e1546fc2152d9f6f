"""Round 6 of the fault hunt: a stopped run, pruning while training, the model-level API on a
model's own preprocessing and integer inputs, and export.

Each test fails on the code before its fix: a SIGTERM'd run ending with Python's "leaked semaphore
objects" warning, workers that die while starting respawned forever, TensorFlow's retracing
warning from every worker that trains a sixth model, ``recipes`` writing into published results,
an N:M schedule that never began and said nothing, two callbacks masking one layer, a resumed run
reporting k=0, a wrapped kernel left dense without a word, a failed ``SparseMLP.save`` destroying
the previous file, copies losing a Normalization's or a lookup's state, integer inputs misread,
and a graph re-fit that Keras computes otherwise returned without a word.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from test_faults_cli import _workers, gone, start_driver

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}


@pytest.mark.slow
def test_sigterm_mid_cell_leaves_no_leaked_semaphore_warning():
    """The worker's cell holds a multiprocessing semaphore (tqdm's lock is one) when the run is
    stopped: the worker unwinds, releasing it, so the driver's one line is all that shows."""
    driver, workers = start_driver(cell="workers.hold_a_semaphore, (120,)")
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 143 and err.strip() == "stopped Terminated", err
    assert gone(workers, 10)


@pytest.mark.slow
def test_a_worker_that_cannot_start_ends_the_run_with_one_error(tmp_path):
    """A script without a ``__main__`` guard: each spawned worker imports it again and dies while
    starting. The run says so once, instead of starting workers until it is killed."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent("""
            import time
            from prunelib.study import local
            from prunelib.study.tasks import Cell
            local.execute_local([Cell("sleep", time.sleep, (1,))], progress=False)
        """)
    )
    proc = subprocess.run(
        [sys.executable, str(script)], env=_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("prunelib.study.local.WorkerStartFailed: a worker process exited while starting"), last
    assert "if __name__ == '__main__':" in last
    # One worker's import error, not a stream of them.
    assert proc.stderr.count("An attempt has been made to start a new process") == 1, proc.stderr[-2000:]


@pytest.mark.slow
def test_a_worker_training_many_models_shows_no_retracing_warning_but_real_ones():
    driver = textwrap.dedent("""
        from prunelib.study import local
        from prunelib.study.tasks import Cell
        import workers

        if __name__ == "__main__":
            outcome = local.execute_local([Cell("train", workers.train_many_models, (7,))], progress=False)
            assert outcome.ok, outcome.failed
    """)
    proc = subprocess.run([sys.executable, "-c", driver], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "retracing" not in proc.stderr, proc.stderr[-3000:]
    assert "a real tensorflow warning from the cell" in proc.stderr, proc.stderr[-3000:]


def test_the_retracing_filter_drops_only_that_warning():
    """The filter passes every other record of TensorFlow's logger, including other retracing
    warnings (a user's own function traced in a loop)."""
    import logging

    from prunelib.base import quiet

    keep = quiet._ManyModelsRetracing().filter

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("tensorflow", logging.WARNING, __file__, 1, message, None, None)

    trainer = (
        "5 out of the last 5 calls to <function TensorFlowTrainer._make_function.<locals>.multi_step_on_iterator "
        "at 0x7f> triggered tf.function retracing. Tracing is expensive"
    )
    users = "5 out of the last 5 calls to <function my_step at 0x7f> triggered tf.function retracing."
    assert not keep(record(trainer))
    assert keep(record(users)) and keep(record("some other warning"))


def test_recipes_refuses_published_results_and_defaults_to_a_scratch_directory(capsys, tmp_path, monkeypatch):
    """``python -m prunelib recipes`` wrote its tables into results/ (its default), outside the
    publish lock and no part's record: report --check then called results/ edited. A folder
    holding a manifest is refused before any training; without --results it writes elsewhere."""
    from prunelib import cli

    published = tmp_path / "results"
    published.mkdir()
    (published / "manifest.json").write_text("{}")
    assert cli.main(["recipes", "--dataset", "mnist", "--results", str(published)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds published results" in err and "run --part recipes" in err, err
    assert sorted(p.name for p in published.iterdir()) == ["manifest.json"]

    monkeypatch.setenv("PRUNELIB_HOME", str(tmp_path / "home"))
    seen = {}

    def fake_run_recipes(names, **kwargs):
        raise RuntimeError("stop here")

    monkeypatch.setattr("prunelib.study.experiment.run_recipes", fake_run_recipes)
    monkeypatch.setattr(cli, "_writable_dir", lambda path, option: seen.setdefault("path", path))
    assert cli.main(["recipes", "--dataset", "mnist"]) == 2
    assert seen["path"] == tmp_path / "home" / "recipes-results"


# -- pruning while training: what the callback promises, said when it is not kept ---------------


def _cnn(seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 4))
    hidden = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, name="out")(keras.layers.Flatten()(hidden)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(seed).random((64, 6, 6, 4), dtype=np.float32)
    return model, x, np.arange(64) % 4


def _fit(model, x, y, callbacks, **kwargs):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=16, verbose=0, callbacks=callbacks, **kwargs)
    return history, [str(w.message) for w in caught]


def test_an_n_m_schedule_that_never_begins_warns_as_weight_pruning_does():
    """begin_step past the fit's last step: the model stays dense. Weight pruning warned; N:M did not."""
    from prunelib import PruningCallback
    from prunelib.schedules import ConstantSparsity

    model, x, y = _cnn()
    _, said = _fit(model, x, y, [PruningCallback(granularity="2:4", schedule=ConstantSparsity(50, begin_step=100))])
    assert int((model.get_layer("conv").kernel.numpy() == 0).sum()) == 0
    assert any("before its N:M masks were set" in s and "begin_step, 100" in s for s in said), said


def test_two_callbacks_on_one_layer_are_refused_before_either_touches_it():
    """Both masks held (175 of 288 zeros, neither callback's promise) and one callback's mask stayed
    the kernel's constraint after fit, pruning later training without any callback."""
    from prunelib import PruningCallback
    from prunelib.schedules import ConstantSparsity

    model, x, y = _cnn()
    kernel = model.get_layer("conv").kernel
    before = kernel.numpy().copy()
    first = PruningCallback(50, layers=["conv"], schedule=ConstantSparsity(50))
    with pytest.raises(ValueError, match="layer 'conv' is pruned by two callbacks of this fit"):
        model.fit(x, y, verbose=0, callbacks=[first, PruningCallback(granularity="2:4", layers=["conv"])])
    np.testing.assert_array_equal(kernel.numpy(), before)
    assert kernel.constraint is None
    # The same callback listed twice, and two callbacks on different layers, still train.
    _, said = _fit(model, x, y, [first, first], epochs=1)
    assert int((kernel.numpy() == 0).sum()) == 144
    other, xo, yo = _cnn(1)
    _fit(other, xo, yo, [PruningCallback(50, layers=["conv"]), PruningCallback(50, layers=["out"])], epochs=2)


def test_resuming_with_masks_after_the_schedule_ended_reports_the_masks_k():
    """The documented resume path (masks=callback.masks on the reloaded model) logged prune_k 0 and
    warned that the masks were at k=0 while the kernel was 60 % zeros."""
    from prunelib import PruningCallback
    from prunelib.schedules import PolynomialDecay

    def schedule():
        return PolynomialDecay(0, 60, begin_step=0, end_step=6, frequency=2)

    model, x, y = _cnn()
    first = PruningCallback(60, schedule=schedule())
    _fit(model, x, y, [first], epochs=2)  # 8 steps: the schedule ended at step 6
    resumed = PruningCallback(60, schedule=schedule(), masks=first.masks)
    history, said = _fit(model, x, y, [resumed], epochs=1)
    assert history.history["prune_k"] == [60.0] and resumed.k_now == 60.0
    assert not any("training ended" in s for s in said), said
    assert resumed.masks["conv/kernel"].tolist() == first.masks["conv/kernel"].tolist()


def test_resuming_mid_ramp_reports_the_k_of_the_last_update():
    """Masks given at a step between updates: prune_k is the schedule's k at its last update (what an
    uninterrupted run's masks are at), not the k the schedule would give at this very step."""
    from prunelib.schedules import PolynomialDecay
    from prunelib.toolkit.masking import MaskingCallback

    callback = MaskingCallback(60, schedule=PolynomialDecay(0, 60, begin_step=0, end_step=100, frequency=10))
    callback._active = callback.schedule
    assert callback._k_reached(25) == callback.schedule.k_at(20) < callback.schedule.k_at(25)
    assert callback._k_reached(500) == 60.0


def test_a_kernel_inside_a_wrapper_is_named_not_silently_left_dense():
    """PruningCallback left a TimeDistributed(Dense) kernel at 0 zeros without a word (prune_model warned)."""
    import keras

    from prunelib import PruningCallback

    inputs = keras.Input((3, 4))
    wrapped = keras.layers.TimeDistributed(keras.layers.Dense(8), name="td")(inputs)
    hidden = keras.layers.Dense(8, name="hidden")(keras.layers.Flatten()(wrapped))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    model.compile("sgd", "mse")
    x, y = np.zeros((16, 3, 4), np.float32), np.zeros((16, 2), np.float32)
    _, said = _fit(model, x, y, [PruningCallback(50)], epochs=1)
    assert any("td (TimeDistributed)" in s and "PruningCallback does not prune" in s for s in said), said


def test_a_failed_sparse_mlp_save_keeps_the_previous_file(tmp_path, monkeypatch):
    """SparseMLP.save wrote in place: a save that failed part-way (a full disk) left a truncated file
    that no longer loaded, the previous model lost. It also now expands ~ and creates folders."""
    from prunelib.inference.sparse import SparseMLP

    rng = np.random.default_rng(0)
    model = SparseMLP([rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((3, 2)).astype(np.float32)])
    path = model.save(tmp_path / "m.npz")
    before = path.read_bytes()

    def full_disk(file, **arrays):
        with open(file, "wb") as f:
            f.write(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full_disk)
    with pytest.raises(OSError, match="No space left"):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    np.testing.assert_array_equal(
        SparseMLP.load(path).predict(np.ones((1, 4), np.float32)), model.predict(np.ones((1, 4), np.float32))
    )

    monkeypatch.setenv("HOME", str(tmp_path))
    assert model.save("~/new/deeper/m") == tmp_path / "new" / "deeper" / "m.npz"


# -- the model-level API on a model's own preprocessing, integer inputs and Keras' own readings -------


def test_copies_keep_an_adapted_normalization_and_a_lookup_vocabulary():
    """set_weights copies neither what an adapted Normalization derives from its variables nor a
    lookup's vocabulary (a table): prune_model refused the first ("cannot be copied exactly") and
    returned a model whose predict failed inside TensorFlow for the second."""
    import keras

    import prunelib

    rng = np.random.default_rng(0)
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(rng.random((32, 6)).astype(np.float32) * 255)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(norm(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    x = rng.random((8, 6)).astype(np.float32) * 255
    pruned = prunelib.prune_model(model, 50)
    kept = pruned.get_layer("hidden").kernel.numpy() != 0
    want = model.get_layer("out")(
        keras.activations.relu(
            model.get_layer("norm")(x) @ (model.get_layer("hidden").kernel * kept) + model.get_layer("hidden").bias
        )
    )
    np.testing.assert_allclose(pruned.predict(x, verbose=0), keras.ops.convert_to_numpy(want), rtol=1e-5, atol=1e-5)

    lookup = keras.layers.IntegerLookup(name="lookup")
    lookup.adapt(rng.integers(100, 110, 50))
    ids = keras.Input((4,), dtype="int64")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(lookup.vocabulary_size(), 3, name="emb")(lookup(ids)))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(embedded)
    model = keras.Model(ids, keras.layers.Dense(2, name="out")(hidden))
    x = rng.integers(100, 110, (8, 4)).astype(np.int64)
    pruned = prunelib.prune_model(model, 0)  # k = 0: the copy itself
    np.testing.assert_array_equal(pruned.predict(x, verbose=0), model.predict(x, verbose=0))


def test_an_integer_input_model_is_read_and_compacted_and_a_float16_input_is_named():
    """A uint8 input (raw pixels): the self-check probed with standard-normal floats, which Keras cast
    to uint8 and the numpy reading did not, so predictor_from_model and compact_model refused it as
    "a branch or skip connection". A float16 input got the same message, not the dtype refusal."""
    import keras

    import prunelib

    rng = np.random.default_rng(0)
    model = keras.Sequential(
        [keras.Input((6,), dtype="uint8"), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
    )
    x = rng.integers(0, 256, (5, 6)).astype(np.uint8)
    want = model.predict(x, verbose=0)
    np.testing.assert_allclose(prunelib.predictor_from_model(model).predict(x), want, rtol=1e-5, atol=1e-4)
    small = prunelib.compact_model(prunelib.prune_model(model, 50, "unit"))
    assert small.inputs[0].dtype == "uint8"
    half = keras.Sequential([keras.Input((6,), dtype="float16"), keras.layers.Dense(8), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="input .* is float16; rebuild the model with a float32 input"):
        prunelib.predictor_from_model(half)


def test_a_refit_keras_applies_otherwise_is_refused_not_returned_worse():
    """A channels_first convolution whose output width equals its channel count: Keras adds its bias
    along the last axis. With a zero dense bias the reading check passed, the re-fit wrote a nonzero
    bias, and the result was worse than plain pruning without a word."""
    import keras

    import prunelib

    keras.utils.set_random_seed(1)
    inputs = keras.Input((4, 6, 6))
    conv = keras.layers.DepthwiseConv2D(3, data_format="channels_first", activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.Flatten()(conv)))
    x = np.random.default_rng(0).random((64, 4, 6, 6), dtype=np.float32)
    with pytest.raises(ValueError, match="layer 'conv' .* does not compute what its kernel and bias give"):
        prunelib.reconstruct_model(model, prunelib.prune_model(model, 60), x)


def test_too_few_calibration_rows_name_a_bias_only_where_there_is_one():
    import keras

    import prunelib

    model = keras.Sequential(
        [keras.Input((40,)), keras.layers.Dense(8, use_bias=False, name="nobias"), keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError) as err:
        prunelib.post_training_model(model, 50, np.ones((4, 40), np.float32))
    assert "layer 'nobias'" in str(err.value) and "bias counted" not in str(err.value), err.value


@pytest.mark.slow
def test_stopped_workers_that_cannot_unwind_share_one_wait(tmp_path):
    """Two workers inside calls SIGTERM cannot interrupt: each was given UNWIND_SECONDS in turn, so a
    Ctrl-C took twice that; they are now terminated together and given one wait before the kill."""
    driver = textwrap.dedent(f"""
        import signal
        from prunelib.study import local
        from prunelib.study.tasks import Cell
        import workers

        if __name__ == "__main__":
            # Ctrl-C as a terminal-started process has it (the test runner's worker may pass on an
            # ignored or blocked SIGINT, as tests/test_faults_cli.py's driver notes)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
            local.UNWIND_SECONDS = 4.0
            cells = [Cell(name, workers.deaf_to_sigterm, ({str(tmp_path)!r},)) for name in "ab"]
            local.execute_local(cells, workers=2, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", driver], env=_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    if len(list(tmp_path.iterdir())) < 2:
        proc.kill()
        pytest.fail(f"the cells did not start: {proc.communicate()[1][-2000:]}")
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=60)
    finally:
        proc.kill()  # never a driver left behind
    # one shared wait of 4 s, then the kill; one after the other took 8 s and more
    assert time.monotonic() - started < 7.0


# -- the second review of round 6 -----------------------------------------------------------------


def test_a_model_that_refuses_the_integer_probe_is_still_copied():
    """The copy's self-check fed an integer input the ids 0 and 1; a lookup without them made
    prune_model fail inside TensorFlow. Such a model is copied unchecked, as before."""
    import keras

    import prunelib

    lookup = keras.layers.IntegerLookup(vocabulary=[3, 5, 7], num_oov_indices=0)
    ids = keras.Input((4,), dtype="int64")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(3, 2, name="emb")(lookup(ids)))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(embedded)
    model = keras.Model(ids, keras.layers.Dense(2, name="out")(hidden))
    x = np.random.default_rng(0).choice([3, 5, 7], (8, 4)).astype(np.int64)
    np.testing.assert_array_equal(prunelib.prune_model(model, 0).predict(x, verbose=0), model.predict(x, verbose=0))


def test_a_float16_input_is_refused_only_where_numpy_reads_the_model():
    """The re-fits read each layer's input from Keras, which casts a float16 input itself."""
    import keras

    import prunelib

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2), dtype="float16")
    conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(conv)))
    x = np.random.default_rng(0).random((64, 6, 6, 2)).astype(np.float16)
    prunelib.reconstruct_model(model, prunelib.prune_model(model, 50), x)


def test_a_start_callback_used_again_on_another_model_prunes_that_model():
    """PruningCallback(start=...) kept the first model's layer names, so beside another callback
    the second model's fit failed ("not layers of model ...")."""
    import keras

    import prunelib

    rng = np.random.default_rng(0)
    x, y = rng.random((64, 6)).astype(np.float32), rng.random((64, 2)).astype(np.float32)
    start = prunelib.PruningCallback(50, start="per-unit-obs-gradual", x=x)
    for _ in range(2):
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
        model.compile("sgd", "mse")
        model.fit(x, y, verbose=0, callbacks=[start, prunelib.PruningCallback(50, layers=[model.layers[-1].name])])
        assert int((model.layers[0].kernel.numpy() == 0).sum()) == 24


def test_an_int8_tflite_file_quantizing_every_kernel_does_not_warn(tmp_path):
    """A folded Normalization's constants (no converter quantizes them) were counted as weights
    left float32."""
    import warnings

    import keras

    import prunelib

    rng = np.random.default_rng(0)
    norm = keras.layers.Normalization()
    norm.adapt(rng.random((32, 64)).astype(np.float32))
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(64, activation="relu")(norm(inputs))
    model = keras.Model(inputs, keras.layers.Dense(32)(hidden))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prunelib.export(model, tmp_path / "m.tflite", quantize="int8")
    assert not [w for w in caught if "stayed float32" in str(w.message)]


def test_the_retracing_filter_drops_the_predict_functions_too():
    import logging

    from prunelib.base import quiet

    message = (
        "5 out of the last 5 calls to <function TensorFlowTrainer.make_predict_function.<locals>."
        "one_step_on_data_distributed at 0x7f> triggered tf.function retracing."
    )
    assert not quiet._ManyModelsRetracing().filter(logging.LogRecord("tensorflow", 30, "", 1, message, None, None))


@pytest.mark.slow
def test_a_worker_killed_while_starting_is_replaced():
    """A worker killed by a signal while it starts (the kernel's OOM killer) is no script error:
    the run starts another and finishes (WorkerStartFailed is for workers that fail to start)."""
    driver = textwrap.dedent("""
        import time
        from prunelib.study import local
        from prunelib.study.tasks import Cell

        if __name__ == "__main__":
            outcome = local.execute_local([Cell("sleep", time.sleep, (1,))], progress=False)
            print("ok" if outcome.ok else outcome.failed)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", driver], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        for worker in _workers(proc.pid):
            os.kill(worker, signal.SIGKILL)
            killed = worker
            break
    out, err = proc.communicate(timeout=120)
    assert killed is not None and proc.returncode == 0 and out.strip() == "ok", err[-2000:]
