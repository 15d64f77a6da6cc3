"""A keras-hub backbone whose feed-forward widths grow, keeping its class."""

import sys

import keras

from keras_gradnets.core.backbone import BackboneMixin
from keras_gradnets.core.backbone import mixed_from_config
from keras_gradnets.core.sublayers import finalized_weights
from keras_gradnets.core.walk import walk_layers
from keras_gradnets.dynamic_capacity.dynamic_feed_forward import (
    KERAS_HUB_DENSES,
)
from keras_gradnets.dynamic_capacity.dynamic_feed_forward import KERAS_HUB_GATE
from keras_gradnets.dynamic_capacity.dynamic_feed_forward import (
    DynamicFeedForward,
)
from keras_gradnets.dynamic_capacity.dynamic_feed_forward import (
    feed_forward_options,
)


@keras.saving.register_keras_serializable(package="keras_gradnets")
class DynamicBackbone(BackboneMixin):
    """Mixed into a keras-hub backbone class: its feed-forward widths grow.

    `keras_gradnets.growing_backbone(backbone, chunks)` returns an instance
    of `Dynamic<Class>`, a subclass of the backbone's own class
    (`DynamicGPT2Backbone` is a `GPT2Backbone`), so the task models that
    take the backbone accept it (`keras_hub.models.GPT2CausalLM(
    backbone=...)`), in `fit` and in `generate`. Its constructor builds the
    backbone from its config, then makes the feed-forward network of every
    transformer block dynamic in place, as `DynamicFeedForward` does to the
    block it wraps: the intermediate layer (and the gate of a gated
    network) a `DynamicDense` of `chunks` chunks, the first
    `initial_chunks` active, read by a `DynamicDense` that reads only the
    active units. Growth keeps the function (the rows that read new units
    start at zero), and `CapacityGrowth` grows the blocks in `fit`. It
    saves as `.keras`, and `keras_gradnets.finalize` gives back the
    original class with `intermediate_dim` set to the grown width, which
    must then be the same in every block.

    Args:
        feed_forward: Dict, the options of `DynamicFeedForward` for every
            block: `chunks`, `initial_chunks`, `growth_init`, `seed`,
            `dense_names` and `gate_name`. The blocks take seeds `seed`,
            `seed + 3`, ... in model order.
        **config: The backbone's config.
    """

    def __init__(self, *, feed_forward, **config):
        super().__init__(**config)
        self.feed_forward_options = dict(feed_forward)
        for wrapper in self._feed_forwards():
            wrapper.build(None)

    def _blocks(self):
        """The layers that hold a layer under `dense_names[0]`: the
        blocks, whose feed-forward `Dense` layers their wrapper checks."""
        name = self.feed_forward_options["dense_names"][0]
        return [
            layer
            for layer in walk_layers(self)
            if layer is not self
            and isinstance(getattr(layer, name, None), keras.layers.Layer)
        ]

    def _feed_forwards(self):
        """A `DynamicFeedForward` around each block, not called: its
        `build` makes the block's feed-forward network dynamic in place,
        and its `finalize_block` maps that change back."""
        options = dict(self.feed_forward_options)
        seed = options.pop("seed")
        blocks = self._blocks()
        if not blocks:
            raise ValueError(
                f"growing_backbone found no layer in {self.name} "
                f"({self.backbone_class.__name__}) that holds a layer at "
                f"`{options['dense_names'][0]}`. Pass the "
                "attribute names of its blocks' feed-forward `Dense` layers "
                "as `dense_names`."
            )
        return [
            DynamicFeedForward(
                block, seed=seed + 3 * i, name=block.name, **options
            )
            for i, block in enumerate(blocks)
        ]

    def finalized_layers(self):
        """The backbone as its own class, at the blocks' grown width, with
        its weights."""
        wrappers = self._feed_forwards()
        widths = [w.intermediate_dense.active_units for w in wrappers]
        if len(set(widths)) > 1:
            raise ValueError(
                f"Cannot finalize {self.name} to a "
                f"{self.backbone_class.__name__}: its blocks' feed-forward "
                f"widths are {widths}, and the class has one "
                "`intermediate_dim` for every block. Grow every block "
                "together (`CapacityGrowth(select='all')`, the default), or "
                "grow them one by one until each has the same width."
            )
        config = self.backbone_config()
        weights = finalized_weights(self.weights, wrappers, config)
        plain = self.backbone_class.from_config(config)
        plain.set_weights(weights)
        return [plain]

    def get_config(self):
        options = self.feed_forward_options
        return {**super().get_config(), "feed_forward": options}


def growing_backbone(
    backbone,
    chunks,
    initial_chunks=1,
    growth_init="function_preserving",
    seed=None,
    dense_names=KERAS_HUB_DENSES,
    gate_name=KERAS_HUB_GATE,
):
    """Returns a new keras-hub backbone of the same class whose blocks'
    feed-forward width grows during `fit`.

    The new backbone is made from `backbone`'s config, with new weights,
    and is an instance of a subclass of its class (see `DynamicBackbone`):
    build the task model around it as around `backbone`. In every
    transformer block the feed-forward network starts at `initial_chunks`
    of `chunks` chunks of its width (`intermediate_dim`) and grows, the
    function kept, as `DynamicFeedForward` makes it grow (MSG, Yao et al.
    2024, section 3, "FFN"): by `CapacityGrowth` inside `fit`, or by hand
    with `grow()` on each block's intermediate `DynamicDense` after
    `link_dynamic_layers(task)`. `keras_gradnets.finalize(task.backbone)`
    gives a backbone of the original class with `intermediate_dim` at the
    grown width, which takes the weights of the active units.

    For a Sequential or functional model of your own, wrap its blocks in
    `DynamicFeedForward` with `keras_gradnets.replace_layers` instead.

    Args:
        backbone: A keras-hub `Backbone` whose transformer blocks keep
            their feed-forward `Dense` layers under `dense_names` (GPT-2,
            BERT, Mistral, Qwen, ... with the defaults). Left as it was.
        chunks: Integer >= 1, at most the feed-forward width: in how many
            chunks each block's width grows.
        initial_chunks: Integer in `[1, chunks]`, the chunks active at
            first. Defaults to 1.
        growth_init: `"function_preserving"` or `"random"`, as for
            `DynamicFeedForward`. Defaults to `"function_preserving"`.
        seed: Integer >= 0, seeds what each growth draws. Defaults to a
            seed drawn here, saved in the config.
        dense_names: Pair of attribute names of the blocks' feed-forward
            `Dense` layers. Defaults to keras-hub's names.
        gate_name: Attribute name of the blocks' gate `Dense` layer, or
            `None`. Defaults to keras-hub's name (Llama, Mistral, Qwen).

    Returns:
        A new backbone, an instance of a subclass of `backbone`'s class.

    Raises:
        ValueError: for a model that is not a keras-hub backbone (a task:
            pass its backbone), for arguments out of their ranges, and for
            a backbone with no block holding `dense_names`.

    Example:

    ```python
    backbone = keras_gradnets.growing_backbone(
        keras_hub.models.GPT2Backbone(vocabulary_size=256, num_layers=4,
            num_heads=4, hidden_dim=64, intermediate_dim=256,
            max_sequence_length=128),
        chunks=4)
    lm = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    lm.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    lm.fit(x, y, epochs=12, callbacks=[
        keras_gradnets.callbacks.CapacityGrowth(grow_at=[0.25, 0.5, 0.75],
                                                freeze=False)])
    plain = keras_gradnets.finalize(lm.backbone)  # intermediate_dim=256
    ```
    """
    _require_backbone(backbone)
    feed_forward = feed_forward_options(
        chunks, initial_chunks, growth_init, seed, dense_names, gate_name
    )
    config = {**backbone.get_config(), "feed_forward": feed_forward}
    return mixed_from_config(DynamicBackbone, type(backbone), config)


def _require_backbone(model):
    hub = sys.modules.get("keras_hub")
    if hub is not None and isinstance(model, hub.models.Task):
        raise ValueError(
            f"growing_backbone takes a keras-hub backbone, not the task "
            f"'{model.name}' ({model.__class__.__name__}). Pass its backbone "
            "and build the task around the result: `task.__class__("
            "backbone=keras_gradnets.growing_backbone(task.backbone, "
            "chunks), preprocessor=task.preprocessor)`."
        )
    if hub is None or not isinstance(model, hub.models.Backbone):
        raise ValueError(
            "growing_backbone takes a keras-hub backbone. Received: "
            f"{model.__class__.__name__} '{getattr(model, 'name', model)}'. "
            "For a Sequential or functional model, wrap its blocks in "
            "`keras_gradnets.layers.DynamicFeedForward` with "
            "`keras_gradnets.replace_layers`."
        )
