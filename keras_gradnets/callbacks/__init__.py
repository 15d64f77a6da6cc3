"""Callbacks that change a network's architecture during `fit`."""

from keras_gradnets.callbacks.capacity_growth import CapacityGrowth
from keras_gradnets.callbacks.gradnet_scheduler import GradNetScheduler
from keras_gradnets.callbacks.mollifier_scheduler import MollifierScheduler

__all__ = ["CapacityGrowth", "GradNetScheduler", "MollifierScheduler"]
