"""Annealing schedules for the mollifying-networks knob `p`.

Gulcehre et al., "Mollifying Networks", section 7. Each schedule maps the
step `t` (the optimizer steps completed before the update, from 0, as
every scheduler of the package counts), and for the exponential one also
the layer's depth index `l` in 1..L and a loss average `v_t`, to the skip
and noise probability `p` in [0, 1]. `p` starts at (or near) 1, an identity
network, and decays towards 0, the original network.
"""

import math

import keras

from keras_gradnets.core.checks import check_number
from keras_gradnets.core.checks import check_unit_interval
from keras_gradnets.core.schedule import Schedule


class LayerSchedule(Schedule):
    """A schedule that may depend on the layer and on the training loss.

    `__call__(step, layer=1, num_layers=1, loss=1.0)`: `layer` is the depth
    index in 1..`num_layers` and `loss` an average of the training loss.
    Schedules that ignore them can also drive `GradNetScheduler`.
    `per_layer` says whether values differ between layers, so whether a
    scheduler logs one value or one per layer.
    """

    per_layer = True


@keras.saving.register_keras_serializable(package="keras_gradnets")
class MollifyExponential(LayerSchedule):
    """`p_l(t) = 1 - exp(-k * v_t * l / (t * L))`, per layer.

    Gulcehre et al., section 7, "Exponential Decay": lower layers (small `l`)
    anneal faster; with `v_t` a moving average of the training loss, a high
    loss keeps the noise high (Eqn 30). The paper's `t` is the update index
    from 1, that is `step + 1` for the `step` (steps completed, from 0) the
    schedulers pass.

    Args:
        k: Positive number, the decay constant. Larger `k` anneals more
            slowly (`k=0` would give `p=0` from the first step: no
            mollification at all).

    Example:

    ```python
    >>> schedule = keras_gradnets.schedules.MollifyExponential(k=100)
    >>> round(schedule(999, layer=2, num_layers=4), 4)  # 1 - exp(-0.05)
    0.0488

    ```
    """

    def __init__(self, k):
        self.k = check_number("k", k, low=0, low_open=True)

    def __call__(self, step, layer=1, num_layers=1, loss=1.0):
        update = float(step) + 1.0
        return 1.0 - math.exp(
            -self.k * float(loss) * layer / (update * num_layers)
        )

    def get_config(self):
        return {"k": self.k}


class _BoundedDecay(LayerSchedule):
    per_layer = False

    def __init__(self, decay_steps, p_min=0.0):
        self.decay_steps = check_number(
            "decay_steps", decay_steps, low=0, low_open=True
        )
        self.p_min = check_unit_interval("p_min", p_min)

    def get_config(self):
        return {"decay_steps": self.decay_steps, "p_min": self.p_min}


@keras.saving.register_keras_serializable(package="keras_gradnets")
class SqrtDecay(_BoundedDecay):
    """`p(t) = max(p_min, 1 - sqrt(t / N))`.

    Gulcehre et al., section 7, "Square-root Decay". The paper prints
    `min(p_min, ...)` but describes `p_min` as the lower bound, which is what
    this computes.

    Args:
        decay_steps: Positive number `N`, the number of steps (or epochs)
            over which `p` decays to 0 before the bound applies.
        p_min: Float in [0, 1], the lower bound. Defaults to `0.0`.

    Example:

    ```python
    >>> schedule = keras_gradnets.schedules.SqrtDecay(100, p_min=0.1)
    >>> [schedule(t) for t in (0, 25, 100)]
    [1.0, 0.5, 0.1]

    ```
    """

    def __call__(self, step, layer=1, num_layers=1, loss=1.0):
        return max(self.p_min, 1.0 - math.sqrt(step / self.decay_steps))


@keras.saving.register_keras_serializable(package="keras_gradnets")
class LinearDecay(_BoundedDecay):
    """`p(t) = max(p_min, 1 - t / N)`.

    Gulcehre et al., section 7, "Linear Decay" (with `p_min` as the lower
    bound, as the paper describes it).

    Args:
        decay_steps: Positive number `N`.
        p_min: Float in [0, 1], the lower bound. Defaults to `0.0`.

    Example:

    ```python
    >>> schedule = keras_gradnets.schedules.LinearDecay(100)
    >>> [schedule(t) for t in (0, 25, 100, 200)]
    [1.0, 0.75, 0.0, 0.0]

    ```
    """

    def __call__(self, step, layer=1, num_layers=1, loss=1.0):
        return max(self.p_min, 1.0 - step / self.decay_steps)
