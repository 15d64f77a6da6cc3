"""The names every docstring example may use (`pytest --doctest-modules`)."""

import keras
import numpy as np
import pytest

import keras_gradnets


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(keras=keras, np=np, keras_gradnets=keras_gradnets)
