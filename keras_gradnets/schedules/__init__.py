"""Schedules: small serializable maps from a step or epoch to a value."""

from keras_gradnets.schedules.linear import Linear
from keras_gradnets.schedules.mollify_schedules import LayerSchedule
from keras_gradnets.schedules.mollify_schedules import LinearDecay
from keras_gradnets.schedules.mollify_schedules import MollifyExponential
from keras_gradnets.schedules.mollify_schedules import SqrtDecay
from keras_gradnets.schedules.schedule import Schedule
from keras_gradnets.schedules.schedule import deserialize
from keras_gradnets.schedules.schedule import get
from keras_gradnets.schedules.schedule import serialize

__all__ = [
    "LayerSchedule",
    "Linear",
    "LinearDecay",
    "MollifyExponential",
    "Schedule",
    "SqrtDecay",
    "deserialize",
    "get",
    "serialize",
]
