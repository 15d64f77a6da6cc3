"""Dense layer with a growing active part."""

import keras
import numpy as np
from keras import ops

from keras_gradnets.dynamic_capacity.dynamic_layer import DynamicLayer


@keras.saving.register_keras_serializable(package="keras_gradnets")
class DynamicDense(DynamicLayer):
    """Densely connected layer that uses and trains a growing part of itself.

    The layer is allocated with `units` outputs split into `chunks` equal
    chunks (thesis, section 4.1). It computes
    `activation(inputs[..., :input_units] @ kernel[:input_units, :active] +
    bias[:active])` for its first `active_units` outputs and outputs exactly
    zero for the others, so the output shape stays `(..., units)` and any
    layer can follow. The first `frozen_units` outputs are frozen: their
    weights stay bit-identical under any Keras optimizer (section 4.2), while
    the gradient still flows through them to earlier layers. This is the
    `stop_gradient` on slices of Listing 4.1, with the slices fixed at trace
    time so that inactive units cost no matrix work.

    When the layer's input comes from another dynamic layer, it reads only
    that layer's active units (`input_units`). The models a layer belongs to
    are linked by `link_dynamic_layers(model)`, which the `CapacityGrowth`
    callback and `finalize` call.

    Units that become active are initialized by `kernel_initializer` drawn
    at the active shape (`(input_units, active_units)`), so fan-based scales
    suit the active size and not the full allocation (thesis 4.4.1). With
    `growth_init="function_preserving"` (the default) the weights that read
    the new units start at zero, so the network computes the same function
    at the moment of growth and the loss does not jump (the zero outgoing
    weights of Net2Net's function-preserving transforms, Chen et al. 2016);
    the new units train from their first step, since their incoming weights
    are drawn and their outputs reach the loss through the zero weights'
    gradients. The readers are found through layers that keep each channel
    apart and zeros at zero (activations with f(0) = 0, dropout, pooling,
    `Flatten`); a layer read otherwise (through a normalization, an `Add`,
    or as the model output) is refused when linked. With
    `growth_init="random"` the readers of the new units get fresh weights
    for them, the function changes at the growth, and any reader is
    accepted: `benchmarks/growth_trigger.py` measures both. With
    `growth_init="gradmax"` it is the other way round, as GradMax (Evci et
    al. 2022) grows: new units start with zero incoming weights and
    outgoing weights that make the gradient of the incoming ones largest,
    the top singular vectors of the loss's gradient correlation
    (`initialize_gradmax`, which `CapacityGrowth(data=(x, y))` calls).
    The function is kept; the activation needs f(0) = 0 and a nonzero
    slope at 0 (tanh, gelu, silu, linear; not ReLU), and the readers
    must be `Dense` or `DynamicDense` layers.

    Args:
        units: Positive integer, the full (maximum) number of outputs.
        chunks: Positive integer, at most `units`: in how many chunks the
            capacity grows. Chunk sizes differ by at most one.
        initial_chunks: Integer in `[1, chunks]`, the chunks active at first.
            Defaults to 1.
        activation: Activation function applied to the active outputs.
        use_bias: Whether the layer uses a bias. Defaults to `True`.
        growth_init: `"function_preserving"`, `"gradmax"` or `"random"`,
            see above.
            Defaults to `"function_preserving"`.
        kernel_initializer: Initializer of the kernel, drawn at the active
            shape. Defaults to `"glorot_uniform"`.
        bias_initializer: Initializer of the bias. Defaults to `"zeros"`.
        seed: Integer >= 0, seeds what each growth draws (the new units'
            weights and, with `growth_init="random"`, their readers' rows)
            with unseeded initializers. It is saved in the config, so a
            model loaded from a checkpoint grows as the saved one would
            have. Defaults to a seed drawn at construction (which
            `keras.utils.set_random_seed` makes reproducible).
        **kwargs: Base layer arguments such as `name` and `dtype`.

    Call arguments:
        inputs: Tensor of shape `(..., input_dim)`.
        training: Python boolean, whether the call is in training mode.

    Example:

    ```python
    hidden = keras_gradnets.layers.DynamicDense(500, chunks=5,
                                                activation="tanh")
    model = keras.Sequential([keras.Input((1,)), hidden,
                              keras.layers.Dense(1)])
    model.compile("adam", "mse")
    hidden.active_units  # 100
    model.fit(x, y, epochs=50,
              callbacks=[keras_gradnets.callbacks.CapacityGrowth(patience=3)])
    hidden.grow()  # by hand: next chunk, freeze the trained ones
    ```
    """

    def _check_gradmax(self):
        """GradMax starts new units with zero incoming weights: they output
        `f(0)`, which must be 0 to keep the function, and learn through
        `f'(0)`, which must exist and not be 0 (not ReLU's kink)."""
        step = 1e-3
        f = ops.convert_to_numpy(
            self.activation(ops.convert_to_tensor([-step, 0.0, step]))
        )
        left, right = (f[1] - f[0]) / step, (f[2] - f[1]) / step
        if f[1] != 0 or right == 0 or not np.isclose(left, right, rtol=1e-2):
            raise ValueError(
                "growth_init='gradmax' starts new units with zero incoming "
                "weights, so it needs an activation with f(0) = 0 and a "
                "nonzero slope at 0 (linear, tanh, gelu, silu, elu). "
                "Received: activation="
                f"{getattr(self.activation, '__name__', self.activation)!r}. "
                "Pass "
                "growth_init='function_preserving' for this activation."
            )

    def _kernel_shape(self, input_dim, units):
        return (input_dim, units)

    def _apply(self, inputs, kernel, bias):
        outputs = ops.matmul(inputs, kernel)
        if bias is not None:
            outputs = ops.add(outputs, bias)
        return outputs

    def _plain_layer(self, units):
        return keras.layers.Dense(units, **self._plain_options())

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)
