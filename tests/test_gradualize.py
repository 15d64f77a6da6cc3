"""gradualize, GradualActivation and the ReLU arguments of GReLU."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_gradnets
from keras_gradnets import layers
from keras_gradnets.callbacks import GradNetScheduler

RNG = np.random.default_rng(0)


def _np(x):
    return ops.convert_to_numpy(x)


def _mlp():
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="d1"),
            keras.layers.Dropout(0.4, name="drop"),
            keras.layers.Dense(8, name="d2"),
            keras.layers.Activation("tanh", name="tanh"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ],
        name="mlp",
    )


def _resnet():
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(
        8, 3, padding="same", activation="relu", name="stem"
    )(inputs)
    y = keras.layers.Conv2D(8, 3, padding="same", name="c1")(h)
    y = keras.layers.BatchNormalization(name="bn")(y)
    y = keras.layers.ReLU(max_value=6.0, name="relu6")(y)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="gelu", name="c2")(
        y
    )
    h = keras.layers.Add(name="add")([h, y])
    h = keras.layers.ReLU(negative_slope=0.1, threshold=0.2, name="leaky")(h)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(3, name="out")(h)
    return keras.Model(inputs, outputs, name="resnet")


def _nested():
    inputs = keras.Input((6,))
    h = _mlp()(inputs)
    h = keras.layers.Dense(4, activation="silu", name="top")(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(h))


def _trained(model, x):
    model.compile("adam", "mse")
    y = RNG.normal(size=(len(x), *model.output_shape[1:]))
    model.fit(x, y, epochs=1, verbose=0)
    return model


def _set_g(model, value):
    for layer in model._flatten_layers():
        if isinstance(layer, layers.GradualLayer):
            layer.g.assign(value)


def _layer_map(model):
    return {
        layer.name: layer
        for layer in model._flatten_layers(include_self=False)
        if not isinstance(layer, keras.layers.InputLayer)
    }


def _config(layer):
    """The config without the name; for a model, its layers' names (without
    the split activations): the layers are compared one by one."""
    if isinstance(layer, keras.Model):
        return sorted(
            name
            for name in _layer_map(layer)
            if not name.endswith("_activation")
        )
    config = dict(layer.get_config())
    config.pop("name")
    return config


CASES = {
    "mlp": (_mlp, (16, 6)),
    "resnet": (_resnet, (16, 8, 8, 3)),
    "nested": (_nested, (16, 6)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_gives_back_the_model(case):
    build, shape = CASES[case]
    x = RNG.normal(size=shape).astype("float32")
    model = _trained(build(), x)
    gradual = keras_gradnets.gradualize(model, pooling=True)
    gradual_layers = _layer_map(gradual)
    for name, layer in _layer_map(model).items():
        if isinstance(layer, keras.Model):
            continue  # Its layers are compared one by one.
        for a, b in zip(
            layer.get_weights(),
            gradual_layers[name].get_weights(),
            strict=False,
        ):
            np.testing.assert_array_equal(a, b)
    _set_g(gradual, 1.0)
    plain = keras_gradnets.finalize(gradual)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )
    original, final = _layer_map(model), _layer_map(plain)
    split = {n for n in final if n.endswith("_activation")}
    assert set(final) - split == set(original)
    for name, layer in original.items():
        new = final[name]
        assert type(new) is type(layer), name
        config = _config(layer)
        if f"{name}_activation" in split:
            assert config.pop("activation") != "linear"
            assert _config(new).pop("activation") == "linear"
            config["activation"] = "linear"
        assert _config(new) == config, name
    assert not [
        x
        for x in plain._flatten_layers()
        if isinstance(x, (layers.StatefulLayer,))
    ]


def test_gradual_twins_start_at_g_0():
    model = keras_gradnets.gradualize(_resnet(), pooling=True)
    twins = {
        name: type(layer).__name__
        for name, layer in _layer_map(model).items()
        if isinstance(layer, layers.GradualLayer)
    }
    assert twins == {
        "stem_activation": "GReLU",
        "relu6": "GReLU",
        "c2_activation": "GradualActivation",
        "leaky": "GReLU",
        "pool": "GradualPooling2D",
    }
    assert model.get_layer("relu6").max_value == 6.0
    assert model.get_layer("leaky").threshold == pytest.approx(0.2)
    for layer in model.layers:
        if isinstance(layer, layers.GradualLayer):
            assert layer.state_value("g") == 0.0
    default = keras_gradnets.gradualize(_mlp())
    assert isinstance(default.get_layer("drop"), layers.GradualDropout)
    assert default.get_layer("drop").rate == pytest.approx(0.4)
    assert type(default.get_layer("out")) is keras.layers.Dense


def test_options_choose_what_changes():
    model = _trained(_resnet(), RNG.normal(size=(4, 8, 8, 3)))
    gradual = keras_gradnets.gradualize(
        model, activations=False, batch_norm=True
    )
    kinds = {type(x).__name__ for x in gradual.layers}
    assert "GradualBatchNormalization" in kinds
    assert not {"GReLU", "GradualActivation", "GradualPooling2D"} & kinds
    bn = gradual.get_layer("bn")
    for a, b in zip(
        model.get_layer("bn").get_weights(),
        bn.batch_norm.get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    x = RNG.normal(size=(4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        gradual.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )
    _set_g(gradual, 1.0)
    plain = keras_gradnets.finalize(gradual)
    assert "bn" not in _layer_map(plain)


def test_gradualized_model_trains_with_the_scheduler():
    x = RNG.normal(size=(32, 6)).astype("float32")
    model = keras_gradnets.gradualize(_mlp())
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(
        x,
        RNG.integers(0, 3, size=32),
        epochs=3,
        verbose=0,
        callbacks=[GradNetScheduler(tau=2)],
    )
    assert history.history["g"] == [0.0, 0.5, 1.0]


@pytest.mark.parametrize(
    "option", ["activations", "dropout", "pooling", "batch_norm", "verbose"]
)
def test_options_must_be_booleans(option):
    with pytest.raises(ValueError, match=f"`{option}`.*True or False"):
        keras_gradnets.gradualize(_mlp(), **{option: 1})


def test_subclassed_and_unbuilt_models_are_errors():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2, activation="relu")

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.ones((1, 3)))
    with pytest.raises(ValueError, match="only Sequential and functional"):
        keras_gradnets.gradualize(net)
    with pytest.raises(ValueError, match="not built"):
        keras_gradnets.gradualize(keras.Sequential([keras.layers.Dense(2)]))


# The layers ----------------------------------------------------------------


@pytest.mark.parametrize("activation", ["gelu", "tanh", "silu", "sigmoid"])
def test_gradual_activation_end_points_are_exact(activation):
    x = RNG.normal(size=(8, 5)).astype("float32")
    at_0 = layers.GradualActivation(activation, g=0.0)(x)
    np.testing.assert_array_equal(_np(at_0), x)
    at_1 = layers.GradualActivation(activation, g=1.0)(x)
    expected = keras.layers.Activation(activation)(x)
    np.testing.assert_array_equal(_np(at_1), _np(expected))
    half = layers.GradualActivation(activation, g=0.5)(x)
    np.testing.assert_allclose(
        _np(half), 0.5 * x + 0.5 * _np(expected), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_value": 6.0},
        {"negative_slope": 0.1},
        {"threshold": 0.5},
        {"max_value": 1.0, "negative_slope": 0.2, "threshold": 0.1},
    ],
)
def test_grelu_reaches_the_relu_it_was_given(kwargs):
    x = np.linspace(-3, 8, 23, dtype="float32")[None]
    relu = keras.layers.ReLU(**kwargs)
    np.testing.assert_allclose(
        _np(layers.GReLU(g=1.0, **kwargs)(x)), _np(relu(x)), atol=1e-6
    )
    np.testing.assert_array_equal(_np(layers.GReLU(**kwargs)(x)), x)
    layer = layers.GReLU(g=1.0, name="r", **kwargs)
    model = keras.Sequential([keras.Input((23,)), layer])
    (final,) = keras_gradnets.finalize(model).layers
    assert type(final) is keras.layers.ReLU and final.name == "r"
    expected = relu.get_config()
    for key in ("max_value", "negative_slope", "threshold"):
        assert final.get_config()[key] == expected[key]
    copy = layers.GReLU.from_config(layer.get_config())
    assert copy.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"max_value": -1.0}, "max_value"),
        ({"negative_slope": -0.5}, "negative_slope"),
        ({"threshold": float("nan")}, "threshold"),
    ],
)
def test_bad_grelu_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        layers.GReLU(**kwargs)
