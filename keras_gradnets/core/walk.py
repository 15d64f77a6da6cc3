"""Finding layers nested anywhere inside a model."""

import keras


def _children(layer):
    if isinstance(layer, keras.Model):
        yield from layer.layers
        return
    for value in vars(layer).values():
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
