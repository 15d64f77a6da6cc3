"""The callback that anneals the mollifying-networks probability `p`."""

import math

import keras

from keras_gradnets import schedules
from keras_gradnets._checks import check_number
from keras_gradnets.callbacks.layer_state import check_layers
from keras_gradnets.callbacks.layer_state import find_layers
from keras_gradnets.callbacks.layer_state import schedule_value
from keras_gradnets.layers.state import scalar_value


class MollifierScheduler(keras.callbacks.Callback):
    """Anneals `p` of every mollified layer at every training step.

    Gulcehre et al., "Mollifying Networks", section 7. Before each update
    `t` (counted from 1, from the optimizer's iterations, so a resumed run
    continues), layer `l` of the `L` mollified layers (in model order, from
    the input) gets `p_l = schedule(t, layer=l, num_layers=L, loss=v_t)` for
    a `keras_gradnets.schedules.LayerSchedule` such as `MollifyExponential`
    (lower layers anneal faster), or `schedule(t)` for any other schedule or
    callable. With `use_loss=True`, `v_t` is a bias-corrected exponential
    moving average of the training loss; otherwise `v_t = 1` (the paper's
    fallback when the loss-driven schedule was unstable). The average is
    stored in the layers' `loss_average` variables at the end of every
    epoch, so a model saved then resumes with it.

    Annealing stops for good once the expected depth `sum_l p_l` (the
    quantity of section 7) falls to `stop_depth` or below; the layers keep
    their last `p`, in later calls to `fit` and after a reload too.

    At the end of each epoch the logs get `p_<layer name>` for every layer,
    `expected_depth` and, with `use_loss=True`, `loss_average`.

    Args:
        schedule: A `keras_gradnets.schedules.LayerSchedule`, a
            `keras_gradnets.schedules.Schedule`, a
            `keras.optimizers.schedules.LearningRateSchedule` or a callable,
            returning `p` in [0, 1].
        use_loss: Whether `v_t` follows the training loss. Defaults to
            `True`.
        stop_depth: Optional non-negative number: stop annealing once
            `sum_l p_l <= stop_depth`. Defaults to `None` (never stop).
        layers: Optional list of layers with a `p` variable, in depth order.
            Defaults to every such layer of the model, in model order.
        loss_momentum: Float in [0, 1), the momentum of the loss average.
            Defaults to `0.9`.

    Example:

    ```python
    scheduler = keras_gradnets.callbacks.MollifierScheduler(
        keras_gradnets.schedules.MollifyExponential(k=100), stop_depth=0.5
    )
    model.fit(x, y, epochs=20, callbacks=[scheduler])
    ```
    """

    def __init__(
        self,
        schedule,
        use_loss=True,
        stop_depth=None,
        layers=None,
        loss_momentum=0.9,
    ):
        super().__init__()
        self.schedule = schedules.get(schedule)
        self.use_loss = bool(use_loss)
        if stop_depth is not None:
            check_number("stop_depth", stop_depth, low=0)
        self.stop_depth = stop_depth
        self.loss_momentum = check_number(
            "loss_momentum", loss_momentum, low=0, high=1, high_open=True
        )
        self._given_layers = (
            None if layers is None else check_layers(layers, "p")
        )
        self.layers = []
        self.stopped = False
        self._written = []
        self._epoch_start_step = 0
        self._loss_sum = 0.0
        self._loss_count = 0
        # Without the loss, the batch-end hook does nothing, so Keras may
        # keep dispatching batch ends asynchronously. With it, the next
        # step's p must see this step's loss: no asynchronous dispatch.
        self.async_safe = not self.use_loss

    def on_train_begin(self, logs=None):
        self.layers = self._given_layers or find_layers(
            self.model,
            "p",
            "MollifierScheduler",
            "keras_gradnets.layers.MollifiedDense(100)",
        )
        self._written = [None] * len(self.layers)
        first = self.layers[0]
        self._loss_sum = (
            scalar_value(first.loss_average)
            if hasattr(first, "loss_average")
            else 0.0
        )
        # A resumed run has averaged the loss of every earlier update.
        self._loss_count = int(
            keras.ops.convert_to_numpy(self.model.optimizer.iterations)
        )
        # A model that reached `stop_depth` before (in an earlier `fit`, or
        # before it was saved) keeps its p.
        self.stopped = self.stop_depth is not None and (
            sum(scalar_value(layer.p) for layer in self.layers)
            <= self.stop_depth
        )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start_step = int(
            keras.ops.convert_to_numpy(self.model.optimizer.iterations)
        )

    def loss_average(self):
        """The bias-corrected moving average `v_t` of the training loss."""
        if not self.use_loss or self._loss_count == 0:
            return 1.0
        return self._loss_sum / (1 - self.loss_momentum**self._loss_count)

    def on_train_batch_begin(self, batch, logs=None):
        if self.stopped:
            return
        t = self._epoch_start_step + batch + 1
        values = [self._p(t, depth) for depth in range(1, len(self.layers) + 1)]
        changed = [v != w for v, w in zip(values, self._written, strict=True)]
        if any(changed):
            # On JAX, `fit` keeps the training state outside the variables:
            # reading `self.model` syncs it, so the writes below reach the
            # next compiled step.
            _ = self.model
            for layer, value, new in zip(
                self.layers, values, changed, strict=True
            ):
                if new:
                    layer.p.assign(value)
            self._written = values
        if self.stop_depth is not None and sum(values) <= self.stop_depth:
            self.stopped = True

    def on_train_batch_end(self, batch, logs=None):
        if not self.use_loss or logs is None or "loss" not in logs:
            return
        loss = float(logs["loss"])
        if math.isfinite(loss):
            self._loss_sum = (
                self.loss_momentum * self._loss_sum
                + (1 - self.loss_momentum) * loss
            )
            self._loss_count += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        _ = self.model  # On JAX, reading `model` syncs the variables.
        if self.use_loss:
            # Store the latest average, so a model saved now resumes with it.
            for layer in self.layers:
                if hasattr(layer, "loss_average"):
                    layer.loss_average.assign(self._loss_sum)
        values = {layer.name: scalar_value(layer.p) for layer in self.layers}
        logs.update({f"p_{name}": value for name, value in values.items()})
        logs["expected_depth"] = sum(values.values())
        if self.use_loss:
            logs["loss_average"] = self.loss_average()

    def _p(self, t, layer):
        if isinstance(self.schedule, schedules.LayerSchedule):
            value = schedule_value(
                self.schedule,
                t,
                layer=layer,
                num_layers=len(self.layers),
                loss=self.loss_average(),
            )
        else:
            value = schedule_value(self.schedule, t)
        if not 0 <= value <= 1:
            raise ValueError(
                f"The schedule {self.schedule!r} returned p={value} at "
                f"update {t} for layer {layer}. Expected a value in [0, 1]."
            )
        return value
