"""The gradient of a model's compiled loss, on every backend."""

import keras
from keras import ops


def loss_gradients(model, x, y, variables):
    """Gradients of `model`'s compiled loss on `(x, y)` w.r.t. `variables`.

    The loss is the one `fit` minimizes (`model.compute_loss`: the
    compiled loss and the losses the layers add), computed in inference
    mode inside a `keras.StatelessScope`, so that nothing the call would
    write (a metric, a normalization's moving statistics) changes. Each
    variable is replaced by a tensor of its value, differentiated with the
    backend's own machinery (`jax.grad`, `tf.GradientTape`,
    `torch.autograd.grad`).

    Args:
        model: A compiled `keras.Model`.
        x: A batch of inputs.
        y: The batch's targets.
        variables: The variables of `model` to differentiate with respect
            to.

    Returns:
        A list of NumPy arrays, one per variable.
    """

    def loss_of(values):
        with keras.StatelessScope(
            state_mapping=list(zip(variables, values, strict=True))
        ):
            y_pred = model(x, training=False)
            return model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        grads = jax.grad(loss_of)([v.value for v in variables])
    elif backend == "tensorflow":
        import tensorflow as tf

        values = [tf.identity(v.value) for v in variables]
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = loss_of(values)
        grads = tape.gradient(loss, values)
    elif backend == "torch":
        import torch

        values = [v.value.detach().clone().requires_grad_() for v in variables]
        grads = torch.autograd.grad(loss_of(values), values)
    else:
        raise ValueError(
            "Gradients are computed on the JAX, TensorFlow and torch "
            f"backends. Received: backend {backend!r}"
        )
    return [ops.convert_to_numpy(g) for g in grads]
