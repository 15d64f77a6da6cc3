"""The state every mollified layer and cell declares."""

from keras_gradnets.core.finalize import require_end_point
from keras_gradnets.core.state import StatefulLayer
from keras_gradnets.core.state import add_scalar_weight


class MollifiedLayer(StatefulLayer):
    """Base of the mollified layers and cells: the annealed `p`.

    `p` is the declared state (`state_ranges`), a non-trainable float32
    scalar in [0, 1] (`layer.p`): at `p=1` the layer copies its skip input
    (an identity network, convex objective), at `p=0` it is the original
    layer, with no noise. `keras_gradnets.callbacks.MollifierScheduler`
    anneals it, and keeps in `layer.loss_average` the (not yet
    bias-corrected) moving average of the training loss that drives its
    schedule, so that a saved model resumes with it.

    Args:
        p: Float in [0, 1], the initial skip probability.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    state_ranges = {"p": (0, 1)}

    def __init__(self, p=1.0, **kwargs):
        super().__init__(**kwargs)
        self.p = self.add_state("p", p)
        self.loss_average = add_scalar_weight(self, "loss_average", 0.0)

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
