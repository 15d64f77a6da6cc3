"""The base class of layers that blend an early and a late component."""

import keras
from keras import ops

from keras_gradnets.layers.state import add_unit_interval_weight
from keras_gradnets.layers.state import scalar_value


class GradualLayer(keras.layers.Layer):
    """Base class of a GradNets layer: `(1 - g) * early(x) + g * late(x)`.

    The mixing weight `g` is a non-trainable scalar variable (`layer.g`):
    `g=0` gives the early (easy) component and `g=1` the late (expressive)
    one (Almeida & Sauder, section 2). A callback such as
    `keras_gradnets.callbacks.GradNetScheduler` moves it during `fit`.

    Subclasses implement `call` (usually with `self.blend(early, late)`) and
    `early_layers()` / `late_layers()`: the plain Keras layers equal to this
    layer at `g=0` and at `g=1` (an empty list for the identity).
    `keras_gradnets.finalize` puts copies of them in place of this layer.

    Args:
        g: Float in [0, 1]. Initial mixing weight. Defaults to `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    def __init__(self, g=0.0, **kwargs):
        super().__init__(**kwargs)
        self.g = add_unit_interval_weight(self, "g", g)

    def blend(self, early, late):
        """Returns `(1 - g) * early + g * late`, exact at `g` in {0, 1}."""
        g = ops.cast(self.g, early.dtype)
        return (1 - g) * early + g * late

    def early_layers(self):
        """Plain Keras layers equal to this layer at `g=0`."""
        raise NotImplementedError

    def late_layers(self):
        """Plain Keras layers equal to this layer at `g=1`."""
        raise NotImplementedError

    def finalized_layers(self):
        """Plain Keras layers equal to this layer at its current `g`.

        Returns:
            `early_layers()` at `g=0`, `late_layers()` at `g=1`.

        Raises:
            ValueError: if `g` is strictly between 0 and 1.
        """
        g = g_value(self)
        if g == 0:
            return self.early_layers()
        if g == 1:
            return self.late_layers()
        raise ValueError(
            f"Layer '{self.name}' ({self.__class__.__name__}) has g={g}, "
            "between its early (g=0) and late (g=1) components, so no plain "
            "Keras layer equals it. Train until the schedule reaches g=1, or "
            "set `layer.g.assign(1.0)`, before finalizing."
        )

    def get_config(self):
        return {**super().get_config(), "g": g_value(self)}


def g_value(layer):
    """Returns the current `g` of `layer` as a Python float."""
    return scalar_value(layer.g)
