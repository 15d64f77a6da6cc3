"""Every stateful layer runs in a compiled step without reading its state.

A `call` that reads a state variable to the host synchronizes with the
device on every forward pass, and breaks torch's compiled graphs
(`jit_compile=True` on torch).
"""

import keras
import numpy as np
import pytest

from keras_gradnets import layers
from tests.helpers import BACKEND


def every_layer_model():
    """A model holding each stateful layer, each strictly mid-schedule."""
    inputs = keras.Input((8,))
    h = keras.layers.Dense(8)(inputs)
    h = layers.GReLU(g=0.5)(h)
    h = layers.InverseGReLU(g=0.5)(h)
    h = layers.GReLU(max_value=2.0, g=0.5)(h)
    h = layers.GradualActivation("tanh", g=0.5)(h)
    h = layers.GradualDropout(0.5, g=0.5, seed=1)(h)
    h = layers.MollifiedDense(8, p=0.5, seed=2)(h)
    h = layers.MollifiedDense(8, p=0.0, seed=3)(h)
    new = keras.layers.Dense(8)(h)
    h = layers.DropIn(g=0.5, seed=4)([h, new])
    h = layers.DynamicDense(8, chunks=2)(h)
    h = layers.ConcreteWidth(widths=[4, 8], seed=5)(h)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    return model


@pytest.mark.skipif(BACKEND != "torch", reason="torch._dynamo is torch's")
def test_training_forward_has_no_graph_break_of_ours():
    """The seed steps of random draws break graphs by design: they read
    the seed state to the host, and are `torch.compiler.disable`d (Keras's
    `torch_seed_generator`, and `core.noise._torch_generator`, which does
    the same step). No other break may come from this package."""
    import torch

    model = every_layer_model()
    x = keras.ops.convert_to_tensor(np.ones((4, 8), "float32"))
    explanation = torch._dynamo.explain(lambda x: model(x, training=True))(x)
    ours = [
        reason
        for reason in explanation.break_reasons
        if (
            "keras_gradnets" in reason.user_stack[-1].filename
            or "Data dependent" in reason.reason
        )
        and "_torch_generator" not in reason.reason
    ]
    assert explanation.break_reasons
    assert not ours, ours


def test_compiled_step_computes_the_eager_loss():
    model = every_layer_model()
    model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=True)
    x = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
    y = np.zeros((16, 1), "float32")
    eager = model.evaluate(x, y, batch_size=16, verbose=0)
    model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=False)
    assert model.evaluate(x, y, batch_size=16, verbose=0) == pytest.approx(
        eager, rel=1e-5
    )


@pytest.mark.parametrize("tensor", [False, True])
def test_eager_calls_use_the_value_assigned_last(tensor):
    """Torch's eager fast paths use the value last assigned from the host;
    a backend tensor assigned since (as JAX's state sync does) is used as
    the tensor it is."""
    grelu = layers.GReLU(g=0.0)
    dropout = layers.GradualDropout(0.5, g=1.0, seed=0)
    mollified = layers.MollifiedDense(2, p=1.0, kernel_initializer="ones")
    x = np.array([[-4.0, 2.0]], "float32")
    for layer, state, value in [
        (grelu, "g", 0.75),
        (dropout, "g", 0.0),
        (mollified, "p", 0.0),
    ]:
        layer(x)
        if tensor:
            value = keras.ops.convert_to_tensor(value)
        getattr(layer, state).assign(value)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(grelu(x)), [[-1.0, 2.0]]
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(dropout(x, training=True)), x
    )
    bias = keras.ops.convert_to_numpy(mollified.bias)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(mollified(x)),
        keras.ops.convert_to_numpy(keras.ops.sigmoid(-2.0 + bias))[None],
        rtol=1e-6,
    )
