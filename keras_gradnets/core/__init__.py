"""What every paper family shares: the state protocol, the base scheduling
callback, the finalize protocol and the argument checks."""

from keras_gradnets.core.scheduler import StateScheduler
from keras_gradnets.core.state import StatefulLayer

__all__ = ["StateScheduler", "StatefulLayer"]
