"""The uniform draws random layers make (`keras_gradnets.core.noise`)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_gradnets.core.noise import uniform
from tests.helpers import BatchRecorder
from tests.helpers import LastBatchMean
from tests.helpers import jit_modes

SHAPE = (256, 256)


def _draws(count, seed=3):
    generator = keras.random.SeedGenerator(seed)
    return [
        ops.convert_to_numpy(uniform(SHAPE, generator)) for _ in range(count)
    ]


def test_values_are_float32_in_the_unit_interval():
    (values,) = _draws(1)
    assert values.shape == SHAPE
    assert values.dtype == np.float32
    assert values.min() >= 0 and values.max() < 1


def test_values_are_uniform():
    (values,) = _draws(1)
    # The mean's standard deviation is 1 / sqrt(12 * 65536) = 0.0011.
    assert abs(values.mean() - 0.5) < 0.005
    assert abs(values.var() - 1 / 12) < 0.002
    counts = np.histogram(values, bins=64, range=(0, 1))[0]
    expected = values.size / 64
    # Chi-square with 63 degrees of freedom: P(> 120) < 1e-5.
    assert np.sum((counts - expected) ** 2 / expected) < 120


def test_units_and_calls_are_uncorrelated():
    first, second = _draws(2)

    def correlation(a, b):
        return abs(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    # Each correlation's standard deviation is 1 / 256 = 0.004.
    assert correlation(first[:, :-1], first[:, 1:]) < 0.02
    assert correlation(first[:-1], first[1:]) < 0.02
    assert correlation(first, second) < 0.02
    assert np.mean(first == second) < 0.001


def test_a_seed_gives_the_same_draws():
    np.testing.assert_array_equal(_draws(2, seed=5), _draws(2, seed=5))
    assert not np.array_equal(_draws(1, seed=5)[0], _draws(1, seed=6)[0])


@pytest.mark.skipif(
    keras.backend.backend() == "jax", reason="JAX draws from a hash"
)
def test_draws_and_seed_steps_are_those_of_keras_random_uniform():
    ours, theirs = keras.random.SeedGenerator(7), keras.random.SeedGenerator(7)
    for _ in range(3):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(uniform(SHAPE, ours)),
            ops.convert_to_numpy(keras.random.uniform(SHAPE, seed=theirs)),
        )
        np.testing.assert_array_equal(
            ops.convert_to_numpy(ours.state.value),
            ops.convert_to_numpy(theirs.state.value),
        )


def test_symbolic_and_stateless_calls_leave_the_seed_state():
    layer = _Noise()
    start = ops.convert_to_numpy(layer.seed_generator.state.value)
    outputs = layer(keras.Input((4,)), training=True)
    assert tuple(outputs.shape) == (None, 4)
    with keras.StatelessScope():
        uniform(SHAPE, layer.seed_generator)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer.seed_generator.state.value), start
    )
    uniform(SHAPE, layer.seed_generator)
    assert not np.array_equal(
        ops.convert_to_numpy(layer.seed_generator.state.value), start
    )


class _Noise(keras.layers.Layer):
    """Outputs a fresh uniform draw in training."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1)

    def call(self, inputs, training=None):
        if training:
            return inputs + uniform(ops.shape(inputs), self.seed_generator)
        return inputs


@pytest.mark.parametrize("jit_compile", jit_modes())
def test_each_compiled_train_step_draws_anew(jit_compile):
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64), _Noise()]
    )
    model.layers[0].trainable = False
    model.compile(
        "sgd", "mse", metrics=[LastBatchMean()], jit_compile=jit_compile
    )
    recorder = BatchRecorder("last_mean")
    zeros = np.zeros((256, 64), "float32")
    model.fit(zeros, zeros, batch_size=64, verbose=0, callbacks=[recorder])
    # Each step's mean over 64 x 64 draws: 0.5 +- 0.0045.
    np.testing.assert_allclose(recorder.values, 0.5, atol=0.03)
    assert len(set(recorder.values)) == 4
