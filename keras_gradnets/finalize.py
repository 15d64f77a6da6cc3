"""Turning a trained keras_gradnets model into a plain Keras model."""

import inspect

import keras


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


class _Finalizer:
    """Builds the plain replacement of a model and copies its weights."""

    def __init__(self):
        self._weight_sources = []

    def replace(self, layer):
        """Returns the list of plain layers that stand for `layer`."""
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
    carries the time step). Nested models are finalized too. The result
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
    finalizer = _Finalizer()
    plain = finalizer.model(model)
    finalizer.copy_weights()
    return plain
