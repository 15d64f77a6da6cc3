import keras
import numpy as np
import pytest

from keras_gradnets import schedules


def test_linear_is_the_gradnets_schedule():
    schedule = schedules.Linear(tau=5)
    values = [schedule(t) for t in range(8)]
    np.testing.assert_allclose(values, [min(t / 5, 1) for t in range(8)])
    assert schedule(0) == 0.0 and schedule(5) == 1.0 and schedule(100) == 1.0


def test_linear_start_delays_the_ramp():
    schedule = schedules.Linear(tau=4, start_step=2)
    assert [schedule(t) for t in range(8)] == [
        0.0,
        0.0,
        0.0,
        0.25,
        0.5,
        0.75,
        1.0,
        1.0,
    ]


def test_linear_is_monotone_and_bounded():
    schedule = schedules.Linear(tau=7.5, start_step=-3)
    values = np.array([schedule(t) for t in range(-10, 20)])
    assert np.all(np.diff(values) >= 0)
    assert values.min() == 0.0 and values.max() == 1.0


@pytest.mark.parametrize("tau", [0, -1, float("nan"), float("inf"), "5", None])
def test_linear_rejects_bad_tau(tau):
    with pytest.raises(ValueError, match="`tau`.*Received: tau="):
        schedules.Linear(tau)


def test_linear_serializes():
    schedule = schedules.Linear(tau=3, start_step=1)
    config = schedules.serialize(schedule)
    restored = schedules.deserialize(config)
    assert isinstance(restored, schedules.Linear)
    assert restored.get_config() == {"tau": 3, "start_step": 1}
    assert keras.saving.deserialize_keras_object(config)(2) == 1 / 3


def test_get_accepts_callables_and_keras_schedules():
    lr_schedule = keras.optimizers.schedules.PolynomialDecay(1.0, 10, 0.0)
    assert schedules.get(lr_schedule) is lr_schedule
    fn = lambda t: 0.5  # noqa: E731
    assert schedules.get(fn) is fn
    restored = schedules.get(schedules.serialize(schedules.Linear(2)))
    assert restored(1) == 0.5
    with pytest.raises(ValueError, match="`schedule`"):
        schedules.get(3)
