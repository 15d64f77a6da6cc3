"""The callback that drops the new layers in over `dropin_length` steps."""

from keras_gradnets.core.checks import check_number
from keras_gradnets.core.deprecation import renamed_argument
from keras_gradnets.core.linear import Linear
from keras_gradnets.core.scheduler import StateScheduler
from keras_gradnets.dropin.dropin import DropIn


class DropInScheduler(StateScheduler):
    """Raises `g` of gradual DropIn layers from 0 to 1, step by step.

    Smith, Hand & Doster: the share of units a gradual DropIn takes from
    its new layers is the iteration number over the dropin length. Before
    every training step `t` (the optimizer steps completed, from 0, as in
    every scheduler of the package), each gradual `DropIn` of the model
    gets `g = clip((t - start_step) / dropin_length, 0, 1)`; the ramp length
    keeps the paper's name. Regularizing DropIn
    layers and GradNets layers are not driven.

    It is a `keras_gradnets.callbacks.StateScheduler`: the values reach the
    compiled step on every backend, a resumed run continues the count, and
    the epoch logs get `dropin` (or `dropin_<layer name>` for given layers
    or values that differ).

    Args:
        dropin_length: Positive number of steps over which `g` goes from 0
            to 1.
        start_step: Number >= 0, the step at which the DropIn begins.
            Defaults to 0.
        layers: Optional list of gradual DropIn layers to drive. Defaults to
            every gradual DropIn of the model.
        start: Deprecated spelling of `start_step`; it works, with a
            warning, until 0.4.

    Example:

    ```python
    model.fit(x, y, epochs=20, callbacks=[
        keras_gradnets.callbacks.DropInScheduler(dropin_length=2000)])
    ```
    """

    layer_type = DropIn
    layer_kind = "gradual DropIn"
    state = "g"
    log_name = "dropin"
    example = "keras_gradnets.layers.DropIn()"

    def __init__(self, dropin_length, start_step=0, layers=None, start=None):
        start_step = renamed_argument(
            "DropInScheduler", "start", start, "start_step", start_step, 0
        )
        self.dropin_length = check_number(
            "dropin_length", dropin_length, low=0, low_open=True
        )
        self.start_step = check_number("start_step", start_step, low=0)
        super().__init__(
            Linear(dropin_length, start_step), unit="step", layers=layers
        )

    def _drives(self, layer):
        return super()._drives(layer) and layer.mode == "gradual"
