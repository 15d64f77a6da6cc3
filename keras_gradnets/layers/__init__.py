"""Layers whose architecture changes during training."""

from keras_gradnets.layers.dynamic_conv import DynamicConv2D
from keras_gradnets.layers.dynamic_dense import DynamicDense
from keras_gradnets.layers.dynamic_layer import DynamicLayer
from keras_gradnets.layers.dynamic_links import link_dynamic_layers
from keras_gradnets.layers.gradnet import GradNet
from keras_gradnets.layers.gradual_batch_normalization import (
    GradualBatchNormalization,
)
from keras_gradnets.layers.gradual_conv import GradualConv1D
from keras_gradnets.layers.gradual_conv import GradualConv2D
from keras_gradnets.layers.gradual_dropout import GradualDropout
from keras_gradnets.layers.gradual_layer import GradualLayer
from keras_gradnets.layers.gradual_nin import GradualNiN2D
from keras_gradnets.layers.gradual_pooling import GradualPooling1D
from keras_gradnets.layers.gradual_pooling import GradualPooling2D
from keras_gradnets.layers.grelu import GReLU
from keras_gradnets.layers.grelu import InverseGReLU
from keras_gradnets.layers.mollified import MollifiedActivation
from keras_gradnets.layers.mollified import MollifiedDense
from keras_gradnets.layers.mollified_rnn import MollifiedGRUCell
from keras_gradnets.layers.mollified_rnn import MollifiedLSTMCell

__all__ = [
    "DynamicConv2D",
    "DynamicDense",
    "DynamicLayer",
    "GReLU",
    "GradNet",
    "GradualBatchNormalization",
    "GradualConv1D",
    "GradualConv2D",
    "GradualDropout",
    "GradualLayer",
    "GradualNiN2D",
    "GradualPooling1D",
    "GradualPooling2D",
    "InverseGReLU",
    "MollifiedActivation",
    "MollifiedDense",
    "MollifiedGRUCell",
    "MollifiedLSTMCell",
    "link_dynamic_layers",
]
