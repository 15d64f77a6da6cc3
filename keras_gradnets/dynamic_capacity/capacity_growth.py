"""The callback that grows dynamic layers when the loss plateaus."""

import numbers
import warnings

import keras
import numpy as np

from keras_gradnets.core.checks import check_choice
from keras_gradnets.core.checks import check_number
from keras_gradnets.core.messages import print_msg
from keras_gradnets.core.scheduler import optimizer_iterations
from keras_gradnets.core.scheduler import state_logs
from keras_gradnets.core.state import callback_state
from keras_gradnets.core.state import set_callback_state
from keras_gradnets.core.walk import walk_layers
from keras_gradnets.core.warmup import GrowthWarmup
from keras_gradnets.dynamic_capacity import links
from keras_gradnets.dynamic_capacity.activation_stats import activation_stats
from keras_gradnets.dynamic_capacity.dynamic_layer import DynamicLayer
from keras_gradnets.dynamic_capacity.gradmax import gradmax_readers
from keras_gradnets.dynamic_capacity.gradmax import initialize_gradmax
from keras_gradnets.dynamic_capacity.linking import GROWING_BLOCKS
from keras_gradnets.dynamic_capacity.linking import link_dynamic_layers
from keras_gradnets.dynamic_capacity.plateau import PlateauMonitor

_SELECTIONS = ("all", "activation_std")


def _check_grow_at(grow_at):
    """Returns `grow_at` as a tuple, or raises the Keras-style error."""
    if grow_at is None:
        return None
    values = tuple(grow_at) if isinstance(grow_at, (list, tuple)) else ()
    counts = all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1
        for v in values
    )
    fractions = all(isinstance(v, float) and 0 < v <= 1 for v in values)
    increasing = sorted(set(values)) == list(values)
    if not values or not (counts or fractions) or not increasing:
        raise ValueError(
            "Invalid value received for argument `grow_at`. Expected a "
            "non-empty increasing list of epoch (or step) counts >= 1, or "
            "of fractions of the run in (0, 1]. "
            f"Received: grow_at={grow_at!r}"
        )
    return values


def _metric_direction(model, name):
    """`"max"` or `"min"` for the compiled metric `name`, else `None`.

    As Keras's monitoring callbacks decide `mode="auto"`: from the
    direction each Keras metric declares (its `_direction`).
    """
    metrics = []
    for metric in model.metrics:
        metrics.extend(getattr(metric, "metrics", None) or [metric])
    for metric in metrics:
        direction = getattr(metric, "_direction", None)
        if metric.name == name and direction in ("up", "down"):
            return "max" if direction == "up" else "min"
    return None


class CapacityGrowth(keras.callbacks.Callback):
    """Grows dynamic layers by one chunk on a plateau or at given times.

    A `DynamicStack` in the model grows the same way, by its
    `blocks_per_growth` blocks, and a `DynamicAttentionHeads` by one chunk
    of heads (neither freezes: `freeze=True` is refused for them).

    The dynamic-capacity thesis (sections 4.1 and 5.1) tracks the moving
    average of the training loss and, once it stops improving, activates
    the next chunk of capacity and freezes the capacity already trained, so
    that the new units learn the residual (`freeze=True`; the default
    trains everything, see `freeze`). The callback has three parts:

    * **When**, on a plateau: the semantics of
      `keras.callbacks.ReduceLROnPlateau` on the average of the last
      `window` values of `monitor`. When it has not improved on its best
      by more than `min_delta`, and by more than `min_relative_delta`
      times the best's magnitude, for `patience` values, the layers grow;
      then the callback waits `cooldown` values and starts a fresh plateau
      search (the window and the best value are cleared, since growth
      moves the loss). Non-finite values are ignored. A `monitor` missing
      from the logs is warned about by name, as Keras's own monitoring
      callbacks do. The relative threshold is what makes the rule fire on
      real data: a training loss keeps falling a little every epoch, so
      an absolute `min_delta=0` never sees a plateau. The defaults (one
      epoch's mean, 3 epochs with less than a 10% improvement) grow a
      20%-wide MLP on `load_digits` after about 30 epochs
      (`benchmarks/growth_trigger.py`).
    * **When**, on a budget: with `grow_at`, the layers grow once each
      given number of epochs (or steps, with `unit="step"`) is complete,
      as GradMax and G_stack schedule growth; fractions of the run are
      fractions of `fit`'s `epochs` (times the steps of an epoch). The
      plateau arguments and `monitor` are then unused.
    * **Where**: `select="all"` grows every chosen layer that is not full;
      `select="activation_std"` grows the one whose active units have the
      largest activation standard deviation on `data` (thesis 4.3).
    * **How**: each layer initializes its new units as its `growth_init`
      says; for `growth_init="gradmax"` the callback sets their outgoing
      weights from the gradient of the loss on `data=(x, y)`
      (`keras_gradnets.layers.initialize_gradmax`).
    * **After**: with `warmup=k`, the learning rate restarts at `1/k` of
      its current value after each growth and ramps back over `k` steps
      (`keras_gradnets.schedules.GrowthWarmup`). A `LearningRateSchedule`
      is wrapped for the time of `fit`. A number rate is scaled from the
      host: the ramp climbs back to the rate the run had at the growth,
      and a change another callback makes during the ramp
      (`ReduceLROnPlateau`) is kept, the ramp scaling the changed rate;
      at the end of `fit` the rate is the one the run reached, never the
      rate `fit` started with.

    On `train_begin` it links the model's dynamic layers
    (`keras_gradnets.layers.link_dynamic_layers`). Each growth re-creates
    the model's compiled functions, so the next step uses the new capacity
    (one re-trace per growth, not per step).

    **State.** The plateau search (window values, best value, wait,
    cooldown), the warmup's restart step and the growth events are kept in
    the dynamic layers and saved with the model's weights, so they survive
    `BackupAndRestore`, `ModelCheckpoint` and `.keras` save and load: a
    resumed run grows when the uninterrupted one would, and a later `fit`
    of the same model continues the search. Put this callback before
    `BackupAndRestore` and `ModelCheckpoint` in the callbacks list, so that
    they save the state of the epoch that just ended.

    **Logs.** At the end of each epoch: `capacity` (active units and
    blocks over all units and blocks of the chosen layers),
    `capacity_<layer name>` for each layer when they differ, and `growths`
    (the number of growth events so far). The events are in
    `callback.events`: dicts with the `step` (optimizer steps completed),
    the `epoch` and the grown `layers`.

    Args:
        monitor: Key of the logs to watch. Defaults to `"loss"`.
        window: Positive integer, the length of the moving average.
            Defaults to 1 with `unit="epoch"` (the epoch logs are already
            means) and to the steps of an epoch with `unit="step"`.
        patience: Integer >= 0, values without improvement before growth.
            Defaults to 3 epochs: 3, or 3 times the steps of an epoch with
            `unit="step"`.
        min_delta: Number >= 0, the smallest absolute change that counts
            as an improvement. Defaults to 0.
        min_relative_delta: Number in [0, 1), the smallest change, as a
            fraction of the best value's magnitude, that counts as an
            improvement. Defaults to 0.1.
        mode: `"min"`, `"max"` or `"auto"`: as Keras's monitoring callbacks
            decide it, `"min"` for a loss, else the direction the compiled
            metric named by `monitor` declares (`"max"` for an accuracy);
            a `ValueError` at the first value when it is unknown.
        cooldown: Integer >= 0, values to wait after growth before counting
            again. Defaults to 0.
        unit: `"epoch"` or `"step"`: when the value is read. With `"step"`
            the value of each step is recovered from Keras's running mean
            over the epoch (exact for equal batch sizes); with
            `steps_per_execution=k` it is the mean over each call's `k`
            steps, one value per call.
        grow_at: Optional increasing list of epoch (or step) counts >= 1,
            or of fractions of the run in (0, 1]: grow when each is
            complete, instead of on a plateau. Defaults to `None`.
        freeze: Whether growth freezes the capacity that was active, as
            the thesis does. Defaults to `False`, measured: with the
            defaults on notebook 02's `sin(x)` task, freezing ends at a
            validation MSE of 0.051 against 0.017 without freezing (0.018
            for the static full-width network); on `load_digits` the two
            are equal within noise (`benchmarks/growth_trigger.py`, 3
            seeds).
        layers: Optional list of dynamic layers, `DynamicStack`s and
            `DynamicAttentionHeads` to grow. Defaults to every one of the model.
        select: `"all"` or `"activation_std"`, see above. Defaults to
            `"all"`.
        data: A batch of inputs `x`, used to measure activations, or a
            tuple `(x, y)` of inputs and targets. Required with
            `select="activation_std"` and, as `(x, y)`, for layers with
            `growth_init="gradmax"`.
        warmup: Integer >= 0, the length of the learning-rate ramp after
            each growth, in steps. Defaults to 0 (off).
        verbose: 0 (silent) or 1 (print a line at each growth).

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((1,)),
        keras_gradnets.layers.DynamicDense(500, chunks=5,
                                           activation="tanh"),
        keras.layers.Dense(1),
    ])
    model.compile("adam", "mse")
    growth = keras_gradnets.callbacks.CapacityGrowth(
        unit="step", window=10, patience=20, warmup=200)
    history = model.fit(x, y, epochs=50, callbacks=[growth])
    history.history["capacity"]  # 0.2, 0.2, 0.4, ...
    ```
    """

    def __init__(
        self,
        monitor="loss",
        window=None,
        patience=None,
        min_delta=0.0,
        min_relative_delta=0.1,
        mode="auto",
        cooldown=0,
        unit="epoch",
        grow_at=None,
        freeze=False,
        layers=None,
        select="all",
        data=None,
        warmup=0,
        verbose=0,
    ):
        super().__init__()
        self.monitor = monitor
        self.mode = check_choice("mode", mode, ("auto", "min", "max"))
        self.unit = check_choice("unit", unit, ("epoch", "step"))
        # With `unit="step"` the default window and patience are one and
        # three epochs of steps, known once `fit` starts.
        self._plateau_args = (window, patience, min_delta, cooldown)
        self.plateau = PlateauMonitor(
            1 if window is None else window,
            3 if patience is None else patience,
            min_delta,
            "max" if self.mode == "max" else "min",
            cooldown,
            min_relative_delta,
        )
        self.grow_at = _check_grow_at(grow_at)
        self.freeze = bool(freeze)
        if layers is not None:
            layers = list(layers)
            if not layers or not all(
                isinstance(layer, (DynamicLayer, *GROWING_BLOCKS))
                for layer in layers
            ):
                raise ValueError(
                    "Invalid value received for argument `layers`. Expected "
                    "a non-empty list of dynamic layers, `DynamicStack`s or "
                    "`DynamicAttentionHeads`. "
                    f"Received: layers={layers!r}"
                )
        self._given_layers = layers
        self.select = check_choice("select", select, _SELECTIONS)
        if select == "activation_std" and data is None:
            raise ValueError(
                "select='activation_std' needs a batch of inputs to measure "
                "activations: pass `data=x_batch`."
            )
        self.data = data
        self.warmup = check_number("warmup", warmup, low=0, integer=True)
        self.verbose = check_choice("verbose", verbose, (0, 1))
        # With `unit="epoch"` the batch-end hook does nothing, so Keras may
        # dispatch batch ends asynchronously.
        self.async_safe = self.unit == "epoch"
        self.layers = []
        self.events = []
        self._rate = None
        self._targets = None
        self._direction = None if self.mode == "auto" else self.mode

    # Setup and saved state ------------------------------------------------

    def on_train_begin(self, logs=None):
        targets = self._grow_targets() if self.grow_at else None
        window, patience, min_delta, cooldown = self._plateau_args
        if self.unit == "step" and not targets and None in (window, patience):
            steps = self._epoch_steps("window` and `patience")
            self.plateau = PlateauMonitor(
                steps if window is None else window,
                3 * steps if patience is None else patience,
                min_delta,
                self.plateau.mode,
                cooldown,
                self.plateau.min_relative_delta,
            )
        self._targets = targets
        stacks = [
            x.name
            for x in self._given_layers or walk_layers(self.model)
            if isinstance(x, GROWING_BLOCKS)
        ]
        if self.freeze and stacks:
            raise ValueError(
                "CapacityGrowth received freeze=True, but the layers "
                f"{stacks} do not freeze trained blocks or heads. Pass "
                "`freeze=False`, or `layers=[...]` without them."
            )
        self.layers = link_dynamic_layers(self.model)
        if not self.layers:
            raise ValueError(
                f"CapacityGrowth found no dynamic layer in model "
                f"'{self.model.name}'. Add one, for example "
                "`keras_gradnets.layers.DynamicDense(units, chunks=5)`."
            )
        gradmax = [
            layer
            for layer in self._chosen()
            if getattr(layer, "growth_init", None) == "gradmax"
        ]
        if gradmax and not (
            isinstance(self.data, tuple) and len(self.data) == 2
        ):
            raise ValueError(
                f"CapacityGrowth grows layers {[x.name for x in gradmax]} "
                "with growth_init='gradmax', which needs a batch of inputs "
                "and targets for the gradient: pass data=(x, y). Received: "
                f"data of type {type(self.data).__name__}"
            )
        for layer in gradmax:
            gradmax_readers(layer)
        if self._given_layers is not None:
            followers = {
                x.name: links.leader_of(x).name
                for x in self._given_layers
                if links.leader_of(x) is not None
            }
            if followers:
                raise ValueError(
                    "Invalid value received for argument `layers`: layers "
                    f"{list(followers)} take their capacity from layers "
                    f"{list(followers.values())} and grow with them. Pass "
                    "those instead."
                )
            missing = [
                x.name for x in self._given_layers if x not in self.layers
            ]
            if missing:
                raise ValueError(
                    "Invalid value received for argument `layers`: layers "
                    f"{missing} are not dynamic layers of model "
                    f"'{self.model.name}'."
                )
        self._restored = False
        self._warned = False
        self._warm_step = 0
        self._written = None
        self._rate = None
        if self.warmup:
            base = self.model.optimizer.get_config()["learning_rate"]
            if isinstance(base, dict):
                base = keras.optimizers.schedules.deserialize(base)
            if isinstance(base, GrowthWarmup):
                base = base.base  # left by an interrupted `fit`
            self._rate = GrowthWarmup(base, self.warmup)
            if callable(base):
                # Each growth re-traces the train step, which then reads
                # the new restart step.
                self.model.optimizer.learning_rate = self._rate

    def _epoch_steps(self, argument):
        steps = self.params.get("steps")
        if not steps:
            raise ValueError(
                "CapacityGrowth(unit='step') needs the number of steps of "
                f"an epoch for its default `{argument}`, and `fit` does not "
                "know it (a dataset of unknown length). Pass "
                f"`{argument}` as numbers of steps, or `steps_per_epoch` "
                "to `fit`."
            )
        return steps

    def _grow_targets(self):
        """The `grow_at` counts, fractions turned into epochs or steps."""
        if isinstance(self.grow_at[0], numbers.Integral):
            return list(self.grow_at)
        total = self.params["epochs"]
        if self.unit == "step":
            total *= self._epoch_steps("grow_at")
        return [max(1, round(f * total)) for f in self.grow_at]

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._batch_mean = (-1, 0.0)
        if not self._restored:
            # After every `on_train_begin` has run: `BackupAndRestore` may
            # have loaded the state of an interrupted run.
            self._restore_state()
            self._restored = True
        if self._ramping() or (self.unit == "step" and self._targets):
            self._epoch_start = optimizer_iterations(self.model)

    def _ramping(self):
        """Whether a number learning rate is ramping up after a growth."""
        rate = self._rate
        return (
            rate is not None
            and not callable(rate.base)
            and rate.restart_step is not None
            and self._warm_step < self.warmup
        )

    def on_train_batch_begin(self, batch, logs=None):
        if not self._ramping():
            return
        # A number learning rate is a variable: set it on the host. Reading
        # `self.model` syncs the JAX training state first.
        self._keep_rate_changes()
        step = self._epoch_start + batch
        factor = float(self._rate.factor(step))
        rate = self._rate.base * factor
        self.model.optimizer.learning_rate = rate
        self._written = (np.float32(rate), factor)
        self._warm_step = step - self._rate.restart_step + 1

    def _keep_rate_changes(self):
        """Makes a rate another callback set during the ramp its target.

        `ReduceLROnPlateau` sets `factor * rate` from the ramped rate it
        reads: the ramp then climbs to `factor * target`.
        """
        if self._written is None:
            return
        written, factor = self._written
        now = _rate_value(self.model.optimizer)
        if now != written:
            self._rate.base = float(now) / factor
        self._written = None

    def _start_ramp(self, step):
        """Restarts the warmup at `step`, towards the current rate."""
        if not callable(self._rate.base):
            if self._ramping():
                self._keep_rate_changes()
            else:
                self._rate.base = float(_rate_value(self.model.optimizer))
        self._rate.restart(step)
        self._warm_step = 0

    def on_train_end(self, logs=None):
        if self._rate is None:
            return
        if callable(self._rate.base):
            self.model.optimizer.learning_rate = self._rate.base
        elif self._ramping():
            # The ramp is cut short: the run goes on at its target.
            self._keep_rate_changes()
            self.model.optimizer.learning_rate = self._rate.base
        self._rate = None

    def _chosen(self):
        return self._given_layers or self.layers

    def _save_state(self):
        """Keeps the state in the layers, which save it with weights."""
        rate = self._rate
        state = {
            "restart_step": None if rate is None else rate.restart_step,
            "rate": (
                None if rate is None or callable(rate.base) else rate.base
            ),
            "events": self.events,
            "plateau": self.plateau.get_state(),
        }
        set_callback_state(self.layers, "capacity_growth", state)

    def _restore_state(self):
        state = callback_state(self.layers, "capacity_growth")
        if state is None:
            return
        self.events = state["events"]
        self.plateau.set_state(state["plateau"])
        restart = state["restart_step"]
        if self._rate is not None and restart is not None:
            self._rate.restart(restart)
            self._warm_step = 0
            if state.get("rate") is not None and not callable(self._rate.base):
                self._rate.base = state["rate"]

    # Monitoring -------------------------------------------------------

    def _read(self, logs):
        if logs is not None and self.monitor in logs:
            return float(logs[self.monitor])
        if not self._warned:
            warnings.warn(
                f"CapacityGrowth is conditioned on metric `{self.monitor}` "
                "which is not available, so the layers never grow. "
                f"Available metrics are: {', '.join(logs or {})}.",
                stacklevel=2,
            )
            self._warned = True
        return None

    def on_train_batch_end(self, batch, logs=None):
        if self.unit != "step":
            return
        if self._targets:
            last = self._epoch_start + self._batch_mean[0] + 1
            self._batch_mean = (batch, 0.0)
            self._grow_on_budget(last, self._epoch_start + batch + 1)
            return
        mean = self._read(logs)
        if mean is None:
            return
        # Keras logs the running mean over the epoch. With
        # `steps_per_execution=k`, `batch` moves by k between calls: the
        # value is the mean over the steps since the previous call.
        last, last_mean = self._batch_mean
        value = ((batch + 1) * mean - (last + 1) * last_mean) / (batch - last)
        self._batch_mean = (batch, mean)
        self._update(value)

    def on_epoch_end(self, epoch, logs=None):
        if self.unit == "epoch" and self._targets:
            self._grow_on_budget(epoch, epoch + 1)
        elif self.unit == "epoch":
            value = self._read(logs)
            if value is not None:
                self._update(value)
        if logs is not None:
            logs.update(self.capacity_logs())

    def capacity_logs(self):
        """The values this callback writes into the epoch logs."""
        layers = self._chosen()
        counts = [layer.capacity_counts() for layer in layers]
        active = sum(count[0] for count in counts)
        total = sum(count[1] for count in counts)
        logs = {"capacity": active / total, "growths": len(self.events)}
        if len(layers) > 1:
            logs.update(
                state_logs(
                    "capacity",
                    {layer.name: layer.capacity for layer in layers},
                    keep_one=False,
                )
            )
        return logs

    def _update(self, value):
        if self._direction is None:
            self._direction = self._resolve_mode()
            self.plateau.mode = self._direction
        if self.plateau.update(value):
            self._grow()
        self._save_state()

    def _resolve_mode(self):
        name = self.monitor.removeprefix("val_")
        direction = "min" if name == "loss" else None
        direction = direction or _metric_direction(self.model, name)
        if direction is None:
            raise ValueError(
                f"CapacityGrowth received monitor={self.monitor!r}, but "
                "cannot tell whether that metric should be maximized or "
                "minimized. Pass `mode='max'` to grow when its highest "
                "value stops rising, or `mode='min'` to grow when its "
                "lowest value stops falling."
            )
        return direction

    def _grow_on_budget(self, last, done):
        """Grows once for each `grow_at` count in `(last, done]`."""
        growths = sum(last < t <= done for t in self._targets)
        for _ in range(growths):
            self._grow()
        if growths:
            self._save_state()

    # Growth -------------------------------------------------------------

    def _grow(self):
        layers = [layer for layer in self._chosen() if layer.capacity < 1]
        if not layers:
            return
        if self.select == "activation_std":
            x = self.data[0] if isinstance(self.data, tuple) else self.data
            stats = activation_stats(self.model, x, layers)
            layers = [max(layers, key=lambda layer: stats[layer.name]["std"])]
        # On JAX, reading `self.model` syncs the training state into the
        # variables, so the growth's writes reach the next step.
        step = optimizer_iterations(self.model)
        if self._rate is not None:
            self._start_ramp(step)
            self._epoch_start = step - self._batch_mean[0] - 1
        for layer in layers:
            start = layer.capacity_counts()[0]
            layer.grow(freeze=self.freeze)
            if getattr(layer, "growth_init", None) == "gradmax":
                stop = layer.active_units
                initialize_gradmax(self.model, layer, start, stop, self.data)
        self.events.append(
            {
                "step": step,
                "epoch": self._epoch,
                "layers": [layer.name for layer in layers],
            }
        )
        if self.verbose:
            grown = ", ".join(
                "{} -> {}/{}".format(layer.name, *layer.capacity_counts())
                for layer in layers
            )
            print_msg(
                f"\nEpoch {self._epoch + 1}: CapacityGrowth grew {grown}."
            )
        self.plateau.restart()


def _rate_value(optimizer):
    """The optimizer's learning rate as a float32 number, read once."""
    return np.float32(keras.ops.convert_to_numpy(optimizer.learning_rate))
