"""The callback that anneals the mollifying-networks probability `p`."""

import math

from keras_gradnets.core.checks import check_number
from keras_gradnets.core.scheduler import StateScheduler
from keras_gradnets.core.scheduler import optimizer_iterations
from keras_gradnets.core.state import callback_state
from keras_gradnets.core.state import set_callback_state
from keras_gradnets.mollifying.mollified_layer import MollifiedLayer
from keras_gradnets.mollifying.schedules import LayerSchedule


class MollifierScheduler(StateScheduler):
    """Anneals `p` of every mollified layer at every training step.

    Gulcehre et al., "Mollifying Networks", section 7. Before each step `t`
    (the optimizer steps completed before it, from 0, so a resumed run
    continues; see `keras_gradnets.callbacks.StateScheduler` for the numbering
    and `steps_per_execution`), layer `l` of the `L` mollified layers (in
    model order, from the input) gets
    `p_l = schedule(t, layer=l, num_layers=L, loss=v_t)` for a
    `keras_gradnets.schedules.LayerSchedule` such as `MollifyExponential`
    (lower layers anneal faster), or `schedule(t)` for any other schedule or
    callable. With `use_loss=True`, `v_t` is a bias-corrected exponential
    moving average of the training loss; otherwise `v_t = 1` (the paper's
    fallback when the loss-driven schedule was unstable). The average is
    kept in the layers (`callback_state("mollifier")`, the state protocol
    of every callback of the package) at every step, so a model saved at
    any point resumes with it.

    Annealing stops for good once the expected depth `sum_l p_l` (the
    quantity of section 7) falls to `stop_depth` or below; the layers keep
    their last `p`, in later calls to `fit` and after a reload too.

    At the end of each epoch the logs get `p` (when all layers share one
    value, as under a linear or square-root schedule) or `p_<layer name>`
    for every layer, `mollified_depth` (the expected depth `sum_l p_l`;
    `TemperatureScheduler` logs the searched depth as `expected_depth`, and
    two schedulers never write the same key) and, with `use_loss=True`,
    `loss_average`. Every value is checked: a schedule value that is not a
    number in [0, 1] is a `ValueError` naming the schedule, the step, the
    layer and the value.

    Args:
        schedule: A `keras_gradnets.schedules.LayerSchedule`, a
            `keras_gradnets.schedules.Schedule`, a
            `keras.optimizers.schedules.LearningRateSchedule` or a callable,
            returning `p` in [0, 1].
        use_loss: Whether `v_t` follows the training loss. Defaults to
            `True`.
        stop_depth: Optional non-negative number: stop annealing once
            `sum_l p_l <= stop_depth`. Defaults to `None` (never stop).
        layers: Optional list of mollified layers or cells, in depth order.
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

    layer_type = MollifiedLayer
    layer_kind = (
        "mollified (MollifiedDense, MollifiedActivation, MollifiedGRUCell "
        "or MollifiedLSTMCell)"
    )
    state = "p"
    example = "keras_gradnets.layers.MollifiedDense(100)"

    def __init__(
        self,
        schedule,
        use_loss=True,
        stop_depth=None,
        layers=None,
        loss_momentum=0.9,
    ):
        super().__init__(schedule, unit="step", layers=layers)
        self.use_loss = bool(use_loss)
        if stop_depth is not None:
            check_number("stop_depth", stop_depth, low=0)
        self.stop_depth = stop_depth
        self.loss_momentum = check_number(
            "loss_momentum", loss_momentum, low=0, high=1, high_open=True
        )
        self.stopped = False
        self._loss_sum = 0.0
        self._loss_count = 0
        # Without the loss, the batch-end hook does nothing, so Keras may
        # keep dispatching batch ends asynchronously. With it, the next
        # step's p must see this step's loss: no asynchronous dispatch.
        self.async_safe = not self.use_loss

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        state = callback_state(self.layers, "mollifier") or {}
        self._loss_sum = state.get("loss_sum", 0.0)
        # A resumed run has averaged the loss of every earlier update.
        self._loss_count = optimizer_iterations(self.model)
        # A model that reached `stop_depth` before (in an earlier `fit`, or
        # before it was saved) keeps its p.
        self.stopped = self.stop_depth is not None and (
            sum(self.current_values().values()) <= self.stop_depth
        )

    def loss_average(self):
        """The bias-corrected moving average `v_t` of the training loss."""
        if not self.use_loss or self._loss_count == 0:
            return 1.0
        return self._loss_sum / (1 - self.loss_momentum**self._loss_count)

    def logs_one_value(self):
        per_layer = getattr(self.schedule, "per_layer", False)
        return super().logs_one_value() and (
            not per_layer or len(self.layers) == 1
        )

    def known_ahead(self):
        # The loss average and the stop follow the training.
        uses_loss = self.use_loss and isinstance(self.schedule, LayerSchedule)
        return self.stop_depth is None and not uses_loss

    def values(self, t):
        if self.stopped:
            return self._written
        count = len(self.layers)
        if isinstance(self.schedule, LayerSchedule):
            loss = self.loss_average()
            values = [
                self.check(
                    self.schedule(t, layer=depth, num_layers=count, loss=loss),
                    t,
                    layer,
                )
                for depth, layer in enumerate(self.layers, start=1)
            ]
        else:
            values = super().values(t)
        if self.stop_depth is not None and sum(values) <= self.stop_depth:
            self.stopped = True
        return values

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
            # Kept with every update, so that a model saved at any point
            # (by a callback listed before this one, too) resumes with it.
            set_callback_state(
                self.layers, "mollifier", {"loss_sum": self._loss_sum}
            )

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        super().on_epoch_end(epoch, logs)
        if self.use_loss:
            logs["loss_average"] = self.loss_average()
        logs["mollified_depth"] = sum(self.current_values().values())
