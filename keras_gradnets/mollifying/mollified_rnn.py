"""Mollified LSTM and GRU cells (Gulcehre et al., section 6)."""

import math

import keras
from keras import ops

from keras_gradnets.core.checks import check_number
from keras_gradnets.core.config import serialized
from keras_gradnets.core.finalize import built_with_weights
from keras_gradnets.mollifying.mollified_layer import MollifiedLayer

_MEAN_HALF_NORMAL = math.sqrt(2.0 / math.pi)  # E|xi| for xi ~ N(0, 1)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class BaseMollifiedCell(MollifiedLayer):
    """Weights, `p` and the noisy gates shared by the mollified cells.

    A gate with pre-activation `x` and target `gamma` outputs
    `hard_sigmoid(x + p * sigma(x) * |xi|)` with
    `sigma(x) = (hard_sigmoid^-1(gamma) - x) / E|xi|` (Eqn 28): at `p=0` it
    is the plain gate, at `p=1` its expectation is `gamma`. At inference (and
    with `deterministic=True`) the noise is replaced by its expectation.
    The cell's state carries the time step `t` (from 1) that the targets
    `1/t` and `1 - 1/t` need, and a phase in [0, 1) per noisy gate unit:
    JAX runs the recurrence in a scan, where a random generator cannot
    advance, so each sequence draws its phases once (in
    `get_initial_state`), each step moves them by the golden-ratio additive
    recurrence, and `|xi| = sqrt(2) * erfinv(phase)` is half-normal at every
    step (though not independent from step to step).
    """

    gates = 0
    noisy_gates = 0
    plain_cell_class = None
    extra_plain = {}

    def __init__(
        self,
        units,
        p=1.0,
        deterministic=False,
        seed=None,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(p=p, **kwargs)
        self.units = check_number("units", units, low=1, integer=True)
        self.deterministic = bool(deterministic)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(
            recurrent_initializer
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.gates * self.units),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, self.gates * self.units),
            initializer=self.recurrent_initializer,
            name="recurrent_kernel",
        )
        self.bias = self.add_weight(
            shape=self.bias_shape(),
            initializer=self.bias_initializer,
            name="bias",
        )

    def gates_noise(self, phase, training):
        """Next phases and the half-normal noise of each noisy gate."""
        phase = phase + _GOLDEN
        phase = phase - ops.floor(phase)
        if not training or self.deterministic:
            return phase, [None] * self.noisy_gates
        noise = math.sqrt(2.0) * ops.erfinv(ops.minimum(phase, 1 - 1e-6))
        return phase, ops.split(noise, self.noisy_gates, axis=-1)

    def gate(self, x, target, noise):
        """The mollified hard-sigmoid gate pulled towards `target`.

        `noise` is `|xi|` (half-normal), or `None` for its expectation.
        """
        p = ops.cast(self.p, x.dtype)
        pull = 6.0 * (target - 0.5) - x  # hard_sigmoid^-1(target) - x
        if noise is None:
            return ops.hard_sigmoid(x + p * pull)
        return ops.hard_sigmoid(x + p * pull * noise / _MEAN_HALF_NORMAL)

    def get_initial_state(self, batch_size=None):
        *zeros, phase_size = self.state_size
        return [
            ops.zeros((batch_size, size), dtype=self.compute_dtype)
            for size in zeros
        ] + [
            keras.random.uniform(
                (batch_size, phase_size),
                seed=self.seed_generator,
                dtype=self.compute_dtype,
            )
        ]

    def finalized_layers(self):
        """The Keras cell equal to this one at `p=0`, with its weights.

        Returns:
            `[cell]`, a built `LSTMCell` or `GRUCell` with hard-sigmoid
            gates; `keras_gradnets.finalize` rebuilds the `RNN` around it.

        Raises:
            ValueError: if `p` is not 0.
        """
        self.require_annealed()
        cell = self.plain_cell_class(
            self.units,
            recurrent_activation="hard_sigmoid",
            dtype=self.dtype_policy,
            name=self.name,
            **self.extra_plain,
        )
        weights = (self.kernel, self.recurrent_kernel, self.bias)
        return [built_with_weights(cell, (None, self.kernel.shape[0]), weights)]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "deterministic": self.deterministic,
            "seed": self.seed,
            **serialized(
                self,
                "kernel_initializer",
                "recurrent_initializer",
                "bias_initializer",
            ),
        }


@keras.saving.register_keras_serializable(package="keras_gradnets")
class MollifiedLSTMCell(BaseMollifiedCell):
    """An LSTM cell whose gates are mollified (Gulcehre et al., section 6).

    Gates use hard sigmoids made noisy by Eqn 28 so that at `p=1`, in
    expectation, the input gate is `1/t`, the forget gate `1 - 1/t` and the
    output gate 1: the cell state is the running mean of the candidates, a
    bag-of-words model. At `p=0` the cell is
    `keras.layers.LSTMCell(units, recurrent_activation="hard_sigmoid")`
    with the same weights (same layout: gates i, f, c, o). Use it in
    `keras.layers.RNN`; the state is `[h, c, t, phase]` (see
    `BaseMollifiedCell` for the phase that drives the noise).

    Args:
        units: Positive integer, dimensionality of the output space.
        p: Float in [0, 1], the initial mollification. Defaults to `1.0`.
        deterministic: Whether training uses the noise's expectation too.
        seed: Integer, the random seed. Defaults to `None`.
        kernel_initializer: As for `keras.layers.LSTMCell`.
        recurrent_initializer: As for `keras.layers.LSTMCell`.
        bias_initializer: As for `keras.layers.LSTMCell`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: 2D tensor `(batch, features)`, one time step.
        states: List `[h, c, t, phase]` of the previous step.
        training: Python boolean: sample the noise, or use its expectation.

    Example:

    ```python
    layer = keras.layers.RNN(keras_gradnets.layers.MollifiedLSTMCell(32))
    model = keras.Sequential([keras.Input((20, 8)), layer,
                              keras.layers.Dense(1)])
    ```
    """

    gates = 4
    noisy_gates = 3
    plain_cell_class = keras.layers.LSTMCell
    extra_plain = {}

    @property
    def state_size(self):
        return [self.units, self.units, 1, 3 * self.units]

    @property
    def output_size(self):
        return self.units

    def bias_shape(self):
        return (4 * self.units,)

    def call(self, inputs, states, training=False):
        h_prev, c_prev, t_prev, phase = states
        t = t_prev + 1
        phase, (noise_i, noise_f, noise_o) = self.gates_noise(phase, training)
        z = (
            ops.matmul(inputs, self.kernel)
            + ops.matmul(h_prev, self.recurrent_kernel)
            + self.bias
        )
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
        i = self.gate(z_i, 1 / t, noise_i)
        f = self.gate(z_f, 1 - 1 / t, noise_f)
        o = self.gate(z_o, 1.0, noise_o)
        c = f * c_prev + i * ops.tanh(z_c)
        h = o * ops.tanh(c)
        return h, [h, c, t, phase]


@keras.saving.register_keras_serializable(package="keras_gradnets")
class MollifiedGRUCell(BaseMollifiedCell):
    """A GRU cell whose gates are mollified (Gulcehre et al., section 6).

    Gates use hard sigmoids made noisy by Eqn 28 so that at `p=1`, in
    expectation, the reset gate is 1 and the update gate `1 - 1/t` (in
    Keras's convention `h = z * h_prev + (1 - z) * candidate`, the paper's
    update gate `1/t`): the state is the running mean of the candidates. At
    `p=0` the cell is `keras.layers.GRUCell(units,
    recurrent_activation="hard_sigmoid")` (with `reset_after=True`) with the
    same weights. Use it in `keras.layers.RNN`; the state is
    `[h, t, phase]`.

    Arguments are those of `MollifiedLSTMCell`; the call takes `states`
    `[h, t, phase]`.
    """

    gates = 3
    noisy_gates = 2
    plain_cell_class = keras.layers.GRUCell
    extra_plain = {"reset_after": True}

    @property
    def state_size(self):
        return [self.units, 1, 2 * self.units]

    @property
    def output_size(self):
        return self.units

    def bias_shape(self):
        return (2, 3 * self.units)

    def call(self, inputs, states, training=False):
        h_prev, t_prev, phase = states
        t = t_prev + 1
        phase, (noise_z, noise_r) = self.gates_noise(phase, training)
        input_bias, recurrent_bias = self.bias[0], self.bias[1]
        x_z, x_r, x_h = ops.split(
            ops.matmul(inputs, self.kernel) + input_bias, 3, axis=-1
        )
        r_z, r_r, r_h = ops.split(
            ops.matmul(h_prev, self.recurrent_kernel) + recurrent_bias,
            3,
            axis=-1,
        )
        z = self.gate(x_z + r_z, 1 - 1 / t, noise_z)
        r = self.gate(x_r + r_r, 1.0, noise_r)
        candidate = ops.tanh(x_h + r * r_h)
        h = z * h_prev + (1 - z) * candidate
        return h, [h, t, phase]
