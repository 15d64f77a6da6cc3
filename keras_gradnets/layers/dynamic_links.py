"""Linking dynamic layers to the layers that read their outputs."""

import itertools

import keras

from keras_gradnets._walk import walk_layers
from keras_gradnets.layers.dynamic_layer import DynamicLayer
from keras_gradnets.layers.dynamic_layer import initialize_for_capacity
from keras_gradnets.layers.dynamic_layer import link


def _tensor(layer, attribute):
    """`layer.input` or `layer.output`, or None where Keras has none."""
    try:
        return getattr(layer, attribute)
    except (AttributeError, ValueError):
        return None


def _reads_units(layer, producer):
    """Whether `layer` has a kernel whose input axis is `producer`'s units."""
    if isinstance(layer, DynamicLayer):
        return True
    kernel = getattr(layer, "kernel", None)
    return (
        kernel is not None
        and hasattr(layer, "kernel_initializer")
        and len(kernel.shape) >= 2
        and kernel.shape[-2] == producer.units
    )


def _reader_pairs(model):
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


def dynamic_readers(model):
    """Maps each dynamic layer of `model` to the layers that read it.

    Returns:
        A dict, in model order, from dynamic layer to `(consumers, others)`:
        the readers with a kernel over its units, and the other readers.
    """
    readers = {
        layer: []
        for layer in walk_layers(model)
        if isinstance(layer, DynamicLayer)
    }
    for submodel in walk_layers(model):
        if not isinstance(submodel, keras.Model):
            continue
        for layer, reader in _reader_pairs(submodel):
            if layer in readers:
                readers[layer].append(reader)
    result = {}
    for producer, found in readers.items():
        consumers = [r for r in found if _reads_units(r, producer)]
        others = [r for r in found if r not in consumers]
        result[producer] = (consumers, others)
    return result


def link_dynamic_layers(model):
    """Tells the dynamic layers of `model` which layers read their outputs.

    Found from the model's graph (in a Sequential model, the next layer; in a
    functional model, a layer whose `input` is that layer's `output`),
    nested models included. After linking:

    * a dynamic layer that reads a dynamic layer uses only its active part;
    * growth initializes the weights that read the new units (`growth_init`);
    * an untrained layer re-draws its weights at the active sizes (one that
      was never called in training mode, grown, loaded or given weights with
      `set_weights`; weights assigned variable by variable are not seen, so
      assign them after linking);
    * a capacity change re-creates `model`'s compiled functions, so the next
      step traces the new (static) shapes;
    * `model.optimizer` is built (if `model` is compiled), with slots for
      every chunk, so that frozen and inactive chunks can be held exactly.

    `CapacityGrowth` and `finalize` call it. Call it yourself before changing
    capacity by hand (`layer.grow()`, `layer.set_capacity(...)`) in a model
    that was already trained, evaluated or used for prediction.

    Args:
        model: A built Sequential or functional `keras.Model`.

    Returns:
        The dynamic layers of `model`, in model order.

    Raises:
        ValueError: if `model.optimizer` accumulates gradients, or if a
            layer with `growth_init="function_preserving"` is read by a
            layer without a kernel, or by none, where new units could not
            start with zero outgoing weights.
    """
    dynamic = []
    for producer, (consumers, others) in dynamic_readers(model).items():
        if producer.growth_init == "function_preserving" and (
            others or not consumers
        ):
            names = [r.name for r in others] or ["(the model output)"]
            raise ValueError(
                f"Layer '{producer.name}' has "
                "growth_init='function_preserving', which starts new units "
                "with zero outgoing weights, but it is read by "
                f"{names}, which has no kernel over its units. Put the "
                "activation inside the dynamic layer (`activation=...`) so "
                "that a Dense, Conv or dynamic layer reads it, or use "
                "growth_init='random'."
            )
        link(producer, model, consumers)
        dynamic.append(producer)
    for layer in dynamic:
        initialize_for_capacity(layer)
        layer._hold_chunks(False)
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
        optimizer.build(model.trainable_variables)
    return dynamic
