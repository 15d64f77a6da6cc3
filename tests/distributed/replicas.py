"""The devices of this process, and a variable's value on each."""

import os

import keras
import numpy as np

BACKEND = keras.backend.backend()
DEVICES = int(os.environ["KERAS_GRADNETS_DEVICES"])


def replica_values(variable):
    """The value of `variable` held on each device, as NumPy arrays."""
    value = variable.value
    if BACKEND == "tensorflow":
        parts = value.values
        assert len(parts) == DEVICES, f"{variable.path} is not mirrored"
        return [np.asarray(part.numpy()) for part in parts]
    shards = value.addressable_shards
    assert len(shards) == DEVICES, f"{variable.path} is not replicated"
    return [np.asarray(shard.data) for shard in shards]
