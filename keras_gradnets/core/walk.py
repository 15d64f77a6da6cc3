"""Finding layers nested anywhere inside a model."""

import itertools

import keras


def attributes(layer):
    """Yields `(name, value)` for each attribute of `layer`.

    On the torch backend a Keras layer is a `torch.nn.Module`, which keeps
    the sub-layers set as attributes in its `_modules`, not in `vars()`.
    """
    values = vars(layer)
    yield from values.items()
    yield from values.get("_modules", {}).items()


def _children(layer):
    if isinstance(layer, keras.Model):
        yield from layer.layers
        return
    for _, value in attributes(layer):
        if isinstance(value, keras.layers.Layer):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, keras.layers.Layer))
        elif isinstance(value, dict):
            yield from (
                v for v in value.values() if isinstance(v, keras.layers.Layer)
            )


def walk_layers(root):
    """Yields every layer reachable from `root` (itself included), once.

    Nested models, wrappers (`TimeDistributed`, `GradNet`, ...) and layers
    kept in attributes of custom layers are all visited, depth first, in the
    order of `model.layers` (for a Sequential model, input to output).
    """
    seen = set()
    stack = [root]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        stack.extend(reversed(list(_children(layer))))


def _tensor(layer, attribute):
    """`layer.input` or `layer.output`, or None where Keras has none."""
    try:
        return getattr(layer, attribute)
    except (AttributeError, ValueError):
        return None


def reader_pairs(model):
    """Yields `(layer, reader)` for the direct connections inside `model`.

    In a Sequential model each layer reads the one before it. In a
    functional model a layer reads another when its `input` is the other's
    `output` (layers used at several places have neither, and are skipped).
    """
    layers = model.layers
    if isinstance(model, keras.Sequential):
        yield from itertools.pairwise(layers)
        return
    outputs = [(layer, _tensor(layer, "output")) for layer in layers]
    for reader in layers:
        tensor = _tensor(reader, "input")
        for layer, output in outputs:
            if output is not None and tensor is output and layer is not reader:
                yield layer, reader
