"""Gradual ReLUs: identity (or absolute value) -> ReLU."""

import keras
from keras import ops

from keras_gradnets.gradnets.gradual_layer import GradualLayer


def _leaky(x, slope):
    """Leaky ReLU with a variable negative `slope` (any slope <= 1).

    Measured by `benchmarks/overhead.py`: torch runs layers eagerly, so the
    slope is read as a Python float and the fused `leaky_relu` kernel runs
    (about 1.01x a `LeakyReLU`; a tensor-slope formula costs 1.13x-1.38x).
    On TensorFlow and JAX, whose compiled steps need a tensor slope,
    `relu(x) * (1 - slope) + slope * x` was the fastest of the forms tried
    (max, where, custom gradients) and is exact at slope 0 and 1.
    """
    if keras.backend.backend() == "torch":
        return ops.leaky_relu(
            x, negative_slope=float(ops.convert_to_numpy(slope))
        )
    slope = ops.cast(slope, x.dtype)
    return ops.relu(x) * (1 - slope) + slope * x


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GReLU(GradualLayer):
    """Gradual ReLU: identity at `g=0`, ReLU at `g=1`.

    The blend `(1 - g) * x + g * relu(x)` is computed as a leaky ReLU whose
    negative slope is `1 - g` (Almeida & Sauder, section 3.2: "equivalent to
    interpolate the slope of the negative part of leaky ReLUs resulting in a
    technique with no overhead"):

    ```python
    f(x) = x              if x >= 0
    f(x) = (1 - g) * x    if x < 0
    ```

    Args:
        g: Float in [0, 1]. Initial mixing weight. Defaults to `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor of any shape.

    Example:

    >>> layer = keras_gradnets.layers.GReLU(g=0.75)
    >>> layer(np.array([-4.0, -1.0, 0.0, 2.0]))
    [-1.0, -0.25, 0.0, 2.0]
    """

    def negative_slope(self):
        """The current slope of the negative part, `1 - g`."""
        return 1 - self.g

    def call(self, inputs):
        return _leaky(inputs, self.negative_slope())

    def compute_output_shape(self, input_shape):
        return input_shape

    def early_layers(self):
        return [keras.layers.Identity()]

    def late_layers(self):
        return [keras.layers.ReLU()]


@keras.saving.register_keras_serializable(package="keras_gradnets")
class InverseGReLU(GReLU):
    """Inverse gradual ReLU: absolute value at `g=0`, ReLU at `g=1`.

    The blend `(1 - g) * |x| + g * relu(x)` is a leaky ReLU whose negative
    slope goes from -1 to 0: `-(1 - g)` (Almeida & Sauder, section 3.2,
    Table 2, "Inverse GReLU"). Arguments and call arguments are those of
    `GReLU`.

    Example:

    >>> layer = keras_gradnets.layers.InverseGReLU(g=0.5)
    >>> layer(np.array([-4.0, 0.0, 2.0]))
    [2.0, 0.0, 2.0]
    """

    def negative_slope(self):
        """The current slope of the negative part, `-(1 - g)`."""
        return self.g - 1

    def early_layers(self):
        raise ValueError(
            f"Layer '{self.name}' (InverseGReLU) is at g=0, an absolute "
            "value, which no built-in Keras layer computes. Train until g=1 "
            "before calling `keras_gradnets.finalize`, or keep this layer."
        )
