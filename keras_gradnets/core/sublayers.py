"""Changing the sub-layers of a layer that builds them in its own code."""

import keras


def set_sublayer(owner, name, old, new):
    """Sets `owner.<name> = new`, in `old`'s place among the sub-layers
    `owner` tracks (so its weights keep their order), also once `owner` is
    built. Keras's own `Dense.enable_lora` unlocks a built layer likewise."""
    tracker = owner._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        if tracker.is_in_store("layers", old):
            tracker.replace_tracked_value("layers", old, new)
        setattr(owner, name, new)
    finally:
        if locked:
            tracker.lock()


class SublayerWrapper(keras.layers.Wrapper):
    """A wrapper that changes the sub-layers of the layer it wraps.

    It saves the wrapped layer's own config, taken before any change, and
    otherwise is the wrapped layer: calls, masks and shapes pass through.
    Subclasses make their changes in `build`.

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
