"""A keras-hub backbone whose transformer blocks anneal, keeping its class."""

import keras

from keras_gradnets.core.backbone import BackboneMixin
from keras_gradnets.core.backbone import mixed_from_config
from keras_gradnets.gradnets.gradual_sublayers import gradualize_in_place
from keras_gradnets.gradnets.gradual_sublayers import gradualize_sublayers
from keras_gradnets.gradnets.gradual_sublayers import plain_weights
from keras_gradnets.gradnets.gradual_sublayers import require_late


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GradualBackbone(BackboneMixin):
    """Mixed into a keras-hub backbone class: its blocks anneal inside.

    `gradualize(backbone)` returns an instance of `Gradual<Class>`, a
    subclass of the backbone's own class (`GradualGPT2Backbone` is a
    `GPT2Backbone`), so the task models that take the backbone accept it
    (`keras_hub.models.GPT2CausalLM(backbone=...)`). Its constructor builds
    the backbone from its config, then puts gradual twins in place of the
    dropouts and activations inside every layer of its graph (see
    `GradualSublayers`): at `g=0` each transformer block's feed-forward
    path is linear and dropout-free, at `g=1` it is the original. The
    backbone's class builds its graph, so the graph's own layers stay:
    the activations of its `Activation` layers and those fused into its
    `Dense` and `Conv*` layers (a `ResNetBackbone`'s ReLUs, an
    `EfficientNetBackbone`'s swish) anneal in place, computed by a twin,
    except bounded ones (possible gates) and those whose output is the
    backbone's; its `ReLU` and `Dropout` layers (an embedding dropout) are
    kept. It saves as `.keras`, and `keras_gradnets.finalize` gives back
    the original class at `g=1`.

    Args:
        gradualize: Dict, the options of `gradualize_sublayers`:
            `{"activations": bool, "dropout": bool}`.
        **config: The backbone's config.
    """

    def __init__(self, *, gradualize, **config):
        super().__init__(**config)
        self.gradualize_options = dict(gradualize)
        # The task reads the backbone's outputs: the activations of the
        # layers that make them are kept.
        self.output_layer_names = tuple(
            x._keras_history.operation.name
            for x in keras.tree.flatten(self.outputs)
        )
        changes = []
        for layer in self.layers:
            changes += gradualize_sublayers(layer, **gradualize)
            if layer.name not in self.output_layer_names:
                changes += gradualize_in_place(layer, gradualize["activations"])
        self.changes = tuple(changes)

    def finalized_layers(self):
        """The backbone as its own class at `g=1`, with its weights."""
        require_late(self, self)
        plain = self.backbone_class.from_config(self.backbone_config())
        plain.set_weights(plain_weights(self))
        return [plain]

    def get_config(self):
        return {**super().get_config(), "gradualize": self.gradualize_options}


def gradual_backbone(backbone, gradualize):
    """A new `Gradual<Class>` of the keras-hub `backbone`, from its config
    and `gradualize` (the options of `gradualize_sublayers`), with new
    weights: set the backbone's with `weights_with_states`."""
    config = {**backbone.get_config(), "gradualize": gradualize}
    return mixed_from_config(GradualBackbone, type(backbone), config)
