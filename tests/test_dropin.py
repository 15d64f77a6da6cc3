"""DropIn, Resize and DropInScheduler."""

import os

import keras
import numpy as np
import pytest
from keras import ops

import keras_gradnets
from keras_gradnets import layers
from keras_gradnets.callbacks import DropInScheduler
from keras_gradnets.callbacks import GradNetScheduler
from tests.helpers import BatchRecorder
from tests.helpers import LastBatchMean
from tests.helpers import jit_modes
from tests.helpers import value_and_gradients

RNG = np.random.default_rng(0)
SKIP = RNG.normal(size=(64, 50)).astype("float32")
NEW = RNG.normal(size=(64, 50)).astype("float32") + 10.0


def _np(x):
    return ops.convert_to_numpy(x)


def _share_of_new(out):
    return float(np.mean(np.abs(_np(out) - NEW) < 1e-6))


# The layer ---------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_end_points_are_exact(training):
    for g, expected in ((0.0, SKIP), (1.0, NEW)):
        out = layers.DropIn(g=g)([SKIP, NEW], training=training)
        np.testing.assert_array_equal(_np(out), expected)
    out = layers.DropIn("regularizing", rate=0.0)([SKIP, NEW], training=True)
    np.testing.assert_array_equal(_np(out), NEW)


@pytest.mark.parametrize(
    "layer, share",
    [
        (layers.DropIn(g=0.3, seed=1), 0.3),
        (layers.DropIn("regularizing", rate=0.25, seed=2), 0.75),
    ],
)
def test_share_of_new_units_is_its_probability(layer, share):
    out = _np(layer([SKIP, NEW], training=True))
    from_new = np.abs(out - NEW) < 1e-6
    from_skip = np.abs(out - SKIP) < 1e-6
    assert (from_new | from_skip).all()
    standard_error = np.sqrt(share * (1 - share) / SKIP.size)
    assert abs(from_new.mean() - share) < 4 * standard_error
    inference = _np(layer([SKIP, NEW], training=False))
    np.testing.assert_allclose(
        inference, (1 - share) * SKIP + share * NEW, rtol=1e-5
    )


def test_noise_shape_chooses_whole_channels():
    skip = np.zeros((4, 5, 5, 16), "float32")
    new = np.ones((4, 5, 5, 16), "float32")
    layer = layers.DropIn(g=0.5, noise_shape=(None, 1, 1, None), seed=3)
    out = _np(layer([skip, new], training=True))
    assert (out == out[:, :1, :1, :]).all()
    assert 0 < out.mean() < 1


def test_gradients_reach_each_path_only_through_its_units():
    layer = layers.DropIn(g=0.5, seed=4)
    out, (skip_grad, new_grad) = value_and_gradients(
        lambda skip, new: layer([skip, new], training=True), SKIP, NEW
    )
    took_new = np.abs(out - NEW) < 1e-6
    np.testing.assert_array_equal(new_grad, took_new.astype("float32"))
    np.testing.assert_array_equal(skip_grad, (~took_new).astype("float32"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="regularizing", rate=1.0), "`rate`.*Received: rate=1.0"),
        (dict(mode="regularizing", rate=-0.1), "`rate`"),
        (dict(mode="regularizing"), "`rate`"),
        (dict(mode="dropout"), "`mode`"),
        (dict(rate=0.5), "`rate`.*mode='gradual'"),
        (dict(g=1.5), "`g`"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layers.DropIn(**kwargs)


def test_different_shapes_are_an_error_that_suggests_resize():
    with pytest.raises(ValueError, match="same shape.*Resize"):
        layers.DropIn()([np.ones((2, 3)), np.ones((2, 4))])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dropin_length=0), "`dropin_length`"),
        (dict(dropin_length=-5), "`dropin_length`"),
        (dict(dropin_length=10, start_step=-1), "`start_step`"),
    ],
)
def test_bad_scheduler_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DropInScheduler(**kwargs)


def test_mixed_precision_keeps_g_float32():
    keras.config.set_dtype_policy("mixed_float16")
    layer = layers.DropIn(g=0.5)
    out = layer([SKIP, NEW], training=False)
    assert layer.g.dtype == "float32"
    assert keras.backend.standardize_dtype(out.dtype) == "float16"


# Resize -------------------------------------------------------------------


def test_resize_images_and_channels():
    x = RNG.normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        _np(layers.Resize(8, 8)(x)), x, atol=1e-6
    )  # same size: the input
    out = _np(layers.Resize(4, 4, channels=5)(x))
    assert out.shape == (2, 4, 4, 5)
    assert (out[..., 3:] == 0).all()
    np.testing.assert_array_equal(_np(layers.Resize(channels=2)(x)), x[..., :2])
    features = RNG.normal(size=(3, 6)).astype("float32")
    padded = _np(layers.Resize(channels=9)(features))
    np.testing.assert_array_equal(padded[:, :6], features)
    assert (padded[:, 6:] == 0).all()
    np.testing.assert_array_equal(
        _np(layers.Resize(channels=4)(features)), features[:, :4]
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "at least one"),
        (dict(height=0), "`height`"),
        (dict(channels=2.5), "`channels`"),
        (dict(height=4, interpolation="cubic"), "`interpolation`"),
    ],
)
def test_bad_resize_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layers.Resize(**kwargs)


def test_resize_of_features_needs_channels_only():
    with pytest.raises(ValueError, match="2D inputs"):
        layers.Resize(height=4)(np.ones((2, 3)))


# The scheduler and the compiled step -----------------------------------------


def _probe(jit_compile="auto", units=100):
    """A model whose mean output is the share of units taken from `new`."""
    inputs = keras.Input((units,))
    skip = keras.layers.Dense(
        units, use_bias=False, kernel_initializer="zeros", name="skip"
    )(inputs)
    new = keras.layers.Identity(name="new")(inputs)
    outputs = layers.DropIn(name="dropin")([skip, new])
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.SGD(0.0),
        "mse",
        metrics=[LastBatchMean()],
        jit_compile=jit_compile,
    )
    return model


@pytest.mark.parametrize("jit_compile", jit_modes())
def test_compiled_step_uses_g_of_the_step(jit_compile):
    model = _probe(jit_compile)
    recorder = BatchRecorder("last_mean")
    history = model.fit(
        np.ones((96, 100), "float32"),
        np.ones((96, 100), "float32"),
        batch_size=32,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[DropInScheduler(dropin_length=6, start_step=1), recorder],
    )
    expected = [min(max((t - 1) / 6, 0), 1) for t in range(9)]
    for share, g in zip(recorder.values, expected, strict=True):
        standard_error = np.sqrt(g * (1 - g) / 3200)
        assert abs(share - g) <= 4 * standard_error
    assert history.history["dropin"] == pytest.approx(
        [expected[2], expected[5], expected[8]]
    )


def test_scheduler_drives_gradual_dropin_only():
    model = _probe()
    model.fit(
        np.ones((4, 100)),
        np.ones((4, 100)),
        verbose=0,
        callbacks=[DropInScheduler(dropin_length=1)],
    )
    with pytest.raises(ValueError, match="found no GradualLayer"):
        model.fit(
            np.ones((4, 100)),
            np.ones((4, 100)),
            verbose=0,
            callbacks=[GradNetScheduler(tau=2)],
        )
    inputs = keras.Input((3,))
    regular = layers.DropIn("regularizing", rate=0.5)([inputs, inputs])
    model = keras.Model(inputs, regular)
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="found no gradual DropIn"):
        model.fit(
            np.ones((4, 3)),
            np.ones((4, 3)),
            verbose=0,
            callbacks=[DropInScheduler(dropin_length=1)],
        )


def test_resume_after_save_follows_the_same_g_sequence(tmp_path):
    x, y = np.ones((64, 100), "float32"), np.ones((64, 100), "float32")
    kwargs = dict(batch_size=16, shuffle=False, verbose=0)
    full = _probe().fit(
        x, y, epochs=4, callbacks=[DropInScheduler(10)], **kwargs
    )
    model = _probe()
    model.fit(x, y, epochs=2, callbacks=[DropInScheduler(10)], **kwargs)
    path = os.path.join(tmp_path, "dropin.keras")
    model.save(path)
    loaded = keras.saving.load_model(
        path, custom_objects={"LastBatchMean": LastBatchMean}
    )
    assert float(_np(loaded.get_layer("dropin").g)) == pytest.approx(0.7)
    resumed = loaded.fit(
        x,
        y,
        epochs=4,
        initial_epoch=2,
        callbacks=[DropInScheduler(10)],
        **kwargs,
    )
    assert resumed.history["dropin"] == pytest.approx(
        full.history["dropin"][2:]
    )


# finalize ------------------------------------------------------------------


def _deep(mode="gradual", **kwargs):
    inputs = keras.Input((6,))
    h = keras.layers.Dense(6, activation="relu", name="h")(inputs)
    skip = layers.Resize(channels=8, name="resize")(h)
    new = keras.layers.Dense(8, activation="relu", name="new1")(h)
    new = keras.layers.Dense(8, activation="relu", name="new2")(new)
    mixed = layers.DropIn(mode, name="dropin", **kwargs)([skip, new])
    outputs = keras.layers.Dense(2, name="out")(mixed)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "kwargs, gone",
    [
        (dict(g=1.0), {"resize"}),
        (dict(g=0.0), {"new1", "new2"}),
        (dict(mode="regularizing", rate=0.3), set()),
    ],
)
def test_finalize_keeps_outputs_and_drops_the_unused_branch(kwargs, gone):
    model = _deep(**kwargs)
    x = RNG.normal(size=(16, 6)).astype("float32")
    plain = keras_gradnets.finalize(model)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )
    names = {layer.name for layer in plain.layers}
    assert not gone & names
    assert not any(
        isinstance(layer, layers.DropIn) for layer in plain._flatten_layers()
    )
    if gone:
        assert len(plain.layers) < len(model.layers)


def test_finalize_between_end_points_is_an_error():
    with pytest.raises(ValueError, match="'dropin'.*g=0.5"):
        keras_gradnets.finalize(_deep(g=0.5))


from keras.src import testing  # noqa: E402


class DropInLayerTestCase(testing.TestCase):
    def test_dropin(self):
        self.run_layer_test(
            layers.DropIn,
            init_kwargs={"g": 0.5, "seed": 1},
            input_shape=[(2, 3), (2, 3)],
            expected_output_shape=(2, 3),
            expected_num_non_trainable_weights=1,
            expected_num_seed_generators=1,
            run_training_check=False,
            supports_masking=False,
        )

    def test_resize(self):
        self.run_layer_test(
            layers.Resize,
            init_kwargs={"height": 4, "width": 6, "channels": 2},
            input_shape=(2, 8, 8, 3),
            expected_output_shape=(2, 4, 6, 2),
            expected_num_trainable_weights=0,
            supports_masking=False,
        )
