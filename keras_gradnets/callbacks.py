"""Public namespace: callbacks that change a network's architecture in `fit`.

Each family keeps its callbacks in its own folder; this module re-exports
them. `StateScheduler` is the base class to derive your own scheduler from.
"""

from keras_gradnets.architecture_search.temperature_scheduler import (
    TemperatureScheduler,
)
from keras_gradnets.core.scheduler import StateScheduler
from keras_gradnets.dropin.dropin_scheduler import DropInScheduler
from keras_gradnets.dynamic_capacity.capacity_growth import CapacityGrowth
from keras_gradnets.gradnets.gradnet_scheduler import GradNetScheduler
from keras_gradnets.mollifying.mollifier_scheduler import MollifierScheduler

__all__ = [
    "CapacityGrowth",
    "DropInScheduler",
    "GradNetScheduler",
    "MollifierScheduler",
    "StateScheduler",
    "TemperatureScheduler",
]
