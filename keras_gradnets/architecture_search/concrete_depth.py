"""ConcreteDepth: a learned depth, choosing among per-depth heads."""

import keras
from keras import ops

from keras_gradnets.architecture_search.concrete_layer import ConcreteLayer


@keras.saving.register_keras_serializable(package="keras_gradnets")
class ConcreteDepth(ConcreteLayer):
    """Learns the depth of a network from the outputs of a head per depth.

    Grathwohl et al., "Gradient-based Optimization of Neural Network
    Architecture", section 3, "Depth optimization": called on
    `[z_1, ..., z_D]`, the outputs of a classification head on each of the
    `D` blocks of a network (see `keras_gradnets.layers.attach_heads`), it
    holds a categorical distribution over the depth `d` (learnable
    `logits`, uniform at first). In training it outputs Eqn 5,
    `sum_d nu_d * z_d`, with `nu` a Concrete sample over the depths (see
    `temperature`); at inference the head of the most probable depth,
    `z_{argmax q}`, exactly. As in the paper, the heads should output
    logits (no softmax): compile with `from_logits=True`.

    The penalty `gamma * E_q[d]` (section 3: `r(d) = d`) is added to the
    model's losses with `add_loss`.

    `keras_gradnets.finalize` replaces it by its chosen head's output: the
    other heads and the blocks after the chosen depth leave the model.

    `temperature` is the layer's declared state (a float32 >= 0), annealed
    by `keras_gradnets.callbacks.TemperatureScheduler`; at 0 the sample is
    the hard Gumbel-max sample.

    Args:
        gamma: Float >= 0, the weight of the penalty `E_q[d]`. Defaults to
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
        inputs: A list `[z_1, ..., z_D]` of tensors of the same shape, the
            heads' outputs from the shallowest to the deepest.
        training: Python boolean: a Concrete mixture (training) or the most
            probable depth's head (inference).

    Example:

    ```python
    inputs = keras.Input((64,))
    heads = keras_gradnets.layers.attach_heads(
        inputs,
        blocks=[keras.layers.Dense(64, activation="relu") for _ in range(6)],
        head=keras.layers.Dense(10, name="head"),
    )
    outputs = keras_gradnets.layers.ConcreteDepth(gamma=1e-2)(heads)
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(x, y, epochs=20, callbacks=[
        keras_gradnets.callbacks.TemperatureScheduler()])
    shallow = keras_gradnets.finalize(model)  # blocks 1..d, head d
    ```
    """

    def build(self, input_shape):
        shapes = [tuple(shape) for shape in input_shape]
        if not shapes or any(shape != shapes[0] for shape in shapes):
            raise ValueError(
                f"Layer '{self.name}' (ConcreteDepth) needs a non-empty list "
                "of head outputs of the same shape, one per depth. "
                f"Received: shapes {shapes}"
            )
        self.build_logits(range(1, len(shapes) + 1))

    def call(self, inputs, training=None):
        self.add_penalty()
        stacked = ops.stack(inputs, axis=0)
        if not training:
            return ops.take(stacked, ops.argmax(self.logits), axis=0)
        choice = ops.cast(self.sample(), stacked.dtype)
        return ops.tensordot(choice, stacked, axes=1)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def chosen_depth(self):
        """The most probable depth (from 1), as a Python int."""
        return self.chosen_index() + 1

    def expected_depth(self):
        """`E_q[d]`, the expected depth, as a Python float."""
        return self.expected_size()

    def finalized_layers(self):
        """`[]`: an identity on the chosen depth's head (see
        `finalized_input`)."""
        return []

    def finalized_input(self):
        """The index of the input (head) the finalized model reads."""
        return self.chosen_index()
