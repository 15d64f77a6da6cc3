"""Turning a trained keras_gradnets model into a plain Keras model."""

import inspect

import keras

from keras_gradnets.core.width import width_cuts
from keras_gradnets.dynamic_capacity.linking import dynamic_readers


def _zero_at_zero(activation):
    if activation is None:
        return True
    value = keras.ops.convert_to_numpy(activation(keras.ops.zeros((1,))))
    return bool(value[0] == 0)


def _kernel_index(layer):
    """Index of `layer.kernel` in `layer.weights`, or None."""
    kernel = getattr(layer, "kernel", None)
    for i, weight in enumerate(layer.weights):
        if weight is kernel:
            return i
    return None


class _Finalizer:
    """Builds the plain replacement of a model and copies its weights.

    One code path: a layer that answers the finalize protocol
    (`finalized_layers()`, see `keras_gradnets.core.finalize`) is replaced
    by copies of the plain layers it names, recursively; any other layer by
    a copy of itself. Dynamic layers whose readers all have a kernel over
    their units shrink to their active size, and those kernels' rows with
    them, whichever family the reader comes from; the layers around a
    layer that answers `finalized_width()` are cut to that width (see
    `keras_gradnets.core.width`).
    """

    def __init__(self, model):
        self._weight_sources = []
        self._inputs = {}
        self._identities = set()
        # id of an original layer -> units to keep / input rows to keep.
        self._units, self._rows = width_cuts(model)
        for layer, (consumers, others) in dynamic_readers(model).items():
            if consumers and not others:
                self._units[id(layer)] = layer.active_units
                for consumer in consumers:
                    self._rows[id(consumer)] = layer.active_units
            elif layer.active_units < layer.units and not _zero_at_zero(
                layer.activation
            ):
                raise ValueError(
                    f"Cannot finalize layer '{layer.name}': it is at "
                    f"{layer.active_units} of {layer.units} units and read "
                    f"by {[r.name for r in others] or 'the model output'}, "
                    "which keep its full size, and its activation is not 0 "
                    "at 0, so a plain layer cannot output zeros for the "
                    "inactive units. Grow it to full capacity first."
                )

    def _pass_on(self, layer, components):
        """Hands `layer`'s shrinking and row slicing to its components."""
        for table in (self._units, self._rows):
            if id(layer) in table:
                size = table.pop(id(layer))
                for component in components:
                    if _kernel_index(component) is not None:
                        table[id(component)] = size
                        break

    def _copy(self, layer):
        config = layer.get_config()
        units = self._units.get(id(layer))
        for key in ("filters", "units"):
            if units is not None and key in config:
                config[key] = units
        new = layer.__class__.from_config(config)
        rows = self._rows.get(id(layer))
        kernel = _kernel_index(layer)

        def weights():
            values = layer.get_weights()
            if kernel is not None and rows is not None:
                values[kernel] = values[kernel][..., :rows, :]
            if units is not None:
                values = [v[..., :units] for v in values]
            return values

        self._weight_sources.append((new, weights))
        return new

    def replace(self, layer):
        """Returns the list of plain layers that stand for `layer`."""
        if hasattr(layer, "finalized_layers"):
            components = layer.finalized_layers()
            self._pass_on(layer, components)
            layers = [new for c in components for new in self.replace(c)]
            if len(layers) == 1 and not isinstance(layers[0], keras.Model):
                # One plain layer takes the name of the layer it stands for.
                layers[0].name = layer.name
            return layers
        if isinstance(layer, keras.Model):
            return [self.model(layer)]
        if isinstance(layer, keras.layers.RNN) and hasattr(
            layer.cell, "finalized_layers"
        ):
            (cell,) = layer.cell.finalized_layers()
            config = layer.get_config()
            config["cell"] = keras.saving.serialize_keras_object(cell)
            new = keras.layers.RNN.from_config(config)
            self._weight_sources.append((new, cell.get_weights))
            return [new]
        return [self._copy(layer)]

    def replace_one(self, layer):
        """Like `replace`, but always returns one layer."""
        layers = self.replace(layer)
        if not layers:
            new = keras.layers.Identity(name=layer.name)
            self._identities.add(id(new))
        elif len(layers) == 1:
            new = layers[0]
        else:
            new = keras.Sequential(layers, name=layer.name)
        index = getattr(layer, "finalized_input", lambda: None)()
        if index is not None:
            self._inputs[id(new)] = index
        return new

    def call(self, layer, *args, **kwargs):
        """Calls a replacement layer, as `clone_model` replays the graph.

        A replacement of a layer that took a list of inputs reads the one
        input its original names (`finalized_input()`); keyword arguments
        its `call` does not take (such as the `mask=None` that Keras records
        for `BatchNormalization`) are dropped.
        """
        if id(layer) in self._inputs:
            args = (args[0][self._inputs[id(layer)]], *args[1:])
        if id(layer) in self._identities:
            return args[0]
        parameters = inspect.signature(layer.call).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in parameters}
        return layer(*args, **kwargs)

    def model(self, model):
        if isinstance(model, keras.Sequential):
            if not model.built or not model.inputs:
                raise ValueError(
                    f"Model '{model.name}' is not built. Call it on data or "
                    "start it with `keras.Input(...)` before finalizing."
                )
            spec = model.inputs[0]
            layers = [
                new for layer in model.layers for new in self.replace(layer)
            ]
            return keras.Sequential(
                [
                    keras.Input(batch_shape=spec.shape, dtype=spec.dtype),
                    *layers,
                ],
                name=model.name,
            )
        try:
            return keras.models.clone_model(
                model,
                clone_function=self.replace_one,
                call_function=self.call,
            )
        except ValueError as error:
            raise ValueError(
                f"Cannot finalize model '{model.name}': only Sequential and "
                "functional models can be rebuilt. For a subclassed model, "
                "build the plain model yourself from each gradual layer's "
                f"`finalized_layers()`. ({error})"
            ) from error

    def copy_weights(self):
        for new, weights in self._weight_sources:
            new.set_weights(weights())


def finalize(model):
    """Returns a plain Keras model equal to `model` at the end of annealing.

    Every gradual layer is replaced by the component its state has reached:
    `GReLU` at `g=1` by a `ReLU`, `GradualDropout` by a `Dropout`,
    `GradualBatchNormalization` at `g=1` by nothing, `GradualConv2D` by its
    `Conv2D`, `GradNet` by `late` (and by `early` at `g=0`), a
    `MollifiedDense` at `p=0` by a `Dense`, a `MollifiedActivation` at `p=0`
    by an `Activation` of its first input (the skip path leaves the model
    when nothing else reads it), an `RNN` of a mollified cell at `p=0` by an
    `RNN` of the plain Keras cell (whose state no longer carries the time
    step), and a `DynamicDense`/`DynamicConv2D` by a `Dense`/`Conv2D` of its
    active size, with the rows of the kernels that read it sliced to match,
    whichever family the reader belongs to (when every reader has such a
    kernel; otherwise the plain layer keeps the full size, with zero weights
    for the inactive units), a `ConcreteDepth` by its most probable depth's
    head (the other heads and the deeper blocks leave the model), and a
    `ConcreteWidth` by nothing, with the `Dense`/`Conv*` layer before it
    (and any batch norm in between) cut to the most probable width and the
    layers that read it to the matching input rows. Every layer answers
    the same finalize protocol (`finalized_layers()`), so chains across
    families work. Nested models are finalized too. The result
    holds copies of the weights, shares nothing with `model`, and gives the
    same outputs in inference mode.

    Args:
        model: A built `keras.Sequential` or functional `keras.Model`.

    Returns:
        A new `keras.Model` made of built-in Keras layers (and any custom
        layers `model` already had).

    Raises:
        ValueError: naming the layer and the value, if a layer's state is
            between its end points (for example `0 < g < 1`), not finite or
            out of its range; or if `model` is subclassed or not built.

    Example:

    ```python
    model.fit(x, y, epochs=10, callbacks=[GradNetScheduler(tau=5)])
    plain = keras_gradnets.finalize(model)
    plain.save("plain.keras")  # loads without keras_gradnets
    ```
    """
    finalizer = _Finalizer(model)
    plain = finalizer.model(model)
    finalizer.copy_weights()
    return plain
