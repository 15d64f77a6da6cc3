"""Base class of layers with a growing active part (dynamic capacity)."""

import random
import warnings

import keras
import numpy as np
from keras import ops

from keras_gradnets.core.checks import check_choice
from keras_gradnets.core.checks import check_number
from keras_gradnets.core.config import serialized
from keras_gradnets.core.finalize import built_with_weights
from keras_gradnets.core.state import StatefulLayer
from keras_gradnets.core.state import add_watched_variable
from keras_gradnets.core.state import assign_checked
from keras_gradnets.dynamic_capacity import links

GROWTH_INITS = ("function_preserving", "gradmax", "random")


def _chunk_bounds(units, chunks):
    """Chunk boundaries `[0, b_1, ..., units]`, sizes differing by <= 1."""
    size, extra = divmod(units, chunks)
    bounds = [0]
    for i in range(chunks):
        bounds.append(bounds[-1] + size + (1 if i < extra else 0))
    return bounds


@ops.custom_gradient
def hold_gradients(outputs, *values):
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


def _capacity_assigned(layer, variable):
    """Keeps the layer's capacity in step with its capacity variables.

    Runs after every host assignment of `active_units` or `frozen_units`:
    `set_capacity`, `set_weights` (of the layer or of the whole model, as
    `EarlyStopping(restore_best_weights=True)` does), `load_weights`,
    `.keras` loading, `BackupAndRestore` and JAX's state sync. The compiled
    functions that traced the old capacity are made again at their next
    call (`keras_gradnets.dynamic_capacity.links`).
    """
    layer._pristine = False
    value = variable.host_value
    if value is None:
        value = int(np.asarray(ops.convert_to_numpy(variable)))
    index = 0 if variable is layer._active_variable else 1
    cache = list(layer._capacity_cache)
    cache[index] = int(value)
    layer._capacity_cache = tuple(cache)


def _check_capacity_variable(layer, state, value):
    """Checks one capacity variable's value: a chunk boundary."""
    accepted = layer.bounds[1:] if state == "active_units" else layer.bounds
    try:
        number = int(np.asarray(value))
    except (TypeError, ValueError):
        number = None
    if number not in accepted or np.asarray(value).ndim:
        raise ValueError(
            f"Invalid value for the variable `{state}` of layer "
            f"'{layer.name}'. Expected a chunk boundary in {accepted} (the "
            f"layer has {layer.units} units in {layer.chunks} chunks). "
            f"Received: {state}={value!r}"
        )


def set_rows(kernel, start, stop, rows=None):
    """Writes `rows` (zeros if None) into input rows `start:stop`."""
    if rows is None:
        rows = ops.zeros_like(kernel[..., start:stop, :])
    corner = (0,) * (len(kernel.shape) - 2) + (start, 0)
    kernel.assign(ops.slice_update(kernel.value, corner, rows))


def _zero_rows_reading(reader, units, start, stop):
    """Zeros the input rows `r` of `reader`'s kernels with
    `start <= r % units < stop`: the rows that read units `start:stop` of a
    layer with `units` units through a `Flatten` or a pooling."""
    kernels = (
        reader.kernels if isinstance(reader, DynamicLayer) else [reader.kernel]
    )
    for kernel in kernels:
        unit = np.arange(kernel.shape[-2]) % units
        keep = ((unit < start) | (unit >= stop))[:, None]
        kernel.assign(kernel * ops.convert_to_tensor(keep, kernel.dtype))


def _seeded(initializer, seed):
    """`initializer`, seeded with `seed` when it was created unseeded.

    An unseeded Keras initializer draws its seed when it is created, so a
    model loaded from a file would draw other values than the saved one.
    """
    config = initializer.get_config()
    if "seed" not in config or config["seed"] is not None:
        return initializer
    return initializer.__class__.from_config({**config, "seed": seed})


class DynamicLayer(StatefulLayer):
    """A layer allocated at full size that uses a growing part of it.

    Subclasses define the full-size computation in `_apply` and the kernel
    shape in `_kernel_shape`; this class keeps the capacity (Chapter 4 of
    the dynamic-capacity thesis): the output units are split into `chunks`,
    the first `active_units` are used and the first `frozen_units` are
    frozen.

    The capacity lives in two int32 variables, `active_units` and
    `frozen_units`, saved with the weights: whatever sets them (`grow`,
    `set_capacity`, `set_weights` of the layer or of the model,
    `load_weights`, `.keras` loading, `BackupAndRestore`) sets the capacity
    the layer reports and the next step uses: a compiled function that
    traced another capacity is made again at its next call. The layer holds
    no reference to models or other layers: `link_dynamic_layers` records
    which layers read it (`keras_gradnets.dynamic_capacity.links`).
    `set_weights` and loading check every value, the capacity they give
    included, before they write any. It follows the state protocol of the
    other families (`keras_gradnets.layers.StatefulLayer`): `CapacityGrowth`
    keeps its plateau search and warmup restart in the layers it grows
    (`callback_state`).

    Each chunk has its own kernel and bias variables, so that the optimizer
    only works on the chunks being trained: frozen and inactive chunks have
    `overwrite_with_gradient=True` and receive their own value as gradient,
    which every Keras optimizer writes back unchanged (bit for bit, with no
    momentum or weight decay). The forward pass concatenates the active
    chunks with static slices, so the matrix work scales with the active
    capacity.
    """

    def __init__(
        self,
        units,
        chunks,
        initial_chunks=1,
        activation=None,
        use_bias=True,
        growth_init="function_preserving",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed=None,
        **kwargs,
    ):
        # `get_config` saves the current capacity, so that `from_config`
        # restores it; users set it with `set_capacity`.
        active = kwargs.pop("active_units", None)
        frozen = kwargs.pop("frozen_units", 0)
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
        if self.growth_init == "gradmax":
            self._check_gradmax()
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        if seed is None:
            # Drawn like Keras's default seeds (`set_random_seed` sets it),
            # then saved in the config.
            seed = random.randint(1, 10**9)
        self.seed = check_number("seed", seed, low=0, integer=True)
        self.bounds = _chunk_bounds(self.units, self.chunks)
        if active is None:
            active = self.bounds[self.initial_chunks]
        # The variables are the capacity; this tuple mirrors them for the
        # Python code that needs ints (static slices at trace time).
        self._capacity_cache = self._check_capacity(active, frozen)
        self._pristine = True

    # Capacity ----------------------------------------------------------

    @property
    def active_units(self):
        """Number of output units in use (the first ones)."""
        return self._capacity_cache[0]

    @property
    def frozen_units(self):
        """Number of output units whose weights no longer change."""
        return self._capacity_cache[1]

    @property
    def active_chunks(self):
        return self.bounds.index(self.active_units)

    @property
    def frozen_chunks(self):
        return self.bounds.index(self.frozen_units)

    @property
    def capacity(self):
        """The active fraction of the layer, `active_units / units`."""
        return self.active_units / self.units

    @property
    def traced_capacity(self):
        """What a compiled function traces: active and frozen units."""
        return self._capacity_cache

    def capacity_counts(self):
        """`(active, total)`: units, for `CapacityGrowth`'s logs."""
        return self.active_units, self.units

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

        Units that become active are initialized as `growth_init` says
        (with `"gradmax"`, their incoming and outgoing weights are zeros
        until `initialize_gradmax` sets the outgoing ones);
        units that become inactive output zeros again (their weights are
        kept). Both counts must be chunk boundaries (`layer.bounds`).

        The next train, test or predict step of every model that ran the
        layer uses the new capacity. The weights that read the new units
        are initialized once the model is linked (`link_dynamic_layers`,
        which `CapacityGrowth` calls). Inside `fit`, call it from a
        callback after reading `self.model` (on JAX that syncs the training
        state). A layer that follows this one (the gate of a gated
        `DynamicFeedForward`) takes the same capacity; a follower refuses
        any other.

        Args:
            active_units: Number of units to use, a chunk boundary.
            frozen_units: Number of units to freeze, a chunk boundary no
                larger than `active_units`. Defaults to the current value,
                lowered to `active_units` if needed.
        """
        if frozen_units is None:
            frozen_units = min(self.frozen_units, active_units)
        capacity = self._check_capacity(active_units, frozen_units)
        leader = links.leader_of(self)
        if leader is not None and capacity != leader.traced_capacity:
            raise ValueError(
                f"Layer '{self.name}' takes its capacity from layer "
                f"'{leader.name}' (active and frozen units "
                f"{leader.traced_capacity}). Call `set_capacity` or `grow` "
                f"on '{leader.name}'. Received: active_units={active_units}, "
                f"frozen_units={frozen_units}"
            )
        if capacity == self._capacity_cache:
            return
        if not self.built:
            self._capacity_cache = capacity
            return
        old_active = self.active_units
        active, frozen = capacity
        self._active_variable.assign(np.int32(active))
        self._frozen_variable.assign(np.int32(frozen))
        if active > old_active:
            if self.growth_init == "gradmax":
                self._zero_units(old_active, active)
            else:
                self.initialize_units(old_active, active)
            for i, consumer in enumerate(links.consumers_of(self)):
                self._initialize_reader(consumer, old_active, active, i)
            if self.growth_init != "random":
                for reader in links.readers_through_of(self):
                    _zero_rows_reading(reader, self.units, old_active, active)
        links.capacity_changed(self)
        for follower in links.followers_of(self):
            follower.set_capacity(active, frozen)

    def grow(self, num_chunks=1, freeze=True):
        """Activates the next `num_chunks` chunks.

        At full capacity it does nothing.

        Args:
            num_chunks: Positive integer. Stops at the full size.
            freeze: Whether to freeze the units that were active before.
        """
        check_number("num_chunks", num_chunks, low=1, integer=True)
        if self.active_units == self.units:
            return
        target = min(self.active_chunks + num_chunks, self.chunks)
        frozen = self.active_units if freeze else self.frozen_units
        self.set_capacity(self.bounds[target], frozen)

    def _check_gradmax(self):
        """Raises unless GradMax can grow the layer (`DynamicDense`)."""
        raise ValueError(
            f"growth_init='gradmax' is implemented for DynamicDense, not "
            f"{self.__class__.__name__}. Pass "
            "growth_init='function_preserving' or 'random'."
        )

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
        active, frozen = self._capacity_cache
        self._active_variable = add_watched_variable(
            self,
            "active_units",
            active,
            "int32",
            1,
            self.units,
            _capacity_assigned,
            _check_capacity_variable,
        )
        self._frozen_variable = add_watched_variable(
            self,
            "frozen_units",
            frozen,
            "int32",
            0,
            self.units,
            _capacity_assigned,
            _check_capacity_variable,
        )

    def _chunk_initializer(self, i, kernel):
        """Initializer of chunk `i`: a slice of a draw at the active shape."""
        if i >= self.active_chunks:
            return "zeros"
        lo, hi = self.bounds[i], self.bounds[i + 1]

        def initialize(shape, dtype=None):
            if not kernel:
                return self.bias_initializer((self.active_units,), dtype)[lo:hi]
            full = self.kernel_initializer(
                self._kernel_shape(self.input_units, self.active_units), dtype
            )
            return self._pad_rows(full[..., lo:hi], self.input_dim)

        return initialize

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

    def _chunk_variables(self, i):
        return [self.kernels[i]] + ([self.biases[i]] if self.use_bias else [])

    def _assign_weights(self, variables, values):
        """Assigns every variable once all values and the capacity they
        give are checked: a refusal leaves the layer as it was."""
        if len(values) == len(variables):
            index = [id(v) for v in variables].index(id(self._active_variable))
            self._check_capacity(
                *(int(np.asarray(v)) for v in values[index : index + 2])
            )
        assign_checked(self, variables, values)
        links.capacity_changed(self)

    # Initialization ------------------------------------------------------

    @property
    def input_units(self):
        """Number of input units in use: the source layer's active units.

        The source is the dynamic layer whose output this layer reads, once
        `link_dynamic_layers` found it; otherwise every input is used.
        """
        source = links.source_of(self)
        return self.input_dim if source is None else source.active_units

    def _draw(self, initializer, shape, stop, stream):
        """A draw of `initializer` for the units up to `stop`.

        An unseeded initializer is seeded from the layer's `seed`, `stop`
        and `stream` (one per use), so a layer loaded from a file draws
        what the saved one would have.
        """
        seed = (self.seed + 1009 * stop + stream) % 2**31
        return _seeded(initializer, seed)(shape, dtype=self.variable_dtype)

    def initialize_units(self, start, stop):
        """Draws the incoming weights of units `start:stop`.

        The initializer sees the active shape (active inputs by `stop`
        units), so that fan-based scales (Glorot, He) suit the active size,
        not the full allocation.
        """
        shape = self._kernel_shape(self.input_units, stop)
        full = self._draw(self.kernel_initializer, shape, stop, 0)
        bias = self._draw(self.bias_initializer, (stop,), stop, 1)
        for i in range(self.bounds.index(start), self.bounds.index(stop)):
            lo, hi = self.bounds[i], self.bounds[i + 1]
            block = full[..., lo:hi]
            self.kernels[i].assign(self._pad_rows(block, self.input_dim))
            if self.use_bias:
                self.biases[i].assign(bias[lo:hi])

    def _zero_units(self, start, stop):
        """Zeros the incoming weights and biases of units `start:stop`."""
        for i in range(self.bounds.index(start), self.bounds.index(stop)):
            for variable in self._chunk_variables(i):
                variable.assign(ops.zeros(variable.shape, variable.dtype))

    def initialize_inputs(self, start, stop):
        """Sets the weights that read input units `start:stop`.

        Frozen chunks get zeros, so that frozen units keep computing what
        they learned. Trainable chunks get zeros for
        `growth_init="function_preserving"` and draws of the initializer at
        the new active fan-in otherwise.
        """
        draw = self.growth_init == "random"
        if draw:
            shape = self._kernel_shape(stop, self.active_units)
            full = self._draw(self.kernel_initializer, shape, stop, 2)
        for i in range(self.chunks):
            rows = None
            if draw and self.frozen_chunks <= i < self.active_chunks:
                lo, hi = self.bounds[i], self.bounds[i + 1]
                rows = full[..., start:stop, :][..., lo:hi]
            set_rows(self.kernels[i], start, stop, rows)

    def _initialize_reader(self, reader, start, stop, index, draw=None):
        """Sets the weights with which `reader`, the consumer at `index`,
        reads units `start:stop`: a plain reader gets draws of its
        initializer at fan-in `stop` (with `growth_init="random"`, or when
        `draw`) or zeros."""
        if isinstance(reader, DynamicLayer):
            reader.initialize_inputs(start, stop)
            return
        if draw is None:
            draw = self.growth_init == "random"
        kernel = reader.kernel
        rows = None
        if draw:
            shape = tuple(kernel.shape[:-2]) + (stop, kernel.shape[-1])
            rows = self._draw(reader.kernel_initializer, shape, stop, 3 + index)
            rows = rows[..., start:stop, :]
        set_rows(kernel, start, stop, rows)

    def linked(self):
        """Prepares the layer once `link_dynamic_layers` linked it.

        At build time a layer cannot know that its input comes from a
        dynamic layer, so it draws its weights with the full input size as
        fan-in. An untrained layer (never called in training mode, grown
        or given weights) draws them again at the linked active sizes, and
        so do the rows of its plain consumers that read its active units.
        Every chunk is then unmarked, so that the optimizer built next
        makes slots for all of them.
        """
        if self.built and self._pristine:
            self.initialize_units(0, self.active_units)
            for i, consumer in enumerate(links.consumers_of(self)):
                if not isinstance(consumer, DynamicLayer):
                    self._initialize_reader(
                        consumer, 0, self.active_units, i, draw=True
                    )
            self._pristine = False
        self._hold_chunks(False)

    def _pad_rows(self, block, rows):
        missing = rows - block.shape[-2]
        if missing == 0:
            return block
        pad = [(0, 0)] * len(block.shape)
        pad[-2] = (0, missing)
        return ops.pad(block, pad)

    # Forward ----------------------------------------------------------

    def _apply(self, inputs, kernel, bias):
        raise NotImplementedError

    def _slice_inputs(self, inputs, rows):
        return inputs[..., :rows]

    def _output_axis(self):
        return -1

    def call(self, inputs, training=None):
        active_units, frozen_units = self._check_capacity(*self._capacity_cache)
        # On TensorFlow and JAX this call may be a trace that a compiled
        # function keeps: it is made again once the capacity changes.
        links.note_trace(self)
        hold = bool(training) and self.trainable and links.optimizer_ready(self)
        if training:
            self._pristine = False
            if not hold and self.trainable and frozen_units:
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
        if active_units < self.units:
            axis = self._output_axis()
            shape = list(ops.shape(outputs))
            shape[axis] = self.units - active_units
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
                outputs = hold_gradients(outputs, *held)
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

    def finalized_units(self):
        """The units `finalize` keeps: `active_units`, when every reader
        has a kernel over the units (see `keras_gradnets.core.width`)."""
        return self.active_units

    def finalized_layers(self):
        """A built-in layer equal to this one, at full size, with weights.

        Returns:
            `[layer]`: a built `Dense` or `Conv2D` with `units` outputs whose
            weights for the inactive units are zero. Where every reader of
            this layer has a kernel over its units, `keras_gradnets.finalize`
            shrinks it to `active_units` and slices the readers' rows.
        """
        kernel = ops.convert_to_numpy(self.kernel).copy()
        kernel[..., self.active_units :] = 0
        weights = [kernel]
        if self.use_bias:
            bias = ops.convert_to_numpy(self.bias).copy()
            bias[self.active_units :] = 0
            weights.append(bias)
        layer = self._plain_layer(self.units)
        return [built_with_weights(layer, self._built_input_shape(), weights)]

    def _built_input_shape(self):
        return (None, self.input_dim)

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
                **serialized(self, "kernel_initializer", "bias_initializer"),
                "seed": self.seed,
                "active_units": self.active_units,
                "frozen_units": self.frozen_units,
            }
        )
        return config
