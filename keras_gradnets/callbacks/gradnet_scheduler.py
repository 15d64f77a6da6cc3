"""The callback that anneals the GradNets mixing weight `g`."""

import keras

from keras_gradnets import schedules
from keras_gradnets._checks import check_choice
from keras_gradnets.callbacks.layer_state import check_layers
from keras_gradnets.callbacks.layer_state import find_layers
from keras_gradnets.callbacks.layer_state import schedule_value
from keras_gradnets.layers.gradual_layer import g_value


class GradNetScheduler(keras.callbacks.Callback):
    """Sets the mixing weight `g` of gradual layers during `fit`.

    At the start of every epoch (`unit="epoch"`, `t` = the epoch index, as
    in Almeida & Sauder, section 2) or of every training step
    (`unit="step"`, `t` = the optimizer's iteration count) the callback sets
    `g = schedule(t)` in every layer that has a `g` variable: all such
    layers of the model, nested ones included, or the given `layers`. The
    value reaches the compiled train step on every backend (on JAX the
    callback writes through `self.model`, which syncs the training state).

    It writes the `g` its layers hold into the epoch `logs`, so the progress
    bar, `History`, `CSVLogger` and TensorBoard record it: under `"g"` when
    it drives all the model's gradual layers and they share one value, and
    under `"g_<layer name>"` for each layer otherwise (given `layers`, or
    values set apart by other code), so that two schedulers never write the
    same key. Place it before a `CSVLogger` in the callbacks list so that the
    logger sees the keys.

    Training resumed with `fit(initial_epoch=k)` (for `unit="epoch"`) or
    from a saved model, whose optimizer keeps its iteration count (for
    `unit="step"`), continues the schedule where it stopped.

    Args:
        schedule: A `keras_gradnets.schedules.Schedule`, a
            `keras.optimizers.schedules.LearningRateSchedule`, or any callable
            mapping `t` to a float in [0, 1].
        tau: Positive number, shorthand for
            `schedule=keras_gradnets.schedules.Linear(tau)`, the paper's
            `g = min(t / tau, 1)`. Pass exactly one of `schedule` and `tau`.
        unit: `"epoch"` or `"step"`: what `t` counts. Defaults to `"epoch"`.
        layers: Optional list of layers to drive. Defaults to every layer of
            the model that has a `g` variable.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128),
        keras_gradnets.layers.GReLU(),
        keras_gradnets.layers.GradualDropout(0.5),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(
        x, y, epochs=10,
        callbacks=[keras_gradnets.callbacks.GradNetScheduler(tau=5)],
    )
    history.history["g"]  # [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, ...]
    ```
    """

    def __init__(self, schedule=None, tau=None, unit="epoch", layers=None):
        super().__init__()
        if (schedule is None) == (tau is None):
            raise ValueError(
                "Pass exactly one of the arguments `schedule` and `tau`. "
                f"Received: schedule={schedule!r}, tau={tau!r}"
            )
        if tau is not None:
            schedule = schedules.Linear(tau)
        self.schedule = schedules.get(schedule)
        self.unit = check_choice("unit", unit, ("epoch", "step"))
        if layers is not None:
            layers = check_layers(layers, "g")
        self._given_layers = layers
        self.layers = []
        self._written = None
        self._epoch_start_step = 0

    def on_train_begin(self, logs=None):
        self.layers = self._given_layers or find_layers(
            self.model,
            "g",
            "GradNetScheduler",
            "keras_gradnets.layers.GReLU()",
        )
        self._written = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.unit == "epoch":
            self._set(epoch)
        else:
            self._epoch_start_step = int(
                keras.ops.convert_to_numpy(self.model.optimizer.iterations)
            )

    def on_train_batch_begin(self, batch, logs=None):
        if self.unit == "step":
            self._set(self._epoch_start_step + batch)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        _ = self.model  # On JAX, reading `model` syncs the variables.
        values = {layer.name: g_value(layer) for layer in self.layers}
        if self._given_layers is None and len(set(values.values())) == 1:
            logs["g"] = next(iter(values.values()))
        else:
            logs.update({f"g_{name}": v for name, v in values.items()})

    def _set(self, t):
        value = schedule_value(self.schedule, t)
        if value == self._written:
            return
        if not 0 <= value <= 1:
            raise ValueError(
                f"The schedule {self.schedule!r} returned g={value} at "
                f"{self.unit} {t}. Expected a value in [0, 1]."
            )
        # On JAX, `fit` keeps the training state outside the variables:
        # reading `self.model` syncs it, so the writes below reach the
        # next compiled step.
        _ = self.model
        for layer in self.layers:
            layer.g.assign(value)
        self._written = value
