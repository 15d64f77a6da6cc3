"""The callback that anneals the Concrete temperature on a log scale."""

import warnings

from keras_gradnets.architecture_search.concrete_depth import ConcreteDepth
from keras_gradnets.architecture_search.concrete_layer import ConcreteLayer
from keras_gradnets.architecture_search.concrete_width import ConcreteWidth
from keras_gradnets.core.checks import check_number
from keras_gradnets.core.checks import describe_range
from keras_gradnets.core.geometric import Geometric
from keras_gradnets.core.scheduler import StateScheduler
from keras_gradnets.core.width import unit_cuts


def _auto_or_number(name, value, low, low_open=False, integer=False):
    """Returns `value` if it is `"auto"` or a number in the range."""
    if isinstance(value, str) and value == "auto":
        return value
    try:
        return check_number(
            name, value, low=low, low_open=low_open, integer=integer
        )
    except ValueError:
        expected = describe_range(low, None, low_open, False, integer)
        raise ValueError(
            f"Invalid value received for argument `{name}`. Expected "
            f'"auto" or {expected}. Received: {name}={value!r}'
        ) from None


class TemperatureScheduler(StateScheduler):
    """Anneals the temperature of the Concrete layers on a log scale.

    Grathwohl et al., section 4: "We anneal the temperature t of the
    Concrete relaxation from 0.1 to 0 throughout training on a log-scale."
    Before every training step `t` (the optimizer steps completed, from 0,
    as in every scheduler of the package) each `ConcreteWidth` and
    `ConcreteDepth` gets the temperature
    `start * (end / start) ** min((t - warmup_steps) / decay_steps, 1)`
    (`keras_gradnets.schedules.Geometric`, `start` during the warm-up). A
    log scale cannot reach 0, so the last temperature is `end`.

    **Warm-up and the architecture's learning rate.** With no size penalty
    the search should find the best network of its space, but the small
    networks learn first: when the distribution learns from the first step
    it moves towards them, trains them more, and locks in before the larger
    ones catch up (the collapse of DARTS-style searches). For the first
    `warmup_steps` steps the layers' `logits_scale` is 0: every step trains
    a uniformly sampled architecture and the distribution stays uniform
    (once-for-all, FBNetV2). From then on it is `logits_scale`, which makes
    the distribution learn that many times as fast as the weights under
    Adam (and the penalty act that much faster). By default (`"auto"`) a
    search with no penalty (`gamma=0` on every driven layer) warms up for
    half of its steps and then uses `logits_scale=3`; a penalized one keeps
    the paper's schedule (no warm-up, `logits_scale=1`).
    `benchmarks/search_bias.py` measured this with `gamma=0` on a task
    where depth matters: the warm-up ended more decided and never chose a
    shallow network, where the paper's schedule ended nearly uniform (on
    the depth-only task of the test suite it chose a worse depth), though
    both choices, retrained, came within 1 point of the best plain network
    on 4 seeds of 5; notebook 05's penalized width search extracted worse
    networks with a warm-up than without. The
    searched weights train each architecture for a share of the steps
    only: retrain the finalized network from scratch
    (`keras.models.clone_model(keras_gradnets.finalize(model))`) where
    finetuning them does not recover the accuracy.

    At every epoch end the logs get `temperature`, `logits_scale`, and the
    architecture distribution: `expected_depth`, `depth` (the most probable
    depth) and `depth_probability` (its probability) of a `ConcreteDepth`;
    `expected_width_<layer>`, `width_<layer>` and
    `width_probability_<layer>` of each `ConcreteWidth` (with several
    `ConcreteDepth` layers, `expected_depth_<layer>`, `depth_<layer>` and
    `depth_probability_<layer>`). A search that ends with a choice of
    probability below 0.5 warns that the distribution is still wide: the
    finalized network is then one the search rarely trained as; train
    longer or raise `logits_scale`.

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
        warmup_steps: Integer >= 0, the number of steps with uniformly
            sampled architectures, before the temperature's decay; `0`
            learns the distribution from the first step, as in the paper.
            Defaults to `"auto"`: half the search (of the whole `fit` with
            `decay_steps=None`, else `decay_steps` steps) when no driven
            layer has a penalty, else `0`.
        logits_scale: Number > 0, how many times as fast as the weights the
            distribution learns after the warm-up (under Adam); `1` is the
            paper's. Defaults to `"auto"`: `3.0` when no driven layer has a
            penalty, else `1.0`.
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

    # A choice with a lower probability at the end of `fit` is undecided.
    decided_probability = 0.5

    def __init__(
        self,
        start=0.1,
        end=1e-3,
        decay_steps=None,
        warmup_steps="auto",
        logits_scale="auto",
        layers=None,
    ):
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
        self.warmup_steps = _auto_or_number(
            "warmup_steps", warmup_steps, low=0, integer=True
        )
        self.logits_scale = _auto_or_number(
            "logits_scale", logits_scale, low=0, low_open=True
        )
        # The values of this `fit`, "auto" resolved at its start.
        self._warmup = 0
        self._scale = 1.0
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
        length = self.decay_steps
        if length is None:
            steps, epochs = self.params.get("steps"), self.params.get("epochs")
            if not steps or not epochs:
                raise ValueError(
                    "TemperatureScheduler(decay_steps=None) anneals over the "
                    "whole fit, but fit does not know its number of steps "
                    f"per epoch (steps={steps}). Pass `decay_steps=...`, or "
                    "`steps_per_epoch` to fit."
                )
            length = steps * epochs
        super().on_train_begin(logs)
        # With no penalty the search only has to find the best network:
        # "auto" warms up for half of it, and lets the distribution learn 3
        # times as fast; with a penalty it keeps the paper's schedule.
        unpenalized = all(layer.gamma == 0 for layer in self.layers)
        if self.warmup_steps != "auto":
            self._warmup = self.warmup_steps
        elif unpenalized:
            self._warmup = length // 2 if self.decay_steps is None else length
        else:
            self._warmup = 0
        if self.logits_scale != "auto":
            self._scale = float(self.logits_scale)
        else:
            self._scale = 3.0 if unpenalized else 1.0
        if self.decay_steps is None:
            # The first step after the warm-up at `start`, the last at `end`.
            self.schedule = Geometric(
                self.start, self.end, max(length - self._warmup - 1, 1)
            )

    def values(self, t):
        return super().values(max(t - self._warmup, 0))

    def scale(self, t):
        """The `logits_scale` of step `t`: 0 in the warm-up."""
        return 0.0 if t < self._warmup else self._scale

    def step_variables(self):
        return [
            *super().step_variables(),
            *(layer.logits_scale for layer in self.layers),
        ]

    def row(self, t):
        return [*super().row(t), *[self.scale(t)] * len(self.layers)]

    def architecture_logs(self):
        """The architecture distribution's summary, as in the epoch logs."""
        _ = self.model  # On JAX, reading `model` syncs the variables.
        depths = [x for x in self.layers if isinstance(x, ConcreteDepth)]
        logs = {"logits_scale": self.layers[0].state_value("logits_scale")}
        for layer in depths:
            suffix = "" if len(depths) == 1 else f"_{layer.name}"
            logs[f"expected_depth{suffix}"] = layer.expected_depth()
            logs[f"depth{suffix}"] = layer.chosen_depth()
            logs[f"depth_probability{suffix}"] = layer.top_probability()
        for layer in self.layers:
            if isinstance(layer, ConcreteWidth):
                logs[f"expected_width_{layer.name}"] = layer.expected_width()
                logs[f"width_{layer.name}"] = layer.chosen_width()
                logs[f"width_probability_{layer.name}"] = (
                    layer.top_probability()
                )
        return logs

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if logs is not None:
            logs.update(self.architecture_logs())

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        _ = self.model  # On JAX, reading `model` syncs the variables.
        tops = {layer.name: layer.top_probability() for layer in self.layers}
        wide = {
            name: round(top, 3)
            for name, top in tops.items()
            if top < self.decided_probability
        }
        if wide:
            warnings.warn(
                "The architecture search ended undecided: the most probable "
                f"choice of {wide} has a probability below "
                f"{self.decided_probability}, so `finalize` keeps a network "
                "the search rarely trained as. Train longer, or pass a "
                "larger `logits_scale` to TemperatureScheduler.",
                stacklevel=2,
            )
