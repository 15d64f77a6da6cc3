"""2D convolution with a growing number of active filters."""

import keras
from keras import ops

from keras_gradnets.core.checks import check_sizes
from keras_gradnets.dynamic_capacity.dynamic_layer import DynamicLayer


@keras.saving.register_keras_serializable(package="keras_gradnets")
class DynamicConv2D(DynamicLayer):
    """2D convolution that uses and trains a growing part of its filters.

    The convolution counterpart of `DynamicDense`: `filters` is the full
    number of output channels, split into `chunks`; the first
    `active_units` channels are computed and the others are exactly zero,
    and the first `frozen_units` are frozen (thesis, sections 4.1-4.2 and
    Listing 4.1). When the input comes from another dynamic layer, only its
    active channels are convolved. See `DynamicDense` for growth,
    initialization and freezing.

    Args:
        filters: Positive integer, the full number of output channels.
        kernel_size: Integer or tuple of 2 integers.
        chunks: Positive integer, at most `filters`.
        initial_chunks: Integer in `[1, chunks]`. Defaults to 1.
        strides: Integer or tuple of 2 integers. Defaults to 1.
        padding: `"valid"` or `"same"`. Defaults to `"valid"`.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()`.
        dilation_rate: Integer or tuple of 2 integers. Defaults to 1.
        **kwargs: `activation`, `use_bias`, `growth_init`,
            `kernel_initializer`, `bias_initializer` and `seed` as in
            `DynamicDense`, and the base layer arguments.

    Call arguments:
        inputs: 4D tensor.
        training: Python boolean, whether the call is in training mode.

    Example:

    ```python
    conv = keras_gradnets.layers.DynamicConv2D(
        32, 3, chunks=4, padding="same", activation="relu")
    conv.active_units  # 8 of 32 filters
    ```
    """

    def __init__(
        self,
        filters,
        kernel_size,
        chunks,
        initial_chunks=1,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        **kwargs,
    ):
        super().__init__(filters, chunks, initial_chunks, **kwargs)
        self.kernel_size = check_sizes("kernel_size", kernel_size, 2)
        self.strides = check_sizes("strides", strides, 2)
        self.dilation_rate = check_sizes("dilation_rate", dilation_rate, 2)
        self.padding = padding
        if padding not in ("valid", "same"):
            raise ValueError(
                "Invalid value received for argument `padding`. Expected one "
                f"of ['same', 'valid']. Received: padding={padding!r}"
            )
        self.data_format = data_format or keras.config.image_data_format()

    @property
    def filters(self):
        return self.units

    def _channel_axis(self):
        return 1 if self.data_format == "channels_first" else -1

    def _input_dim(self, input_shape):
        return input_shape[self._channel_axis()]

    def _kernel_shape(self, input_dim, units):
        return self.kernel_size + (input_dim, units)

    def _slice_inputs(self, inputs, rows):
        if self.data_format == "channels_first":
            return inputs[:, :rows]
        return inputs[..., :rows]

    def _output_axis(self):
        return self._channel_axis()

    def _apply(self, inputs, kernel, bias):
        outputs = ops.conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )
        if bias is not None:
            shape = (1, -1, 1, 1) if self._channel_axis() == 1 else (-1,)
            outputs = ops.add(outputs, ops.reshape(bias, shape))
        return outputs

    def _built_input_shape(self):
        if self.data_format == "channels_first":
            return (None, self.input_dim, None, None)
        return (None, None, None, self.input_dim)

    def compute_output_shape(self, input_shape):
        return self._plain_layer(self.units).compute_output_shape(input_shape)

    def _plain_layer(self, units):
        return keras.layers.Conv2D(
            units,
            self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
            **self._plain_options(),
        )

    def get_config(self):
        config = super().get_config()
        config["filters"] = config.pop("units")
        config.update(
            {
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
            }
        )
        return config
