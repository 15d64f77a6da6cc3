"""ConcreteWidth, ConcreteDepth, attach_heads, TemperatureScheduler."""

import os

import keras
import numpy as np
import pytest
from keras import ops
from keras.src import testing

import keras_gradnets
from keras_gradnets import layers
from keras_gradnets.callbacks import TemperatureScheduler
from keras_gradnets.schedules import Geometric
from tests.helpers import BatchRecorder
from tests.helpers import LastBatchMean
from tests.helpers import StopAfter
from tests.helpers import TemperatureProbe
from tests.helpers import jit_modes
from tests.helpers import temperature_probe_model

RNG = np.random.default_rng(0)


def _np(x):
    return ops.convert_to_numpy(x)


def _digits(n=256):
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data[:n] / 16).astype("float32"), digits.target[:n]


def _compile(model, optimizer="adam", **kwargs):
    model.compile(
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **kwargs,
    )
    return model


def _hard_masks(widths, units):
    return np.array([[1.0] * w + [0.0] * (units - w) for w in widths])


# Sampling ------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1e-3, 0.0])
def test_low_temperature_masks_are_near_hard_masks(temperature):
    widths = [2, 4, 8]
    layer = layers.ConcreteWidth(widths, seed=3, temperature=temperature)
    layer.build((None, 8))
    hard = _hard_masks(widths, 8)
    peaks, gaps = [], []
    for _ in range(50):
        peaks.append(_np(layer.sample()).max())
        mask = layer.mask(training=True)
        gaps.append(np.abs(hard - mask).max(axis=1).min())
    # Near one-hot: a sample is far from it only when two perturbed logits
    # lie within a few temperatures of each other.
    assert np.mean(np.array(peaks) > 1 - 1e-3) >= 0.9
    assert np.mean(np.array(gaps) < 1e-3) >= 0.9
    if temperature == 0:
        assert set(np.unique(_np(layer.sample()))) <= {0.0, 1.0}


def test_soft_mask_follows_eqn_6():
    layer = layers.ConcreteWidth([1, 3, 4], seed=1, temperature=1.0)
    layer.build((None, 5))
    sample = _np(layer.sample())
    expected = [sample.sum(), sample[1:].sum(), sample[1:].sum(), sample[2], 0]
    np.testing.assert_allclose(_np(layer._mask(sample)), expected, rtol=1e-6)
    assert not np.allclose(sample, np.round(sample), atol=1e-2)


def test_inference_uses_the_most_probable_width_and_depth():
    width = layers.ConcreteWidth([2, 3, 4])
    x = RNG.normal(size=(5, 4)).astype("float32")
    width(x)
    width.logits.assign([0.0, 2.0, 1.0])
    out = _np(width(x, training=False))
    np.testing.assert_array_equal(out, x * [1, 1, 1, 0])
    assert width.chosen_width() == 3
    depth = layers.ConcreteDepth()
    heads = [RNG.normal(size=(5, 3)).astype("float32") for _ in range(3)]
    depth(heads)
    depth.logits.assign([0.0, 0.0, 3.0])
    np.testing.assert_array_equal(_np(depth(heads, training=False)), heads[2])
    assert depth.chosen_depth() == 3
    depth.temperature.assign(0.0)
    out = _np(depth(heads, training=True))
    assert any(np.array_equal(out, head) for head in heads)


def _one_sgd_step(model, x, y):
    """The gradient of the loss on `(x, y)`, from one compiled SGD step."""
    variables = [v for v in model.trainable_weights if "logits" in v.path]
    before = [_np(v) for v in variables]
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return [b - _np(v) for b, v in zip(before, variables, strict=True)]


@pytest.mark.parametrize("temperature", [0.1, 1e-3])
def test_gradient_reaches_the_logits_and_is_finite(temperature):
    x, y = _digits(64)
    inputs = keras.Input((64,))
    heads = layers.attach_heads(
        inputs,
        [
            [
                keras.layers.Dense(16, activation="relu"),
                layers.ConcreteWidth(seed=i, temperature=temperature),
            ]
            for i in range(2)
        ],
        head=keras.layers.Dense(10, name="head"),
    )
    outputs = layers.ConcreteDepth(seed=5, temperature=temperature)(heads)
    model = _compile(keras.Model(inputs, outputs), keras.optimizers.SGD(1.0))
    gradients = _one_sgd_step(model, x, y)
    assert len(gradients) == 3
    for gradient in gradients:
        assert np.isfinite(gradient).all()
        # At temperature 1e-3 most samples are one-hot in float32, where
        # the relaxation's gradient is 0: only finiteness is asked there.
        if temperature == 0.1:
            assert np.abs(gradient).max() > 0
    for weight in model.weights:
        assert np.isfinite(_np(weight)).all()
    assert np.isfinite(model.predict(x, verbose=0)).all()


def test_penalty_is_gamma_times_expected_size():
    width = layers.ConcreteWidth([2, 4], gamma=0.5)
    width(np.ones((1, 4), "float32"))
    assert len(width.losses) == 1
    assert float(_np(width.losses[0])) == pytest.approx(0.5 * 3.0)
    assert width.expected_width() == pytest.approx(3.0)
    quiet = layers.ConcreteDepth()
    quiet([np.ones((1, 2), "float32")] * 3)
    assert not quiet.losses
    assert quiet.expected_depth() == pytest.approx(2.0)


def _width_model(gamma, seed=0):
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            layers.ConcreteWidth([4, 8, 16, 32], gamma=gamma, seed=seed),
            keras.layers.Dense(10),
        ]
    )
    return _compile(model, keras.optimizers.Adam(0.05))


def _depth_model(gamma, seed=0):
    inputs = keras.Input((64,))
    heads = layers.attach_heads(
        inputs,
        [keras.layers.Dense(16, activation="relu") for _ in range(3)],
        head=keras.layers.Dense(10, name="head"),
    )
    outputs = layers.ConcreteDepth(gamma=gamma, seed=seed)(heads)
    return _compile(keras.Model(inputs, outputs), keras.optimizers.Adam(0.05))


@pytest.mark.parametrize(
    "build, start, smallest, large",
    [(_width_model, 15.0, 4.0, 1.0), (_depth_model, 2.0, 1.0, 3.0)],
)
def test_large_gamma_shrinks_the_architecture_and_zero_does_not(
    build, start, smallest, large
):
    """`start` is the expected size under the first, uniform distribution."""
    x, y = _digits(256)
    expected = {}
    for gamma in (0.0, large):
        model = build(gamma)
        model.fit(
            x,
            y,
            batch_size=64,
            epochs=4,
            verbose=0,
            # The paper's setting: no warm-up, the logits at the weights'
            # learning rate.
            callbacks=[
                TemperatureScheduler(0.5, 0.1, warmup_steps=0, logits_scale=1.0)
            ],
        )
        (layer,) = [
            x
            for x in model.layers
            if isinstance(x, (layers.ConcreteWidth, layers.ConcreteDepth))
        ]
        expected[gamma] = layer.expected_size()
    assert expected[large] < expected[0.0] - 0.25 * (start - smallest)
    assert expected[large] < start - 0.25 * (start - smallest)


def _spirals(n, seed, turns):
    """Two interleaved spirals: a task where depth matters."""
    rng = np.random.default_rng(seed)
    angle = np.sqrt(rng.uniform(0.05, 1.0, n)) * turns * 2 * np.pi
    label = rng.integers(0, 2, n)
    radius = angle / (turns * 2 * np.pi)
    angle = angle + np.pi * label
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return (x + rng.normal(0.0, 0.05, x.shape)).astype("float32"), label


def test_without_penalty_the_search_picks_the_best_plain_depth():
    """`benchmarks/search_bias.py` at test size: with `gamma=0` and the
    scheduler's defaults (here half the fit in warm-up, then
    `logits_scale=3`), the chosen depth is the best plain network's. The
    paper's schedule (`warmup_steps=0, logits_scale=1`) ends this search
    nearly uniform, at depth 2."""
    # Plain networks of depth 1, 2, 3 score about 0.63, 0.82 and 0.96.
    x, y = _spirals(1000, seed=0, turns=2.0)
    x_val, y_val = _spirals(1000, seed=1, turns=2.0)
    kwargs = dict(batch_size=32, epochs=30, verbose=0)

    def blocks(depth):
        return [keras.layers.Dense(16, activation="relu") for _ in range(depth)]

    accuracies = []
    for depth in (1, 2, 3):
        keras.utils.set_random_seed(0)
        plain = _compile(
            keras.Sequential(
                [keras.Input((2,)), *blocks(depth), keras.layers.Dense(2)]
            ),
            keras.optimizers.Adam(3e-3),
            metrics=["accuracy"],
        )
        plain.fit(x, y, **kwargs)
        accuracies.append(plain.evaluate(x_val, y_val, verbose=0)[1])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2,))
    heads = layers.attach_heads(
        inputs, blocks(3), head=keras.layers.Dense(2, name="head")
    )
    model = _compile(
        keras.Model(inputs, layers.ConcreteDepth(seed=0)(heads)),
        keras.optimizers.Adam(3e-3),
    )
    scheduler = TemperatureScheduler()
    model.fit(x, y, callbacks=[scheduler], **kwargs)
    assert (scheduler.scale(479), scheduler.scale(480)) == (0.0, 3.0)
    depth = [x for x in model.layers if isinstance(x, layers.ConcreteDepth)]
    assert depth[0].chosen_depth() == int(np.argmax(accuracies)) + 1, (
        accuracies,
        depth[0].probabilities(),
    )


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_only_the_penalty_moves_a_choice_the_data_cannot_see(gamma):
    """Heads that agree and masked zeros give the logits no data gradient:
    `gamma=0` leaves the distribution where it is, `gamma > 0` shrinks it."""
    inputs = keras.Input((4,))
    h = keras.layers.Dense(
        4, use_bias=False, kernel_initializer="zeros", trainable=False
    )(inputs)
    width = layers.ConcreteWidth(gamma=gamma, seed=1)
    z = keras.layers.Dense(3)(width(h))
    depth = layers.ConcreteDepth(gamma=gamma, seed=2)
    model = keras.Model(inputs, depth([z, z, z]))
    model.compile(keras.optimizers.SGD(0.5), "mse")
    model.fit(
        RNG.normal(size=(32, 4)), RNG.normal(size=(32, 3)), epochs=20, verbose=0
    )
    if gamma == 0:
        # Up to rounding: the Concrete weights of equal heads sum to 1.
        np.testing.assert_allclose(_np(width.logits), np.zeros(4), atol=1e-6)
        np.testing.assert_allclose(_np(depth.logits), np.zeros(3), atol=1e-6)
    else:
        assert width.expected_width() < 2.5 - 0.5
        assert depth.expected_depth() < 2.0 - 0.5


# The scheduler -------------------------------------------------------------


def _fit_probe(probe, scheduler, jit_compile):
    """Trains `temperature_probe_model(probe)` for 6 steps (2 epochs of 3)
    with `scheduler`: the value each compiled step used, and the logs."""
    model = temperature_probe_model(probe)
    model.compile(
        keras.optimizers.SGD(0.0),
        "mse",
        metrics=[LastBatchMean()],
        jit_compile=jit_compile,
    )
    recorder = BatchRecorder("last_mean")
    history = model.fit(
        np.ones((12, 3), "float32"),
        np.ones((12, 3), "float32"),
        batch_size=4,
        epochs=2,
        verbose=0,
        callbacks=[scheduler, recorder],
    )
    return recorder.values, history.history


@pytest.mark.parametrize("jit_compile", jit_modes())
def test_compiled_step_uses_the_temperature_of_the_step(jit_compile):
    used, logs = _fit_probe(
        TemperatureProbe(name="probe"),
        TemperatureScheduler(1.0, 1e-2, warmup_steps=0),
        jit_compile,
    )
    expected = [10 ** (-2 * t / 5) for t in range(6)]
    assert used == pytest.approx(expected, rel=1e-5)
    assert logs["temperature"] == pytest.approx(
        [expected[2], expected[5]], rel=1e-5
    )


class LogitsScaleProbe(layers.ConcreteWidth):
    """Outputs the `logits_scale` its call uses, in every unit."""

    def call(self, inputs, training=None):
        scale = ops.cast(self.logits_scale, inputs.dtype)
        return inputs * 0 + scale + 0 * ops.sum(self.logits)


@pytest.mark.parametrize("jit_compile", jit_modes())
@pytest.mark.parametrize("probe_type", [TemperatureProbe, LogitsScaleProbe])
def test_compiled_step_uses_the_warmup(probe_type, jit_compile):
    used, logs = _fit_probe(
        probe_type(name="probe"),
        TemperatureScheduler(1.0, 1e-2, warmup_steps=2, logits_scale=4.0),
        jit_compile,
    )
    # Two warm-up steps at the start temperature with logits_scale 0, then
    # the decay over the 3 steps left after the first one of it.
    temperatures = [1.0, 1.0] + [10 ** (-2 * t / 3) for t in range(4)]
    scales = [0.0, 0.0, 4.0, 4.0, 4.0, 4.0]
    expected = temperatures if probe_type is TemperatureProbe else scales
    assert used == pytest.approx(expected, rel=1e-5)
    assert logs["logits_scale"] == [4.0, 4.0]


def test_warmup_samples_uniformly_and_keeps_the_logits():
    layer = layers.ConcreteDepth(seed=2, logits_scale=0.0)
    layer.build([(None, 1)] * 3)
    layer.logits.assign([6.0, 0.0, 0.0])
    choices = [int(np.argmax(_np(layer.sample()))) for _ in range(600)]
    counts = np.bincount(choices, minlength=3)
    # Uniform: 200 each; at scale 1 choice 0 would take ~99% of them.
    assert counts.min() > 150, counts
    np.testing.assert_allclose(layer.probabilities(), [1 / 3] * 3, atol=1e-6)
    layer.logits_scale.assign(1.0)
    assert layer.probabilities()[0] > 0.99

    x, y = _digits(64)
    model = _width_model(0.0)
    model.fit(
        x,
        y,
        epochs=2,
        verbose=0,
        callbacks=[TemperatureScheduler(warmup_steps=10**6)],
    )
    (width,) = [x for x in model.layers if isinstance(x, layers.ConcreteWidth)]
    np.testing.assert_array_equal(_np(width.logits), 0.0)
    assert width.state_value("logits_scale") == 0.0


def test_logits_scale_multiplies_the_logits_step():
    x, y = _digits(32)

    def logits_step(scale):
        keras.utils.set_random_seed(3)
        model = _width_model(1e-2, seed=1)
        model.compile(
            keras.optimizers.SGD(0.1),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        (width,) = [
            x for x in model.layers if isinstance(x, layers.ConcreteWidth)
        ]
        model.fit(
            x,
            y,
            batch_size=32,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[
                TemperatureScheduler(warmup_steps=0, logits_scale=scale)
            ],
        )
        return _np(width.logits)

    # From logits 0 the sample and its gradient do not depend on the scale,
    # so the SGD step on the logits is the scale times the plain one.
    one = logits_step(1.0)
    assert np.abs(one).max() > 0
    np.testing.assert_allclose(logits_step(4.0), 4 * one, rtol=1e-4, atol=1e-7)


def test_an_undecided_search_warns():
    x, y = _digits(64)
    model = _width_model(0.0)
    with pytest.warns(UserWarning, match="undecided"):
        model.fit(
            x,
            y,
            epochs=1,
            verbose=0,
            callbacks=[TemperatureScheduler(warmup_steps=10**6)],
        )


def test_logs_hold_the_architecture_distribution():
    x, y = _digits(64)
    inputs = keras.Input((64,))
    heads = layers.attach_heads(
        inputs,
        [
            [
                keras.layers.Dense(8, activation="relu"),
                layers.ConcreteWidth([4, 8], name=f"w{i}"),
            ]
            for i in range(2)
        ],
        head=keras.layers.Dense(10, name="head"),
    )
    outputs = layers.ConcreteDepth(name="depth")(heads)
    model = _compile(keras.Model(inputs, outputs))
    history = model.fit(
        x, y, epochs=2, verbose=0, callbacks=[TemperatureScheduler()]
    )
    logs = history.history
    assert logs["temperature"][-1] == pytest.approx(1e-3, rel=1e-2)
    assert logs["depth"][-1] == model.get_layer("depth").chosen_depth()
    assert logs["expected_depth"][-1] == pytest.approx(
        model.get_layer("depth").expected_depth()
    )
    assert logs["depth_probability"][-1] == pytest.approx(
        model.get_layer("depth").probabilities().max()
    )
    # No penalty: "auto" warms up, then learns at logits_scale 3.
    assert logs["logits_scale"] == [0.0, 3.0]
    for name in ("w0", "w1"):
        assert logs[f"width_{name}"][-1] in (4, 8)
        assert 4 <= logs[f"expected_width_{name}"][-1] <= 8
        assert 0.5 <= logs[f"width_probability_{name}"][-1] <= 1


def test_whole_fit_needs_a_known_length():
    model = _width_model(0.0)

    def batches():
        x, y = _digits(64)
        while True:
            yield x, y

    with pytest.raises(ValueError, match="decay_steps"):
        model.fit(
            batches(), epochs=1, verbose=0, callbacks=[TemperatureScheduler()]
        )
    model.fit(
        batches(),
        steps_per_epoch=2,
        epochs=1,
        verbose=0,
        callbacks=[TemperatureScheduler(decay_steps=4, warmup_steps=0)],
    )
    (width,) = [x for x in model.layers if isinstance(x, layers.ConcreteWidth)]
    assert width.state_value("temperature") == pytest.approx(
        Geometric(0.1, 1e-3, 4)(1)
    )


def test_resume_after_save_matches_an_uninterrupted_run(tmp_path):
    x, y = _digits(128)
    kwargs = dict(batch_size=32, shuffle=False, verbose=0)
    search = dict(warmup_steps=10, logits_scale=3.0)

    def fresh():
        keras.utils.set_random_seed(7)
        return _width_model(1e-2, seed=4)

    full = fresh()
    full.fit(
        x, y, epochs=4, callbacks=[TemperatureScheduler(**search)], **kwargs
    )
    model = fresh()
    model.fit(
        x,
        y,
        epochs=4,
        callbacks=[TemperatureScheduler(**search), StopAfter(1)],
        **kwargs,
    )
    (width,) = [x for x in model.layers if isinstance(x, layers.ConcreteWidth)]
    path = os.path.join(tmp_path, "search.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    (restored,) = [
        x for x in loaded.layers if isinstance(x, layers.ConcreteWidth)
    ]
    np.testing.assert_array_equal(_np(restored.logits), _np(width.logits))
    assert restored.state_value("temperature") == width.state_value(
        "temperature"
    )
    # In the warm-up (the first 10 of 16 steps), which resumes with it.
    assert restored.state_value("logits_scale") == 0.0
    loaded.fit(
        x,
        y,
        epochs=4,
        initial_epoch=2,
        callbacks=[TemperatureScheduler(**search)],
        **kwargs,
    )
    for a, b in zip(loaded.weights, full.weights, strict=True):
        np.testing.assert_allclose(_np(a), _np(b), atol=1e-5)


def test_geometric_schedule():
    schedule = Geometric(0.1, 1e-3, 4)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(2) == pytest.approx(1e-2)
    assert schedule(4) == schedule(9) == pytest.approx(1e-3)
    copy = keras_gradnets.schedules.deserialize(
        keras_gradnets.schedules.serialize(schedule)
    )
    assert copy.get_config() == schedule.get_config()


# finalize ------------------------------------------------------------------


def _check_finalized(model, x, smaller=True):
    plain = keras_gradnets.finalize(model)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )
    assert not [
        layer
        for layer in plain._flatten_layers()
        if isinstance(layer, (layers.ConcreteWidth, layers.ConcreteDepth))
    ]
    if smaller:
        assert plain.count_params() < model.count_params()
    return plain


def _choose(layer, index):
    logits = np.zeros(layer.logits.shape, "float32")
    logits[index] = 1.0
    layer.logits.assign(logits)


def test_finalize_slices_a_dense_stack_to_the_chosen_widths():
    model = _width_model(0.0)
    x, y = _digits(64)
    model.fit(x, y, epochs=1, verbose=0)
    _choose(model.layers[1], 1)
    plain = _check_finalized(model, x)
    assert [layer.units for layer in plain.layers] == [8, 10]


def test_finalize_slices_conv_batch_norm_and_the_next_conv():
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(12, 3, padding="same", name="conv1")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = layers.ConcreteWidth([4, 8, 12], name="width")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Dropout(0.2)(h)
    h = keras.layers.Conv2D(6, 3, name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    x = RNG.normal(size=(16, 8, 8, 3)).astype("float32")
    model.compile("adam", "mse")
    model.fit(x, RNG.normal(size=(16, 2)), epochs=1, verbose=0)
    _choose(model.get_layer("width"), 1)
    plain = _check_finalized(model, x)
    assert plain.get_layer("conv1").filters == 8
    assert plain.get_layer("bn").gamma.shape == (8,)
    assert plain.get_layer("conv2").kernel.shape == (3, 3, 8, 6)


def test_finalize_cuts_the_depth_and_the_widths_together():
    x, _ = _digits(32)
    inputs = keras.Input((64,))
    heads = layers.attach_heads(
        inputs,
        [
            [
                keras.layers.Dense(16, activation="relu", name=f"block{i}"),
                layers.ConcreteWidth([4, 16], name=f"width{i}"),
            ]
            for i in range(1, 4)
        ],
        head=keras.layers.Dense(10, name="head"),
    )
    depth = layers.ConcreteDepth(name="depth")
    model = keras.Model(inputs, depth(heads))
    _choose(depth, 1)
    _choose(model.get_layer("width1"), 0)
    _choose(model.get_layer("width2"), 1)
    plain = _check_finalized(model, x)
    assert [layer.name for layer in plain.layers[1:]] == [
        "block1",
        "block2",
        "head_2",
    ]
    assert plain.get_layer("block1").units == 4
    assert plain.get_layer("block2").kernel.shape == (4, 16)
    assert plain.get_layer("head_2").kernel.shape == (16, 10)


@pytest.mark.parametrize(
    "tail, match",
    [
        ([], "reach 'the model output'"),
        ([keras.layers.LayerNormalization(name="norm")], "read by 'norm'"),
    ],
)
def test_finalize_explains_a_width_it_cannot_cut(tail, match):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(4),
            layers.ConcreteWidth(name="width"),
            *tail,
        ]
    )
    with pytest.raises(ValueError, match=f"'width'.*{match}"):
        keras_gradnets.finalize(model)
    before = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.LayerNormalization(name="norm"),
            layers.ConcreteWidth(name="width"),
            keras.layers.Dense(2),
        ]
    )
    with pytest.raises(ValueError, match="'width'.*through 'norm'"):
        keras_gradnets.finalize(before)


def test_fit_refuses_a_width_finalize_could_not_cut_before_training():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(4),
            layers.ConcreteWidth(name="width"),
            keras.layers.LayerNormalization(name="norm"),
        ]
    )
    model.compile("adam", "mse")
    before = [np.array(w) for w in model.get_weights()]
    x = np.ones((8, 4), "float32")
    with pytest.raises(ValueError, match="refuses to start.*read by 'norm'"):
        model.fit(x, x, epochs=1, verbose=0, callbacks=[TemperatureScheduler()])
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


# Heads and arguments -------------------------------------------------------


def test_attach_heads_copies_layers_sequentials_and_calls_functions():
    inputs = keras.Input((4,))
    blocks = keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(3)])
    outputs = layers.attach_heads(inputs, blocks, keras.layers.Dense(2))
    assert len(outputs) == 2
    head = keras.Sequential([keras.layers.Dense(2)], name="seq")
    model = keras.Model(
        inputs, layers.attach_heads(inputs, blocks.layers, head)
    )
    assert {"seq_1", "seq_2"} <= {layer.name for layer in model.layers}
    outputs = layers.attach_heads(
        inputs, [keras.layers.Dense(3)], lambda: keras.layers.Dense(5)
    )
    assert outputs[0].shape == (None, 5)
    with pytest.raises(ValueError, match="`head`"):
        layers.attach_heads(inputs, [keras.layers.Dense(3)], "dense")
    with pytest.raises(ValueError, match="`blocks`"):
        layers.attach_heads(inputs, [], keras.layers.Dense(2))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: layers.ConcreteWidth([]), "`widths`"),
        (lambda: layers.ConcreteWidth([0, 2]), "`widths`"),
        (lambda: layers.ConcreteWidth([4, 2]), "`widths`"),
        (lambda: layers.ConcreteWidth([1.5]), "`widths`"),
        (lambda: layers.ConcreteWidth(8), "`widths`"),
        (lambda: layers.ConcreteWidth(gamma=-1.0), "`gamma`.*>= 0"),
        (lambda: layers.ConcreteDepth(gamma=-1e-3), "`gamma`"),
        (lambda: layers.ConcreteDepth(temperature=-1.0), "`temperature`"),
        (lambda: TemperatureScheduler(start=0.0), "`start`.*> 0"),
        (lambda: TemperatureScheduler(end=0.0), "`end`.*> 0"),
        (lambda: TemperatureScheduler(end=1.0), "`end`.*start=0.1"),
        (lambda: TemperatureScheduler(decay_steps=0), "`decay_steps`"),
        (
            lambda: TemperatureScheduler(warmup_steps=-1),
            '`warmup_steps`. Expected "auto" or an integer >= 0',
        ),
        (
            lambda: TemperatureScheduler(warmup_steps="half"),
            "Received: warmup_steps='half'",
        ),
        (
            lambda: TemperatureScheduler(logits_scale=0.0),
            '`logits_scale`. Expected "auto" or a number > 0',
        ),
        (lambda: Geometric(0.1, -1.0, 3), "`end`"),
    ],
)
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_widths_larger_than_the_units_raise_at_build():
    with pytest.raises(ValueError, match="`widths`.*at most 4"):
        layers.ConcreteWidth([2, 8])(np.ones((1, 4), "float32"))
    with pytest.raises(ValueError, match="same shape"):
        layers.ConcreteDepth()([np.ones((1, 4)), np.ones((1, 3))])


class LayerTest(testing.TestCase):
    def test_concrete_width(self):
        self.run_layer_test(
            layers.ConcreteWidth,
            init_kwargs={"widths": [1, 2], "gamma": 0.1, "seed": 1},
            input_shape=(2, 3),
            expected_output_shape=(2, 3),
            expected_num_trainable_weights=1,
            expected_num_non_trainable_weights=2,
            expected_num_seed_generators=1,
            expected_num_losses=1,
            supports_masking=False,
        )

    def test_concrete_depth(self):
        self.run_layer_test(
            layers.ConcreteDepth,
            init_kwargs={"seed": 2, "temperature": 0.5},
            input_shape=[(2, 3), (2, 3), (2, 3)],
            expected_output_shape=(2, 3),
            expected_num_trainable_weights=1,
            expected_num_non_trainable_weights=2,
            expected_num_seed_generators=1,
            # Keras's training check cannot feed a list of inputs on
            # TensorFlow; test_gradient_reaches_the_logits_and_is_finite
            # trains it.
            run_training_check=False,
            supports_masking=False,
        )


def test_finalize_names_an_op_node_that_reads_a_width():
    # The one cutting rule reads the graph's nodes: an op node between the
    # width and its reader is named, not mistaken for the model output.
    inputs = keras.Input((4,))
    h = layers.ConcreteWidth(name="width")(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(h * 2.0))
    with pytest.raises(ValueError, match="'width'.*read by 'multiply"):
        keras_gradnets.finalize(model)
