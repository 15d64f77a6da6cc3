"""Cutting units out of a model, for `finalize`: the one rule.

Two layer protocols ask for a cut:

* a layer that answers `finalized_width()` (such as `ConcreteWidth`) keeps
  only the first `k` channels of its input and zeros the rest. Its plain
  replacement is nothing, with every layer coupled to those channels cut to
  `k` together, as in the dependency graph of Torch-Pruning (Fang et al.,
  2023, "DepGraph"): the channels form one group, the tensors reached from
  the layer's calls through operations that keep each channel at its
  position (batch norms, elementwise layers, pooling, depthwise
  convolutions, and joins: every input of an `Add`, or of an op such as
  `x + y`, carries the channels of its output). In the group,

  - each `Dense` or `Conv*` layer that produces the channels keeps `k`
    filters (every convolution that writes into a residual stage, the
    projection shortcut included);
  - each `BatchNormalization` and depthwise convolution keeps `k`;
  - each layer that reads the channels with a kernel keeps the `k`
    matching input rows, and a `Concatenate` keeps them at their offset in
    what reads it.

  A reader may only read channels whose cut part is 0 in the searched
  model, so that the plain model computes what it computed: a tensor the
  layer outputs, or one made only from such tensors (a ReLU of them, an
  `Add` of them). In a residual stage, the same layer called after every
  join makes every read tensor so; `insert_after` places it;
* a layer that answers `finalized_units()` (such as `DynamicDense`) uses
  only its first `k` units. When every reader takes its units directly
  with a kernel, it keeps `k` units and its readers `k` input rows;
  otherwise its plain layer keeps its full size, with zero weights for the
  other units, which is exact only if its activation is 0 at 0.
"""

import keras
import numpy as np

from keras_gradnets.core.walk import reader_pairs
from keras_gradnets.core.walk import walk_layers

# Layers that act on each unit or channel separately and keep its position.
_ELEMENTWISE = (
    keras.layers.Identity,
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
_MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Multiply,
)
# How a join of each class (a merge layer, or the op of `x + y`, ...) keeps
# a channel at 0: when it is 0 in every input, or in any input.
_JOIN_ZEROS = {
    "Add": "all",
    "Subtract": "all",
    "Average": "all",
    "Maximum": "all",
    "Minimum": "all",
    "Multiply": "any",
}
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


_PLACEMENT_HINT = (
    "Put it right after the activation of a Dense or Conv layer (a "
    "BatchNormalization may sit between) and read it with Dense or Conv "
    "layers (a ReLU, Dropout or pooling may sit between), in the same model."
)
_JOIN_HINT = (
    "Channels joined by an Add are one choice: call the same "
    "ConcreteWidth layer after every join of the stage (after its "
    "activation), so that every tensor read by a kernel has passed through "
    "it."
)


def _cannot(layer, what, other, hint=_PLACEMENT_HINT):
    raise ValueError(
        f"Cannot finalize layer '{layer.name}' "
        f"({layer.__class__.__name__}): {what} "
        f"'{getattr(other, 'name', other)}'. {hint}"
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
        graph = _Graph.of(submodel)
        for layer in submodel.layers:
            if hasattr(layer, "finalized_width"):
                if graph is None:
                    _cannot(
                        layer, "it is in a model without a graph,", submodel
                    )
                _cut_width(layer, graph, units, rows)
            elif hasattr(layer, "finalized_units"):
                _cut_units(layer, pairs, units, rows)
    return units, rows


def _readers(pairs, operation):
    return [b for a, b in pairs if a is operation]


def _merge_kind(node):
    """How `node` joins the channels of its inputs: `"all"` (an `Add`,
    `Subtract`, `Average`, `Maximum` or `Minimum` layer, or such an op
    on tensors only, as `x + y` is: a channel is 0 if it is 0 in every
    input), `"any"` (a `Multiply`: 0 if it is 0 in one input), or None
    for a node that is not such a join."""
    operation = node.operation
    if isinstance(operation, keras.layers.Layer):
        if not isinstance(operation, _MERGES):
            return None
    elif len(node.arguments.keras_tensors) != len(
        keras.tree.flatten(node.arguments.args)
    ):
        return None  # An op with a constant, such as `x + 1.0`.
    return _JOIN_ZEROS.get(operation.__class__.__name__)


def _depthwise(operation):
    """Whether `operation` is a depthwise convolution that maps channel `c`
    to channel `c` (a depth multiplier of 1)."""
    return (
        isinstance(operation, keras.layers.DepthwiseConv2D)
        and operation.depth_multiplier == 1
    )


def _channelwise(node):
    """Whether the operation of `node` keeps each channel at its
    position, so its inputs and outputs carry the same channels."""
    operation = node.operation
    return (
        isinstance(operation, (keras.layers.BatchNormalization, *_POOLING))
        or (
            isinstance(operation, keras.layers.Layer)
            and _elementwise(operation)
        )
        or _merge_kind(node) is not None
        or _depthwise(operation)
    )


class _Graph:
    """The nodes of one functional model, in the order they run: which
    node makes each tensor and which nodes read it (`None` for an output
    of the model). Tensors are keyed by `id`."""

    @classmethod
    def of(cls, model):
        """The graph of `model`, or None for a model without one (a
        subclassed model, an unbuilt Sequential)."""
        graph = (
            model._functional if isinstance(model, keras.Sequential) else model
        )
        if getattr(graph, "_nodes_by_depth", None) is None:
            return None
        return cls(graph)

    def __init__(self, graph):
        depths = sorted(graph._nodes_by_depth, reverse=True)
        self.nodes = [n for d in depths for n in graph._nodes_by_depth[d]]
        self.maker, self.readers, self.calls = {}, {}, {}
        for node in self.nodes:
            key = id(node.operation)
            self.calls[key] = self.calls.get(key, 0) + 1
            for tensor in node.outputs:
                self.maker[id(tensor)] = node
            for tensor in node.arguments.keras_tensors:
                self.readers.setdefault(id(tensor), []).append(node)
        for tensor in keras.tree.flatten(graph.outputs):
            self.readers.setdefault(id(tensor), []).append(None)

    @staticmethod
    def inputs(node):
        return [id(t) for t in node.arguments.keras_tensors]

    @staticmethod
    def outputs(node):
        return [id(t) for t in node.outputs]


def _coupled(layer, graph):
    """The tensors that carry the same `K` channels as `layer`'s inputs:
    the group that one cut keeps `k` of.

    From the tensors around each call of `layer`, it follows channelwise
    operations both ways: batch norms, elementwise layers, pooling,
    depthwise convolutions and joins (every input of an `Add` carries the
    channels of its output). It stops at the `Dense` or `Conv*` layers
    that make the channels (the producers) and at the layers that read
    them with a kernel or concatenate them (the readers).

    Returns:
        `(group, producers, readers, concatenations)`: the keys of the
        tensors, the producing nodes, the `(node, tensor key)` of each
        reading kernel layer, and the `(node, tensor key)` of each
        `Concatenate` that reads the group.
    """
    size = layer.units
    group, producers, readers, concatenations = set(), [], [], []
    stack = [
        key
        for node in graph.nodes
        if node.operation is layer
        for key in graph.inputs(node) + graph.outputs(node)
    ]
    while stack:
        key = stack.pop()
        if key in group:
            continue
        group.add(key)
        maker = graph.maker[key]
        source = maker.operation
        if _produces(source, size):
            producers.append(maker)
        elif _channelwise(maker) or source is layer:
            for tensor in maker.arguments.keras_tensors:
                if tensor.shape[-1] != size:
                    _cannot(layer, "its channels are broadcast by", source)
            if getattr(source, "moving_mean", None) is not None and (
                source.moving_mean.shape != (size,)
            ):
                _cannot(layer, "its channels are not the axis of", source)
            stack.extend(graph.inputs(maker))
        elif hasattr(source, "finalized_width"):
            _cannot(layer, "its channels are also cut by", source)
        else:
            _cannot(layer, "it reads the units through", source)
        for node in graph.readers[key]:
            reader = None if node is None else node.operation
            if reader is None:
                _cannot(layer, "its units reach", "the model output")
            if isinstance(reader, keras.layers.Concatenate):
                concatenations.append((node, key))
            elif _has_kernel_over(reader, size) and not _depthwise(reader):
                readers.append((node, key))
            elif _channelwise(node) or reader is layer:
                stack.extend(graph.outputs(node))
            elif hasattr(reader, "finalized_width"):
                _cannot(layer, "its channels are also cut by", reader)
            else:
                _cannot(layer, "its units are read by", reader)
    return group, producers, readers, concatenations


def _zeroed(layer, graph, group):
    """The keys of the tensors of `group` whose cut channels are 0: those
    `layer` outputs, and those made from them by operations that keep a
    channel that is 0 at 0 (a join of such tensors, a ReLU, pooling, a
    depthwise convolution without bias)."""
    zero = set()
    for node in graph.nodes:
        outputs = [k for k in graph.outputs(node) if k in group]
        if not outputs:
            continue
        source = node.operation
        inputs = [k in zero for k in graph.inputs(node)]
        kind = _merge_kind(node)
        if source is layer:
            kept = True
        elif kind == "all":
            kept = all(inputs)
        elif kind == "any":
            kept = any(inputs)
        elif _depthwise(source):
            kept = all(inputs) and not source.use_bias
        elif isinstance(source, keras.layers.Layer) and (
            _elementwise(source) or isinstance(source, _POOLING)
        ):
            kept = all(inputs) and keeps_zeros(source)
        else:
            kept = False
        if kept:
            zero.update(outputs)
    return zero


def _cut_width(layer, graph, units, rows):
    """The cut of every layer coupled to a layer with `finalized_width()`."""
    width = layer.finalized_width()
    group, producers, readers, concatenations = _coupled(layer, graph)
    zero = _zeroed(layer, graph, group)
    for node, key in readers + concatenations:
        if key not in zero:
            _cannot(
                layer,
                "its cut channels are not all 0 where they are read by",
                node.operation,
                hint=_JOIN_HINT,
            )
    for node in producers:
        units[id(node.operation)] = width
    for key in group:
        source = graph.maker[key].operation
        if isinstance(source, keras.layers.BatchNormalization) or _depthwise(
            source
        ):
            units[id(source)] = width
    kept = np.arange(width)
    for node, _ in readers:
        rows[id(node.operation)] = kept
    for node, key in concatenations:
        _cut_concatenation(layer, graph, node, key, width, rows)
    for node in producers + [n for n, _ in readers]:
        if graph.calls[id(node.operation)] > 1:
            _cannot(layer, "its channels reach a shared layer,", node.operation)


def _cut_concatenation(layer, graph, node, key, width, rows):
    """Keeps, in what reads `node` (a `Concatenate` whose input `key`
    carries the group), the rows of the group's first `width` channels,
    at their offset, and every other channel.

    Several groups may meet in one concatenation: each keeps its own
    channels of the rows the other groups leave.
    """
    if node.operation.axis not in (-1, len(node.outputs[0].shape) - 1):
        _cannot(
            layer,
            "it is concatenated on an axis other than the last by",
            node.operation,
        )
    sizes = [t.shape[-1] for t in node.arguments.keras_tensors]
    offset = sum(sizes[: graph.inputs(node).index(key)])
    total = sum(sizes)
    drop = np.arange(offset + width, offset + layer.units)
    frontier = [node]
    while frontier:
        for reader in graph.readers[graph.outputs(frontier.pop())[0]]:
            operation = None if reader is None else reader.operation
            if operation is None:
                _cannot(layer, "its units reach", "the model output")
            if isinstance(operation, keras.layers.Concatenate):
                _cannot(
                    layer,
                    "its concatenation is concatenated again by",
                    operation,
                )
            if _has_kernel_over(operation, total):
                kept = rows.get(id(operation), np.arange(total))
                rows[id(operation)] = np.setdiff1d(kept, drop)
            elif isinstance(operation, keras.layers.Layer) and keeps_zeros(
                operation
            ):
                frontier.append(reader)
            else:
                _cannot(layer, "its concatenated units are read by", operation)


def _cut_units(layer, pairs, units, rows):
    """The cut of a layer with `finalized_units()`."""
    kept = layer.finalized_units()
    readers = _readers(pairs, layer)
    if readers and all(_has_kernel_over(r, layer.units) for r in readers):
        units[id(layer)] = kept
        for reader in readers:
            rows[id(reader)] = np.arange(kept)
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
