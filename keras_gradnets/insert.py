"""insert_after and replace_layers: new layers in a model that already
exists."""

import keras

from keras_gradnets.core.processes import local_to_this_process
from keras_gradnets.core.rewrite import Rewriter
from keras_gradnets.core.rewrite import check_rewritable
from keras_gradnets.core.walk import walk_layers


class _Inserter(Rewriter):
    """Calls `layers[name]` after the layer named `name` (`keep=True`) or
    in its place."""

    def __init__(self, layers, keep):
        super().__init__()
        self._new = layers
        self._keep = keep

    def replace(self, layer):
        new = self._new.get(layer.name)
        if new is None:
            return None
        return [self.copy(layer), new] if self._keep else [new]


def _rewrite(model, layers, keep, example):
    check_rewritable(model)
    if not isinstance(layers, dict) or not all(
        isinstance(layer, keras.layers.Layer) for layer in layers.values()
    ):
        raise ValueError(
            "Invalid value received for argument `layers`. Expected a dict "
            f"from layer names to Keras layers, such as `{example}`. "
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
        return _Inserter(layers, keep).rewrite(model)


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
    return _rewrite(
        model,
        layers,
        keep=True,
        example="{'conv2_block1_out': ConcreteWidth()}",
    )


def replace_layers(model, layers):
    """Returns a copy of `model` with `layers[name]` in place of `name`.

    `layers[name]` is called where the layer named `name` (in `model` or a
    model nested in it) was called, with the same arguments (the padding
    mask a keras-hub backbone passes its blocks, for example), and is read
    by everything that read it. It brings its own weights: the layer it
    replaces is dropped. That is how the blocks of a keras-hub backbone
    become blocks that grow during `fit`
    (`keras_gradnets.layers.DynamicFeedForward` and
    `keras_gradnets.layers.DynamicAttentionHeads` around a new block of
    the same config), and how a layer of a `keras.applications` model is
    swapped for its gradual twin by hand.

    Built on the same rewriting engine as `insert_after`, `gradualize` and
    `finalize`: the other layers keep their weights, op nodes, shared
    layers and nested models pass through, and a keras-hub backbone comes
    back as a functional `keras.Model` with the same inputs and outputs.
    The same new layer given for several names is shared.

    Args:
        model: A built Sequential or functional Keras model, such as a
            `keras.applications` model or a keras-hub backbone.
        layers: A dict from the name of a layer of `model` to the Keras
            layer to call in its place.

    Returns:
        A new model; `model` is left as it was.

    Raises:
        ValueError: If `layers` is not a dict of layers, or names a layer
            that `model` does not have.

    Example:

    ```python
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=256, num_layers=4, num_heads=4, hidden_dim=64,
        intermediate_dim=128, max_sequence_length=128)

    def growing(block):
        new = block.__class__.from_config(block.get_config())
        heads = keras_gradnets.layers.DynamicAttentionHeads(new, chunks=4)
        return keras_gradnets.layers.DynamicFeedForward(heads, chunks=4)

    names = [f"transformer_layer_{i}" for i in range(4)]
    grown = keras_gradnets.replace_layers(
        backbone, {n: growing(backbone.get_layer(n)) for n in names})
    ```
    """
    return _rewrite(
        model,
        layers,
        keep=False,
        example="{'transformer_layer_0': DynamicFeedForward(...)}",
    )
