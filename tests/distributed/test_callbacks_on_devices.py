"""Every callback under the backend's data-parallel engine, on 2 devices.

TensorFlow: `tf.distribute.MirroredStrategy`. JAX:
`keras.distribution.DataParallel`. Each test checks the value the compiled
step used (through a metric whose replicas are averaged, so one stale
replica would show) and the value each device holds.
"""

import keras
import numpy as np
import pytest

import keras_gradnets as kg
from keras_gradnets import layers
from keras_gradnets import schedules
from tests.distributed.replicas import replica_values
from tests.helpers import BatchRecorder
from tests.helpers import LastBatchMean
from tests.helpers import TemperatureProbe
from tests.helpers import temperature_probe_model


class EpochValues(keras.callbacks.Callback):
    """Records a variable's value on every device at each epoch's end."""

    def __init__(self, variable):
        super().__init__()
        self.variable = variable
        self.values = []

    def on_epoch_end(self, epoch, logs=None):
        self.values.append([float(v) for v in replica_values(self.variable)])


def _compile(model):
    model.compile(
        keras.optimizers.SGD(0.0),
        "mse",
        metrics=[LastBatchMean(aggregation="mean")],
    )
    return model


def _fit(model, x, callbacks, epochs, batch_size=8):
    recorder = BatchRecorder("last_mean")
    history = model.fit(
        x,
        np.zeros((len(x), model.output_shape[-1]), "float32"),
        batch_size=batch_size,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[*callbacks, recorder],
    )
    return recorder.values, history.history


def _variable(layer, name):
    return next(v for v in layer.variables if v.path.split("/")[-1] == name)


def _same_on_every_device(variable, expected):
    for value in replica_values(variable):
        np.testing.assert_array_equal(value, expected)


# The state each callback moves ---------------------------------------------


def test_gradnet_scheduler_moves_g_on_every_replica(scope):
    # Inputs of -1 through a unit kernel: GReLU outputs g - 1.
    with scope():
        model = keras.Sequential(
            [
                keras.Input((1,)),
                keras.layers.Dense(
                    1, use_bias=False, kernel_initializer="ones"
                ),
                layers.GReLU(),
            ]
        )
        _compile(model)
    grelu = model.layers[1]
    epochs = EpochValues(grelu.g)
    used, logs = _fit(
        model,
        -np.ones((16, 1), "float32"),
        [kg.callbacks.GradNetScheduler(tau=4), epochs],
        epochs=5,
    )
    expected = [min(e / 4, 1) for e in range(5)]
    np.testing.assert_allclose(
        used, [g - 1 for g in expected for _ in range(2)], atol=1e-7
    )
    assert epochs.values == [[g, g] for g in expected]
    assert logs["g"] == pytest.approx(expected)


def test_dropin_scheduler_moves_g_on_every_replica(scope):
    # The mean output is the share of units taken from the new branch.
    with scope():
        inputs = keras.Input((100,))
        skip = keras.layers.Dense(
            100, use_bias=False, kernel_initializer="zeros"
        )(inputs)
        new = keras.layers.Identity()(inputs)
        dropin = layers.DropIn()
        model = _compile(keras.Model(inputs, dropin([skip, new])))
    epochs = EpochValues(dropin.g)
    used, logs = _fit(
        model,
        np.ones((96, 100), "float32"),
        [kg.callbacks.DropInScheduler(dropin_length=6, start_step=1), epochs],
        epochs=3,
        batch_size=32,
    )
    expected = [min(max((t - 1) / 6, 0), 1) for t in range(9)]
    for share, g in zip(used, expected, strict=True):
        assert abs(share - g) <= 4 * np.sqrt(g * (1 - g) / 3200)
    np.testing.assert_allclose(
        epochs.values, [[expected[i]] * 2 for i in (2, 5, 8)], rtol=1e-6
    )
    assert logs["dropin"] == pytest.approx([expected[i] for i in (2, 5, 8)])


def test_mollifier_scheduler_moves_p_on_every_replica(scope):
    # Zero kernel, deterministic skip: each output is p times its input.
    with scope():
        model = keras.Sequential(
            [
                keras.Input((1,)),
                layers.MollifiedDense(
                    1, "relu", kernel_initializer="zeros", deterministic=True
                ),
            ]
        )
        _compile(model)
    epochs = EpochValues(model.layers[0].p)
    used, logs = _fit(
        model,
        np.ones((16, 1), "float32"),
        [
            kg.callbacks.MollifierScheduler(
                schedules.LinearDecay(10), use_loss=False
            ),
            epochs,
        ],
        epochs=3,
    )
    expected = [1 - t / 10 for t in range(6)]
    np.testing.assert_allclose(used, expected, atol=1e-6)
    np.testing.assert_allclose(
        epochs.values, [[expected[i]] * 2 for i in (1, 3, 5)], atol=1e-6
    )
    assert logs["p"] == pytest.approx([0.9, 0.7, 0.5], abs=1e-6)


def test_temperature_scheduler_moves_the_temperature_on_every_replica(scope):
    with scope():
        probe = TemperatureProbe()
        model = _compile(temperature_probe_model(probe))
    epochs = EpochValues(probe.temperature)
    used, logs = _fit(
        model,
        np.ones((16, 3), "float32"),
        [kg.callbacks.TemperatureScheduler(1.0, 1e-2, warmup_steps=0), epochs],
        epochs=2,
        batch_size=4,
    )
    expected = [10 ** (-2 * t / 7) for t in range(8)]
    np.testing.assert_allclose(used, expected, rtol=1e-5)
    np.testing.assert_allclose(
        epochs.values, [[expected[3]] * 2, [expected[7]] * 2], rtol=1e-5
    )
    assert logs["temperature"] == pytest.approx(
        [expected[3], expected[7]], rel=1e-5
    )


def test_capacity_growth_takes_effect_on_every_replica(scope):
    # A unit kernel on an input of ones: the mean output is the active
    # share of the 4 units.
    with scope():
        dynamic = layers.DynamicDense(
            4,
            chunks=4,
            initial_chunks=1,
            kernel_initializer="ones",
            bias_initializer="zeros",
            growth_init="random",  # the model output reads it
        )
        model = _compile(keras.Sequential([keras.Input((1,)), dynamic]))
    # Nothing counts as an improvement: a growth every second step.
    growth = kg.callbacks.CapacityGrowth(
        unit="step", window=1, patience=0, min_delta=1e9, freeze=True
    )
    used, logs = _fit(model, np.ones((48, 1), "float32"), [growth], epochs=1)
    steps = [event["step"] for event in growth.events]
    assert steps == [2, 4, 6]
    expected = [(1 + sum(s <= t for s in steps)) / 4 for t in range(6)]
    np.testing.assert_allclose(used, expected)
    _same_on_every_device(_variable(dynamic, "active_units"), 4)
    _same_on_every_device(_variable(dynamic, "frozen_units"), 3)
    assert logs["capacity"] == [1.0]


def test_a_grown_blocks_ramp_counts_on_every_replica(scope):
    # Blocks `h = 2x` on an input of ones: the first gives 2, the grown
    # copy `2 + r * 2` with its ramp `r` in quarters from the growth on.
    with scope():
        block = keras.layers.Dense(
            1, kernel_initializer=keras.initializers.Constant(2.0)
        )
        stack = layers.DynamicStack(
            block, depth=2, grown_gate=1.0, ramp_steps=4
        )
        model = _compile(keras.Sequential([keras.Input((1,)), stack]))
    growth = kg.callbacks.CapacityGrowth(unit="step", grow_at=[2])
    used, _ = _fit(model, np.ones((48, 1), "float32"), [growth], epochs=1)
    np.testing.assert_allclose(used, [2.0, 2.0, 2.0, 2.5, 3.0, 3.5])
    _same_on_every_device(_variable(stack, "ramp_counts"), [4, 4])


def test_frozen_chunks_stay_bit_identical_on_every_replica(scope):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = np.sin(x.sum(axis=1, keepdims=True)).astype("float32")
    with scope():
        dynamic = layers.DynamicDense(
            8, chunks=4, initial_chunks=1, activation="tanh"
        )
        model = keras.Sequential(
            [keras.Input((5,)), dynamic, keras.layers.Dense(1)]
        )
        model.compile(keras.optimizers.Adam(0.01), "mse")
    layers.link_dynamic_layers(model)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    dynamic.grow()
    frozen = [
        replica_values(v) for v in (dynamic.kernels[0], dynamic.biases[0])
    ]
    grown = replica_values(dynamic.kernels[1])
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for before, variable in zip(
        frozen, (dynamic.kernels[0], dynamic.biases[0]), strict=True
    ):
        for was, now in zip(before, replica_values(variable), strict=True):
            assert np.array_equal(was, now)
    trained = replica_values(dynamic.kernels[1])
    assert not np.array_equal(grown[0], trained[0])
    assert all(np.array_equal(trained[0], other) for other in trained)


# Save, load and finalize a distributed model -------------------------------


def _gradnet(inputs):
    x = keras.layers.Dense(8)(inputs)
    x = layers.GReLU()(x)
    x = layers.GradualDropout(0.3)(x)
    return x, kg.callbacks.GradNetScheduler(tau=1), "g"


def _dropin(inputs):
    skip = keras.layers.Dense(8)(inputs)
    new = keras.layers.Dense(8, activation="relu")(inputs)
    x = layers.DropIn()([skip, new])
    return x, kg.callbacks.DropInScheduler(dropin_length=4), "g"


def _mollifier(inputs):
    x = layers.MollifiedDense(8, "tanh")(inputs)
    scheduler = kg.callbacks.MollifierScheduler(
        schedules.LinearDecay(4), use_loss=False
    )
    return x, scheduler, "p"


def _capacity(inputs):
    x = layers.DynamicDense(8, chunks=4, initial_chunks=1)(inputs)
    growth = kg.callbacks.CapacityGrowth(
        unit="step", window=1, patience=0, min_delta=1e9
    )
    return x, growth, "active_units"


def _temperature(inputs):
    x = keras.layers.Dense(8, activation="relu")(inputs)
    x = layers.ConcreteWidth(seed=0)(x)
    return x, kg.callbacks.TemperatureScheduler(), "temperature"


@pytest.mark.parametrize(
    "family", [_gradnet, _dropin, _mollifier, _capacity, _temperature]
)
def test_save_load_and_finalize_the_distributed_model(scope, family, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = np.tanh(x[:, :1] - x[:, 1:2])
    with scope():
        inputs = keras.Input((4,))
        hidden, callback, state = family(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
        model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[callback])
    layer = next(
        layer
        for layer in model.layers
        if any(v.path.split("/")[-1] == state for v in layer.variables)
    )
    saved = float(replica_values(_variable(layer, state))[0])
    path = str(tmp_path / "model.keras")
    model.save(path)
    with scope():
        loaded = keras.saving.load_model(path)
    _same_on_every_device(_variable(loaded.get_layer(layer.name), state), saved)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), expected, atol=1e-6
    )
    with scope():
        plain = kg.finalize(loaded)
    assert not any(
        type(layer).__module__.startswith("keras_gradnets")
        for layer in plain.layers
    )
    np.testing.assert_allclose(plain.predict(x, verbose=0), expected, atol=1e-5)
