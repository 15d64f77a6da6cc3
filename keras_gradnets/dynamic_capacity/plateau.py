"""Plateau detection on a moving average, as `ReduceLROnPlateau` does it."""

import collections
import math

import numpy as np

from keras_gradnets.core.checks import check_choice
from keras_gradnets.core.checks import check_number


class PlateauMonitor:
    """Says when the moving average of a value stops improving.

    The semantics of `keras.callbacks.ReduceLROnPlateau`, on the mean of the
    last `window` values: `update(value)` returns `True` once the mean has
    not improved on the best mean by more than `min_delta` and by more than
    `min_relative_delta` times the best mean's magnitude for `patience`
    updates (the relative threshold of `torch.optim.lr_scheduler.
    ReduceLROnPlateau(threshold_mode="rel")`, which holds at any scale of
    the loss). Then
    `restart()` clears the window and the best value (the caller changed
    the network, which moves the value) and waits `cooldown` updates before
    counting again. Non-finite values (NaN, inf) are ignored.

    The whole state is a list of floats (`get_state`/`set_state`), so that
    it can be saved with a model.

    Args:
        window: Positive integer, the length of the moving average.
        patience: Integer >= 0, updates without improvement before a
            plateau.
        min_delta: Number >= 0, the smallest change that counts as an
            improvement.
        min_relative_delta: Number in [0, 1), the smallest change, as a
            fraction of the best value's magnitude, that counts as an
            improvement.
        mode: `"min"` or `"max"`.
        cooldown: Integer >= 0, updates to wait after `restart()`.
    """

    def __init__(
        self,
        window,
        patience,
        min_delta=0.0,
        mode="min",
        cooldown=0,
        min_relative_delta=0.0,
    ):
        self.window = check_number("window", window, low=1, integer=True)
        self.patience = check_number("patience", patience, low=0, integer=True)
        self.min_delta = check_number("min_delta", min_delta, low=0)
        self.min_relative_delta = check_number(
            "min_relative_delta",
            min_relative_delta,
            low=0,
            high=1,
            high_open=True,
        )
        self.mode = check_choice("mode", mode, ("min", "max"))
        self.cooldown = check_number("cooldown", cooldown, low=0, integer=True)
        self._cooldown_counter = 0
        self._clear()

    def _clear(self):
        self._values = collections.deque(maxlen=self.window)
        self._best = None
        self._wait = 0

    def restart(self):
        """Starts a fresh plateau search after a cooldown."""
        self._clear()
        self._cooldown_counter = self.cooldown

    def _improved(self, value):
        if self._best is None:
            return True
        delta = max(self.min_delta, self.min_relative_delta * abs(self._best))
        if self.mode == "min":
            return value < self._best - delta
        return value > self._best + delta

    def update(self, value):
        """Adds `value`; returns whether the average has plateaued."""
        if not math.isfinite(value):
            return False
        self._values.append(value)
        average = float(np.mean(self._values))
        if self._cooldown_counter > 0:
            self._cooldown_counter -= 1
            self._wait = 0
        if self._improved(average):
            self._best = average
            self._wait = 0
            return False
        if self._cooldown_counter == 0:
            self._wait += 1
        return self._cooldown_counter == 0 and self._wait >= self.patience

    def get_state(self):
        """The state as a JSON-serializable dict."""
        return {
            "best": None if self._best is None else float(self._best),
            "wait": self._wait,
            "cooldown": self._cooldown_counter,
            "values": [float(value) for value in self._values],
        }

    def set_state(self, state):
        """Restores a state from `get_state()`."""
        self._best = state["best"]
        self._wait = int(state["wait"])
        self._cooldown_counter = int(state["cooldown"])
        self._values = collections.deque(state["values"], maxlen=self.window)
