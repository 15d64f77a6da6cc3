"""The log-scale (geometric) schedule of the Concrete temperature."""

import keras

from keras_gradnets.core.checks import check_number
from keras_gradnets.core.schedule import Schedule


@keras.saving.register_keras_serializable(package="keras_gradnets")
class Geometric(Schedule):
    """From `start` to `end` on a log scale over `decay_steps`, then `end`.

    `value(t) = start * (end / start) ** min(t / decay_steps, 1)`: the
    logarithm of the value falls linearly. Grathwohl et al. anneal the
    Concrete temperature "from 0.1 to 0 on a log scale"; a log scale cannot
    reach 0, so `end` is a small positive number. `start` and `end` are
    values and the ramp length is `decay_steps`, as in Keras's decaying
    learning rates (`keras.optimizers.schedules.ExponentialDecay`).

    Args:
        start: Positive number, the value at `t=0`.
        end: Positive number, the value from `t=decay_steps` on.
        decay_steps: Positive number of steps (or epochs) the decay takes.

    Example:

    ```python
    >>> schedule = keras_gradnets.schedules.Geometric(0.1, 1e-3, 2)
    >>> [round(schedule(t), 6) for t in range(4)]
    [0.1, 0.01, 0.001, 0.001]

    ```
    """

    def __init__(self, start, end, decay_steps):
        self.start = check_number("start", start, low=0, low_open=True)
        self.end = check_number("end", end, low=0, low_open=True)
        self.decay_steps = check_number(
            "decay_steps", decay_steps, low=0, low_open=True
        )

    def __call__(self, step):
        fraction = min(max(float(step) / self.decay_steps, 0.0), 1.0)
        return self.start * (self.end / self.start) ** fraction

    def get_config(self):
        return {
            "start": self.start,
            "end": self.end,
            "decay_steps": self.decay_steps,
        }
