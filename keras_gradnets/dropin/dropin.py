"""DropIn: take each unit from the new layers or from the skip path."""

import keras
from keras import ops

from keras_gradnets.core.checks import check_choice
from keras_gradnets.core.checks import check_number
from keras_gradnets.core.finalize import require_end_point
from keras_gradnets.core.noise import noise_shape_for
from keras_gradnets.core.noise import select
from keras_gradnets.core.noise import uniform
from keras_gradnets.core.state import StatefulLayer

MODES = ("gradual", "regularizing")


@keras.saving.register_keras_serializable(package="keras_gradnets")
class DropIn(StatefulLayer):
    """Takes each unit from the new layers' output or from the skip path.

    Smith, Hand & Doster, "Gradual DropIn of Layers to Train Very Deep
    Neural Networks": called on `[skip, new]` (the output of the layers
    before the new ones, and the output of the new layers, of the same
    shape), each unit in a training step is taken from `new` with
    probability `q` and from `skip` otherwise, in the forward and so in the
    backward pass: the new layers' weights are trained only through the
    units taken from them.

    * `mode="gradual"`: `q = g`, the layer's declared state (a float32 in
      [0, 1]), which `keras_gradnets.callbacks.DropInScheduler` raises from
      0 to 1 over the paper's dropin length. At `g=0` the new layers are
      skipped; at `g=1` the layer is the new layers.
    * `mode="regularizing"`: `q = 1 - rate`, fixed: like dropout, but a
      dropped unit takes the skip path's value instead of zero. `g` is not
      used.

    Units are chosen independently per element, or per slice along the
    axes that `noise_shape` sets to 1 (as in `keras.layers.Dropout`; for
    example `(None, 1, 1, None)` chooses whole channels of an image).

    At inference the layer outputs the expectation,
    `(1 - q) * skip + q * new`. At `q=0` it is `skip` exactly and at `q=1`
    `new` exactly, in training and at inference.

    `keras_gradnets.finalize` replaces a gradual DropIn at `g=1` by its new
    path (the skip branch, and any `Resize` on it, leave the model when
    nothing else reads them) and at `g=0` by its skip path; a regularizing
    DropIn by plain Keras layers computing its inference output.

    Args:
        mode: `"gradual"` or `"regularizing"`. Defaults to `"gradual"`.
        rate: Float in [0, 1), the share of units taken from `skip` in
            regularizing mode. Not accepted in gradual mode.
        noise_shape: 1D integer tuple, the shape of the choice, broadcast to
            the inputs; `None` entries take the input's size. Defaults to
            `None` (one choice per element).
        seed: Integer, the random seed. Defaults to `None`.
        g: Float in [0, 1], the initial share of `new` in gradual mode.
            Defaults to `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: List `[skip, new]` of two tensors of the same shape.
        training: Python boolean: choose units at random (training) or use
            the expectation (inference).

    Example:

    ```python
    inputs = keras.Input((64,))
    h = keras.layers.Dense(64, activation="relu")(inputs)
    new = keras.layers.Dense(64, activation="relu")(h)
    new = keras.layers.Dense(64, activation="relu")(new)
    h = keras_gradnets.layers.DropIn()([h, new])     # skip at first
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.fit(x, y, epochs=10, callbacks=[
        keras_gradnets.callbacks.DropInScheduler(dropin_length=1000)])
    ```
    """

    state_ranges = {"g": (0, 1)}

    def __init__(
        self,
        mode="gradual",
        rate=None,
        noise_shape=None,
        seed=None,
        g=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mode = check_choice("mode", mode, MODES)
        if mode == "gradual" and rate is not None:
            raise ValueError(
                "Invalid value received for argument `rate`: it sets the "
                "fixed share of skipped units of mode='regularizing'; in "
                "mode='gradual' the share follows `g`. Received: "
                f"mode='gradual', rate={rate!r}"
            )
        if mode == "regularizing":
            rate = float(
                check_number("rate", rate, low=0, high=1, high_open=True)
            )
        self.rate = rate
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.g = self.add_state("g", g)

    def build(self, input_shape):
        skip_shape, new_shape = (tuple(shape) for shape in input_shape)
        if skip_shape != new_shape:
            raise ValueError(
                f"Layer '{self.name}' (DropIn) needs `[skip, new]` of the "
                f"same shape. Received: shapes {skip_shape} and {new_shape}. "
                "Put a `keras_gradnets.layers.Resize(height, width, "
                "channels)` on the skip path to match the new layers."
            )
        self.unit_shape = skip_shape[1:]

    def _new_share(self, dtype):
        """`q`, the probability of taking a unit from `new`."""
        if self.mode == "regularizing":
            return ops.convert_to_tensor(1 - self.rate, dtype)
        return ops.cast(self.g, dtype)

    def call(self, inputs, training=None):
        skip, new = inputs
        share = self._new_share(new.dtype)
        if training:
            noise = uniform(
                noise_shape_for(new, self.noise_shape), self.seed_generator
            )
            return select(noise < ops.cast(share, noise.dtype), new, skip)
        return (1 - share) * skip + share * new

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def finalized_layers(self):
        """Plain Keras layers equal to this layer at inference.

        Returns:
            `[]` (an identity on one input, see `finalized_input`) for a
            gradual DropIn at `g=0` or `g=1`; for a regularizing DropIn, a
            functional model of two inputs computing
            `rate * skip + (1 - rate) * new`.

        Raises:
            ValueError: for a gradual DropIn strictly between `g=0` and
                `g=1`.
        """
        if self.mode == "gradual":
            require_end_point(
                self,
                "g",
                (0, 1),
                "Train until DropInScheduler reaches g=1 (the new layers), "
                "or set `layer.g.assign(1.0)`, before finalizing.",
            )
            return []
        share = 1 - self.rate
        skip, new = keras.Input(self.unit_shape), keras.Input(self.unit_shape)
        outputs = keras.layers.Add()(
            [
                keras.layers.Rescaling(1 - share)(skip),
                keras.layers.Rescaling(share)(new),
            ]
        )
        return [keras.Model([skip, new], outputs, name=self.name)]

    def finalized_input(self):
        """The input the finalized layers read: `new` at `g=1`, `skip` at
        `g=0`, both (`None`) in regularizing mode."""
        if self.mode == "regularizing":
            return None
        return 1 if self.state_value("g") == 1 else 0

    def get_config(self):
        return {
            **super().get_config(),
            "mode": self.mode,
            "rate": self.rate,
            "noise_shape": self.noise_shape,
            "seed": self.seed,
            "g": self.state_value("g"),
        }
