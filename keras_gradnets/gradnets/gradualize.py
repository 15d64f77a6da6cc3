"""gradualize: GradNets for a model that already exists."""

import keras
from keras import tree

from keras_gradnets.core.walk import output_of
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


class _Gradualizer:
    def __init__(self, activations, dropout, pooling, batch_norm):
        self.activations = activations
        self.dropout = dropout
        self.pooling = pooling
        self.batch_norm = batch_norm
        self._weight_sources = []
        self._after = {}

    def _copy(self, layer, **changes):
        new = layer.__class__.from_config({**layer.get_config(), **changes})
        self._weight_sources.append((new, layer.get_weights))
        return new

    def replace(self, layer, is_output):
        """The layers that stand for `layer`: its twin, or a copy of it
        followed by the twin of its fused activation."""
        if isinstance(layer, keras.Model):
            return [self.model(layer)]
        config = layer.get_config()
        kind = type(layer)
        if self.activations and not is_output:
            if kind is keras.layers.ReLU:
                return [
                    GReLU(
                        max_value=config["max_value"],
                        negative_slope=config["negative_slope"],
                        threshold=config["threshold"],
                        name=layer.name,
                    )
                ]
            if kind is keras.layers.Activation and not _kept(layer.activation):
                return [GradualActivation(layer.activation, name=layer.name)]
            if isinstance(layer, _FUSED) and not _kept(layer.activation):
                return [
                    self._copy(layer, activation="linear"),
                    _twin_of_activation(
                        layer.activation, f"{layer.name}_activation"
                    ),
                ]
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
            self._weight_sources.append((twin.batch_norm, layer.get_weights))
            return [twin]
        return [self._copy(layer)]

    def replace_one(self, layer, outputs):
        layers = self.replace(layer, id(output_of(layer)) in outputs)
        self._after[id(layers[0])] = layers[1:]
        return layers[0]

    def call(self, layer, *args, **kwargs):
        """Calls a new layer as `clone_model` replays the graph, then the
        twin of the activation split out of it."""
        output = layer(*args, **kwargs)
        for after in self._after.get(id(layer), ()):
            output = after(output)
        return output

    def model(self, model):
        if not isinstance(model, keras.Sequential) and not hasattr(
            model, "inputs"
        ):
            raise ValueError(
                f"Cannot gradualize model '{model.name}': only Sequential and "
                "functional models can be rebuilt. For a subclassed model, "
                "put the gradual layers (`GReLU`, `GradualActivation`, "
                "`GradualDropout`, ...) in its code."
            )
        if not model.built or not model.inputs:
            raise ValueError(
                f"Model '{model.name}' is not built. Call it on data or start "
                "it with `keras.Input(...)` before `gradualize`."
            )
        if isinstance(model, keras.Sequential):
            spec = model.inputs[0]
            layers = [
                new
                for i, layer in enumerate(model.layers)
                for new in self.replace(layer, i == len(model.layers) - 1)
            ]
            return keras.Sequential(
                [
                    keras.Input(batch_shape=spec.shape, dtype=spec.dtype),
                    *layers,
                ],
                name=model.name,
            )
        outputs = {id(t) for t in tree.flatten(model.outputs)}
        return keras.models.clone_model(
            model,
            clone_function=lambda layer: self.replace_one(layer, outputs),
            call_function=self.call,
        )

    def copy_weights(self):
        for new, weights in self._weight_sources:
            new.set_weights(weights())


def _check_flag(name, value):
    if not isinstance(value, bool):
        raise ValueError(
            f"Invalid value received for argument `{name}`. Expected True or "
            f"False. Received: {name}={value!r}"
        )
    return value


def gradualize(
    model, activations=True, dropout=True, pooling=False, batch_norm=False
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
      identity -> activation. Linear, softmax and log-softmax activations,
      and the activation of a layer whose output is a model output (of the
      model itself or of a nested model), are kept: the loss reads them.
    * `dropout`: `Dropout` becomes `GradualDropout` at its rate.
    * `pooling`: `MaxPooling1D/2D` becomes `GradualPooling1D/2D` (mean ->
      max pooling).
    * `batch_norm`: `BatchNormalization` becomes `GradualBatchNormalization`
      (batch norm -> identity): the model ends without batch norm.

    Nested Sequential and functional models are gradualized too. At `g=1`,
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
    new = gradualizer.model(model)
    gradualizer.copy_weights()
    return new
