"""Turning a trained keras_gradnets model into a plain Keras model."""

import warnings

import keras
import numpy as np

from keras_gradnets.core.processes import local_to_this_process
from keras_gradnets.core.rewrite import Rewriter
from keras_gradnets.core.rewrite import check_rewritable
from keras_gradnets.core.state import declares_state
from keras_gradnets.core.state import scalar_value
from keras_gradnets.core.walk import walk_layers
from keras_gradnets.core.width import unit_cuts
from keras_gradnets.gradnets.twins import FUSED
from keras_gradnets.gradnets.twins import fused_activation


def _kernel_index(layer):
    """Index of `layer.kernel` in `layer.weights`, or None."""
    kernel = getattr(layer, "kernel", None)
    for i, weight in enumerate(layer.weights):
        if weight is kernel:
            return i
    return None


class _Finalizer(Rewriter):
    """The plain replacement of every layer, on the rewriting engine.

    A layer that answers the finalize protocol (`finalized_layers()`, see
    `keras_gradnets.core.finalize`) is replaced by the plain layers it
    names, themselves finalized; a recurrent wrapper (`RNN`,
    `Bidirectional`) whose cell answers it gets the plain cell; any other
    layer is copied. Layers that answer `finalized_units()` (dynamic
    layers) or `finalized_width()` (`ConcreteWidth`) are cut by the one
    rule of `keras_gradnets.core.width`, whichever family their readers
    come from.
    """

    def __init__(self, model):
        super().__init__()
        # ids of the twins of fused activations put back into their layer.
        self._merged = set()
        # id of an original layer -> units to keep / input rows to keep.
        self._units, self._rows = unit_cuts(model)

    def _pass_on(self, layer, components):
        """Hands `layer`'s shrinking and row slicing to its components."""
        for table in (self._units, self._rows):
            if id(layer) in table:
                size = table.pop(id(layer))
                for component in components:
                    if _kernel_index(component) is not None:
                        table[id(component)] = size
                        break

    def copy(self, layer, weights=None, **changes):
        units = self._units.get(id(layer))
        rows = self._rows.get(id(layer))
        if weights is not None or (units is None and rows is None):
            return super().copy(layer, weights, **changes)
        if units is not None:
            config = layer.get_config()
            changes.update(
                {key: units for key in ("filters", "units") if key in config}
            )
        kernel = _kernel_index(layer)
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)

        def cut():
            values = layer.get_weights()
            if depthwise:
                # Channel c is `kernel[..., c, :]` and `bias[c]`.
                return [
                    np.take(v, range(units), axis=-2 if i == kernel else -1)
                    for i, v in enumerate(values)
                ]
            if kernel is not None and rows is not None:
                values[kernel] = np.take(values[kernel], rows, axis=-2)
            if units is not None:
                values = [v[..., :units] for v in values]
            return values

        return super().copy(layer, cut, **changes)

    def input_index(self, layer):
        return getattr(layer, "finalized_input", lambda: None)()

    def _fused_twin(self, layer):
        """The twin of `layer`'s fused activation that `gradualize` split
        out (`<layer>_activation`, its one reader), and the activation it
        computes, if it is at g=1; else None."""
        readers = self.readers(layer)
        if not isinstance(layer, FUSED) or len(readers) != 1:
            return None
        twin = readers[0] and readers[0].operation
        if getattr(twin, "name", None) != f"{layer.name}_activation":
            return None
        if layer.get_config().get("activation") != "linear":
            return None
        activation = fused_activation(twin)
        if activation is None or twin.state_value("g") != 1:
            return None
        return twin, activation

    def replace(self, layer):
        if id(layer) in self._merged:
            return []
        fused = self._fused_twin(layer)
        if fused is not None:
            # The activation goes back into the layer it was split from.
            twin, activation = fused
            self._merged.add(id(twin))
            return [self.copy(layer, activation=activation)]
        if hasattr(layer, "finalized_layers"):
            components = layer.finalized_layers()
            if isinstance(layer, keras.Model):
                # A model of a class that builds its own graph (a keras-hub
                # backbone) finalizes whole, into a model of that class.
                return components
            self._pass_on(layer, components)
            layers = [new for c in components for new in self.replacements(c)]
            if len(layers) == 1 and not isinstance(layers[0], keras.Model):
                # One plain layer takes the name of the layer it stands for.
                layers[0].name = layer.name
            return layers
        if isinstance(layer, keras.layers.TimeDistributed) and hasattr(
            layer.layer, "finalized_layers"
        ):
            inner = self.replace(layer.layer)
            names = (
                [layer.name]
                if len(inner) == 1
                else [f"{layer.name}_{i}" for i in range(len(inner))]
            )
            return [
                keras.layers.TimeDistributed(x, name=name)
                for x, name in zip(inner, names, strict=True)
            ]
        if isinstance(layer, keras.layers.Bidirectional):
            forward = _plain_rnn(layer.forward_layer)
            backward = _plain_rnn(layer.backward_layer)
            if forward is None and backward is None:
                return None
            forward = forward or (layer.forward_layer, None)
            backward = backward or (layer.backward_layer, None)
            config = layer.get_config()
            config["layer"] = keras.saving.serialize_keras_object(forward[0])
            config["backward_layer"] = keras.saving.serialize_keras_object(
                backward[0]
            )
            new = keras.layers.Bidirectional.from_config(config)

            def weights():
                return [
                    *(forward[1] or layer.forward_layer.get_weights)(),
                    *(backward[1] or layer.backward_layer.get_weights)(),
                ]

            self.weights_from(new, weights)
            return [new]
        if isinstance(layer, keras.layers.RNN):
            plain = _plain_rnn(layer)
            if plain is not None:
                new, weights = plain
                self.weights_from(new, weights)
                return [new]
        return None


def _plain_rnn(layer):
    """`(RNN, weights)`: the plain `RNN` around the finalized cell of the
    `RNN` layer, and its weights; None for a cell without a protocol."""
    if not hasattr(layer.cell, "finalized_layers"):
        return None
    (cell,) = layer.cell.finalized_layers()
    config = layer.get_config()
    config["cell"] = keras.saving.serialize_keras_object(cell)
    return keras.layers.RNN.from_config(config), cell.get_weights


def finalize(model):
    """Returns a plain Keras model equal to `model` at the end of annealing.

    Every gradual layer is replaced by the component its state has reached,
    and a layer that computes the identity there leaves the model (one rule
    for every layer: `GReLU`, `GradualDropout`, `GradualActivation` and
    `GradualConv*` at `g=0`, `GradualBatchNormalization` at `g=1`):
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
        layers `model` already had). When several JAX processes train
        `model` under a `keras.distribution`, it is built on the calling
        process's devices only, so one process can finalize alone.

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
    if not hasattr(model, "finalized_layers"):
        check_rewritable(model)
    _warn_if_never_annealed(model)
    with local_to_this_process():
        return _Finalizer(model).rewrite(model)


def _warn_if_never_annealed(model):
    """Warns when a trained model's layers with a `g` all sit at g=0."""
    gradual = [
        layer for layer in walk_layers(model) if declares_state(layer, "g")
    ]
    optimizer = getattr(model, "optimizer", None)
    trained = (
        optimizer is not None
        and optimizer.built
        and int(keras.ops.convert_to_numpy(optimizer.iterations)) > 0
    )
    if trained and gradual and all(scalar_value(x.g) == 0 for x in gradual):
        warnings.warn(
            f"Every one of the {len(gradual)} layers with a state `g` in "
            f"model '{model.name}' is at g=0 after training, so `finalize` "
            "returns the early architecture (a GReLU becomes an identity, "
            "a GradualDropout no dropout, ...): no scheduler moved g. Pass "
            "`keras_gradnets.callbacks.GradNetScheduler` (or "
            "`DropInScheduler`) to `fit`, or set the states yourself with "
            "`layer.g.assign(...)`.",
            stacklevel=3,
        )
