"""Gradual network-in-network: convolution -> convolution + 1x1 convolution."""

import keras

from keras_gradnets.gradnets.gradual_layer import GradualLayer


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GradualNiN2D(GradualLayer):
    """Gradual NiN: `Conv2D` at `g=0`, `Conv2D` then a 1x1 `Conv2D` at `g=1`.

    With `c = conv(x)`, computes `(1 - g) * c + g * conv_1x1(c)` (Almeida &
    Sauder, section 3.6, Table 6, "Gradual NiN"): the network starts as a
    plain convolutional one and gains the network-in-network 1x1 layers
    (Lin et al., 2013) during training.

    Args:
        filters: int, number of filters of both convolutions.
        kernel_size: int or tuple, window of the first convolution.
        strides: int or tuple, strides of the first convolution. Defaults to
            `1`.
        padding: `"valid"` or `"same"`, padding of the first convolution.
            Defaults to `"valid"`.
        activation: Activation of both convolutions. Defaults to `"relu"`,
            as in network-in-network; with `None` the 1x1 layer is linear.
        use_bias: Whether both convolutions have biases. Defaults to `True`.
        kernel_initializer: Initializer of both kernels. Defaults to
            `"glorot_uniform"`.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()`.
        g: Float in [0, 1]. Initial mixing weight. Defaults to `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: 4D input tensor.

    Example:

    ```python
    >>> layer = keras_gradnets.layers.GradualNiN2D(16, 3, padding="same")
    >>> tuple(layer(np.ones((2, 8, 8, 3))).shape)
    (2, 8, 8, 16)

    ```
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        activation="relu",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        data_format=None,
        g=0.0,
        **kwargs,
    ):
        super().__init__(g=g, **kwargs)
        common = {
            "filters": filters,
            "activation": activation,
            "use_bias": use_bias,
            "kernel_initializer": kernel_initializer,
            "data_format": data_format,
            "dtype": self.dtype_policy,
        }
        self.conv = keras.layers.Conv2D(
            kernel_size=kernel_size, strides=strides, padding=padding, **common
        )
        self.conv_1x1 = keras.layers.Conv2D(kernel_size=1, **common)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.conv_1x1.build(self.conv.compute_output_shape(input_shape))

    def call(self, inputs):
        features = self.conv(inputs)
        return self.blend(features, self.conv_1x1(features))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def early_layers(self):
        return [self.conv]

    def late_layers(self):
        return [self.conv, self.conv_1x1]

    def get_config(self):
        conv_config = self.conv.get_config()
        return {
            **super().get_config(),
            **{
                key: conv_config[key]
                for key in (
                    "filters",
                    "kernel_size",
                    "strides",
                    "padding",
                    "activation",
                    "use_bias",
                    "kernel_initializer",
                    "data_format",
                )
            },
        }
