"""Resize: the parameter-free reshaping of a skip path for DropIn."""

import keras
from keras import ops

from keras_gradnets.core.checks import check_choice
from keras_gradnets.core.checks import check_number

INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "lanczos3", "lanczos5")


@keras.saving.register_keras_serializable(package="keras_gradnets")
class Resize(keras.layers.Layer):
    """Resizes a tensor to a given height, width and number of channels.

    The Resize layer of Smith, Hand & Doster (DropIn needs its two inputs
    at the same size): it has no parameters. Images (4D inputs) are resized
    spatially with `keras.ops.image.resize` to `height` and `width`;
    channels (the last axis, or the features of 2D inputs) are cropped to
    `channels` or padded with zeros up to it. Sizes left `None` are kept.

    Args:
        height: Positive integer or `None`, the output height (images).
        width: Positive integer or `None`, the output width (images).
        channels: Positive integer or `None`, the number of channels (or
            features) of the output.
        interpolation: The spatial interpolation, one of `"bilinear"`,
            `"nearest"`, `"bicubic"`, `"lanczos3"`, `"lanczos5"`. Defaults
            to `"bilinear"`.
        data_format: `"channels_last"` or `"channels_first"`, for images.
            Defaults to `keras.config.image_data_format()`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: A 2D `(batch, features)` or 4D image tensor.

    Example:

    ```python
    >>> skip = np.ones((2, 16, 16, 8))
    >>> tuple(keras_gradnets.layers.Resize(8, 8, channels=16)(skip).shape)
    (2, 8, 8, 16)

    ```
    """

    def __init__(
        self,
        height=None,
        width=None,
        channels=None,
        interpolation="bilinear",
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("height", height),
            ("width", width),
            ("channels", channels),
        ):
            if value is not None:
                check_number(name, value, low=1, integer=True)
        if height is None and width is None and channels is None:
            raise ValueError(
                "Resize needs at least one of the arguments `height`, "
                "`width` and `channels`. Received: height=None, width=None, "
                "channels=None"
            )
        self.height, self.width, self.channels = height, width, channels
        self.interpolation = check_choice(
            "interpolation", interpolation, INTERPOLATIONS
        )
        self.data_format = data_format or keras.config.image_data_format()

    def _channel_axis(self, rank):
        if rank == 4 and self.data_format == "channels_first":
            return 1
        return rank - 1

    def build(self, input_shape):
        rank = len(input_shape)
        if rank not in (2, 4) or (rank == 2 and (self.height or self.width)):
            raise ValueError(
                f"Layer '{self.name}' (Resize) resizes 2D inputs (features, "
                "with `channels`) and 4D images. Received: input_shape="
                f"{tuple(input_shape)} with height={self.height}, "
                f"width={self.width}, channels={self.channels}"
            )

    def call(self, inputs):
        rank = len(inputs.shape)
        if rank == 4 and (self.height or self.width):
            spatial = (2, 3) if self.data_format == "channels_first" else (1, 2)
            size = (
                self.height or inputs.shape[spatial[0]],
                self.width or inputs.shape[spatial[1]],
            )
            inputs = ops.image.resize(
                inputs,
                size,
                interpolation=self.interpolation,
                data_format=self.data_format,
            )
        if self.channels is None:
            return inputs
        axis = self._channel_axis(rank)
        missing = self.channels - inputs.shape[axis]
        if missing < 0:
            return ops.take(inputs, ops.arange(self.channels), axis=axis)
        if missing > 0:
            padding = [(0, 0)] * rank
            padding[axis] = (0, missing)
            return ops.pad(inputs, padding)
        return inputs

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        rank = len(shape)
        if rank == 4:
            spatial = (2, 3) if self.data_format == "channels_first" else (1, 2)
            shape[spatial[0]] = self.height or shape[spatial[0]]
            shape[spatial[1]] = self.width or shape[spatial[1]]
        if self.channels is not None:
            shape[self._channel_axis(rank)] = self.channels
        return tuple(shape)

    def get_config(self):
        return {
            **super().get_config(),
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "interpolation": self.interpolation,
            "data_format": self.data_format,
        }
