"""Gradual pooling: mean pooling -> max pooling."""

import keras

from keras_gradnets.gradnets.gradual_layer import GradualLayer
from keras_gradnets.gradnets.gradual_layer import class_doc


class BaseGradualPooling(GradualLayer):
    """Blends mean pooling (`g=0`) into max pooling (`g=1`).

    Almeida & Sauder, section 3.4: max pooling passes gradient to one unit
    per window, which hurts early in training when low-level features are
    not yet informative; mean pooling passes it to all of them.
    """

    mean_pool_class = None
    max_pool_class = None

    def __init__(
        self,
        pool_size=2,
        strides=None,
        padding="valid",
        data_format=None,
        g=0.0,
        **kwargs,
    ):
        super().__init__(g=g, **kwargs)
        pool_kwargs = {
            "pool_size": pool_size,
            "strides": strides,
            "padding": padding,
            "data_format": data_format,
        }
        self.mean_pool = self.mean_pool_class(
            **pool_kwargs, dtype=self.dtype_policy
        )
        self.max_pool = self.max_pool_class(
            **pool_kwargs, dtype=self.dtype_policy
        )

    def call(self, inputs):
        return self.blend(self.mean_pool(inputs), self.max_pool(inputs))

    def compute_output_shape(self, input_shape):
        return self.max_pool.compute_output_shape(input_shape)

    def early_layers(self):
        return [self.mean_pool]

    def late_layers(self):
        return [self.max_pool]

    def get_config(self):
        pool_config = self.max_pool.get_config()
        return {
            **super().get_config(),
            **{
                key: pool_config[key]
                for key in ("pool_size", "strides", "padding", "data_format")
            },
        }


_DOC_ARGS = """
    Args:
        pool_size: int or tuple, size of the pooling window.
        strides: int or tuple, or `None` (then `pool_size`).
        padding: `"valid"` or `"same"`. Defaults to `"valid"`.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()`.
        g: Float in [0, 1]. Initial mixing weight. Defaults to `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor, as for Keras's pooling layers.
"""


def _doc(rank, example):
    summary = f"""Gradual {rank}D pooling: `AveragePooling{rank}D` at `g=0`,
    `MaxPooling{rank}D` at `g=1`, `(1 - g) * mean_pool(x) + g * max_pool(x)`
    in between (Almeida & Sauder, section 3.4, Table 4, "Gradual Mean to
    Max").
"""
    return class_doc(summary, _DOC_ARGS, example)


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GradualPooling1D(BaseGradualPooling):
    __doc__ = _doc(
        1,
        """    >>> layer = keras_gradnets.layers.GradualPooling1D(2, g=0.5)
    >>> keras.ops.convert_to_numpy(layer(np.array([[[1.0], [3.0]]]))).tolist()
    [[[2.5]]]""",
    )
    mean_pool_class = keras.layers.AveragePooling1D
    max_pool_class = keras.layers.MaxPooling1D


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GradualPooling2D(BaseGradualPooling):
    __doc__ = _doc(
        2,
        """    >>> layer = keras_gradnets.layers.GradualPooling2D((2, 2), g=1.0)
    >>> tuple(layer(np.arange(16.0).reshape(1, 4, 4, 1)).shape)
    (1, 2, 2, 1)""",
    )
    mean_pool_class = keras.layers.AveragePooling2D
    max_pool_class = keras.layers.MaxPooling2D
