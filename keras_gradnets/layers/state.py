"""Non-trainable scalar state of layers: a mixing weight, a probability."""

import keras
from keras import ops

from keras_gradnets._checks import check_unit_interval


def add_scalar_weight(layer, name, value, dtype="float32"):
    """Adds a non-trainable scalar variable named `name` to `layer`.

    It is never autocast, so mixed precision policies keep its `dtype`.
    """
    return layer.add_weight(
        shape=(),
        initializer=keras.initializers.Constant(value),
        dtype=dtype,
        trainable=False,
        autocast=False,
        name=name,
    )


def add_unit_interval_weight(layer, name, value):
    """Adds a non-trainable float32 scalar in [0, 1] named `name` to `layer`.

    Args:
        layer: The layer that owns the variable.
        name: Variable and argument name, used in error messages.
        value: Initial value, a float in [0, 1].

    Returns:
        The new variable.
    """
    return add_scalar_weight(layer, name, check_unit_interval(name, value))


def scalar_value(variable):
    """Returns the value of a scalar variable as a Python float."""
    return float(ops.convert_to_numpy(variable))
