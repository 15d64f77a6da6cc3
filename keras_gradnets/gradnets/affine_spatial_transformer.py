"""An affine spatial transformer with a differentiable bilinear sampler."""

import keras
import numpy as np
from keras import ops

from keras_gradnets.core.checks import check_sizes

IDENTITY = np.array([1, 0, 0, 0, 1, 0], "float32")


def with_localization(config):
    """`config` with its serialized `localization` network deserialized."""
    return {
        **config,
        "localization": keras.saving.deserialize_keras_object(
            config["localization"]
        ),
    }


def _axis(size):
    """Normalized coordinates in [-1, 1] of `size` pixel centres."""
    if size == 1:
        return np.zeros((1,), "float32")
    return np.linspace(-1, 1, size, dtype="float32")


def bilinear_sample(images, theta, output_size):
    """Samples `images` at the affine grid `theta`, bilinearly.

    Jaderberg et al., Eqns 1 and 5: each output pixel at normalized
    coordinates `(x_t, y_t)` in [-1, 1] (corners at the corner pixels'
    centres) reads the input at `theta @ (x_t, y_t, 1)`, interpolated
    between the 4 nearest pixels; points outside the image read 0. The
    gradient reaches `theta` through the interpolation weights.

    Args:
        images: Tensor `(batch, height, width, channels)`.
        theta: Tensor `(batch, 6)`, the rows of the 2 x 3 affine matrices.
        output_size: `(height, width)` of the result.

    Returns:
        Tensor `(batch, output_height, output_width, channels)`.
    """
    batch = ops.shape(images)[0]
    height, width, channels = images.shape[1:]
    out_h, out_w = output_size
    grid_y, grid_x = np.meshgrid(_axis(out_h), _axis(out_w), indexing="ij")
    grid = np.stack(
        [grid_x.ravel(), grid_y.ravel(), np.ones(out_h * out_w, "float32")]
    )
    theta = ops.reshape(ops.cast(theta, "float32"), (-1, 2, 3))
    source = ops.matmul(theta, ops.convert_to_tensor(grid))
    x = (source[:, 0] + 1) * (width - 1) / 2
    y = (source[:, 1] + 1) * (height - 1) / 2
    x0, y0 = ops.floor(x), ops.floor(y)
    flat = ops.reshape(images, (batch, height * width, channels))

    def read(ix, iy):
        inside = (ix >= 0) & (ix <= width - 1) & (iy >= 0) & (iy <= height - 1)
        index = ops.cast(
            ops.clip(iy, 0, height - 1) * width + ops.clip(ix, 0, width - 1),
            "int32",
        )
        values = ops.take_along_axis(
            flat,
            ops.broadcast_to(
                index[..., None], (batch, out_h * out_w, channels)
            ),
            axis=1,
        )
        return values * ops.cast(inside, values.dtype)[..., None]

    wx1, wy1 = x - x0, y - y0
    wx0, wy0 = 1 - wx1, 1 - wy1
    dtype = images.dtype
    result = (
        read(x0, y0) * ops.cast(wx0 * wy0, dtype)[..., None]
        + read(x0 + 1, y0) * ops.cast(wx1 * wy0, dtype)[..., None]
        + read(x0, y0 + 1) * ops.cast(wx0 * wy1, dtype)[..., None]
        + read(x0 + 1, y0 + 1) * ops.cast(wx1 * wy1, dtype)[..., None]
    )
    return ops.reshape(result, (batch, out_h, out_w, channels))


@keras.saving.register_keras_serializable(package="keras_gradnets")
class AffineSpatialTransformer(keras.layers.Layer):
    """An affine spatial transformer: a learned glimpse of its input.

    Jaderberg et al., "Spatial Transformer Networks": the `localization`
    network reads the image and outputs the 6 parameters of an affine
    transform `theta`; the layer samples the image bilinearly on the
    transformed grid (`output_size` pixels) with a sampler written in
    `keras.ops`, so the gradient reaches `theta` and the localization
    network (`keras.ops.image.affine_transform` passes none to the
    transform). When the layer is built, the localization network's last
    layer, a `Dense(6)`, starts at the identity transform (zero kernel,
    bias `[1, 0, 0, 0, 1, 0]`), as Jaderberg et al. recommend: at first the
    layer resizes the whole image to `output_size`.

    Coordinates are normalized to [-1, 1] with the corners at the corner
    pixels' centres, so at the identity with `output_size` equal to the
    input size the output is the input. Points outside the input read 0.
    Images are channels-last.

    Args:
        output_size: Tuple of two positive integers, `(height, width)` of
            the output.
        localization: A Keras layer or model from the input images to 6
            values, whose last layer is a `Dense(6)` with a bias.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Images `(batch, height, width, channels)`.
        training: Python boolean, passed to the localization network.

    Example:

    ```python
    localization = keras.Sequential([
        keras.layers.Conv2D(20, 5, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(50, activation="relu"),
        keras.layers.Dense(6),
    ])
    glimpse = keras_gradnets.layers.AffineSpatialTransformer(
        (20, 20), localization)(keras.Input((60, 60, 1)))
    ```
    """

    def __init__(self, output_size, localization, **kwargs):
        super().__init__(**kwargs)
        self.output_size = check_sizes(
            "output_size", output_size, 2, scalar=False
        )
        if not isinstance(localization, keras.layers.Layer):
            raise ValueError(
                "Invalid value received for argument `localization`. Expected "
                "a Keras layer or model that outputs 6 values. Received: "
                f"localization={localization!r}"
            )
        self.localization = localization

    def _last_layer(self):
        layer = self.localization
        while isinstance(layer, keras.Model) and layer.layers:
            layer = layer.layers[-1]
        return layer

    def build(self, input_shape):
        if not self.localization.built:
            self.localization.build(input_shape)
        spec = self.localization.compute_output_spec(
            keras.KerasTensor(input_shape, dtype=self.compute_dtype)
        )
        last = self._last_layer()
        if tuple(spec.shape[1:]) != (6,) or not (
            isinstance(last, keras.layers.Dense) and last.use_bias
        ):
            raise ValueError(
                "Invalid value received for argument `localization`. Expected "
                "a network that ends in a `Dense(6)` with a bias (the 6 "
                "affine parameters). Received: a network whose output shape "
                f"is {tuple(spec.shape)}, ending in '{last.name}' "
                f"({last.__class__.__name__})."
            )
        last.kernel.assign(ops.zeros(last.kernel.shape))
        last.bias.assign(IDENTITY)

    def call(self, inputs, training=None):
        theta = self.localization(inputs, training=training)
        return bilinear_sample(inputs, theta, self.output_size)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "output_size": self.output_size,
            "localization": keras.saving.serialize_keras_object(
                self.localization
            ),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**with_localization(config))
