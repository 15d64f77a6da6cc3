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

    Args:
        model: A built Sequential or functional `keras.Model`.
        x: A batch of inputs, as for `model.predict`.
        layers: Optional list of layers of `model`. Defaults to every layer
            with one output tensor except input layers.

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
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, [layer.output for layer in layers])
    outputs = probe(x, training=False)
    if len(layers) == 1:
        outputs = [outputs]
    moments = []
    for layer, output in zip(layers, outputs, strict=True):
        value = keras.ops.convert_to_numpy(output).astype("float64")
        if isinstance(layer, DynamicLayer):
            axis = (
                1
                if getattr(layer, "data_format", "") == ("channels_first")
                else -1
            )
            value = np.take(value, range(layer.active_units), axis=axis)
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
