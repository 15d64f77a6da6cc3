"""The shared protocols: declared state, the base scheduler, finalize."""

import os

import h5py
import keras
import numpy as np
import pytest
from keras import ops

import keras_gradnets
from keras_gradnets import layers
from keras_gradnets import schedules
from keras_gradnets.callbacks import GradNetScheduler
from keras_gradnets.callbacks import MollifierScheduler
from keras_gradnets.callbacks import StateScheduler
from keras_gradnets.core.logs_metric import LogsMetric
from keras_gradnets.core.state import WatchedVariable
from keras_gradnets.core.state import write_from_host
from tests.helpers import BACKEND
from tests.helpers import BatchRecorder
from tests.helpers import CrashAt
from tests.helpers import LastBatchMean
from tests.test_scheduler import X_PROBE
from tests.test_scheduler import Y_PROBE
from tests.test_scheduler import probe_model
from tests.test_scheduler import used_g


def _np(x):
    return ops.convert_to_numpy(x)


class WeightNorm(keras.layers.Layer):
    """A user's layer whose scale is a variable named `g` (and one `p`)."""

    def build(self, input_shape):
        self.g = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(0.3), name="g"
        )
        self.p = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(0.3),
            trainable=False,
            name="p",
        )

    def call(self, inputs):
        return inputs * self.g


# 1. Callbacks drive declared state only --------------------------------


def test_schedulers_leave_a_users_g_and_p_alone():
    user = WeightNorm(name="user")
    model = keras.Sequential(
        [
            keras.Input((3,)),
            layers.MollifiedDense(3, p=1.0, name="molly"),
            user,
            keras.layers.Dense(3),
            layers.GReLU(name="grelu"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.0), "mse")
    history = model.fit(
        np.ones((4, 3)),
        np.ones((4, 3)),
        epochs=3,
        verbose=0,
        callbacks=[
            GradNetScheduler(tau=2),
            MollifierScheduler(schedules.LinearDecay(2), use_loss=False),
        ],
    )
    assert float(_np(user.g)) == pytest.approx(0.3)
    assert float(_np(user.p)) == pytest.approx(0.3)
    assert history.history["g"] == [0.0, 0.5, 1.0]
    assert history.history["p"] == [1.0, 0.5, 0.0]  # steps t = 0, 1, 2
    assert not [k for k in history.history if k.startswith(("g_", "p_"))]


def test_given_layers_must_declare_the_state():
    with pytest.raises(ValueError, match="`layers`.*GradualLayer"):
        GradNetScheduler(tau=2, layers=[WeightNorm()])
    with pytest.raises(ValueError, match="`layers`.*mollified.*MollifiedDense"):
        MollifierScheduler(schedules.LinearDecay(2), layers=[layers.GReLU()])


def test_gradnet_scheduler_does_not_drive_other_families():
    model = keras.Sequential(
        [keras.Input((3,)), layers.MollifiedDense(3, p=1.0)]
    )
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="found no GradualLayer"):
        model.fit(
            np.ones((2, 3)),
            np.ones((2, 3)),
            verbose=0,
            callbacks=[GradNetScheduler(tau=2)],
        )


def test_declaring_state_is_required_to_add_it():
    class Mine(keras_gradnets.layers.StatefulLayer):
        state_ranges = {"rate": (0, None)}

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.rate = self.add_state("rate", 2.0)
            self.add_state("other", 0.0)

    with pytest.raises(ValueError, match="declares the states.*'other'"):
        Mine()


class RateLayer(keras_gradnets.layers.StatefulLayer):
    """A user's own stateful layer: scales its input by `rate`."""

    state_ranges = {"rate": (0, None)}

    def __init__(self, rate=1.0, **kwargs):
        super().__init__(**kwargs)
        self.rate = self.add_state("rate", rate)

    def call(self, inputs):
        return inputs * ops.cast(self.rate, inputs.dtype)


class RateScheduler(StateScheduler):
    layer_type = RateLayer
    state = "rate"


def test_a_users_scheduler_on_the_base_class_reaches_the_compiled_step():
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(1, use_bias=False, kernel_initializer="ones"),
            RateLayer(name="rate"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.0), "mse", metrics=[LastBatchMean()])
    recorder = BatchRecorder("last_mean")
    history = model.fit(
        np.ones((6, 1)),
        np.ones((6, 1)),
        batch_size=2,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[RateScheduler(lambda t: 2.0 * t, unit="step"), recorder],
    )
    assert recorder.values == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert history.history["rate"] == [4.0, 10.0]


# 7. Values are checked --------------------------------------------------


@pytest.mark.parametrize("value", [1.7, -0.1, float("nan"), np.float32(2)])
def test_assigning_state_out_of_range_is_an_error(value):
    layer = layers.GReLU(name="grelu")
    with pytest.raises(
        ValueError, match=r"state `g` of layer 'grelu'.*\[0, 1\].*Received: g="
    ):
        layer.g.assign(value)
    assert float(_np(layer.g)) == 0.0
    with pytest.raises(ValueError, match="state `p`"):
        layers.MollifiedDense(2).p.assign(1.5)


@pytest.mark.parametrize("value", [0.25, np.float32(0.75), np.array(1.0), 1])
def test_a_host_write_sets_the_state_the_layer_uses(value):
    layer = layers.GReLU(name="grelu")
    model = keras.Sequential([keras.Input((1,)), layer])
    layer.g.assign(value)
    assert layer.g.host_value == float(value)
    assert _np(layer.g).dtype == np.float32
    expected = -4.0 * (1.0 - float(value))  # g=1 is the identity.
    assert float(_np(model(np.array([[-4.0]])))[0, 0]) == expected
    # In a stateless scope the write is recorded, not made.
    with keras.StatelessScope() as scope:
        layer.g.assign(0.5)
    assert float(_np(layer.g)) == float(value)
    assert float(_np(scope.get_current_value(layer.g))) == 0.5
    with pytest.raises(ValueError):
        layer.g.assign(np.array([0.5]))
    assert float(_np(layer.g)) == float(value)


def test_torch_writes_host_values_in_place():
    layer = layers.GReLU()
    metric = LogsMetric(["a", "b"], "values")
    on_torch = BACKEND == "torch"
    assert write_from_host(layer.g, 0.25) is on_torch
    assert write_from_host(metric.values, [3.0, 4.0]) is on_torch
    assert write_from_host(metric.values, np.arange(4.0)[::-2]) is on_torch
    if on_torch:
        assert float(_np(layer.g)) == 0.25
        assert list(_np(metric.values)) == [3.0, 1.0]
    # What `assign` must do itself: record in a stateless scope, refuse a
    # value of another shape.
    with keras.StatelessScope():
        assert not write_from_host(layer.g, 0.5)
    assert not write_from_host(metric.values, [1.0])


def test_a_host_write_sets_an_integer_capacity():
    layer = layers.DynamicDense(8, chunks=4, initial_chunks=1)
    model = keras.Sequential([keras.Input((3,)), layer])
    layer.set_capacity(6, 2)
    assert [_np(v).dtype for v in layer.non_trainable_weights] == [np.int32] * 2
    assert [int(_np(v)) for v in layer.non_trainable_weights] == [6, 2]
    outputs = _np(model(np.ones((1, 3))))
    assert np.all(outputs[:, :6] != 0) and np.all(outputs[:, 6:] == 0)


@pytest.mark.parametrize("value", [1.7, float("nan")])
def test_finalize_names_a_state_outside_its_range_correctly(value):
    model = keras.Sequential([keras.Input((2,)), layers.GReLU(name="grelu")])
    # A backend tensor is not checked on assignment (that is the trainers'
    # path); finalize checks it.
    model.layers[0].g.assign(ops.convert_to_tensor(value, "float32"))
    with pytest.raises(
        ValueError,
        match=r"state `g` of layer 'grelu'.*Expected a number in \[0, 1\]",
    ):
        keras_gradnets.finalize(model)


def test_finalize_between_end_points_names_layer_and_value():
    model = keras.Sequential(
        [keras.Input((2,)), layers.GReLU(g=0.4, name="grelu")]
    )
    with pytest.raises(ValueError, match="'grelu'.*g=0.4.*g=0 or g=1"):
        keras_gradnets.finalize(model)


@pytest.mark.parametrize("value", [None, "0.5", float("nan"), 1.5])
def test_a_bad_schedule_value_is_an_error_naming_schedule_step_and_value(
    value,
):
    def schedule(t):
        return value

    with pytest.raises(
        ValueError,
        match=rf"schedule <function .*schedule.*> returned "
        rf"g={value!r} at step 0\. Expected a number in \[0, 1\]",
    ):
        probe_model().fit(
            X_PROBE,
            Y_PROBE,
            verbose=0,
            callbacks=[GradNetScheduler(schedule, unit="step")],
        )


# 8. One step numbering -----------------------------------------------------


class StateRecorder(keras.callbacks.Callback):
    """Records a layer state after every step (synced on JAX)."""

    def __init__(self, layer, state):
        super().__init__()
        self.layer, self.state, self.values = layer, state, []

    def on_train_batch_end(self, batch, logs=None):
        _ = self.model
        self.values.append(float(_np(getattr(self.layer, self.state))))


def test_one_schedule_gives_the_same_values_in_every_scheduler():
    schedule = schedules.LinearDecay(decay_steps=5)
    grelu, molly = layers.GReLU(), layers.MollifiedDense(2, p=1.0)
    model = keras.Sequential([keras.Input((2,)), molly, grelu])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    recorders = [StateRecorder(grelu, "g"), StateRecorder(molly, "p")]
    model.fit(
        np.ones((8, 2)),
        np.ones((8, 2)),
        batch_size=2,
        epochs=2,
        verbose=0,
        callbacks=[
            GradNetScheduler(schedule, unit="step"),
            MollifierScheduler(schedule, use_loss=False),
            *recorders,
        ],
    )
    expected = [max(0.0, 1 - t / 5) for t in range(8)]
    assert recorders[0].values == pytest.approx(expected, abs=1e-7)
    assert recorders[1].values == pytest.approx(expected, abs=1e-7)


@pytest.mark.skipif(BACKEND == "torch", reason="steps_per_execution: TF/JAX")
def test_steps_per_execution_gives_every_step_its_own_state():
    model = probe_model()
    model.compile(
        keras.optimizers.SGD(0.0),
        "mse",
        metrics=[LastBatchMean()],
        steps_per_execution=2,
    )
    recorder = BatchRecorder("last_mean")
    model.fit(
        np.concatenate([X_PROBE, X_PROBE]),
        np.concatenate([Y_PROBE, Y_PROBE]),
        batch_size=4,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[GradNetScheduler(tau=10, unit="step"), recorder],
    )
    # Six steps in three calls of two; each call logs its second step,
    # which used g of steps 1, 3 and 5 (not of the call's first step).
    assert used_g(recorder) == [0.1, 0.3, 0.5]


class HostWrites:
    """Counts the values a scheduler writes into layer states from the
    host during `fit` (the compiled step's own writes are not counted)."""

    def __init__(self, monkeypatch):
        self.count = 0
        assign = WatchedVariable.assign

        def counting(variable, value):
            if isinstance(value, (int, float, np.ndarray, np.generic)):
                self.count += 1
            return assign(variable, value)

        monkeypatch.setattr(WatchedVariable, "assign", counting)


@pytest.mark.skipif(BACKEND == "torch", reason="torch writes from the host")
@pytest.mark.parametrize("known_steps", [True, False])
def test_a_step_schedule_is_set_inside_the_compiled_step(
    monkeypatch, known_steps
):
    # Tables of 3 rows: 5 steps an epoch need two fills of the table.
    monkeypatch.setattr(LogsMetric, "table_rows", 3)
    x = np.concatenate([X_PROBE] * 5)
    y = np.concatenate([Y_PROBE] * 5)

    def batches():
        while True:
            for i in range(0, len(x), len(X_PROBE)):
                yield x[i : i + len(X_PROBE)], y[i : i + len(X_PROBE)]

    data = (x, y) if known_steps else (batches(),)
    fit_args = {"batch_size": len(X_PROBE)} if known_steps else {}
    if not known_steps:
        fit_args["steps_per_epoch"] = 5
    model = probe_model()
    recorder = BatchRecorder("last_mean")
    writes = HostWrites(monkeypatch)
    history = model.fit(
        *data,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[GradNetScheduler(tau=10, unit="step"), recorder],
        **fit_args,
    )
    assert writes.count == 0
    assert used_g(recorder) == pytest.approx([t / 10 for t in range(10)])
    assert history.history["g"] == pytest.approx([0.4, 0.9])
    assert float(_np(model.layers[-1].g)) == pytest.approx(0.9)


# 6. One finalize protocol across families -----------------------------------


def _assert_same_outputs(model, plain, x):
    np.testing.assert_allclose(
        _np(plain(x, training=False)),
        _np(model(x, training=False)),
        atol=1e-5,
    )
    library = [
        layer
        for layer in plain._flatten_layers()
        if type(layer).__module__.startswith("keras_gradnets")
    ]
    assert not library


def test_finalize_dynamic_dense_into_mollified_dense():
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((5,)),
            layers.DynamicDense(40, chunks=4, activation="tanh"),
            layers.MollifiedDense(8, p=0.0),
        ]
    )
    plain = keras_gradnets.finalize(model)
    _assert_same_outputs(model, plain, x)
    assert plain.layers[0].units == 10
    assert plain.layers[1].kernel.shape == (10, 8)


def test_finalize_dynamic_dense_read_by_an_op_node_keeps_its_size():
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    inputs = keras.Input((5,))
    h = layers.DynamicDense(40, chunks=4, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(h + 1.0))
    plain = keras_gradnets.finalize(model)
    _assert_same_outputs(model, plain, x)
    # `h + 1` reads every unit: the plain layer keeps all 40, zeros after
    # the 10 active ones.
    assert plain.layers[1].units == 40


def test_finalize_dynamic_conv_batch_norm_flatten_dynamic_dense():
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            layers.DynamicConv2D(8, 3, chunks=4, activation="relu"),
            layers.GradualBatchNormalization(g=1.0),
            keras.layers.Flatten(),
            layers.DynamicDense(12, chunks=3, initial_chunks=2),
            keras.layers.Dense(3),
        ]
    )
    plain = keras_gradnets.finalize(model)
    _assert_same_outputs(model, plain, x)
    assert [type(x).__name__ for x in plain.layers] == [
        "Conv2D",
        "Flatten",
        "Dense",
        "Dense",
    ]
    assert plain.layers[2].units == 8


def test_finalize_mollified_activation_drops_the_skip_path():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4, name="skip")(inputs)
    pre = keras.layers.Dense(4, name="pre")(hidden)
    outputs = layers.MollifiedActivation("tanh", p=0.0, name="molly")(
        [pre, hidden]
    )
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    plain = keras_gradnets.finalize(model)
    _assert_same_outputs(model, plain, x)
    assert plain.get_layer("molly").__class__ is keras.layers.Activation
    with pytest.raises(ValueError, match="'molly'.*p=0.5"):
        model.get_layer("molly").p.assign(0.5)
        keras_gradnets.finalize(model)


# Callback state: one way for every callback -------------------------------


def _state_model():
    inputs = keras.Input((4,))
    hidden = layers.DynamicDense(8, chunks=2, name="grow")(inputs)
    hidden = layers.MollifiedDense(4, activation="tanh", name="molly")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile("sgd", "mse")
    return model


@pytest.mark.parametrize("how", ["keras", "weights"])
def test_callback_state_is_saved_with_the_weights(tmp_path, how):
    model = _state_model()
    grow, molly = model.get_layer("grow"), model.get_layer("molly")
    weights = [w.copy() for w in model.get_weights()]
    grow.set_callback_state("capacity_growth", {"events": [], "best": None})
    molly.set_callback_state("mollifier", {"loss_sum": 0.25})
    # Not a weight: `get_weights`, and so restore_best_weights, skip it.
    assert len(model.get_weights()) == len(weights)
    if how == "keras":
        path = os.path.join(tmp_path, "m.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    else:
        path = os.path.join(tmp_path, "m.weights.h5")
        model.save_weights(path)
        loaded = _state_model()
        loaded.load_weights(path)
    assert loaded.get_layer("grow").callback_state("capacity_growth") == {
        "events": [],
        "best": None,
    }
    assert loaded.get_layer("molly").callback_state("mollifier") == {
        "loss_sum": 0.25
    }


def test_callback_state_is_a_copy_and_json_only():
    layer = layers.GReLU()
    assert layer.callback_state("mine") is None
    value = {"values": [1.0, 2.0]}
    layer.set_callback_state("mine", value)
    value["values"].append(3.0)
    assert layer.callback_state("mine") == {"values": [1.0, 2.0]}
    with pytest.raises(ValueError, match="JSON-serializable.*Received"):
        layer.set_callback_state("mine", {"layer": layer})
    assert layer.callback_state("mine") == {"values": [1.0, 2.0]}


def test_refused_load_keeps_the_callback_state(tmp_path):
    model = _state_model()
    molly = model.get_layer("molly")
    molly.set_callback_state("mollifier", {"loss_sum": 1.0})
    path = os.path.join(tmp_path, "m.weights.h5")
    model.save_weights(path)
    molly.set_callback_state("mollifier", {"loss_sum": 2.0})
    with h5py.File(path, "r+") as f:
        group = f["layers/mollified_dense/vars"]
        p_index = [v.path for v in molly.weights].index(molly.p.path)
        group[str(p_index)][()] = 7.0  # Out of [0, 1].
    with pytest.raises(ValueError, match=r"`p`.*Received: p=array\(7"):
        model.load_weights(path)
    assert molly.callback_state("mollifier") == {"loss_sum": 2.0}


def test_mollified_file_of_version_0_2_loads(tmp_path):
    # Version 0.2 saved the loss average as a variable right after `p`.
    model = _state_model()
    molly = model.get_layer("molly")
    molly.p.assign(0.5)
    path = os.path.join(tmp_path, "old.weights.h5")
    model.save_weights(path)
    with h5py.File(path, "r+") as f:
        group = f["layers/mollified_dense/vars"]
        count = sum(key.isdigit() for key in group)
        values = [group[str(i)][()] for i in range(count)]
        p_index = [v.path for v in molly.weights].index(molly.p.path)
        values.insert(p_index + 1, np.float32(0.75))
        for i in range(count):
            del group[str(i)]
        for i, value in enumerate(values):
            group[str(i)] = value
    loaded = _state_model()
    loaded.load_weights(path)
    layer = loaded.get_layer("molly")
    assert _np(layer.p) == 0.5
    assert layer.callback_state("mollifier") == {"loss_sum": 0.75}
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_concrete_file_of_version_0_2_loads(tmp_path):
    # Version 0.2 had no `logits_scale`, the last variable: the logits were
    # used at scale 1.
    model, _ = _model_with("width")
    width = model.get_layer("width")
    width.logits.assign([0.5, -0.5])
    width.logits_scale.assign(0.0)
    path = os.path.join(tmp_path, "old.weights.h5")
    model.save_weights(path)
    with h5py.File(path, "r+") as f:
        group = f["layers/concrete_width/vars"]
        count = sum(key.isdigit() for key in group)
        del group[str(count - 1)]
    loaded, _ = _model_with("width")
    loaded.load_weights(path)
    layer = loaded.get_layer("width")
    np.testing.assert_array_equal(_np(layer.logits), [0.5, -0.5])
    assert layer.state_value("temperature") == 0.5
    assert layer.state_value("logits_scale") == 1.0


# A refused state change leaves everything as it was, on every path --------


def _model_with(layer_name):
    """A small model with one layer of each state kind, and its data."""
    inputs = keras.Input((4,))
    h = keras.layers.Dense(8, name="dense_in")(inputs)
    if layer_name == "grelu":
        h = layers.GReLU(g=0.5, name="grelu")(h)
    elif layer_name == "dropin":
        new = keras.layers.Dense(8)(h)
        h = layers.DropIn(g=0.5, name="dropin")([h, new])
    elif layer_name == "molly":
        h = layers.MollifiedDense(8, p=0.5, name="molly")(h)
    else:
        h = layers.ConcreteWidth([2, 8], temperature=0.5, name="width")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="dense_out")(h))
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    return model, x


STATES = {"grelu": "g", "dropin": "g", "molly": "p", "width": "temperature"}


def _snapshot(model, x):
    return (
        [np.array(v) for v in model.get_weights()],
        model.predict(x, verbose=0),
    )


def _assert_same(before, after):
    for old, new in zip(before[0], after[0], strict=True):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(before[1], after[1])


@pytest.mark.parametrize("name", sorted(STATES))
def test_a_refused_state_leaves_everything_as_it_was(tmp_path, name):
    model, x = _model_with(name)
    layer = model.get_layer(name)
    state = STATES[name]
    variable = getattr(layer, state)
    bad = -1.0
    before = _snapshot(model, x)

    with pytest.raises(ValueError, match=f"`{state}`"):
        variable.assign(bad)
    _assert_same(before, _snapshot(model, x))

    # Every other weight of the layer differs: a partial write would show.
    index = next(i for i, v in enumerate(layer.weights) if v is variable)
    values = [np.array(w) + 1.0 for w in layer.get_weights()]
    values[index] = np.asarray(bad, "float32")
    with pytest.raises(ValueError, match=f"`{state}`"):
        layer.set_weights(values)
    _assert_same(before, _snapshot(model, x))
    # A weight of the wrong shape is refused before any is written too.
    values = [np.array(w) + 1.0 for w in layer.get_weights()]
    values[-1] = np.zeros((3, 3), values[-1].dtype)
    with pytest.raises(ValueError, match="shape"):
        layer.set_weights(values)
    _assert_same(before, _snapshot(model, x))

    # A file whose value is out of range: the layer refuses its store.
    keras_path = os.path.join(tmp_path, "m.keras")
    model.save(keras_path)
    path = os.path.join(tmp_path, "m.weights.h5")
    model.save_weights(path)
    variables = layer._trainable_variables + layer._non_trainable_variables
    stored = next(i for i, v in enumerate(variables) if v is variable)
    with h5py.File(path, "r+") as f:
        # The layer's group: the one whose entry `stored` is the state.
        (group,) = [
            f[key]
            for key in _var_groups(f)
            if sum(k.isdigit() for k in f[key]) == len(variables)
            and f[key][str(stored)].shape == ()
        ]
        for key in group:
            if key.isdigit():
                group[key][...] = np.asarray(group[key]) + 1.0
        group[str(stored)][()] = bad
    with pytest.raises(ValueError, match=f"`{state}`"):
        model.load_weights(path)
    _assert_same(before, _snapshot(model, x))

    # The scheduler path is checked before writing (test_properties); the
    # .keras path builds a new model from the same stores.
    assert keras.saving.load_model(keras_path).get_layer(name) is not None


def _var_groups(f):
    keys = []
    f.visit(
        lambda key: (
            keys.append(key)
            if key.startswith("layers/") and key.endswith("/vars")
            else None
        )
    )
    return keys


def _bad_schedule(t):
    return 0.1 if t < 3 else 2.0


def _batches_then_a_bad_one():
    for _ in range(3):
        yield X_PROBE, Y_PROBE
    yield np.ones((len(X_PROBE), 2), "float32"), Y_PROBE


@pytest.mark.parametrize("cause", ["schedule", "step", "callback"])
def test_a_fit_stopped_by_an_error_leaves_no_scheduler_behind(cause):
    # Keras calls no `on_train_end` then: a later fit without the scheduler
    # must neither write its values nor log them.
    model = probe_model()
    callbacks = [GradNetScheduler(tau=10, unit="step")]
    data = (np.concatenate([X_PROBE] * 4), np.concatenate([Y_PROBE] * 4))
    kwargs = {"batch_size": len(X_PROBE), "epochs": 1}
    expected = Exception
    if cause == "schedule":
        callbacks = [GradNetScheduler(_bad_schedule, unit="step")]
        expected = ValueError
    elif cause == "step":
        data, kwargs = (_batches_then_a_bad_one(),), {"epochs": 1}
    else:
        # Raised between two epochs, outside the steps.
        callbacks.append(CrashAt(1))
        kwargs["epochs"], expected = 2, RuntimeError
    with pytest.raises(expected):
        model.fit(*data, verbose=0, callbacks=callbacks, **kwargs)
    if cause != "callback":
        assert "train_step" not in model.__dict__
    grelu = model.layers[-1]
    grelu.g.assign(0.25)
    recorder = BatchRecorder("last_mean")
    history = model.fit(
        np.concatenate([X_PROBE] * 3),
        np.concatenate([Y_PROBE] * 3),
        batch_size=len(X_PROBE),
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[recorder],
    )
    assert used_g(recorder) == [0.25, 0.25, 0.25]
    assert "train_step" not in model.__dict__
    assert "g" not in history.history
