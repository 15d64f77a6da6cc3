"""The callback that grows dynamic layers when the loss plateaus."""

import collections
import math

import keras
import numpy as np

from keras_gradnets._checks import check_choice
from keras_gradnets._checks import check_number
from keras_gradnets.analysis import activation_stats
from keras_gradnets.layers.dynamic_layer import DynamicLayer
from keras_gradnets.layers.dynamic_links import link_dynamic_layers


class CapacityGrowth(keras.callbacks.Callback):
    """Grows dynamic layers by one chunk when a moving average plateaus.

    The dynamic-capacity thesis (sections 4.1 and 5.1) tracks the moving
    average of the training loss and, once it stops improving, activates
    the next chunk of capacity and freezes the capacity already trained, so
    that the new units learn the residual. This callback does that with the
    semantics of `keras.callbacks.ReduceLROnPlateau`: it averages the last
    `window` values of `monitor`; when the average has not improved by more
    than `min_delta` for `patience` units (steps or epochs), it grows, then
    waits `cooldown` units and starts a fresh plateau search (the window
    and the best value are cleared, since growth moves the loss).

    Non-finite values (NaN, inf) are ignored: they never cause growth. Once
    every chosen layer is at full capacity the callback stops growing.

    On `train_begin` it links the model's dynamic layers
    (`keras_gradnets.layers.link_dynamic_layers`). Each growth re-creates
    the model's compiled functions, so the next step uses the new capacity
    (one re-trace per growth, not per step).

    Logs: at the end of each epoch, `capacity` (active units over all units
    of the dynamic layers), `capacity_<layer name>` for each layer when
    there are several, and `growths` (the number of growth events so far).
    The events themselves are in `callback.events`: dicts with the `step`
    (optimizer iteration), the `epoch` and the grown `layers`.

    Args:
        monitor: Key of the logs to watch. Defaults to `"loss"`. With
            `unit="step"` the value of each batch is recovered from Keras's
            running mean over the epoch (exact for equal batch sizes).
        window: Positive integer, the length of the moving average.
            Defaults to 10.
        patience: Integer >= 0, units without improvement before growth.
            Defaults to 10.
        min_delta: Number >= 0, the smallest change that counts as an
            improvement. Defaults to 0.
        mode: `"min"`, `"max"` or `"auto"` (`"max"` when `monitor` names an
            accuracy, else `"min"`).
        cooldown: Integer >= 0, units to wait after growth before counting
            again. Defaults to 0.
        unit: `"epoch"` or `"step"`: when the value is read. Defaults to
            `"epoch"`.
        freeze: Whether growth freezes the capacity that was active.
            Defaults to `True`, as in the thesis.
        where: `"all"` (grow every dynamic layer that is not full),
            `"activation_std"` (grow the one whose active units have the
            largest activation standard deviation on `data`, thesis 4.3), or
            a list of dynamic layers to grow together.
        data: A batch of inputs used to measure activations; required with
            `where="activation_std"`.
        warmup: Integer >= 0. After each growth, the optimizer's learning
            rate restarts at `1 / warmup` of its value and climbs back
            linearly over `warmup` steps. Adam-style optimizers need it:
            their moment estimates for the new units start at zero while the
            bias correction uses the global step count, so the first
            updates of new units are several times the learning rate, in
            step, and the loss jumps right after a function-preserving
            growth. Needs a learning rate that is a number or a variable,
            not a schedule. Defaults to 0 (off).
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
        unit="step", window=10, patience=20)
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
        where="all",
        data=None,
        warmup=0,
        verbose=0,
    ):
        super().__init__()
        self.monitor = monitor
        self.window = check_number("window", window, low=1, integer=True)
        self.patience = check_number("patience", patience, low=0, integer=True)
        self.min_delta = check_number("min_delta", min_delta, low=0)
        mode = check_choice("mode", mode, ("auto", "min", "max"))
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.mode = mode
        self.cooldown = check_number("cooldown", cooldown, low=0, integer=True)
        self.unit = check_choice("unit", unit, ("epoch", "step"))
        self.freeze = bool(freeze)
        if isinstance(where, str):
            check_choice("where", where, ("all", "activation_std"))
        else:
            where = list(where)
            if not where or not all(
                isinstance(layer, DynamicLayer) for layer in where
            ):
                raise ValueError(
                    "Invalid value received for argument `where`. Expected "
                    "'all', 'activation_std' or a non-empty list of dynamic "
                    f"layers. Received: where={where!r}"
                )
        if where == "activation_std" and data is None:
            raise ValueError(
                "where='activation_std' needs a batch of inputs to measure "
                "activations: pass `data=x_batch`."
            )
        self.where = where
        self.data = data
        self.warmup = check_number("warmup", warmup, low=0, integer=True)
        self._warm_step = None
        self._base_rate = None
        self.verbose = check_choice("verbose", verbose, (0, 1))
        # With `unit="epoch"` the batch-end hook does nothing, so Keras may
        # dispatch batch ends asynchronously.
        self.async_safe = self.unit == "epoch"
        self.layers = []
        self.events = []

    def on_train_begin(self, logs=None):
        self.layers = link_dynamic_layers(self.model)
        if not self.layers:
            raise ValueError(
                f"CapacityGrowth found no dynamic layer in model "
                f"'{self.model.name}'. Add one, for example "
                "`keras_gradnets.layers.DynamicDense(units, chunks=5)`."
            )
        if isinstance(self.where, list):
            missing = [x.name for x in self.where if x not in self.layers]
            if missing:
                raise ValueError(
                    "Invalid value received for argument `where`: layers "
                    f"{missing} are not dynamic layers of model "
                    f"'{self.model.name}'."
                )
        self._restart()
        self._cooldown_counter = 0
        self._epoch_mean = None
        self._warm_step = None
        if self.warmup:
            rate = self.model.optimizer.learning_rate
            try:
                self.model.optimizer.learning_rate = float(rate)
            except TypeError as error:
                raise ValueError(
                    "CapacityGrowth(warmup=...) sets the optimizer's learning "
                    "rate, which a LearningRateSchedule does not allow. Use a "
                    "constant learning rate or warmup=0."
                ) from error

    def on_train_batch_begin(self, batch, logs=None):
        if self._warm_step is None:
            return
        self._warm_step += 1
        fraction = min(1.0, self._warm_step / self.warmup)
        # Reading `self.model` syncs the JAX training state first.
        self.model.optimizer.learning_rate = self._base_rate * fraction
        if fraction == 1.0:
            self._warm_step = None

    def on_train_end(self, logs=None):
        if self._warm_step is not None:
            self.model.optimizer.learning_rate = self._base_rate
            self._warm_step = None

    def _restart(self):
        self._values = collections.deque(maxlen=self.window)
        self._best = None
        self._wait = 0

    def _improved(self, value):
        if self._best is None:
            return True
        if self.mode == "min":
            return value < self._best - self.min_delta
        return value > self._best + self.min_delta

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_mean = None

    def on_train_batch_end(self, batch, logs=None):
        if self.unit != "step" or not logs or self.monitor not in logs:
            return
        mean = float(logs[self.monitor])
        value = mean
        if batch > 0 and self._epoch_mean is not None:
            value = (batch + 1) * mean - batch * self._epoch_mean
        self._epoch_mean = mean
        self._update(value)

    def on_epoch_end(self, epoch, logs=None):
        if self.unit == "epoch" and logs and self.monitor in logs:
            self._update(float(logs[self.monitor]))
        if logs is not None:
            logs.update(self.capacity_logs())

    def capacity_logs(self):
        """The values this callback writes into the epoch logs."""
        total = sum(layer.units for layer in self.layers)
        active = sum(layer.active_units for layer in self.layers)
        logs = {"capacity": active / total, "growths": len(self.events)}
        if len(self.layers) > 1:
            for layer in self.layers:
                logs[f"capacity_{layer.name}"] = layer.capacity
        return logs

    def _update(self, value):
        if not math.isfinite(value):
            return
        self._values.append(value)
        average = float(np.mean(self._values))
        if self._cooldown_counter > 0:
            self._cooldown_counter -= 1
            self._wait = 0
        if self._improved(average):
            self._best = average
            self._wait = 0
        elif self._cooldown_counter == 0:
            self._wait += 1
            if self._wait >= self.patience:
                self._grow()

    def _growable(self):
        layers = self.layers if isinstance(self.where, str) else self.where
        return [layer for layer in layers if layer.capacity < 1]

    def _grow(self):
        layers = self._growable()
        if not layers:
            return
        if self.where == "activation_std":
            stats = activation_stats(self.model, self.data, layers)
            layers = [max(layers, key=lambda layer: stats[layer.name]["std"])]
        # On JAX, reading `self.model` syncs the training state into the
        # variables, so the growth's writes reach the next step.
        model = self.model
        for layer in layers:
            layer.grow(1, freeze=self.freeze)
        step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
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
            print(f"\nEpoch {self._epoch + 1}: CapacityGrowth grew {grown}.")
        self._restart()
        self._cooldown_counter = self.cooldown
        if self.warmup:
            if self._warm_step is None:
                self._base_rate = float(
                    keras.ops.convert_to_numpy(model.optimizer.learning_rate)
                )
            self._warm_step = 0
