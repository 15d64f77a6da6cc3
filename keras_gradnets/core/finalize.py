"""The finalize protocol: every library layer names its plain replacement.

A layer of this package answers `finalized_layers()` with the list of
built-in Keras layers (with their weights) that compute what it computes at
its current state: an empty list for the identity, several layers for a
chain. A layer that takes a list of inputs (such as `MollifiedActivation`)
also answers `finalized_input()`: the index of the input its replacement
reads. A recurrent cell answers `finalized_layers()` with one Keras cell;
`keras_gradnets.finalize` rebuilds the `RNN` around it.

`keras_gradnets.finalize(model)` is the one code path over this protocol.
"""

from keras import ops


def require_end_point(layer, state, ends, hint):
    """Returns the state's value if it is one of `ends`, or raises.

    Args:
        layer: A `StatefulLayer`.
        state: The name of its declared state, such as `"g"`.
        ends: The values at which the layer has a plain replacement.
        hint: What the user should do, for the error message.

    Raises:
        ValueError: naming the layer and the value, if the value is not a
            finite number in the declared range or not one of `ends`.
    """
    value = layer.state_value(state)
    if value not in ends:
        ends_text = " or ".join(f"{state}={end:g}" for end in ends)
        raise ValueError(
            f"Layer '{layer.name}' ({layer.__class__.__name__}) has "
            f"{state}={value}, and only at {ends_text} does a plain Keras "
            f"layer equal it. {hint} If the schedule did reach its end, a "
            "callback restored earlier weights, and the state with them: "
            "`EarlyStopping(restore_best_weights=True)` or "
            "`ModelCheckpoint(save_best_only=True)` are the usual causes; "
            "give them a `start_from_epoch` past the end of the schedule."
        )
    return value


def built_with_weights(layer, input_shape, weights):
    """Builds the plain `layer` for `input_shape` and sets its `weights`.

    Args:
        layer: An unbuilt Keras layer.
        input_shape: The shape to build it for.
        weights: Variables or arrays, in the order of `layer.weights`.

    Returns:
        `layer`.
    """
    layer.build(input_shape)
    layer.set_weights([ops.convert_to_numpy(w) for w in weights])
    return layer
