"""A scheduler's logged states as a metric of the model while it trains.

Keras calls callbacks in the order they are given: a `CSVLogger` or
`TensorBoard` listed before a scheduler would write the epoch logs before
the scheduler's `on_epoch_end` adds its states to them. Keras builds those
logs from the model's metrics, so a scheduler that is also a metric of the
model during `fit` is in them for every callback, whatever the order (and
in the progress bar after every step).
"""

import keras


class LogsMetric(keras.metrics.Metric):
    """Values a callback sets, reported as the model's metrics.

    The callback sets them with `set_values` whenever they change; they
    live in one metric variable, which `fit` carries into the compiled
    steps as it carries every metric's state (on JAX, outside the
    variables), so each step's logs hold the values that step used.
    `attach` makes the metric one of `model.metrics` (as a metric set as a
    model attribute would be), `detach` takes it out; while it is not
    `active` it reports nothing (a scheduler turns it off while `fit`
    validates, so its states are not logged again as `val_<state>`).

    Args:
        keys: The log keys, in the order of the values.
        name: The metric's name.
    """

    def __init__(self, keys, name):
        super().__init__(name=name)
        self.keys = list(keys)
        self.values = self.add_variable(
            shape=(len(self.keys),), initializer="zeros", name="values"
        )
        self.active = False

    def set_values(self, values):
        """Sets the values, in the order of `keys`."""
        self.values.assign(keras.ops.convert_to_tensor(values, "float32"))

    def update_state(self, *args, **kwargs):
        """Nothing to accumulate: the callback sets the values."""

    def reset_state(self):
        """Nothing to reset: the values hold until the callback sets them."""

    def result(self):
        if not self.active:
            return {}
        return {key: self.values[i] for i, key in enumerate(self.keys)}

    def attach(self, model):
        """Makes this metric one of `model.metrics`, reporting."""
        tracker = model._tracker
        if not tracker.is_in_store("metrics", self):
            locked = tracker.locked
            tracker.unlock()
            try:
                tracker.add_to_store("metrics", self)
            finally:
                if locked:
                    tracker.lock()
        self.active = True

    def detach(self, model):
        """Takes this metric out of `model.metrics`."""
        self.active = False
        model._tracker.untrack(self)
