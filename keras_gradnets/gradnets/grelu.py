"""Gradual ReLUs: identity (or absolute value) -> ReLU."""

import warnings

import keras
from keras import ops

from keras_gradnets.core.checks import check_number
from keras_gradnets.core.state import eager_value
from keras_gradnets.gradnets.gradual_layer import GradualLayer


def _leaky(x, slope):
    """Leaky ReLU with a tensor negative `slope`.

    Compiled steps (TensorFlow, JAX, torch's `jit_compile`) need a tensor
    slope: `relu(x) * (1 - slope) + slope * x` was the fastest of the forms
    tried (max, where, custom gradients) and is exact at slope 0 and 1.
    Torch runs layers eagerly, where the slope is known as a Python float
    (`keras_gradnets.core.state.eager_value`) and `GReLU.call` takes the
    fused `leaky_relu` kernel instead (measured by
    `benchmarks/overhead.py`).
    """
    slope = ops.cast(slope, x.dtype)
    return ops.relu(x) * (1 - slope) + slope * x


class _ReLUSlope(float):
    """The ReLU's `negative_slope`, a value as in `keras.layers.ReLU`.

    Up to 0.2, `GReLU.negative_slope` was a method returning the current
    slope; calling the value still does that, with a deprecation warning,
    for one release.
    """

    def __new__(cls, value, layer=None):
        slope = super().__new__(cls, value)
        slope.layer = layer
        return slope

    def __call__(self):
        warnings.warn(
            "`GReLU.negative_slope()` is deprecated and will be removed in "
            "0.4: `negative_slope` is now the ReLU's slope, a value as in "
            "`keras.layers.ReLU`. Call `current_negative_slope()` for the "
            "slope at the current `g`.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.layer.current_negative_slope()


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GReLU(GradualLayer):
    """Gradual ReLU: identity at `g=0`, ReLU at `g=1`.

    Computes `(1 - g) * x + g * relu(x)` (Almeida & Sauder, section 3.2).
    For the plain ReLU this is a leaky ReLU whose negative slope is `1 - g`
    ("equivalent to interpolate the slope of the negative part of leaky
    ReLUs resulting in a technique with no overhead"):

    ```python
    f(x) = x              if x >= 0
    f(x) = (1 - g) * x    if x < 0
    ```

    The arguments of `keras.layers.ReLU` (`max_value`, `negative_slope`,
    `threshold`) choose the ReLU reached at `g=1`, such as MobileNet's
    `ReLU(max_value=6)`; `keras_gradnets.finalize` gives back that `ReLU`
    at `g=1` and removes the layer at `g=0`. They are attributes too, as in
    `keras.layers.ReLU`; `current_negative_slope()` is the slope at the
    current `g`.

    Args:
        max_value: Float >= 0 or `None`, the ReLU's maximum. Defaults to
            `None` (unbounded).
        negative_slope: Float >= 0, the ReLU's slope below `threshold`.
            Defaults to `0.0`.
        threshold: Float >= 0, the ReLU's threshold. Defaults to `0.0`.
        g: Float in [0, 1]. Initial mixing weight. Defaults to `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor of any shape.

    Example:

    ```python
    >>> layer = keras_gradnets.layers.GReLU(g=0.75)
    >>> y = layer(np.array([-4.0, -1.0, 0.0, 2.0]))
    >>> keras.ops.convert_to_numpy(y).tolist()
    [-1.0, -0.25, 0.0, 2.0]

    ```
    """

    def __init__(
        self, max_value=None, negative_slope=0.0, threshold=0.0, g=0.0, **kwargs
    ):
        super().__init__(g=g, **kwargs)
        if max_value is not None:
            max_value = float(check_number("max_value", max_value, low=0))
        self.max_value = max_value
        self.negative_slope = _ReLUSlope(
            check_number("negative_slope", negative_slope, low=0), self
        )
        self.threshold = float(check_number("threshold", threshold, low=0))

    def _leaky_form(self):
        """Whether the ReLU is leaky only (no maximum, no threshold)."""
        return self.max_value is None and self.threshold == 0

    def current_negative_slope(self):
        """The slope of the negative part at the current `g`, as a float:
        `1 - g * (1 - a)` for a ReLU of negative slope `a` (`1 - g` for the
        plain ReLU)."""
        return float(self._slope(self.state_value("g")))

    def _slope(self, g):
        return 1 - g * (1 - self.negative_slope)

    def call(self, inputs):
        if self._leaky_form():
            g = eager_value(self.g)
            if g is not None:
                return ops.leaky_relu(inputs, negative_slope=self._slope(g))
            return _leaky(inputs, self._slope(self.g))
        relu = keras.activations.relu(
            inputs,
            negative_slope=float(self.negative_slope),
            max_value=self.max_value,
            threshold=self.threshold,
        )
        return self.blend(inputs, relu)

    def compute_output_shape(self, input_shape):
        return input_shape

    def early_layers(self):
        return []

    def late_layers(self):
        return [
            keras.layers.ReLU(
                max_value=self.max_value,
                negative_slope=float(self.negative_slope),
                threshold=self.threshold,
            )
        ]

    def get_config(self):
        return {
            **super().get_config(),
            "max_value": self.max_value,
            "negative_slope": float(self.negative_slope),
            "threshold": self.threshold,
        }


@keras.saving.register_keras_serializable(package="keras_gradnets")
class InverseGReLU(GReLU):
    """Inverse gradual ReLU: absolute value at `g=0`, ReLU at `g=1`.

    The blend `(1 - g) * |x| + g * relu(x)` is a leaky ReLU whose negative
    slope goes from -1 to 0: `-(1 - g)` (Almeida & Sauder, section 3.2,
    Table 2, "Inverse GReLU"). It reaches the plain ReLU only.

    Args:
        g: Float in [0, 1]. Initial mixing weight. Defaults to `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor of any shape.

    Example:

    ```python
    >>> layer = keras_gradnets.layers.InverseGReLU(g=0.5)
    >>> keras.ops.convert_to_numpy(layer(np.array([-4.0, 0.0, 2.0]))).tolist()
    [2.0, 0.0, 2.0]

    ```
    """

    def __init__(self, g=0.0, **kwargs):
        super().__init__(g=g, **kwargs)

    def current_negative_slope(self):
        """The slope of the negative part at the current `g`, `-(1 - g)`."""
        return float(self._slope(self.state_value("g")))

    def _slope(self, g):
        return g - 1

    def get_config(self):
        return GradualLayer.get_config(self)

    def early_layers(self):
        raise ValueError(
            f"Layer '{self.name}' (InverseGReLU) is at g=0, an absolute "
            "value, which no built-in Keras layer computes. Train until g=1 "
            "before calling `keras_gradnets.finalize`, or keep this layer."
        )
