"""What every process of a multi-process run must see the same way, and
what one process may build alone."""

import contextlib

import keras
import numpy as np


def process_count():
    """The number of processes training together: `jax.process_count()`
    on JAX, 1 on the other backends (Keras 3 trains on one process there:
    TensorFlow's multi-worker strategy fails in Keras itself,
    keras-team/keras#20585, and torch has no multi-process engine)."""
    if keras.backend.backend() != "jax":
        return 1
    import jax

    return jax.process_count()


def gather_from_processes(array):
    """Every process's `array`, stacked on a new first axis in process
    order: the same, bit for bit, on every process.

    Every process must call it with an array of the same shape and dtype,
    at the same point of the run. With one process it returns `array[None]`
    at once. The bytes travel as 32-bit words, so float64 arrays arrive
    exactly, whatever JAX's 64-bit setting.
    """
    array = np.ascontiguousarray(array)
    if process_count() == 1:
        return array[None]
    from jax.experimental import multihost_utils

    words = array.reshape(-1).view("uint32")
    gathered = np.asarray(multihost_utils.process_allgather(words))
    return gathered.view(array.dtype).reshape((-1, *array.shape))


@contextlib.contextmanager
def local_to_this_process():
    """Creates what is built inside on this process's devices only.

    With several processes and a `keras.distribution` set, creating a
    variable lays it out over every process's devices, which waits for the
    other processes to create it too. Inside this context the distribution
    is unset (and set again on the way out), so one process alone can build
    a model, such as the plain model `finalize` returns.
    """
    distribution = keras.distribution.distribution()
    if distribution is None or process_count() == 1:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(distribution)
