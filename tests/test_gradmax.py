"""GradMax growth: zero fan-in, fan-out from the gradient's singular vectors."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_gradnets.callbacks import CapacityGrowth
from keras_gradnets.layers import DynamicConv2D
from keras_gradnets.layers import DynamicDense
from keras_gradnets.layers import initialize_gradmax
from keras_gradnets.layers import link_dynamic_layers


def _np(x):
    return ops.convert_to_numpy(x)


def _data(n=64, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = np.stack([np.sin(x.sum(1)), np.cos(x[:, 0]), x[:, 1] * x[:, 2]], 1)
    return x, y.astype("float32")


def _model(activation=None, reader=None, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            DynamicDense(
                6,
                chunks=3,
                activation=activation,
                growth_init="gradmax",
                name="hidden",
            ),
            reader or keras.layers.Dense(3, name="out"),
        ]
    )
    model.compile("adam", "mse")
    return model


def test_fan_out_is_the_top_singular_vectors_of_the_gradient():
    # A linear hidden layer read by the output: the gradient of the mean
    # squared error at the output is 2 (z - y) / (n * 3), and GradMax's
    # matrix is x^T times it (Evci et al. 2022).
    x, y = _data()
    model = _model()
    growth = CapacityGrowth(grow_at=[2], data=(x, y))
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[growth])
    hidden, out = model.layers
    assert hidden.active_units == 4
    np.testing.assert_array_equal(_np(hidden.kernels[1]), 0)
    np.testing.assert_array_equal(_np(hidden.biases[1]), 0)
    z = _np(model.predict(x, verbose=0))
    _, _, vh = np.linalg.svd(x.T @ (2 * (z - y) / z.size))
    rows = _np(out.kernel)[2:4]
    norms = np.linalg.norm(rows, axis=1)
    np.testing.assert_allclose(
        np.abs(np.sum(rows / norms[:, None] * vh[:2], axis=1)), 1, atol=1e-4
    )
    # Scaled to the mean norm of the trained units' outgoing weights.
    trained = np.linalg.norm(_np(out.kernel)[:2], axis=1).mean()
    np.testing.assert_allclose(norms, trained, rtol=1e-5)


@pytest.mark.parametrize("dynamic_reader", [False, True])
def test_growth_keeps_the_function_and_the_new_units_learn(dynamic_reader):
    x, y = _data()
    reader = (
        DynamicDense(
            3, chunks=3, initial_chunks=3, growth_init="random", name="out"
        )
        if dynamic_reader
        else None
    )
    model = _model("tanh", reader)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    link_dynamic_layers(model)
    hidden = model.get_layer("hidden")
    before = _np(model.predict(x, verbose=0))
    hidden.grow(freeze=False)
    initialize_gradmax(model, hidden, 2, 4, (x, y))
    np.testing.assert_allclose(
        _np(model.predict(x, verbose=0)), before, atol=1e-5
    )
    reader = model.get_layer("out")
    kernels = reader.kernels if dynamic_reader else [reader.kernel]
    assert all(np.any(_np(k)[2:4]) for k in kernels)
    np.testing.assert_array_equal(_np(hidden.kernels[1]), 0)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.all(np.any(_np(hidden.kernels[1]) != 0, axis=0))


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "leaky_relu"])
def test_an_activation_new_units_cannot_learn_through_is_refused(activation):
    # Zero fan-in: new units start at f(0), which must be 0 to keep the
    # function, and learn through f'(0), which must exist and not be 0.
    with pytest.raises(ValueError, match="growth_init='gradmax'.*activation"):
        DynamicDense(6, chunks=3, activation=activation, growth_init="gradmax")


def test_gradmax_is_refused_for_convolutions():
    with pytest.raises(ValueError, match="DynamicDense"):
        DynamicConv2D(8, 3, chunks=2, growth_init="gradmax")


@pytest.mark.parametrize("data", [None, "inputs only"])
def test_capacity_growth_needs_inputs_and_targets(data):
    x, y = _data()
    model = _model("tanh")
    growth = CapacityGrowth(
        grow_at=[1], data=x if data == "inputs only" else data
    )
    with pytest.raises(ValueError, match=r"data=\(x, y\)"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[growth])
    assert model.get_layer("hidden").active_units == 2


def test_initialize_gradmax_checks_its_arguments():
    x, y = _data()
    model = _model("tanh")
    model.fit(x, y, epochs=1, verbose=0)
    link_dynamic_layers(model)
    hidden = model.get_layer("hidden")
    hidden.grow(freeze=False)
    with pytest.raises(ValueError, match="`start`"):
        initialize_gradmax(model, hidden, 1, 4, (x, y))
    with pytest.raises(ValueError, match="`data`"):
        initialize_gradmax(model, hidden, 2, 4, x)
