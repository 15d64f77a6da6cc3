"""Turning a trained keras_gradnets model into a plain Keras model."""

import inspect

import keras

from keras_gradnets.layers.dynamic_layer import DynamicLayer
from keras_gradnets.layers.dynamic_links import dynamic_readers


def _call_accepted(layer, *args, **kwargs):
    """Calls `layer`, dropping keyword arguments its `call` does not take.

    `clone_model` replays the original layer's call arguments (such as the
    `mask=None` that Keras records for `BatchNormalization`) on the layer
    that replaces it, which may not accept them.
    """
    parameters = inspect.signature(layer.call).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in parameters}
    return layer(*args, **kwargs)


def _zero_at_zero(activation):
    if activation is None:
        return True
    value = keras.ops.convert_to_numpy(activation(keras.ops.zeros((1,))))
    return bool(value[0] == 0)


class _Finalizer:
    """Builds the plain replacement of a model and copies its weights."""

    def __init__(self, model):
        self._weight_sources = []
        # Dynamic layers whose readers all have a kernel over their units
        # shrink to their active size, and so do those kernels' rows.
        self._units = {}
        self._rows = {}
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

    def _dynamic(self, layer):
        rows = self._rows.get(id(layer), layer.input_dim)
        units = self._units.get(id(layer), layer.units)
        new, weights = layer.plain_layer(rows, units)
        self._weight_sources.append((new, lambda: weights))
        return [new]

    def _sliced_weights(self, layer):
        rows = self._rows[id(layer)]
        return [
            w[..., :rows, :] if v is layer.kernel else w
            for v, w in zip(layer.weights, layer.get_weights(), strict=True)
        ]

    def replace(self, layer):
        """Returns the list of plain layers that stand for `layer`."""
        if isinstance(layer, DynamicLayer):
            return self._dynamic(layer)
        if hasattr(layer, "finalized_layers"):
            return [
                new
                for component in layer.finalized_layers()
                for new in self.replace(component)
            ]
        if isinstance(layer, keras.Model):
            return [self.model(layer)]
        if isinstance(layer, keras.layers.RNN) and hasattr(
            layer.cell, "plain_cell"
        ):
            config = layer.get_config()
            config["cell"] = keras.saving.serialize_keras_object(
                layer.cell.plain_cell()
            )
            new = keras.layers.RNN.from_config(config)
            self._weight_sources.append((new, layer.cell.plain_weights))
            return [new]
        new = layer.__class__.from_config(layer.get_config())
        if id(layer) in self._rows:
            self._weight_sources.append(
                (new, lambda: self._sliced_weights(layer))
            )
        else:
            self._weight_sources.append((new, layer.get_weights))
        return [new]

    def replace_one(self, layer):
        """Like `replace`, but always returns one layer."""
        layers = self.replace(layer)
        if not layers:
            return keras.layers.Identity(name=layer.name)
        if len(layers) == 1:
            return layers[0]
        return keras.Sequential(layers, name=layer.name)

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
                call_function=_call_accepted,
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
    `MollifiedDense` at `p=0` by a `Dense`, and an `RNN` of a mollified cell
    at `p=0` by an `RNN` of the plain Keras cell (whose state no longer
    carries the time step), and a `DynamicDense`/`DynamicConv2D` by a
    `Dense`/`Conv2D` of its active size, with the rows of the kernels that
    read it sliced to match (when every reader has such a kernel; otherwise
    the plain layer keeps the full size, with zero weights for the inactive
    units). Nested models are finalized too. The result
    holds copies of the weights, shares nothing with `model`, and gives the
    same outputs in inference mode.

    Args:
        model: A built `keras.Sequential` or functional `keras.Model`.

    Returns:
        A new `keras.Model` made of built-in Keras layers (and any custom
        layers `model` already had).

    Raises:
        ValueError: if a gradual layer is between its end points (for
            example `0 < g < 1`), or `model` is subclassed or not built.

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
