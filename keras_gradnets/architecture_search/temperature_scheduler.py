"""The callback that anneals the Concrete temperature on a log scale."""

from keras_gradnets.architecture_search.concrete_depth import ConcreteDepth
from keras_gradnets.architecture_search.concrete_layer import ConcreteLayer
from keras_gradnets.architecture_search.concrete_width import ConcreteWidth
from keras_gradnets.core.checks import check_number
from keras_gradnets.core.geometric import Geometric
from keras_gradnets.core.scheduler import StateScheduler
from keras_gradnets.core.width import unit_cuts


class TemperatureScheduler(StateScheduler):
    """Anneals the temperature of the Concrete layers on a log scale.

    Grathwohl et al., section 4: "We anneal the temperature t of the
    Concrete relaxation from 0.1 to 0 throughout training on a log-scale."
    Before every training step `t` (the optimizer steps completed, from 0,
    as in every scheduler of the package) each `ConcreteWidth` and
    `ConcreteDepth` gets the temperature
    `start * (end / start) ** min(t / decay_steps, 1)`
    (`keras_gradnets.schedules.Geometric`). A log scale cannot reach 0, so
    the last temperature is `end`.

    At every epoch end the logs get `temperature`, and the architecture
    distribution: `expected_depth` and `depth` (the most probable depth) of
    a `ConcreteDepth`, `expected_width_<layer>` and `width_<layer>` of each
    `ConcreteWidth` (with several `ConcreteDepth` layers,
    `expected_depth_<layer>` and `depth_<layer>`).

    It is a `keras_gradnets.callbacks.StateScheduler`: the values reach
    the compiled step on every backend and a resumed run
    (`fit(initial_epoch=k)`, a reloaded model) continues the count.

    At the start of `fit`, before any step, it raises a `ValueError` for a
    `ConcreteWidth` that `keras_gradnets.finalize` could not cut (see
    `finalize` for where one may sit), so no search trains for nothing.

    Args:
        start: Positive number, the temperature at the first step. Defaults
            to `0.1`, the paper's.
        end: Positive number at most `start`, the temperature from
            `decay_steps` on. Defaults to `1e-3`.
        decay_steps: Positive integer, the number of steps of the decay, or
            `None` (the default) for the whole `fit`: its first step at
            `start`, its last at `end` (`fit` must know its number of steps
            per epoch: give `decay_steps` for a dataset of unknown length).
        layers: Optional list of Concrete layers to drive. Defaults to every
            `ConcreteWidth` and `ConcreteDepth` of the model.

    Example:

    ```python
    model.fit(x, y, epochs=30, callbacks=[
        keras_gradnets.callbacks.TemperatureScheduler(start=0.1, end=1e-3)])
    ```
    """

    layer_type = ConcreteLayer
    layer_kind = "ConcreteWidth or ConcreteDepth"
    state = "temperature"
    example = "keras_gradnets.layers.ConcreteWidth()"

    def __init__(self, start=0.1, end=1e-3, decay_steps=None, layers=None):
        self.start = check_number("start", start, low=0, low_open=True)
        self.end = check_number("end", end, low=0, low_open=True)
        if end > start:
            raise ValueError(
                "Invalid value received for argument `end`. Expected a "
                f"number in (0, start={start}]: the temperature is annealed "
                f"down. Received: end={end!r}"
            )
        if decay_steps is not None:
            check_number(
                "decay_steps", decay_steps, low=0, low_open=True, integer=True
            )
        self.decay_steps = decay_steps
        # With decay_steps=None, `on_train_begin` sets the schedule over the
        # whole fit, once its length is known.
        super().__init__(
            Geometric(start, end, decay_steps or 1), unit="step", layers=layers
        )

    def on_train_begin(self, logs=None):
        try:
            unit_cuts(self.model)
        except ValueError as error:
            raise ValueError(
                "TemperatureScheduler refuses to start the search: at its "
                f"end, `finalize` could not cut this model. {error}"
            ) from None
        if self.decay_steps is None:
            steps, epochs = self.params.get("steps"), self.params.get("epochs")
            if not steps or not epochs:
                raise ValueError(
                    "TemperatureScheduler(decay_steps=None) anneals over the "
                    "whole fit, but fit does not know its number of steps "
                    f"per epoch (steps={steps}). Pass `decay_steps=...`, or "
                    "`steps_per_epoch` to fit."
                )
            # The first step at `start`, the last at `end`.
            self.schedule = Geometric(
                self.start, self.end, max(steps * epochs - 1, 1)
            )
        super().on_train_begin(logs)

    def architecture_logs(self):
        """The architecture distribution's summary, as in the epoch logs."""
        _ = self.model  # On JAX, reading `model` syncs the variables.
        depths = [x for x in self.layers if isinstance(x, ConcreteDepth)]
        logs = {}
        for layer in depths:
            suffix = "" if len(depths) == 1 else f"_{layer.name}"
            logs[f"expected_depth{suffix}"] = layer.expected_depth()
            logs[f"depth{suffix}"] = layer.chosen_depth()
        for layer in self.layers:
            if isinstance(layer, ConcreteWidth):
                logs[f"expected_width_{layer.name}"] = layer.expected_width()
                logs[f"width_{layer.name}"] = layer.chosen_width()
        return logs

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if logs is not None:
            logs.update(self.architecture_logs())
