"""gradualize: GradNets for a model that already exists."""

import collections
import warnings

import keras

from keras_gradnets.core.rewrite import Rewriter
from keras_gradnets.core.walk import walk_layers
from keras_gradnets.gradnets.gradual_activation import GradualActivation
from keras_gradnets.gradnets.gradual_batch_normalization import (
    GradualBatchNormalization,
)
from keras_gradnets.gradnets.gradual_dropout import GradualDropout
from keras_gradnets.gradnets.gradual_pooling import GradualPooling1D
from keras_gradnets.gradnets.gradual_pooling import GradualPooling2D
from keras_gradnets.gradnets.grelu import GReLU

# Activations that end in a GReLU, with its arguments.
_RELUS = {"relu": {}, "relu6": {"max_value": 6.0}}
# Activations left alone: no nonlinearity, or a normalization the loss reads.
_KEPT = ("linear", "softmax", "log_softmax")
# Bounded activations that gate when their output multiplies a tensor.
_GATES = ("sigmoid", "hard_sigmoid")
# Layers that apply their `activation` last, to their whole output.
_FUSED = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)
_POOLING = {
    keras.layers.MaxPooling1D: GradualPooling1D,
    keras.layers.MaxPooling2D: GradualPooling2D,
}


def _activation_name(activation):
    name = keras.activations.serialize(activation)
    return name if isinstance(name, str) else None


def _kept(activation):
    return activation is None or _activation_name(activation) in _KEPT


def _twin_of_activation(activation, name):
    """The gradual twin of a fused `activation`."""
    key = _activation_name(activation)
    if key in _RELUS:
        return GReLU(name=name, **_RELUS[key])
    return GradualActivation(activation, name=name)


def _has_convertible_activation(layer):
    """A `ReLU`, or an `Activation` or fused activation not kept."""
    if type(layer) is keras.layers.ReLU:
        return True
    is_activation = type(layer) is keras.layers.Activation
    return (is_activation or isinstance(layer, _FUSED)) and not _kept(
        layer.activation
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

    def _is_gate(self, layer):
        """Whether `layer` is a bounded activation (a sigmoid, a hard
        sigmoid, a ReLU with a `max_value`) whose output multiplies another
        tensor (squeeze-and-excitation, MobileNetV3's hard sigmoid, GLU),
        through op nodes that read it alone (`x * 0.5`, `x + 3.0`)."""
        if isinstance(layer, keras.layers.ReLU):
            bounded = layer.max_value is not None
        else:
            bounded = _activation_name(layer.activation) in _GATES
        if not bounded:
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
        if not _has_convertible_activation(layer):
            return None
        if None in self.readers(layer):
            self.kept["output activations"].append(layer.name)
            return None
        if self._is_gate(layer):
            self.kept["gates"].append(layer.name)
            return None
        if isinstance(layer, _FUSED):
            return [
                self.copy(layer, activation="linear"),
                _twin_of_activation(
                    layer.activation, f"{layer.name}_activation"
                ),
            ]
        if type(layer) is keras.layers.ReLU:
            config = layer.get_config()
            return [
                GReLU(
                    max_value=config["max_value"],
                    negative_slope=config["negative_slope"],
                    threshold=config["threshold"],
                    name=layer.name,
                )
            ]
        return [GradualActivation(layer.activation, name=layer.name)]

    def _convertible(self, layer):
        """Whether `layer` is of a kind this gradualizer converts."""
        kind = type(layer)
        return (
            (self.activations and _has_convertible_activation(layer))
            or (self.dropout and kind is keras.layers.Dropout)
            or (self.pooling and kind in _POOLING)
            or (self.batch_norm and kind is keras.layers.BatchNormalization)
        )

    def replace(self, layer):
        """The twins of `layer`, recorded for the summary."""
        twins = self._twins(layer)
        if twins is not None:
            kind = type(layer)
            names = [type(t).__name__ for t in twins if not isinstance(t, kind)]
            self.converted[f"{kind.__name__} -> {', '.join(names)}"] += 1
            return twins
        inside = [x for x in walk_layers(layer) if x is not layer]
        reachable = [x.name for x in inside if self._convertible(x)]
        if reachable:
            self.unreached.append((layer, reachable))
        return None

    def summary(self, model):
        """What was converted and kept, in a few lines."""
        total = sum(self.converted.values())
        lines = [f"gradualize: model '{model.name}': {total} layers converted"]
        lines += [
            f"  {count} x {change}"
            for change, count in sorted(self.converted.items())
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
            return [
                GradualDropout(
                    config["rate"],
                    noise_shape=config["noise_shape"],
                    seed=config["seed"],
                    name=layer.name,
                )
            ]
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
      `max_value`, `negative_slope` and `threshold`; other `Activation`
      layers and the activations fused into `Dense`, `EinsumDense` and
      `Conv*` layers (split out into a layer named `<layer>_activation`)
      become `GReLU` (for `"relu"` and `"relu6"`) or
      `GradualActivation(activation)` (`"gelu"`, `"silu"`, `"tanh"`, ...),
      identity -> activation. Kept as they are: linear, softmax and
      log-softmax activations; the activation of a layer whose output is a
      model output (of the model itself or of a nested model), which the
      loss reads; and gates, a sigmoid, hard sigmoid or ReLU with a
      `max_value` whose output multiplies another tensor (possibly through
      op nodes such as `x * (1 / 6)`): squeeze-and-excitation, MobileNetV3's
      hard sigmoid, GLU. At g=0 a gate would be unbounded and the model
      could overflow.
    * `dropout`: `Dropout` becomes `GradualDropout` at its rate.
    * `pooling`: `MaxPooling1D/2D` becomes `GradualPooling1D/2D` (mean ->
      max pooling).
    * `batch_norm`: `BatchNormalization` becomes `GradualBatchNormalization`
      (batch norm -> identity): the model ends without batch norm.

    Nested Sequential and functional models are gradualized too; every
    other node of the graph (op nodes such as `x + 1.0`, `x[:, 0]` or a
    `keras.ops` call, the masks of `Embedding(mask_zero=True)`, shared
    layers, several or dict inputs and outputs) is kept as it is. Layers
    that hold convertible sub-layers in their own code (a custom block, a
    keras-hub transformer layer) are copied as they are, with a warning
    that names them and the sub-layers left. At `g=1`,
    `keras_gradnets.finalize(gradualize(model))` gives back a model with
    the same outputs and the same layer types and configs, except that a
    fused activation comes back as a separate layer after its `Dense` or
    `Conv*` (now `activation="linear"`), and that with `batch_norm=True`
    the batch norms are gone.

    Args:
        model: A built `keras.Sequential` or functional `keras.Model`.
        activations: Boolean, replace activations. Defaults to `True`.
        dropout: Boolean, replace `Dropout`. Defaults to `True`.
        pooling: Boolean, replace max pooling. Defaults to `False`.
        batch_norm: Boolean, replace batch norm. Defaults to `False`.
        verbose: Boolean, print what was converted (per kind of change)
            and what was kept and why. Defaults to `True`.

    Returns:
        A new `keras.Model`.

    Raises:
        ValueError: for options that are not booleans, and for a subclassed
            or unbuilt model.

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
    new = gradualizer.rewrite(model)
    for layer, names in gradualizer.unreached:
        warnings.warn(
            f"gradualize cannot reach inside layer '{layer.name}' "
            f"({layer.__class__.__name__}): its sub-layers {names} stay as "
            "they are. Put the gradual layers in its code, or build the "
            "model from layers gradualize can see.",
            stacklevel=2,
        )
    if verbose:
        print(gradualizer.summary(model))
    return new
