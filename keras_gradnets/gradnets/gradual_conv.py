"""Gradual convolution: identity -> shape-preserving convolution."""

import keras

from keras_gradnets.core.checks import check_sizes
from keras_gradnets.gradnets.gradual_layer import GradualLayer
from keras_gradnets.gradnets.gradual_layer import class_doc


class BaseGradualConv(GradualLayer):
    """Blends the identity (`g=0`) into a convolution (`g=1`).

    The convolution keeps the input's shape: `"same"` padding, stride 1 and
    as many filters as the input has channels, which it learns at build
    time (Almeida & Sauder, section 3.6: adding depth progressively).
    """

    def __init__(
        self,
        rank,
        kernel_size,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        data_format=None,
        g=0.0,
        **kwargs,
    ):
        super().__init__(g=g, **kwargs)
        self.rank = rank
        keras.activations.get(activation)
        self.conv_config = {
            "kernel_size": check_sizes("kernel_size", kernel_size, rank),
            "dilation_rate": check_sizes("dilation_rate", dilation_rate, rank),
            "activation": activation,
            "use_bias": use_bias,
            "kernel_initializer": kernel_initializer,
            "bias_initializer": bias_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "kernel_constraint": kernel_constraint,
            "bias_constraint": bias_constraint,
            "data_format": data_format,
        }
        self.conv = None

    def build(self, input_shape):
        conv_cls = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D}[self.rank]
        data_format = self.conv_config["data_format"] or (
            keras.config.image_data_format()
        )
        channels = input_shape[1 if data_format == "channels_first" else -1]
        if channels is None:
            raise ValueError(
                f"Layer '{self.name}' needs a known number of input channels. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.conv = conv_cls(
            filters=channels,
            padding="same",
            dtype=self.dtype_policy,
            **self.conv_config,
        )
        self.conv.build(input_shape)

    def call(self, inputs):
        return self.blend(inputs, self.conv(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def early_layers(self):
        return []

    def late_layers(self):
        return [self.conv]

    def get_config(self):
        config = dict(self.conv_config)
        config["activation"] = keras.activations.serialize(
            keras.activations.get(config["activation"])
        )
        for key in ("kernel_initializer", "bias_initializer"):
            config[key] = keras.initializers.serialize(
                keras.initializers.get(config[key])
            )
        for key in ("kernel_regularizer", "bias_regularizer"):
            config[key] = keras.regularizers.serialize(
                keras.regularizers.get(config[key])
            )
        for key in ("kernel_constraint", "bias_constraint"):
            config[key] = keras.constraints.serialize(
                keras.constraints.get(config[key])
            )
        return {**super().get_config(), **config}


_DOC_ARGS = """
    Args:
        kernel_size: int or tuple, size of the convolution window.
        dilation_rate: int or tuple, dilation rate. Defaults to `1`.
        activation: Activation of the convolution. Defaults to `None`.
        use_bias: Whether the convolution has a bias. Defaults to `True`.
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, kernel_constraint, bias_constraint: As for Keras's
            convolution layers.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()`.
        g: Float in [0, 1]. Initial mixing weight. Defaults to `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor, as for Keras's convolution layers.
"""


def _doc(rank, example):
    summary = f"""Gradual {rank}D convolution: identity at `g=0`, a
    shape-preserving `Conv{rank}D` at `g=1`: `(1 - g) * x + g * conv(x)`
    (Almeida & Sauder, section 3.6, Table 6, "Gradual Conv"). The
    convolution uses `"same"` padding, stride 1 and as many filters as the
    input has channels.
"""
    return class_doc(summary, _DOC_ARGS, example)


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GradualConv1D(BaseGradualConv):
    __doc__ = _doc(
        1,
        """    >>> layer = keras_gradnets.layers.GradualConv1D(3)
    >>> tuple(layer(np.ones((2, 10, 8))).shape)
    (2, 10, 8)""",
    )

    def __init__(self, kernel_size, **kwargs):
        super().__init__(1, kernel_size, **kwargs)


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GradualConv2D(BaseGradualConv):
    __doc__ = _doc(
        2,
        """    >>> layer = keras_gradnets.layers.GradualConv2D(3)
    >>> tuple(layer(np.ones((2, 8, 8, 16))).shape)
    (2, 8, 8, 16)""",
    )

    def __init__(self, kernel_size, **kwargs):
        super().__init__(2, kernel_size, **kwargs)
