"""The callback that grows dynamic layers when the loss plateaus."""

import warnings

import keras

from keras_gradnets.core.checks import check_choice
from keras_gradnets.core.checks import check_number
from keras_gradnets.core.messages import print_msg
from keras_gradnets.core.scheduler import optimizer_iterations
from keras_gradnets.core.scheduler import state_logs
from keras_gradnets.core.state import callback_state
from keras_gradnets.core.state import set_callback_state
from keras_gradnets.core.warmup import GrowthWarmup
from keras_gradnets.dynamic_capacity.activation_stats import activation_stats
from keras_gradnets.dynamic_capacity.dynamic_layer import DynamicLayer
from keras_gradnets.dynamic_capacity.linking import link_dynamic_layers
from keras_gradnets.dynamic_capacity.plateau import PlateauMonitor

_SELECTIONS = ("all", "activation_std")


class CapacityGrowth(keras.callbacks.Callback):
    """Grows dynamic layers by one chunk when a moving average plateaus.

    The dynamic-capacity thesis (sections 4.1 and 5.1) tracks the moving
    average of the training loss and, once it stops improving, activates
    the next chunk of capacity and freezes the capacity already trained, so
    that the new units learn the residual. The callback has three parts:

    * **When** (`PlateauMonitor`): the semantics of
      `keras.callbacks.ReduceLROnPlateau` on the average of the last
      `window` values of `monitor`. When it has not improved by more than
      `min_delta` for `patience` values, the layers grow; then the callback
      waits `cooldown` values and starts a fresh plateau search (the window
      and the best value are cleared, since growth moves the loss).
      Non-finite values are ignored. A `monitor` missing from the logs is
      warned about by name, as Keras's own monitoring callbacks do.
    * **Where**: `select="all"` grows every chosen layer that is not full;
      `select="activation_std"` grows the one whose active units have the
      largest activation standard deviation on `data` (thesis 4.3).
    * **After**: with `warmup=k`, the optimizer's learning rate (a number or
      a `LearningRateSchedule`) is wrapped in a
      `keras_gradnets.schedules.GrowthWarmup` for the time of `fit`, which
      restarts it at `1/k` of its value after each growth and ramps it back
      over `k` steps.

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

    **Logs.** At the end of each epoch: `capacity` (active units over all
    units of the chosen layers), `capacity_<layer name>` for each layer
    when they differ, and `growths` (the number of growth events so far).
    The events are in `callback.events`: dicts with the `step` (optimizer
    steps completed), the `epoch` and the grown `layers`.

    Args:
        monitor: Key of the logs to watch. Defaults to `"loss"`.
        window: Positive integer, the length of the moving average.
            Defaults to 10.
        patience: Integer >= 0, values without improvement before growth.
            Defaults to 10.
        min_delta: Number >= 0, the smallest change that counts as an
            improvement. Defaults to 0.
        mode: `"min"`, `"max"` or `"auto"` (`"max"` when `monitor` names an
            accuracy, else `"min"`).
        cooldown: Integer >= 0, values to wait after growth before counting
            again. Defaults to 0.
        unit: `"epoch"` or `"step"`: when the value is read. With `"step"`
            the value of each step is recovered from Keras's running mean
            over the epoch (exact for equal batch sizes); with
            `steps_per_execution=k` it is the mean over each call's `k`
            steps, one value per call.
        freeze: Whether growth freezes the capacity that was active.
            Defaults to `True`, as in the thesis.
        layers: Optional list of dynamic layers to grow. Defaults to every
            dynamic layer of the model.
        select: `"all"` or `"activation_std"`, see above. Defaults to
            `"all"`.
        data: A batch of inputs used to measure activations; required with
            `select="activation_std"`.
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
        window=10,
        patience=10,
        min_delta=0.0,
        mode="auto",
        cooldown=0,
        unit="epoch",
        freeze=True,
        layers=None,
        select="all",
        data=None,
        warmup=0,
        verbose=0,
    ):
        super().__init__()
        self.monitor = monitor
        mode = check_choice("mode", mode, ("auto", "min", "max"))
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.plateau = PlateauMonitor(
            window, patience, min_delta, mode, cooldown
        )
        self.unit = check_choice("unit", unit, ("epoch", "step"))
        self.freeze = bool(freeze)
        if layers is not None:
            layers = list(layers)
            if not layers or not all(
                isinstance(layer, DynamicLayer) for layer in layers
            ):
                raise ValueError(
                    "Invalid value received for argument `layers`. Expected "
                    "a non-empty list of dynamic layers. "
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

    # Setup and saved state ------------------------------------------------

    def on_train_begin(self, logs=None):
        self.layers = link_dynamic_layers(self.model)
        if not self.layers:
            raise ValueError(
                f"CapacityGrowth found no dynamic layer in model "
                f"'{self.model.name}'. Add one, for example "
                "`keras_gradnets.layers.DynamicDense(units, chunks=5)`."
            )
        if self._given_layers is not None:
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

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._batch_mean = (-1, 0.0)
        if not self._restored:
            # After every `on_train_begin` has run: `BackupAndRestore` may
            # have loaded the state of an interrupted run.
            self._restore_state()
            self._restored = True
        if self._ramping():
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
        step = self._epoch_start + batch
        self.model.optimizer.learning_rate = float(self._rate(step))
        self._warm_step = step - self._rate.restart_step + 1

    def on_train_end(self, logs=None):
        if self._rate is not None:
            self.model.optimizer.learning_rate = self._rate.base
            self._rate = None

    def _chosen(self):
        return self._given_layers or self.layers

    def _save_state(self):
        """Keeps the state in the layers, which save it with weights."""
        state = {
            "restart_step": (
                None if self._rate is None else self._rate.restart_step
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
        if self.unit == "epoch":
            value = self._read(logs)
            if value is not None:
                self._update(value)
        if logs is not None:
            logs.update(self.capacity_logs())

    def capacity_logs(self):
        """The values this callback writes into the epoch logs."""
        layers = self._chosen()
        total = sum(layer.units for layer in layers)
        active = sum(layer.active_units for layer in layers)
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
        if self.plateau.update(value):
            self._grow()
        self._save_state()

    # Growth -------------------------------------------------------------

    def _grow(self):
        layers = [layer for layer in self._chosen() if layer.capacity < 1]
        if not layers:
            return
        if self.select == "activation_std":
            stats = activation_stats(self.model, self.data, layers)
            layers = [max(layers, key=lambda layer: stats[layer.name]["std"])]
        # On JAX, reading `self.model` syncs the training state into the
        # variables, so the growth's writes reach the next step.
        step = optimizer_iterations(self.model)
        if self._rate is not None:
            self._rate.restart(step)
            self._warm_step = 0
            self._epoch_start = step - self._batch_mean[0] - 1
        for layer in layers:
            layer.grow(1, freeze=self.freeze)
        self.events.append(
            {
                "step": step,
                "epoch": self._epoch,
                "layers": [layer.name for layer in layers],
            }
        )
        if self.verbose:
            grown = ", ".join(
                f"{layer.name} -> {layer.active_units}/{layer.units}"
                for layer in layers
            )
            print_msg(
                f"\nEpoch {self._epoch + 1}: CapacityGrowth grew {grown}."
            )
        self.plateau.restart()
