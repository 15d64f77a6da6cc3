"""A transformer block whose attention heads grow (MSG, head growth)."""

import keras
import numpy as np
from keras import ops

from keras_gradnets.core.checks import check_number
from keras_gradnets.core.state import StatefulLayer
from keras_gradnets.core.state import add_watched_variable
from keras_gradnets.core.sublayers import SublayerWrapper
from keras_gradnets.core.sublayers import set_sublayer
from keras_gradnets.dynamic_capacity import links
from keras_gradnets.dynamic_capacity.dynamic_layer import _chunk_bounds

# keras-hub's `TransformerEncoder` and `TransformerDecoder` keep their
# self-attention under this name.
KERAS_HUB_ATTENTION = ("_self_attention_layer",)

# A `MultiHeadAttention`'s projections, and the axis of their kernels that
# indexes heads: the query, key and value kernels are `(dim, heads,
# head_dim)`, the output kernel `(heads, head_dim, dim)`.
_PROJECTIONS = {
    "_query_dense": 1,
    "_key_dense": 1,
    "_value_dense": 1,
    "_output_dense": 0,
}


def _heads_assigned(layer, variable):
    """Keeps the Python count of active heads in step with its variable
    (`set_weights`, loading, JAX's state sync), as dynamic layers do."""
    value = variable.host_value
    if value is None:
        value = int(np.asarray(ops.convert_to_numpy(variable)))
    layer._active_cache = int(value)
    for projection in layer._projections():
        projection.active_heads = int(value)


class _HeadSlicedEinsumDense(keras.layers.EinsumDense):
    """An attention projection that computes only its first heads.

    It holds the full kernel of the `EinsumDense` it replaces and uses the
    first `active_heads` entries of the kernel's `head_axis` (and of the
    bias, for the query, key and value projections): a static slice, so
    the matrix work is that of the active heads.
    """

    def __init__(self, *args, head_axis, active_heads, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_axis = head_axis
        self.active_heads = active_heads

    def call(self, inputs, training=None):
        heads = self.active_heads
        kernel = self.kernel
        bias = self.bias
        if heads < kernel.shape[self.head_axis]:
            if self.head_axis == 0:
                kernel = kernel[:heads]
            else:
                kernel = kernel[:, :heads]
                bias = None if bias is None else bias[:heads]
        outputs = ops.einsum(self.equation, inputs, kernel)
        if bias is not None:
            outputs = ops.add(outputs, bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


@keras.saving.register_keras_serializable(package="keras_gradnets")
class DynamicAttentionHeads(SublayerWrapper, StatefulLayer):
    """A transformer block whose number of attention heads grows in `fit`.

    Wraps a block that computes attention with Keras `MultiHeadAttention`
    sub-layers (keras-hub's `TransformerEncoder` and `TransformerDecoder`,
    whose `CachedMultiHeadAttention` is one; or your block, naming them in
    `attention_names`). Once built, each of those layers computes only its
    first `active_heads` heads: the query, key, value and output
    projections use static slices of their kernels, and the attention is
    computed for the active heads alone, so a block costs what its active
    heads cost; a growth re-traces the step once, as dynamic layers do.

    Growth keeps the function, as Masked Structural Growth does for heads
    (Yao et al. 2024, section 3, "heads"): MSG masks a new head's output
    with a factor that starts at 0; here the output projection's rows for
    the new heads are set to 0, which keeps the function exactly at the
    growth, while the new heads' query, key and value weights are those of
    the block's initialization, never trained (inactive heads get no
    gradient), so the new heads train from their first step. The trained
    heads' optimizer moments are kept; the new heads' are zero, as they
    had no gradient. An optimizer with weight decay still shrinks the
    inactive heads' weights, which growth does not rely on.

    `CapacityGrowth` grows it as it grows a `DynamicStack` (one chunk of
    heads per growth), or call `grow()` after
    `link_dynamic_layers(model)`. `keras_gradnets.finalize` gives back the
    wrapped block's class with all its heads and the weights, the
    inactive heads' output rows at 0: it computes what this block
    computes (keras-hub blocks tie the head size to the number of heads,
    so a block with fewer heads of this size has no plain equivalent).
    Wrap a `DynamicFeedForward` (or be wrapped by one) to grow the
    feed-forward width of the same block too.

    Args:
        layer: The transformer block to wrap, built or not (or a
            `DynamicFeedForward` around it). Its config is what the wrapper
            saves.
        chunks: Integer >= 2, at most the number of heads: in how many
            chunks the heads grow (chunk sizes differ by at most one).
        initial_chunks: Integer in `[1, chunks)`, the chunks active at
            first. Defaults to 1.
        attention_names: Attribute names of the block's
            `MultiHeadAttention` layers whose heads grow together. Defaults
            to keras-hub's self-attention.
        **kwargs: Base layer keyword arguments, such as `name`.

    Call arguments:
        The wrapped block's.

    Example:

    ```python
    block = keras_hub.layers.TransformerDecoder(intermediate_dim=256,
                                                num_heads=8)
    x = keras_gradnets.layers.DynamicAttentionHeads(block, chunks=4)(x)
    ...
    model.fit(x, y, epochs=12, callbacks=[
        keras_gradnets.callbacks.CapacityGrowth(grow_at=[0.25, 0.5, 0.75])])
    ```
    """

    def __init__(
        self,
        layer,
        chunks,
        initial_chunks=1,
        attention_names=KERAS_HUB_ATTENTION,
        **kwargs,
    ):
        active = kwargs.pop("active_heads", None)
        super().__init__(layer, **kwargs)
        self.chunks = check_number("chunks", chunks, low=2, integer=True)
        self.initial_chunks = check_number(
            "initial_chunks",
            initial_chunks,
            low=1,
            high=chunks - 1,
            integer=True,
        )
        if (
            not isinstance(attention_names, (list, tuple))
            or not attention_names
            or not all(isinstance(x, str) for x in attention_names)
        ):
            raise ValueError(
                "Invalid value received for argument `attention_names`. "
                "Expected a non-empty list of attribute names, such as "
                f"{list(KERAS_HUB_ATTENTION)}. "
                f"Received: attention_names={attention_names!r}"
            )
        self.attention_names = tuple(attention_names)
        self._active_cache = active

    # Capacity ----------------------------------------------------------

    @property
    def active_heads(self):
        """Number of heads in use (the first ones) in each attention."""
        return self._active_cache

    @property
    def capacity(self):
        """The active fraction of the heads, `active_heads / num_heads`."""
        return self.active_heads / self.num_heads

    @property
    def traced_capacity(self):
        """What a compiled function traces: the number of active heads."""
        return (self.active_heads,)

    def capacity_counts(self):
        """`(active, total)`: heads, for `CapacityGrowth`'s logs."""
        return self.active_heads, self.num_heads

    # Build --------------------------------------------------------------

    def _attention(self, name):
        attention = getattr(self.block, name, None)
        if not isinstance(attention, keras.layers.MultiHeadAttention):
            raise ValueError(
                f"DynamicAttentionHeads '{self.name}' grows the heads of "
                "`MultiHeadAttention` layers held as attributes "
                f"{list(self.attention_names)}, but "
                f"{self.block.__class__.__name__} '{self.block.name}' holds "
                f"{type(attention).__name__} at `{name}`. Pass the names of "
                "its attention layers as `attention_names`."
            )
        for projection, axis in _PROJECTIONS.items():
            dense = getattr(attention, projection)
            kernel = getattr(dense, "kernel", None)
            if (
                type(dense) is not keras.layers.EinsumDense
                or dense.lora_enabled
                or kernel is None
                or len(kernel.shape) != 3
                or kernel.shape[axis] != attention.num_heads
            ):
                raise ValueError(
                    f"DynamicAttentionHeads '{self.name}' needs attention "
                    "over one sequence axis with plain `EinsumDense` "
                    "projections (no LoRA, no quantization), but "
                    f"`{name}.{projection}` of '{self.block.name}' is "
                    f"{type(dense).__name__} with kernel shape "
                    f"{None if kernel is None else tuple(kernel.shape)}."
                )
        return attention

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        attentions = [self._attention(x) for x in self.attention_names]
        heads = {a.num_heads for a in attentions}
        if len(heads) != 1:
            raise ValueError(
                f"DynamicAttentionHeads '{self.name}' grows the heads of "
                f"{list(self.attention_names)} together, but they have "
                f"{sorted(heads)} heads. Pass attention layers with the "
                "same number of heads as `attention_names`."
            )
        self.num_heads = heads.pop()
        if self.chunks > self.num_heads:
            raise ValueError(
                "Invalid value received for argument `chunks`. Expected at "
                f"most num_heads={self.num_heads} of '{self.block.name}'. "
                f"Received: chunks={self.chunks}"
            )
        self.bounds = _chunk_bounds(self.num_heads, self.chunks)
        if self._active_cache is None:
            self._active_cache = self.bounds[self.initial_chunks]
        for attention in attentions:
            for projection, axis in _PROJECTIONS.items():
                dense = getattr(attention, projection)
                sliced = _HeadSlicedEinsumDense.from_config(
                    {
                        **dense.get_config(),
                        "head_axis": axis,
                        "active_heads": self._active_cache,
                    }
                )
                sliced.build(dense.get_build_config()["input_shape"])
                sliced.set_weights(dense.get_weights())
                set_sublayer(attention, projection, dense, sliced)
        self._active_variable = add_watched_variable(
            self,
            "active_heads",
            self._active_cache,
            "int32",
            1,
            self.num_heads,
            _heads_assigned,
            self._check_heads,
        )
        self.built = True

    def _check_heads(self, layer, state, value):
        """Checks a value of `active_heads`: a chunk boundary."""
        try:
            number = int(np.asarray(value))
        except (TypeError, ValueError):
            number = None
        if number not in self.bounds[1:] or np.asarray(value).ndim:
            raise ValueError(
                f"Invalid value for the variable `active_heads` of layer "
                f"'{self.name}'. Expected a chunk boundary in "
                f"{self.bounds[1:]} ({self.num_heads} heads in "
                f"{self.chunks} chunks). Received: active_heads={value!r}"
            )

    def _attentions(self):
        return [getattr(self.block, name) for name in self.attention_names]

    def _projections(self):
        return [
            getattr(attention, projection)
            for attention in self._attentions()
            for projection in _PROJECTIONS
        ]

    # Growth --------------------------------------------------------------

    def grow(self, num_chunks=1, freeze=False):
        """Activates the next `num_chunks` chunks of heads.

        The output projections' rows for the new heads are set to 0, so
        the outputs do not change. At full size it does nothing. The next
        step of every model that ran the block uses the new heads. Inside
        `fit`, call it from a callback after reading `self.model` (on JAX
        that syncs the training state).

        Args:
            num_chunks: Integer >= 1. Stops at all heads.
            freeze: Must be False: trained heads are not frozen.

        Returns:
            The number of heads that became active.
        """
        check_number("num_chunks", num_chunks, low=1, integer=True)
        if freeze:
            raise ValueError(
                f"DynamicAttentionHeads '{self.name}' does not freeze "
                "trained heads. Received: freeze=True. Pass "
                "`CapacityGrowth(freeze=False)` (the default)."
            )
        old = self.active_heads
        chunk = self.bounds.index(old)
        new = self.bounds[min(self.chunks, chunk + num_chunks)]
        if new == old:
            return 0
        for attention in self._attentions():
            kernel = attention._output_dense.kernel
            rows = ops.zeros((new - old, *kernel.shape[1:]), kernel.dtype)
            kernel.assign(ops.slice_update(kernel.value, (old, 0, 0), rows))
        self._active_variable.assign(np.int32(new))
        links.capacity_changed(self)
        return new - old

    def linked(self):
        """Nothing to prepare: inactive heads are held by getting no
        gradient (`link_dynamic_layers` calls it)."""

    def call(self, inputs, *args, **kwargs):
        links.note_trace(self)
        return super().call(inputs, *args, **kwargs)

    # Finalize -----------------------------------------------------------

    def finalize_block(self, config, values):
        """Sets the inactive heads' output rows to 0."""
        for attention in self._attentions():
            (kernel, *_) = values[id(attention._output_dense.kernel)]
            kernel[self.active_heads :] = 0

    def get_config(self):
        return {
            **super().get_config(),
            "chunks": self.chunks,
            "initial_chunks": self.initial_chunks,
            "attention_names": list(self.attention_names),
            "active_heads": self.active_heads,
        }
