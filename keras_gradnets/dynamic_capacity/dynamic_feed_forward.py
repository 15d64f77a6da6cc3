"""A transformer block whose feed-forward width grows (MSG, FFN growth)."""

import random

import keras
from keras import ops

from keras_gradnets.core.checks import check_choice
from keras_gradnets.core.checks import check_number
from keras_gradnets.core.sublayers import SublayerWrapper
from keras_gradnets.core.sublayers import set_sublayer
from keras_gradnets.core.walk import attributes
from keras_gradnets.dynamic_capacity import links
from keras_gradnets.dynamic_capacity.dynamic_dense import DynamicDense

# keras-hub's `TransformerEncoder` and `TransformerDecoder` keep their
# feed-forward layers under these names.
KERAS_HUB_DENSES = (
    "_feedforward_intermediate_dense",
    "_feedforward_output_dense",
)
# keras-hub's gated blocks (Llama, Mistral, Qwen) keep the gate here.
KERAS_HUB_GATE = "_feedforward_gate_dense"


def feed_forward_options(
    chunks, initial_chunks, growth_init, seed, dense_names, gate_name
):
    """The options of `DynamicFeedForward`, checked, as its config holds
    them: `seed` drawn if `None`, `dense_names` a list."""
    chunks = check_number("chunks", chunks, low=1, integer=True)
    initial_chunks = check_number(
        "initial_chunks", initial_chunks, low=1, high=chunks, integer=True
    )
    growth_init = check_choice(
        "growth_init", growth_init, ("function_preserving", "random")
    )
    if seed is None:
        # Drawn like `DynamicDense`'s, then saved in the config.
        seed = random.randint(1, 10**9)
    seed = check_number("seed", seed, low=0, integer=True)
    if (
        not isinstance(dense_names, (list, tuple))
        or len(dense_names) != 2
        or not all(isinstance(x, str) for x in dense_names)
    ):
        raise ValueError(
            "Invalid value received for argument `dense_names`. "
            "Expected a pair of attribute names, such as "
            f"{KERAS_HUB_DENSES}. Received: dense_names={dense_names!r}"
        )
    if gate_name is not None and not isinstance(gate_name, str):
        raise ValueError(
            "Invalid value received for argument `gate_name`. Expected "
            f"an attribute name, such as {KERAS_HUB_GATE!r}, or None. "
            f"Received: gate_name={gate_name!r}"
        )
    return {
        "chunks": chunks,
        "initial_chunks": initial_chunks,
        "growth_init": growth_init,
        "seed": seed,
        "dense_names": list(dense_names),
        "gate_name": gate_name,
    }


@keras.saving.register_keras_serializable(package="keras_gradnets")
class DynamicFeedForward(SublayerWrapper):
    """A transformer block whose feed-forward width grows during `fit`.

    Wraps a block that computes its feed-forward network with two `Dense`
    sub-layers, `output(activation(intermediate(x)))` (keras-hub's
    `TransformerEncoder` and `TransformerDecoder`, or your block, named by
    `dense_names`). Once built, the intermediate layer is a `DynamicDense`
    of the same size split into `chunks`, of which the first
    `initial_chunks` are active, and the output layer a `DynamicDense` that
    reads only the active units: both matrix products cost what the active
    width costs, and a growth re-traces the step once, as `DynamicDense`
    layers do. The rest of the block is kept.

    A gated feed-forward network, `output(intermediate(x) * gate(x))` with
    an activation on one of the two (keras-hub's Llama, Mistral and Qwen
    blocks), has its gate layer made a `DynamicDense` too, which takes the
    intermediate layer's capacity (active and frozen units) at each of its
    changes: it computes only the active units, freezes what the
    intermediate layer freezes, and is grown with it, never on its own.

    Growth keeps the function, as Masked Structural Growth does for the
    feed-forward width (Yao et al. 2024, section 3, "FFN"): MSG masks the
    new units' outputs with a factor that starts at 0; here the output
    layer's rows that read the new units start at 0 (the zero outgoing
    weights of Net2Net, `growth_init="function_preserving"`), which keeps
    the function exactly at the growth while the new units' incoming
    weights are drawn, so they train from their first step. The block is
    then grown like any dynamic layer: by `CapacityGrowth` (at its
    `grow_at` budget or on a plateau, `select="all"`) or by hand with
    `wrapper.intermediate_dense.grow()` after `link_dynamic_layers(model)`.
    The optimizer keeps the moments of trained units; new units start
    with zero moments. `keras_gradnets.finalize` gives back the wrapped
    block's class with `intermediate_dim` set to the active width.

    Wrap a new block: the feed-forward layers are made anew at build, at
    the initial width, as every dynamic layer starts. To grow the heads
    too, wrap a `DynamicAttentionHeads` (or be wrapped by one): the two
    change the same block, and `finalize` applies both.

    Args:
        layer: The transformer block to wrap, built or not (or a
            `DynamicAttentionHeads` around it). Its config is what the
            wrapper saves; for `finalize`, the block's config must hold the
            feed-forward width as `intermediate_dim` (keras-hub's blocks
            do).
        chunks: Integer >= 1, at most the feed-forward width: in how many
            chunks the width grows.
        initial_chunks: Integer in `[1, chunks]`, the chunks active at
            first. Defaults to 1.
        growth_init: `"function_preserving"` (new units start with zero
            outgoing weights) or `"random"` (their outgoing weights are
            drawn: the function changes at the growth). Defaults to
            `"function_preserving"`.
        seed: Integer >= 0, seeds what each growth draws. Defaults to a
            seed drawn at construction, saved in the config.
        dense_names: Pair of attribute names of the block's feed-forward
            `Dense` layers: the one that makes the intermediate units and
            the one that reads them. Defaults to keras-hub's names.
        gate_name: Attribute name of the block's gate `Dense` layer, for a
            gated feed-forward network, or `None` for a block without a
            gate. Defaults to keras-hub's name; a block with no layer
            there has no gate, unless it holds another `Dense` layer of the
            intermediate layer's shape: then the wrapper asks for its name
            (or `gate_name=None`) when it is built.
        **kwargs: Base layer keyword arguments, such as `name`.

    Call arguments:
        The wrapped block's.

    Example:

    ```python
    block = keras_hub.layers.TransformerDecoder(intermediate_dim=256,
                                                num_heads=4)
    x = keras_gradnets.layers.DynamicFeedForward(block, chunks=4)(x)
    ...
    model.fit(x, y, epochs=12, callbacks=[
        keras_gradnets.callbacks.CapacityGrowth(grow_at=[0.25, 0.5, 0.75],
                                                freeze=False)])
    plain = keras_gradnets.finalize(model)  # intermediate_dim=256
    ```
    """

    def __init__(
        self,
        layer,
        chunks,
        initial_chunks=1,
        growth_init="function_preserving",
        seed=None,
        dense_names=KERAS_HUB_DENSES,
        gate_name=KERAS_HUB_GATE,
        **kwargs,
    ):
        super().__init__(layer, **kwargs)
        options = feed_forward_options(
            chunks, initial_chunks, growth_init, seed, dense_names, gate_name
        )
        self.chunks = options["chunks"]
        self.initial_chunks = options["initial_chunks"]
        self.growth_init = options["growth_init"]
        self.seed = options["seed"]
        self.dense_names = tuple(options["dense_names"])
        self.gate_name = options["gate_name"]

    def _dense(self, name):
        dense = getattr(self.block, name, None)
        if type(dense) is not keras.layers.Dense:
            raise ValueError(
                f"DynamicFeedForward '{self.name}' grows the feed-forward "
                "width of a block whose feed-forward layers are `Dense` "
                f"layers held as attributes {self.dense_names}, but "
                f"{self.block.__class__.__name__} '{self.block.name}' holds "
                f"{type(dense).__name__} at `{name}`. Pass the names of its "
                "feed-forward `Dense` layers as `dense_names`."
            )
        return dense

    def _gate(self, intermediate, output):
        """The block's gate `Dense` layer, or `None` for a block without
        one."""
        gate = getattr(self.block, self.gate_name or "", None)
        if type(gate) is keras.layers.Dense:
            return gate
        if self.gate_name is None:
            return None
        if self.gate_name != KERAS_HUB_GATE:
            raise ValueError(
                f"DynamicFeedForward '{self.name}' grows the gate of the "
                f"feed-forward network with it, but "
                f"{self.block.__class__.__name__} '{self.block.name}' holds "
                f"{type(gate).__name__} at `{self.gate_name}`. Pass the name "
                "of its gate `Dense` layer as `gate_name`, or "
                "gate_name=None for a block without a gate."
            )
        shape = tuple(intermediate.kernel.shape)
        twins = [
            name
            for name, layer in attributes(self.block)
            if type(layer) is keras.layers.Dense
            and layer not in (intermediate, output)
            and layer.built
            and tuple(layer.kernel.shape) == shape
        ]
        if twins:
            raise ValueError(
                f"DynamicFeedForward '{self.name}': "
                f"{self.block.__class__.__name__} '{self.block.name}' holds "
                f"`Dense` layers of the intermediate layer's shape {shape} "
                f"at {twins}, which may gate the feed-forward units. Pass "
                f"gate_name='{twins[0]}' if its outputs multiply the "
                "intermediate units (it then grows with them), or "
                "gate_name=None if they do not."
            )
        return None

    def _dynamic(self, dense, **options):
        """A built `DynamicDense` with the size and options of `dense`."""
        layer = DynamicDense(
            dense.units,
            activation=dense.activation,
            use_bias=dense.use_bias,
            kernel_initializer=dense.kernel_initializer,
            bias_initializer=dense.bias_initializer,
            dtype=dense.dtype_policy,
            name=f"{self.name}_{dense.name}",
            **options,
        )
        layer.build((None, dense.kernel.shape[0]))
        return layer

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        intermediate, output = (self._dense(x) for x in self.dense_names)
        width = intermediate.units
        if output.kernel.shape[0] != width:
            raise ValueError(
                f"DynamicFeedForward '{self.name}': `{self.dense_names[1]}` "
                f"reads {output.kernel.shape[0]} inputs, but "
                f"`{self.dense_names[0]}` makes {width} units. Pass the "
                "names of two `Dense` layers, the second reading the first, "
                "as `dense_names`."
            )
        grown = self._dynamic(
            intermediate,
            chunks=self.chunks,
            initial_chunks=self.initial_chunks,
            growth_init=self.growth_init,
            seed=self.seed,
        )
        reader = self._dynamic(output, chunks=1, seed=self.seed + 1)
        gate = self._gate(intermediate, output)
        set_sublayer(self.block, self.dense_names[0], intermediate, grown)
        set_sublayer(self.block, self.dense_names[1], output, reader)
        links.read_inside(grown, reader)
        if gate is not None:
            # Its new units are drawn; the output rows that read them start
            # at zero through the intermediate layer's growth.
            follower = self._dynamic(
                gate,
                chunks=self.chunks,
                initial_chunks=self.initial_chunks,
                growth_init="random",
                seed=self.seed + 2,
            )
            set_sublayer(self.block, self.gate_name, gate, follower)
            links.follow(follower, grown)
        self.built = True

    @property
    def intermediate_dense(self):
        """The `DynamicDense` that makes the feed-forward units: its
        `active_units` is the width in use."""
        return getattr(self.block, self.dense_names[0])

    @property
    def output_dense(self):
        """The `DynamicDense` that reads the active feed-forward units."""
        return getattr(self.block, self.dense_names[1])

    @property
    def gate_dense(self):
        """The `DynamicDense` gate that takes `intermediate_dense`'s
        capacity, or `None` for a feed-forward network without a gate."""
        gate = getattr(self.block, self.gate_name or "", None)
        return gate if isinstance(gate, DynamicDense) else None

    def finalize_block(self, config, values):
        """Sets `intermediate_dim` to the active width, and the
        feed-forward weights to those of the active units."""
        if "intermediate_dim" not in config:
            raise ValueError(
                f"Cannot finalize DynamicFeedForward '{self.name}': the "
                f"config of {self.block.__class__.__name__} has no "
                "`intermediate_dim` to set to the grown width. Keep the "
                "wrapper, or give the block that config argument."
            )
        intermediate, output = self.intermediate_dense, self.output_dense
        width = intermediate.active_units
        config["intermediate_dim"] = width
        numpy = ops.convert_to_numpy
        kept = {
            layer: [numpy(layer.kernel)[:, :width]]
            + ([numpy(layer.bias)[:width]] if layer.use_bias else [])
            for layer in (intermediate, self.gate_dense)
            if layer is not None
        }
        kept[output] = [numpy(output.kernel)[:width]] + (
            [numpy(output.bias)] if output.use_bias else []
        )
        # Each layer's arrays go in place of its first variable.
        for layer, arrays in kept.items():
            for i, variable in enumerate(layer.weights):
                values[id(variable)] = arrays if i == 0 else []

    def get_config(self):
        return {
            **super().get_config(),
            "chunks": self.chunks,
            "initial_chunks": self.initial_chunks,
            "growth_init": self.growth_init,
            "seed": self.seed,
            "dense_names": list(self.dense_names),
            "gate_name": self.gate_name,
        }

    @classmethod
    def from_config(cls, config):
        # Files saved before gates grew keep their gate a full-width `Dense`.
        return super().from_config({"gate_name": None, **config})
