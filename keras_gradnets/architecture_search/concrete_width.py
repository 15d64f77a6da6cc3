"""ConcreteWidth: a learned width for the units or channels before it."""

import itertools
import numbers

import keras
import numpy as np
from keras import ops

from keras_gradnets.architecture_search.concrete_layer import ConcreteLayer


def _check_widths(widths):
    if widths is None:
        return None
    if isinstance(widths, (list, tuple)):
        values = list(widths)
        if (
            values
            and all(
                isinstance(w, numbers.Integral)
                and not isinstance(w, bool)
                and w >= 1
                for w in values
            )
            and all(a < b for a, b in itertools.pairwise(values))
        ):
            return [int(w) for w in values]
    raise ValueError(
        "Invalid value received for argument `widths`. Expected `None` "
        "(every width from 1 to the number of units) or a non-empty list "
        "of strictly increasing integers >= 1, such as [8, 16, 32, 64]. "
        f"Received: widths={widths!r}"
    )


@keras.saving.register_keras_serializable(package="keras_gradnets")
class ConcreteWidth(ConcreteLayer):
    """Learns how many of the `K` units (or channels) before it to keep.

    Grathwohl et al., "Gradient-based Optimization of Neural Network
    Architecture", section 3, "Width optimization": a categorical
    distribution over the candidate widths `widths` (learnable `logits`,
    uniform at first). In training, a Concrete sample `nu` over the widths
    (see `temperature`) becomes the soft mask of Eqn 6,
    `m_i = sum over widths w_j >= i of nu_j` (unit `i` counted from 1: unit
    `i` is kept by every width of at least `i` units), and the layer
    outputs `inputs * m`. As the temperature goes to 0 the mask becomes the
    hard mask `[1] * k + [0] * (K - k)` of a sampled width `k`. (The
    paper's appendix prints `sum over j <= i`, which would keep the last
    units; this layer follows Eqn 6.) At inference it applies the hard mask
    of the most probable width.

    The penalty `gamma * E_q[k]` (section 3: `r(k_1..k_D) = sum k_l`) is
    added to the model's losses with `add_loss`.

    Put it right after the activation of a `Dense` or `Conv*` layer (units
    or channels on the last axis; a `BatchNormalization` or elementwise
    layers may sit between), and read it with a `Dense` or `Conv*` layer
    (zero-preserving layers such as `Dropout`, pooling or a ReLU may sit
    between). `keras_gradnets.finalize` then slices the layer before it to
    the chosen width, the layer after it to the matching input rows or
    channels, and removes the `ConcreteWidth`.

    In a residual stage, where every block adds into the same channels,
    the channels are one choice: call one `ConcreteWidth` after the
    activation that ends each block of the stage (with
    `keras_gradnets.insert_after` in a model that already exists). `finalize`
    then cuts every coupled layer together: the convolutions that write
    into the stage (projection shortcuts included), its batch norms and
    depthwise convolutions, the layers that read it, and a `Concatenate`
    at the stage's offset. A placement it could not cut exactly is refused
    when `TemperatureScheduler` starts training, with the reason. The
    penalty is added at every call, so a stage's width weighs once per
    block that it is called after.

    `temperature` is the layer's declared state (a float32 >= 0), annealed
    by `keras_gradnets.callbacks.TemperatureScheduler`; at 0 the sample is
    the hard Gumbel-max sample.

    Args:
        widths: `None` (every width from 1 to `K`) or a list of strictly
            increasing integers in [1, K], the candidate widths.
            Defaults to `None`.
        gamma: Float >= 0, the weight of the penalty `E_q[k]`. Defaults to
            `0.0` (no penalty).
        seed: Integer, the random seed of the Concrete samples. Defaults to
            `None`.
        temperature: Float >= 0, the initial temperature. Defaults to `0.1`,
            where the paper's annealing starts.
        logits_scale: Float >= 0, the initial `s` of `q = softmax(s *
            logits)`: 0 samples the choices uniformly (a warm-up), larger
            values make the distribution learn faster. Defaults to `1.0`;
            `TemperatureScheduler` sets it during `fit`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: A tensor whose last axis holds the `K` units or channels.
        training: Python boolean: a Concrete sample (training) or the most
            probable width (inference).

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu"),
        keras_gradnets.layers.ConcreteWidth(widths=[16, 32, 64, 128],
                                            gamma=1e-3),
        keras.layers.Dense(10),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(x, y, epochs=20, callbacks=[
        keras_gradnets.callbacks.TemperatureScheduler()])
    small = keras_gradnets.finalize(model)  # Dense(<chosen width>)
    ```
    """

    def __init__(
        self,
        widths=None,
        gamma=0.0,
        seed=None,
        temperature=0.1,
        logits_scale=1.0,
        **kwargs,
    ):
        super().__init__(
            gamma=gamma,
            seed=seed,
            temperature=temperature,
            logits_scale=logits_scale,
            **kwargs,
        )
        self.widths = _check_widths(widths)

    def build(self, input_shape):
        units = input_shape[-1]
        if units is None:
            raise ValueError(
                f"Layer '{self.name}' (ConcreteWidth) needs a known size of "
                f"the last axis. Received: input_shape={input_shape}"
            )
        widths = self.widths or list(range(1, units + 1))
        if widths[-1] > units:
            raise ValueError(
                "Invalid value received for argument `widths`. Expected "
                f"widths of at most {units}, the size of the last axis of "
                f"the input of layer '{self.name}'. Received: "
                f"widths={self.widths}"
            )
        self.units = units
        self.build_logits(widths)
        # Unit i (from 0) is kept by the widths from index cover[i] on; the
        # units past the largest width by none (index len(widths)).
        self._cover = np.searchsorted(np.asarray(widths), np.arange(units) + 1)

    def _mask(self, choice):
        """`m_i = sum_{w_j >= i} choice_j` for each unit (Eqn 6)."""
        tail = ops.flip(ops.cumsum(ops.flip(choice)))
        tail = ops.concatenate([tail, ops.zeros((1,), tail.dtype)])
        return ops.take(tail, self._cover)

    def call(self, inputs, training=None):
        choice = self.sample() if training else self.most_probable()
        self.add_penalty()
        return inputs * ops.cast(self._mask(choice), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def mask(self, training=False):
        """The mask of one call, as a NumPy array of the `K` units."""
        choice = self.sample() if training else self.most_probable()
        return ops.convert_to_numpy(self._mask(choice))

    def chosen_width(self):
        """The most probable width, as a Python int."""
        return int(self.sizes[self.chosen_index()])

    def expected_width(self):
        """`E_q[k]`, the expected width, as a Python float."""
        return self.expected_size()

    def finalized_layers(self):
        """`[]`: the layers around it are cut to the chosen width instead
        (see `finalized_width`)."""
        return []

    def finalized_width(self):
        """The number of units `finalize` keeps before this layer."""
        return self.chosen_width()

    def get_config(self):
        return {**super().get_config(), "widths": self.widths}
