import gc
import os

import keras
import numpy as np
import pytest

# `tests/distributed` runs in its own process on 2 devices; see
# `tests/test_distributed.py`.
collect_ignore = (
    [] if os.environ.get("KERAS_GRADNETS_DEVICES") else ["distributed"]
)


def pytest_addoption(parser):
    parser.addoption(
        "--runslow", action="store_true", help="run paper-scale tests"
    )


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend: {keras.backend.backend()}"


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="paper-scale run: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_per_module():
    # A full collection costs 75-250 ms: once per module, not per test.
    gc.collect()


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.utils.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
