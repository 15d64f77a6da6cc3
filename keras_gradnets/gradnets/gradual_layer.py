"""The base class of layers that blend an early and a late component."""

from keras import ops

from keras_gradnets.core.finalize import require_end_point
from keras_gradnets.core.state import StatefulLayer


class GradualLayer(StatefulLayer):
    """Base class of a GradNets layer: `(1 - g) * early(x) + g * late(x)`.

    The mixing weight `g` is the layer's declared state (`state_ranges`):
    a non-trainable float32 scalar variable (`layer.g`) in [0, 1]. `g=0`
    gives the early (easy) component and `g=1` the late (expressive) one
    (Almeida & Sauder, section 2). `keras_gradnets.callbacks.GradNetScheduler`
    moves it during `fit`; it drives `GradualLayer`s only.

    Subclasses implement `call` (usually with `self.blend(early, late)`) and
    `early_layers()` / `late_layers()`: the plain Keras layers equal to this
    layer at `g=0` and at `g=1` (an empty list for the identity). Through
    `finalized_layers()` (the finalize protocol),
    `keras_gradnets.finalize` puts copies of them in place of this layer.

    Args:
        g: Float in [0, 1]. Initial mixing weight. Defaults to `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    state_ranges = {"g": (0, 1)}

    def __init__(self, g=0.0, **kwargs):
        super().__init__(**kwargs)
        self.g = self.add_state("g", g)

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
            ValueError: if `g` is strictly between 0 and 1, or not a number
                in [0, 1] at all.
        """
        g = require_end_point(
            self,
            "g",
            (0.0, 1.0),
            "Train until the schedule reaches g=1, or set "
            "`layer.g.assign(1.0)`, before finalizing.",
        )
        return self.early_layers() if g == 0 else self.late_layers()

    def get_config(self):
        return {**super().get_config(), "g": self.state_value("g")}


def class_doc(summary, args, example):
    """A layer class's docstring from its summary, Args and example."""
    return (
        f"{summary}{args}\n    Example:\n\n    ```python\n{example}\n\n"
        "    ```\n    "
    )
