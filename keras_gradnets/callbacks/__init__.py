"""Callbacks that change a network's architecture during `fit`."""

from keras_gradnets.callbacks.gradnet_scheduler import GradNetScheduler

__all__ = ["GradNetScheduler"]
