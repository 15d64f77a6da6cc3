"""One meaning per name: renamed arguments, values, log keys and messages.

Old spellings keep working for one release, with a `DeprecationWarning`.
"""

import keras
import numpy as np
import pytest

import keras_gradnets as kg
from keras_gradnets import layers
from keras_gradnets import schedules


def test_linear_start_step_and_its_deprecated_spelling():
    new = schedules.Linear(tau=4, start_step=2)
    with pytest.warns(DeprecationWarning, match="`start_step=...`"):
        old = schedules.Linear(tau=4, start=2)
    assert [old(t) for t in range(8)] == [new(t) for t in range(8)]
    assert new.get_config() == {"tau": 4, "start_step": 2}
    # A config saved before the rename loads, with the warning.
    with pytest.warns(DeprecationWarning):
        loaded = schedules.Linear.from_config({"tau": 4, "start": 2})
    assert loaded.get_config() == new.get_config()


def test_both_spellings_at_once_is_an_error():
    with pytest.raises(ValueError, match="both `start_step=1`.*`start=2`"):
        schedules.Linear(tau=4, start_step=1, start=2)
    with pytest.raises(ValueError, match="both `start_step=1`"):
        kg.callbacks.DropInScheduler(5, start_step=1, start=2)


def test_dropin_scheduler_start_step_and_its_deprecated_spelling():
    with pytest.warns(DeprecationWarning, match="DropInScheduler"):
        old = kg.callbacks.DropInScheduler(5, start=3)
    new = kg.callbacks.DropInScheduler(5, start_step=3)
    assert old.start_step == new.start_step == 3
    assert [old.schedule(t) for t in range(10)] == [
        new.schedule(t) for t in range(10)
    ]


def test_grelu_negative_slope_is_a_value_like_keras_relu():
    layer = layers.GReLU(negative_slope=0.1, g=0.5)
    relu = keras.layers.ReLU(negative_slope=0.1)
    assert layer.negative_slope == relu.negative_slope == pytest.approx(0.1)
    assert layer.current_negative_slope() == pytest.approx(1 - 0.5 * 0.9)
    assert layer.get_config()["negative_slope"] == pytest.approx(0.1)
    assert type(layer.get_config()["negative_slope"]) is float
    layer.g.assign(1.0)
    assert layer.current_negative_slope() == pytest.approx(0.1)
    inverse = layers.InverseGReLU(g=0.25)
    assert inverse.current_negative_slope() == pytest.approx(-0.75)


def test_grelu_negative_slope_call_is_deprecated():
    layer = layers.GReLU(g=0.25)
    with pytest.warns(DeprecationWarning, match="current_negative_slope"):
        slope = layer.negative_slope()
    assert slope == pytest.approx(0.75)


@pytest.mark.parametrize(
    "layer",
    [
        layers.GReLU(),
        layers.GradualDropout(0.5),
        layers.GradualActivation("tanh"),
    ],
    ids=["GReLU", "GradualDropout", "GradualActivation"],
)
def test_identity_at_g0_leaves_the_finalized_model(layer):
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), layer, keras.layers.Dense(2)]
    )
    plain = kg.finalize(model)
    assert [type(x).__name__ for x in plain.layers] == ["Dense", "Dense"]
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )


def test_mollifier_and_temperature_schedulers_log_different_keys():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4, activation="relu")(inputs)
    width = layers.ConcreteWidth(seed=1)
    hidden = keras.layers.Dense(4)(width(hidden))
    hidden = layers.MollifiedDense(4, activation="tanh")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    history = model.fit(
        x,
        x[:, :1],
        epochs=1,
        verbose=0,
        callbacks=[
            kg.callbacks.MollifierScheduler(schedules.LinearDecay(4)),
            kg.callbacks.TemperatureScheduler(decay_steps=4),
        ],
    )
    assert "mollified_depth" in history.history
    assert f"expected_width_{width.name}" in history.history


def test_messages_name_public_classes_only():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    for callback in (
        kg.callbacks.MollifierScheduler(schedules.LinearDecay(2)),
        kg.callbacks.TemperatureScheduler(decay_steps=2),
    ):
        with pytest.raises(ValueError) as info:
            model.fit(np.ones((2, 2)), np.ones((2, 1)), callbacks=[callback])
        message = str(info.value)
        assert "MollifiedLayer" not in message
        assert "ConcreteLayer" not in message
        assert "keras_gradnets.core" not in message
