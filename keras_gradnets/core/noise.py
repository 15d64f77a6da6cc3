"""The noise shape of random layers, as `keras.layers.Dropout` reads it."""

from keras import ops


def noise_shape_for(inputs, noise_shape):
    """The shape of the random draw for `inputs`.

    Args:
        inputs: The tensor the draw is broadcast to.
        noise_shape: `None` (the inputs' shape) or a tuple whose `None`
            entries take the inputs' size.
    """
    shape = ops.shape(inputs)
    if noise_shape is None:
        return shape
    return tuple(
        shape[i] if dim is None else dim for i, dim in enumerate(noise_shape)
    )
