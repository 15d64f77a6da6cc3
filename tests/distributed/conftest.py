"""Two devices for the tests in this folder.

`tests/test_distributed.py` runs this folder in its own process with
`KERAS_GRADNETS_DEVICES=2` (and, on JAX, `XLA_FLAGS`), because both
backends fix their device list when their runtime starts: TensorFlow
splits the CPU into two logical devices here, before any op runs.
"""

import contextlib

import keras
import pytest

from tests.distributed.replicas import BACKEND
from tests.distributed.replicas import DEVICES

if BACKEND == "tensorflow":
    import tensorflow as tf

    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * DEVICES,
    )


@pytest.fixture(scope="session")
def _strategy():
    """One `MirroredStrategy` for the session.

    TensorFlow keys its collective ops per process, so a second strategy in
    the same process can meet the first one's keys with other shapes.
    """
    names = [f"/cpu:{i}" for i in range(DEVICES)]
    strategy = tf.distribute.MirroredStrategy(names)
    assert strategy.num_replicas_in_sync == DEVICES
    return strategy


@pytest.fixture
def scope(request):
    """The backend's data-parallel engine over the devices.

    TensorFlow: the scope of a `MirroredStrategy`. JAX: a `DataParallel`
    distribution, set for the duration of the test. Build and compile
    models inside `with scope():`.
    """
    if BACKEND == "tensorflow":
        yield request.getfixturevalue("_strategy").scope
        return
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == DEVICES, (
        f"JAX sees {devices}: set XLA_FLAGS="
        f"--xla_force_host_platform_device_count={DEVICES} before JAX starts."
    )
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    try:
        yield contextlib.nullcontext
    finally:
        keras.distribution.set_distribution(None)
