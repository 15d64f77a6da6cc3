"""Dynamic capacity: layers, exact freezing, growth, save/resume, finalize."""

import os

import keras
import numpy as np
import pytest
from keras import ops

import keras_gradnets
from keras_gradnets import analysis
from keras_gradnets.callbacks import CapacityGrowth
from keras_gradnets.layers import DynamicConv2D
from keras_gradnets.layers import DynamicDense
from keras_gradnets.layers import link_dynamic_layers
from tests.helpers import BACKEND


def _np(x):
    return ops.convert_to_numpy(x)


def _data(n=64, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = np.sin(x.sum(axis=1, keepdims=True)).astype("float32")
    return x, y


def _mlp(growth_init="random", seed=None, optimizer="adam"):
    init = keras.initializers.GlorotUniform(seed) if seed else "glorot_uniform"
    model = keras.Sequential(
        [
            keras.Input((5,)),
            DynamicDense(
                8,
                chunks=4,
                initial_chunks=1,
                activation="tanh",
                growth_init=growth_init,
                kernel_initializer=init,
                name="first",
            ),
            DynamicDense(
                6,
                chunks=3,
                activation="tanh",
                growth_init=growth_init,
                kernel_initializer=init,
                name="second",
            ),
            keras.layers.Dense(1, kernel_initializer=init, name="out"),
        ]
    )
    model.compile(optimizer, "mse")
    return model


class GrowAt(keras.callbacks.Callback):
    """Grows every dynamic layer at the given epochs (a fixed schedule)."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_train_begin(self, logs=None):
        link_dynamic_layers(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch in self.epochs:
            _ = self.model
            for layer in self.model.layers:
                if isinstance(layer, DynamicDense):
                    layer.grow()


# Construction -----------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(units=8, chunks=0), "chunks"),
        (dict(units=8, chunks=9), "chunks"),
        (dict(units=8, chunks=4, initial_chunks=5), "initial_chunks"),
        (dict(units=8, chunks=4, initial_chunks=0), "initial_chunks"),
        (dict(units=0, chunks=1), "units"),
        (dict(units=8, chunks=4, growth_init="zeros"), "growth_init"),
        (dict(units=8, chunks=4, seed=-1), "seed"),
        (dict(units=8, chunks=4, seed=1.5), "seed"),
    ],
)
def test_bad_layer_arguments_raise(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        DynamicDense(**kwargs)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(patience=-1), "patience"),
        (dict(select="largest"), "select"),
        (dict(layers=[keras.layers.Dense(2)]), "layers"),
        (dict(window=0), "window"),
        (dict(mode="up"), "mode"),
        (dict(unit="batch"), "unit"),
    ],
)
def test_bad_callback_arguments_raise(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        CapacityGrowth(**kwargs)


def test_activation_std_needs_data():
    with pytest.raises(ValueError, match="data="):
        CapacityGrowth(select="activation_std")


def test_capacity_must_be_a_chunk_boundary():
    layer = DynamicDense(10, chunks=5)
    assert layer.bounds == [0, 2, 4, 6, 8, 10]
    assert DynamicDense(10, chunks=3).bounds == [0, 4, 7, 10]
    with pytest.raises(ValueError, match="`active_units`.*Received: active"):
        layer.set_capacity(3)
    with pytest.raises(ValueError, match="`frozen_units`"):
        layer.set_capacity(4, 6)


def test_grow_freezes_the_trained_units_and_stops_at_full_size():
    layer = DynamicDense(6, chunks=3)
    layer.grow()
    assert (layer.active_units, layer.frozen_units) == (4, 2)
    layer.grow(5, freeze=False)
    assert (layer.active_units, layer.frozen_units) == (6, 2)
    layer.grow()
    assert (layer.active_units, layer.frozen_units) == (6, 2)


def test_linking_keeps_weights_given_with_set_weights():
    model = _mlp()
    layer = model.layers[0]
    weights = [
        np.full(w.shape, 0.5, w.dtype) if w.dtype.kind == "f" else w
        for w in layer.get_weights()
    ]
    weights[-2:] = [np.array(4, "int32"), np.array(2, "int32")]
    layer.set_weights(weights)
    assert (layer.active_units, layer.frozen_units) == (4, 2)
    link_dynamic_layers(model)
    assert (_np(layer.kernels[0]) == 0.5).all()


# Forward pass -----------------------------------------------------------


def test_output_is_the_active_dense_and_zeros():
    x, _ = _data(8)
    layer = DynamicDense(8, chunks=4, initial_chunks=2, activation="relu")
    out = _np(layer(x))
    kernel, bias = _np(layer.kernel), _np(layer.bias)
    expected = np.maximum(x @ kernel[:, :4] + bias[:4], 0)
    np.testing.assert_allclose(out[:, :4], expected, rtol=1e-5, atol=1e-6)
    assert (out[:, 4:] == 0).all()
    assert out.shape == (8, 8)


def test_a_linked_dynamic_layer_reads_only_the_active_inputs():
    x, _ = _data(8)
    model = _mlp()
    link_dynamic_layers(model)
    first, second = model.layers[0], model.layers[1]
    assert second.input_units == 2
    # Weights from inactive inputs do not matter: set them to garbage.
    second.kernels[0].assign(
        ops.slice_update(second.kernels[0].value, (2, 0), np.full((6, 2), 9.0))
    )
    hidden = _np(first(x))
    expected = np.tanh(
        hidden[:, :2] @ _np(second.kernel)[:2, :2] + _np(second.bias)[:2]
    )
    np.testing.assert_allclose(_np(second(first(x)))[:, :2], expected, 1e-5)


def test_initial_weights_are_drawn_at_the_active_size():
    """Glorot limits follow the active shape, not the full allocation."""
    layer = DynamicDense(500, chunks=5, initial_chunks=1)
    layer.build((None, 100))
    kernel = np.abs(_np(layer.kernel))
    active_limit = np.sqrt(6 / (100 + 100))
    full_limit = np.sqrt(6 / (100 + 500))
    assert kernel[:, :100].max() > 1.5 * full_limit
    assert kernel[:, :100].max() <= active_limit
    assert (kernel[:, 100:] == 0).all()


def test_linking_redraws_untrained_readers_at_the_active_fan_in():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            DynamicDense(400, chunks=4, activation="tanh"),
            keras.layers.Dense(100),
        ]
    )
    link_dynamic_layers(model)
    rows = np.abs(_np(model.layers[1].kernel)[:100])
    assert rows.max() > 1.5 * np.sqrt(6 / (400 + 100))
    assert rows.max() <= np.sqrt(6 / (100 + 100))


def test_conv_output_and_inactive_channels():
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    conv = DynamicConv2D(8, 3, chunks=4, padding="same", activation="relu")
    out = _np(conv(x))
    plain = keras.layers.Conv2D(2, 3, padding="same", activation="relu")
    plain.build(x.shape)
    plain.set_weights([_np(conv.kernel)[..., :2], _np(conv.bias)[:2]])
    np.testing.assert_allclose(out[..., :2], _np(plain(x)), atol=1e-5)
    assert (out[..., 2:] == 0).all() and out.shape == (2, 6, 6, 8)


# Freezing and growth inside fit -----------------------------------------


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: keras.optimizers.Adam(0.01),
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.5),
    ],
    ids=["sgd_momentum", "adam", "adamw"],
)
def test_frozen_weights_stay_bit_identical(optimizer):
    x, y = _data()
    model = _mlp(optimizer=optimizer())
    fit = dict(batch_size=16, verbose=0)
    model.fit(x, y, epochs=2, callbacks=[GrowAt([])], **fit)
    first, second = model.layers[0], model.layers[1]
    first.grow()  # 2 -> 4 units, 2 frozen
    second.grow()  # 2 -> 4 units, 2 frozen
    before = [_np(v).copy() for v in model.weights]
    model.fit(x, y, epochs=2, **fit)
    after = [_np(v) for v in model.weights]
    changed = {
        v.path.split("/", 1)[1]: not np.array_equal(b, a)
        for v, b, a in zip(model.weights, before, after, strict=True)
    }
    assert changed == {
        "first/kernel_0": False,
        "first/bias_0": False,
        "first/kernel_1": True,
        "first/bias_1": True,
        "first/kernel_2": False,
        "first/bias_2": False,
        "first/kernel_3": False,
        "first/bias_3": False,
        "first/active_units": False,
        "first/frozen_units": False,
        "second/kernel_0": False,
        "second/bias_0": False,
        "second/kernel_1": True,
        "second/bias_1": True,
        "second/kernel_2": False,
        "second/bias_2": False,
        "second/active_units": False,
        "second/frozen_units": False,
        "out/kernel": True,
        "out/bias": True,
    }


@pytest.mark.skipif(BACKEND == "torch", reason="no float16 on torch CPU")
def test_frozen_weights_stay_bit_identical_with_loss_scaling():
    keras.config.set_dtype_policy("mixed_float16")
    x, y = _data()
    layer = DynamicDense(8, chunks=4, activation="tanh")
    model = keras.Sequential(
        [keras.Input((5,)), layer, keras.layers.Dense(1, dtype="float32")]
    )
    model.compile(keras.optimizers.AdamW(0.01, weight_decay=0.5), "mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    link_dynamic_layers(model)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    layer.grow()
    frozen, trained = _np(layer.kernels[0]).copy(), _np(layer.kernels[1])
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert np.array_equal(frozen, _np(layer.kernels[0]))
    assert not np.array_equal(trained, _np(layer.kernels[1]))


def test_gradient_flows_through_frozen_units():
    x, y = _data()
    model = _mlp()
    first, second = model.layers[0], model.layers[1]
    second.set_capacity(2, 2)  # `second` entirely frozen.
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[GrowAt([])])
    before = _np(first.kernels[0]).copy()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert not np.array_equal(before, _np(first.kernels[0]))


class Snapshot(keras.callbacks.Callback):
    """Grows at one batch and records a new chunk after every batch."""

    def __init__(self, layer, grow_at):
        super().__init__()
        self.layer, self.grow_at = layer, grow_at
        self.values = []
        self.drawn = None

    def on_train_batch_end(self, batch, logs=None):
        _ = self.model
        self.values.append(_np(self.layer.kernels[1]).copy())
        if batch == self.grow_at:
            self.layer.grow()
            self.drawn = _np(self.layer.kernels[1]).copy()


@pytest.mark.parametrize("jit_compile", [False, "auto"])
def test_growth_mid_epoch_takes_effect_at_the_next_step(jit_compile):
    x, y = _data()
    model = _mlp()
    model.compile("adam", "mse", jit_compile=jit_compile)
    snapshot = Snapshot(model.layers[0], grow_at=1)
    model.fit(
        x,
        y,
        epochs=1,
        batch_size=8,
        verbose=0,
        callbacks=[GrowAt([]), snapshot],
    )
    v = snapshot.values
    # Inactive: zeros, untouched by the first two steps.
    assert not v[0].any() and not v[1].any()
    # Grown (and drawn) at the end of batch 1, trained from step 2 on.
    assert snapshot.drawn.any()
    assert not np.array_equal(v[2], snapshot.drawn)
    assert not np.array_equal(v[3], v[2])
    assert model.layers[0].active_units == 4


class TraceCounter(DynamicDense):
    traces = 0

    def call(self, inputs, training=None):
        if training:
            TraceCounter.traces += 1
        return super().call(inputs, training=training)


@pytest.mark.skipif(BACKEND == "torch", reason="torch runs eagerly")
def test_one_trace_per_growth():
    x, y = _data(160)  # 10 steps: growths at steps 2, 4, 6 and 8.
    TraceCounter.traces = 0
    model = keras.Sequential(
        [keras.Input((5,)), TraceCounter(10, chunks=5), keras.layers.Dense(1)]
    )
    model.compile("adam", "mse")
    # Nothing counts as an improvement: growth on the second value after
    # each (re)start of the plateau search.
    growth = CapacityGrowth(unit="step", window=1, patience=0, min_delta=1e9)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[growth])
    assert len(growth.events) == 4
    assert TraceCounter.traces == 1 + 4


# Function-preserving growth ----------------------------------------------


@pytest.mark.parametrize("growth_init", ["function_preserving", "random"])
def test_function_preserving_growth_keeps_the_loss(growth_init):
    x, y = _data()
    model = _mlp(growth_init)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[GrowAt([])])
    before = model.evaluate(x, y, verbose=0)
    _ = model.layers[0].grow(), model.layers[1].grow()
    after = model.evaluate(x, y, verbose=0)
    change = abs(after - before) / before
    if growth_init == "function_preserving":
        assert change < 1e-4
    else:
        assert change > 1e-3


def _conv_net(head):
    """A DynamicConv2D read through `head` (a list of layers)."""
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            DynamicConv2D(8, 3, chunks=4, initial_chunks=1, name="conv"),
            *head,
            keras.layers.Dense(3, name="out"),
        ]
    )
    model.compile("adam", "mse")
    return model


@pytest.mark.parametrize(
    "head",
    [
        lambda: [keras.layers.ReLU(), keras.layers.Flatten()],
        lambda: [
            keras.layers.MaxPooling2D(),
            keras.layers.Dropout(0.3),
            keras.layers.Flatten(),
        ],
        lambda: [
            keras.layers.Activation("tanh"),
            keras.layers.GlobalAveragePooling2D(),
        ],
        lambda: [
            keras.layers.LeakyReLU(0.2),
            keras.layers.Conv2D(4, 1),
            keras.layers.Flatten(),
        ],
    ],
    ids=["relu-flatten", "pool-dropout-flatten", "tanh-gap", "conv"],
)
def test_growth_keeps_the_function_through_channelwise_layers(head):
    # The default growth keeps the outputs, also where the new units are
    # read through activations, pooling, dropout and Flatten.
    x = np.random.default_rng(0).normal(size=(16, 6, 6, 2)).astype("float32")
    y = np.random.default_rng(1).normal(size=(16, 3)).astype("float32")
    model = _conv_net(head())
    assert model.get_layer("conv").growth_init == "function_preserving"
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[GrowAt([])])
    before = _np(model(x, training=False))
    model.get_layer("conv").grow(2)
    after = _np(model(x, training=False))
    np.testing.assert_allclose(after, before, atol=1e-5)
    # The new units take part once trained: they are not dead.
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.any(np.abs(_np(model(x, training=False)) - before) > 1e-4)


@pytest.mark.parametrize(
    "head, name",
    [
        (lambda: [keras.layers.BatchNormalization(name="bn")], "bn"),
        (lambda: [keras.layers.Activation("sigmoid", name="sig")], "sig"),
        (
            lambda: [
                keras.layers.Flatten(),
                keras.layers.LayerNormalization(name="ln"),
            ],
            "ln",
        ),
    ],
)
def test_function_preserving_refuses_readers_that_move_zeros(head, name):
    model = _conv_net([*head(), keras.layers.Flatten()])
    conv = model.get_layer("conv")
    model.predict(np.zeros((2, 6, 6, 2), "float32"), verbose=0)
    before = [_np(v) for v in model.weights]
    with pytest.raises(ValueError, match=f"function_preserving.*'{name}'"):
        link_dynamic_layers(model)
    for old, variable in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, _np(variable))
    assert conv.active_units == 2
    # With random growth the same model links and grows.
    conv.growth_init = "random"
    link_dynamic_layers(model)
    conv.grow()
    assert conv.active_units == 4


def test_gradient_accumulation_is_refused():
    model = _mlp(optimizer=keras.optimizers.Adam(gradient_accumulation_steps=2))
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        link_dynamic_layers(model)


# Save and resume ---------------------------------------------------------


def test_config_round_trip_keeps_capacity():
    layer = DynamicConv2D(8, 3, chunks=4, initial_chunks=2, strides=2)
    layer.set_capacity(6, 4)
    clone = DynamicConv2D.from_config(layer.get_config())
    assert (clone.active_units, clone.frozen_units) == (6, 4)
    assert clone.strides == (2, 2) and clone.filters == 8


def test_save_mid_growth_and_resume_matches_an_uninterrupted_run(tmp_path):
    x, y = _data()
    fit = dict(batch_size=16, shuffle=False, verbose=0)
    full = _mlp("function_preserving", seed=3)
    full_history = full.fit(x, y, epochs=6, callbacks=[GrowAt([2, 4])], **fit)

    first = _mlp("function_preserving", seed=3)
    first.fit(x, y, epochs=3, callbacks=[GrowAt([2, 4])], **fit)
    path = os.path.join(tmp_path, "mid.keras")
    first.save(path)
    resumed = keras.saving.load_model(path)
    layer = resumed.get_layer("first")
    assert (layer.active_units, layer.frozen_units) == (4, 2)
    assert resumed.get_layer("second").active_units == 4
    frozen = _np(layer.kernels[0]).copy()
    history = resumed.fit(
        x, y, epochs=6, initial_epoch=3, callbacks=[GrowAt([2, 4])], **fit
    )
    assert (layer.active_units, layer.frozen_units) == (6, 4)
    assert np.array_equal(frozen, _np(layer.kernels[0]))
    np.testing.assert_allclose(
        history.history["loss"], full_history.history["loss"][3:], rtol=1e-4
    )
    np.testing.assert_allclose(
        resumed.predict(x, verbose=0), full.predict(x, verbose=0), atol=1e-5
    )


# CapacityGrowth -----------------------------------------------------------


class FeedLoss(keras.callbacks.Callback):
    """Replaces the epoch loss by given values (a scripted plateau)."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["loss"] = self.values[epoch]


def _fit_scripted(values, **kwargs):
    x, y = _data(16)
    model = _mlp()
    growth = CapacityGrowth(**kwargs)
    history = model.fit(
        x,
        y,
        epochs=len(values),
        batch_size=16,
        verbose=0,
        callbacks=[FeedLoss(values), growth],
    )
    return model, growth, history


def test_grows_after_patience_without_improvement_and_logs_capacity():
    values = [1.0, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4]
    model, growth, history = _fit_scripted(
        values, window=1, patience=2, freeze=True
    )
    assert [e["epoch"] for e in growth.events] == [3, 6]
    assert history.history["capacity_first"] == [
        0.25,
        0.25,
        0.25,
        0.5,
        0.5,
        0.5,
        0.75,
    ]
    assert history.history["growths"][-1] == 2
    assert model.get_layer("first").frozen_units == 4
    assert history.history["capacity"][-1] == pytest.approx((6 + 6) / 14)


def test_min_delta_cooldown_and_window():
    values = [1.0, 0.99, 0.98, 0.97, 0.96, 0.95]
    absolute = dict(window=1, patience=1, min_relative_delta=0)
    _, growth, _ = _fit_scripted(values, **absolute)
    assert growth.events == []
    _, growth, _ = _fit_scripted(values, **absolute, min_delta=0.05)
    assert [e["epoch"] for e in growth.events] == [1, 3, 5]
    _, growth, _ = _fit_scripted(values, **absolute, min_delta=0.05, cooldown=3)
    assert [e["epoch"] for e in growth.events] == [1, 4]
    # A noisy descent: the moving average over 2 values keeps improving.
    noisy = [1.0, 0.7, 0.9, 0.6, 0.8, 0.5, 0.7, 0.4]
    _, growth, _ = _fit_scripted(noisy, **absolute)
    assert growth.events
    _, growth, _ = _fit_scripted(noisy, **dict(absolute, window=2))
    assert growth.events == []


def test_the_relative_threshold_holds_at_any_scale():
    # Each value 3% below the last: no 10% gain over 3 values (the
    # defaults), at either scale of the loss; a fresh search after growth.
    for scale in (1.0, 1e-3):
        values = [scale * 0.97**e for e in range(8)]
        _, growth, _ = _fit_scripted(values)
        assert [e["epoch"] for e in growth.events] == [3, 7]
        _, growth, _ = _fit_scripted(values, min_relative_delta=0.02)
        assert growth.events == []
    # The larger of the two thresholds counts.
    values = [1.0, 0.8, 0.75, 0.7, 0.65]
    _, growth, _ = _fit_scripted(values, patience=1, min_relative_delta=0)
    assert growth.events == []
    _, growth, _ = _fit_scripted(values, patience=1, min_delta=0.1)
    assert [e["epoch"] for e in growth.events] == [2, 4]


def test_default_arguments_grow_when_the_loss_falls_slowly():
    # A slow learner: plain SGD at a small rate takes off only a few
    # percent of the loss each epoch. Growth keeps the function, so the
    # loss goes on falling.
    x, y = _data(64)
    model = _mlp(
        "function_preserving", seed=1, optimizer=keras.optimizers.SGD(0.002)
    )
    growth = CapacityGrowth()
    history = model.fit(
        x, y, epochs=8, batch_size=16, verbose=0, callbacks=[growth]
    )
    losses = history.history["loss"]
    assert growth.events, losses
    assert model.get_layer("first").frozen_units == 0  # trains everything
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))
    assert history.history["capacity"][-1] > history.history["capacity"][0]


def test_grow_at_counts_of_epochs_and_fractions_of_the_run():
    values = [1.0 / (e + 1) for e in range(8)]  # never a plateau
    model, growth, history = _fit_scripted(values, grow_at=[2, 5])
    assert [e["epoch"] for e in growth.events] == [1, 4]
    assert history.history["growths"] == [0, 1, 1, 1, 2, 2, 2, 2]
    _, growth, _ = _fit_scripted(values, grow_at=[0.25, 0.5, 1.0])
    assert [e["epoch"] for e in growth.events] == [1, 3, 7]


def test_grow_at_counts_steps_and_resumes(tmp_path):
    x, y = _data(64)
    growth = CapacityGrowth(unit="step", grow_at=[3, 6, 9])
    model = _mlp()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[growth])
    assert [e["step"] for e in growth.events] == [3, 6]
    # Fractions of 3 epochs of 4 steps; the run resumes after its first
    # epoch from a saved file and grows where the whole run would.
    growth = CapacityGrowth(unit="step", grow_at=[0.25, 0.5])
    model = _mlp()
    model.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        verbose=0,
        callbacks=[growth, StopAfter(epochs=1)],
    )
    assert [e["step"] for e in growth.events] == [3]
    model.save(tmp_path / "model.keras")
    model = keras.saving.load_model(tmp_path / "model.keras")
    growth = CapacityGrowth(unit="step", grow_at=[0.25, 0.5])
    model.fit(
        x,
        y,
        epochs=3,
        initial_epoch=1,
        batch_size=16,
        verbose=0,
        callbacks=[growth],
    )
    assert [e["step"] for e in growth.events] == [3, 6]
    assert model.get_layer("first").active_units == 6


class StopAfter(keras.callbacks.Callback):
    """Stops `fit` after the given number of epochs (an interruption)."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            self.model.stop_training = True


@pytest.mark.parametrize(
    "grow_at", [[], [0], [3, 2], [0.5, 1.5], [1, 0.5], "2", [True]]
)
def test_bad_grow_at_raises(grow_at):
    with pytest.raises(ValueError, match="`grow_at`.*Received: grow_at="):
        CapacityGrowth(grow_at=grow_at)


def test_mode_auto_follows_the_metric_direction():
    x, y = _data(64)
    labels = (y[:, 0] > 0).astype("int32")
    model = keras.Sequential(
        [keras.Input((5,)), DynamicDense(8, chunks=4), keras.layers.Dense(2)]
    )
    model.compile(
        "sgd",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy", "sparse_categorical_crossentropy"],
    )
    names = ("accuracy", "sparse_categorical_crossentropy")
    growths = {name: CapacityGrowth(monitor=name) for name in names}
    model.fit(x, labels, epochs=1, verbose=0, callbacks=list(growths.values()))
    assert growths["accuracy"].plateau.mode == "max"
    assert growths[names[1]].plateau.mode == "min"

    # A metric without a declared direction: Keras's message, at the first
    # value, before any growth.
    def mean_prediction(y_true, y_pred):
        return ops.mean(y_pred)

    model.compile("sgd", "mse", metrics=[mean_prediction])
    growth = CapacityGrowth(monitor="mean_prediction")
    with pytest.raises(ValueError, match="mode='max'"):
        model.fit(
            x, np.repeat(y, 2, axis=1), epochs=1, verbose=0, callbacks=[growth]
        )
    assert growth.events == []


class RateRecorder(keras.callbacks.Callback):
    """Records the learning rate each step used, read after the step."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_end(self, batch, logs=None):
        rate = self.model.optimizer.learning_rate
        self.rates.append(round(float(_np(rate)), 6))


def test_warmup_ramps_the_learning_rate_after_each_growth():
    x, y = _data(160)
    model = _mlp(optimizer=keras.optimizers.Adam(0.01))
    growth = CapacityGrowth(
        unit="step", window=1, patience=0, min_delta=1e9, warmup=4
    )
    recorder = RateRecorder()
    model.fit(
        x, y, epochs=1, batch_size=16, verbose=0, callbacks=[growth, recorder]
    )
    # Growth after every second step (a fresh search needs two values), so
    # each warmup restarts before it ends; the base rate is kept.
    assert [e["step"] for e in growth.events][:2] == [2, 4]
    assert recorder.rates[:8] == [
        0.01,
        0.01,
        0.0025,
        0.005,
        0.0025,
        0.005,
        0.0025,
        0.005,
    ]
    assert float(_np(model.optimizer.learning_rate)) == pytest.approx(0.01)


def test_warmup_scales_the_rate_a_reduce_lr_on_plateau_set():
    x, y = _data(160)
    model = _mlp(optimizer=keras.optimizers.Adam(0.01))
    growth = CapacityGrowth(unit="step", grow_at=[18], warmup=4)
    # Never an improvement after the first epoch: the rate is cut by 10 at
    # the end of epochs 1 and 2; the first cut falls inside the ramp.
    reduce = keras.callbacks.ReduceLROnPlateau(
        "loss", factor=0.1, patience=0, min_delta=1e9
    )
    recorder = RateRecorder()
    model.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        verbose=0,
        callbacks=[growth, reduce, recorder],
    )
    assert [e["step"] for e in growth.events] == [18]
    # Steps 18-21 ramp by quarters; after the cut at the end of step 19 the
    # ramp climbs to a tenth of the rate it had at the growth.
    expected = [0.01] * 18 + [0.0025, 0.005, 0.00075] + [0.001] * 9
    assert recorder.rates == pytest.approx(expected, rel=1e-5)
    assert float(_np(model.optimizer.learning_rate)) == pytest.approx(1e-4)


def test_growth_keeps_the_optimizer_moments_of_trained_units():
    x, y = _data(64)
    model = _mlp("function_preserving")
    growth = CapacityGrowth(grow_at=[2])
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            optimizer = self.model.optimizer
            snapshots.append({v.path: _np(v) for v in optimizer.variables})

    # The snapshot after growth is taken at the end of the growth's epoch.
    model.fit(
        x, y, epochs=2, verbose=0, callbacks=[Snapshot(), growth, Snapshot()]
    )
    before, after = snapshots[2], snapshots[3]
    assert before.keys() == after.keys()
    first = model.get_layer("first")
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    # The new chunk's moments are zero, the trained chunk's are not.
    momentum = [p for p in before if "first" in p and "momentum" in p]
    trained = [p for p in momentum if "kernel_0" in p]
    new = [p for p in momentum if "kernel_1" in p]
    assert trained and new, sorted(before)
    assert np.abs(before[trained[0]]).max() > 0
    assert np.abs(before[new[0]]).max() == 0
    assert first.active_chunks == 2


def test_warmup_wraps_a_learning_rate_schedule():
    x, y = _data(160)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.5)
    model = _mlp(optimizer=keras.optimizers.SGD(schedule))
    growth = CapacityGrowth(
        unit="step", window=1, patience=0, min_delta=1e9, warmup=4
    )
    recorder = RateRecorder()
    model.fit(
        x, y, epochs=1, batch_size=16, verbose=0, callbacks=[growth, recorder]
    )
    assert [e["step"] for e in growth.events][:2] == [2, 4]
    # Read after step b, the rate is the one step b + 1 uses: the schedule
    # at b + 1 times the ramp restarted by the latest growth.
    ramps = [1.0, 0.25, 0.5, 0.25, 0.5, 0.25, 0.5, 0.75]  # full after 3
    expected = [
        0.01 * 0.5 ** ((b + 1) / 10) * ramp for b, ramp in enumerate(ramps)
    ]
    assert recorder.rates[:8] == pytest.approx(expected, abs=1e-6)
    # After `fit` the optimizer has its own schedule back.
    assert model.optimizer.get_config()["learning_rate"]["class_name"] == (
        "ExponentialDecay"
    )


def test_never_grows_on_nan_and_stops_at_full_capacity():
    _, growth, _ = _fit_scripted([1.0] + [float("nan")] * 5, patience=0)
    assert growth.events == []
    model, growth, _ = _fit_scripted([1.0] * 8, window=1, patience=1)
    assert model.get_layer("first").capacity == 1
    assert model.get_layer("second").capacity == 1
    assert len(growth.events) == 3  # first: 1 -> 4 chunks, second: 1 -> 3.


def test_layers_and_select_pick_layers():
    model, growth, _ = _fit_scripted(
        [1.0] * 3, window=1, patience=1, select="all"
    )
    assert growth.events[0]["layers"] == ["first", "second"]
    x, _ = _data(16)
    model = _mlp()
    first, second = model.layers[0], model.layers[1]
    growth = CapacityGrowth(layers=[second], window=1, patience=1)
    model.fit(
        x,
        x[:, :1],
        epochs=3,
        verbose=0,
        callbacks=[FeedLoss([1.0] * 3), growth],
    )
    assert first.active_units == 2 and second.active_units == 4
    stats = analysis.activation_stats(model, x)
    assert set(stats) == {"first", "second", "out"}
    hidden = _np(first(x))[:, :2]
    assert stats["first"]["std"] == pytest.approx(hidden.std(), rel=1e-5)


def test_activation_std_grows_the_layer_with_the_largest_std():
    x, _ = _data(32)
    model = _mlp(optimizer=keras.optimizers.SGD(0.0))  # weights stay put
    link_dynamic_layers(model)  # Links draw untrained weights: link first.
    model.layers[1].kernels[0].assign(model.layers[1].kernels[0].value / 100)
    stats = analysis.activation_stats(model, x)
    assert stats["first"]["std"] > stats["second"]["std"]
    growth = CapacityGrowth(
        select="activation_std", data=x, window=1, patience=1
    )
    model.fit(
        x,
        x[:, :1],
        epochs=2,
        verbose=0,
        callbacks=[FeedLoss([1.0, 1.0]), growth],
    )
    assert growth.events[0]["layers"] == ["first"]


def test_activation_stats_of_a_layer_the_model_does_not_call():
    x, _ = _data(8)
    model, other = _mlp(), _mlp()
    layer = other.layers[0]
    with pytest.raises(ValueError, match="were not called"):
        analysis.activation_stats(model, x, [layer, model.layers[0]])
    assert "call" not in vars(layer) and "call" not in vars(model.layers[0])
    stats = analysis.activation_stats(other, x, [layer])
    assert stats["first"]["std"] > 0


# finalize ------------------------------------------------------------------


def test_finalize_shrinks_to_the_active_size():
    x, y = _data()
    model = _mlp()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[GrowAt([0])])
    plain = keras_gradnets.finalize(model)
    assert [type(layer).__name__ for layer in plain.layers] == [
        "Dense",
        "Dense",
        "Dense",
    ]
    assert [layer.units for layer in plain.layers] == [4, 4, 1]
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )
    assert plain.count_params() == (5 * 4 + 4) + (4 * 4 + 4) + (4 + 1)


def test_finalize_conv_keeps_full_size_before_a_pooling_layer():
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            DynamicConv2D(6, 3, chunks=3, activation="relu"),
            DynamicConv2D(4, 3, chunks=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    plain = keras_gradnets.finalize(model)
    assert [layer.filters for layer in plain.layers[:2]] == [2, 4]
    np.testing.assert_allclose(_np(plain(x)), _np(model(x)), atol=1e-5)
