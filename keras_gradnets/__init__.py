"""keras_gradnets: networks that change their architecture during `fit`."""

from keras_gradnets import analysis
from keras_gradnets import callbacks
from keras_gradnets import layers
from keras_gradnets import plotting
from keras_gradnets import schedules
from keras_gradnets.dynamic_capacity.dynamic_backbone import growing_backbone
from keras_gradnets.finalize import finalize
from keras_gradnets.gradnets.gradualize import gradualize
from keras_gradnets.insert import insert_after
from keras_gradnets.insert import replace_layers

__version__ = "0.3.0"

__all__ = [
    "analysis",
    "callbacks",
    "finalize",
    "gradualize",
    "growing_backbone",
    "insert_after",
    "replace_layers",
    "layers",
    "plotting",
    "schedules",
    "__version__",
]
