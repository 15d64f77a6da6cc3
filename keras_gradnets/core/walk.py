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


def reader_pairs(model):
    """Yields `(operation, reader)` for the direct connections in `model`.

    Read from the model's graph: `reader` is a layer or op node (`x + 1`,
    `x[:, 0]`, a `keras.ops` call) that takes an output of `operation`,
    and `None` where that output is an output of `model`. A layer used at
    several places yields a pair for each.
    """
    graph = model._functional if isinstance(model, keras.Sequential) else model
    if graph is None:  # An unbuilt Sequential model: each reads the last.
        yield from itertools.pairwise(model.layers)
        return
    if not hasattr(graph, "_nodes_by_depth"):
        return  # A subclassed model has no graph.
    for nodes in graph._nodes_by_depth.values():
        for node in nodes:
            for tensor in node.arguments.keras_tensors:
                yield tensor._keras_history.operation, node.operation
    for tensor in keras.tree.flatten(graph.outputs):
        yield tensor._keras_history.operation, None
