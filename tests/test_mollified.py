"""Mollified layers, p schedules and MollifierScheduler."""

import os

import keras
import numpy as np
import pytest
from keras import ops

import keras_gradnets
from keras_gradnets import layers
from keras_gradnets import schedules
from keras_gradnets.callbacks import MollifierScheduler
from keras_gradnets.mollifying.mollify import LINEARIZATIONS
from keras_gradnets.mollifying.mollify import mollified_activation
from keras_gradnets.mollifying.mollify import sampled_activation
from tests.helpers import BatchRecorder
from tests.helpers import CrashAt
from tests.helpers import LastBatchMean
from tests.helpers import jit_modes
from tests.helpers import value_and_gradients

X = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
ACTIVATIONS = ["sigmoid", "tanh", "hard_sigmoid", "relu"]


def numpy(x):
    return ops.convert_to_numpy(x)


def _dense_reference(layer, x):
    pre = x @ numpy(layer.kernel) + numpy(layer.bias)
    return numpy(keras.activations.get(layer.activation)(pre))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(
    "units, skip", [(6, "auto"), (9, "pad"), (4, "pad"), (5, "project")]
)
def test_p1_is_exactly_the_skip_path(activation, units, skip):
    layer = layers.MollifiedDense(units, activation, skip=skip, p=1.0, seed=1)
    layer.build(X.shape)
    if skip == "project":
        expected = numpy(ops.matmul(X, layer.skip_kernel))
    elif units >= 6:
        expected = np.pad(X, [[0, 0], [0, units - 6]])
    else:
        expected = X[:, :units]
    for training in (True, False):
        np.testing.assert_array_equal(
            numpy(layer(X, training=training)), expected
        )


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_p0_is_exactly_the_activation_without_noise(activation):
    layer = layers.MollifiedDense(6, activation, p=0.0, seed=2)
    layer.build(X.shape)
    expected = numpy(
        keras.activations.get(activation)(
            ops.matmul(X, layer.kernel) + layer.bias
        )
    )
    for training in (True, True, False):
        np.testing.assert_array_equal(
            numpy(layer(X, training=training)), expected
        )


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("p", [0.3, 0.7])
def test_training_mean_matches_inference_expectation(activation, p):
    layer = layers.MollifiedDense(6, activation, c=200.0, p=p, seed=3)
    layer.build(X.shape)
    layer.a.assign(np.full(6, 2.0, "float32"))
    # The noise and the skip choices are drawn per element: one call on
    # 3000 copies of X gives 3000 independent samples of each output.
    samples = numpy(layer(np.tile(X, (3000, 1)), training=True))
    samples = samples.reshape(3000, len(X), 6)
    standard_error = samples.std(axis=0) / np.sqrt(len(samples))
    error = np.abs(samples.mean(axis=0) - numpy(layer(X, training=False)))
    assert np.all(error <= 5 * standard_error + 1e-6)
    assert samples.std(axis=0).max() > 0  # it is random in between


def test_deterministic_training_uses_the_expectation():
    layer = layers.MollifiedDense(6, p=0.4, deterministic=True, seed=4)
    np.testing.assert_allclose(
        numpy(layer(X, training=True)), numpy(layer(X, training=False))
    )


def test_noise_pushes_sigmoid_towards_its_linear_approximation():
    layer = layers.MollifiedDense(
        6, "sigmoid", c=1e4, p=0.5, seed=5, deterministic=True
    )
    layer.build(X.shape)
    pre = X @ numpy(layer.kernel) + numpy(layer.bias)
    layer.a.assign(np.full(6, 50.0, "float32"))
    linear = 0.5 + pre / 4
    out = numpy(layer(X))
    expected = 0.5 * X + 0.5 * linear
    saturated = np.abs(pre) > 1
    np.testing.assert_allclose(out[saturated], expected[saturated], atol=2e-3)


def test_mollified_activation_matches_mollified_dense():
    dense = layers.MollifiedDense(6, "tanh", p=0.5, seed=6)
    dense.build(X.shape)
    activation = layers.MollifiedActivation("tanh", p=0.5, seed=6)
    pre = ops.matmul(X, dense.kernel) + dense.bias
    activation.build([pre.shape, X.shape])
    activation.a.assign(dense.a)
    np.testing.assert_allclose(
        numpy(activation([pre, X])), numpy(dense(X)), atol=1e-6
    )
    with pytest.raises(ValueError, match="same shape"):
        layers.MollifiedActivation()([X, X[:, :3]])


def test_gradients_reach_kernel_and_a():
    model = keras.Sequential(
        [keras.Input((6,)), layers.MollifiedDense(6, p=0.5, seed=7)]
    )
    layer = model.layers[0]
    model.compile(keras.optimizers.SGD(0.5), "mse")
    before = [numpy(v).copy() for v in (layer.kernel, layer.a)]
    model.fit(X, np.ones((8, 6)), epochs=3, verbose=0)
    for old, variable in zip(before, (layer.kernel, layer.a), strict=True):
        assert not np.array_equal(old, numpy(variable))


def _algorithm_1(x, skip, a, u, p, activation, c):
    """Algorithm 1 as the paper writes it, for the uniform draws `u`,
    differentiated by the backend."""
    offset, slope = LINEARIZATIONS[activation]
    f = keras.activations.get(activation)(x)
    delta = offset + slope * x - f
    sigma = ops.square(ops.sigmoid(a * delta) - 0.5)
    half_normal = np.sqrt(2.0) * ops.erfinv(ops.relu(u - p) / (1 - p))
    s = p * c * sigma * half_normal
    psi = f + ops.sign(delta) * ops.minimum(ops.abs(delta), s)
    return ops.where(u < p, skip, psi)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("p", [0.3, 0.7])
def test_training_gradients_are_those_of_algorithm_1(activation, p):
    """The sampled activation's hand-written gradient (for `x`, the skip
    path and `a`) equals the backend's gradient of Algorithm 1."""
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 3.0, size=(64, 5)).astype("float32")
    skip = rng.normal(size=(64, 5)).astype("float32")
    a = rng.uniform(-2.0, 2.0, size=5).astype("float32")
    u = rng.uniform(0.0, 0.999, size=(64, 5)).astype("float32")
    draws = ops.convert_to_tensor(u)
    weights = ops.convert_to_tensor(rng.normal(size=(64, 5)), "float32")
    c = 20.0
    out, grads = value_and_gradients(
        lambda *args: (
            weights * sampled_activation(*args, draws, p, activation, c)
        ),
        x,
        skip,
        a,
    )
    expected, expected_grads = value_and_gradients(
        lambda *args: weights * _algorithm_1(*args, draws, p, activation, c),
        x,
        skip,
        a,
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-5)
    # Both cases of the noise bound occur: the unit moves all the way to
    # its linear approximation, or by the noise only.
    linear = np.isclose(
        out / numpy(weights),
        LINEARIZATIONS[activation][0] + LINEARIZATIONS[activation][1] * x,
    )
    kept = u >= p
    assert 0 < np.mean(linear[kept]) < 1


@pytest.mark.parametrize(
    "dtype, a, p, c",
    [
        # The noise scale p * c * sigma is about 1e-20: its square, which
        # the gradient of the expectation divides by, underflows.
        ("float32", 1e-6, 1e-5, 1.0),
        ("float16", 0.1, 0.1, 100.0),
    ],
)
def test_expectation_gradients_stay_finite_for_tiny_noise(dtype, a, p, c):
    """The path of `deterministic=True` training: finite gradients where
    the noise scale is tiny, and in float16 (a mixed precision policy)."""
    if dtype == "float16" and keras.backend.backend() == "torch":
        pytest.skip("Keras does not support float16 on torch CPU")
    x = np.linspace(-4.0, 4.0, 48).reshape(8, 6).astype(dtype)
    out, grads = value_and_gradients(
        lambda x, skip, a: mollified_activation(
            x, skip, p, a, "sigmoid", c, keras.random.SeedGenerator(3), False
        ),
        x,
        X.astype(dtype),
        np.full((6,), a, dtype=dtype),
    )
    assert np.isfinite(out).all()
    for grad in grads:
        assert np.isfinite(grad).all()


@pytest.mark.parametrize(
    "policy, p", [("float32", 1e-7), ("mixed_float16", 0.1)]
)
def test_deterministic_training_takes_finite_steps(policy, p):
    if policy == "mixed_float16" and keras.backend.backend() == "torch":
        pytest.skip("Keras does not support float16 on torch CPU")
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            layers.MollifiedDense(16, "sigmoid", p=p, deterministic=True),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse")
    x = 0.01 * np.random.default_rng(0).normal(size=(256, 8))
    kernel = numpy(model.layers[0].kernel).copy()
    model.fit(x, x.sum(axis=1), epochs=2, verbose=0)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    # Under mixed_float16 a non-finite gradient skips the step.
    assert not np.array_equal(kernel, numpy(model.layers[0].kernel))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: layers.MollifiedDense(4, p=1.5), "`p`.*Received: p=1.5"),
        (lambda: layers.MollifiedDense(4, p=-0.1), "`p`"),
        (lambda: layers.MollifiedDense(4, c=-1), "`c`"),
        (lambda: layers.MollifiedDense(4, skip="zero"), "`skip`"),
        (lambda: layers.MollifiedDense(4, activation="elu"), "`activation`"),
        (lambda: layers.MollifiedDense(0), "`units`"),
        (lambda: layers.MollifiedActivation(p=2), "`p`"),
        (lambda: schedules.MollifyExponential(-1), "`k`.*Received: k=-1"),
        (lambda: schedules.MollifyExponential(0), "`k`.*> 0.*Received: k=0"),
        (lambda: schedules.SqrtDecay(0), "`decay_steps`"),
        (lambda: schedules.LinearDecay(-5), "`decay_steps`"),
        (lambda: schedules.LinearDecay(10, p_min=1.5), "`p_min`"),
        (lambda: schedules.SqrtDecay(10, p_min=-0.5), "`p_min`"),
        (
            lambda: MollifierScheduler(schedules.LinearDecay(5), stop_depth=-1),
            "`stop_depth`",
        ),
    ],
)
def test_bad_arguments_raise_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_identity_skip_needs_equal_widths():
    with pytest.raises(ValueError, match="skip='identity'"):
        layers.MollifiedDense(4, skip="identity")(X)


def test_schedules_follow_their_formulas():
    # `step` counts the steps completed (from 0); the paper's update index
    # is t = step + 1.
    exponential = schedules.MollifyExponential(k=50)
    cases = [(0, 1, 4, 1.0), (9, 2, 4, 0.5), (499, 4, 4, 2.0)]
    for step, depth, num_layers, v in cases:
        t = step + 1
        assert exponential(
            step, layer=depth, num_layers=num_layers, loss=v
        ) == (pytest.approx(1 - np.exp(-50 * v * depth / (t * num_layers))))
    sqrt, linear = (
        schedules.SqrtDecay(400, 0.1),
        schedules.LinearDecay(400, 0.1),
    )
    for t in [0, 1, 100, 324, 400, 1000]:
        assert sqrt(t) == pytest.approx(max(0.1, 1 - np.sqrt(t / 400)))
        assert linear(t) == pytest.approx(max(0.1, 1 - t / 400))


@pytest.mark.parametrize(
    "schedule",
    [
        schedules.MollifyExponential(30),
        schedules.SqrtDecay(50, 0.2),
        schedules.LinearDecay(50, 0.0),
    ],
)
def test_schedules_are_monotone_bounded_and_serializable(schedule):
    for layer in (1, 3):
        values = [schedule(t, layer=layer, num_layers=3) for t in range(1, 200)]
        assert np.all(np.diff(values) <= 0)
        assert min(values) >= getattr(schedule, "p_min", 0.0)
        assert max(values) <= 1.0
    restored = schedules.deserialize(schedules.serialize(schedule))
    assert restored.get_config() == schedule.get_config()
    assert restored(7, layer=2, num_layers=3) == schedule(
        7, layer=2, num_layers=3
    )


def test_exponential_anneals_lower_layers_faster():
    schedule = schedules.MollifyExponential(30)
    assert schedule(100, layer=1, num_layers=3) < schedule(
        100, layer=3, num_layers=3
    )


# A probe: zero kernel and bias with ReLU give psi = 0, so the expected
# output of a unit is p times its input (1 here): the batch mean is the p
# the compiled step used.
X_PROBE = np.ones((16, 1), "float32")


def probe_model(jit_compile="auto", depth=1):
    model = keras.Sequential(
        [keras.Input((1,))]
        + [
            layers.MollifiedDense(
                1, "relu", kernel_initializer="zeros", deterministic=True
            )
            for _ in range(depth)
        ]
    )
    model.compile(
        keras.optimizers.SGD(0.0),
        "mse",
        metrics=[LastBatchMean()],
        jit_compile=jit_compile,
    )
    return model


@pytest.mark.parametrize("jit_compile", jit_modes())
def test_compiled_step_uses_p_of_the_update(jit_compile):
    recorder = BatchRecorder("last_mean")
    history = probe_model(jit_compile).fit(
        X_PROBE,
        X_PROBE,
        batch_size=4,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[
            MollifierScheduler(schedules.LinearDecay(10), use_loss=False),
            recorder,
        ],
    )
    # t = the steps completed before the step, from 0, as in every scheduler.
    expected = [1 - t / 10 for t in range(8)]
    np.testing.assert_allclose(recorder.values, expected, atol=1e-6)
    # One mollified layer: the log rule's one key, `p`.
    assert history.history["p"] == pytest.approx([0.7, 0.3], abs=1e-6)
    assert history.history["mollified_depth"] == pytest.approx(
        [0.7, 0.3], abs=1e-6
    )


def test_per_layer_exponential_schedule_and_stop_depth():
    model = probe_model(depth=3)
    scheduler = MollifierScheduler(
        schedules.MollifyExponential(k=6), use_loss=False, stop_depth=1.5
    )
    history = model.fit(
        X_PROBE,
        X_PROBE,
        batch_size=4,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[scheduler],
    )
    # The product of the layers' p is what the probe sees; check the logs.
    depth = history.history["mollified_depth"]
    assert scheduler.stopped
    p = [numpy(layer.p) for layer in model.layers]
    assert p[0] < p[1] < p[2]
    t_stop = next(
        t
        for t in range(1, 100)
        if sum(1 - np.exp(-6 * d / (t * 3)) for d in (1, 2, 3)) <= 1.5
    )
    np.testing.assert_allclose(
        p, [1 - np.exp(-6 * d / (t_stop * 3)) for d in (1, 2, 3)], rtol=1e-6
    )
    assert depth[-1] == pytest.approx(sum(p), rel=1e-6)


def test_stop_depth_holds_across_fits():
    model = probe_model(depth=2)
    kwargs = dict(batch_size=4, shuffle=False, verbose=0)

    def scheduler():
        return MollifierScheduler(
            schedules.LinearDecay(8), use_loss=False, stop_depth=1.0
        )

    model.fit(X_PROBE, X_PROBE, epochs=3, callbacks=[scheduler()], **kwargs)
    stopped_at = [float(numpy(layer.p)) for layer in model.layers]
    assert sum(stopped_at) <= 1.0
    again = scheduler()
    model.fit(X_PROBE, X_PROBE, epochs=2, callbacks=[again], **kwargs)
    assert again.stopped
    assert [float(numpy(layer.p)) for layer in model.layers] == stopped_at


def test_loss_drives_exponential_schedule():
    model = probe_model()
    scheduler = MollifierScheduler(schedules.MollifyExponential(k=4))
    history = model.fit(
        X_PROBE,
        3 * X_PROBE,
        batch_size=4,
        epochs=2,
        verbose=0,
        callbacks=[scheduler],
    )
    v = history.history["loss_average"][-1]
    assert v == pytest.approx(history.history["loss"][-1], rel=0.2)
    p = numpy(model.layers[0].p)
    assert p == pytest.approx(1 - np.exp(-4 * v / 8), rel=0.05)


def _regression(seed=11):
    # Deterministic layers: Keras does not save random generator states, so
    # only a noise-free run can be compared step for step after a reload.
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((4,))]
        + [
            layers.MollifiedDense(
                8, "tanh", deterministic=True, name=f"molly{i}"
            )
            for i in range(2)
        ]
        + [keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.Adam(0.01), "mse")
    return model


def test_resume_keeps_p_and_the_loss_average(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = np.tanh(x.sum(axis=1, keepdims=True))
    kwargs = dict(batch_size=8, shuffle=False, verbose=0)

    def scheduler():
        return MollifierScheduler(schedules.MollifyExponential(k=40))

    full = _regression()
    full_history = full.fit(x, y, epochs=6, callbacks=[scheduler()], **kwargs)

    first = _regression()
    first.fit(x, y, epochs=3, callbacks=[scheduler()], **kwargs)
    path = os.path.join(tmp_path, "halfway.keras")
    first.save(path)
    resumed = keras.saving.load_model(path)
    for layer, original in zip(resumed.layers, first.layers, strict=True):
        if hasattr(layer, "p"):
            assert numpy(layer.p) == numpy(original.p)
            state = layer.callback_state("mollifier")
            assert state == original.callback_state("mollifier")
            assert state["loss_sum"] > 0
    resumed_history = resumed.fit(
        x, y, epochs=6, initial_epoch=3, callbacks=[scheduler()], **kwargs
    )
    for key in ("p_molly0", "p_molly1", "loss_average"):
        np.testing.assert_allclose(
            resumed_history.history[key],
            full_history.history[key][3:],
            rtol=1e-4,
        )


def test_backup_listed_first_resumes_the_loss_average(tmp_path):
    # BackupAndRestore saves at the end of an epoch; listed before the
    # scheduler, it saves before the scheduler's own epoch end has run.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = np.tanh(x.sum(axis=1, keepdims=True))
    kwargs = dict(batch_size=8, shuffle=False, verbose=0, epochs=5)

    def scheduler():
        return MollifierScheduler(schedules.MollifyExponential(k=40))

    keras.utils.set_random_seed(2)
    full = _regression().fit(x, y, callbacks=[scheduler()], **kwargs)
    backup = os.path.join(tmp_path, "backup")
    keras.utils.set_random_seed(2)
    model = _regression()
    with pytest.raises(RuntimeError, match="Interrupted"):
        model.fit(
            x,
            y,
            callbacks=[
                keras.callbacks.BackupAndRestore(backup),
                scheduler(),
                CrashAt(3),
            ],
            **kwargs,
        )
    keras.utils.set_random_seed(2)
    model = _regression()
    resumed = model.fit(
        x,
        y,
        callbacks=[keras.callbacks.BackupAndRestore(backup), scheduler()],
        **kwargs,
    )
    for key in ("p_molly0", "loss_average"):
        np.testing.assert_allclose(
            resumed.history[key], full.history[key][3:], rtol=1e-4
        )


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras does not support float16 on torch CPU",
)
def test_mixed_float16_training_is_finite():
    # Float16 outputs, float32 noise: finite outputs and weights, where an
    # infinite noise would give NaN (delta = 0 at x = 0).
    keras.config.set_dtype_policy("mixed_float16")
    layer = layers.MollifiedDense(64, "sigmoid", p=0.5, seed=0)
    model = keras.Sequential([keras.Input((8,)), layer])
    x = np.zeros((256, 8), "float32")
    y = layer(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert np.isfinite(ops.convert_to_numpy(y)).all()
    model.compile("sgd", "mse")
    history = model.fit(x, np.ones((256, 64)), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_config_round_trip_keeps_p():
    layer = layers.MollifiedDense(5, "tanh", c=20, skip="project", p=0.25)
    clone = layers.MollifiedDense.from_config(layer.get_config())
    assert numpy(clone.p) == 0.25 and clone.skip == "project" and clone.c == 20


def test_scheduler_without_mollified_layers_is_an_error():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="found no mollified .*MollifiedDense"):
        model.fit(
            np.ones((2, 2)),
            np.ones((2, 1)),
            verbose=0,
            callbacks=[MollifierScheduler(schedules.LinearDecay(3))],
        )


def test_finalize_at_p0_gives_dense_with_equal_outputs():
    model = _regression()
    model.fit(X[:, :4], np.ones((8, 1)), epochs=1, verbose=0)
    for layer in model.layers[:2]:
        layer.p.assign(0.0)
    plain = keras_gradnets.finalize(model)
    assert [type(layer).__name__ for layer in plain.layers] == ["Dense"] * 3
    np.testing.assert_allclose(
        plain.predict(X[:, :4], verbose=0),
        model.predict(X[:, :4], verbose=0),
        atol=1e-5,
    )
    model.layers[0].p.assign(0.5)
    with pytest.raises(ValueError, match="has p=0.5"):
        keras_gradnets.finalize(model)


SEQ = np.random.default_rng(2).normal(size=(3, 6, 4)).astype("float32")
CELLS = [
    (layers.MollifiedLSTMCell, keras.layers.LSTMCell),
    (layers.MollifiedGRUCell, keras.layers.GRUCell),
]


@pytest.mark.parametrize("cell_cls, plain_cls", CELLS)
def test_cells_at_p0_are_the_plain_keras_cells(cell_cls, plain_cls):
    cell = cell_cls(5, p=0.0, seed=1)
    rnn = keras.layers.RNN(cell, return_sequences=True)
    rnn.build(SEQ.shape)
    plain = keras.layers.RNN(
        plain_cls(5, recurrent_activation="hard_sigmoid"),
        return_sequences=True,
    )
    plain.build(SEQ.shape)
    plain.set_weights(cell.finalized_layers()[0].get_weights())
    expected = numpy(plain(SEQ))
    for training in (True, False):
        np.testing.assert_allclose(
            numpy(rnn(SEQ, training=training)), expected, atol=1e-6
        )


@pytest.mark.parametrize("cell_cls", [c for c, _ in CELLS])
def test_cells_at_p1_average_their_candidates_in_expectation(cell_cls):
    # With no recurrent weights the candidates depend on the inputs only;
    # at p=1 the expected gates make the state their running mean (section
    # 6: a bag-of-words model).
    cell = cell_cls(5, p=1.0, recurrent_initializer="zeros", seed=2)
    rnn = keras.layers.RNN(cell, return_sequences=True)
    out = numpy(rnn(SEQ, training=False))
    kernel, bias = numpy(cell.kernel), numpy(cell.bias)
    if cell_cls is layers.MollifiedLSTMCell:
        candidates = np.tanh(SEQ @ kernel[:, 10:15] + bias[10:15])
        running_mean = np.cumsum(candidates, 1) / np.arange(1, 7)[:, None]
        expected = np.tanh(running_mean)
    else:
        candidates = np.tanh(
            SEQ @ kernel[:, 10:15] + bias[0, 10:15] + bias[1, 10:15]
        )
        expected = np.cumsum(candidates, 1) / np.arange(1, 7)[:, None]
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("cell_cls", [c for c, _ in CELLS])
def test_cells_are_noisy_in_training_between_end_points(cell_cls):
    rnn = keras.layers.RNN(cell_cls(5, p=0.5, seed=4), return_sequences=True)
    first, second = (numpy(rnn(SEQ, training=True)) for _ in range(2))
    assert not np.allclose(first, second)
    assert not np.allclose(first, numpy(rnn(SEQ, training=False)))


@pytest.mark.parametrize("cell_cls", [c for c, _ in CELLS])
def test_cells_train_save_and_finalize(cell_cls, tmp_path):
    model = keras.Sequential(
        [
            keras.Input((6, 4)),
            keras.layers.RNN(cell_cls(5, seed=3)),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse")
    history = model.fit(
        SEQ,
        np.ones((3, 1)),
        batch_size=2,
        epochs=2,
        verbose=0,
        callbacks=[MollifierScheduler(schedules.LinearDecay(3))],
    )
    # Steps t = 0..3 (two per epoch): p = 1 - t / 3 reaches 0 at t = 3.
    assert history.history["mollified_depth"] == pytest.approx([2 / 3, 0.0])
    path = os.path.join(tmp_path, "rnn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert numpy(loaded.layers[0].cell.p) == 0.0
    plain = keras_gradnets.finalize(loaded)
    assert type(plain.layers[0].cell).__name__ == cell_cls.__name__[9:]
    np.testing.assert_allclose(
        plain.predict(SEQ, verbose=0),
        model.predict(SEQ, verbose=0),
        atol=1e-5,
    )


from keras.src import testing  # noqa: E402


class MollifiedLayerTestCase(testing.TestCase):
    def test_mollified_dense(self):
        self.run_layer_test(
            layers.MollifiedDense,
            {"units": 4, "p": 0.5, "seed": 1},
            input_shape=(2, 3),
            expected_output_shape=(2, 4),
            expected_num_trainable_weights=3,
            expected_num_non_trainable_weights=1,
            expected_num_seed_generators=1,
        )

    def test_mollified_activation(self):
        self.run_layer_test(
            layers.MollifiedActivation,
            {"activation": "relu", "p": 0.5},
            input_shape=((2, 3), (2, 3)),
            expected_output_shape=(2, 3),
            expected_num_trainable_weights=1,
        )
