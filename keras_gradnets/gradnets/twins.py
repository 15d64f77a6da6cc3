"""The gradual twin of a Keras layer: what `gradualize` puts in its place."""

import keras

from keras_gradnets.gradnets.gradual_activation import GradualActivation
from keras_gradnets.gradnets.gradual_dropout import GradualDropout
from keras_gradnets.gradnets.grelu import GReLU

# Activations that end in a GReLU, with its arguments.
_RELUS = {"relu": {}, "relu6": {"max_value": 6.0}}
# Activations left alone: no nonlinearity, or a normalization the loss reads.
_KEPT = ("linear", "softmax", "log_softmax")
# Bounded activations that gate when their output multiplies a tensor.
GATES = ("sigmoid", "hard_sigmoid")
# Layers that apply their `activation` last, to their whole output.
FUSED = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)


def activation_name(activation):
    """The registered name of `activation`, or None for a custom one."""
    name = keras.activations.serialize(activation)
    return name if isinstance(name, str) else None


def has_convertible_activation(layer):
    """A `ReLU`, or an `Activation` or fused activation not kept (a fused
    activation that is a layer is already a twin)."""
    if type(layer) is keras.layers.ReLU:
        return True
    is_activation = type(layer) is keras.layers.Activation
    activation = getattr(layer, "activation", None)
    return (
        (is_activation or isinstance(layer, FUSED))
        and activation is not None
        and not isinstance(activation, keras.layers.Layer)
        and activation_name(activation) not in _KEPT
    )


def is_bounded(layer):
    """A sigmoid, a hard sigmoid or a ReLU with a `max_value`: an
    activation that gates when its output multiplies another tensor."""
    if isinstance(layer, keras.layers.ReLU):
        return layer.max_value is not None
    return activation_name(layer.activation) in GATES


def activation_twin(layer):
    """The gradual twin of `layer`'s activation (identity -> activation).

    A `ReLU` layer becomes a `GReLU` and an `Activation` layer a
    `GradualActivation`, of the same name; an activation fused into a
    `Dense` or `Conv*` layer becomes a `GReLU` (relu, relu6) or a
    `GradualActivation` named `<name>_activation`.
    """
    if type(layer) is keras.layers.ReLU:
        config = layer.get_config()
        return GReLU(
            max_value=config["max_value"],
            negative_slope=config["negative_slope"],
            threshold=config["threshold"],
            name=layer.name,
        )
    if isinstance(layer, FUSED):
        return function_twin(layer)
    # An `Activation` layer, which finalize gives back as one.
    return GradualActivation(layer.activation, name=layer.name)


def function_twin(layer):
    """The twin of the activation function of `layer` (an `Activation`
    layer, or one with a fused activation), to compute it in its place: a
    `GReLU` (relu, relu6) or a `GradualActivation`, named
    `<name>_activation`."""
    name = f"{layer.name}_activation"
    key = activation_name(layer.activation)
    if key in _RELUS:
        return GReLU(name=name, **_RELUS[key])
    return GradualActivation(layer.activation, name=name)


def dropout_twin(layer):
    """The `GradualDropout` of a `Dropout` layer (no dropout -> dropout)."""
    config = layer.get_config()
    return GradualDropout(
        config["rate"],
        noise_shape=config["noise_shape"],
        seed=config["seed"],
        name=layer.name,
    )


def fused_activation(twin):
    """The activation, as a `Dense` or `Conv*` layer takes it, that the
    twin of a fused activation (see `activation_twin`) computes at `g=1`;
    None if no activation name says it."""
    if type(twin) is GReLU:
        for name, arguments in _RELUS.items():
            expected = {"max_value": None, **arguments}
            if (
                twin.max_value == expected["max_value"]
                and twin.negative_slope == 0
                and twin.threshold == 0
            ):
                return name
        return None
    if type(twin) is GradualActivation:
        return activation_name(twin.activation)
    return None
