"""The callback that anneals the GradNets mixing weight `g`."""

from keras_gradnets.core.linear import Linear
from keras_gradnets.core.scheduler import StateScheduler
from keras_gradnets.gradnets.gradual_layer import GradualLayer


class GradNetScheduler(StateScheduler):
    """Sets the mixing weight `g` of gradual layers during `fit`.

    At the start of every epoch (`unit="epoch"`, `t` = the epoch index, as
    in Almeida & Sauder, section 2) or of every training step
    (`unit="step"`, `t` = the optimizer steps completed before it, from 0)
    the callback sets `g = schedule(t)` in every `GradualLayer` of the
    model (nested ones included), or in the given `layers`. It drives
    GradNets layers only: a layer of your own with a variable named `g` is
    left alone, and so are DropIn layers, which have their own scheduler.
    The value reaches the compiled train step on every backend; with
    `unit="step"` on TensorFlow and JAX the train step sets it itself, from
    a table of the epoch's values the callback fills ahead, so the schedule
    costs no host work per step.

    The callback is a `keras_gradnets.callbacks.StateScheduler`: it checks every
    value (a `ValueError` names the schedule, `t` and a value outside
    [0, 1]) and logs `g`, so the progress bar, `History`, `CSVLogger` and
    TensorBoard record it, whatever the order of the callbacks: under `"g"`
    when it drives every gradual layer of the model, and under
    `"g_<layer name>"` for each layer when given `layers`.

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
        layers: Optional list of `GradualLayer`s to drive. Defaults to every
            gradual layer of the model.

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

    layer_type = GradualLayer
    state = "g"
    example = "keras_gradnets.layers.GReLU()"

    def __init__(self, schedule=None, tau=None, unit="epoch", layers=None):
        if (schedule is None) == (tau is None):
            raise ValueError(
                "Pass exactly one of the arguments `schedule` and `tau`. "
                f"Received: schedule={schedule!r}, tau={tau!r}"
            )
        if tau is not None:
            schedule = Linear(tau)
        super().__init__(schedule, unit=unit, layers=layers)
