"""The base callback that sets a declared layer state from a schedule."""

import math
import numbers

import keras
from keras import ops

from keras_gradnets.core import schedule as schedule_lib
from keras_gradnets.core.checks import check_choice
from keras_gradnets.core.checks import describe_range
from keras_gradnets.core.logs_metric import end_session
from keras_gradnets.core.logs_metric import start_logging
from keras_gradnets.core.logs_metric import stop_logging
from keras_gradnets.core.state import StatefulLayer
from keras_gradnets.core.state import declares_state
from keras_gradnets.core.walk import walk_layers


def optimizer_iterations(model):
    """The optimizer steps `model` has completed, as a Python int.

    Reading `model` from a callback (`self.model`) first syncs the JAX
    training state, so the count is current on every backend.
    """
    return int(ops.convert_to_numpy(model.optimizer.iterations))


def state_logs(log_name, values, keep_one=True):
    """The log rule every callback of the package follows.

    Args:
        log_name: The key for the state, such as `"g"`.
        values: A dict from layer name to the value of the state.
        keep_one: Whether one key may stand for all layers: true when the
            callback drives every layer of its kind in the model.

    Returns:
        `{log_name: value}` when all layers share one value (and
        `keep_one`), else `{f"{log_name}_{layer name}": value, ...}`.
    """
    if keep_one and len(set(values.values())) == 1:
        return {log_name: next(iter(values.values()))}
    return {f"{log_name}_{name}": value for name, value in values.items()}


class StateScheduler(keras.callbacks.Callback):
    """Sets a declared state of layers from a schedule during `fit`.

    The base class of `GradNetScheduler`, `MollifierScheduler` and the
    package's other schedulers; subclass it to drive your own
    `keras_gradnets.layers.StatefulLayer`. Class attributes say what it
    drives: `layer_type` (a `StatefulLayer` subclass), `state` (a state
    name the layers declare in `state_ranges`), `log_name` (the key in
    the logs, `state` when `None`), `layer_kind` (the public names of the
    driven layers, for messages; `layer_type`'s name when `None`) and
    `example` (a layer to suggest when the model has none).

    **Step numbering.** `t` is the number of optimizer steps completed
    before the step being taken, from 0 (`optimizer.iterations`), with
    `unit="step"`; the epoch index, from 0, with `unit="epoch"`. A resumed
    run (`fit(initial_epoch=k)`, a reloaded model, `BackupAndRestore`)
    continues the count.

    **Where the values are set.** With `unit="step"` on TensorFlow and JAX,
    when the values of a step depend on `t` alone (`known_ahead()`), the
    callback computes the values of the coming steps of the epoch on the
    host, and the compiled train step writes its own row into the layers:
    no host work and no state sync per step, and with
    `steps_per_execution=k` each of the `k` steps of a call has its own
    value. Otherwise (torch, whose train step runs eagerly and whose layers
    use the value as a Python number; `unit="epoch"`; a schedule that
    depends on the training so far) the callback writes the values before
    each step or epoch; with `steps_per_execution=k` a value then holds for
    the `k` steps of a call.

    **Checks.** Every value is checked before it is written: a value that is
    not a finite number inside the declared range is a `ValueError` naming
    the schedule, the step and the value.

    **Writes.** Values written from the host go through `self.model` (on
    JAX that syncs the training state, so the next compiled step uses
    them), and only when they change.

    **Logs.** The state goes into the logs under `log_name` when the
    callback drives all the model's layers of its kind with one value for
    all (`logs_one_value()`), and under `<log_name>_<layer name>` for each
    layer otherwise (given `layers`, or a schedule whose values differ
    between layers), so that two schedulers never write the same key.
    During `fit` the values are also a metric of the model (added at the
    start of `fit` and taken out again at its end): they are in the logs
    of every step, and in the epoch logs every callback receives,
    `CSVLogger` and `TensorBoard` included, whatever the order of the
    callbacks; they are not logged again as `val_*`.

    Args:
        schedule: A `keras_gradnets.schedules.Schedule`, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            mapping `t` to a number.
        unit: `"epoch"` or `"step"`: what `t` counts.
        layers: Optional list of layers to drive. Defaults to every
            `layer_type` layer of the model that declares `state`, nested
            ones included, in model order.
    """

    layer_type = StatefulLayer
    state = None
    log_name = None
    layer_kind = None
    example = None

    def __init__(self, schedule, unit="epoch", layers=None):
        super().__init__()
        self.schedule = schedule_lib.get(schedule)
        self.unit = check_choice("unit", unit, ("epoch", "step"))
        if layers is not None:
            layers = list(layers)
            wrong = [x for x in layers if not self._drives(x)]
            if wrong or not layers:
                raise ValueError(
                    "Invalid value received for argument `layers`. Expected "
                    f"a non-empty list of {self._layer_kind()} layers "
                    f"with the state `{self.state}`. Received: "
                    f"layers={wrong or layers!r}"
                )
        self._given_layers = layers
        self.layers = []
        self._written = None
        self._epoch_start = 0
        self._epoch_end = None
        self._logs_metric = None
        self._in_step = False
        self._steps_per_call = 1
        self._table_steps = (0, 0)

    def _layer_kind(self):
        return self.layer_kind or self.layer_type.__name__

    def _drives(self, layer):
        return declares_state(layer, self.state, self.layer_type)

    def on_train_begin(self, logs=None):
        self.layers = self._given_layers or [
            x for x in walk_layers(self.model) if self._drives(x)
        ]
        if not self.layers:
            example = f", for example `{self.example}`," if self.example else ""
            raise ValueError(
                f"{self.__class__.__name__} found no "
                f"{self._layer_kind()} (a layer with the state "
                f"`{self.state}`) in model '{self.model.name}'. Add "
                f"one{example} or pass `layers=[...]`."
            )
        self._written = [None] * len(self.step_variables())
        keys = state_logs(
            self.log_name or self.state,
            dict.fromkeys(layer.name for layer in self.layers),
            keep_one=self.logs_one_value(),
        )
        self._in_step = (
            self.unit == "step"
            and keras.backend.backend() in ("tensorflow", "jax")
            and self.known_ahead()
        )
        self._steps_per_call = self.model.steps_per_execution
        self._logs_metric = start_logging(
            self.model,
            keys,
            name=f"{self.state}_logs",
            step_variables=self.step_variables() if self._in_step else (),
        )

    def known_ahead(self):
        """Whether the values of step `t` depend on `t` alone, so that they
        can be computed before the steps run (see "Where the values are
        set"). Subclasses whose values follow the training answer False."""
        return True

    def step_variables(self):
        """The variables the callback sets: the state of each driven layer.

        Subclasses that set more extend it, and `row` with it."""
        return [getattr(layer, self.state) for layer in self.layers]

    def logs_one_value(self):
        """Whether one log key stands for every driven layer: true when the
        callback drives every layer of its kind in the model with one
        schedule. Subclasses whose values differ between layers answer
        False."""
        return self._given_layers is None

    def on_test_begin(self, logs=None):
        # Validation during `fit`: the states are not logged as `val_*`.
        if self._logs_metric is not None:
            self._logs_metric.active = False

    def on_test_end(self, logs=None):
        if self._logs_metric is not None:
            self._logs_metric.active = True

    def on_train_end(self, logs=None):
        if self._logs_metric is not None:
            stop_logging(self.model, self._logs_metric)
            self._logs_metric = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.unit == "epoch":
            self._refusing(self.apply, epoch)
            return
        self._epoch_start = optimizer_iterations(self.model)
        steps = self.params.get("steps") if self.params else None
        self._epoch_end = None if steps is None else self._epoch_start + steps
        self._table_steps = (0, 0)  # Each epoch fills the table anew.

    def on_train_batch_begin(self, batch, logs=None):
        if self.unit != "step":
            return
        t = self._epoch_start + batch
        if not self._in_step:
            self._refusing(self.apply, t)
            return
        last = t + self._steps_per_call
        if self._epoch_end is not None:
            last = min(last, self._epoch_end)
        first, end = self._table_steps
        if not first <= t < last <= end:
            self._refusing(self.fill_table, t)

    def _refusing(self, write, t):
        """Runs `write(t)`; if it refuses a value, `fit` ends without
        `on_train_end`: the model gets back what it had before this `fit`
        (see `SessionTrainFunction`), then the error goes on."""
        try:
            write(t)
        except ValueError:
            end_session(self.model)
            self._logs_metric = None
            raise

    def fill_table(self, t):
        """Sets the rows of the coming steps of the epoch, from step `t`.

        Every value is checked before any is written.
        """
        end = t + self._logs_metric.table.shape[0]
        if self._epoch_end is not None:
            end = min(end, max(self._epoch_end, t + 1))
        rows = [self.row(step) for step in range(t, end)]
        _ = self.model  # On JAX, reading `model` syncs the variables.
        self._logs_metric.set_table(rows)
        self._table_steps = (t, end)

    def values(self, t):
        """The value of the state for each driven layer at `t`.

        Override it for schedules that differ between layers.
        """
        value = self.check(self.schedule(t), t)
        return [value] * len(self.layers)

    def row(self, t):
        """The values of `step_variables()` at `t`, checked."""
        return self.values(t)

    def check(self, value, t, layer=None):
        """Returns the schedule's `value` as a float, or raises.

        Raises:
            ValueError: if `value` is not a finite number in the range the
                driven layers declare, naming the schedule, `t` and `value`.
        """
        low, high = self.layer_type.state_ranges[self.state]
        number = None
        if isinstance(value, numbers.Real):
            number = float(value)
        elif not isinstance(value, (str, bytes)):
            try:
                number = float(ops.convert_to_numpy(value))
            except (TypeError, ValueError):
                number = None
        if number is not None and not (
            math.isfinite(number)
            and (low is None or number >= low)
            and (high is None or number <= high)
        ):
            number = None
        if number is None:
            where = "" if layer is None else f" for layer '{layer.name}'"
            raise ValueError(
                f"The schedule {self.schedule!r} returned "
                f"{self.state}={value!r} at {self.unit} {t}{where}. "
                f"Expected {describe_range(low, high)}."
            )
        return number

    def apply(self, t):
        """Writes the values of step or epoch `t` from the host."""
        values = self.row(t)
        if values == self._written:
            return
        # On JAX, `fit` keeps the training state outside the variables:
        # reading `self.model` syncs it, so the writes below reach the next
        # compiled step.
        _ = self.model
        for variable, value, old in zip(
            self.step_variables(), values, self._written, strict=True
        ):
            if value != old:
                variable.assign(value)
        self._written = values
        if self._logs_metric is not None:
            keys = self._logs_metric.keys
            self._logs_metric.set_values(values[: len(keys)])

    def current_values(self):
        """The state each driven layer holds now, by layer name."""
        _ = self.model  # On JAX, reading `model` syncs the variables.
        return {
            layer.name: layer.state_value(self.state) for layer in self.layers
        }

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            values = list(self.current_values().values())
            keys = self._logs_metric.keys
            logs.update(zip(keys, values[: len(keys)], strict=True))
