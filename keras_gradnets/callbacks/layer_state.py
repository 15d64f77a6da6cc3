"""Finding the layers whose state a callback drives."""

import keras

from keras_gradnets._walk import walk_layers


def has_variable(layer, name):
    """Whether `layer.<name>` is a `keras.Variable`."""
    return isinstance(getattr(layer, name, None), keras.Variable)


def check_layers(layers, name):
    """Returns `layers` as a list, checking each has the variable `name`."""
    layers = list(layers)
    for layer in layers:
        if not has_variable(layer, name):
            raise ValueError(
                "Invalid value received for argument `layers`. Expected "
                f"layers that have a variable `{name}`. Received: {layer!r}"
            )
    return layers


def find_layers(model, name, callback, example):
    """Returns the layers of `model` (in model order) with variable `name`.

    Raises:
        ValueError: naming `callback` and `example` if there is none.
    """
    layers = [
        layer for layer in walk_layers(model) if has_variable(layer, name)
    ]
    if not layers:
        raise ValueError(
            f"{callback} found no layer with a variable `{name}` in model "
            f"'{model.name}'. Add one (for example `{example}`) or pass "
            "`layers=[...]`."
        )
    return layers


def schedule_value(schedule, *args, **kwargs):
    """Evaluates `schedule` as a Python float."""
    return float(keras.ops.convert_to_numpy(schedule(*args, **kwargs)))
