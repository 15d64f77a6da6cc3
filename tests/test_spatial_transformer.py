"""AffineSpatialTransformer, its sampler, and GradualSpatialTransformer."""

import os

import keras
import numpy as np
import pytest
from keras import ops
from keras.src import testing

import keras_gradnets
from keras_gradnets import layers
from keras_gradnets.callbacks import GradNetScheduler
from keras_gradnets.gradnets.affine_spatial_transformer import bilinear_sample

RNG = np.random.default_rng(0)
IMAGES = RNG.normal(size=(3, 12, 12, 2)).astype("float32")


def _np(x):
    return ops.convert_to_numpy(x)


def _localization():
    return keras.Sequential(
        [
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(6),
        ]
    )


def _theta(*rows, batch=3):
    return np.tile(np.array(rows, "float32").reshape(1, 6), (batch, 1))


def test_identity_reproduces_the_input():
    out = bilinear_sample(IMAGES, _theta(1, 0, 0, 0, 1, 0), (12, 12))
    np.testing.assert_allclose(_np(out), IMAGES, atol=1e-5)
    layer = layers.AffineSpatialTransformer((12, 12), _localization())
    np.testing.assert_allclose(_np(layer(IMAGES)), IMAGES, atol=1e-5)


def test_sampler_follows_the_transform():
    # A half-size zoom on the centre, a shift by one pixel, a flip.
    zoom = _np(bilinear_sample(IMAGES, _theta(0.5, 0, 0, 0, 0.5, 0), (12, 12)))
    assert zoom.shape == (3, 12, 12, 2)
    shift = _np(
        bilinear_sample(IMAGES, _theta(1, 0, 2 / 11, 0, 1, 0), (12, 12))
    )
    np.testing.assert_allclose(shift[:, :, :-1], IMAGES[:, :, 1:], atol=1e-5)
    np.testing.assert_array_equal(shift[:, :, -1], 0)  # outside: 0
    flip = _np(bilinear_sample(IMAGES, _theta(-1, 0, 0, 0, 1, 0), (12, 12)))
    np.testing.assert_allclose(flip, IMAGES[:, :, ::-1], atol=1e-5)
    half = _np(bilinear_sample(IMAGES, _theta(1, 0, 1 / 11, 0, 1, 0), (12, 12)))
    np.testing.assert_allclose(
        half[:, :, :-1],
        (IMAGES[:, :, :-1] + IMAGES[:, :, 1:]) / 2,
        atol=1e-5,
    )


def test_gradients_reach_the_localization_network():
    x = RNG.uniform(size=(16, 12, 12, 1)).astype("float32")
    inputs = keras.Input((12, 12, 1))
    glimpse = layers.AffineSpatialTransformer((6, 6), _localization())(inputs)
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(glimpse))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    localization = model.layers[1].localization
    before = [_np(w) for w in localization.trainable_weights]
    model.fit(x, RNG.normal(size=(16, 1)), epochs=1, verbose=0)
    after = [_np(w) for w in localization.trainable_weights]
    changes = [np.abs(a - b).max() for a, b in zip(after, before, strict=True)]
    assert all(np.isfinite(c) for c in changes)
    # The last Dense(6) starts at zero kernel: its kernel and bias move.
    assert changes[-1] > 0 and changes[-2] > 0


def test_gradual_end_points_and_finalize():
    gradual = layers.GradualSpatialTransformer((4, 4), _localization())
    pooled = keras.layers.AveragePooling2D(3)(IMAGES)
    np.testing.assert_allclose(_np(gradual(IMAGES)), _np(pooled), atol=1e-6)
    gradual.g.assign(1.0)
    stn = bilinear_sample(IMAGES, _theta(1, 0, 0, 0, 1, 0), (4, 4))
    np.testing.assert_allclose(_np(gradual(IMAGES)), _np(stn), atol=1e-5)
    for g, kind in ((0.0, keras.layers.AveragePooling2D), (1.0, None)):
        model = keras.Sequential(
            [
                keras.Input((12, 12, 2)),
                layers.GradualSpatialTransformer(
                    (4, 4), _localization(), g=g, name="stn"
                ),
                keras.layers.Flatten(),
                keras.layers.Dense(3),
            ]
        )
        plain = keras_gradnets.finalize(model)
        np.testing.assert_allclose(
            plain.predict(IMAGES, verbose=0),
            model.predict(IMAGES, verbose=0),
            atol=1e-5,
        )
        expected = kind or layers.AffineSpatialTransformer
        assert type(plain.layers[0]) is expected


def test_save_resume_and_finalize_at_g_1(tmp_path):
    x = RNG.uniform(size=(32, 12, 12, 1)).astype("float32")
    y = RNG.integers(0, 3, size=32)

    def build():
        keras.utils.set_random_seed(3)
        model = keras.Sequential(
            [
                keras.Input((12, 12, 1)),
                layers.GradualSpatialTransformer(
                    (6, 6), _localization(), name="stn"
                ),
                keras.layers.Flatten(),
                keras.layers.Dense(3),
            ]
        )
        model.compile("adam", "sparse_categorical_crossentropy")
        return model

    kwargs = dict(batch_size=8, shuffle=False, verbose=0)
    full = build()
    full.fit(x, y, epochs=4, callbacks=[GradNetScheduler(tau=2)], **kwargs)
    model = build()
    model.fit(x, y, epochs=2, callbacks=[GradNetScheduler(tau=2)], **kwargs)
    path = os.path.join(tmp_path, "stn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("stn").state_value("g") == 0.5
    loaded.fit(
        x,
        y,
        epochs=4,
        initial_epoch=2,
        callbacks=[GradNetScheduler(tau=2)],
        **kwargs,
    )
    for a, b in zip(loaded.weights, full.weights, strict=True):
        np.testing.assert_allclose(_np(a), _np(b), atol=1e-5)
    assert loaded.get_layer("stn").state_value("g") == 1.0
    plain = keras_gradnets.finalize(loaded)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), loaded.predict(x, verbose=0), atol=1e-5
    )


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: layers.AffineSpatialTransformer((0, 4), _localization()),
            "`output_size`",
        ),
        (
            lambda: layers.AffineSpatialTransformer(4, _localization()),
            "`output_size`",
        ),
        (
            lambda: layers.GradualSpatialTransformer((2.5, 4), _localization()),
            "`output_size`",
        ),
        (
            lambda: layers.AffineSpatialTransformer((4, 4), "conv"),
            "`localization`",
        ),
    ],
)
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_localization_must_output_6_values():
    localization = keras.Sequential(
        [keras.layers.Flatten(), keras.layers.Dense(4)]
    )
    layer = layers.AffineSpatialTransformer((4, 4), localization)
    with pytest.raises(ValueError, match="`localization`.*Dense\\(6\\)"):
        layer(IMAGES)
    with pytest.raises(ValueError, match="multiples of output_size"):
        layers.GradualSpatialTransformer((5, 5), _localization())(IMAGES)


class LayerTest(testing.TestCase):
    def test_affine_spatial_transformer(self):
        self.run_layer_test(
            layers.AffineSpatialTransformer,
            init_kwargs={
                "output_size": (4, 4),
                "localization": _localization(),
            },
            input_shape=(2, 8, 8, 1),
            expected_output_shape=(2, 4, 4, 1),
            expected_num_trainable_weights=6,
            supports_masking=False,
        )

    def test_gradual_spatial_transformer(self):
        self.run_layer_test(
            layers.GradualSpatialTransformer,
            init_kwargs={
                "output_size": (4, 4),
                "localization": _localization(),
                "g": 0.5,
            },
            input_shape=(2, 8, 8, 1),
            expected_output_shape=(2, 4, 4, 1),
            expected_num_trainable_weights=6,
            expected_num_non_trainable_weights=1,
            supports_masking=False,
        )
