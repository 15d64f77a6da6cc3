"""Public namespace: layers whose architecture changes during training.

Each family keeps its layers in its own folder; this module re-exports them.
"""

from keras_gradnets.architecture_search.concrete_depth import ConcreteDepth
from keras_gradnets.architecture_search.concrete_width import ConcreteWidth
from keras_gradnets.architecture_search.heads import attach_heads
from keras_gradnets.core.state import StatefulLayer
from keras_gradnets.dropin.dropin import DropIn
from keras_gradnets.dropin.resize import Resize
from keras_gradnets.dynamic_capacity.dynamic_attention_heads import (
    DynamicAttentionHeads,
)
from keras_gradnets.dynamic_capacity.dynamic_backbone import DynamicBackbone
from keras_gradnets.dynamic_capacity.dynamic_conv import DynamicConv2D
from keras_gradnets.dynamic_capacity.dynamic_dense import DynamicDense
from keras_gradnets.dynamic_capacity.dynamic_feed_forward import (
    DynamicFeedForward,
)
from keras_gradnets.dynamic_capacity.dynamic_layer import DynamicLayer
from keras_gradnets.dynamic_capacity.dynamic_stack import DynamicStack
from keras_gradnets.dynamic_capacity.gradmax import initialize_gradmax
from keras_gradnets.dynamic_capacity.linking import link_dynamic_layers
from keras_gradnets.gradnets.affine_spatial_transformer import (
    AffineSpatialTransformer,
)
from keras_gradnets.gradnets.gradnet import GradNet
from keras_gradnets.gradnets.gradual_activation import GradualActivation
from keras_gradnets.gradnets.gradual_backbone import GradualBackbone
from keras_gradnets.gradnets.gradual_batch_normalization import (
    GradualBatchNormalization,
)
from keras_gradnets.gradnets.gradual_conv import GradualConv1D
from keras_gradnets.gradnets.gradual_conv import GradualConv2D
from keras_gradnets.gradnets.gradual_dropout import GradualDropout
from keras_gradnets.gradnets.gradual_layer import GradualLayer
from keras_gradnets.gradnets.gradual_nin import GradualNiN2D
from keras_gradnets.gradnets.gradual_pooling import GradualPooling1D
from keras_gradnets.gradnets.gradual_pooling import GradualPooling2D
from keras_gradnets.gradnets.gradual_spatial_transformer import (
    GradualSpatialTransformer,
)
from keras_gradnets.gradnets.gradual_sublayers import GradualSublayers
from keras_gradnets.gradnets.grelu import GReLU
from keras_gradnets.gradnets.grelu import InverseGReLU
from keras_gradnets.mollifying.mollified import MollifiedActivation
from keras_gradnets.mollifying.mollified import MollifiedDense
from keras_gradnets.mollifying.mollified_rnn import MollifiedGRUCell
from keras_gradnets.mollifying.mollified_rnn import MollifiedLSTMCell

__all__ = [
    "AffineSpatialTransformer",
    "ConcreteDepth",
    "ConcreteWidth",
    "DropIn",
    "DynamicAttentionHeads",
    "DynamicBackbone",
    "DynamicConv2D",
    "DynamicDense",
    "DynamicFeedForward",
    "DynamicLayer",
    "DynamicStack",
    "GReLU",
    "GradNet",
    "GradualActivation",
    "GradualBackbone",
    "GradualBatchNormalization",
    "GradualConv1D",
    "GradualConv2D",
    "GradualDropout",
    "GradualLayer",
    "GradualNiN2D",
    "GradualPooling1D",
    "GradualPooling2D",
    "GradualSublayers",
    "GradualSpatialTransformer",
    "InverseGReLU",
    "MollifiedActivation",
    "MollifiedDense",
    "MollifiedGRUCell",
    "MollifiedLSTMCell",
    "Resize",
    "StatefulLayer",
    "attach_heads",
    "initialize_gradmax",
    "link_dynamic_layers",
]
