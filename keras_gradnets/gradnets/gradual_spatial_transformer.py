"""Gradual spatial transformer: mean-pool downsampling -> affine STN."""

import keras

from keras_gradnets.gradnets.affine_spatial_transformer import (
    AffineSpatialTransformer,
)
from keras_gradnets.gradnets.affine_spatial_transformer import with_localization
from keras_gradnets.gradnets.gradual_layer import GradualLayer


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GradualSpatialTransformer(GradualLayer):
    """Gradual spatial transformer: mean pooling at `g=0`, an affine
    spatial transformer at `g=1`.

    Almeida & Sauder, section 3.9: a spatial transformer trained from the
    start often diverges (the localization network sends the glimpse off
    the image or zooms in too far) because it learns before the classifier
    gives it a useful signal. This layer computes
    `(1 - g) * mean_pool(x) + g * stn(x)`: the classifier first learns on a
    plain downsample (an `AveragePooling2D` whose pool size is the input
    size over `output_size`), and the transformer
    (`AffineSpatialTransformer(output_size, localization)`, which starts at
    the identity) takes over as `GradNetScheduler` raises `g`.
    `keras_gradnets.finalize` gives the `AveragePooling2D` at `g=0` and the
    `AffineSpatialTransformer` at `g=1`.

    Args:
        output_size: Tuple of two positive integers, `(height, width)` of
            the output; the input's height and width must be multiples of
            them.
        localization: A Keras layer or model from the input images to 6
            values, whose last layer is a `Dense(6)` with a bias.
        g: Float in [0, 1]. Initial mixing weight. Defaults to `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Images `(batch, height, width, channels)`.
        training: Python boolean, passed to the localization network.

    Example:

    ```python
    inputs = keras.Input((60, 60, 1))
    glimpse = keras_gradnets.layers.GradualSpatialTransformer(
        (20, 20), localization)(inputs)       # 3x3 mean pool -> STN
    ...
    model.fit(x, y, epochs=20, callbacks=[
        keras_gradnets.callbacks.GradNetScheduler(tau=5)])
    ```
    """

    def __init__(self, output_size, localization, g=0.0, **kwargs):
        super().__init__(g=g, **kwargs)
        self.transformer = AffineSpatialTransformer(
            output_size, localization, dtype=self.dtype_policy
        )
        self.output_size = self.transformer.output_size

    def build(self, input_shape):
        height, width = input_shape[1:3]
        out_h, out_w = self.output_size
        if height is None or width is None or height % out_h or width % out_w:
            raise ValueError(
                f"Layer '{self.name}' (GradualSpatialTransformer) mean-pools "
                "its input down to `output_size`, so the input's height and "
                f"width must be multiples of output_size={self.output_size}. "
                f"Received: input_shape={input_shape}"
            )
        self.pool_size = (height // out_h, width // out_w)
        self.pool = keras.layers.AveragePooling2D(
            self.pool_size, dtype=self.dtype_policy
        )
        self.transformer.build(input_shape)

    def call(self, inputs, training=None):
        return self.blend(
            self.pool(inputs), self.transformer(inputs, training=training)
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[-1])

    def early_layers(self):
        return [keras.layers.AveragePooling2D(self.pool_size)]

    def late_layers(self):
        return [self.transformer]

    def get_config(self):
        config = self.transformer.get_config()
        return {
            **super().get_config(),
            "output_size": config["output_size"],
            "localization": config["localization"],
        }

    @classmethod
    def from_config(cls, config):
        return cls(**with_localization(config))
