"""Schedules: small serializable maps from a step or epoch to a value."""

from keras_gradnets.schedules.linear import Linear
from keras_gradnets.schedules.schedule import Schedule
from keras_gradnets.schedules.schedule import deserialize
from keras_gradnets.schedules.schedule import get
from keras_gradnets.schedules.schedule import serialize

__all__ = ["Linear", "Schedule", "deserialize", "get", "serialize"]
