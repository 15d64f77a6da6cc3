"""The owner of what dynamic layers need from their models.

A dynamic layer keeps no reference to a model. This module does, weakly:
for each linked dynamic layer, the models it belongs to, the dynamic layer
it reads (its source) and the layers that read it through a kernel (its
consumers). It re-creates the models' compiled functions when a capacity
changes, builds their optimizers, and writes the weights that read newly
active units.
"""

import contextlib
import weakref

import keras
from keras import ops

from keras_gradnets.core.walk import reader_pairs
from keras_gradnets.core.walk import walk_layers
from keras_gradnets.dynamic_capacity import dynamic_layer


class _Links:
    def __init__(self):
        self.models = []
        self.source = None
        self.consumers = []


_LINKS = weakref.WeakKeyDictionary()


def _links(layer):
    return _LINKS.get(layer) or _Links()


def _alive(refs):
    return [x for x in (ref() for ref in refs) if x is not None]


def source_of(layer):
    """The dynamic layer whose units `layer` reads, if linked."""
    source = _links(layer).source
    return None if source is None else source()


def consumers_of(layer):
    """The linked layers that read `layer`'s units through a kernel."""
    return _alive(_links(layer).consumers)


def models_of(layer):
    """The models `layer` was linked in, that still exist."""
    return _alive(_links(layer).models)


def optimizer_ready(layer):
    """Whether a model of `layer` has a built optimizer (slots for all)."""
    return any(
        getattr(model, "optimizer", None) is not None and model.optimizer.built
        for model in models_of(layer)
    )


def _remake_functions(model):
    """Re-creates the compiled functions `model` already made.

    The new functions trace the layers' current (static) capacity at their
    first call; `fit`, `evaluate` and `predict` look the functions up at
    every step.
    """
    for kind in ("train", "test", "predict"):
        if getattr(model, f"{kind}_function", None) is not None:
            getattr(model, f"make_{kind}_function")(force=True)


def _check_can_retrace(layer, change):
    if layer._traced and not models_of(layer):
        raise ValueError(
            f"Layer '{layer.name}' {change}, but it has run in a model that "
            "was not linked, so that model's compiled train, test and "
            "predict functions would keep using the old capacity. Call "
            "`keras_gradnets.layers.link_dynamic_layers(model)` after "
            "`compile` (the `CapacityGrowth` callback does it at the start "
            "of `fit`), then change the capacity."
        )


def capacity_changed(layer):
    """Re-creates the compiled functions of `layer`'s models.

    Called whenever a capacity variable of `layer` takes a new value from
    the host (`set_capacity`, `set_weights`, `load_weights`, ...).

    Raises:
        ValueError: on TensorFlow and JAX, if `layer` has run in a compiled
            function of a model that is not linked: the next step would use
            the old capacity.
    """
    _check_can_retrace(layer, "changed capacity through its variables")
    for model in models_of(layer):
        _remake_functions(model)


def change_capacity(layer, active, frozen):
    """Sets `layer`'s capacity and initializes the newly active units.

    The new units get their incoming weights from the layer's initializer,
    and the layers that read them the weights `growth_init` says.
    """
    _check_can_retrace(layer, f"was asked for capacity ({active}, {frozen})")
    old_active = layer.active_units
    layer._active_variable.assign(active)
    layer._frozen_variable.assign(frozen)
    if active > old_active:
        layer.initialize_units(old_active, active)
        for consumer in consumers_of(layer):
            _initialize_consumer(layer, consumer, old_active, active)


# Reader weights ---------------------------------------------------------


def _set_rows(kernel, start, stop, rows=None):
    """Writes `rows` (zeros if None) into input rows `start:stop`."""
    if rows is None:
        rows = ops.zeros_like(kernel[..., start:stop, :])
    corner = (0,) * (len(kernel.shape) - 2) + (start, 0)
    kernel.assign(ops.slice_update(kernel.value, corner, rows))


def _initialize_dynamic_inputs(consumer, start, stop):
    """Sets a dynamic consumer's weights from input units `start:stop`.

    Frozen chunks get zeros, so that frozen units keep computing what they
    learned. Trainable chunks get zeros for
    `growth_init="function_preserving"` and draws of the initializer at the
    new active fan-in otherwise.
    """
    random = consumer.growth_init == "random"
    if random:
        full = consumer.kernel_initializer(
            consumer._kernel_shape(stop, consumer.active_units),
            dtype=consumer.variable_dtype,
        )
    bounds = consumer.bounds
    for i in range(consumer.chunks):
        rows = None
        if random and consumer.frozen_chunks <= i < consumer.active_chunks:
            rows = full[..., start:stop, :][..., bounds[i] : bounds[i + 1]]
        _set_rows(consumer.kernels[i], start, stop, rows)


def _initialize_consumer(layer, consumer, start, stop, random=None):
    """Sets `consumer`'s weights from `layer`'s units `start:stop`."""
    if isinstance(consumer, dynamic_layer.DynamicLayer):
        _initialize_dynamic_inputs(consumer, start, stop)
        return
    kernel = consumer.kernel
    if random is None:
        random = layer.growth_init == "random"
    rows = None
    if random:
        shape = tuple(kernel.shape[:-2]) + (stop, kernel.shape[-1])
        rows = consumer.kernel_initializer(shape, dtype=kernel.dtype)[
            ..., start:stop, :
        ]
    _set_rows(kernel, start, stop, rows)


def _initialize_for_capacity(layer):
    """Re-draws an untrained layer's weights at its linked active sizes.

    At build time a layer cannot know that its input comes from a dynamic
    layer, so it draws its weights with the full input size as fan-in.
    Once linked, an untrained layer (never called in training mode, grown
    or given weights) draws them again with the active sizes, and so do the
    rows of its plain consumers that read its active units.
    """
    if not (layer.built and layer._pristine):
        return
    layer.initialize_units(0, layer.active_units)
    for consumer in consumers_of(layer):
        if not isinstance(consumer, dynamic_layer.DynamicLayer):
            _initialize_consumer(layer, consumer, 0, layer.active_units, True)
    layer._pristine = False


# Finding the readers ------------------------------------------------------


def _reads_units(layer, producer):
    """Whether `layer` has a kernel whose input axis is `producer`'s units."""
    if isinstance(layer, dynamic_layer.DynamicLayer):
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
        if isinstance(layer, dynamic_layer.DynamicLayer)
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
    * any capacity change (`grow`, `set_capacity`, `set_weights` of the
      layer or the model, `load_weights`, `EarlyStopping` restoring its best
      weights, `BackupAndRestore`) re-creates `model`'s compiled functions,
      so the next train, test or predict step traces the new (static)
      shapes;
    * `model.optimizer` is built (if `model` is compiled), with slots for
      every chunk, so that frozen and inactive chunks can be held exactly.

    `CapacityGrowth` and `finalize` call it. Call it yourself after
    `compile` when you change capacity by hand (`layer.grow()`,
    `layer.set_capacity(...)`) or load weights at another capacity into a
    model that was already trained, evaluated or used for prediction: on
    TensorFlow and JAX the layers raise a `ValueError` otherwise, since the
    model's compiled functions would keep the old capacity.

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
        links = _LINKS.setdefault(producer, _Links())
        if model not in models_of(producer):
            links.models.append(weakref.ref(model))
        links.consumers = [weakref.ref(c) for c in consumers]
        for consumer in consumers:
            if isinstance(consumer, dynamic_layer.DynamicLayer):
                _LINKS.setdefault(consumer, _Links()).source = weakref.ref(
                    producer
                )
        dynamic.append(producer)
    for layer in dynamic:
        _initialize_for_capacity(layer)
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
        # On TensorFlow, slots of mirrored variables are made in the scope
        # of the model's strategy, where `fit` would make them.
        strategy = getattr(model, "distribute_strategy", None)
        with strategy.scope() if strategy else contextlib.nullcontext():
            optimizer.build(model.trainable_variables)
    if dynamic:
        # Functions traced before linking read every input of a linked
        # dynamic layer and may hold nothing: trace them again.
        _remake_functions(model)
    return dynamic
