"""Config helpers shared by the layers."""

import keras


def serialized(layer, *names):
    """`{name: serialized layer.<name>}` for initializers, regularizers, ...

    Each attribute is serialized with `keras.saving.serialize_keras_object`,
    as `keras.initializers.serialize` and `keras.regularizers.serialize` do.
    """
    return {
        name: keras.saving.serialize_keras_object(getattr(layer, name))
        for name in names
    }
