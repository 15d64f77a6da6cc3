"""End points, gradients, serialization and Keras citizenship of layers."""

import os

import keras
import numpy as np
import pytest
from keras import ops
from keras.src import testing

from keras_gradnets import layers
from tests.helpers import BACKEND
from tests.helpers import jit_modes
from tests.helpers import value_and_gradients

RNG = np.random.default_rng(0)
X_FLAT = RNG.normal(size=(6, 5)).astype("float32")
X_SEQ = RNG.normal(size=(2, 8, 3)).astype("float32")
X_IMG = RNG.normal(size=(2, 6, 6, 3)).astype("float32")


def numpy(x):
    return ops.convert_to_numpy(x)


def relu(x):
    return np.maximum(x, 0)


def _gradnet(g):
    return layers.GradNet(
        keras.layers.Dense(4, name="early_dense"),
        keras.layers.Dense(4, name="late_dense"),
        g=g,
    )


# name -> (factory(g), input, early(layer, x), late(layer, x), training)
# `early` and `late` compute the components from the layer's own parts.
CASES = {
    "GReLU": (
        lambda g: layers.GReLU(g=g),
        X_FLAT,
        lambda layer, x: x,
        lambda layer, x: relu(x),
        False,
    ),
    "InverseGReLU": (
        lambda g: layers.InverseGReLU(g=g),
        X_FLAT,
        lambda layer, x: np.abs(x),
        lambda layer, x: relu(x),
        False,
    ),
    "GradualPooling1D": (
        lambda g: layers.GradualPooling1D(2, g=g),
        X_SEQ,
        lambda layer, x: numpy(keras.layers.AveragePooling1D(2)(x)),
        lambda layer, x: numpy(keras.layers.MaxPooling1D(2)(x)),
        False,
    ),
    "GradualPooling2D": (
        lambda g: layers.GradualPooling2D((2, 2), g=g),
        X_IMG,
        lambda layer, x: numpy(keras.layers.AveragePooling2D(2)(x)),
        lambda layer, x: numpy(keras.layers.MaxPooling2D(2)(x)),
        False,
    ),
    "GradualBatchNormalization": (
        lambda g: layers.GradualBatchNormalization(g=g, epsilon=1e-3),
        X_FLAT,
        lambda layer, x: numpy(layer.batch_norm(x, training=True)),
        lambda layer, x: x,
        True,
    ),
    "GradualConv1D": (
        lambda g: layers.GradualConv1D(3, activation="relu", g=g),
        X_SEQ,
        lambda layer, x: x,
        lambda layer, x: numpy(layer.conv(x)),
        False,
    ),
    "GradualConv2D": (
        lambda g: layers.GradualConv2D(3, activation="relu", g=g),
        X_IMG,
        lambda layer, x: x,
        lambda layer, x: numpy(layer.conv(x)),
        False,
    ),
    "GradualNiN2D": (
        lambda g: layers.GradualNiN2D(4, 3, padding="same", g=g),
        X_IMG,
        lambda layer, x: numpy(layer.conv(x)),
        lambda layer, x: numpy(layer.conv_1x1(layer.conv(x))),
        False,
    ),
    "GradNet": (
        _gradnet,
        X_FLAT,
        lambda layer, x: numpy(layer.early(x)),
        lambda layer, x: numpy(layer.late(x)),
        False,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("g", [0.0, 0.3, 1.0])
def test_output_is_the_blend_and_exact_at_end_points(name, g):
    factory, x, early, late, training = CASES[name]
    layer = factory(g)
    y = numpy(layer(x, training=training))
    expected = (1 - g) * early(layer, x) + g * late(layer, x)
    atol = 1e-6 if g in (0.0, 1.0) else 1e-5
    np.testing.assert_allclose(y, expected, rtol=0, atol=atol)
    if g == 0.0:
        np.testing.assert_array_equal(y, early(layer, x))
    if g == 1.0:
        np.testing.assert_array_equal(y, late(layer, x))


def test_gradual_batch_norm_is_identity_at_g1_in_both_modes():
    layer = layers.GradualBatchNormalization(g=1.0)
    for training in (True, False):
        np.testing.assert_array_equal(
            numpy(layer(X_FLAT, training=training)), X_FLAT
        )


def test_gradual_batch_norm_at_g0_normalizes_with_batch_statistics():
    layer = layers.GradualBatchNormalization(g=0.0, epsilon=1e-3)
    np.testing.assert_allclose(
        numpy(layer(X_FLAT, training=True)),
        (X_FLAT - X_FLAT.mean(0)) / np.sqrt(X_FLAT.var(0) + 1e-3),
        atol=1e-5,
    )


def test_gradual_batch_norm_at_g0_uses_moving_statistics_at_inference():
    layer = layers.GradualBatchNormalization(g=0.0, epsilon=1e-3)
    layer.build(X_FLAT.shape)
    layer.batch_norm.moving_mean.assign(np.full(5, 2.0, "float32"))
    layer.batch_norm.moving_variance.assign(np.full(5, 4.0, "float32"))
    np.testing.assert_allclose(
        numpy(layer(X_FLAT, training=False)),
        (X_FLAT - 2.0) / np.sqrt(4.0 + 1e-3),
        atol=1e-6,
    )


@pytest.mark.parametrize("g", [0.0, 1.0])
def test_gradual_dropout_end_points(g):
    rate = 0.6
    layer = layers.GradualDropout(rate, seed=3, g=g)
    x = np.ones((200, 50), "float32")
    np.testing.assert_array_equal(numpy(layer(x, training=False)), x)
    y = numpy(layer(x, training=True))
    if g == 0.0:
        np.testing.assert_array_equal(y, x)
    else:
        dropped = np.mean(y == 0)
        assert abs(dropped - rate) < 0.02
        np.testing.assert_allclose(y[y != 0], 1 / (1 - rate), rtol=1e-6)


def test_gradual_dropout_effective_rate_is_g_times_rate():
    layer = layers.GradualDropout(0.8, seed=1, g=0.5)
    y = numpy(layer(np.ones((300, 100), "float32"), training=True))
    assert abs(np.mean(y == 0) - 0.4) < 0.02
    np.testing.assert_allclose(y[y != 0], 1 / 0.6, rtol=1e-6)


def test_gradual_dropout_noise_shape():
    layer = layers.GradualDropout(0.5, noise_shape=(None, 1), seed=2, g=1.0)
    y = numpy(layer(np.ones((64, 7), "float32"), training=True))
    rows_constant = np.all(y == y[:, :1], axis=1)
    assert rows_constant.all() and 0 < np.mean(y[:, 0] == 0) < 1


@pytest.mark.parametrize("g", [0.0, 0.5, 1.0])
def test_grelu_gradients(g):
    x = np.array([[-2.0, -0.5, 0.5, 3.0]], "float32")
    model = keras.Sequential([keras.Input((4,)), layers.GReLU(g=g)])
    expected = np.where(x >= 0, 1.0, 1.0 - g)
    _, (gradient,) = value_and_gradients(model, x)
    np.testing.assert_allclose(gradient, expected, atol=1e-6)


@pytest.mark.parametrize("g", [0.0, 0.5, 1.0])
def test_gradnet_gradients_reach_the_components_in_use(g):
    layer = _gradnet(g)
    model = keras.Sequential([keras.Input((5,)), layer])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    before = [numpy(v).copy() for v in (layer.early.kernel, layer.late.kernel)]
    model.fit(X_FLAT, np.ones((6, 4), "float32"), epochs=1, verbose=0)
    after = [numpy(v) for v in (layer.early.kernel, layer.late.kernel)]
    early_moved, late_moved = (
        not np.array_equal(b, a) for b, a in zip(before, after, strict=True)
    )
    assert early_moved == (g < 1.0)
    assert late_moved == (g > 0.0)


def test_gradnet_rejects_mismatched_shapes():
    layer = layers.GradNet(keras.layers.Dense(4), keras.layers.Dense(3))
    with pytest.raises(ValueError, match="`early` and `late`.*same shape"):
        keras.Sequential([keras.Input((5,)), layer])


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: layers.GradualDropout(1.5), "`rate`.*Received: rate=1.5"),
        (lambda: layers.GradualDropout(1.0), "`rate`.*Received: rate=1.0"),
        (lambda: layers.GradualDropout(-0.1), "`rate`"),
        (lambda: layers.GReLU(g=1.2), "`g`.*Received: g=1.2"),
        (lambda: layers.GReLU(g=-0.5), "`g`"),
        (lambda: layers.GradualPooling2D(g=float("nan")), "`g`"),
        (lambda: layers.GradNet("relu", keras.layers.ReLU()), "`early`"),
        (lambda: layers.GradNet(keras.layers.ReLU(), None), "`late`"),
        (lambda: layers.GradualConv2D(0), "`kernel_size`"),
        (lambda: layers.GradualConv2D((3, 3, 3)), "`kernel_size`"),
        (lambda: layers.GradualConv1D(3, dilation_rate=0), "`dilation_rate`"),
    ],
)
def test_bad_arguments_raise_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_and_keras_file_round_trip_keep_g(name, tmp_path):
    factory, x, _, _, _ = CASES[name]
    layer = factory(0.0)
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])
    layer.g.assign(0.375)
    config = layer.get_config()
    assert config["g"] == 0.375
    clone = layer.__class__.from_config(config)
    assert float(numpy(clone.g)) == 0.375

    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert float(numpy(loaded.layers[-1].g)) == 0.375
    np.testing.assert_allclose(
        numpy(loaded.predict(x, verbose=0)),
        numpy(model.predict(x, verbose=0)),
        atol=1e-6,
    )


def _model(kind, layer, shape):
    if kind == "sequential":
        return keras.Sequential([keras.Input(shape), layer])
    if kind == "functional":
        inputs = keras.Input(shape)
        return keras.Model(inputs, layer(inputs))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.inner = layer

        def call(self, x, training=None):
            return self.inner(x, training=training)

    return Subclassed()


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
@pytest.mark.parametrize("jit_compile", jit_modes())
@pytest.mark.parametrize("name", sorted(CASES))
def test_trains_in_every_model_kind(name, kind, jit_compile):
    factory, x, _, _, _ = CASES[name]
    model = _model(kind, factory(0.5), x.shape[1:])
    y = numpy(model(x))
    # The loss of the one compiled step is the eager training output's.
    expected = np.mean(np.square(numpy(model(x, training=True)) - (y + 1)))
    model.compile("adam", "mse", jit_compile=jit_compile)
    history = model.fit(x, y + 1, epochs=1, batch_size=len(x), verbose=0)
    np.testing.assert_allclose(history.history["loss"], [expected], rtol=1e-5)


@pytest.mark.skipif(
    BACKEND == "torch", reason="Keras does not support float16 on torch CPU"
)
@pytest.mark.parametrize("name", sorted(CASES))
def test_mixed_float16_policy(name):
    keras.config.set_dtype_policy("mixed_float16")
    factory, x, _, _, _ = CASES[name]
    layer = factory(0.5)
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])
    assert layer.g.dtype == "float32"
    y = model(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    model.compile("adam", "mse")
    history = model.fit(x, numpy(y).astype("float32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


class LayerTestCase(testing.TestCase):
    """Keras's own layer test harness, as Keras tests its built-in layers."""

    def test_grelu(self):
        self.run_layer_test(
            layers.GReLU,
            {"g": 0.5},
            input_shape=(2, 3),
            expected_output_shape=(2, 3),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=1,
        )

    def test_inverse_grelu(self):
        self.run_layer_test(
            layers.InverseGReLU,
            {"g": 0.5},
            input_shape=(2, 3),
            expected_output_shape=(2, 3),
            expected_num_non_trainable_weights=1,
        )

    def test_gradual_dropout(self):
        self.run_layer_test(
            layers.GradualDropout,
            {"rate": 0.5, "seed": 1, "g": 0.5},
            input_shape=(2, 3),
            expected_output_shape=(2, 3),
            expected_num_non_trainable_weights=1,
            expected_num_seed_generators=1,
            supports_masking=True,
        )

    def test_gradual_pooling(self):
        self.run_layer_test(
            layers.GradualPooling2D,
            {"pool_size": 2, "g": 0.5},
            input_shape=(2, 4, 4, 3),
            expected_output_shape=(2, 2, 2, 3),
        )
        self.run_layer_test(
            layers.GradualPooling1D,
            {"pool_size": 2, "padding": "same"},
            input_shape=(2, 5, 3),
            expected_output_shape=(2, 3, 3),
        )

    def test_gradual_batch_normalization(self):
        self.run_layer_test(
            layers.GradualBatchNormalization,
            {"momentum": 0.9, "g": 0.5},
            input_shape=(4, 3),
            expected_output_shape=(4, 3),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=3,
        )

    def test_gradual_conv(self):
        self.run_layer_test(
            layers.GradualConv2D,
            {"kernel_size": 3, "g": 0.5},
            input_shape=(2, 5, 5, 4),
            expected_output_shape=(2, 5, 5, 4),
            expected_num_trainable_weights=2,
        )
        self.run_layer_test(
            layers.GradualConv1D,
            {"kernel_size": 3, "use_bias": False},
            input_shape=(2, 5, 4),
            expected_output_shape=(2, 5, 4),
            expected_num_trainable_weights=1,
        )

    def test_gradual_nin(self):
        self.run_layer_test(
            layers.GradualNiN2D,
            {"filters": 6, "kernel_size": 3, "g": 0.5},
            input_shape=(2, 5, 5, 4),
            expected_output_shape=(2, 3, 3, 6),
            expected_num_trainable_weights=4,
        )

    def test_gradnet(self):
        self.run_layer_test(
            layers.GradNet,
            {
                "early": keras.layers.Dense(4),
                "late": keras.Sequential([keras.layers.Dense(4)]),
                "g": 0.5,
            },
            input_shape=(2, 3),
            expected_output_shape=(2, 4),
            expected_num_trainable_weights=4,
        )
