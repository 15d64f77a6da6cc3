"""A learning rate that restarts low after each growth."""

import keras
from keras import ops

from keras_gradnets.core.checks import check_number


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GrowthWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Wraps a learning rate so that it ramps up again after each growth.

    After `restart(step)` the learning rate is
    `base(t) * min(1, (t - step + 1) / warmup_steps)` for the step `t`
    (optimizer steps completed, from 0): `1 / warmup_steps` of its value at
    the first step after the restart, climbing back linearly over
    `warmup_steps` steps. Before any restart it is `base(t)`.

    Adam-style optimizers need this after a growth: the moment estimates of
    new units start at zero while the bias correction uses the global step
    count, so their first updates are several times the learning rate.
    `CapacityGrowth(warmup=...)` wraps the optimizer's learning rate (a
    number or any `LearningRateSchedule`) in a `GrowthWarmup` for the time
    of `fit` and calls `restart` at each growth. Each growth re-creates the
    compiled train function, which reads the restart step as a constant.

    Args:
        base: A number or a `keras.optimizers.schedules.LearningRateSchedule`.
        warmup_steps: Positive integer, the length of the ramp.
        restart_step: Optional integer, the step of the last restart.

    Example:

    ```python
    rate = keras_gradnets.schedules.GrowthWarmup(1e-3, warmup_steps=200)
    rate.restart(1000)
    float(rate(1000))  # 5e-06
    ```
    """

    def __init__(self, base, warmup_steps, restart_step=None):
        if isinstance(base, dict):
            base = keras.saving.deserialize_keras_object(base)
        if not isinstance(
            base, keras.optimizers.schedules.LearningRateSchedule
        ):
            base = float(check_number("base", base, low=0))
        self.base = base
        self.warmup_steps = check_number(
            "warmup_steps", warmup_steps, low=1, integer=True
        )
        self.restart_step = restart_step

    def restart(self, step):
        """Restarts the ramp at `step` (optimizer steps completed)."""
        self.restart_step = int(step)

    def factor(self, step):
        """The ramp's share of the base rate at `step` (1 before any
        restart and once the ramp is over)."""
        if self.restart_step is None:
            return 1.0
        steps = ops.cast(step, "float32") - (self.restart_step - 1)
        return ops.minimum(steps / self.warmup_steps, 1.0)

    def __call__(self, step):
        base = self.base
        if callable(base):
            base = base(step)
        if self.restart_step is None:
            return base
        return base * self.factor(step)

    def get_config(self):
        base = self.base
        if callable(base):
            base = keras.saving.serialize_keras_object(base)
        return {
            "base": base,
            "warmup_steps": self.warmup_steps,
            "restart_step": self.restart_step,
        }
