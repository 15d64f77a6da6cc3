"""Changing the sub-layers of a layer that builds them in its own code."""

import keras


def set_sublayer(owner, place, old, new):
    """Puts `new` in `old`'s place among the sub-layers `owner` tracks (so
    its weights keep their order), also once `owner` is built: at
    `owner.<place>`, or, for `place = (name, key)`, at `owner.<name>[key]`,
    an item of a list or dict. Keras's own `Dense.enable_lora` unlocks a
    built layer likewise."""
    tracker = owner._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        if tracker.is_in_store("layers", old):
            tracker.replace_tracked_value("layers", old, new)
        if isinstance(place, tuple):
            name, key = place
            getattr(owner, name)[key] = new
        else:
            setattr(owner, place, new)
    finally:
        if locked:
            tracker.lock()


def finalized_weights(weights, wrappers, config):
    """The arrays a plain layer takes in place of `weights`, in order, as
    the `finalize_block(config, values)` of each of `wrappers` maps them
    (see `SublayerWrapper`); `config` is edited in place."""
    values = {id(v): [keras.ops.convert_to_numpy(v).copy()] for v in weights}
    for wrapper in wrappers:
        wrapper.finalize_block(config, values)
    return [a for v in weights for a in values[id(v)]]


class SublayerWrapper(keras.layers.Wrapper):
    """A wrapper that changes the sub-layers of the layer it wraps.

    It saves the wrapped layer's own config, taken before any change, and
    otherwise is the wrapped layer: calls, masks and shapes pass through.
    Subclasses make their changes in `build`, to `block`: the wrapped
    layer, or the layer inside a chain of such wrappers, which then each
    make their own changes to it (the heads and the feed-forward width of
    one transformer block).

    Subclasses that finalize to the block's own class say, in
    `finalize_block(config, values)`, how their changes map back: they
    edit, in place, the block's config and `values`, a dict from
    `id(variable)` for each variable of the block to the list of arrays
    the plain block takes in its place (the variable's value at first; an
    empty list drops it). `finalized_layers` runs those of every wrapper
    of the chain on the block's original config and weights.

    Args:
        layer: The layer to wrap, built or not. Its config is what the
            wrapper saves, so it must be serializable.
        **kwargs: Base layer keyword arguments, such as `name`.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(layer, **kwargs)
        # The wrapped layer's own config, before any sub-layer changes.
        self._layer_config = keras.saving.serialize_keras_object(layer)
        self.supports_masking = layer.supports_masking

    @property
    def block(self):
        """The layer whose sub-layers change: the wrapped layer, or the
        one inside a chain of wrappers of this kind."""
        layer = self.layer
        while isinstance(layer, SublayerWrapper):
            layer = layer.layer
        return layer

    def _chain(self):
        """This wrapper and those it wraps, outermost first."""
        chain = [self]
        while isinstance(chain[-1].layer, SublayerWrapper):
            chain.append(chain[-1].layer)
        return chain

    def finalized_layers(self):
        """The block's own class, with the config and weights the
        `finalize_block` of every wrapper of the chain gives."""
        chain = self._chain()
        block = self.block
        unknown = [w.name for w in chain if not hasattr(w, "finalize_block")]
        if unknown:
            raise ValueError(
                f"Cannot finalize '{self.name}': the wrappers {unknown} "
                "around its block do not say how to finalize their changes "
                "within a chain. Finalize them on their own."
            )
        # `finalize_block` sets top-level keys of the config.
        spec = dict(chain[-1]._layer_config)
        spec["config"] = dict(spec["config"])
        weights = finalized_weights(block.weights, chain, spec["config"])
        plain = keras.saving.deserialize_keras_object(spec)
        if not plain.built:  # keras-hub blocks build from their config.
            plain.build_from_config(block.get_build_config())
        plain.set_weights(weights)
        return [plain]

    def call(self, inputs, *args, **kwargs):
        return self.layer(inputs, *args, **kwargs)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def compute_output_shape(self, *args, **kwargs):
        return self.layer.compute_output_shape(*args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def get_config(self):
        return {**super().get_config(), "layer": self._layer_config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)
