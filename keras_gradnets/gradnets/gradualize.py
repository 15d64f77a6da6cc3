"""gradualize: GradNets for a model that already exists."""

import collections
import sys
import warnings

import keras

from keras_gradnets.core.processes import local_to_this_process
from keras_gradnets.core.rewrite import Rewriter
from keras_gradnets.core.walk import walk_layers
from keras_gradnets.gradnets.gradual_backbone import gradual_backbone
from keras_gradnets.gradnets.gradual_batch_normalization import (
    GradualBatchNormalization,
)
from keras_gradnets.gradnets.gradual_pooling import GradualPooling1D
from keras_gradnets.gradnets.gradual_pooling import GradualPooling2D
from keras_gradnets.gradnets.gradual_sublayers import GradualSublayers
from keras_gradnets.gradnets.gradual_sublayers import converts_inside
from keras_gradnets.gradnets.gradual_sublayers import sublayers
from keras_gradnets.gradnets.gradual_sublayers import weights_with_states
from keras_gradnets.gradnets.twins import FUSED
from keras_gradnets.gradnets.twins import activation_twin
from keras_gradnets.gradnets.twins import dropout_twin
from keras_gradnets.gradnets.twins import has_convertible_activation
from keras_gradnets.gradnets.twins import is_bounded

_POOLING = {
    keras.layers.MaxPooling1D: GradualPooling1D,
    keras.layers.MaxPooling2D: GradualPooling2D,
}


def _is_activation(layer):
    return isinstance(
        layer, (keras.layers.ReLU, keras.layers.Activation, FUSED)
    )


def _is_multiply(operation, inputs):
    """A `Multiply` layer or `*` op node multiplying several tensors."""
    return type(operation).__name__ == "Multiply" and len(inputs) > 1


class _Gradualizer(Rewriter):
    def __init__(self, activations, dropout, pooling, batch_norm):
        super().__init__()
        self.activations = activations
        self.dropout = dropout
        self.pooling = pooling
        self.batch_norm = batch_norm
        # "ReLU -> GReLU" -> count; why a layer was kept -> its names;
        # layers with convertible sub-layers that cannot be reached.
        self.converted = collections.Counter()
        self.kept = collections.defaultdict(list)
        self.unreached = []
        # GradualSublayers and keras-hub backbones made.
        self.wrappers = []
        self.backbones = []

    def _is_gate(self, layer):
        """Whether `layer` is a bounded activation (a sigmoid, a hard
        sigmoid, a ReLU with a `max_value`) whose output multiplies another
        tensor (squeeze-and-excitation, MobileNetV3's hard sigmoid, GLU),
        through op nodes that read it alone (`x * 0.5`, `x + 3.0`)."""
        if not is_bounded(layer):
            return False
        frontier, seen = list(self.readers(layer)), set()
        while frontier:
            node = frontier.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            inputs = node.arguments.keras_tensors
            if _is_multiply(node.operation, inputs):
                return True
            if len(inputs) == 1 and not isinstance(
                node.operation, keras.layers.Layer
            ):
                for tensor in node.outputs:
                    frontier.extend(self.readers_of_tensor(tensor))
        return False

    def _activation_twins(self, layer):
        """The twins of `layer`'s activation, or None to keep it."""
        if not has_convertible_activation(layer):
            return None
        if None in self.readers(layer):
            self.kept["output activations"].append(layer.name)
            return None
        if self._is_gate(layer):
            self.kept["gates"].append(layer.name)
            return None
        if isinstance(layer, FUSED):
            linear = self.copy(layer, activation="linear")
            return [linear, activation_twin(layer)]
        return [activation_twin(layer)]

    def _convertible(self, layer):
        """Whether `layer` is of a kind this gradualizer converts."""
        kind = type(layer)
        return (
            (self.activations and has_convertible_activation(layer))
            or (self.dropout and kind is keras.layers.Dropout)
            or (self.pooling and kind in _POOLING)
            or (self.batch_norm and kind is keras.layers.BatchNormalization)
        )

    def replace(self, layer):
        """The twins of `layer`, recorded for the summary."""
        if isinstance(layer, keras.Model):
            return self._backbone(layer)
        twins = self._twins(layer)
        if twins is None and self._sublayers_convertible(layer):
            twins = [self._wrap(layer)]
        if twins is None:
            self._look_inside(layer, [layer])
            return None
        kind = type(layer)
        names = [type(t).__name__ for t in twins if not isinstance(t, kind)]
        self.converted[f"{kind.__name__} -> {', '.join(names)}"] += 1
        return twins

    def _look_inside(self, layer, roots):
        """Records the convertible layers left inside `roots` (the layer
        `layer` stands for): bounded activations are kept as possible
        gates, any other one could not be reached."""
        left = [
            x
            for root in roots
            for x in walk_layers(root)
            if x is not root and self._convertible(x)
        ]
        gates = [x.name for x in left if _is_activation(x) and is_bounded(x)]
        if gates:
            self.kept["possible gates inside layers"].extend(gates)
        others = [x.name for x in left if x.name not in gates]
        if others:
            self.unreached.append((layer, others))

    def look_inside_new_layers(self):
        """Records what the `GradualSublayers` and gradual backbones made
        while rewriting left as it was (see `_look_inside`)."""
        for wrapper in self.wrappers:
            self._look_inside(wrapper, [wrapper.layer])
        for old, new in self.backbones:
            self._look_inside(new, new.layers)
            kept = [x.name for x in new.layers if self._convertible(x)]
            outputs = [x for x in kept if x in new.output_layer_names]
            if outputs:
                self.kept["output activations"].extend(outputs)
            graph = [x for x in kept if x not in outputs]
            if graph:
                self.kept[
                    f"layers of the graph {type(old).__name__} builds"
                ].extend(graph)

    def _sublayers_convertible(self, layer):
        """Whether `layer` holds a sub-layer `gradualize_sublayers` would
        convert."""
        return any(
            converts_inside(x, self.activations, self.dropout)
            for _, _, x in sublayers(layer)
        )

    def _wrap(self, layer):
        """`layer` in a `GradualSublayers`, its weights copied."""
        inner = layer.__class__.from_config(layer.get_config())
        wrapper = GradualSublayers(
            inner,
            activations=self.activations,
            dropout=self.dropout,
            name=layer.name,
        )
        self.weights_from(
            wrapper, lambda: weights_with_states(inner, layer.get_weights())
        )
        self.wrappers.append(wrapper)
        return wrapper

    def _backbone(self, model):
        """The gradual subclass of a keras-hub backbone, or None for a
        model the engine rewrites; raises for a keras-hub task."""
        hub = sys.modules.get("keras_hub")
        if hub is None:
            return None
        if isinstance(model, hub.models.Task):
            raise ValueError(
                f"gradualize cannot rebuild the keras-hub task "
                f"'{model.name}' ({model.__class__.__name__}): its class "
                "builds its own graph. Gradualize its backbone and build the "
                "task around it: `task.__class__(backbone=keras_gradnets."
                "gradualize(task.backbone), preprocessor=task.preprocessor)`."
            )
        if not isinstance(model, hub.models.Backbone):
            return None
        options = {"activations": self.activations, "dropout": self.dropout}
        new = gradual_backbone(model, options)
        new.set_weights(weights_with_states(new, model.get_weights()))
        self.backbones.append((model, new))
        self.converted[f"{type(model).__name__} -> {type(new).__name__}"] += 1
        return [new]

    def summary(self, model):
        """What was converted and kept, in a few lines."""
        total = sum(self.converted.values())
        lines = [f"gradualize: model '{model.name}': {total} layers converted"]
        lines += [
            f"  {count} x {change}"
            for change, count in sorted(self.converted.items())
        ]
        inside = collections.Counter(
            change
            for made in self.wrappers + [new for _, new in self.backbones]
            for change in made.changes
        )
        if inside:
            lines.append(f"  inside them, {sum(inside.values())} sub-layers:")
            lines += [
                f"    {count} x {change}"
                for change, count in sorted(inside.items())
            ]
        lines += [
            f"  kept {len(names)} {why}: {', '.join(names)}"
            for why, names in sorted(self.kept.items())
        ]
        return "\n".join(lines)

    def _twins(self, layer):
        """The layers that stand for `layer`: its twin, or a copy of it
        followed by the twin of its fused activation; None for a copy."""
        config = layer.get_config()
        kind = type(layer)
        if self.activations:
            twins = self._activation_twins(layer)
            if twins is not None:
                return twins
        if self.dropout and kind is keras.layers.Dropout:
            return [dropout_twin(layer)]
        if self.pooling and kind in _POOLING:
            return [
                _POOLING[kind](
                    pool_size=config["pool_size"],
                    strides=config["strides"],
                    padding=config["padding"],
                    data_format=config["data_format"],
                    name=layer.name,
                )
            ]
        if self.batch_norm and kind is keras.layers.BatchNormalization:
            # It takes BatchNormalization's config, base layer keys included.
            twin = GradualBatchNormalization(**config)
            self.weights_from(twin.batch_norm, layer.get_weights)
            return [twin]
        return None


def _check_flag(name, value):
    if not isinstance(value, bool):
        raise ValueError(
            f"Invalid value received for argument `{name}`. Expected True or "
            f"False. Received: {name}={value!r}"
        )
    return value


def gradualize(
    model,
    activations=True,
    dropout=True,
    pooling=False,
    batch_norm=False,
    verbose=True,
):
    """Returns `model` with its components replaced by their GradNets twins.

    Almeida & Sauder's GradNets for a model you already have (a
    `keras.applications` network, your own functional ResNet): a new model
    with copies of the same weights in which each chosen component becomes
    its gradual twin at `g=0`, ready for
    `keras_gradnets.callbacks.GradNetScheduler`:

    * `activations`: `ReLU` layers become `GReLU` with the same
      `max_value`, `negative_slope` and `threshold`; `Activation` layers
      become `GradualActivation(activation)`, identity -> activation, for
      any activation; the activations fused into `Dense`, `EinsumDense`
      and `Conv*` layers are split out into a layer named
      `<layer>_activation`, a `GReLU` (for `"relu"` and `"relu6"`) or a
      `GradualActivation` (`"gelu"`, `"silu"`, `"tanh"`, ...), which
      `finalize` puts back into the layer at g=1. Kept as they are:
      linear, softmax and log-softmax activations; the activation of a
      layer whose output is a model output (of the model itself or of a
      nested model), which the loss reads; and gates, a sigmoid, hard
      sigmoid or ReLU with a `max_value` whose output multiplies another
      tensor (possibly through op nodes such as `x * (1 / 6)`):
      squeeze-and-excitation, MobileNetV3's hard sigmoid, GLU. At g=0 a
      gate would be unbounded and the model could overflow.
    * `dropout`: `Dropout` becomes `GradualDropout` at its rate.
    * `pooling`: `MaxPooling1D/2D` becomes `GradualPooling1D/2D` (mean ->
      max pooling).
    * `batch_norm`: `BatchNormalization` becomes `GradualBatchNormalization`
      (batch norm -> identity): the model ends without batch norm.

    Nested Sequential and functional models are gradualized too; every
    other node of the graph (op nodes such as `x + 1.0`, `x[:, 0]` or a
    `keras.ops` call, the masks of `Embedding(mask_zero=True)`, shared
    layers, several or dict inputs and outputs) is kept as it is.

    Inside layers that make their sub-layers in their own code (a
    keras-hub `TransformerEncoder`, `TimeDistributed(Dense(...))`, your
    own block), the `Dropout`, `Activation` and `ReLU` sub-layers and the
    activations fused into `Dense`, `EinsumDense` and `Conv*` sub-layers
    anneal too: the layer is wrapped in a `GradualSublayers`, which puts
    their twins in place inside it. There sigmoids, hard sigmoids and
    capped ReLUs are kept, since the layer's code does not show whether
    they gate. Sub-layers held in attributes, lists and dicts (a keras-hub
    `ViTEncoder`'s list of blocks) are reached; those in tuples or inside
    nested models are not, and a warning names them. A keras-hub backbone
    (`GPT2Backbone`, `BertBackbone`, ...) becomes an instance of a
    subclass of its own class (`GradualGPT2Backbone`, see
    `GradualBackbone`) whose transformer blocks anneal inside, so a task
    model takes it (`keras_hub.models.GPT2CausalLM(backbone=...)`). The
    layers of the graph its class builds stay: the activations of its
    `Activation` layers and those fused into its `Dense` and `Conv*`
    layers anneal in place (a `ResNetBackbone`'s ReLUs), except possible
    gates and the backbone's output; its `ReLU` and `Dropout` layers (an
    embedding dropout) are kept.
    A keras-hub task is refused: gradualize its backbone.

    At `g=1`, `keras_gradnets.finalize(gradualize(model))` gives back a
    model with the same outputs and the same layer types and configs (a
    fused activation goes back into its `Dense` or `Conv*` layer, a
    keras-hub backbone is its own class again), except that with
    `batch_norm=True` the batch norms are gone.

    Args:
        model: A built `keras.Sequential` or functional `keras.Model`.
        activations: Boolean, replace activations. Defaults to `True`.
        dropout: Boolean, replace `Dropout`. Defaults to `True`.
        pooling: Boolean, replace max pooling. Defaults to `False`.
        batch_norm: Boolean, replace batch norm. Defaults to `False`.
        verbose: Boolean, print what was converted (per kind of change)
            and what was kept and why. Defaults to `True`.

    Returns:
        A new `keras.Model`. When several JAX processes train under a
        `keras.distribution`, it is built on the calling process's devices
        only, so one process can gradualize alone (see "Training on many
        machines" in the README to train it on all of them).

    Raises:
        ValueError: for options that are not booleans, for a subclassed or
            unbuilt model, and for a keras-hub task.

    Example:

    ```python
    base = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3),
                                          classes=10)
    model = keras_gradnets.gradualize(base)   # 35 ReLU(6) -> GReLU(6)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=10, callbacks=[
        keras_gradnets.callbacks.GradNetScheduler(tau=5)])
    plain = keras_gradnets.finalize(model)    # MobileNetV2's layers again
    ```
    """
    gradualizer = _Gradualizer(
        _check_flag("activations", activations),
        _check_flag("dropout", dropout),
        _check_flag("pooling", pooling),
        _check_flag("batch_norm", batch_norm),
    )
    _check_flag("verbose", verbose)
    with local_to_this_process():
        new = gradualizer.rewrite(model)
        gradualizer.look_inside_new_layers()
    for layer, names in gradualizer.unreached:
        warnings.warn(
            f"gradualize cannot reach inside layer '{layer.name}' "
            f"({layer.__class__.__name__}): its sub-layers {names} stay as "
            "they are. It reaches sub-layers held in attributes, lists and "
            "dicts, not in tuples or nested models. Put the gradual layers "
            "in its code, or keep its sub-layers in attributes or lists.",
            stacklevel=2,
        )
    if verbose:
        print(gradualizer.summary(model))
    return new
