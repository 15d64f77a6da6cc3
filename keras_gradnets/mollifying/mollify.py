"""The noisy mollified activation of Gulcehre et al., Algorithm 1.

For a pre-activation `x` with activation `f` and its linear approximation at
0, `u(x) = f(0) + f'(0) * x`, Algorithm 1 (lines 2-6, Eqn 25) computes

    delta = u(x) - f(x)                     # how saturated the unit is
    sigma = (sigmoid(a * delta) - 0.5)^2    # a: learned per unit
    s     = p * c * sigma * |xi|,  xi ~ N(0, 1)   (half-normal noise)
    psi   = sgn(u*) * min(|u*|, |f* + sgn(u*) * s|) + u(0)

with `u* = u - u(0)`, `f* = f - u(0)`. For the supported activations `f*`
has the sign of `u*` and `|f*| <= |u*|`, so this equals

    psi = f(x) + sgn(delta) * min(|delta|, s)

which is exactly `f(x)` when `s = 0` and moves towards the linear `u(x)` as
the noise grows. For ReLU, `u(x) = x`: the linearising form of Eqns 26-27,
which only moves the negative side. The unitwise stochastic skip connection
(Eqns 21-24) then outputs the previous layer's unit with probability `p`.
In training one uniform draw `v` per unit makes both random choices: the
unit takes the skip path where `v < p`, and elsewhere `(v - p) / (1 - p)`,
uniform on [0, 1) and independent of that choice, gives the half-normal
`|xi| = sqrt(2) * erfinv((v - p) / (1 - p))`.
Its gradient is written out (`sampled_activation`).
At inference the expectations of both the noise and the skip choice are
used: `p * h_prev + (1 - p) * E[psi]`, with the closed form of
`E[min(A, k |xi|)]` for a half-normal `k |xi|`.
"""

import math

import keras
from keras import ops

from keras_gradnets.core.checks import check_choice
from keras_gradnets.core.noise import select
from keras_gradnets.core.noise import uniform
from keras_gradnets.core.state import eager_value

# Keeps `(v - p) / (1 - p)` finite and below 1 (where erfinv is infinite).
_TINY = 2.0**-24

# Below this noise scale, `E[min(bound, scale * |xi|)] < scale` is taken as
# 0: the gradient of `bound / scale` divides by the scale's square, which
# would underflow to 0 (and give NaN).
_SMALLEST_SCALE = 2.0**-40

# activation name -> (f(0), f'(0)): the linear approximation u at 0.
LINEARIZATIONS = {
    "sigmoid": (0.5, 0.25),
    "hard_sigmoid": (0.5, 1.0 / 6.0),
    "tanh": (0.0, 1.0),
    "relu": (0.0, 1.0),
}


# activation name -> f'(x), from x and f = activation(x).
DERIVATIVES = {
    "sigmoid": lambda x, f: f * (1 - f),
    "hard_sigmoid": lambda x, f: ops.cast((x > -3) & (x < 3), x.dtype) / 6,
    "tanh": lambda x, f: 1 - f * f,
    "relu": lambda x, f: ops.cast(x > 0, x.dtype),
}


def check_activation(activation):
    """Returns the activation's name if Algorithm 1 supports it."""
    name = (
        activation
        if isinstance(activation, str)
        else getattr(activation, "__name__", activation)
    )
    return check_choice("activation", name, tuple(LINEARIZATIONS))


def _saturation(x, a, activation):
    """Returns `f(x)`, `delta = u(x) - f(x)` and
    `q = sigmoid(a * delta) - 0.5`, with `sigma = q**2` (lines 1-3)."""
    offset, slope = LINEARIZATIONS[activation]
    f = keras.activations.get(activation)(x)
    delta = (offset + slope * x) - f
    return f, delta, ops.sigmoid(ops.cast(a, x.dtype) * delta) - 0.5


def _expected_min(bound, scale):
    """`E[min(bound, scale * |xi|)]` for `xi ~ N(0, 1)`, float32 tensors;
    0 where the scale is below `_SMALLEST_SCALE`."""
    positive = scale > _SMALLEST_SCALE
    safe = ops.where(positive, scale, ops.ones_like(scale))
    ratio = bound / (safe * math.sqrt(2.0))
    value = safe * math.sqrt(2.0 / math.pi) * (
        1 - ops.exp(-ops.square(ratio))
    ) + bound * (1 - ops.erf(ratio))
    return ops.where(positive, value, ops.zeros_like(value))


def _sample(x, skip, p, a, activation, c, seed_generator):
    """Algorithm 1 in training: the noise and the skip choices drawn.

    One uniform draw decides both (measured by `benchmarks/overhead.py`: a
    random draw costs more than the rest of the layer). Drawn in float32
    whatever the policy: float16 rounds `1 - 2**-24` to 1, where erfinv is
    infinite.
    """
    v = uniform(ops.shape(x), seed_generator)
    return sampled_activation(
        x, skip, ops.cast(a, x.dtype), v, ops.cast(p, "float32"), activation, c
    )


def sampled_activation(x, skip, a, v, p, activation, c):
    """Algorithm 1 with the skip choice, for uniform draws `v` on [0, 1).

    `v < p` takes the skip path, and for the other units `(v - p) / (1 - p)`
    is uniform on [0, 1) and independent of that choice, so
    `sqrt(2) * erfinv` of it is the half-normal `|xi|`.

    The gradient is written out (`keras.ops.custom_gradient`), which takes
    fewer element-wise operations than automatic differentiation of the
    forward pass (`docs/performance.md` has the measured step). With
    `q = sigmoid(a * delta) - 0.5`, `s = p * c * |xi| * q**2` and `m` = 1
    on the units whose noise bound `|delta| > s` holds (they output
    `f + sgn(delta) * s`, the others the linear `u(x)`):

        d psi / dx = f' + (u' - f') * (1 - m + w * a)
        d psi / da = w * delta
        w = m * sgn(delta) * p * c * |xi| * 2q * (0.25 - q**2)

    Args:
        x: Pre-activation tensor.
        skip: The previous layer's units, same shape as `x`.
        a: Per-unit tensor (last axis), the saturation sensitivity.
        v: float32 tensor of uniform draws, the shape of `x`.
        p: float32 scalar in [0, 1], the skip probability.
        activation: A name in `LINEARIZATIONS`.
        c: Python float, the noise constant.
    """
    slope = LINEARIZATIONS[activation][1]
    take_skip = v < p
    rest = ops.clip((v - p) / ops.maximum(1 - p, _TINY), 0.0, 1.0 - _TINY)
    # `s / q**2`; 0 on the skipped units (`rest` is 0 there).
    scale = ops.cast((p * (c * math.sqrt(2.0))) * ops.erfinv(rest), x.dtype)

    @ops.custom_gradient
    def psi(x, skip, a):
        f, delta, q = _saturation(x, a, activation)
        s = scale * ops.square(q)
        # `sgn(delta) * min(|delta|, s)`, for `s >= 0`.
        bounded = ops.clip(delta, -s, s)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            kept = upstream * ops.cast(~take_skip, upstream.dtype)
            bound = ops.cast(bounded != delta, x.dtype)
            w = bound * ops.sign(delta) * scale * (2 * q) * (0.25 - q * q)
            derivative = DERIVATIVES[activation](x, f)
            grad_x = kept * (
                derivative + (slope - derivative) * (1 - bound + w * a)
            )
            grad_a = ops.sum(kept * w * delta, axis=tuple(range(x.ndim - 1)))
            return grad_x, upstream - kept, grad_a

        return select(take_skip, skip, f + bounded), grad

    return psi(x, skip, a)


def mollified_activation(
    x, skip, p, a, activation, c, seed_generator, stochastic
):
    """Algorithm 1 with the unitwise stochastic skip connection.

    Args:
        x: Pre-activation tensor.
        skip: The previous layer's units, same shape as `x`.
        p: Scalar in [0, 1] (the layer's state variable, or a tensor),
            the skip probability and noise scale.
        a: Per-unit tensor, the learned saturation sensitivity.
        activation: A name in `LINEARIZATIONS`.
        c: Python float, the noise constant.
        seed_generator: A `keras.random.SeedGenerator`.
        stochastic: Python bool: sample the noise and the skip decisions
            (training), or use their expectations (inference).
    """
    if stochastic:
        return _sample(x, skip, p, a, activation, c, seed_generator)
    eager_p = eager_value(p)
    p = ops.cast(p, x.dtype)

    def expectation():
        f, delta, q = _saturation(x, a, activation)
        # In float32 whatever the policy: float16 cannot hold the scale's
        # square that the gradient of `_expected_min` divides by.
        delta = ops.cast(delta, "float32")
        scale = ops.cast(p, "float32") * c * ops.square(ops.cast(q, "float32"))
        noise = ops.sign(delta) * _expected_min(ops.abs(delta), scale)
        psi = f + ops.cast(noise, x.dtype)
        return p * skip + (1 - p) * psi

    def original():
        return keras.activations.get(activation)(x)

    # After annealing (p=0), inference costs what the activation costs.
    # Torch branches in Python where `p` is known there; in a torch graph
    # the expectation, exact at p=0, avoids a data-dependent branch.
    if keras.backend.backend() != "torch":
        return ops.cond(p == 0, original, expectation)
    if eager_p is not None and eager_p == 0:
        return original()
    return expectation()
