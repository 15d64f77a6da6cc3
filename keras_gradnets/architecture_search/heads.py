"""attach_heads: a classification head on every block of a stack."""

import keras


def _new_head(head, depth):
    if isinstance(head, keras.Sequential):
        copy = keras.models.clone_model(head)
        copy.name = f"{head.name}_{depth}"
        return copy
    if isinstance(head, keras.layers.Layer):
        config = head.get_config()
        config["name"] = f"{head.name}_{depth}"
        return head.__class__.from_config(config)
    if callable(head):
        return head()
    raise ValueError(
        "Invalid value received for argument `head`. Expected a Keras layer "
        "to copy for each block (such as `keras.layers.Dense(10)`), a "
        "`keras.Sequential` head, or a function returning a new head layer. "
        f"Received: head={head!r}"
    )


def attach_heads(inputs, blocks, head):
    """Calls `blocks` in turn on `inputs`, with a head on each block.

    The depth model of Grathwohl et al. (section 3, Eqn 5) classifies from
    every block: pass the returned list to
    `keras_gradnets.layers.ConcreteDepth`. The graph stays flat (no nested
    models), so `keras_gradnets.finalize` can cut it at the chosen depth and
    slice the widths a `ConcreteWidth` chose.

    Args:
        inputs: A symbolic tensor, such as `keras.Input(...)` or the output
            of a stem.
        blocks: A list of blocks, each a layer (or any callable on a
            tensor) or a list of layers applied in turn, such as
            `[Dense(64, activation="relu"), ConcreteWidth()]`; or a
            `keras.Sequential` model, whose layers are the blocks.
        head: The head to put on each block's output: a Keras layer, copied
            for each block from its config as `<name>_<depth>` (for
            example `keras.layers.Dense(10, name="head")`); a
            `keras.Sequential` head, cloned likewise; or a function of no
            argument returning a new head.

    Returns:
        The list of the `D` heads' outputs, from the first block to the
        last.

    Example:

    ```python
    inputs = keras.Input((64,))
    heads = keras_gradnets.layers.attach_heads(
        inputs,
        blocks=[[keras.layers.Dense(64, activation="relu"),
                 keras_gradnets.layers.ConcreteWidth(gamma=1e-4)]
                for _ in range(4)],
        head=keras.layers.Dense(10, name="head"),
    )
    outputs = keras_gradnets.layers.ConcreteDepth(gamma=1e-2)(heads)
    model = keras.Model(inputs, outputs)
    ```
    """
    if isinstance(blocks, keras.Sequential):
        blocks = blocks.layers
    blocks = list(blocks)
    if not blocks:
        raise ValueError(
            "Invalid value received for argument `blocks`. Expected a "
            "non-empty list of blocks. Received: blocks=[]"
        )
    outputs = []
    x = inputs
    for depth, block in enumerate(blocks, start=1):
        for layer in block if isinstance(block, (list, tuple)) else [block]:
            x = layer(x)
        outputs.append(_new_head(head, depth)(x))
    return outputs
