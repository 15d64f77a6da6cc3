"""Base class of layers with a growing active part (dynamic capacity)."""

import warnings
import weakref

import keras
from keras import ops

from keras_gradnets._checks import check_choice
from keras_gradnets._checks import check_number
from keras_gradnets.layers.state import add_scalar_weight

GROWTH_INITS = ("random", "function_preserving")


def _chunk_bounds(units, chunks):
    """Chunk boundaries `[0, b_1, ..., units]`, sizes differing by <= 1."""
    size, extra = divmod(units, chunks)
    bounds = [0]
    for i in range(chunks):
        bounds.append(bounds[-1] + size + (1 if i < extra else 0))
    return bounds


@ops.custom_gradient
def _hold(outputs, *values):
    """Identity on `outputs`; the gradient of each of `values` is itself.

    The variables behind `values` have `overwrite_with_gradient=True`, so
    the optimizer writes them back unchanged: no momentum, no weight decay,
    no gradient clipping touches them.
    """

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        return (upstream, *values)

    return outputs, grad


class DynamicLayer(keras.layers.Layer):
    """A layer allocated at full size that uses a growing part of it.

    Subclasses define the full-size computation in `_apply` and the kernel
    shape in `_kernel_shape`; this class keeps the capacity (Chapter 4 of
    the dynamic-capacity thesis): the output units are split into `chunks`,
    the first `active_units` are used and the first `frozen_units` are
    frozen.

    Each chunk has its own kernel and bias variables, so that the optimizer
    only works on the chunks being trained: frozen and inactive chunks have
    `overwrite_with_gradient=True` and receive their own value as gradient,
    which every Keras optimizer writes back unchanged (bit for bit, with no
    momentum or weight decay). The forward pass concatenates the active
    chunks with static slices, so the matrix work scales with the active
    capacity; a capacity change re-traces the compiled functions of the
    models the layer is linked to (see `link_dynamic_layers`).
    """

    def __init__(
        self,
        units,
        chunks,
        initial_chunks=1,
        activation=None,
        use_bias=True,
        growth_init="random",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        # `get_config` saves the current capacity under "capacity", so that
        # `from_config` restores it; users set it with `set_capacity`.
        capacity = kwargs.pop("capacity", None)
        super().__init__(**kwargs)
        self.units = check_number("units", units, low=1, integer=True)
        self.chunks = check_number(
            "chunks", chunks, low=1, high=units, integer=True
        )
        self.initial_chunks = check_number(
            "initial_chunks", initial_chunks, low=1, high=chunks, integer=True
        )
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.growth_init = check_choice(
            "growth_init", growth_init, GROWTH_INITS
        )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.bounds = _chunk_bounds(self.units, self.chunks)
        active, frozen = capacity or (
            self.bounds[self.initial_chunks],
            0,
        )
        self._active, self._frozen = self._check_capacity(active, frozen)
        # Links to other layers and models are weak references, which the
        # layer's tracking of sub-layers ignores.
        self._source = None
        self._consumers = []
        self._models = []
        self._pristine = True

    # Capacity ----------------------------------------------------------

    @property
    def active_units(self):
        """Number of output units in use (the first ones)."""
        return self._active

    @property
    def frozen_units(self):
        """Number of output units whose weights no longer change."""
        return self._frozen

    @property
    def active_chunks(self):
        return self.bounds.index(self._active)

    @property
    def frozen_chunks(self):
        return self.bounds.index(self._frozen)

    @property
    def capacity(self):
        """The active fraction of the layer, `active_units / units`."""
        return self._active / self.units

    def _check_capacity(self, active, frozen):
        bounds = self.bounds
        if active not in bounds[1:]:
            raise ValueError(
                "Invalid value received for argument `active_units`. "
                f"Expected a chunk boundary in {bounds[1:]} (the layer has "
                f"{self.units} units in {self.chunks} chunks). "
                f"Received: active_units={active!r}"
            )
        if frozen not in bounds or frozen > active:
            raise ValueError(
                "Invalid value received for argument `frozen_units`. "
                "Expected a chunk boundary in "
                f"{[b for b in bounds if b <= active]} (at most "
                f"active_units={active}). Received: frozen_units={frozen!r}"
            )
        return active, frozen

    def set_capacity(self, active_units, frozen_units=None):
        """Sets how many units are active and how many are frozen.

        Units that become active are initialized as `growth_init` says;
        units that become inactive output zeros again (their weights are
        kept). Both counts must be chunk boundaries (`layer.bounds`).

        Inside `fit`, call it from a callback after reading `self.model`
        (on JAX that syncs the training state) and the next training step
        uses the new capacity. The models the layer is linked to
        (`link_dynamic_layers`, which `CapacityGrowth` calls) re-trace their
        compiled functions.

        Args:
            active_units: Number of units to use, a chunk boundary.
            frozen_units: Number of units to freeze, a chunk boundary no
                larger than `active_units`. Defaults to the current value,
                lowered to `active_units` if needed.
        """
        if frozen_units is None:
            frozen_units = min(self._frozen, active_units)
        old_active = self._active
        active, frozen = self._check_capacity(active_units, frozen_units)
        if (active, frozen) == (self._active, self._frozen):
            return
        self._active, self._frozen = active, frozen
        if self.built:
            if active > old_active:
                self._initialize_units(old_active, active)
                for consumer in self._consumer_layers():
                    self._initialize_consumer(consumer, old_active, active)
            self._write_capacity()
        self._pristine = False
        for model_ref in self._models:
            model = model_ref()
            if model is not None:
                _remake_functions(model)

    def grow(self, n_chunks=1, freeze=True):
        """Activates the next `n_chunks` chunks.

        At full capacity it does nothing.

        Args:
            n_chunks: Positive integer. Stops at the full size.
            freeze: Whether to freeze the units that were active before.
        """
        check_number("n_chunks", n_chunks, low=1, integer=True)
        if self._active == self.units:
            return
        target = min(self.active_chunks + n_chunks, self.chunks)
        frozen = self._active if freeze else self._frozen
        self.set_capacity(self.bounds[target], frozen)

    # Build and state ---------------------------------------------------

    def _kernel_shape(self, input_dim, units):
        raise NotImplementedError

    def _input_dim(self, input_shape):
        return input_shape[-1]

    def build(self, input_shape):
        self.input_dim = self._input_dim(input_shape)
        if self.input_dim is None:
            raise ValueError(
                f"Layer '{self.name}' needs a known input size. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.kernels = []
        self.biases = []
        for i in range(self.chunks):
            size = self.bounds[i + 1] - self.bounds[i]
            self.kernels.append(
                self.add_weight(
                    shape=self._kernel_shape(self.input_dim, size),
                    initializer=self._chunk_initializer(i, kernel=True),
                    autocast=False,
                    name=f"kernel_{i}",
                )
            )
            if self.use_bias:
                self.biases.append(
                    self.add_weight(
                        shape=(size,),
                        initializer=self._chunk_initializer(i, kernel=False),
                        autocast=False,
                        name=f"bias_{i}",
                    )
                )
        self._active_variable = add_scalar_weight(
            self, "active_units", self._active, dtype="int32"
        )
        self._frozen_variable = add_scalar_weight(
            self, "frozen_units", self._frozen, dtype="int32"
        )

    def _chunk_initializer(self, i, kernel):
        """Initializer of chunk `i`: a slice of a draw at the active shape."""
        if i >= self.active_chunks:
            return "zeros"
        lo, hi = self.bounds[i], self.bounds[i + 1]

        def initialize(shape, dtype=None):
            if not kernel:
                return self.bias_initializer((self._active,), dtype)[lo:hi]
            full = self.kernel_initializer(
                self._kernel_shape(self.input_units, self._active), dtype
            )
            return self._pad_rows(full[..., lo:hi], self.input_dim)

        return initialize

    def _write_capacity(self):
        self._active_variable.assign(self._active)
        self._frozen_variable.assign(self._frozen)

    def _hold_chunks(self, hold):
        """Marks frozen and inactive chunks `overwrite_with_gradient`.

        Optimizers create no slot variables for marked variables when they
        are built, so chunks are marked only in training calls of a model
        whose optimizer is already built (`link_dynamic_layers` builds it):
        every chunk keeps its slots for the time it trains.
        """
        frozen, active = self.frozen_chunks, self.active_chunks
        for i in range(self.chunks):
            held = hold and not frozen <= i < active
            for variable in self._chunk_variables(i):
                variable.overwrite_with_gradient = held

    def _optimizer_ready(self):
        for ref in self._models:
            model = ref()
            optimizer = getattr(model, "optimizer", None)
            if optimizer is not None and optimizer.built:
                return True
        return False

    def _chunk_variables(self, i):
        return [self.kernels[i]] + ([self.biases[i]] if self.use_bias else [])

    def set_weights(self, weights):
        super().set_weights(weights)
        self._read_capacity()

    def load_own_variables(self, store):
        super().load_own_variables(store)
        self._read_capacity()

    def _read_capacity(self):
        """Takes the capacity from the variables, after weights are loaded."""
        self._active, self._frozen = self._check_capacity(
            int(ops.convert_to_numpy(self._active_variable)),
            int(ops.convert_to_numpy(self._frozen_variable)),
        )
        self._pristine = False

    # Initialization ------------------------------------------------------

    def _input_source(self):
        """The dynamic layer whose output this layer reads, if linked.

        (A method, not a property: `.keras` saving walks public attributes
        and would save the linked layers a second time.)
        """
        return None if self._source is None else self._source()

    @property
    def input_units(self):
        """Number of input units in use: the source layer's active units."""
        source = self._input_source()
        return self.input_dim if source is None else source.active_units

    def _consumer_layers(self):
        """The linked layers that read this layer's units through a kernel."""
        return [ref() for ref in self._consumers if ref() is not None]

    def _initialize_units(self, start, stop):
        """Draws the incoming weights of units `start:stop`.

        The initializer sees the active shape (active inputs by `stop`
        units), so that fan-based scales (Glorot, He) suit the active size,
        not the full allocation.
        """
        rows = self.input_units
        full = self.kernel_initializer(
            self._kernel_shape(rows, stop), dtype=self.variable_dtype
        )
        bias = self.bias_initializer((stop,), dtype=self.variable_dtype)
        for i in range(self.bounds.index(start), self.bounds.index(stop)):
            lo, hi = self.bounds[i], self.bounds[i + 1]
            block = full[..., lo:hi]
            self.kernels[i].assign(self._pad_rows(block, self.input_dim))
            if self.use_bias:
                self.biases[i].assign(bias[lo:hi])

    def _pad_rows(self, block, rows):
        missing = rows - block.shape[-2]
        if missing == 0:
            return block
        pad = [(0, 0)] * len(block.shape)
        pad[-2] = (0, missing)
        return ops.pad(block, pad)

    def _initialize_inputs(self, start, stop):
        """Sets the weights from input units `start:stop`, newly active.

        Frozen chunks get zeros, so that frozen units keep computing what
        they learned. Trainable chunks get zeros for
        `growth_init="function_preserving"` and draws of the initializer
        at the new active fan-in otherwise.
        """
        random = self.growth_init == "random"
        if random:
            full = self.kernel_initializer(
                self._kernel_shape(stop, self._active),
                dtype=self.variable_dtype,
            )
        for i in range(self.chunks):
            lo, hi = self.bounds[i], self.bounds[i + 1]
            rows = None
            if random and self.frozen_chunks <= i < self.active_chunks:
                rows = full[..., start:stop, :][..., lo:hi]
            _set_rows(self.kernels[i], start, stop, rows)

    def _initialize_consumer(self, consumer, start, stop, random=None):
        """Sets `consumer`'s weights from this layer's units `start:stop`."""
        if isinstance(consumer, DynamicLayer):
            consumer._initialize_inputs(start, stop)
            return
        kernel = consumer.kernel
        if random is None:
            random = self.growth_init == "random"
        rows = None
        if random:
            shape = tuple(kernel.shape[:-2]) + (stop, kernel.shape[-1])
            rows = consumer.kernel_initializer(shape, dtype=kernel.dtype)[
                ..., start:stop, :
            ]
        _set_rows(kernel, start, stop, rows)

    # Forward ----------------------------------------------------------

    def _apply(self, inputs, kernel, bias):
        raise NotImplementedError

    def _slice_inputs(self, inputs, rows):
        return inputs[..., :rows]

    def _output_axis(self):
        return -1

    def call(self, inputs, training=None):
        hold = bool(training) and self.trainable and self._optimizer_ready()
        if training:
            self._pristine = False
            if not hold and self.trainable and self.frozen_units:
                warnings.warn(
                    f"Layer '{self.name}' is not linked to a compiled model, "
                    "so its frozen units are held only by `stop_gradient`, "
                    "and optimizers with momentum or weight decay still "
                    "move them. Pass `keras_gradnets.callbacks."
                    "CapacityGrowth` to `fit`, or call `keras_gradnets."
                    "layers.link_dynamic_layers(model)` after `compile`.",
                    stacklevel=2,
                )
        self._hold_chunks(hold)
        rows = self.input_units
        active, frozen = self.active_chunks, self.frozen_chunks
        dtype = self.compute_dtype

        def used(variables, rows=None):
            """The active chunks, the frozen ones behind `stop_gradient`."""
            values = []
            for i, variable in enumerate(variables[:active]):
                value = variable.value
                if rows is not None:
                    value = value[..., :rows, :]
                values.append(ops.stop_gradient(value) if i < frozen else value)
            value = (
                values[0]
                if len(values) == 1
                else ops.concatenate(values, axis=-1)
            )
            return ops.cast(value, dtype)

        if rows < self.input_dim:
            inputs = self._slice_inputs(inputs, rows)
        else:
            rows = None
        kernel = used(self.kernels, rows)
        bias = used(self.biases) if self.use_bias else None
        outputs = self._apply(inputs, kernel, bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        if self._active < self.units:
            axis = self._output_axis()
            shape = list(ops.shape(outputs))
            shape[axis] = self.units - self._active
            outputs = ops.concatenate(
                [outputs, ops.zeros(shape, dtype=outputs.dtype)], axis=axis
            )
        if hold:
            held = [
                v.value
                for i in range(self.chunks)
                if not frozen <= i < active
                for v in self._chunk_variables(i)
            ]
            if held:
                outputs = _hold(outputs, *held)
        return outputs

    # Weights seen as one layer -----------------------------------------

    def _plain_layer(self, units):
        raise NotImplementedError

    def _plain_options(self):
        """Arguments every plain replacement layer shares with this one."""
        return {
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            "dtype": self.dtype_policy,
            "name": self.name,
        }

    def plain_layer(self, rows, units):
        """A built-in Keras layer equal to this one, and its weights.

        Args:
            rows: Number of input units the plain layer reads (the first).
            units: Number of outputs, at least `active_units`; the ones
                past `active_units` get zero weights.

        Returns:
            `(layer, weights)`: an unbuilt `Dense` or `Conv2D` and the list
            of arrays for its `set_weights`.
        """
        kernel = ops.convert_to_numpy(self.kernel)[..., :rows, :units].copy()
        kernel[..., self._active :] = 0
        weights = [kernel]
        if self.use_bias:
            bias = ops.convert_to_numpy(self.bias)[:units].copy()
            bias[self._active :] = 0
            weights.append(bias)
        return self._plain_layer(units), weights

    @property
    def kernel(self):
        """The full-size kernel, the chunks concatenated (read only)."""
        return ops.concatenate([k.value for k in self.kernels], axis=-1)

    @property
    def bias(self):
        """The full-size bias, the chunks concatenated (read only)."""
        if not self.use_bias:
            return None
        return ops.concatenate([b.value for b in self.biases], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "chunks": self.chunks,
                "initial_chunks": self.initial_chunks,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "growth_init": self.growth_init,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "capacity": [self._active, self._frozen],
            }
        )
        return config


def _set_rows(kernel, start, stop, rows=None):
    """Writes `rows` (zeros if None) into input rows `start:stop`."""
    if rows is None:
        rows = ops.zeros_like(kernel[..., start:stop, :])
    corner = (0,) * (len(kernel.shape) - 2) + (start, 0)
    kernel.assign(ops.slice_update(kernel.value, corner, rows))


def _remake_functions(model):
    """Re-creates the compiled functions `model` already made.

    The new functions trace the layers' current (static) capacity at their
    first call; `fit` and `evaluate` look the functions up at every step.
    """
    for kind in ("train", "test", "predict"):
        if getattr(model, f"{kind}_function", None) is not None:
            getattr(model, f"make_{kind}_function")(force=True)


def link(layer, model, consumers):
    """Records that `layer` feeds `consumers` inside `model`."""
    if not any(ref() is model for ref in layer._models):
        layer._models.append(weakref.ref(model))
    layer._consumers = [weakref.ref(c) for c in consumers]
    for consumer in consumers:
        if isinstance(consumer, DynamicLayer):
            consumer._source = weakref.ref(layer)


def initialize_for_capacity(layer):
    """Re-draws an untrained layer's weights at its linked active sizes.

    At build time a layer cannot know that its input comes from a dynamic
    layer, so it draws its weights with the full input size as fan-in.
    Once linked, an untrained layer (never called in training mode, grown
    or loaded) draws them again with the active sizes, and so do the rows
    of its plain consumers that read its active units.
    """
    if not (layer.built and layer._pristine):
        return
    layer._initialize_units(0, layer.active_units)
    for consumer in layer._consumer_layers():
        if not isinstance(consumer, DynamicLayer):
            layer._initialize_consumer(consumer, 0, layer.active_units, True)
    layer._pristine = False
