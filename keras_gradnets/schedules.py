"""Public namespace: schedules, small serializable maps from a step to a value.

The generic ramps (`Linear`, `Geometric`, `GrowthWarmup`) live in `core/`,
the family-specific ones in their family's folder (`mollifying/`); this
module re-exports them.
"""

from keras_gradnets.core.geometric import Geometric
from keras_gradnets.core.linear import Linear
from keras_gradnets.core.schedule import Schedule
from keras_gradnets.core.schedule import deserialize
from keras_gradnets.core.schedule import get
from keras_gradnets.core.schedule import serialize
from keras_gradnets.core.warmup import GrowthWarmup
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
