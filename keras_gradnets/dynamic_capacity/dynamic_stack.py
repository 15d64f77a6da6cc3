"""A stack of residual blocks that grows in depth (G_stack, MIDAS)."""

import copy

import keras
import numpy as np
from keras import ops

from keras_gradnets.core.checks import check_choice
from keras_gradnets.core.checks import check_number
from keras_gradnets.core.state import StatefulLayer
from keras_gradnets.core.state import add_watched_variable
from keras_gradnets.dynamic_capacity import links
from keras_gradnets.dynamic_capacity.dynamic_layer import hold_gradients


def _depth_assigned(layer, variable):
    """Keeps the Python count of active blocks in step with its variable
    (`set_weights`, loading, JAX's state sync), as dynamic layers do."""
    value = variable.host_value
    if value is None:
        value = int(np.asarray(ops.convert_to_numpy(variable)))
    layer._active_cache = int(value)


def _copies(block, count):
    """`count` new layers made from `block`'s config (a layer or its
    serialized config), none of them shared with another.

    The config is serialized once: inside `load_model`, serializing the
    same object again marks it as shared, and Keras would then give back
    one object for every copy.
    """
    if isinstance(block, keras.layers.Layer):
        block = keras.saving.serialize_keras_object(block)
    return [
        keras.saving.deserialize_keras_object(copy.deepcopy(block))
        for _ in range(count)
    ]


def _block_order(initial_depth, active_blocks, placement):
    """The indices of the active blocks in the order they run.

    The first `initial_depth` blocks run in their order; each later block
    goes on top (`"top"`) or right after the middle block of the blocks
    before it (`"middle"`). The order is a function of the depth alone,
    so it needs no state of its own: saving the depth saves it.
    """
    order = list(range(min(initial_depth, active_blocks)))
    for j in range(len(order), active_blocks):
        if placement == "top":
            order.append(j)
        else:
            order.insert((len(order) - 1) // 2 + 1, j)
    return tuple(order)


@keras.saving.register_keras_serializable(package="keras_gradnets")
class DynamicStack(StatefulLayer):
    """A stack of `depth` copies of a block, of which the first ones run.

    Depth growth by stacking (Du et al. 2024, "Stacking Your Transformers",
    G_stack): the stack is allocated at its final depth, the first
    `active_blocks` run and the others are skipped (they cost no compute;
    a compiled function is traced again once the count changes, as for
    `DynamicDense`). `grow(n)` activates `n` more blocks and copies
    trained blocks into them. Where the copies go is `placement`:

    * `"top"`: the first blocks are copied on top of the stack, as G_stack
      stacks the trained model on itself.
    * `"middle"`: the middle block is copied and the copy runs right after
      it, as MIDAS grows a model in its middle (Saunshi et al. 2024, "On
      the Inductive Bias of Stacking Towards Improving Reasoning", with
      blocks of one layer); `n` blocks are `n` such insertions.

    Each block enters through a gate: block `i` computes
    `x + a_i * (block_i(x) - x)`, with `a_i` a trainable scalar (the
    ReZero gate of Bachlechner et al. 2020), 1 for the blocks active from
    the start and `grown_gate` for a grown block: 0 (the default) keeps
    the network's function exactly at the growth and the new block's
    weight in it is learned; 1 stacks as G_stack does.

    With `ramp_steps`, a grown block also enters on a ramp, as DropIn's
    skip path fades out (Smith et al. 2016, Section 3): block `i` computes
    `x + a_i * r_i * (block_i(x) - x)`, where `r_i` is 0 at the growth and
    rises by `1 / ramp_steps` after each training step the block runs, to
    1. The function is kept at the growth whatever `grown_gate`; with
    `grown_gate=1` the stack ends as G_stack's and gets there gradually.
    The step counts are saved with the weights (`ramp_counts`), and any
    call with `training=True` counts as a step, as it updates a
    `BatchNormalization`'s moving statistics.

    Inactive blocks are held exactly by the optimizer once the model is
    linked (`link_dynamic_layers`, which `CapacityGrowth` calls): no
    momentum or weight decay moves them, and their optimizer slots stay at
    zero until they are grown. In a `fit` without linking they get no
    gradient, and Keras warns that they have none. `CapacityGrowth` grows
    a `DynamicStack` as it grows dynamic layers (one block per growth);
    `keras_gradnets.finalize` returns the active blocks as plain layers.

    Args:
        block: A Keras layer whose output has the shape of its input (a
            residual block, a transformer encoder layer). The stack holds
            `depth` copies made from its config; `block` itself is not used.
        depth: Integer >= 2, the final number of blocks.
        initial_depth: Integer in [1, depth], the blocks active at first.
            Defaults to 1.
        placement: `"top"` or `"middle"`, where grown blocks go, see
            above. Defaults to `"top"`.
        blocks_per_growth: Integer >= 1, the blocks a growth adds
            (`grow()` without a count, and each growth of
            `CapacityGrowth`). G_stack doubles the depth: pass
            `initial_depth`. Defaults to 1.
        grown_gate: Number in [0, 1], the gate a grown block starts with.
            0 keeps the function at the growth and the network learns how
            much of the block to use; 1 is G_stack's plain stacking, which
            changes the function at the growth. Measured on a character
            level language model (`benchmarks/depth_stacking.py`), a gate
            learned from 0 stays small and the grown model ends above the
            deep one trained from scratch; see the dynamic-capacity page.
            Defaults to 0.
        ramp_steps: Integer >= 0, the training steps over which a grown
            block's ramp rises from 0 to 1, see above; 0 for no ramp.
            Defaults to 0.
        **kwargs: Base layer arguments such as `name` and `dtype`.

    Call arguments:
        inputs: The block's input.
        training: Python boolean, passed to the blocks.

    Example:

    ```python
    block = keras.Sequential([keras.layers.Dense(64, activation="relu")])
    model = keras.Sequential([
        keras.Input((64,)),
        keras_gradnets.layers.DynamicStack(block, depth=8, initial_depth=2),
        keras.layers.Dense(10),
    ])
    model.compile("adam", "mse")
    model.fit(x, y, epochs=30, callbacks=[
        keras_gradnets.callbacks.CapacityGrowth(grow_at=[0.25, 0.5])])
    ```
    """

    def __init__(
        self,
        block,
        depth,
        initial_depth=1,
        placement="top",
        blocks_per_growth=1,
        grown_gate=0.0,
        ramp_steps=0,
        **kwargs,
    ):
        active = kwargs.pop("active_blocks", None)
        super().__init__(**kwargs)
        if not isinstance(block, (keras.layers.Layer, dict)):
            raise ValueError(
                "Invalid value received for argument `block`. Expected a "
                f"Keras layer. Received: block={block!r}"
            )
        self.depth = check_number("depth", depth, low=2, integer=True)
        self.initial_depth = check_number(
            "initial_depth", initial_depth, low=1, high=depth, integer=True
        )
        self.placement = check_choice("placement", placement, ("top", "middle"))
        self.blocks_per_growth = check_number(
            "blocks_per_growth", blocks_per_growth, low=1, integer=True
        )
        self.grown_gate = float(
            check_number("grown_gate", grown_gate, low=0.0, high=1.0)
        )
        self.ramp_steps = check_number(
            "ramp_steps", ramp_steps, low=0, integer=True
        )
        self._active_cache = check_number(
            "active_blocks",
            initial_depth if active is None else active,
            low=1,
            high=depth,
            integer=True,
        )
        self.blocks = _copies(block, self.depth)

    # Capacity ----------------------------------------------------------

    @property
    def active_blocks(self):
        """Number of blocks that run (the first ones)."""
        return self._active_cache

    @property
    def block_order(self):
        """The indices of the active blocks in `blocks`, in running order."""
        return _block_order(
            self.initial_depth, self.active_blocks, self.placement
        )

    @property
    def capacity(self):
        """The active fraction of the stack, `active_blocks / depth`."""
        return self.active_blocks / self.depth

    @property
    def traced_capacity(self):
        """What a compiled function traces: the number of active blocks."""
        return (self.active_blocks,)

    def capacity_counts(self):
        """`(active, total)`: blocks, for `CapacityGrowth`'s logs."""
        return self.active_blocks, self.depth

    def build(self, input_shape):
        for block in self.blocks:
            if not block.built:
                block.build(input_shape)
        output_shape = (
            self.blocks[0]
            .compute_output_spec(
                keras.KerasTensor(input_shape, dtype=self.compute_dtype)
            )
            .shape
        )
        if tuple(output_shape) != tuple(input_shape):
            raise ValueError(
                f"DynamicStack '{self.name}' needs a block whose output has "
                "the shape of its input, so that blocks can be stacked and "
                f"skipped. Received: a block mapping {tuple(input_shape)} "
                f"to {tuple(output_shape)}"
            )
        self._block_input_shape = tuple(input_shape)
        active = self._active_cache
        self.gates = self.add_weight(
            shape=(self.depth,),
            initializer=keras.initializers.Constant(
                [1.0] * active + [0.0] * (self.depth - active)
            ),
            name="gates",
        )
        self._active_variable = add_watched_variable(
            self,
            "active_blocks",
            active,
            "int32",
            1,
            self.depth,
            _depth_assigned,
        )
        if self.ramp_steps:
            # The same on every replica: each counts the same steps.
            self.ramp_counts = self.add_weight(
                shape=(self.depth,),
                initializer=keras.initializers.Constant(
                    [self.ramp_steps] * active + [0] * (self.depth - active)
                ),
                dtype="int32",
                trainable=False,
                aggregation="only_first_replica",
                name="ramp_counts",
            )

    def grow(self, num_blocks=None, freeze=False):
        """Activates `num_blocks` more blocks (fewer at full depth).

        Each new block gets the weights of a trained block, a gate of
        `grown_gate` and, with `ramp_steps`, a ramp at 0 (with either of
        the defaults, gate 0 or a ramp, the outputs are unchanged).
        With `placement="top"` block `active_blocks + k` copies block `k`
        (the trained stack copied on top of itself, cycling when more
        blocks grow than are active); with `"middle"` each new block
        copies the middle block of the running order and runs after it.
        The next step of every model that ran the stack uses the new
        depth. Inside `fit`, call it from a callback after reading
        `self.model` (on JAX that syncs the training state).

        Args:
            num_blocks: Integer >= 1. Defaults to `blocks_per_growth`.
            freeze: Must be False: a stack does not freeze its blocks.

        Returns:
            The number of blocks that became active.
        """
        if num_blocks is None:
            num_blocks = self.blocks_per_growth
        check_number("num_blocks", num_blocks, low=1, integer=True)
        if freeze:
            raise ValueError(
                f"DynamicStack '{self.name}' does not freeze trained "
                "blocks. Received: freeze=True. Pass "
                "`CapacityGrowth(freeze=False)` (the default)."
            )
        old = self.active_blocks
        new = min(self.depth, old + num_blocks)
        gates = ops.convert_to_numpy(self.gates).copy()
        for j in range(old, new):
            if self.placement == "top":
                source = (j - old) % old
            else:
                order = _block_order(self.initial_depth, j, "middle")
                source = order[(len(order) - 1) // 2]
            self.blocks[j].set_weights(self.blocks[source].get_weights())
            gates[j] = self.grown_gate
        self.gates.assign(gates)
        if self.ramp_steps:
            counts = ops.convert_to_numpy(self.ramp_counts).copy()
            counts[old:new] = 0
            self.ramp_counts.assign(counts)
        self._active_variable.assign(np.int32(new))
        links.capacity_changed(self)
        return new - old

    # Linking and holding ----------------------------------------------

    def linked(self):
        """Prepares the stack once `link_dynamic_layers` linked it: every
        block is unmarked, so that the optimizer built next makes slots
        for all of them."""
        self._hold_blocks(False)

    def _hold_blocks(self, hold):
        """Marks the inactive blocks' variables `overwrite_with_gradient`
        (or unmarks every block) and returns the marked ones. The marks
        depend only on `hold` and the depth, so a call at the same depth
        (every eager torch step) reuses them."""
        key = (hold, self.active_blocks)
        # In `__dict__`, out of Keras's tracking of layer attributes.
        last_key, held = self.__dict__.get("_held_blocks", (None, []))
        if last_key != key:
            held = []
            for i, block in enumerate(self.blocks):
                marked = hold and i >= self.active_blocks
                for variable in block.trainable_variables:
                    variable.overwrite_with_gradient = marked
                    if marked:
                        held.append(variable)
            self.__dict__["_held_blocks"] = (key, held)
        return held

    def call(self, inputs, training=None):
        links.note_trace(self)
        hold = bool(training) and self.trainable and links.optimizer_ready(self)
        held = self._hold_blocks(hold)
        gates = self._effective_gates(training)
        x = inputs
        for i in self.block_order:
            h = self.blocks[i](x, training=training)
            x = x + ops.cast(gates[i], h.dtype) * (h - x)
        if held:
            x = hold_gradients(x, *[v.value for v in held])
        return x

    def _effective_gates(self, training=False):
        """The gates times the ramps; a training call counts a step of
        every active block's ramp."""
        if not self.ramp_steps:
            return self.gates
        counts = self.ramp_counts.value
        ramps = ops.cast(counts, "float32") / self.ramp_steps
        if training:
            active = np.arange(self.depth) < self.active_blocks
            self.ramp_counts.assign(
                ops.minimum(counts + active.astype("int32"), self.ramp_steps)
            )
        return self.gates * ramps

    def compute_output_shape(self, input_shape):
        return input_shape

    # Finalize -----------------------------------------------------------

    def finalized_layers(self):
        """The active blocks as plain layers in running order, with their
        weights.

        A block whose gate (times its ramp) is 1 is returned as a copy of
        itself; one with another gate `a` as a functional model computing
        `x + a * (block(x) - x)` from built-in layers.
        """
        gates = ops.convert_to_numpy(self._effective_gates())
        input_shape = self._block_input_shape
        result = []
        for i in self.block_order:
            (block,) = _copies(self.blocks[i], 1)
            if not block.built:
                block.build(input_shape)
            block.set_weights(self.blocks[i].get_weights())
            if gates[i] == 1.0:
                result.append(block)
                continue
            inputs = keras.Input(input_shape[1:])
            change = keras.layers.Subtract()([block(inputs), inputs])
            scaled = keras.layers.Rescaling(float(gates[i]))(change)
            outputs = keras.layers.Add()([inputs, scaled])
            result.append(
                keras.Model(inputs, outputs, name=f"{self.name}_block_{i}")
            )
        return result

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "block": keras.saving.serialize_keras_object(self.blocks[0]),
                "depth": self.depth,
                "initial_depth": self.initial_depth,
                "placement": self.placement,
                "blocks_per_growth": self.blocks_per_growth,
                "grown_gate": self.grown_gate,
                "ramp_steps": self.ramp_steps,
                "active_blocks": self.active_blocks,
            }
        )
        return config
