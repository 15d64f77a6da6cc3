"""Training across processes: two processes over 127.0.0.1.

Each test starts two worker processes on free ports, with a bounded
timeout, ends them by their PID, and compares what they report with each
other and with this single process. JAX trains across processes
(`tests/processes/worker.py`); TensorFlow's multi-worker strategy fails in
Keras 3.15 itself, which a test keeps true
(`tests/processes/tensorflow_worker.py`); torch has no distribution engine
in Keras 3.15 (`tests/test_distributed.py`).
"""

import json
import os
import signal
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.processes import callbacks as families
from tests.processes import worker

jax_only = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="Keras 3 trains across processes on JAX only",
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 120


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(probe, directory="", module="tests.processes.worker"):
    """The JSON results of `probe` of `module` on processes 0 and 1, which
    write their files into `directory`."""
    ports = [str(free_port()), str(free_port())]
    env = {
        **os.environ,
        "KERAS_BACKEND": keras.backend.backend(),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "",
        "WORKER_DIR": str(directory),
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", module, str(i), probe, *ports],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for process in workers:
            out, err = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 0, err[-3000:]
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return outputs


@jax_only
def test_activation_statistics_agree_across_processes():
    from keras_gradnets import analysis

    first, second = run_processes("activation_std")
    # The same numbers on both processes, bit for bit ...
    assert first == second
    # ... those of both processes' batches together ...
    model = worker.two_branch_model()
    (a0, b0), _ = worker.local_data(0)
    (a1, b1), _ = worker.local_data(1)
    both = [np.concatenate([a0, a1]), np.concatenate([b0, b1])]
    expected = analysis.activation_stats(model, both)
    for name, stats in expected.items():
        assert first[name] == pytest.approx(stats, rel=1e-6), name
    # ... where each process's own batch ranks the layers otherwise.
    for process_id, larger in ((0, "left"), (1, "right")):
        alone = analysis.activation_stats(
            model, worker.local_data(process_id)[0]
        )
        assert max(alone, key=lambda k: alone[k]["std"]) == larger
    assert first["left"]["std"] > first["right"]["std"]


@jax_only
def test_growth_by_activation_std_agrees_across_processes():
    first, second = run_processes("growth")
    # Process 1's own data would grow "right": both grow "left".
    assert first["events"] == second["events"]
    assert [event["layers"] for event in first["events"]] == [["left"]]
    for a, b in zip(first["weights"], second["weights"], strict=True):
        np.testing.assert_array_equal(a, b)


@jax_only
def test_gradmax_growth_agrees_across_processes():
    # Each process measures the gradient on its own data; the matrices are
    # summed, so both set the same outgoing weights for the new units.
    first, second = run_processes("gradmax")
    for a, b in zip(first["weights"], second["weights"], strict=True):
        np.testing.assert_array_equal(a, b)
    out = np.array(first["weights"][-2])
    assert np.all(np.any(out[4:] != 0, axis=1))


@jax_only
@pytest.mark.parametrize("probe", ["finalize_on_one", "finalize_on_every"])
def test_finalize_while_the_distribution_is_set(probe, tmp_path):
    import keras_gradnets as kg

    first, second = run_processes(probe, tmp_path)
    assert first["weights"] == second["weights"]
    assert first["dynamic_layers"] == []
    # This process, with the trained weights, finalizes to the same outputs.
    model = worker.two_branch_model()
    model.set_weights([np.asarray(w) for w in first["weights"]])
    x, _ = worker.local_data(0)
    expected = kg.finalize(model).predict(x, verbose=0)
    np.testing.assert_allclose(first["outputs"], expected, atol=1e-6)
    # Each finalizing process saved its plain model, which loads here.
    saved = sorted(os.listdir(tmp_path))
    assert saved == (
        ["0.keras", "1.keras"] if "every" in probe else ["0.keras"]
    )
    for name in saved:
        loaded = keras.saving.load_model(os.path.join(tmp_path, name))
        np.testing.assert_allclose(
            loaded.predict(x, verbose=0), expected, atol=1e-6
        )
    if probe == "finalize_on_every":
        assert second["outputs"] == first["outputs"]
        # Finetuned from the saved files on both processes: one model.
        assert first["finetuned"] == second["finetuned"]
        assert not all(
            np.array_equal(a, b)
            for a, b in zip(
                first["finetuned"], loaded.get_weights(), strict=True
            )
        )
    else:
        assert "outputs" not in second


def _assert_same_training(got, expected, atol):
    """The same weights, epoch logs and growth events: `got` may hold the
    logs of the last epochs only (a resumed run)."""
    for a, b in zip(got["weights"], expected["weights"], strict=True):
        np.testing.assert_allclose(a, b, atol=atol)
    assert got["logs"].keys() == expected["logs"].keys()
    for key, values in got["logs"].items():
        tail = expected["logs"][key][-len(values) :]
        assert values == pytest.approx(tail, rel=1e-4, abs=1e-6), key
    assert got["events"] == expected["events"]


@jax_only
def test_every_callback_agrees_across_processes_and_with_one_process():
    first, second = run_processes("callbacks")
    # Both processes: the same values in every step, the same weights,
    # logs and growth steps, bit for bit.
    assert first == second
    for name, used in first["probes"].items():
        # The value moved during the run ...
        assert len(set(np.round(used, 6))) > 2, (name, used)
        # ... as it does on one process over the same global batches.
        alone = families.probe_values(name, 2 * families.BATCH)
        np.testing.assert_allclose(used, alone, rtol=1e-6, err_msg=name)
    x, y = families.global_data()
    for name, trained in first["trained"].items():
        alone = families.train(name, x, y, 2 * families.BATCH)
        _assert_same_training(trained, alone, atol=1e-5)
    for name in ("growth_step", "growth_epoch"):
        assert first["trained"][name]["events"], name


@jax_only
def test_checkpoint_on_every_process_and_resume(tmp_path):
    first, second = run_processes("resume", tmp_path)
    assert first == second
    x, y = families.global_data()
    for name, runs in first.items():
        alone = families.train(name, x, y, 2 * families.BATCH)
        _assert_same_training(runs["uninterrupted"], alone, atol=1e-5)
        _assert_same_training(runs["resumed"], alone, atol=1e-5)


@jax_only
@pytest.mark.parametrize("probe", ["gradualize_on_one", "gradualize_on_every"])
def test_gradualize_while_the_distribution_is_set(probe, tmp_path):
    import keras_gradnets as kg

    first, second = run_processes(probe, tmp_path)
    assert first["layers"] == ["Dense", "GReLU", "Dense"]
    if probe == "gradualize_on_one":
        assert second == {}
        return
    assert first == second
    # Laid out again over both processes, it trains as on one process
    # over the same global batches.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(1, name="output"),
        ]
    )
    gradual = kg.gradualize(model, verbose=False)
    gradual.compile(keras.optimizers.Adam(0.05), "mse")
    x, y = families.global_data()
    gradual.fit(
        x,
        y,
        batch_size=2 * families.BATCH,
        epochs=families.EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[kg.callbacks.GradNetScheduler(tau=6, unit="step")],
    )
    for a, b in zip(first["weights"], gradual.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's strategy"
)
def test_keras_cannot_fit_under_tensorflows_multi_worker_strategy():
    # The README says so (keras-team/keras#20585). When this fails, Keras
    # trains across TensorFlow workers: test the callbacks there as on JAX
    # and update "Training on many machines".
    results = run_processes("fit", module="tests.processes.tensorflow_worker")
    for result in results:
        assert result.get("error") == "ValueError", result
        assert "PerReplica" in result["message"]
