"""Gradual activation: identity -> any activation."""

import keras

from keras_gradnets.gradnets.gradual_layer import GradualLayer


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GradualActivation(GradualLayer):
    """Gradual activation: identity at `g=0`, `activation` at `g=1`.

    Computes `(1 - g) * x + g * activation(x)`: the GradNets blend of a
    linear early component and a nonlinear late one (Almeida & Sauder,
    section 2; `GReLU`, section 3.2, is this blend for the ReLU, computed as
    a leaky ReLU), for any activation such as `"gelu"`, `"silu"` or
    `"tanh"`. `keras_gradnets.finalize` gives back an
    `Activation(activation)` at `g=1` and nothing at `g=0`.

    Args:
        activation: An activation function or its name, as for
            `keras.layers.Activation`.
        g: Float in [0, 1]. Initial mixing weight. Defaults to `0.0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor of any shape.

    Example:

    ```python
    >>> layer = keras_gradnets.layers.GradualActivation("tanh", g=0.5)
    >>> keras.ops.convert_to_numpy(layer(np.array([0.0, 1.0]))).tolist()
    [0.0, 0.8808]

    ```
    """

    def __init__(self, activation, g=0.0, **kwargs):
        super().__init__(g=g, **kwargs)
        self.activation = keras.activations.get(activation)

    def call(self, inputs):
        return self.blend(inputs, self.activation(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def early_layers(self):
        return []

    def late_layers(self):
        return [keras.layers.Activation(self.activation)]

    def get_config(self):
        return {
            **super().get_config(),
            "activation": keras.activations.serialize(self.activation),
        }
