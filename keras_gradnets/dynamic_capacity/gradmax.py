"""GradMax: the outgoing weights of new units from the loss's gradient."""

import numpy as np
from keras import ops

from keras_gradnets.core.gradients import loss_gradients
from keras_gradnets.core.processes import gather_from_processes
from keras_gradnets.dynamic_capacity import links
from keras_gradnets.dynamic_capacity.dynamic_layer import DynamicLayer
from keras_gradnets.dynamic_capacity.dynamic_layer import set_rows


def _kernels(reader):
    return (
        reader.kernels if isinstance(reader, DynamicLayer) else [reader.kernel]
    )


def gradmax_readers(layer):
    """The linked layers that read `layer`'s units through a kernel of
    `layer.units` rows, or a `ValueError` saying which one cannot be
    initialized by GradMax."""
    readers = links.consumers_of(layer) + links.readers_through_of(layer)
    for reader in readers:
        if any(
            len(kernel.shape) != 2 or kernel.shape[0] != layer.units
            for kernel in _kernels(reader)
        ):
            raise ValueError(
                f"Layer '{layer.name}' has growth_init='gradmax', which "
                "sets the rows of its readers' kernels for its new units, "
                f"but '{reader.name}' reads it through a kernel of shape "
                f"{tuple(_kernels(reader)[0].shape)}, not ({layer.units}, "
                "outputs). Read it with a `Dense` or `DynamicDense` (after "
                "activations or dropout), or pass "
                "growth_init='function_preserving'."
            )
    return readers


def _split_data(data):
    if not (isinstance(data, tuple) and len(data) == 2):
        raise ValueError(
            "Invalid value received for argument `data`. GradMax needs a "
            "batch of inputs and targets: pass `data=(x, y)`. Received: "
            f"data of type {type(data).__name__}"
        )
    return data


def _write_rows(kernels, start, stop, rows):
    """Writes `rows` (units by the readers' outputs) into input rows
    `start:stop` of `kernels`, split over their columns."""
    first = 0
    for kernel in kernels:
        last = first + kernel.shape[-1]
        block = ops.convert_to_tensor(rows[:, first:last], kernel.dtype)
        set_rows(kernel, start, stop, block)
        first = last


def initialize_gradmax(model, layer, start, stop, data):
    """Sets the outgoing weights of new units by GradMax.

    GradMax (Evci et al. 2022, "GradMax: Growing Neural Networks using
    Gradient Information"; `growers.AddGradmax` of its reference code,
    google-research/growneuron) starts new units with zero incoming
    weights, so the network's function is kept, and chooses their
    outgoing weights to make the gradient of the incoming ones largest.
    With `h` the layer's input, `g` the gradient of the loss at a reader's
    outputs and `f'(0)` the activation's slope at 0, that gradient is
    `f'(0) M B^T` for outgoing weights `B`, with `M = sum_n h_n^T g_n`
    (the gradient of an auxiliary zero kernel from the layer's input to
    the reader's outputs, as the reference code measures it); under a
    bound on `B`'s norm it is largest when the
    rows of `B` are the top right singular vectors of `M`. Each row is
    scaled to the mean norm of the trained units' outgoing weights (the
    reference implementation's `"mean_norm"`), and rows beyond the rank
    of `M` reuse its singular vectors in turn.

    `M` is measured without hooks into the model: with zero incoming
    weights, the gradient of the incoming weights for outgoing weights set
    to a block of the identity gives that block of columns of `f'(0) M`
    (`ceil(outputs / new units)` gradient evaluations per reader, each on
    all of `data`). With several processes (JAX), the matrices of every
    process's `data` are summed, so every process sets the same weights.

    `CapacityGrowth` calls it for layers with `growth_init="gradmax"` at
    each growth, with its `data`. After a growth by hand, call it once
    the layer is grown (`set_capacity` and `grow` give new units zero
    incoming and outgoing weights).

    Args:
        model: The compiled model `layer` is linked in
            (`link_dynamic_layers`).
        layer: A `DynamicDense` with `growth_init="gradmax"`.
        start: Integer, the first new unit: a chunk boundary.
        stop: Integer, the end of the new units: a chunk boundary in
            `(start, layer.active_units]`.
        data: A tuple `(x, y)`, a batch of inputs and targets.

    Example:

    ```python
    link_dynamic_layers(model)
    start = hidden.active_units
    hidden.grow(freeze=False)
    initialize_gradmax(model, hidden, start, hidden.active_units,
                       (x[:512], y[:512]))
    ```
    """
    x, y = _split_data(data)
    active = layer.bounds[: layer.bounds.index(layer.active_units) + 1]
    if start not in active[:-1] or stop not in active or stop <= start:
        raise ValueError(
            "Invalid value received for arguments `start` and `stop`. "
            f"Expected chunk boundaries in {active} with start < stop. "
            f"Received: start={start!r}, stop={stop!r}"
        )
    count = stop - start
    chunks = range(layer.bounds.index(start), layer.bounds.index(stop))
    fan_in = [layer.kernels[i] for i in chunks]
    rows_in = layer.input_units
    readers = gradmax_readers(layer)
    matrices = []
    for reader in readers:
        kernels = _kernels(reader)
        outputs = sum(kernel.shape[-1] for kernel in kernels)
        matrix = np.zeros((rows_in, outputs))
        for first in range(0, outputs, count):
            width = min(count, outputs - first)
            probe = np.zeros((count, outputs), "float32")
            probe[np.arange(width), first + np.arange(width)] = 1.0
            _write_rows(kernels, start, stop, probe)
            grads = loss_gradients(model, x, y, fan_in)
            columns = np.concatenate([g[:rows_in] for g in grads], axis=-1)
            matrix[:, first : first + width] = columns[:, :width]
        _write_rows(kernels, start, stop, np.zeros((count, outputs)))
        matrices.append(matrix)
    for reader, matrix in zip(readers, matrices, strict=True):
        kernels = _kernels(reader)
        matrix = gather_from_processes(matrix).sum(axis=0)
        _, _, vh = np.linalg.svd(matrix, full_matrices=False)
        trained = np.concatenate(
            [ops.convert_to_numpy(kernel)[:start] for kernel in kernels], -1
        )
        scale = np.linalg.norm(trained, axis=-1).mean()
        rows = vh[np.arange(count) % len(vh)] * (scale if scale > 0 else 1.0)
        _write_rows(kernels, start, stop, rows)
