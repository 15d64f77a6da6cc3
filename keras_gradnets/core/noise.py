"""What random layers share: the noise shape, as `keras.layers.Dropout`
reads it, and the choice of each unit between two tensors."""

import keras
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


def select(condition, on_true, on_false):
    """`ops.where(condition, on_true, on_false)`, for a random mask.

    The result is exactly `on_true` or `on_false` in every unit, and the
    gradient flows to the chosen one. On torch it is `torch.lerp` with the
    mask as weight (exact at weights 0 and 1), which
    `benchmarks/overhead.py` measures at a third of the time of
    `torch.where` on CPU.
    """
    if keras.backend.backend() != "torch":
        return ops.where(condition, on_true, on_false)
    import torch

    return torch.lerp(on_false, on_true, condition.to(on_true.dtype))
