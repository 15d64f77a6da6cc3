"""The generic GradNet blend of two layers."""

import copy

import keras

from keras_gradnets.gradnets.gradual_layer import GradualLayer


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GradNet(GradualLayer):
    """Blends two layers: `(1 - g) * early(x) + g * late(x)`.

    This is the GradNets component (Almeida & Sauder, section 2, Table 1):
    a weighted mean of an easy-to-optimize component and an expressive one,
    with `g` annealed from 0 to 1 during training by
    `keras_gradnets.callbacks.GradNetScheduler`. Any two layers (or
    `keras.Sequential` blocks) whose outputs have the same shape can be
    blended; both are always computed, so the layer costs what its two
    components cost.

    Args:
        early: A `keras.layers.Layer` (or model) used at `g=0`.
        late: A `keras.layers.Layer` (or model) used at `g=1`. Its output
            must have the shape of `early`'s output.
        g: Float in [0, 1]. Initial mixing weight. Defaults to `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor, passed to both components.
        training: Python boolean, passed to both components.

    Example:

    ```python
    >>> # Mean pooling that turns into a learned strided convolution.
    >>> layer = keras_gradnets.layers.GradNet(
    ...     early=keras.layers.AveragePooling2D(2),
    ...     late=keras.layers.Conv2D(8, 2, strides=2),
    ... )
    >>> tuple(layer(np.ones((1, 4, 4, 8))).shape)
    (1, 2, 2, 8)

    ```
    """

    def __init__(self, early, late, g=0.0, **kwargs):
        super().__init__(g=g, **kwargs)
        for name, value in (("early", early), ("late", late)):
            if not isinstance(value, keras.layers.Layer):
                raise ValueError(
                    f"Invalid value received for argument `{name}`. "
                    "Expected a `keras.layers.Layer` instance. "
                    f"Received: {name}={value!r}"
                )
        self.early = early
        self.late = late

    def _output_shapes(self, input_shape):
        shapes = {}
        for name, layer in (("early", self.early), ("late", self.late)):
            if not layer.built:
                layer.build(input_shape)
            shapes[name] = tuple(
                layer.compute_output_spec(
                    keras.KerasTensor(input_shape, dtype=self.compute_dtype)
                ).shape
            )
        return shapes

    def build(self, input_shape):
        shapes = self._output_shapes(input_shape)
        if shapes["early"] != shapes["late"]:
            raise ValueError(
                "Invalid value received for arguments `early` and `late`. "
                "Expected two layers whose outputs have the same shape on "
                f"input shape {tuple(input_shape)}. Received: `early` output "
                f"shape {shapes['early']}, `late` output shape "
                f"{shapes['late']}."
            )

    def call(self, inputs, training=None):
        early = keras.ops.cast(
            self.early(inputs, training=training), self.compute_dtype
        )
        late = keras.ops.cast(
            self.late(inputs, training=training), self.compute_dtype
        )
        return self.blend(early, late)

    def compute_output_shape(self, input_shape):
        return self._output_shapes(input_shape)["early"]

    def early_layers(self):
        return [self.early]

    def late_layers(self):
        return [self.late]

    def get_config(self):
        return {
            **super().get_config(),
            "early": keras.saving.serialize_keras_object(self.early),
            "late": keras.saving.serialize_keras_object(self.late),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = copy.deepcopy(config)
        for name in ("early", "late"):
            config[name] = keras.saving.deserialize_keras_object(
                config[name], custom_objects=custom_objects
            )
        return cls(**config)
