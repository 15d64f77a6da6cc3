"""Gradual dropout: identity -> dropout."""

import keras
from keras import ops

from keras_gradnets.core.checks import check_number
from keras_gradnets.core.noise import noise_shape_for
from keras_gradnets.core.noise import uniform
from keras_gradnets.core.state import eager_value
from keras_gradnets.gradnets.gradual_layer import GradualLayer


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GradualDropout(GradualLayer):
    """Gradual dropout: identity at `g=0`, `Dropout(rate)` at `g=1`.

    During training each unit is dropped with probability `g * rate` and
    the kept ones are scaled by `1 / (1 - g * rate)`, so training starts
    without noise and ends at the full dropout rate (Almeida & Sauder,
    section 3.3: gradual dropout trains at rates where static dropout does
    not). At inference the layer is the identity, as `keras.layers.Dropout`.

    Args:
        rate: Float in [0, 1). Drop rate reached at `g=1`.
        noise_shape: 1D integer tuple, the shape of the binary dropout mask
            that is broadcast to the input (as in `keras.layers.Dropout`).
            `None` entries take the input's size. Defaults to `None`.
        seed: Integer, the random seed. Defaults to `None`.
        g: Float in [0, 1]. Initial mixing weight. Defaults to `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor of any shape.
        training: Python boolean: whether to drop units (training) or to
            return the input unchanged (inference).

    Example:

    ```python
    >>> layer = keras_gradnets.layers.GradualDropout(0.5, g=0.0)
    >>> x = np.ones((2, 4))
    >>> y = layer(x, training=True)  # g=0: nothing is dropped yet
    >>> keras.ops.convert_to_numpy(y).tolist()
    [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]

    ```
    """

    def __init__(self, rate, noise_shape=None, seed=None, g=0.0, **kwargs):
        super().__init__(g=g, **kwargs)
        self.rate = float(
            check_number("rate", rate, low=0, high=1, high_open=True)
        )
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        g = eager_value(self.g)
        if g is not None:
            # Torch runs layers eagerly: with a float rate, Keras's dropout
            # takes torch's fused kernel, as `keras.layers.Dropout` does.
            return keras.random.dropout(
                inputs,
                g * self.rate,
                noise_shape=self.noise_shape,
                seed=self.seed_generator,
            )
        keep = 1 - ops.cast(self.g, inputs.dtype) * self.rate
        noise = uniform(
            noise_shape_for(inputs, self.noise_shape), self.seed_generator
        )
        return ops.where(
            noise < ops.cast(keep, noise.dtype),
            inputs / keep,
            ops.zeros_like(inputs),
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def early_layers(self):
        return []

    def late_layers(self):
        return [
            keras.layers.Dropout(
                self.rate, noise_shape=self.noise_shape, seed=self.seed
            )
        ]

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "noise_shape": self.noise_shape,
            "seed": self.seed,
        }
