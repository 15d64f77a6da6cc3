"""Linking: finding the layers that read each dynamic layer of a model.

`link_dynamic_layers` walks a model's graph, records for each dynamic layer
its readers (`keras_gradnets.dynamic_capacity.links`), lets each layer
prepare for training and builds the model's optimizer.
"""

import contextlib

import keras

from keras_gradnets.core.walk import reader_pairs
from keras_gradnets.core.walk import walk_layers
from keras_gradnets.core.width import keeps_zeros
from keras_gradnets.dynamic_capacity import links
from keras_gradnets.dynamic_capacity.dynamic_attention_heads import (
    DynamicAttentionHeads,
)
from keras_gradnets.dynamic_capacity.dynamic_layer import DynamicLayer
from keras_gradnets.dynamic_capacity.dynamic_stack import DynamicStack

# Layers that grow whole structures (blocks, heads), not units: they have
# no readers to initialize.
GROWING_BLOCKS = (DynamicStack, DynamicAttentionHeads)

# Finding the readers ------------------------------------------------------

# Beyond `keeps_zeros` (activations that are 0 at 0, dropout, pooling):
# layers that move, pad or copy channels without mixing them.
_MOVES_CHANNELS = (
    keras.layers.PReLU,
    keras.layers.Identity,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.UpSampling3D,
    keras.layers.Flatten,
)
# Layers that keep zeros at inference only: in training they make a zero
# channel nonzero.
_NOISY = (keras.layers.GaussianNoise, keras.layers.AlphaDropout)


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _keeps_channels(layer):
    """Whether a channel that is zero everywhere stays zero, and a channel,
    through `layer`, in training too (channels last)."""
    if isinstance(layer, _NOISY) or not _channels_last(layer):
        return False
    return isinstance(layer, _MOVES_CHANNELS) or keeps_zeros(layer)


def _reads_units(layer, producer, flattened=False):
    """Whether `layer` has a kernel whose input axis is `producer`'s units,
    or (`flattened`) a multiple of them, as after a `Flatten`."""
    if isinstance(layer, DynamicLayer):
        return True
    kernel = getattr(layer, "kernel", None)
    if kernel is None or not hasattr(layer, "kernel_initializer"):
        return False
    if len(kernel.shape) < 2:
        return False
    if flattened:
        return kernel.shape[-2] % producer.units == 0
    return kernel.shape[-2] == producer.units


def _channel_readers(producer, readers_of):
    """The kernel layers that read `producer`'s units through one or more
    layers that `_keeps_channels` accepts, and the other layers found on
    the way (`None` for a model output).

    Each such kernel's input row `r` reads unit `r % producer.units`.
    """
    found, others = [], []
    stack = [r for r in readers_of.get(producer, []) if _keeps_channels(r)]
    seen = set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        for reader in readers_of.get(layer, []):
            if reader is None:
                others.append(reader)
            elif _keeps_channels(reader):
                stack.append(reader)
            elif _reads_units(reader, producer, flattened=True):
                found.append(reader)
            else:
                others.append(reader)
    return found, others


def dynamic_readers(model):
    """Maps each dynamic layer of `model` to the layers that read it.

    Returns:
        A dict, in model order, from dynamic layer to
        `(consumers, through, others)`: the readers with a kernel over its
        units; the layers with a kernel that read them through layers that
        keep each channel apart and zeros at zero (activations, dropout,
        pooling, `Flatten`); the other readers, on the way included.
    """
    readers_of = {}
    for submodel in walk_layers(model):
        reader = links.inner_reader_of(submodel)
        if reader is not None:
            readers_of.setdefault(submodel, []).append(reader)
        if not isinstance(submodel, keras.Model):
            continue
        for layer, reader in reader_pairs(submodel):
            readers_of.setdefault(layer, []).append(reader)
    result = {}
    for producer in walk_layers(model):
        if not isinstance(producer, DynamicLayer):
            continue
        found = readers_of.get(producer, [])
        consumers = [r for r in found if _reads_units(r, producer)]
        through, others = _channel_readers(producer, readers_of)
        others += [
            r for r in found if r not in consumers and not _keeps_channels(r)
        ]
        result[producer] = (consumers, through, others)
    return result


def link_dynamic_layers(model):
    """Links the dynamic layers of `model` to the model and their readers.

    Found from the model's graph (`keras_gradnets.core.walk.reader_pairs`:
    the layers and op nodes that take a layer's outputs), nested models
    included. After linking:

    * a dynamic layer that reads a dynamic layer uses only its active part;
    * growth initializes the weights that read the new units (`growth_init`),
      also where they are read through layers that keep each channel apart
      and zeros at zero (activations with f(0) = 0, dropout, pooling and
      `Flatten`, channels last): for `"function_preserving"` those weights
      start at zero;
    * an untrained layer re-draws its weights at the active sizes (one that
      was never called in training mode, grown, loaded or given weights with
      `set_weights`; weights assigned variable by variable are not seen, so
      assign them after linking);
    * `model.optimizer` is built (if `model` is compiled), with slots for
      every chunk, so that frozen and inactive chunks can be held exactly.

    `CapacityGrowth` and `finalize` call it. Call it yourself after
    `compile` when you change capacity by hand (`layer.grow()`,
    `layer.set_capacity(...)`), so that growth initializes the readers of
    new units and the optimizer holds frozen units exactly. Whatever links
    them, the next step of every model that ran the layers uses their
    capacity now.

    Args:
        model: A built Sequential or functional `keras.Model`.

    Returns:
        The dynamic layers, `DynamicStack`s and `DynamicAttentionHeads` of
        `model`, in model order, less the layers that take their capacity
        from another (the gate of a gated `DynamicFeedForward`): they are
        linked, and grow with their leader.

    Raises:
        ValueError: if `model.optimizer` accumulates gradients, or if a
            layer with `growth_init="function_preserving"` (or
            `"gradmax"`) is read, directly
            or through activations, dropout, pooling or `Flatten`, by a
            layer without a kernel (a normalization, an `Add`, the model
            output), where new units could not start with zero outgoing
            weights.
    """
    readers = dynamic_readers(model)
    for producer, (consumers, through, others) in readers.items():
        # A layer of one chunk never grows: its readers need no care.
        if (
            producer.chunks > 1
            and producer.growth_init != "random"
            and (others or not (consumers or through))
        ):
            names = [
                "(the model output)" if r is None else r.name for r in others
            ] or ["(the model output)"]
            raise ValueError(
                f"Layer '{producer.name}' has "
                f"growth_init={producer.growth_init!r}, which starts new "
                "units with zero outgoing weights, but it is read by "
                f"{names}, which has no kernel over its units and is not a "
                "layer that keeps each channel apart and zeros at zero "
                "(activations with f(0) = 0, dropout, pooling, `Flatten`, "
                "channels last). Put the layer before one with a kernel "
                "(`Dense`, `Conv*`, a dynamic layer), or pass "
                "growth_init='random' to the dynamic layer."
            )
    dynamic = []
    for layer in walk_layers(model):
        if isinstance(layer, GROWING_BLOCKS):
            links.record(layer, model, [], [], [])
        elif layer in readers:
            consumers, through, _ = readers[layer]
            links.record(
                layer,
                model,
                consumers,
                [c for c in consumers if isinstance(c, DynamicLayer)],
                through,
            )
        else:
            continue
        dynamic.append(layer)
    for layer in dynamic:
        layer.linked()
    optimizer = getattr(model, "optimizer", None)
    if dynamic and getattr(optimizer, "gradient_accumulation_steps", None):
        raise ValueError(
            "Dynamic layers do not support optimizers with "
            "`gradient_accumulation_steps`: Keras accumulates the gradients "
            "of held variables with a maximum, which would change frozen "
            "units. Received: gradient_accumulation_steps="
            f"{optimizer.gradient_accumulation_steps}"
        )
    if dynamic and optimizer is not None and not optimizer.built:
        # On TensorFlow, slots of mirrored variables are made in the scope
        # of the model's strategy, where `fit` would make them.
        strategy = getattr(model, "distribute_strategy", None)
        with strategy.scope() if strategy else contextlib.nullcontext():
            optimizer.build(model.trainable_variables)
    if dynamic:
        # Functions traced before linking read every input of a linked
        # dynamic layer and may hold nothing: trace them again.
        links.remake_functions(model)
    return [layer for layer in dynamic if links.leader_of(layer) is None]
