"""Statistics of a model's activations (dynamic-capacity thesis, 4.3)."""

import keras
import numpy as np

from keras_gradnets.core.processes import gather_from_processes
from keras_gradnets.dynamic_capacity.dynamic_layer import DynamicLayer


def activation_stats(model, x, layers=None):
    """Mean and standard deviation of each layer's activations on a batch.

    He et al. read the standard deviation of a layer's responses as the
    strength of its contribution; the thesis (section 4.3) grows the layers
    where it is largest. For a dynamic layer only the active units count,
    since the inactive ones are zero by construction.

    With several processes (JAX, `keras.distribution`), every process
    measures its own `x` and the statistics are those of all the processes'
    batches together, the same on every process, so that the decisions
    made from them (`CapacityGrowth(select="activation_std")`) agree. Every
    process must then call it with the same layers.

    The outputs are read while `model` runs on `x`, so `layers` may be
    nested anywhere in it: inside a sub-model, or inside a block that calls
    them itself (the feed-forward layers of a `DynamicFeedForward`). A layer
    called several times counts all its calls.

    Args:
        model: A built `keras.Model`.
        x: A batch of inputs, as for `model.predict`.
        layers: Optional list of layers that `model` calls, each returning
            one tensor. Defaults to `model.layers` except input layers.

    Returns:
        A dict from layer name to `{"mean": float, "std": float}`, in
        model order, computed in inference mode.

    Example:

    ```python
    stats = keras_gradnets.analysis.activation_stats(model, x_val[:256])
    stats["hidden"]["std"]
    ```
    """
    if layers is None:
        layers = [
            layer
            for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)
        ]
    outputs = _outputs_of(model, x, layers)
    moments = []
    for layer in layers:
        values = [
            keras.ops.convert_to_numpy(output).astype("float64")
            for output in outputs[id(layer)]
        ]
        if isinstance(layer, DynamicLayer):
            axis = (
                1
                if getattr(layer, "data_format", "") == ("channels_first")
                else -1
            )
            values = [
                np.take(v, range(layer.active_units), axis) for v in values
            ]
        value = np.concatenate([v.ravel() for v in values])
        moments.append([value.size, value.mean(), value.var()])
    # Each process's count, mean and variance, combined over processes.
    count, mean, variance = np.moveaxis(
        gather_from_processes(np.array(moments, "float64")), -1, 0
    )
    total = count.sum(axis=0)
    overall = (count * mean).sum(axis=0) / total
    spread = (count * (variance + (mean - overall) ** 2)).sum(axis=0) / total
    return {
        layer.name: {"mean": float(m), "std": float(np.sqrt(v))}
        for layer, m, v in zip(layers, overall, spread, strict=True)
    }


def _outputs_of(model, x, layers):
    """Every output of each of `layers` while `model` runs on `x`.

    Keras has no forward hooks: each layer's `call` is shadowed, for this
    one eager inference call, by one that records what it returns.
    """
    outputs = {id(layer): [] for layer in layers}

    def recording(layer):
        call = layer.call

        def call_and_record(*args, **kwargs):
            output = call(*args, **kwargs)
            outputs[id(layer)].append(output)
            return output

        return call_and_record

    for layer in layers:
        layer.call = recording(layer)
    try:
        model(x, training=False)
    finally:
        for layer in layers:
            del layer.call
    silent = [layer.name for layer in layers if not outputs[id(layer)]]
    if silent:
        raise ValueError(
            f"The layers {silent} were not called when model "
            f"'{model.name}' ran on `x`. Pass layers that the model uses."
        )
    return outputs
