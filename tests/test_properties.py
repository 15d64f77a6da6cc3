"""Property tests (Hypothesis): every schedule, every argument check.

Schedules: bounded, monotone in the direction they anneal, exact at their
end points, and equal after a serialization round trip. Argument checks:
any value outside the documented range (or not a finite number) is a
`ValueError` that names the argument and the value; any value inside is
accepted as given.
"""

import itertools
import math

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_gradnets as kg
from keras_gradnets import schedules
from keras_gradnets.callbacks import GradNetScheduler
from keras_gradnets.callbacks import MollifierScheduler

# Derandomized: CI draws the same examples on every run. The fixture that
# resets Keras runs once per test, not per example, which is fine here.
settings.register_profile(
    "keras_gradnets",
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile("keras_gradnets")

positive = st.floats(1e-3, 1e4)
unit = st.floats(0.0, 1.0)
steps = st.lists(st.floats(0.0, 1e5), min_size=2, max_size=20).map(sorted)


def _round_trip(schedule):
    return schedules.deserialize(schedules.serialize(schedule))


def _non_increasing(values):
    return all(b <= a + 1e-12 for a, b in itertools.pairwise(values))


def _non_decreasing(values):
    return all(b >= a - 1e-12 for a, b in itertools.pairwise(values))


# Schedules -------------------------------------------------------------------


@given(tau=positive, start=st.floats(-1e3, 1e3), ts=steps)
def test_linear(tau, start, ts):
    schedule = schedules.Linear(tau, start)
    values = [schedule(t) for t in ts]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert _non_decreasing(values)
    assert schedule(start) == 0.0
    assert schedule(start + tau) == pytest.approx(1.0, abs=1e-6)
    assert schedule(start + 2 * tau) == 1.0
    restored = _round_trip(schedule)
    assert [restored(t) for t in ts] == values


@pytest.mark.parametrize("cls", [schedules.LinearDecay, schedules.SqrtDecay])
@given(decay_steps=positive, p_min=unit, ts=steps)
def test_bounded_decays(cls, decay_steps, p_min, ts):
    schedule = cls(decay_steps, p_min=p_min)
    values = [schedule(t) for t in ts]
    assert all(p_min <= v <= 1.0 for v in values)
    assert _non_increasing(values)
    assert schedule(0) == 1.0
    assert schedule(decay_steps) == pytest.approx(p_min, abs=1e-9)
    assert schedule(10 * decay_steps) == p_min
    restored = _round_trip(schedule)
    assert type(restored) is cls
    assert [restored(t) for t in ts] == values


@given(
    k=positive,
    loss=st.floats(1e-3, 1e3),
    num_layers=st.integers(1, 50),
    ts=steps,
    data=st.data(),
)
def test_mollify_exponential(k, loss, num_layers, ts, data):
    schedule = schedules.MollifyExponential(k)
    layer = data.draw(st.integers(1, num_layers))
    values = [schedule(t, layer, num_layers, loss) for t in ts]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert _non_increasing(values)
    # Lower layers (smaller index) anneal faster (section 7).
    deeper = [schedule(t, num_layers, num_layers, loss) for t in ts]
    assert all(d >= v for d, v in zip(deeper, values, strict=True))
    expected = 1 - math.exp(-k * loss * layer / num_layers)
    assert schedule(0, layer, num_layers, loss) == pytest.approx(expected)
    restored = _round_trip(schedule)
    assert [restored(t, layer, num_layers, loss) for t in ts] == values


@given(start=positive, end=positive, decay_steps=positive, ts=steps)
def test_geometric(start, end, decay_steps, ts):
    schedule = schedules.Geometric(start, end, decay_steps)
    values = [schedule(t) for t in ts]
    low, high = min(start, end), max(start, end)
    assert all(low * (1 - 1e-9) <= v <= high * (1 + 1e-9) for v in values)
    # Monotone from `start` towards `end`, whichever is larger.
    toward = _non_increasing if end <= start else _non_decreasing
    assert toward(values)
    assert schedule(0) == pytest.approx(start)
    assert schedule(decay_steps) == pytest.approx(end)
    assert schedule(2 * decay_steps + 1) == pytest.approx(end)
    restored = _round_trip(schedule)
    assert [restored(t) for t in ts] == values


@settings(max_examples=15)
@given(
    base=st.floats(1e-5, 1.0),
    warmup_steps=st.integers(1, 500),
    restart=st.integers(0, 10_000),
    offsets=st.lists(st.integers(0, 1000), min_size=2, max_size=8).map(sorted),
)
def test_growth_warmup(base, warmup_steps, restart, offsets):
    rate = schedules.GrowthWarmup(base, warmup_steps)
    assert float(rate(restart)) == pytest.approx(base)
    rate.restart(restart)
    values = [float(rate(restart + o)) for o in offsets]
    assert all(0.0 < v <= base * (1 + 1e-6) for v in values)
    assert _non_decreasing(values)
    assert float(rate(restart)) == pytest.approx(base / warmup_steps, rel=1e-5)
    assert float(rate(restart + warmup_steps - 1)) == pytest.approx(
        base, rel=1e-5
    )
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(rate)
    )
    np.testing.assert_allclose(
        [float(restored(restart + o)) for o in offsets], values, rtol=1e-6
    )


# Argument checks -----------------------------------------------------------

# Not finite numbers: the same error for every argument that takes a number.
not_numbers = st.one_of(
    st.none(),
    st.text(max_size=5),
    st.booleans(),
    st.just(float("nan")),
    st.just(float("inf")),
    st.just(float("-inf")),
    st.lists(st.floats(0, 1), min_size=1, max_size=2),
)


outside_unit = st.one_of(st.floats(-1e6, -1e-9), st.floats(1 + 1e-9, 1e6))
not_positive = st.floats(-1e6, 0.0)

# Per argument: a constructor of that one argument, its name, values out of
# its range and values in it.
CHECKS = {
    "Linear.tau": (schedules.Linear, "tau", not_positive, positive),
    "LinearDecay.decay_steps": (
        schedules.LinearDecay,
        "decay_steps",
        not_positive,
        positive,
    ),
    "SqrtDecay.p_min": (
        lambda v: schedules.SqrtDecay(10, p_min=v),
        "p_min",
        outside_unit,
        unit,
    ),
    "MollifyExponential.k": (
        schedules.MollifyExponential,
        "k",
        not_positive,
        positive,
    ),
    "Geometric.end": (
        lambda v: schedules.Geometric(1.0, v, 10),
        "end",
        not_positive,
        positive,
    ),
    "GrowthWarmup.warmup_steps": (
        lambda v: schedules.GrowthWarmup(1e-3, v),
        "warmup_steps",
        st.one_of(st.integers(-1000, 0), st.floats(1.5, 10.5)),
        st.integers(1, 10_000),
    ),
    "GradNetScheduler.tau": (
        lambda v: GradNetScheduler(tau=v),
        "tau",
        not_positive,
        positive,
    ),
    "DropInScheduler.start_step": (
        lambda v: kg.callbacks.DropInScheduler(10, start_step=v),
        "start_step",
        st.floats(-1e6, -1e-9),
        st.floats(0.0, 1e6),
    ),
    "TemperatureScheduler.start": (
        lambda v: kg.callbacks.TemperatureScheduler(start=v, end=1e-6),
        "start",
        not_positive,
        positive,
    ),
    "GReLU.g": (lambda v: kg.layers.GReLU(g=v), "g", outside_unit, unit),
    "GradualDropout.rate": (
        kg.layers.GradualDropout,
        "rate",
        st.one_of(st.floats(-1e6, -1e-9), st.floats(1.0, 1e6)),
        st.floats(0.0, 0.999),
    ),
    "MollifiedDense.p": (
        lambda v: kg.layers.MollifiedDense(4, p=v),
        "p",
        outside_unit,
        unit,
    ),
    "ConcreteWidth.gamma": (
        lambda v: kg.layers.ConcreteWidth(gamma=v),
        "gamma",
        st.floats(-1e6, -1e-9),
        st.floats(0.0, 1e6),
    ),
    "DynamicDense.chunks": (
        lambda v: kg.layers.DynamicDense(64, chunks=v),
        "chunks",
        st.one_of(st.integers(-100, 0), st.integers(65, 1000)),
        st.integers(1, 64),
    ),
}


@pytest.mark.parametrize("name", sorted(CHECKS))
@given(data=st.data())
def test_values_outside_the_range_are_errors_that_name_them(name, data):
    build, argument, outside, _ = CHECKS[name]
    value = data.draw(st.one_of(not_numbers, outside))
    with pytest.raises(ValueError, match=f"`{argument}`") as error:
        build(value)
    assert f"{argument}={value!r}" in str(error.value)


@pytest.mark.parametrize("name", sorted(CHECKS))
@given(data=st.data())
def test_values_in_the_range_are_accepted(name, data):
    build, _, _, inside = CHECKS[name]
    build(data.draw(inside))


# A schedule may return a bool: True and False are 1 and 0, a hard switch
# such as `lambda epoch: epoch >= 5`.
not_values = not_numbers.filter(lambda value: not isinstance(value, bool))


@given(value=st.one_of(not_values, outside_unit), t=st.integers(0, 10**6))
def test_a_schedule_value_out_of_range_names_schedule_step_and_value(value, t):
    scheduler = GradNetScheduler(schedule=lambda step: value)
    with pytest.raises(ValueError, match="The schedule") as error:
        scheduler.check(value, t)
    assert f"returned g={value!r} at epoch {t}." in str(error.value)


@given(value=unit, t=st.integers(0, 10**6))
def test_a_schedule_value_in_range_is_used_as_given(value, t):
    scheduler = MollifierScheduler(lambda step: value)
    assert scheduler.check(value, t) == value
    assert scheduler.check(value >= 0.5, t) == float(value >= 0.5)
