"""The shared part of the Concrete architecture layers."""

import keras
import numpy as np
from keras import ops

from keras_gradnets.core.checks import check_number
from keras_gradnets.core.state import StatefulLayer

# The smallest normal float32: temperatures below it (only 0 is) give the
# sample's limit, the one-hot vector of the perturbed logits' argmax.
_TINY = float(np.finfo("float32").tiny)
_EPS = float(np.finfo("float32").eps)


class ConcreteLayer(StatefulLayer):
    """A categorical distribution over choices, sampled with Concrete.

    Grathwohl et al., section 3, "Concrete gradient estimation": the layer
    holds learnable `logits` over its `n` choices (the distribution
    `q = softmax(logits)`, uniform at first) and, in training, draws a
    relaxed one-hot sample `softmax((logits + G) / temperature)`, `G`
    standard Gumbel noise (Maddison et al.; Jang et al.), through which the
    gradient reaches the logits. `temperature` is the layer's declared
    state (a float32 >= 0), which
    `keras_gradnets.callbacks.TemperatureScheduler` anneals; as it goes to
    0 the samples become one-hot, and at 0 exactly they are the one-hot
    Gumbel-max sample (with no gradient to the logits). At inference the
    layer uses the most probable choice, `argmax(logits)`.

    `logits_scale`, the layer's second declared state (a float32 >= 0),
    multiplies the logits wherever they are used: `q = softmax(s * logits)`.
    At `s = 0` the samples are uniform over the choices and the logits get
    no gradient: the warm-up in which the shared weights train under
    uniformly sampled architectures before the distribution learns
    (Cai et al., once-for-all, section 3.2; Wan et al., FBNetV2). For
    `s > 0` the gradient of the logits is scaled by `s` too, so under a
    scale-invariant optimizer (Adam, RMSprop) the distribution learns `s`
    times as fast as the weights (`s**2` under SGD): the architecture's
    own learning rate, within the model's single optimizer.

    The complexity penalty `gamma * E_q[r]` (Eqn 2, 4) is added with
    `add_loss` on every call, with `r` the choice's size.

    Subclasses call `build_logits(sizes)` in `build`, with the size of each
    choice (a width, a depth).
    """

    state_ranges = {"temperature": (0, None), "logits_scale": (0, None)}

    def __init__(
        self, gamma=0.0, seed=None, temperature=0.1, logits_scale=1.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.gamma = float(check_number("gamma", gamma, low=0))
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.temperature = self.add_state("temperature", temperature)
        self.logits_scale = self.add_state("logits_scale", logits_scale)

    def build_logits(self, sizes):
        """Creates the logits over choices of the given `sizes`."""
        self.sizes = np.asarray(sizes, "float32")
        self.logits = self.add_weight(
            shape=(len(self.sizes),), initializer="zeros", name="logits"
        )

    def sample(self):
        """A relaxed one-hot sample over the choices (float32)."""
        uniform = keras.random.uniform(
            self.logits.shape,
            minval=_EPS,
            maxval=1.0 - _EPS,
            seed=self.seed_generator,
        )
        perturbed = self._scaled_logits() - ops.log(-ops.log(uniform))
        # Shifting the maximum to 0 keeps the division finite at any
        # temperature; the softmax is unchanged.
        perturbed = perturbed - ops.stop_gradient(ops.max(perturbed))
        temperature = ops.maximum(ops.cast(self.temperature, "float32"), _TINY)
        return ops.softmax(perturbed / temperature)

    def _scaled_logits(self):
        """`s * logits`, in float32: the logits of `q`."""
        return ops.cast(self.logits_scale, "float32") * ops.cast(
            self.logits, "float32"
        )

    def most_probable(self):
        """The one-hot vector of the most probable choice (float32)."""
        return ops.one_hot(ops.argmax(self.logits), self.logits.shape[0])

    def add_penalty(self):
        """Adds `gamma * E_q[size]` to the model's losses."""
        if self.gamma > 0:
            probabilities = ops.softmax(self._scaled_logits())
            sizes = ops.convert_to_tensor(self.sizes, "float32")
            self.add_loss(self.gamma * ops.sum(probabilities * sizes))

    def probabilities(self):
        """`q`, the probability of each choice, as a NumPy array."""
        return ops.convert_to_numpy(ops.softmax(self._scaled_logits()))

    def top_probability(self):
        """The probability of the most probable choice, as a Python float."""
        return float(np.max(self.probabilities()))

    def expected_size(self):
        """`E_q[size]`, as a Python float."""
        return float(np.sum(self.probabilities() * self.sizes))

    def chosen_index(self):
        """The index of the most probable choice, as a Python int."""
        return int(np.argmax(ops.convert_to_numpy(self.logits)))

    def load_own_variables(self, store):
        count = sum(key.isdigit() for key in store.keys())
        variables = self._trainable_variables + self._non_trainable_variables
        if count == len(variables) - 1 and variables[-1] is self.logits_scale:
            # A file saved by version 0.2, before `logits_scale`: the
            # logits were used as they are, at scale 1.
            store = {key: store[key] for key in store.keys()}
            store[str(count)] = np.float32(1.0)
        super().load_own_variables(store)

    def get_config(self):
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "seed": self.seed,
            "temperature": self.state_value("temperature"),
            "logits_scale": self.state_value("logits_scale"),
        }
