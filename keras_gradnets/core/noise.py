"""What random layers share: the noise shape, as `keras.layers.Dropout`
reads it, uniform draws, and the choice of each unit between two
tensors."""

import math

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


def uniform(shape, seed_generator):
    """`keras.random.uniform(shape, seed=seed_generator)` in float32.

    On JAX, from a counter-based generator: the unit with index `i` gets
    `h(i * (k1 | 1) + k0)` (uint32 arithmetic), where `h` is the
    `lowbias32` integer hash (C. Wellons, "Prospecting for hash
    functions", 2018) and the keys `k0, k1` are drawn from the seed
    generator at each call, so that two calls hash different arithmetic
    progressions: a unit of one call meets the value of a unit of another
    only as often as two random 32-bit numbers are equal. The top 24 bits
    give the value, as many as a float32 uniform has. On a CPU, JAX's
    threefry takes eight times as long for a layer's units (a `(128, 256)`
    draw: 200 microseconds against 23), more than the layer's matrix
    product (`benchmarks/overhead.py` measures the layers that use this);
    `tests/test_noise.py` checks the values' statistics.

    On torch, the values of `keras.random.uniform`, drawn in two thirds of
    its time (a `(128, 256)` draw on a 2-core CPU: 160 microseconds against
    240): its seed step (`SeedGenerator.next`, then a `torch.Generator`
    seeded with the sum of the state) takes about 80 microseconds of small
    tensor operations, and its `(maxval - minval) * x + minval` two passes
    over the draw. Here the state is read once and advanced with one
    `assign_add`, which a `keras.StatelessScope` records as `next` does.
    TensorFlow draws with `keras.random.uniform`, which costs it less than
    a hash.

    Args:
        shape: Tuple of integers, the shape of the draw.
        seed_generator: A `keras.random.SeedGenerator`.
    """
    if keras.backend.backend() == "torch":
        generator = _torch_generator(seed_generator)
        return torch.rand(shape, generator=generator, device=generator.device)
    if keras.backend.backend() != "jax":
        return keras.random.uniform(shape, seed=seed_generator, dtype="float32")
    import jax.numpy as jnp
    from jax import lax

    keys = lax.bitcast_convert_type(
        keras.random.randint(
            (2,), -(2**31), 2**31 - 1, dtype="int32", seed=seed_generator
        ),
        jnp.uint32,
    )
    size = math.prod(shape)
    index = lax.iota(jnp.uint32, size).reshape(shape)
    bits = _lowbias32(index * (keys[1] | 1) + keys[0])
    return (bits >> 8).astype("float32") * 2.0**-24


if keras.backend.backend() == "torch":
    import torch

    @torch.compiler.disable
    def _torch_generator(seed_generator):
        """The `torch.Generator` that `keras.random.uniform` seeds on
        torch: seeded with the sum of the state, as 32 bits, which steps
        by `[0, 1]`. Reading the state is a host read, kept out of
        compiled graphs as Keras keeps its own."""
        state = seed_generator.state
        first, second = state.value.tolist()
        device = state.value.device
        state.assign_add(
            torch.tensor((0, 1), dtype=state.value.dtype, device=device)
        )
        generator = torch.Generator(device=device)
        generator.manual_seed((first + second) & 0xFFFFFFFF)
        return generator


def _lowbias32(x):
    """The `lowbias32` hash of uint32 JAX arrays, element-wise."""
    import jax.numpy as jnp

    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    x = (x ^ (x >> 15)) * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)
