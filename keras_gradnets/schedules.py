"""Public namespace: schedules, small serializable maps from a step to a value.

Each family keeps its schedules in its own folder (`gradnets/`,
`mollifying/`, `dynamic_capacity/`, `architecture_search/`); this module
re-exports them.
"""

from keras_gradnets.architecture_search.geometric import Geometric
from keras_gradnets.core.schedule import Schedule
from keras_gradnets.core.schedule import deserialize
from keras_gradnets.core.schedule import get
from keras_gradnets.core.schedule import serialize
from keras_gradnets.dynamic_capacity.warmup import GrowthWarmup
from keras_gradnets.gradnets.linear import Linear
from keras_gradnets.mollifying.schedules import LayerSchedule
from keras_gradnets.mollifying.schedules import LinearDecay
from keras_gradnets.mollifying.schedules import MollifyExponential
from keras_gradnets.mollifying.schedules import SqrtDecay

__all__ = [
    "Geometric",
    "GrowthWarmup",
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
