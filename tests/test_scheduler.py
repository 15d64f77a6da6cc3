"""GradNetScheduler: the g the compiled train step uses, logs, resume."""

import csv
import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_gradnets import layers
from keras_gradnets import schedules
from keras_gradnets.callbacks import GradNetScheduler
from tests.helpers import BatchRecorder
from tests.helpers import LastBatchMean
from tests.helpers import jit_modes

# Inputs of -1 through a fixed unit kernel: GReLU outputs -(1 - g), so the
# mean prediction of a batch is the g the compiled step used, minus 1.
X_PROBE = -np.ones((12, 1), "float32")
Y_PROBE = np.zeros((12, 1), "float32")


def probe_model(jit_compile="auto"):
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(1, use_bias=False, kernel_initializer="ones"),
            layers.GReLU(),
        ]
    )
    model.compile(
        keras.optimizers.SGD(learning_rate=0.0),
        "mse",
        metrics=[LastBatchMean()],
        jit_compile=jit_compile,
    )
    return model


def used_g(recorder):
    return [round(1 + v, 6) for v in recorder.values]


@pytest.mark.parametrize("jit_compile", jit_modes())
def test_compiled_step_uses_g_of_the_epoch(jit_compile):
    model = probe_model(jit_compile)
    recorder = BatchRecorder("last_mean")
    history = model.fit(
        X_PROBE,
        Y_PROBE,
        batch_size=4,
        epochs=6,
        shuffle=False,
        verbose=0,
        callbacks=[GradNetScheduler(tau=4), recorder],
    )
    expected = [min(epoch / 4, 1) for epoch in range(6)]
    assert used_g(recorder) == [g for g in expected for _ in range(3)]
    assert history.history["g"] == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("jit_compile", jit_modes())
def test_compiled_step_uses_g_of_the_step(jit_compile):
    model = probe_model(jit_compile)
    recorder = BatchRecorder("last_mean")
    history = model.fit(
        X_PROBE,
        Y_PROBE,
        batch_size=4,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[GradNetScheduler(tau=5, unit="step"), recorder],
    )
    assert used_g(recorder) == [min(t / 5, 1) for t in range(9)]
    assert history.history["g"] == pytest.approx([0.4, 1.0, 1.0], rel=1e-7)


def test_keras_learning_rate_schedule_drives_g():
    schedule = keras.optimizers.schedules.PolynomialDecay(
        initial_learning_rate=0.0, decay_steps=4, end_learning_rate=1.0
    )
    recorder = BatchRecorder("last_mean")
    probe_model().fit(
        X_PROBE,
        Y_PROBE,
        batch_size=4,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[GradNetScheduler(schedule, unit="step"), recorder],
    )
    assert used_g(recorder) == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_finds_nested_gradual_layers_and_drives_them_all():
    inner = keras.Sequential([keras.layers.Dense(3), layers.GReLU()])
    gradnet = layers.GradNet(keras.layers.Dense(3), inner)
    inputs = keras.Input((2,))
    dropout = layers.GradualDropout(0.5)
    model = keras.Model(inputs, dropout(gradnet(inputs)))
    model.compile("sgd", "mse")
    scheduler = GradNetScheduler(tau=1)
    model.fit(
        np.ones((4, 2)),
        np.ones((4, 3)),
        epochs=2,
        verbose=0,
        callbacks=[scheduler],
    )
    assert {id(layer) for layer in scheduler.layers} == {
        id(gradnet),
        id(inner.layers[1]),
        id(dropout),
    }
    for layer in scheduler.layers:
        assert float(ops.convert_to_numpy(layer.g)) == 1.0


def test_schedulers_with_given_layers_drive_and_log_only_those():
    first, second = layers.GReLU(name="first"), layers.GReLU(name="second")
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(2), first, second]
    )
    model.compile("sgd", "mse")
    history = model.fit(
        np.ones((4, 2)),
        np.ones((4, 2)),
        epochs=3,
        verbose=0,
        callbacks=[
            GradNetScheduler(tau=2, layers=[first]),
            GradNetScheduler(lambda t: 0.25, layers=[second]),
        ],
    )
    assert history.history["g_first"] == [0.0, 0.5, 1.0]
    assert history.history["g_second"] == [0.25, 0.25, 0.25]
    assert "g" not in history.history


@pytest.mark.parametrize("scheduler_first", [True, False])
def test_csv_logger_records_g_whatever_the_order(tmp_path, scheduler_first):
    path = os.path.join(tmp_path, "log.csv")
    scheduler = GradNetScheduler(tau=4, unit="step")
    loggers = [keras.callbacks.CSVLogger(path), BatchRecorder("g")]
    callbacks = [scheduler, *loggers] if scheduler_first else loggers
    if not scheduler_first:
        callbacks.append(scheduler)
    model = probe_model()
    history = model.fit(
        X_PROBE,
        Y_PROBE,
        batch_size=len(X_PROBE) // 2,
        epochs=3,
        verbose=0,
        validation_data=(X_PROBE, Y_PROBE),
        callbacks=callbacks,
    )
    with open(path) as f:
        rows = list(csv.DictReader(f))
    # The value the last step of each epoch used, after every step.
    assert [float(row["g"]) for row in rows] == [0.25, 0.75, 1.0]
    assert loggers[1].values == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert "val_g" not in history.history
    # After fit the model's metrics are its own again.
    assert "g" not in model.evaluate(
        X_PROBE, Y_PROBE, verbose=0, return_dict=True
    )


def _regression_model():
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16),
            layers.GReLU(),
            layers.GradualBatchNormalization(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "mse")
    return model


def _regression_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 4)).astype("float32")
    return x, np.sin(x.sum(axis=1, keepdims=True))


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_resume_after_save_matches_an_uninterrupted_run(unit, tmp_path):
    x, y = _regression_data()
    fit_kwargs = dict(batch_size=8, shuffle=False, verbose=0)
    tau = 5 if unit == "epoch" else 20

    full = _regression_model()
    full_history = full.fit(
        x,
        y,
        epochs=10,
        callbacks=[GradNetScheduler(tau=tau, unit=unit)],
        **fit_kwargs,
    )

    first = _regression_model()
    first.fit(
        x,
        y,
        epochs=3,
        callbacks=[GradNetScheduler(tau=tau, unit=unit)],
        **fit_kwargs,
    )
    path = os.path.join(tmp_path, "halfway.keras")
    first.save(path)
    resumed = keras.saving.load_model(path)
    resumed_history = resumed.fit(
        x,
        y,
        epochs=10,
        initial_epoch=3,
        callbacks=[GradNetScheduler(tau=tau, unit=unit)],
        **fit_kwargs,
    )

    assert resumed_history.history["g"] == full_history.history["g"][3:]
    np.testing.assert_allclose(
        resumed_history.history["loss"],
        full_history.history["loss"][3:],
        rtol=1e-4,
    )
    np.testing.assert_allclose(
        resumed.predict(x, verbose=0),
        full.predict(x, verbose=0),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tau": 0}, "`tau`.*Received: tau=0"),
        ({"tau": -3}, "`tau`"),
        ({}, "exactly one of"),
        ({"tau": 2, "schedule": schedules.Linear(2)}, "exactly one of"),
        ({"tau": 2, "unit": "batch"}, "`unit`.*Received: unit='batch'"),
        ({"schedule": "linear"}, "`schedule`"),
        ({"tau": 2, "layers": [keras.layers.ReLU()]}, "`layers`"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradNetScheduler(**kwargs)


def test_model_without_gradual_layers_is_an_error():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="found no GradualLayer.*GReLU"):
        model.fit(
            np.ones((2, 2)),
            np.ones((2, 1)),
            verbose=0,
            callbacks=[GradNetScheduler(tau=3)],
        )


def test_schedule_outside_unit_interval_is_an_error():
    with pytest.raises(
        ValueError,
        match=r"returned g=1.5 at epoch 0. Expected a number in \[0, 1\]",
    ):
        probe_model().fit(
            X_PROBE,
            Y_PROBE,
            verbose=0,
            callbacks=[GradNetScheduler(lambda t: 1.5)],
        )


class _FunctionRecorder(keras.callbacks.Callback):
    """Records the train function each fit runs."""

    def __init__(self):
        super().__init__()
        self.functions = []

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.functions.append(self.model.train_function)


def test_fits_with_a_scheduler_reuse_one_train_function():
    # The logged states need a train function traced with them: it is made
    # once, and the model's own function comes back between such fits.
    model = probe_model()
    recorder = _FunctionRecorder()
    model.fit(X_PROBE, Y_PROBE, epochs=1, verbose=0, callbacks=[recorder])
    for _ in range(2):
        history = model.fit(
            X_PROBE,
            Y_PROBE,
            epochs=1,
            verbose=0,
            callbacks=[recorder, GradNetScheduler(tau=2)],
        )
        assert history.history["g"] == [0.0]
    model.fit(X_PROBE, Y_PROBE, epochs=1, verbose=0, callbacks=[recorder])
    plain, scheduled, again, plain_again = recorder.functions
    assert scheduled is again
    assert plain is plain_again
    assert scheduled is not plain
