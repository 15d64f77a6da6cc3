"""Runs `tests/distributed/` on 2 devices, in a process of its own.

TensorFlow and JAX fix their device list when their runtime starts, which
this process has done already. PyTorch: Keras has no distribution engine
for it (see the README's "Training on many devices"), checked below.
"""

import os
import pathlib
import subprocess
import sys

import keras
import pytest

from tests.helpers import BACKEND

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.skipif(BACKEND == "torch", reason="Keras distributes TF, JAX")
def test_every_callback_on_two_devices():
    env = dict(
        os.environ,
        KERAS_GRADNETS_DEVICES="2",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p"]
    command += ["no:cacheprovider", "tests/distributed"]
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True
    )
    print(result.stdout[-2000:])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]


@pytest.mark.skipif(BACKEND != "torch", reason="the torch backend's limits")
def test_keras_has_no_distribution_engine_for_torch():
    # If a Keras release adds one, this fails: test the callbacks under it
    # and update the README.
    with pytest.raises(AttributeError, match="list_devices"):
        keras.distribution.DataParallel()
