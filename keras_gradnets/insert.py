"""insert_after: new layers in a model that already exists."""

import keras

from keras_gradnets.core.processes import local_to_this_process
from keras_gradnets.core.rewrite import Rewriter
from keras_gradnets.core.rewrite import check_rewritable
from keras_gradnets.core.walk import walk_layers


class _Inserter(Rewriter):
    def __init__(self, layers):
        super().__init__()
        self._inserted = layers

    def replace(self, layer):
        new = self._inserted.get(layer.name)
        return None if new is None else [self.copy(layer), new]


def insert_after(model, layers):
    """Returns a copy of `model` with `layers[name]` called after `name`.

    The layer named `name` (in `model` or a model nested in it) is followed
    by `layers[name]`, which reads its output and is read by everything
    that read it. The same layer given for several names is shared: one set
    of weights, called at each place. That is how one
    `keras_gradnets.layers.ConcreteWidth` searches the channels of a
    residual stage, which every block adds into: call it after the
    activation that ends each block of the stage.

    The copy is built on the rewriting engine of `gradualize` and
    `finalize`: the other layers keep their weights, and op nodes,
    shared layers and nested models pass through. A keras-hub backbone
    comes back as a functional `keras.Model` with the same inputs and
    outputs: its class rebuilds its graph from constructor arguments,
    which cannot hold the new layer.

    Args:
        model: A built Sequential or functional Keras model, such as a
            `keras.applications` model.
        layers: A dict from the name of a layer of `model` to the Keras
            layer to call after it.

    Returns:
        A new model; `model` is left as it was.

    Raises:
        ValueError: If `layers` is not a dict of layers, or names a layer
            that `model` does not have.

    Example:

    ```python
    model = keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), classes=10)
    width = keras_gradnets.layers.ConcreteWidth([64, 128, 192, 256])
    searched = keras_gradnets.insert_after(
        model, {f"conv2_block{i}_out": width for i in (1, 2, 3)})
    ```
    """
    check_rewritable(model)
    if not isinstance(layers, dict) or not all(
        isinstance(layer, keras.layers.Layer) for layer in layers.values()
    ):
        raise ValueError(
            "Invalid value received for argument `layers`. Expected a dict "
            "from layer names to Keras layers, such as "
            "`{'conv2_block1_out': ConcreteWidth()}`. "
            f"Received: layers={layers!r}"
        )
    names = {layer.name for layer in walk_layers(model)}
    missing = sorted(set(layers) - names)
    if missing:
        raise ValueError(
            f"Invalid value received for argument `layers`: model "
            f"'{model.name}' has no layers named {missing}. Use the names "
            "of `model.summary()`."
        )
    with local_to_this_process():
        return _Inserter(layers).rewrite(model)
