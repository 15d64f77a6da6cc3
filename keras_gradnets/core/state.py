"""The state protocol: layer variables that callbacks move during `fit`.

A layer that has such state subclasses `StatefulLayer` and declares it at
class level, name and accepted range:

```python
class MyGradualLayer(StatefulLayer):
    state_ranges = {"g": (0.0, 1.0)}

    def __init__(self, g=0.0, **kwargs):
        super().__init__(**kwargs)
        self.g = self.add_state("g", g)
```

Callbacks find the layers they drive by this declaration (a layer class
and a state name), never by a variable's name, so a user's own layer that
happens to have a variable `g` is left alone.
"""

import json
import math
import numbers
import weakref

import keras
import numpy as np
from keras import ops
from keras.src.backend.common.stateless_scope import in_stateless_scope

from keras_gradnets.core.checks import check_number
from keras_gradnets.core.checks import describe_range


class WatchedVariable(keras.Variable):
    """A `keras.Variable` that checks and reports assignments from the host.

    Values given as Python numbers or NumPy arrays (`assign`, `set_weights`,
    `load_weights`) are checked against `(low, high)` (a `ValueError` names
    the layer, the state and the value), then `on_assign(variable)` of the
    owning layer runs. Backend tensors are not checked: that is how the
    trainers move state between steps (JAX's state sync) and how the train
    step writes a schedule's values, which must stay cheap; `finalize` and
    the schedulers check those values.

    The variable also remembers the last value assigned from the host, as
    a Python number (`host_value`; `None` once a backend tensor was
    assigned), so that eager code can use it without reading the device
    (see `eager_value`).
    """

    def _watch(self, layer, state, low, high, value, on_assign, check):
        self._owner = weakref.ref(layer)
        self._state = state
        self._range = (low, high)
        self._on_assign = on_assign
        self._check = check
        self.host_value = value

    def check(self, value):
        """Raises the `ValueError` an assignment of `value` would raise.

        Layers check every value of a `set_weights` or a load with it
        before they write any, so that a refusal leaves them as they were.
        """
        layer = self._owner()
        if layer is None:
            return
        if self._check is not None:
            self._check(layer, self._state, value)
        else:
            check_state_value(layer, self._state, value, *self._range)

    def assign(self, value):
        host = isinstance(value, (numbers.Number, np.ndarray, np.generic))
        if host:
            self.check(value)
        if host and write_from_host(self, value):
            result = self.value
        else:
            result = super().assign(value)
        self.host_value = np.asarray(value).item() if host else None
        layer = self._owner()
        if self._on_assign is not None and layer is not None:
            self._on_assign(layer, self)
        return result


def write_from_host(variable, value):
    """Writes a host value into `variable` on torch without waiting for the
    device; returns whether it did.

    Keras's `assign` of a number or a NumPy array makes a device tensor of
    it first (`torch.as_tensor(value, device=...)`), a copy after which the
    host waits for every queued kernel on a GPU (pytorch/pytorch#120996),
    and a per-step scheduler writes one state per driven layer before each
    step. Here a scalar is filled in (`fill_`, the number passed to the
    kernel) and an array copied with `non_blocking=True`; on a CPU the
    write takes 3 us against Keras's 9 (not measured on a GPU here).
    Elsewhere, inside a `keras.StatelessScope` (which records writes
    instead of making them) and for a value of another shape, it writes
    nothing and returns `False`: the caller then uses `assign`.

    Args:
        variable: A `keras.Variable`.
        value: A Python number, a list of numbers or a NumPy array.
    """
    if (
        keras.backend.backend() != "torch"
        or variable._value is None
        or in_stateless_scope()
    ):
        return False
    array = np.asarray(value)
    if array.shape != tuple(variable.shape):
        return False
    import torch

    with torch.no_grad():
        if array.ndim == 0:
            variable._value.fill_(array.item())  # Cast to the variable's dtype.
        else:
            source = torch.from_numpy(np.ascontiguousarray(array))
            variable._value.copy_(source, non_blocking=True)
    return True


def assign_checked(layer, variables, values):
    """Assigns `values` to `variables` once all of them are checked.

    Checks the count, the shapes and, for each `WatchedVariable`, the value
    (its range or its own check) before writing any: a `ValueError` leaves
    every variable as it was.
    """
    if len(variables) != len(values):
        raise ValueError(
            f"Layer '{layer.name}' expected {len(variables)} weights. "
            f"Received: {len(values)} weights"
        )
    for variable, value in zip(variables, values, strict=True):
        if tuple(variable.shape) != tuple(np.shape(value)):
            raise ValueError(
                f"Layer '{layer.name}' weight `{variable.name}` has shape "
                f"{tuple(variable.shape)}. Received: a value of shape "
                f"{tuple(np.shape(value))}"
            )
        if isinstance(variable, WatchedVariable):
            variable.check(np.asarray(value))
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def check_state_value(layer, state, value, low, high):
    """Returns `value` as a float if it is finite and in `[low, high]`.

    Raises:
        ValueError: naming the layer, the state and the value otherwise.
    """
    try:
        number = float(np.asarray(value))
    except (TypeError, ValueError):
        number = None
    if (
        number is None
        or not math.isfinite(number)
        or not (
            (low is None or number >= low) and (high is None or number <= high)
        )
    ):
        raise ValueError(
            f"Invalid value for the state `{state}` of layer '{layer.name}' "
            f"({layer.__class__.__name__}). Expected "
            f"{describe_range(low, high)}. Received: {state}={value!r}"
        )
    return number


def add_watched_variable(
    layer,
    name,
    value,
    dtype,
    low=None,
    high=None,
    on_assign=None,
    check=None,
):
    """Returns a non-trainable scalar `WatchedVariable` owned by `layer`.

    It is never autocast, so mixed precision policies keep its `dtype`.
    Set it as an attribute of `layer`, which then tracks it as one of its
    non-trainable weights (in the order such attributes are set).

    Values assigned from the host are checked by `check(layer, name,
    value)` if given, else against `[low, high]`; then `on_assign(layer,
    variable)` runs.
    """
    variable = WatchedVariable(
        initializer=keras.initializers.Constant(value),
        shape=(),
        dtype=dtype,
        trainable=False,
        autocast=False,
        name=name,
    )
    variable._watch(layer, name, low, high, value, on_assign, check)
    return variable


def eager_value(value):
    """The value of a state variable as a Python number, where it is free.

    Torch runs layers eagerly: a kernel that takes a Python number (torch's
    fused `leaky_relu` or `dropout`, a Python branch) is faster there than
    the tensor formula a compiled step needs, but reading the variable to
    the host would synchronize with the device at every call. This returns
    the value the `WatchedVariable` last received from the host, which
    costs nothing.

    Returns:
        A Python number on torch outside `torch.compile`, when `value` is a
        `WatchedVariable` last assigned from the host; `None` otherwise
        (TensorFlow and JAX traces, `jit_compile=True` on torch, a backend
        tensor): then use the tensor formula.
    """
    if keras.backend.backend() != "torch" or not isinstance(
        value, WatchedVariable
    ):
        return None
    import torch

    if torch.compiler.is_compiling():
        return None
    return value.host_value


def add_scalar_weight(layer, name, value, dtype="float32"):
    """Adds a non-trainable scalar variable named `name` to `layer`.

    It is never autocast, so mixed precision policies keep its `dtype`.
    """
    return layer.add_weight(
        shape=(),
        initializer=keras.initializers.Constant(value),
        dtype=dtype,
        trainable=False,
        autocast=False,
        name=name,
    )


def scalar_value(variable):
    """Returns the value of a scalar variable as a Python float."""
    return float(ops.convert_to_numpy(variable))


class StatefulLayer(keras.layers.Layer):
    """Base class of layers whose state callbacks move during training.

    Subclasses declare their state at class level in `state_ranges`, a dict
    from state name to its accepted `(low, high)` range (`None` for an open
    end), and create each one in `__init__` with `add_state`. Each state is
    a non-trainable float32 scalar variable, never autocast (mixed precision
    keeps it float32), saved with the layer's weights.

    Callbacks derived from `keras_gradnets.callbacks.StateScheduler` find
    the layers they drive by class and declared state name. Values assigned
    from the host (`layer.g.assign(0.5)`, `layer.g = 0.5`, `set_weights`,
    `load_weights`) are checked against the range: an out-of-range or
    non-finite value is a `ValueError`.

    The states of the layer's `keras.random.SeedGenerator` attributes are
    saved with its weights too (Keras leaves them out), so a run resumed
    from a checkpoint draws the same random numbers as one that was never
    interrupted.

    **Callback state.** What a callback must carry across
    `BackupAndRestore`, `ModelCheckpoint` and `.keras` files (the plateau
    search of `CapacityGrowth`, its warmup restart, the loss average of
    `MollifierScheduler`) it keeps in the layers it drives, with
    `set_callback_state(key, value)`: a JSON value saved with the layer's
    weights (not one of `layer.weights`, so `get_weights` and
    `EarlyStopping(restore_best_weights=True)` leave it alone) and read
    back with `callback_state(key)`.
    """

    state_ranges = {}

    def __setattr__(self, name, value):
        # `layer.g = 1.0` goes through the state's variable: checked, saved
        # and seen by the compiled steps, as `layer.g.assign(1.0)` is.
        if name in self.state_ranges and not isinstance(value, keras.Variable):
            variable = getattr(self, name, None)
            if isinstance(variable, keras.Variable):
                variable.assign(value)
                return
        super().__setattr__(name, value)

    def _seed_states(self):
        return [
            value.state
            for value in vars(self).values()
            if isinstance(value, keras.random.SeedGenerator)
        ]

    def callback_state(self, key):
        """The value a callback kept under `key` (a copy), or `None`."""
        text = self._callback_states().get(key)
        return None if text is None else json.loads(text)

    def set_callback_state(self, key, value):
        """Keeps the JSON value `value` under `key`, saved with weights.

        Raises:
            ValueError: if `value` is not JSON-serializable.
        """
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            raise ValueError(
                "Invalid value received for argument `value` of "
                f"`set_callback_state` on layer '{self.name}'. Expected a "
                f"JSON-serializable value. Received: value={value!r}"
            ) from None
        self._callback_states()[key] = text

    def _callback_states(self):
        # In `__dict__`, out of Keras's tracking of layer attributes.
        return self.__dict__.setdefault("_callback_state_texts", {})

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for i, state in enumerate(self._seed_states()):
            store[f"seed_{i}"] = state
        for key, text in self._callback_states().items():
            store[f"{_CALLBACK}{key}"] = np.frombuffer(text.encode(), "uint8")

    def set_weights(self, weights):
        self._assign_weights(self.weights, list(weights))

    def _assign_weights(self, variables, values):
        """Assigns `values` once all are checked (`assign_checked`);
        subclasses with state spread over several variables check more."""
        assign_checked(self, variables, values)

    def load_own_variables(self, store):
        keys = list(store.keys())
        values = [store[str(i)] for i in range(sum(k.isdigit() for k in keys))]
        texts = {
            key[len(_CALLBACK) :]: bytes(np.asarray(store[key])).decode()
            for key in keys
            if key.startswith(_CALLBACK)
        }
        self._assign_weights(
            self._trainable_variables + self._non_trainable_variables, values
        )
        for i, state in enumerate(self._seed_states()):
            if f"seed_{i}" in store:
                state.assign(store[f"seed_{i}"])
        self._callback_states().clear()
        self._callback_states().update(texts)

    def add_state(self, name, value):
        """Creates the declared state `name` with initial `value`.

        Args:
            name: A name declared in the class's `state_ranges`.
            value: The initial value, checked against the declared range.

        Returns:
            The new variable: set it as the attribute `name`.
        """
        if name not in self.state_ranges:
            raise ValueError(
                f"{self.__class__.__name__} declares the states "
                f"{sorted(self.state_ranges)} in `state_ranges`, not "
                f"'{name}'. Declare it there before `add_state`."
            )
        low, high = self.state_ranges[name]
        value = check_number(name, value, low=low, high=high)
        return add_watched_variable(
            self, name, float(value), "float32", low, high
        )

    def state_value(self, name):
        """The current value of the state `name`, checked, as a float.

        Raises:
            ValueError: if the value is not finite or out of its range (it
                can only get there through a backend tensor assignment).
        """
        return check_state_value(
            self,
            name,
            scalar_value(getattr(self, name)),
            *self.state_ranges[name],
        )


_CALLBACK = "callback_"


def set_callback_state(layers, key, value):
    """Keeps the JSON value `value` under `key` in each of `layers`.

    Serialized once for all of them: callbacks call it at every step.
    """
    first, *rest = layers
    first.set_callback_state(key, value)
    text = first._callback_states()[key]
    for layer in rest:
        layer._callback_states()[key] = text


def callback_state(layers, key):
    """The value the first of `layers` keeps under `key`, or `None`."""
    return next(
        (
            state
            for state in (layer.callback_state(key) for layer in layers)
            if state is not None
        ),
        None,
    )


def declares_state(layer, state, layer_type=StatefulLayer):
    """Whether `layer` is a `layer_type` that declares the state `state`."""
    return isinstance(layer, layer_type) and state in layer.state_ranges
