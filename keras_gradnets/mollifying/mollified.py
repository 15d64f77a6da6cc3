"""Mollified layers: noisy activations with unitwise stochastic skips."""

import keras
from keras import ops

from keras_gradnets.core.checks import check_choice
from keras_gradnets.core.checks import check_number
from keras_gradnets.core.config import serialized
from keras_gradnets.core.finalize import built_with_weights
from keras_gradnets.mollifying.mollified_layer import MollifiedLayer
from keras_gradnets.mollifying.mollify import check_activation
from keras_gradnets.mollifying.mollify import mollified_activation


class BaseMollified(MollifiedLayer):
    """The mollified activation with its per-unit parameters `a`.

    `p` is annealed by `keras_gradnets.callbacks.MollifierScheduler`.
    """

    def __init__(
        self,
        activation="sigmoid",
        c=100.0,
        p=1.0,
        deterministic=False,
        seed=None,
        a_initializer=None,
        **kwargs,
    ):
        super().__init__(p=p, **kwargs)
        self.activation = check_activation(activation)
        self.c = float(check_number("c", c, low=0))
        self.deterministic = bool(deterministic)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.a_initializer = keras.initializers.get(
            a_initializer
            or keras.initializers.RandomUniform(-2.0, 2.0, seed=seed)
        )

    def _build_a(self, units):
        self.a = self.add_weight(
            shape=(units,), initializer=self.a_initializer, name="a"
        )

    def mollify(self, x, skip, training):
        return mollified_activation(
            x,
            skip,
            self.p,
            self.a,
            self.activation,
            self.c,
            self.seed_generator,
            stochastic=bool(training) and not self.deterministic,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "activation": self.activation,
            "c": self.c,
            "deterministic": self.deterministic,
            "seed": self.seed,
            "a_initializer": keras.initializers.serialize(self.a_initializer),
        }


@keras.saving.register_keras_serializable(package="keras_gradnets")
class MollifiedDense(BaseMollified):
    """A dense layer with a mollified activation and a stochastic skip path.

    Gulcehre et al., "Mollifying Networks", Algorithm 1 and Eqns 21-25: with
    `x = W h + b`, each unit outputs, with probability `p`, the matching unit
    of the skip path (the layer's input), and otherwise the noisy activation
    `f(x) + sgn(delta) * min(|delta|, p * c * sigma * |xi|)`, where
    `delta = u(x) - f(x)` is the gap to the activation's linear
    approximation `u` at 0, `sigma = (sigmoid(a * delta) - 0.5)^2` with a
    learned per-unit `a` (initialised from U[-2, 2]) and `xi ~ N(0, 1)`.
    ReLU uses the linearising form of Eqns 26-27 (`u(x) = x`). At inference,
    or with `deterministic=True` (the paper's Figure 6 variant), the layer
    outputs the expectation over the noise and the skip decisions.

    `p=1` gives exactly the skip path and `p=0` exactly
    `activation(W h + b)` with no randomness.

    Args:
        units: Positive integer, output dimension.
        activation: One of `"sigmoid"`, `"tanh"`, `"hard_sigmoid"`,
            `"relu"`. Defaults to `"sigmoid"`.
        c: Non-negative float, the noise constant `c`. Defaults to `100.0`
            (the paper's MNIST setting, section 8.1).
        skip: How the skip path gets `units` dimensions: `"identity"` (the
            input must have `units` features), `"pad"` (zero-pad or crop the
            input), `"project"` (a learned linear projection), or `"auto"`
            (identity when the widths match, otherwise pad). Defaults to
            `"auto"`.
        p: Float in [0, 1], the initial skip probability. Defaults to `1.0`,
            the identity network training starts from.
        deterministic: Whether training uses the expectations too.
        seed: Integer, the random seed. Defaults to `None`.
        use_bias: Whether the layer uses a bias. Defaults to `True`.
        kernel_initializer: As for `keras.layers.Dense`.
        bias_initializer: As for `keras.layers.Dense`.
        kernel_regularizer: As for `keras.layers.Dense`.
        bias_regularizer: As for `keras.layers.Dense`.
        a_initializer: Initializer of `a`. Defaults to U[-2, 2].
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Tensor of shape `(..., input_dim)`.
        training: Python boolean: sample the noise and the skip decisions
            (training) or use their expectations (inference).

    Example:

    ```python
    model = keras.Sequential([keras.Input((40,))]
        + [keras_gradnets.layers.MollifiedDense(100) for _ in range(6)]
        + [keras.layers.Dense(1, activation="sigmoid")])
    model.fit(x, y, callbacks=[keras_gradnets.callbacks.MollifierScheduler(
        keras_gradnets.schedules.MollifyExponential(k=100))])
    ```
    """

    def __init__(
        self,
        units,
        activation="sigmoid",
        c=100.0,
        skip="auto",
        p=1.0,
        deterministic=False,
        seed=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        a_initializer=None,
        **kwargs,
    ):
        super().__init__(
            activation=activation,
            c=c,
            p=p,
            deterministic=deterministic,
            seed=seed,
            a_initializer=a_initializer,
            **kwargs,
        )
        self.units = check_number("units", units, low=1, integer=True)
        self.skip = check_choice(
            "skip", skip, ("auto", "identity", "pad", "project")
        )
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        self.skip_mode = self.skip
        if self.skip == "auto":
            self.skip_mode = "identity" if input_dim == self.units else "pad"
        if self.skip_mode == "identity" and input_dim != self.units:
            raise ValueError(
                f"Layer '{self.name}' has skip='identity', which needs inputs "
                f"with units={self.units} features. Received: input_shape="
                f"{tuple(input_shape)}. Use skip='pad' or skip='project'."
            )
        self.kernel = self.add_weight(
            shape=(input_dim, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            name="kernel",
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                name="bias",
            )
        self.skip_kernel = None
        if self.skip_mode == "project":
            self.skip_kernel = self.add_weight(
                shape=(input_dim, self.units),
                initializer="glorot_uniform",
                name="skip_kernel",
            )
        self._build_a(self.units)

    def _skip_path(self, inputs):
        if self.skip_mode == "project":
            return ops.matmul(inputs, self.skip_kernel)
        input_dim = inputs.shape[-1]
        if self.skip_mode == "identity" or input_dim == self.units:
            return inputs
        if input_dim > self.units:
            return inputs[..., : self.units]
        padding = [[0, 0]] * (len(inputs.shape) - 1)
        return ops.pad(inputs, padding + [[0, self.units - input_dim]])

    def call(self, inputs, training=None):
        x = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            x = x + self.bias
        return self.mollify(x, self._skip_path(inputs), training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def finalized_layers(self):
        """A `Dense` equal to this layer at `p=0`.

        Raises:
            ValueError: if `p` is not 0.
        """
        self.require_annealed()
        dense = keras.layers.Dense(
            self.units,
            activation=self.activation,
            use_bias=self.use_bias,
            dtype=self.dtype_policy,
            name=self.name,
        )
        weights = [self.kernel] + ([self.bias] if self.use_bias else [])
        return [
            built_with_weights(dense, (None, self.kernel.shape[0]), weights)
        ]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "skip": self.skip,
            "use_bias": self.use_bias,
            **serialized(
                self,
                "kernel_initializer",
                "bias_initializer",
                "kernel_regularizer",
                "bias_regularizer",
            ),
        }


@keras.saving.register_keras_serializable(package="keras_gradnets")
class MollifiedActivation(BaseMollified):
    """The mollified activation of `MollifiedDense`, for your own layers.

    Called on `[pre_activation, previous_output]`: applies Algorithm 1 of
    Gulcehre et al. to `pre_activation` (the output of your affine or
    convolutional layer) and the unitwise stochastic skip connection to
    `previous_output` (the skip path), which must have the same shape. See
    `MollifiedDense` for the formulas; `a` has one entry per channel (the
    last axis).

    Args:
        activation: One of `"sigmoid"`, `"tanh"`, `"hard_sigmoid"`,
            `"relu"`. Defaults to `"sigmoid"`.
        c: Non-negative float, the noise constant. Defaults to `100.0`.
        p: Float in [0, 1], the initial skip probability. Defaults to `1.0`.
        deterministic: Whether training uses the expectations too.
        seed: Integer, the random seed. Defaults to `None`.
        a_initializer: Initializer of `a`. Defaults to U[-2, 2].
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: List `[pre_activation, previous_output]` of two tensors of
            the same shape.
        training: Python boolean, as for `MollifiedDense`.

    Example:

    ```python
    h = keras.layers.Conv2D(16, 3, padding="same")(inputs)   # 16 channels
    x = keras.layers.Conv2D(16, 3, padding="same")(h)
    h = keras_gradnets.layers.MollifiedActivation("relu")([x, h])
    ```
    """

    def build(self, input_shape):
        pre_shape, skip_shape = input_shape
        if tuple(pre_shape) != tuple(skip_shape):
            raise ValueError(
                f"Layer '{self.name}' needs `[pre_activation, "
                "previous_output]` of the same shape. Received: shapes "
                f"{tuple(pre_shape)} and {tuple(skip_shape)}."
            )
        self._build_a(pre_shape[-1])

    def call(self, inputs, training=None):
        pre_activation, previous_output = inputs
        return self.mollify(pre_activation, previous_output, training)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def finalized_layers(self):
        """An `Activation` equal to this layer at `p=0`, on its first input.

        `keras_gradnets.finalize` calls it on `pre_activation` only
        (`finalized_input()`), so the skip path leaves the model when
        nothing else reads it.

        Raises:
            ValueError: if `p` is not 0.
        """
        self.require_annealed()
        return [
            keras.layers.Activation(
                self.activation, dtype=self.dtype_policy, name=self.name
            )
        ]

    def finalized_input(self):
        """The index of the input the finalized layers read: 0."""
        return 0
