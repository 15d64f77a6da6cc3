"""Cutting the units a layer keeps, for `finalize`.

A layer that answers `finalized_width()` (such as `ConcreteWidth`) keeps
only the first `k` units or channels of its input and zeros the rest. Its
plain replacement is nothing, with the layers around it cut to `k`: the
`Dense` or `Conv*` layer that produces the units keeps `k` of them, any
`BatchNormalization` in between keeps their `k` statistics, and every
`Dense` or `Conv*` layer that reads them keeps the `k` matching input rows
(through layers that map zeros to zeros, such as a ReLU, `Dropout` or
pooling, which the zeros of the cut units would have crossed unchanged).
"""

import keras

from keras_gradnets.core.walk import reader_pairs
from keras_gradnets.core.walk import walk_layers

# Layers that act on each unit or channel separately and keep its position.
_ELEMENTWISE = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
)
_POOLING = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
)
_SOFTMAX = ("softmax", "log_softmax")
# Layers whose kernel's last axis holds the units they produce, and its
# second to last axis the units they read.
_KERNEL_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)


def _elementwise(layer):
    if isinstance(layer, keras.layers.Activation):
        name = getattr(layer.activation, "__name__", "")
        return name not in _SOFTMAX
    return isinstance(layer, _ELEMENTWISE)


def _keeps_zeros(layer):
    """Whether `layer` maps a unit that is 0 everywhere to 0."""
    if isinstance(layer, _POOLING):
        return True
    if not _elementwise(layer):
        return False
    zero = keras.ops.zeros((1, 1))
    value = keras.ops.convert_to_numpy(layer(zero, training=False))
    return bool((value == 0).all())


def _has_kernel_over(layer, units):
    """Whether `layer` is a Dense or Conv layer reading `units` inputs."""
    kernel = getattr(layer, "kernel", None)
    return (
        isinstance(layer, _KERNEL_LAYERS)
        and kernel is not None
        and kernel.shape[-2] == units
    )


def _produces(layer, units):
    config = layer.get_config()
    size = config.get("units", config.get("filters"))
    return size == units and isinstance(layer, _KERNEL_LAYERS)


def _cannot(layer, what, other):
    raise ValueError(
        f"Cannot finalize layer '{layer.name}' "
        f"({layer.__class__.__name__}): {what} "
        f"'{getattr(other, 'name', other)}'. Put it right after the "
        "activation of a Dense or Conv layer (a BatchNormalization may sit "
        "between) and read it with Dense or Conv layers (a ReLU, Dropout or "
        "pooling may sit between), in the same model."
    )


def width_cuts(model):
    """Finds what `finalize` cuts for each layer with `finalized_width()`.

    Returns:
        `(units, rows)`: dicts from the `id` of a layer of `model` to the
        number of units it keeps (the producers and batch norms) and to the
        number of input rows its kernel keeps (the readers).

    Raises:
        ValueError: naming the layer, if the layers around it do not fit
            the pattern above.
    """
    units, rows = {}, {}
    for submodel in walk_layers(model):
        if not isinstance(submodel, keras.Model):
            continue
        pairs = list(reader_pairs(submodel))
        for layer in submodel.layers:
            if not hasattr(layer, "finalized_width"):
                continue
            width, size = layer.finalized_width(), layer.units
            source = layer
            while True:
                sources = [a for a, b in pairs if b is source]
                if len(sources) != 1:
                    _cannot(layer, "it reads no single layer before", source)
                (source,) = sources
                if _produces(source, size):
                    units[id(source)] = width
                    break
                if isinstance(source, keras.layers.BatchNormalization):
                    units[id(source)] = width
                elif not _elementwise(source):
                    _cannot(layer, "it reads the units through", source)
            frontier = [layer]
            while frontier:
                current = frontier.pop()
                readers = [b for a, b in pairs if a is current]
                if not readers:
                    _cannot(layer, "its units reach the outputs of", submodel)
                for reader in readers:
                    if _has_kernel_over(reader, size):
                        rows[id(reader)] = width
                    elif _keeps_zeros(reader):
                        frontier.append(reader)
                    else:
                        _cannot(layer, "its units are read by", reader)
    return units, rows
