"""Cutting units out of a model, for `finalize`: the one rule.

Two layer protocols ask for a cut:

* a layer that answers `finalized_width()` (such as `ConcreteWidth`) keeps
  only the first `k` units or channels of its input and zeros the rest. Its
  plain replacement is nothing, with the layers around it cut to `k`: the
  `Dense` or `Conv*` layer that produces the units keeps `k` of them, any
  `BatchNormalization` in between keeps their `k` statistics, and every
  layer that reads them with a kernel keeps the `k` matching input rows
  (through layers that map zeros to zeros, such as a ReLU, `Dropout` or
  pooling, which the zeros of the cut units would have crossed unchanged);
* a layer that answers `finalized_units()` (such as `DynamicDense`) uses
  only its first `k` units. When every reader takes its units directly
  with a kernel, it keeps `k` units and its readers `k` input rows;
  otherwise its plain layer keeps its full size, with zero weights for the
  other units, which is exact only if its activation is 0 at 0.
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


def keeps_zeros(layer):
    """Whether `layer` maps a unit that is 0 everywhere to 0 at inference:
    an activation that is 0 at 0, a dropout or a pooling layer."""
    if isinstance(layer, _POOLING):
        return True
    if not _elementwise(layer):
        return False
    zero = keras.ops.zeros((1, 1))
    value = keras.ops.convert_to_numpy(layer(zero, training=False))
    return bool((value == 0).all())


def _has_kernel_over(layer, units):
    """Whether `layer` reads `units` inputs through the rows of a kernel: a
    Dense or Conv layer, or a layer of this package with such a kernel
    (one that answers the finalize protocol)."""
    kernel = getattr(layer, "kernel", None)
    return (
        (
            isinstance(layer, _KERNEL_LAYERS)
            or hasattr(layer, "finalized_layers")
        )
        and kernel is not None
        and len(kernel.shape) >= 2
        and kernel.shape[-2] == units
    )


def _name(operation):
    return "the model output" if operation is None else operation.name


def _produces(layer, units):
    if not isinstance(layer, _KERNEL_LAYERS):
        return False
    config = layer.get_config()
    return config.get("units", config.get("filters")) == units


def _cannot(layer, what, other):
    raise ValueError(
        f"Cannot finalize layer '{layer.name}' "
        f"({layer.__class__.__name__}): {what} "
        f"'{getattr(other, 'name', other)}'. Put it right after the "
        "activation of a Dense or Conv layer (a BatchNormalization may sit "
        "between) and read it with Dense or Conv layers (a ReLU, Dropout or "
        "pooling may sit between), in the same model."
    )


def unit_cuts(model):
    """Finds what `finalize` cuts, for every layer asking for a cut.

    Returns:
        `(units, rows)`: dicts from the `id` of a layer of `model` to the
        number of units it keeps (producers, batch norms and layers with
        `finalized_units()`) and to the number of input rows its kernel
        keeps (the readers).

    Raises:
        ValueError: naming the layer, if the layers around a layer with
            `finalized_width()` do not fit the pattern above, or if a layer
            with `finalized_units()` below its full size is read by a layer
            without a kernel and its activation is not 0 at 0.
    """
    units, rows = {}, {}
    for submodel in walk_layers(model):
        if not isinstance(submodel, keras.Model):
            continue
        pairs = list(reader_pairs(submodel))
        for layer in submodel.layers:
            if hasattr(layer, "finalized_width"):
                _cut_width(layer, pairs, units, rows)
            elif hasattr(layer, "finalized_units"):
                _cut_units(layer, pairs, units, rows)
    return units, rows


def _readers(pairs, operation):
    return [b for a, b in pairs if a is operation]


def _cut_width(layer, pairs, units, rows):
    """The cut around a layer with `finalized_width()`."""
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
        elif not isinstance(source, keras.layers.Layer) or not _elementwise(
            source
        ):
            _cannot(layer, "it reads the units through", source)
    frontier = [layer]
    while frontier:
        for reader in _readers(pairs, frontier.pop()):
            if reader is None:
                _cannot(layer, "its units reach", "the model output")
            if _has_kernel_over(reader, size):
                rows[id(reader)] = width
            elif isinstance(reader, keras.layers.Layer) and keeps_zeros(reader):
                frontier.append(reader)
            else:
                _cannot(layer, "its units are read by", reader)


def _cut_units(layer, pairs, units, rows):
    """The cut of a layer with `finalized_units()`."""
    kept = layer.finalized_units()
    readers = _readers(pairs, layer)
    if readers and all(_has_kernel_over(r, layer.units) for r in readers):
        units[id(layer)] = kept
        for reader in readers:
            rows[id(reader)] = kept
    elif kept < layer.units and not _zero_at_zero(layer.activation):
        raise ValueError(
            f"Cannot finalize layer '{layer.name}': it is at {kept} of "
            f"{layer.units} units and read by "
            f"{[_name(r) for r in readers]}, which keep its full size, and "
            "its activation is not 0 at 0, so a plain layer cannot output "
            "zeros for the inactive units. Grow it to full capacity first."
        )


def _zero_at_zero(activation):
    if activation is None:
        return True
    value = keras.ops.convert_to_numpy(activation(keras.ops.zeros((1,))))
    return bool(value[0] == 0)
