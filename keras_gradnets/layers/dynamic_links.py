"""Linking dynamic layers to the layers that read their outputs."""

import weakref

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


def link_dynamic_layers(model):
    """Tells the dynamic layers of `model` which layers read their outputs.

    Found from the model's graph (a layer reads a dynamic layer when its
    `input` is that layer's `output`), in Sequential and functional models,
    nested ones included. After linking:

    * a dynamic layer that reads a dynamic layer uses only its active part;
    * growth initializes the weights that read the new units (`growth_init`);
    * an untrained layer re-draws its weights at the active sizes;
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
        ValueError: if a layer with `growth_init="function_preserving"` is
            read by a layer without a kernel, or by none, where new units
            could not start with zero outgoing weights.
    """
    layers = list(walk_layers(model))
    dynamic = [layer for layer in layers if isinstance(layer, DynamicLayer)]
    for producer in dynamic:
        output = _tensor(producer, "output")
        readers = [
            layer
            for layer in layers
            if output is not None
            and layer is not producer
            and _tensor(layer, "input") is output
        ]
        consumers = [r for r in readers if _reads_units(r, producer)]
        others = [r for r in readers if r not in consumers]
        if producer.growth_init == "function_preserving" and (
            others or not readers
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
        producer._opaque_readers = [weakref.ref(r) for r in others]
    for layer in dynamic:
        initialize_for_capacity(layer)
        layer._hold_chunks(False)
    optimizer = getattr(model, "optimizer", None)
    if dynamic and optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    return dynamic
