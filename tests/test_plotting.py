"""keras_gradnets.plotting: what the figure shows is what the logs hold."""

import keras
import matplotlib
import numpy as np
import pytest

import keras_gradnets as kg
from keras_gradnets.plotting import is_state_key
from keras_gradnets.plotting import plot_history

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_draws_the_metrics_and_the_state_of_a_real_fit():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), kg.layers.GReLU()]
    )
    model.compile("sgd", "mse")
    history = model.fit(
        np.ones((8, 3)),
        np.ones((8, 4)),
        epochs=4,
        verbose=0,
        callbacks=[kg.callbacks.GradNetScheduler(tau=2)],
    )
    ax, state_ax = plot_history(history)
    loss = _lines(ax)["loss"]
    np.testing.assert_array_equal(loss.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_allclose(loss.get_ydata(), history.history["loss"])
    g = _lines(state_ax)["g"]
    np.testing.assert_allclose(g.get_ydata(), [0, 0.5, 1, 1])
    assert g.get_linestyle() == ":"
    assert state_ax is not ax and state_ax.bbox.bounds == ax.bbox.bounds


def test_finds_every_logged_state_and_marks_the_growths():
    logs = {
        "loss": [3.0, 2.0, 1.5, 1.4, 1.0],
        "val_loss": [3.1, 2.2, 1.6, 1.5, 1.2],
        "p_dense": [1.0, 0.8, 0.6, 0.4, 0.2],
        "p_dense_1": [1.0, 0.9, 0.8, 0.7, 0.6],
        "capacity": [0.25, 0.25, 0.5, 0.5, 1.0],
        "growths": [0, 0, 1, 1, 3],
        "expected_depth": [2.0, 1.7, 1.4, 1.1, 0.8],
    }
    ax, state_ax = plot_history(logs, metrics=["loss", "val_loss"], label="a")
    assert set(_lines(state_ax)) == {
        "a: p_dense",
        "a: p_dense_1",
        "a: capacity",
    }
    growth_lines = [
        line.get_xdata()[0]
        for line in ax.get_lines()
        if line.get_linestyle() == "--"
    ]
    assert growth_lines == [3, 5]
    legend = [text.get_text() for text in state_ax.get_legend().get_texts()]
    assert legend[:3] == ["a: loss", "a: val_loss", "a: growth"]


def test_runs_on_the_same_axes_share_one_legend():
    plain = {"loss": [1.1, 0.6]}
    first = {"loss": [1.0, 0.5], "temperature": [1.0, 0.01]}
    second = {"loss": [1.2, 0.7], "temperature": [1.0, 0.1]}
    ax, state_ax = plot_history(plain, label="plain")
    assert state_ax is None and ax.get_legend() is not None
    ax, state_ax = plot_history(first, ax=ax, label="a", state_yscale="log")
    again = plot_history(second, ax=ax, state_ax=state_ax, label="b")
    assert again == (ax, state_ax)
    assert state_ax.get_yscale() == "log"
    assert set(_lines(state_ax)) == {"a: temperature", "b: temperature"}
    # One legend, on the top axes, for the lines of every run.
    assert ax.get_legend() is None
    texts = [text.get_text() for text in state_ax.get_legend().get_texts()]
    assert texts == [
        "plain: loss",
        "a: loss",
        "b: loss",
        "a: temperature",
        "b: temperature",
    ]


def test_no_state_no_second_axis():
    ax, state_ax = plot_history({"loss": [1.0, 0.5], "accuracy": [0.1, 0.2]})
    assert state_ax is None
    assert set(_lines(ax)) == {"loss"}
    _, state_ax = plot_history({"loss": [1.0], "g": [0.0]}, states=[])
    assert state_ax is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"metrics": "val_los"}, r"`metrics` .*\['val_los'\].*'loss'"),
        ({"states": ["q"]}, r"`states` .*\['q'\]"),
    ],
)
def test_keys_missing_from_the_logs_are_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_history({"loss": [1.0], "g": [0.0]}, **kwargs)


def test_history_must_be_a_history_or_its_dict():
    with pytest.raises(ValueError, match="`history` must be"):
        plot_history([1.0, 0.5])


@pytest.mark.parametrize(
    "key, expected",
    [
        ("g", True),
        ("g_grelu_3", True),
        ("dropin", True),
        ("p", True),
        ("p_dense", True),
        ("capacity_first", True),
        ("temperature", True),
        ("precision", False),
        ("growths", False),
        ("mollified_depth", False),
        ("expected_depth", False),
        ("loss", False),
    ],
)
def test_state_keys_follow_the_log_rule(key, expected):
    assert is_state_key(key) is expected
