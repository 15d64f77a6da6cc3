"""The callback that drops the new layers in over `dropin_length` steps."""

from keras_gradnets.core.checks import check_number
from keras_gradnets.core.scheduler import StateScheduler
from keras_gradnets.dropin.dropin import DropIn
from keras_gradnets.gradnets.linear import Linear


class DropInScheduler(StateScheduler):
    """Raises `g` of gradual DropIn layers from 0 to 1, step by step.

    Smith, Hand & Doster: the share of units a gradual DropIn takes from
    its new layers is the iteration number over the dropin length. Before
    every training step `t` (the optimizer steps completed, from 0, as in
    every scheduler of the package), each gradual `DropIn` of the model
    gets `g = clip((t - start) / dropin_length, 0, 1)`. Regularizing DropIn
    layers and GradNets layers are not driven.

    It is a `keras_gradnets.core.StateScheduler`: the values reach the
    compiled step on every backend, a resumed run continues the count, and
    the epoch logs get `dropin` (or `dropin_<layer name>` for given layers
    or values that differ).

    Args:
        dropin_length: Positive number of steps over which `g` goes from 0
            to 1.
        start: Number >= 0, the step at which the DropIn begins. Defaults
            to 0.
        layers: Optional list of gradual DropIn layers to drive. Defaults to
            every gradual DropIn of the model.

    Example:

    ```python
    model.fit(x, y, epochs=20, callbacks=[
        keras_gradnets.callbacks.DropInScheduler(dropin_length=2000)])
    ```
    """

    layer_type = DropIn
    state = "g"
    log_name = "dropin"
    example = "keras_gradnets.layers.DropIn()"

    def __init__(self, dropin_length, start=0, layers=None):
        self.dropin_length = check_number(
            "dropin_length", dropin_length, low=0, low_open=True
        )
        self.start = check_number("start", start, low=0)
        super().__init__(
            Linear(dropin_length, start), unit="step", layers=layers
        )

    def _drives(self, layer):
        return super()._drives(layer) and layer.mode == "gradual"
