"""keras-hub backbones changed inside, keeping their class.

A keras-hub backbone's class builds its graph from constructor arguments,
and its task models read its attributes (`GPT2CausalLM` reads
`backbone.token_embedding`), so a changed backbone must stay an instance
of that class. A mixin (`GradualBackbone`, `DynamicBackbone`) subclasses
`BackboneMixin`; `mixed_class(mixin, base)` is the subclass of the
backbone class `base` with the mixin first, whose constructor builds the
backbone from its config and then changes the layers inside.
"""

import importlib

import keras

# (mixin, backbone class) -> their subclass.
_SUBCLASSES = {}


class BackboneMixin:
    """Base of the mixins that change a keras-hub backbone inside.

    It saves the backbone class with the backbone's config, so that the
    registered mixin's `from_config` makes the subclass again from a
    `.keras` file, in a fresh process too.
    """

    @property
    def backbone_class(self):
        """The keras-hub class this backbone is a changed version of."""
        return self.__class__.__bases__[1]

    def backbone_config(self):
        """The backbone's own config, without the mixin's options."""
        return self.backbone_class.get_config(self)

    def get_config(self):
        base = self.backbone_class
        return {
            **super().get_config(),
            "backbone_class": {
                "module": base.__module__,
                "class_name": base.__name__,
            },
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        spec = config.pop("backbone_class")
        module = importlib.import_module(spec["module"])
        mixin = next(c for c in cls.__mro__ if BackboneMixin in c.__bases__)
        return mixed_from_config(
            mixin, getattr(module, spec["class_name"]), config
        )


def mixed_class(mixin, base):
    """The subclass of the backbone class `base` that mixes in `mixin`
    (`Gradual<Class>` for `GradualBackbone`), registered for `.keras`
    files under the mixin's name."""
    key = (mixin, base)
    if key not in _SUBCLASSES:
        prefix = mixin.__name__.removesuffix("Backbone")
        subclass = type(
            f"{prefix}{base.__name__}", (mixin, base), {"__module__": __name__}
        )
        _SUBCLASSES[key] = keras.saving.register_keras_serializable(
            package="keras_gradnets", name=mixin.__name__
        )(subclass)
    return _SUBCLASSES[key]


def mixed_from_config(mixin, base, config):
    """A new instance of `mixed_class(mixin, base)` made by the backbone
    class's own `from_config`, from `config`: the backbone's config and the
    mixin's options."""
    return base.from_config.__func__(mixed_class(mixin, base), config)
