"""finalize: a plain Keras model with the same outputs."""

import os

import keras
import numpy as np
import pytest

import keras_gradnets
from keras_gradnets import layers
from keras_gradnets.core.walk import walk_layers

X_IMG = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype("float32")


def _set_all_g(model, value):
    for layer in walk_layers(model):
        if hasattr(layer, "g"):
            layer.g.assign(value)


def _cnn_layers():
    return [
        layers.GradualNiN2D(6, 3, padding="same"),
        layers.GradualBatchNormalization(),
        layers.GradualConv2D(3, activation="relu"),
        layers.GradualPooling2D(2),
        layers.GReLU(),
        layers.GradualDropout(0.3, seed=1),
        layers.GradNet(
            keras.layers.AveragePooling2D(2),
            keras.Sequential(
                [keras.layers.Conv2D(6, 2, strides=2), layers.GReLU()]
            ),
        ),
        keras.layers.Flatten(),
        keras.layers.Dense(5),
    ]


def _train_briefly(model):
    model.compile("adam", "mse")
    model.fit(X_IMG, np.ones((4, 5), "float32"), epochs=2, verbose=0)


def _class_names(model):
    return [layer.__class__.__name__ for layer in model.layers]


@pytest.mark.parametrize("kind", ["sequential", "functional"])
@pytest.mark.parametrize("g", [0.0, 1.0])
def test_outputs_equal_and_layers_are_plain(kind, g, tmp_path):
    if kind == "sequential":
        model = keras.Sequential([keras.Input((8, 8, 3)), *_cnn_layers()])
    else:
        inputs = keras.Input((8, 8, 3))
        x = inputs
        for layer in _cnn_layers():
            x = layer(x)
        model = keras.Model(inputs, x)
    _train_briefly(model)
    _set_all_g(model, g)

    if g == 0.0:  # Trained, and every g still 0: finalize says so.
        with pytest.warns(UserWarning, match="no scheduler moved g"):
            plain = keras_gradnets.finalize(model)
    else:
        plain = keras_gradnets.finalize(model)

    np.testing.assert_allclose(
        plain.predict(X_IMG, verbose=0),
        model.predict(X_IMG, verbose=0),
        atol=1e-5,
    )
    for layer in plain.layers:
        assert not layer.__class__.__module__.startswith("keras_gradnets")
    # A plain model loads without keras_gradnets' registered objects.
    path = os.path.join(tmp_path, "plain.keras")
    plain.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(X_IMG, verbose=0),
        model.predict(X_IMG, verbose=0),
        atol=1e-5,
    )


def test_sequential_end_point_structure():
    model = keras.Sequential([keras.Input((8, 8, 3)), *_cnn_layers()])
    _set_all_g(model, 1.0)
    names = _class_names(keras_gradnets.finalize(model))
    # NiN -> conv + 1x1 conv, BN -> removed, conv kept, pooling -> max,
    # GReLU -> ReLU, dropout kept, GradNet -> its late block.
    assert names == [
        "Conv2D",
        "Conv2D",
        "Conv2D",
        "MaxPooling2D",
        "ReLU",
        "Dropout",
        "Sequential",
        "Flatten",
        "Dense",
    ]
    _set_all_g(model, 0.0)
    names = _class_names(keras_gradnets.finalize(model))
    assert names == [
        "Conv2D",
        "BatchNormalization",
        "AveragePooling2D",
        "AveragePooling2D",
        "Flatten",
        "Dense",
    ]


def test_finalized_model_shares_no_weights():
    model = keras.Sequential([keras.Input((8, 8, 3)), *_cnn_layers()])
    _set_all_g(model, 1.0)
    plain = keras_gradnets.finalize(model)
    source = {id(v) for v in model.weights}
    assert not source & {id(v) for v in plain.weights}


def test_layer_between_end_points_is_an_error_naming_it():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(3), layers.GReLU(name="mid")]
    )
    model.layers[-1].g.assign(0.5)
    with pytest.raises(ValueError, match="Layer 'mid'.*g=0.5"):
        keras_gradnets.finalize(model)


def test_inverse_grelu_at_g0_is_an_error():
    model = keras.Sequential([keras.Input((3,)), layers.InverseGReLU()])
    with pytest.raises(ValueError, match="absolute value"):
        keras_gradnets.finalize(model)


def test_subclassed_model_is_an_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.act = layers.GReLU(g=1.0)

        def call(self, x):
            return self.act(x)

    net = Net()
    net(np.ones((1, 2)))
    with pytest.raises(ValueError, match="Sequential and functional"):
        keras_gradnets.finalize(net)


def _grelu_model():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(3), layers.GReLU(name="grelu")]
    )
    model.compile("sgd", "mse")
    return model


def test_finalize_warns_when_no_scheduler_moved_g(recwarn):
    model = _grelu_model()
    x = np.ones((4, 3), "float32")
    model.fit(x, x, epochs=1, verbose=0)
    with pytest.warns(UserWarning, match="no scheduler moved g"):
        keras_gradnets.finalize(model)
    scheduled = _grelu_model()
    callbacks = [keras_gradnets.callbacks.GradNetScheduler(tau=1)]
    scheduled.fit(x, x, epochs=2, verbose=0, callbacks=callbacks)
    recwarn.clear()
    keras_gradnets.finalize(scheduled)
    assert not [w for w in recwarn if "no scheduler" in str(w.message)]


def test_mid_annealing_error_names_the_callbacks_that_restore_weights():
    model = _grelu_model()
    model.get_layer("grelu").g.assign(0.4)
    with pytest.raises(ValueError, match="restore_best_weights.*start_from"):
        keras_gradnets.finalize(model)


def test_setting_a_state_attribute_goes_through_its_variable(tmp_path):
    model = _grelu_model()
    grelu = model.get_layer("grelu")
    grelu.g = 1.0
    assert isinstance(grelu.g, keras.Variable)
    x = -np.ones((2, 3), "float32")
    model.layers[0].set_weights([np.eye(3, dtype="float32"), np.zeros(3)])
    np.testing.assert_array_equal(model.predict(x, verbose=0), 0 * x)
    path = str(tmp_path / "model.keras")
    model.save(path)
    assert float(keras.saving.load_model(path).get_layer("grelu").g) == 1.0
    with pytest.raises(ValueError, match="Received: g=2.0"):
        grelu.g = 2.0
    assert float(grelu.g) == 1.0
