"""Helpers shared by the tests."""

import keras
import numpy as np
from keras import ops

from keras_gradnets import layers

BACKEND = keras.backend.backend()


class LastBatchMean(keras.metrics.Metric):
    """Reports the mean prediction of the latest batch, not a running mean.

    Metric variables live in the compiled train step's state on every
    backend, so this reads what the step itself computed. Under a
    distribution strategy, `aggregation="mean"` averages the replicas'
    values, so one replica that used a stale value would show.
    """

    def __init__(self, name="last_mean", aggregation="sum", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable(
            shape=(), initializer="zeros", aggregation=aggregation
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.value.assign(ops.cast(ops.mean(y_pred), self.value.dtype))

    def result(self):
        return ops.convert_to_tensor(self.value)


class CrashAt(keras.callbacks.Callback):
    """Stops `fit` with a `RuntimeError` as epoch `epoch` begins."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("Interrupted")


class StopAfter(keras.callbacks.Callback):
    """Ends `fit` cleanly after epoch `epoch` (from 0), as a user who stops
    a run to save it would."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


class BatchRecorder(keras.callbacks.Callback):
    """Records one key of the batch logs after every step."""

    def __init__(self, key):
        super().__init__()
        self.key = key
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(logs[self.key]))


def jit_modes():
    """The `jit_compile` settings worth testing on this backend."""
    if BACKEND == "torch":
        return [False]
    return [False, True]


class TemperatureProbe(layers.ConcreteWidth):
    """Outputs the temperature its call uses, in every unit."""

    def call(self, inputs, training=None):
        # The logits term, 0, keeps a gradient path (TensorFlow wants one).
        temperature = ops.cast(self.temperature, inputs.dtype)
        return inputs * 0 + temperature + 0 * ops.sum(self.logits)


def temperature_probe_model(probe):
    """A model whose every output is the temperature `probe` uses, placed
    where `finalize` can cut its width (a Dense on each side), as
    `TemperatureScheduler` requires."""
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(3, trainable=False),
            probe,
            keras.layers.Dense(
                3,
                kernel_initializer="identity",
                use_bias=False,
                trainable=False,
            ),
        ]
    )


def tree_numpy(x):
    """A nest of tensors (a dict of outputs, ...) as NumPy arrays."""
    return keras.tree.map_structure(ops.convert_to_numpy, x)


def assert_tree_close(a, b, atol=1e-5):
    """Two nests of tensors are equal up to `atol`, leaf by leaf."""
    keras.tree.map_structure(
        lambda u, v: np.testing.assert_allclose(u, v, rtol=0, atol=atol),
        tree_numpy(a),
        tree_numpy(b),
    )


def value_and_gradients(fn, *arrays):
    """`fn(*arrays)` and `d sum(fn(*arrays)) / d array` for each array, as
    NumPy arrays, from one call of `fn` (so random draws are shared)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(array) for array in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            out = fn(*tensors)
            total = tf.reduce_sum(out)
        grads = tape.gradient(total, tensors)
        return out.numpy(), [grad.numpy() for grad in grads]
    if BACKEND == "jax":
        import jax

        def total(*tensors):
            out = fn(*tensors)
            return out.sum(), out

        (_, out), grads = jax.value_and_grad(
            total, argnums=tuple(range(len(arrays))), has_aux=True
        )(*(jax.numpy.asarray(array) for array in arrays))
        return np.asarray(out), [np.asarray(grad) for grad in grads]
    import torch

    tensors = [torch.tensor(array, requires_grad=True) for array in arrays]
    out = fn(*tensors)
    out.sum().backward()
    return out.detach().numpy(), [tensor.grad.numpy() for tensor in tensors]
