"""Linking: finding the layers that read each dynamic layer of a model.

`link_dynamic_layers` walks a model's graph, records for each dynamic layer
its readers (`keras_gradnets.dynamic_capacity.links`), lets each layer
prepare for training and builds the model's optimizer.
"""

import contextlib

import keras

from keras_gradnets.core.walk import reader_pairs
from keras_gradnets.core.walk import walk_layers
from keras_gradnets.dynamic_capacity import links
from keras_gradnets.dynamic_capacity.dynamic_layer import DynamicLayer

# Finding the readers ------------------------------------------------------


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
        for layer, reader in reader_pairs(submodel):
            if layer in readers:
                readers[layer].append(reader)
    result = {}
    for producer, found in readers.items():
        consumers = [r for r in found if _reads_units(r, producer)]
        others = [r for r in found if r not in consumers]
        result[producer] = (consumers, others)
    return result


def link_dynamic_layers(model):
    """Links the dynamic layers of `model` to the model and their readers.

    Found from the model's graph (`keras_gradnets.core.walk.reader_pairs`:
    the layers and op nodes that take a layer's outputs), nested models
    included. After linking:

    * a dynamic layer that reads a dynamic layer uses only its active part;
    * growth initializes the weights that read the new units (`growth_init`);
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
            names = [
                "(the model output)" if r is None else r.name for r in others
            ] or ["(the model output)"]
            raise ValueError(
                f"Layer '{producer.name}' has "
                "growth_init='function_preserving', which starts new units "
                "with zero outgoing weights, but it is read by "
                f"{names}, which has no kernel over its units. Put the "
                "activation inside the dynamic layer (`activation=...`) so "
                "that a Dense, Conv or dynamic layer reads it, or use "
                "growth_init='random'."
            )
        links.record(
            producer,
            model,
            consumers,
            [c for c in consumers if isinstance(c, DynamicLayer)],
        )
        dynamic.append(producer)
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
    return dynamic
