"""The GradNets linear schedule."""

import keras

from keras_gradnets.core.checks import check_number
from keras_gradnets.core.deprecation import renamed_argument
from keras_gradnets.core.schedule import Schedule


@keras.saving.register_keras_serializable(package="keras_gradnets")
class Linear(Schedule):
    """Linear ramp from 0 to 1: `clip((t - start_step) / tau, 0, 1)`.

    With `start_step=0` this is the GradNets schedule `g = min(t / tau, 1)`
    (Almeida & Sauder, section 2), where `t` is the epoch number and `tau`
    the epoch at which the annealing is complete; the ramp length keeps the
    paper's name.

    Args:
        tau: Positive number. Number of steps (or epochs) the ramp takes.
        start_step: Number. Step (or epoch) at which the ramp begins; the
            value is 0 before it. Defaults to `0`.
        start: Deprecated spelling of `start_step` (a step, where
            `Geometric`'s `start` is a value); it works, with a warning,
            until 0.4.

    Example:

    ```python
    >>> schedule = keras_gradnets.schedules.Linear(tau=4)
    >>> [schedule(t) for t in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]

    ```
    """

    def __init__(self, tau, start_step=0, start=None):
        start_step = renamed_argument(
            "Linear", "start", start, "start_step", start_step, 0
        )
        self.tau = check_number("tau", tau, low=0, low_open=True)
        self.start_step = check_number("start_step", start_step)

    def __call__(self, step):
        return min(max((float(step) - self.start_step) / self.tau, 0.0), 1.0)

    def get_config(self):
        return {"tau": self.tau, "start_step": self.start_step}
