"""Gradual batch normalization: batch normalization -> identity."""

import keras

from keras_gradnets.gradnets.gradual_layer import GradualLayer

_BASE_LAYER_KEYS = ("name", "dtype", "trainable")


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GradualBatchNormalization(GradualLayer):
    """Gradual batch normalization: `BatchNormalization` at `g=0`, identity at
    `g=1`.

    Computes `(1 - g) * batch_norm(x) + g * x` (Almeida & Sauder, section
    3.5): training starts with the convergence benefits of batch
    normalization and ends with a network that needs no batch statistics at
    test time. At `g=1` the output is the input, whatever the moving
    statistics hold, and `keras_gradnets.finalize` removes the layer.

    Args:
        g: Float in [0, 1]. Initial mixing weight. Defaults to `0.0`.
        **kwargs: Any argument of `keras.layers.BatchNormalization` (`axis`,
            `momentum`, `epsilon`, `center`, `scale`, initializers,
            regularizers, constraints, `synchronized`) and the base layer
            keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor of any rank.
        training: Python boolean: whether to normalize with the statistics of
            the batch (and update the moving ones) or with the moving ones.
        mask: Optional mask, as for `keras.layers.BatchNormalization`.

    Example:

    ```python
    >>> layer = keras_gradnets.layers.GradualBatchNormalization(momentum=0.9)
    >>> model = keras.Sequential([
    ...     keras.Input((16,)),
    ...     keras.layers.Dense(32),
    ...     layer,
    ...     keras.layers.ReLU(),
    ... ])

    ```
    """

    def __init__(self, g=0.0, **kwargs):
        base_kwargs = {
            key: kwargs.pop(key) for key in _BASE_LAYER_KEYS if key in kwargs
        }
        super().__init__(g=g, **base_kwargs)
        self.batch_norm = keras.layers.BatchNormalization(
            dtype=self.dtype_policy, **kwargs
        )
        self.supports_masking = True

    def build(self, input_shape):
        self.batch_norm.build(input_shape)

    def call(self, inputs, training=None, mask=None):
        normalized = self.batch_norm(inputs, training=training, mask=mask)
        return self.blend(normalized, inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def early_layers(self):
        return [self.batch_norm]

    def late_layers(self):
        return []

    def get_config(self):
        batch_norm_config = {
            key: value
            for key, value in self.batch_norm.get_config().items()
            if key not in _BASE_LAYER_KEYS
        }
        return {**super().get_config(), **batch_norm_config}
