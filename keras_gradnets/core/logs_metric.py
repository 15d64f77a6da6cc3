"""A scheduler's states as a metric of the model while it trains.

Keras calls callbacks in the order they are given: a `CSVLogger` or
`TensorBoard` listed before a scheduler would write the epoch logs before
the scheduler's `on_epoch_end` adds its states to them. Keras builds those
logs from the model's metrics, so a scheduler that is also a metric of the
model during `fit` is in them for every callback, whatever the order (and
in the progress bar after every step).

The metric can also carry a table of the values of the coming steps, which
the scheduler fills ahead from the host: the train step then writes each
step's values into the layers itself, and moves to the next row. A per-step
schedule then costs no host work and no state sync per step
(`benchmarks/overhead.py`).
"""

import contextlib
import sys
import weakref

import keras
import numpy as np
from keras import ops

from keras_gradnets.core.state import write_from_host


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

    With `step_variables`, the metric also holds a table of the values of
    those variables for `table_rows` consecutive steps (`set_table`), and
    the train step writes them (`write_step`) before each step; the logged
    values are then the first `len(keys)` of each step's row.

    Args:
        keys: The log keys, in the order of the values.
        name: The metric's name.
        step_variables: Variables the train step writes from the table.
    """

    # The steps one fill of a table covers; a longer epoch fills it again.
    table_rows = 256

    def __init__(self, keys, name, step_variables=()):
        super().__init__(name=name)
        self.keys = list(keys)
        # The layers own these variables: set past the metric's tracking,
        # which would make them variables of the metric too.
        object.__setattr__(self, "step_variables", tuple(step_variables))
        self.values = self.add_variable(
            shape=(len(self.keys),), initializer="zeros", name="values"
        )
        if self.step_variables:
            # Under a distribution strategy each replica reads and moves
            # its own copy; the host's writes reach every copy.
            self.table = self.add_variable(
                shape=(self.table_rows, len(self.step_variables)),
                initializer="zeros",
                aggregation="only_first_replica",
                name="table",
            )
            self.row = self.add_variable(
                shape=(),
                initializer="zeros",
                dtype="int32",
                aggregation="only_first_replica",
                name="row",
            )
        self.active = False

    def set_values(self, values):
        """Sets the values, in the order of `keys`."""
        if not write_from_host(self.values, values):
            self.values.assign(keras.ops.convert_to_tensor(values, "float32"))

    def set_table(self, rows):
        """Sets the rows of the next train steps, from the next one on.

        Args:
            rows: One row of values (in the order of `step_variables`) per
                step, at most `table_rows`; later steps repeat the last.
        """
        table = np.empty(tuple(self.table.shape), "float32")
        table[: len(rows)] = rows
        table[len(rows) :] = rows[-1]
        self.table.assign(table)
        self.row.assign(0)

    def write_step(self):
        """Writes the current row into `step_variables` and the values, and
        moves to the next row. Called inside the train step."""
        row = ops.minimum(self.row, self.table.shape[0] - 1)
        values = ops.take(self.table, row, axis=0)
        self.row.assign(row + 1)
        for i, variable in enumerate(self.step_variables):
            variable.assign(ops.cast(values[i], variable.dtype))
        self.values.assign(values[: len(self.keys)])

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


class TableTrainStep:
    """`model.train_step`, with the metrics' table rows written first.

    Set as the model's own `train_step` while `fit` runs, so that the train
    function traces it. On JAX, whose train step is a pure function of the
    training state, the writes run in a `StatelessScope` over that state
    and the step receives the written state.

    Args:
        model: The model.
        train_step: The train step to run after the writes.
        metrics: The `LogsMetric`s with tables.
    """

    def __init__(self, model, train_step, metrics):
        self.model = weakref.ref(model)
        self.train_step = train_step
        self.metrics = metrics

    def __call__(self, *args):
        model = self.model()
        if keras.backend.backend() != "jax":
            for metric in self.metrics:
                metric.write_step()
            return self.train_step(*args)
        state, data = args
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        groups = [
            (model.non_trainable_variables, non_trainable),
            (model.metrics_variables, metrics_variables),
        ]
        mapping = [
            pair for group in groups for pair in zip(*group, strict=True)
        ]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            for metric in self.metrics:
                metric.write_step()
        written = []
        for variables, values in groups:
            new = [scope.get_current_value(v) for v in variables]
            written.append(
                [
                    old if v is None else v
                    for v, old in zip(new, values, strict=True)
                ]
            )
        state = (trainable, written[0], optimizer_variables, written[1])
        return self.train_step(state, data)


class SessionTrainFunction:
    """The train function of a `fit` the schedulers run in.

    Keras calls no `on_train_end` when `fit` stops on an error or an
    interrupt. So that a later `fit` without the schedulers does not run
    their writes, the model gets back the train function, train step and
    metrics it had before they started: if a step raises (other than the
    end of the data), before the error goes on; and if the function is
    called outside the `fit` they started in (that `fit` raised between
    its steps), before the call runs the model's own function.
    """

    def __init__(self, model, function):
        self.model = weakref.ref(model)
        self.function = function

    def __call__(self, *args):
        model = self.model()
        session = _SESSIONS.get(model)
        if session is not None and not session.running():
            end_session(model)
            return model.train_function(*args)
        try:
            return self.function(*args)
        except StopIteration:
            raise
        except BaseException as error:
            if not _ends_the_data(error):
                end_session(model)
            raise


def _ends_the_data(error):
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(error, tf.errors.OutOfRangeError)


class _Session:
    """The schedulers' metrics of the `fit` that runs now, and what the
    model had before they started."""

    def __init__(self, model):
        self.plain = model.train_function
        self.own_train_step = model.__dict__.get("train_step")
        self.metrics = []
        self.model = weakref.ref(model)
        self.callbacks = next(_fit_callbacks(model), None)

    def running(self):
        """Whether the `fit` the schedulers started in is on the call
        stack (always, where they were started outside a `fit`)."""
        return self.callbacks is None or any(
            callbacks is self.callbacks
            for callbacks in _fit_callbacks(self.model())
        )


def _fit_callbacks(model):
    """The `CallbackList`s of the `fit`s of `model` on the call stack,
    innermost first.

    Keras's `fit` keeps them in its local `callbacks`, and calls the train
    function and the callbacks' `on_train_begin` itself.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if (
            frame.f_code.co_name == "fit"
            and frame.f_locals.get("self") is model
        ):
            yield frame.f_locals.get("callbacks")
        frame = frame.f_back


class _Function:
    """A train function traced with some metrics, kept for later fits."""

    def __init__(self, plain, train_step, function):
        self.plain = plain
        self.train_step = train_step
        self.function = function


# model -> {(keys, ids of step variables): LogsMetric}
_METRICS = weakref.WeakKeyDictionary()
# model -> {ids of the metrics: _Function}
_FUNCTIONS = weakref.WeakKeyDictionary()
# model -> _Session, while `fit` runs
_SESSIONS = weakref.WeakKeyDictionary()


def _set_train_step(model, train_step):
    if train_step is None:
        model.__dict__.pop("train_step", None)
    else:
        object.__setattr__(model, "train_step", train_step)


def start_logging(model, keys, name, step_variables=()):
    """Attaches a `LogsMetric` with `keys` to `model` for one `fit`.

    `fit` has made `model.train_function` before the callbacks start: it
    is traced without the metric. The model gets a train function traced
    with the metrics of every scheduler started so far (and, where they
    have tables, a train step that writes their rows), made once and kept
    for the next `fit` with the same schedulers, unless the model has been
    compiled again since.

    Args:
        model: The model `fit` trains.
        keys: The log keys.
        name: The metric's name.
        step_variables: Variables the train step writes from the metric's
            table (see `LogsMetric.set_table`); none by default.

    Returns:
        The metric; give it to `stop_logging` at the end of `fit`.
    """
    metrics = _METRICS.setdefault(model, {})
    key = (tuple(keys), tuple(id(v) for v in step_variables))
    metric = metrics.get(key)
    if metric is None:
        # On TensorFlow, in the scope of the model's strategy, as `fit`
        # makes its metrics: each replica then has its own table row.
        strategy = getattr(model, "distribute_strategy", None)
        with strategy.scope() if strategy else contextlib.nullcontext():
            metric = LogsMetric(keys, name, step_variables)
        metrics[key] = metric
    session = _SESSIONS.get(model)
    if session is not None and (
        metric in session.metrics or not session.running()
    ):
        # The last fit raised outside its steps, before its end.
        end_session(model)
        session = None
    if session is None:
        session = _SESSIONS[model] = _Session(model)
    session.metrics.append(metric)
    metric.attach(model)
    functions = _FUNCTIONS.setdefault(model, {})
    cached = functions.get(tuple(id(m) for m in session.metrics))
    if cached is None or cached.plain is not session.plain:
        tables = [m for m in session.metrics if m.step_variables]
        train_step = None
        if tables:
            _set_train_step(model, session.own_train_step)
            train_step = TableTrainStep(model, model.train_step, tables)
        _set_train_step(model, train_step or session.own_train_step)
        model.make_train_function(force=True)
        function = SessionTrainFunction(model, model.train_function)
        cached = _Function(session.plain, train_step, function)
        functions[tuple(id(m) for m in session.metrics)] = cached
    _set_train_step(model, cached.train_step or session.own_train_step)
    model.train_function = cached.function
    return metric


def stop_logging(model, metric):
    """Takes `metric` out of `model`; once every scheduler has stopped, the
    model has the train function and train step it had before."""
    metric.detach(model)
    session = _SESSIONS.get(model)
    if session is None or metric not in session.metrics:
        return
    session.metrics.remove(metric)
    if not session.metrics:
        end_session(model)


def end_session(model):
    """Takes every scheduler's metric out of `model`, and gives it back the
    train function and train step it had before they started."""
    session = _SESSIONS.pop(model, None)
    if session is None:
        return
    for metric in session.metrics:
        metric.detach(model)
    model.train_function = session.plain
    _set_train_step(model, session.own_train_step)
