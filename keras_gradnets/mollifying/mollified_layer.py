"""The state every mollified layer and cell declares."""

import json

import numpy as np

from keras_gradnets.core.finalize import require_end_point
from keras_gradnets.core.state import StatefulLayer


class MollifiedLayer(StatefulLayer):
    """Base of the mollified layers and cells: the annealed `p`.

    `p` is the declared state (`state_ranges`), a non-trainable float32
    scalar in [0, 1] (`layer.p`): at `p=1` the layer copies its skip input
    (an identity network, convex objective), at `p=0` it is the original
    layer, with no noise. `keras_gradnets.callbacks.MollifierScheduler`
    anneals it, and keeps in the layer (`callback_state("mollifier")`) the
    (not yet bias-corrected) moving average of the training loss that
    drives its schedule, so that a saved model resumes with it.

    Args:
        p: Float in [0, 1], the initial skip probability.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    state_ranges = {"p": (0, 1)}

    def __init__(self, p=1.0, **kwargs):
        super().__init__(**kwargs)
        self.p = self.add_state("p", p)

    def load_own_variables(self, store):
        variables = self._trainable_variables + self._non_trainable_variables
        if sum(key.isdigit() for key in store.keys()) == len(variables) + 1:
            index = next(i for i, v in enumerate(variables) if v is self.p)
            store = _from_version_0_2(store, index + 1)
        super().load_own_variables(store)

    def require_annealed(self):
        """Raises unless `p` is 0, where the layer has a plain equivalent."""
        require_end_point(
            self,
            "p",
            (0.0,),
            "Anneal p to 0 (for example with a schedule whose p_min is 0), "
            "or set `layer.p.assign(0.0)`, before finalizing.",
        )

    def get_config(self):
        return {**super().get_config(), "p": self.state_value("p")}


def _from_version_0_2(store, index):
    """The weights of a file saved by version 0.2, which kept the loss
    average in a variable at `index`, as this version saves them."""
    count = sum(key.isdigit() for key in store.keys())
    values = [store[str(i)] for i in range(count)]
    loss_sum = float(np.asarray(values.pop(index)))
    text = json.dumps({"loss_sum": loss_sum})
    return {
        **{key: store[key] for key in store.keys() if not key.isdigit()},
        **{str(i): value for i, value in enumerate(values)},
        "callback_mollifier": np.frombuffer(text.encode(), "uint8"),
    }
