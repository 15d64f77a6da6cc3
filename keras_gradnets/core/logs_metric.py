"""A scheduler's logged states as a metric of the model while it trains.

Keras calls callbacks in the order they are given: a `CSVLogger` or
`TensorBoard` listed before a scheduler would write the epoch logs before
the scheduler's `on_epoch_end` adds its states to them. Keras builds those
logs from the model's metrics, so a scheduler that is also a metric of the
model during `fit` is in them for every callback, whatever the order (and
in the progress bar after every step).
"""

import weakref

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


class _Run:
    """A metric of a model's logs, and the two train functions it needs."""

    def __init__(self, metric, plain, with_metric):
        self.metric = metric
        self.plain = plain
        self.with_metric = with_metric


# model -> {log keys -> _Run}: the metrics and functions of earlier fits.
_RUNS = weakref.WeakKeyDictionary()


def start_logging(model, keys, name):
    """Attaches a `LogsMetric` with `keys` to `model` for one `fit`.

    `fit` has made `model.train_function` before the callbacks start: it
    is traced without the metric. The model gets a train function traced
    with it, made once and kept for the next `fit` with the same keys,
    unless the model has been compiled again since.

    Returns:
        The metric; give it to `stop_logging` at the end of `fit`.
    """
    runs = _RUNS.setdefault(model, {})
    run = runs.get(tuple(keys))
    if run is None or run.plain is not model.train_function:
        run = _Run(LogsMetric(keys, name), model.train_function, None)
        runs[tuple(keys)] = run
    run.metric.attach(model)
    if run.with_metric is None:
        model.make_train_function(force=True)
        run.with_metric = model.train_function
    model.train_function = run.with_metric
    return run.metric


def stop_logging(model, metric):
    """Takes `metric` out of `model`, and gives it back the train function
    it had before `start_logging`."""
    metric.detach(model)
    for run in _RUNS.get(model, {}).values():
        if run.metric is metric:
            model.train_function = run.plain
