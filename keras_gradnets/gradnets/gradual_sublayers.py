"""GradNets inside a layer that builds its sub-layers in its own code."""

import keras

from keras_gradnets.core.finalize import require_end_point
from keras_gradnets.core.sublayers import SublayerWrapper
from keras_gradnets.core.sublayers import set_sublayer
from keras_gradnets.core.walk import attributes
from keras_gradnets.core.walk import walk_layers
from keras_gradnets.gradnets.twins import FUSED
from keras_gradnets.gradnets.twins import activation_twin
from keras_gradnets.gradnets.twins import dropout_twin
from keras_gradnets.gradnets.twins import function_twin
from keras_gradnets.gradnets.twins import has_convertible_activation
from keras_gradnets.gradnets.twins import is_bounded


def converts_inside(layer, activations=True, dropout=True):
    """Whether `gradualize_sublayers` puts a twin in place of the sub-layer
    `layer`. Bounded activations (sigmoids, capped ReLUs) are kept: inside
    a layer's code nothing shows whether they gate."""
    if type(layer) is keras.layers.Dropout:
        return dropout
    return (
        activations
        and has_convertible_activation(layer)
        and not is_bounded(layer)
    )


def _held(owner):
    """Yields `(place, layer)` for each layer held in an attribute of
    `owner` (`place` is its name) or, unless `owner` is a model, in a list
    or dict attribute (`place` is `(name, index or key)`). The containers
    in which Keras and torch keep every sub-layer are not places."""
    bookkeeping = (getattr(owner, "_layers", None), vars(owner).get("_modules"))
    for name, value in list(attributes(owner)):
        if isinstance(value, keras.layers.Layer):
            yield name, value
        elif isinstance(owner, keras.Model) or any(
            value is x for x in bookkeeping
        ):
            continue
        elif isinstance(value, (list, dict)):
            keyed = (
                value.items() if isinstance(value, dict) else enumerate(value)
            )
            for key, x in keyed:
                if isinstance(x, keras.layers.Layer):
                    yield (name, key), x


def sublayers(layer):
    """Yields `(owner, place, sublayer)` for each layer held by `layer` or
    by its sub-layers, not inside nested models, where `set_sublayer(owner,
    place, ...)` replaces it: in an attribute, a list or a dict. A layer
    held in two places is yielded for each."""
    stack = [layer]
    seen = set()
    while stack:
        owner = stack.pop()
        if id(owner) in seen:
            continue
        seen.add(id(owner))
        for place, child in _held(owner):
            if child is not owner:
                yield owner, place, child
                if not isinstance(child, keras.Model):
                    stack.append(child)


def gradualize_sublayers(layer, activations=True, dropout=True):
    """Puts gradual twins in place of the sub-layers of the built `layer`.

    Every layer of `sublayers(layer)` is visited: a `Dropout` becomes a
    `GradualDropout`, an `Activation` or `ReLU` its `GReLU` or
    `GradualActivation`, and the activation fused into a `Dense`,
    `EinsumDense` or `Conv*` layer becomes that layer's `activation`,
    computed by a twin. A layer held in two places gets one twin, put in
    both. The code of `layer` then calls the twins where it called the
    originals, and its weights are the originals' with each twin's `g`
    after the weights of the layer that holds it.

    Returns:
        What changed, one string per twin, such as
        `"Dropout -> GradualDropout"`, in the order the twins were put in.
    """
    changes = []
    # id(sub-layer) -> what stands in its place now: its twin, or itself.
    placed = {}
    for owner, place, child in list(sublayers(layer)):
        if id(child) in placed:
            if placed[id(child)] is not child:
                set_sublayer(owner, place, child, placed[id(child)])
            continue
        placed[id(child)] = child
        if not converts_inside(child, activations, dropout):
            continue
        if isinstance(child, FUSED):
            changes += gradualize_in_place(child, activations)
            continue
        if type(child) is keras.layers.Dropout:
            twin = dropout_twin(child)
        else:
            twin = activation_twin(child)
        set_sublayer(owner, place, child, twin)
        placed[id(child)] = twin
        twin._put_inside = True
        changes.append(f"{type(child).__name__} -> {type(twin).__name__}")
    return changes


def gradualize_in_place(layer, activations=True):
    """Puts the twin of the activation of `layer`, an `Activation` layer or
    a layer with a fused activation (`Dense`, `EinsumDense`, `Conv*`), into
    its `activation` attribute: for a layer that stays where it is (a
    sub-layer, or a layer of the graph a keras-hub backbone's class
    builds). Bounded activations are kept, as possible gates.

    Returns:
        What changed, as `gradualize_sublayers` says it: a list of one
        string such as `"Conv2D activation -> GradualActivation"`, or an
        empty list.
    """
    in_place = type(layer) is keras.layers.Activation or isinstance(
        layer, FUSED
    )
    if not (in_place and converts_inside(layer, activations)):
        return []
    twin = function_twin(layer)
    set_sublayer(layer, "activation", None, twin)
    twin._put_inside = True
    kind = type(layer).__name__
    if isinstance(layer, FUSED):
        kind += " activation"
    return [f"{kind} -> {type(twin).__name__}"]


def twins_in(layer):
    """The twins `gradualize_sublayers` put inside `layer`."""
    return [x for x in walk_layers(layer) if getattr(x, "_put_inside", False)]


def _twin_states(layer):
    return {id(v) for twin in twins_in(layer) for v in twin.weights}


def plain_weights(layer):
    """The weights of `layer` without its twins' states, as arrays: the
    weights of the original layer, in its order."""
    states = _twin_states(layer)
    return [
        keras.ops.convert_to_numpy(v)
        for v in layer.weights
        if id(v) not in states
    ]


def weights_with_states(layer, values):
    """`values`, the original layer's weights, with the current states of
    the twins inside `layer` where `layer.weights` holds them: a list for
    `layer.set_weights`."""
    states = _twin_states(layer)
    plain = len(layer.weights) - len(states)
    if plain != len(values):
        raise ValueError(
            f"Layer '{layer.name}' has {plain} weights besides the states of "
            f"its gradual twins, and {len(values)} values were given. Pass "
            "the weights of the layer it was made from."
        )
    values = iter(values)
    return [
        keras.ops.convert_to_numpy(v) if id(v) in states else next(values)
        for v in layer.weights
    ]


def require_late(layer, inner):
    """Raises unless every twin inside `inner` is at `g=1`, where `layer`
    equals its original: the one state at which a plain layer of its class
    stands for it."""
    for twin in twins_in(inner):
        require_end_point(
            twin,
            "g",
            (1.0,),
            f"'{layer.name}' was gradualized inside; only at g=1 is it its "
            f"original {layer.__class__.__name__} again. Train until the "
            "schedule ends, or keep the gradualized model.",
        )


@keras.saving.register_keras_serializable(package="keras_gradnets")
class GradualSublayers(SublayerWrapper):
    """A layer whose sub-layers anneal: GradNets inside its own code.

    `gradualize` wraps in it each layer that creates its sub-layers in its
    own code (a keras-hub `TransformerEncoder`, `TimeDistributed(Dense)`, a
    custom block). It builds the wrapped layer, then puts gradual twins in
    place of its `Dropout`, `Activation` and `ReLU` sub-layers and of the
    activations fused into its `Dense`, `EinsumDense` and `Conv*` sub-layers
    (see `gradualize_sublayers`), so at `g=0` it computes the layer with
    linear activations and no dropout, and at `g=1` exactly the layer.
    Sigmoids, hard sigmoids and capped ReLUs are kept, as possible gates.
    `keras_gradnets.finalize` gives back the wrapped layer, with its own
    class and config, at `g=1`.

    Args:
        layer: The layer to wrap, built or not. Its config is what the
            wrapper saves, so it must be serializable.
        activations: Boolean, anneal the activations. Defaults to `True`.
        dropout: Boolean, anneal the dropouts. Defaults to `True`.
        **kwargs: Base layer keyword arguments, such as `name`.
    """

    def __init__(self, layer, activations=True, dropout=True, **kwargs):
        super().__init__(layer, **kwargs)
        self.activations = activations
        self.dropout = dropout
        self.changes = ()

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.changes = tuple(
            gradualize_sublayers(self.layer, self.activations, self.dropout)
        )
        self.built = True

    def finalized_layers(self):
        """The wrapped layer, with its class and config, at `g=1`."""
        require_late(self, self.layer)
        plain = keras.saving.deserialize_keras_object(self._layer_config)
        plain.build_from_config(self.layer.get_build_config())
        plain.set_weights(plain_weights(self.layer))
        return [plain]

    def get_config(self):
        return {
            **super().get_config(),
            "activations": self.activations,
            "dropout": self.dropout,
        }
