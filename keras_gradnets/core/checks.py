"""Argument checks shared by layers, schedules and callbacks.

Every check raises `ValueError` in the Keras style: it names the argument,
the accepted range and the value received. Nothing is clipped.
"""

import math
import numbers


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def describe_range(
    low=None, high=None, low_open=False, high_open=False, integer=False
):
    """Words for the accepted range, as in "a number in [0, 1]"."""
    word = "integer" if integer else "number"
    kind = f"an {word}" if integer else f"a {word}"
    if low is not None and high is not None:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        return f"{kind} in {left}{low}, {high}{right}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high}"
    return f"a finite {word}"


def check_number(
    name,
    value,
    low=None,
    high=None,
    low_open=False,
    high_open=False,
    integer=False,
):
    """Returns `value` if it is a finite number inside the given range.

    Args:
        name: Argument name used in the error message.
        value: The received value.
        low, high: Optional bounds.
        low_open, high_open: Whether the bound itself is excluded.
        integer: Whether only integers are accepted.
    """
    ok = _is_real(value) and math.isfinite(value)
    if ok and integer:
        ok = isinstance(value, numbers.Integral)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        expected = describe_range(low, high, low_open, high_open, integer)
        raise ValueError(
            f"Invalid value received for argument `{name}`. "
            f"Expected {expected}. Received: {name}={value!r}"
        )
    return value


def check_unit_interval(name, value):
    """Returns `value` as a float if it lies in [0, 1]."""
    return float(check_number(name, value, 0, 1))


def check_choice(name, value, choices):
    """Returns `value` if it is one of `choices`."""
    if value not in choices:
        raise ValueError(
            f"Invalid value received for argument `{name}`. "
            f"Expected one of {sorted(choices)}. Received: {name}={value!r}"
        )
    return value


def check_sizes(name, value, rank, scalar=True):
    """Returns `value` as a tuple of `rank` positive ints, or raises.

    Args:
        name: Argument name used in the error message.
        value: A tuple or list of `rank` positive integers, or (with
            `scalar`) one positive integer used for every axis.
        rank: The number of axes.
        scalar: Whether one integer stands for all axes.
    """
    if scalar and isinstance(value, numbers.Integral):
        values = (value,) * rank
    elif isinstance(value, (list, tuple)):
        values = tuple(value)
    else:
        values = ()
    if len(values) != rank or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
        for v in values
    ):
        one = "a positive integer or " if scalar else ""
        raise ValueError(
            f"Invalid value received for argument `{name}`. Expected {one}"
            f"a tuple of {rank} positive integers. Received: {name}={value!r}"
        )
    return tuple(int(v) for v in values)
